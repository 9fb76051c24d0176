"""The command line: the demo's check end to end, and clear errors for a user's mistakes."""
import subprocess
import sys

from sparrow_llm.cli import main
from sparrow_llm.demo import demo_users, run_demo
from sparrow_llm.store import open_default_store

from .conftest import host_settings


def test_demo_check_passes_on_the_fixture(built_bridge, tmp_path):
    lines = []
    assert run_demo(host_settings(tmp_path), "recent", check=True, progress=False, echo=lines.append) == 0
    assert lines[-1].startswith("PASS: /getrecforyou?id=1&size=32&model=recent came through the stage")
    assert any(line.startswith("recent: ") and " written" in line for line in lines)


def test_rerank_without_a_bridge_says_how_to_start_one(tmp_path, capsys):
    code = main(["rerank", "--model", "recent", "--connect-file", str(tmp_path / "none.json"),
                 "--store-dir", str(tmp_path / "store"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "no connect file" in err and "sparrow-llm demo" in err
    assert "Traceback" not in err


def test_no_progress_silences_the_libraries_own_bars(tmp_path, monkeypatch):
    """transformers' bars ("Loading weights") follow --no-progress, and so do bars that pass no `disable` (the GGUF
    conversion's tqdm.auto) in every process started after the flag is read: Spark's Python workers."""
    from transformers.utils import logging as hf_logging

    for name in ("TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS"):
        monkeypatch.delenv(name, raising=False)
    hf_logging.enable_progress_bar()
    try:
        main(["rerank", "--model", "recent", "--connect-file", str(tmp_path / "none.json"),
              "--store-dir", str(tmp_path / "store"), "--no-progress"])
        assert not hf_logging.is_progress_bar_enabled()
        worker = subprocess.run([sys.executable, "-c", "from tqdm.auto import tqdm; print(tqdm(range(1)).disable)"],
                                capture_output=True, text=True)
        assert worker.stdout.strip() == "True", worker.stderr
    finally:
        hf_logging.enable_progress_bar()


def test_unknown_model_is_a_clear_error(tmp_path, capsys):
    code = main(["rerank", "--model", "nope", "--store-dir", str(tmp_path)])
    assert code == 2 and "unknown model 'nope'" in capsys.readouterr().err


def test_bad_user_list_is_refused_by_the_parser():
    done = subprocess.run([sys.executable, "-m", "sparrow_llm.cli", "rerank", "--model", "recent", "--users", "1,x"],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "expected comma-separated user ids" in done.stderr


def test_demo_check_passes_for_the_llm_model_offline(built_bridge, tmp_path):
    """PALR with the MiniLM stand-in (the real local model ranks every fixture user in minutes: a manual
    `sparrow-llm demo --model llm --check`): the Spark profile job, rerank, the stage, the page's JSON."""
    lines = []
    settings = host_settings(tmp_path).replace(llm={"backend": "local-minilm"})
    assert run_demo(settings, "llm", check=True, progress=False, echo=lines.append) == 0
    assert any(line.startswith("llm: ") and "parse ok" in line for line in lines)
    # the users it ranks were profiled first, in this run (the preparation's job had written them: unchanged now)
    profiled = [line for line in lines if line.startswith("profiles (") and " 0 failed" in line]
    assert profiled and " 0 written" in profiled[-1] and " 0 LLM calls" in profiled[-1], lines
    assert open_default_store(settings).get_profile(1) is not None
    assert lines[-1].startswith("PASS: /getrecforyou?id=1&size=32&model=llm")


def test_the_demo_ranks_the_first_users_and_the_one_shown_unless_told():
    ids = list(range(200, 0, -1))
    assert demo_users(ids, 1, None, False) == list(range(1, 51))
    assert demo_users(ids, 120, None, False) == [*range(1, 51), 120]
    assert demo_users(ids, 7, [7, 9], False) == [7, 9] and demo_users(ids, 7, [9], False) == [9, 7]
    assert demo_users(ids, 1, None, True) is None  # every user
