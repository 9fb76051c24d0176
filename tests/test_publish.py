import os
import subprocess
import sys
import threading
import time

import pytest

from sparrow_llm import publish
from sparrow_llm.publish import STALE_AFTER_S, staged_folder


def _write_version(folder, version: str, files: int = 20) -> None:
    for i in range(files):
        (folder / f"part{i}.txt").write_text(version)


def _versions(folder) -> set[str]:
    return {p.read_text() for p in folder.iterdir()}


def test_the_block_becomes_the_target_and_nothing_else_is_left(tmp_path):
    target = tmp_path / "models" / "m"
    with staged_folder(target) as staging:
        assert staging.parent == target.parent and staging.name.startswith(".") and not target.exists()
        (staging / "sub").mkdir()
        (staging / "sub" / "w.bin").write_bytes(b"1")
    assert (target / "sub" / "w.bin").read_bytes() == b"1"
    assert os.listdir(target.parent) == ["m"]


def test_an_error_keeps_the_old_version_intact(tmp_path):
    target = tmp_path / "m"
    with staged_folder(target) as staging:
        _write_version(staging, "old")
    with pytest.raises(RuntimeError, match="training failed"):
        with staged_folder(target) as staging:
            _write_version(staging, "new", files=3)
            raise RuntimeError("training failed")
    assert _versions(target) == {"old"} and len(os.listdir(target)) == 20
    assert os.listdir(tmp_path) == ["m"]


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "rename-aside"])
def test_replacing_a_version_leaves_it_whole_for_readers(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(publish, "_exchange", lambda a, b: False)
    elif publish._renameat2() is None:
        pytest.skip("no renameat2 in this C library")
    target = tmp_path / "m"
    with staged_folder(target) as staging:
        _write_version(staging, "v0")
    seen, stop = [], threading.Event()

    def read() -> None:
        # A read of the folder that is the target from its start to its end must find one whole version (a
        # reader still inside a replaced version sees it removed, as on any replacement).
        while not stop.is_set():
            try:
                fd = os.open(target, os.O_RDONLY)
            except FileNotFoundError:  # the fallback's window
                seen.append(None)
                continue
            try:
                names = os.listdir(fd)
                versions = set()
                for name in names:
                    with open(name, opener=lambda path, flags: os.open(path, flags, dir_fd=fd)) as f:
                        versions.add(f.read())
                if os.stat(target).st_ino == os.fstat(fd).st_ino:
                    seen.append((len(names), versions))
            except FileNotFoundError:  # replaced meanwhile
                pass
            finally:
                os.close(fd)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for v in range(1, 30):
            with staged_folder(target) as staging:
                _write_version(staging, f"v{v}")
    finally:
        stop.set()
        reader.join()
    assert _versions(target) == {"v29"} and os.listdir(tmp_path) == ["m"]
    complete = [s for s in seen if s is not None]
    assert complete and all(n == 20 and len(v) == 1 for n, v in complete)  # never half of a version
    if exchange:  # the swap is atomic: the target is always there
        assert None not in seen


def test_keep_existing_keeps_another_publishers_version(tmp_path):
    target = tmp_path / "m"
    with staged_folder(target, keep_existing=lambda t: (t / "part0.txt").is_file()) as staging:
        _write_version(staging, "mine")
        with staged_folder(target) as other:  # another process finishes first
            _write_version(other, "theirs")
    assert _versions(target) == {"theirs"} and os.listdir(tmp_path) == ["m"]


def test_leftovers_of_dead_runs_are_cleaned_by_the_next_publish(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    host = publish._host()
    stale = [tmp_path / f".m.publish-{host}-{dead_pid}-0a1b", tmp_path / f".other.old-{host}-{dead_pid}-ff00"]
    live = tmp_path / f".m.publish-{host}-{os.getpid()}-1234"  # this process: still running
    far_old = tmp_path / f".m.publish-otherhost-{os.getpid()}-abcd"
    far_new = tmp_path / f".m.publish-otherhost-{os.getpid()}-abce"
    unrelated = tmp_path / ".cache"
    for folder in (*stale, live, far_old, far_new, unrelated):
        folder.mkdir()
        (folder / "x").write_text("x")
    old = time.time() - STALE_AFTER_S - 60
    os.utime(far_old, (old, old))
    with staged_folder(tmp_path / "n") as staging:
        (staging / "y").write_text("y")
    assert sorted(os.listdir(tmp_path)) == sorted(p.name for p in (live, far_new, unrelated, tmp_path / "n"))
