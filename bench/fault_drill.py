#!/usr/bin/env python3
"""Issue 18's faults tried again from outside: a fresh clone, the `sparrow-llm` CLI as a user runs it (own
home, own ports), one row per case: the case, the command, its exit code, how many lines it printed, whether a
traceback (Python's or Java's) appeared, whether any file was lost, and whether the outcome is the one the fault
contract (docs/bridge-contract.md, "Deploy faults") promises. Cases that need the real upstream SparrowRecSys
host, a training run or a minute of dequantisation are listed with the named test that covers them.

    python3 bench/fault_drill.py --clone /tmp/drill/clone [--repo .] [--shared ../shared]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

JARS = ("bridge/target/sparrow-llm-bridge.jar",
        "sparrowrecsys-standin/target/sparrowrecsys-standin-jar-with-dependencies.jar")
RATINGS_HEADER = "userId,movieId,rating,timestamp\n"
# Lines that are not the case's outcome: the one warning naming the operator's files the legacy move leaves
# (case 2's notes.txt stays in the drill's home on purpose), Spark's and the JVM's start-up chatter.
NOT_THE_OUTCOME = ("WARNING sparrow_llm.store: left ", " WARN Utils: ", "Using Spark's default log4j",
                   "Setting default log level", "To adjust logging level", " WARN NativeCodeLoader: ",
                   "WARNING: Using incubator modules")


def outcome_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip() and not any(t in line for t in NOT_THE_OUTCOME)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@dataclass
class Row:
    case: str
    command: str
    rc: int | str
    lines: int
    traceback: bool
    lost: bool
    ok: bool
    note: str = ""


class Drill:
    def __init__(self, clone: Path, root: Path, shared: Path):
        self.clone, self.root, self.shared = clone, root, shared
        self.rows: list[Row] = []
        self.sentinels: dict[Path, bytes] = {}

    def env(self, home: Path, **extra: str) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("SPARROW_LLM_", "ZHIPUAI_", "SPARROW_HOME"))}
        return {**base, "PYTHONPATH": str(self.clone), "SPARROW_LLM_HOME": str(home), "PORT": str(free_port()),
                "SPARROW_LLM_SHARED": str(self.shared), "PYTHONUNBUFFERED": "1", **extra}

    def keep(self, path: Path, text: str) -> Path:
        """A file of the operator's that no case may delete or change."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        self.sentinels[path] = path.read_bytes()
        return path

    def lost(self) -> bool:
        return any(not p.is_file() or p.read_bytes() != data for p, data in self.sentinels.items())

    def cli(self, case: str, argv: list[str], env: dict[str, str], *, rc: int, lines: int | None = 1,
            expect: str = "", check: Callable[[str, str], bool] | None = None, timeout: float = 300) -> Row:
        """Runs `sparrow-llm argv`; ok when the exit code is `rc`, stderr has `lines` lines (None: any) holding
        `expect`, no traceback appeared and `check(out, err)` holds."""
        started = time.monotonic()
        try:
            done = subprocess.run([sys.executable, "-m", "sparrow_llm.cli", *argv], env=env, capture_output=True,
                                  text=True, timeout=timeout, cwd=self.root)
            code, out, err = done.returncode, done.stdout, done.stderr
        except subprocess.TimeoutExpired as exc:
            code, out, err = "timeout", exc.stdout or "", exc.stderr or ""
            out, err = (out.decode() if isinstance(out, bytes) else out), (err.decode() if isinstance(err, bytes) else err)
        err_lines = outcome_lines(err)
        tb = "Traceback (most recent call last)" in out + err or "\tat " in out + err
        ok = (code == rc and (lines is None or len(err_lines) == lines) and expect in err and not tb
              and (check is None or check(out, err)))
        row = Row(case, "sparrow-llm " + " ".join(argv), code, len(out.splitlines()) + len(err.splitlines()), tb,
                  self.lost(),
                  ok, f"{time.monotonic() - started:.0f} s; " + (err_lines[-1][:150] if err_lines else
                                                                 (out.splitlines() or [""])[-1][:150]))
        self.rows.append(row)
        return row

    def note(self, case: str, what: str, ok: bool, detail: str) -> None:
        self.rows.append(Row(case, what, "-", 0, False, self.lost(), ok, detail))

    def covered(self, case: str, what: str, tests: str) -> None:
        self.rows.append(Row(case, what, "n/a", 0, False, False, True, f"covered by {tests}"))

    def start_host(self, home: Path, **extra: str) -> tuple[subprocess.Popen, str, dict]:
        """`sparrow-llm bridge start` in the background; its base URL once it serves."""
        env = self.env(home, **extra)
        proc = subprocess.Popen([sys.executable, "-m", "sparrow_llm.cli", "bridge", "start"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=self.root)
        line = proc.stdout.readline()
        if not line.startswith("host ("):
            raise SystemExit(f"the host did not start: {line}{proc.stderr.read()}")
        return proc, line.split(" at ", 1)[1].split(";")[0], env

    def table(self) -> str:
        head = "| case | command | exit | lines | traceback | files lost | outcome | note |\n|---|---|---|---|---|---|---|---|"
        body = [f"| {r.case} | `{r.command}` | {r.rc} | {r.lines} | {'yes' if r.traceback else 'no'} | "
                f"{'yes' if r.lost else 'no'} | {'ok' if r.ok else 'FAIL'} | {r.note.replace('|', '/')} |"
                for r in self.rows]
        return "\n".join([head, *body])


def data_folder(root: Path, fixture: Path, ratings: str | None = None, movies: str | None = None) -> Path:
    """A host-layout data folder: the fixture's files linked, `ratings` / `movies` written when given."""
    for sub in ("sampledata", "modeldata"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for rel in ("sampledata/links.csv", "modeldata/item2vecEmb.csv", "modeldata/userEmb.csv", "posters"):
        (root / rel).symlink_to(fixture / rel)
    for rel, text in (("sampledata/ratings.csv", ratings), ("sampledata/movies.csv", movies)):
        if text is None:
            (root / rel).symlink_to(fixture / rel)
        else:
            (root / rel).write_text(text)
    return root


def drill(d: Drill) -> None:
    fixture = d.shared / "sparrowrecsys" / "webroot"
    ratings = (fixture / "sampledata" / "ratings.csv").read_text()
    home = d.root / "home"
    models = d.root / "models"
    text_gguf = d.root / "fake" / "model.gguf"
    d.keep(text_gguf, "this is a text file\n")
    real_gguf = subprocess.run([sys.executable, "-c", "from sparrow_llm.rankers.llm.local_lm import model_source; "
                                "print(model_source(None))"], env=d.env(home), capture_output=True, text=True)
    real_gguf = Path(real_gguf.stdout.strip()) if real_gguf.returncode == 0 else None
    cut_gguf = d.root / "cut" / "model.gguf"
    if real_gguf is not None:
        cut_gguf.parent.mkdir(parents=True, exist_ok=True)
        with open(real_gguf, "rb") as f:
            cut_gguf.write_bytes(f.read(2_000_000))

    # 1: nothing private over HTTP
    checkout = d.root / "SparrowRecSys"
    webroot = checkout / "target" / "classes" / "webroot"
    d.keep(webroot / "index.html", "<title>host</title>")
    (checkout / "target" / "SparrowRecSys-1.0-SNAPSHOT-jar-with-dependencies.jar").write_bytes(b"")
    inside = webroot / "modeldata" / "llmhome"
    d.cli("1 home inside the real host's web root", ["bridge", "start"],
          d.env(inside, SPARROW_HOME=str(checkout)), rc=2, expect="is inside the host's web root",
          check=lambda o, e: not (inside / "private").exists())
    (d.root / "elsewhere").symlink_to(webroot / "modeldata")
    d.cli("1 home inside it through a link", ["bridge", "start"],
          d.env(d.root / "elsewhere" / "llmhome", SPARROW_HOME=str(checkout)), rc=2,
          expect="is inside the host's web root")

    # 2: the legacy move deletes nothing (the stand-in's web root is composed under the home)
    legacy = home / "standin-classroot" / "webroot" / "modeldata" / "sparrow-llm"
    d.keep(legacy / "notes.txt", "the operator's notes\n")
    host, base_url, env = d.start_host(home, SPARROW_LLM_MODELS_DIR=str(models))
    try:
        connect = home / "private" / "gateway.json"
        token = json.loads(connect.read_text())["token"]
        d.note("2 legacy folder with an operator's notes.txt", "any command (bridge start)", not d.lost(),
               f"notes.txt kept: {(legacy / 'notes.txt').is_file()}")
        served = home / "standin-classroot" / "webroot"
        (served / "llm-home").symlink_to(home)
        answers = {path: get(base_url + path) for path in ("/llm-home/", "/llm-home/private/gateway.json",
                                                           "/llm-home/private/host.log")}
        d.note("1 a link in the web root to the home", "GET /llm-home/, .../gateway.json, .../host.log",
               all(s == 404 and token not in b for s, b in answers.values()),
               "statuses " + ", ".join(str(s) for s, _ in answers.values()))
        d.covered("1 the real upstream Jetty following links", "real SparrowRecSys host (no network here)",
                  "HostStaticServletTest, LauncherIT, test_1_the_connect_file_and_the_log_are_private_and_never_served")

        # 4: a model that cannot load fails once, in one line
        llm = {"SPARROW_LLM_BASE": "host", "SPARROW_LLM_FUSION_WEIGHT": "0.5", "SPARROW_LLM_MODELS_DIR": str(models)}
        d.cli("4 a text file named .gguf", ["rerank", "--model", "llm", "--users", "1", "--no-progress"],
              {**env, **llm, "SPARROW_LLM_LOCAL_MODEL": str(text_gguf)}, rc=2, expect="is not a GGUF file")
        if real_gguf is not None:
            d.cli("4 a truncated .gguf, all users (was 1,550 lines)", ["rerank", "--model", "llm", "--no-progress"],
                  {**env, **llm, "SPARROW_LLM_LOCAL_MODEL": str(cut_gguf),
                   "SPARROW_LLM_MODELS_DIR": str(d.root / "models-cut")}, rc=2, expect="cannot be loaded")
        only_config = d.root / "only-config"
        only_config.mkdir()
        (only_config / "config.json").write_text('{"model_type": "llama"}')
        d.cli("4 a folder with only config.json", ["rerank", "--model", "llm", "--users", "1", "--no-progress"],
              {**env, **llm, "SPARROW_LLM_LOCAL_MODEL": str(only_config)}, rc=2, expect="cannot be loaded")
        blocker = d.keep(d.root / "models-file", "a file where the models folder should be\n")
        if real_gguf is not None:
            d.cli("4 an unwritable models folder", ["rerank", "--model", "llm", "--users", "1", "--no-progress"],
                  {**env, **llm, "SPARROW_LLM_LOCAL_MODEL": str(cut_gguf), "SPARROW_LLM_MODELS_DIR": str(blocker)},
                  rc=2, expect="SPARROW_LLM_MODELS_DIR")
        d.cli("4 serve over a text file named .gguf (was a retry per poll)", ["serve", "--model", "llm"],
              {**env, **llm, "SPARROW_LLM_LOCAL_MODEL": str(text_gguf)}, rc=2, expect="is not a GGUF file",
              timeout=60)
        d.covered("4 damaged dequantised folder / no config.json (a minute each)", "python API",
                  "test_4_a_damaged_dequantised_folder_is_not_taken_for_a_model, "
                  "test_4_a_dequantised_folder_without_config_json_is_converted_again")
        d.covered("4 a zero-byte LoRA adapter", "python API",
                  "test_4_a_zero_byte_adapter_falls_back_to_zero_shot_with_one_warning")

        # 7: every setting means what it says
        store = home / "store"
        d.cli("7 SPARROW_LLM_BASE=recent", ["rerank", "--model", "llm", "--users", "1,2", "--no-progress"],
              {**env, "SPARROW_LLM_BASE": "recent", "SPARROW_LLM_BACKEND": "local-minilm"}, rc=0, lines=None,
              check=lambda o, e: all(json.loads((store / "records" / "llm" / f"{u}.json").read_text())["meta"]
                                     .get("base") == "recent" for u in (1, 2)))
        d.cli("7 a base that cannot work", ["rerank", "--model", "llm", "--users", "1", "--no-progress"],
              {**env, "SPARROW_LLM_BASE": "clickprompt"}, rc=2, expect="is not a ranker a reranker can rerank")
        record = store / "records" / "llm" / "1.json"
        if record.is_file():
            d.keep(record, record.read_text())  # from now on no case may lose it

        # 11 (new): a bridge call that times out names the call, the limit and the setting
        jvm = json.loads(connect.read_text())["pid"]
        os.kill(jvm, signal.SIGSTOP)
        try:
            d.cli("11 a bridge call to a JVM that does not answer", ["bridge", "info"],
                  {**env, "SPARROW_LLM_BRIDGE_TIMEOUT_S": "2"}, rc=2, expect="SPARROW_LLM_BRIDGE_TIMEOUT_S",
                  timeout=60)
        finally:
            os.kill(jvm, signal.SIGCONT)

        # 8: exits a supervisor can act on
        os.kill(jvm, signal.SIGKILL)
        out, err = host.communicate(timeout=60)
        err_lines = outcome_lines(err)
        d.rows.append(Row("8 kill -9 of the JVM under `bridge start`", "sparrow-llm bridge start", host.returncode,
                          len(out.splitlines()) + len(err_lines), "Traceback" in err or "\tat " in err, d.lost(),
                          host.returncode == 2 and len(err_lines) == 1 and not connect.exists(),
                          f"connect file left: {connect.exists()}; " + (err_lines[-1][:150] if err_lines else "")))
        connect.write_text(json.dumps({"host": "127.0.0.1", "port": free_port(), "token": "x", "httpPort": 1}))
        d.cli("8 a rerank over a killed JVM", ["rerank", "--model", "recent", "--users", "1", "--no-progress"], env,
              rc=2, expect="no sparrow-llm bridge answers")
        connect.unlink()
        d.covered("8 serve over a launcher restart", "sparrow-llm serve", "test_8_serve_waits_for_a_launcher_restart_and_reconnects")
    finally:
        if host.poll() is None:
            host.send_signal(signal.SIGINT)
            host.wait(30)

    # 3: a NaN rating is not fatal
    nan = data_folder(d.root / "nan", fixture, ratings.replace("\n1,1,4.0,964982703\n", "\n1,1,NaN,964982703\n", 1))
    host, base_url, env = d.start_host(d.root / "home-nan", SPARROW_LLM_DATA_DIR=str(nan))
    try:
        d.cli("3 a NaN rating, rerank --model popularity", ["rerank", "--model", "popularity", "--users", "1,3",
                                                              "--no-progress"], env, rc=0, lines=0)
        status, body = get(base_url + "/sparrow-llm/api/compare?id=1&size=800")
        d.note("3 the compare API over a NaN rating", "GET /sparrow-llm/api/compare?id=1", status == 200 and
               "NaN" not in body, f"status {status}; bare NaN in the answer: {'NaN' in body}")
    finally:
        host.send_signal(signal.SIGINT)
        host.wait(30)
    d.covered("3 eval --data over a NaN rating", "sparrow-llm eval (minutes)", "test_3_the_eval_copy_keeps_the_nan_the_host_loads")
    d.covered("3 a host that dies at start", "sparrow-llm bridge start", "test_3_a_host_that_dies_at_start_names_the_cause_in_its_one_line")

    # 5, 9: damaged checkpoints and files
    data = data_folder(d.root / "data", fixture)
    env = d.env(d.root / "home-data", SPARROW_LLM_DATA_DIR=str(data))
    d.cli("5 first training (popularity)", ["retrieval", "prepare", "--models", "popularity", "--no-progress"],
          env, rc=0, lines=0)
    checkpoints = list((d.root / "home-data").glob("**/popularity/model.safetensors"))
    for damage, act in (("zero-byte weights", lambda f: (f.parent / "model.safetensors").write_bytes(b"")),
                        ("torn config.json", lambda f: (f.parent / "config.json").write_text('{"kind": "pop')),
                        ("deleted training.json", lambda f: (f.parent / "training.json").unlink())):
        if checkpoints:
            act(checkpoints[0])
        d.cli(f"5 {damage} in a retrieval checkpoint", ["retrieval", "prepare", "--models", "popularity",
                                                         "--no-progress"], env, rc=0, lines=1, expect="retraining",
              check=lambda o, e: "trained" in o and "reusing" not in o)
    d.covered("5 ClickPrompt checkpoint damaged / of other data", "clickprompt prepare (training)",
              "test_5_a_damaged_clickprompt_checkpoint_is_refused_in_one_line_and_retrained, "
              "test_5_a_clickprompt_checkpoint_of_other_data_is_not_served")
    d.covered("5 a checkpoint of other data under this data's key", "retrieval prepare",
              "test_5_a_checkpoint_of_other_data_copied_under_this_datas_key_is_retrained")
    d.covered("6 LLM scores cached by the model file's name", "python API",
              "test_6_llm_answers_are_cached_by_the_models_content_not_its_file_name")
    d.covered("9 torn fusion-*.json / features.json, fusion weight 7", "python API",
              "test_9_a_torn_calibration_model_config_or_feature_file_is_one_line_naming_it, "
              "test_9_a_fusion_weight_out_of_range_names_the_file_and_the_range")
    for name, text, expect in (
            ("a zero-byte ratings.csv", "", "the file is empty"),
            ("a malformed CSV line", RATINGS_HEADER + "1,1,4.0,964982703\n1,3,4.0,964981247,oops\n",
             "Expected 4 fields in line 3, saw 5")):
        bad = data_folder(d.root / f"bad-{len(text)}", fixture, text)
        bad_env = d.env(d.root / "home-bad", SPARROW_LLM_DATA_DIR=str(bad))
        d.cli(f"9 {name} (pandas)", ["retrieval", "prepare", "--models", "popularity", "--no-progress"], bad_env,
              rc=2, expect=expect)
        d.cli(f"9 {name} (Spark)", ["retrieval", "samples", "--out", str(d.root / "samples-out"),
                                    "--master", "local[1]"], bad_env, rc=2, expect=str(bad / "sampledata"),
              check=lambda o, e: not (d.root / "samples-out").exists())

    # 10: EASE's memory checked up front
    n = 41_000
    big = data_folder(d.root / "big", fixture, RATINGS_HEADER + "".join(
        f"{u},{m},4.0,{1000 * u + m}\n" for u in range(1, 9) for m in range(1, 7)),
        "movieId,title,genres\n" + "".join(f"{m},Movie {m} (2000),Drama\n" for m in range(1, n + 1)))
    d.cli("10 EASE on a 41k-movie catalogue", ["retrieval", "prepare", "--models", "ease", "--no-progress"],
          d.env(d.root / "home-big", SPARROW_LLM_DATA_DIR=str(big)), rc=2, expect="GiB")
    d.covered("10 kill -9 during dequantisation / retrieval prepare", "kill -9 mid-run",
              "test_10_a_dequantisation_killed_by_sigkill_leaves_no_folder_behind, "
              "test_10_a_killed_retrieval_prepare_leaves_no_temp_folder")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1], help="what to clone")
    parser.add_argument("--clone", type=Path, required=True, help="where to clone it (made fresh)")
    parser.add_argument("--shared", type=Path, default=None, help="the shared/ fixture folder (default: ../shared)")
    args = parser.parse_args()
    root = args.clone.resolve().parent / "drill"
    for folder in (args.clone, root):
        shutil.rmtree(folder, ignore_errors=True)
    subprocess.run(["git", "clone", "-q", str(args.repo), str(args.clone)], check=True)
    for jar in JARS:  # the bridge and the stand-in, as `sparrow-llm bridge build` (mvn) would make them
        (args.clone / "jvm_bridge" / jar).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(args.repo / "jvm_bridge" / jar, args.clone / "jvm_bridge" / jar)
    root.mkdir(parents=True)
    d = Drill(args.clone.resolve(), root, (args.shared or args.repo.resolve().parent / "shared").resolve())
    started = time.monotonic()
    try:
        drill(d)
    finally:
        print(d.table())
        failed = [r.case for r in d.rows if not r.ok or r.lost or r.traceback]
        print(f"\n{len(d.rows)} rows, {sum(r.rc != 'n/a' for r in d.rows)} run, {len(failed)} failed "
              f"in {time.monotonic() - started:.0f} s" + (f": {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
