"""Progress bars in a log file: at most one line per interval, whatever redraws the bar, and a last line."""
import time

from sparrow_llm import progress
from sparrow_llm.progress import progress_bar


class _Log:
    """A log file: what was written, and when."""

    def __init__(self):
        self.lines: list[tuple[float, str]] = []

    def write(self, text: str) -> None:
        self.lines += [(time.monotonic(), line) for line in text.splitlines() if line]

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


def test_a_bar_off_a_terminal_prints_at_most_one_line_per_interval(monkeypatch):
    monkeypatch.setattr(progress, "LOG_INTERVAL_S", 0.3)
    log = _Log()
    with progress_bar(total=100, desc="finetune", unit="step", stream=log) as bar:
        for step in range(100):  # every way a job redraws: update, set_postfix (tqdm redraws it at once), refresh
            time.sleep(0.012)
            bar.update(1)
            bar.set_postfix(loss=f"{1 / (step + 1):.3f}")
            bar.refresh()
    times = [t for t, _ in log.lines]
    assert 2 <= len(times) <= 6, log.lines  # ~1.2 s: lines at 0.3, 0.6, 0.9 s, and the closing one
    gaps = [b - a for a, b in zip(times, times[1:-1])]  # the closing line may come at any time
    assert all(gap >= 0.3 for gap in gaps), gaps
    assert log.lines[-1][1].startswith("finetune: 100%") and "100/100" in log.lines[-1][1]
    assert all("\r" not in line for _, line in log.lines)


def test_a_bar_whose_last_line_says_where_it_ended_closes_without_repeating_it(monkeypatch):
    monkeypatch.setattr(progress, "LOG_INTERVAL_S", 0.1)
    log = _Log()
    with progress_bar(total=2, desc="calibrate", stream=log) as bar:
        bar.update(1)
        time.sleep(0.15)
        bar.update(1)  # printed: 2/2
        time.sleep(0.15)
    assert [line.split("|")[0] for _, line in log.lines] == ["calibrate: 100%"], log.lines


def test_a_short_job_off_a_terminal_prints_only_its_last_line():
    log = _Log()
    with progress_bar(total=3, desc="short", stream=log) as bar:
        bar.update(3)
    assert [line for _, line in log.lines] == [log.lines[-1][1]] and "3/3" in log.lines[-1][1]


def test_a_disabled_bar_prints_nothing():
    log = _Log()
    with progress_bar(total=3, desc="off", stream=log, enabled=False) as bar:
        bar.update(3)
    assert log.lines == []
