"""Running the host JVM with the bridge launcher: classpath, web root, environment, start and stop.

Two kinds of host: a real SparrowRecSys checkout (`SPARROW_HOME` with `target/classes` and the
`jar-with-dependencies`), or the test stand-in (`jvm_bridge/sparrowrecsys-standin`) over the
fixture in `../shared`, for which a web root is composed from links into the fixture.
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .. import schema
from ..config import ConfigError, Settings

__all__ = ["HostRuntime", "HostProcess", "HostError", "resolve_host", "build_bridge", "launcher_env", "http_get",
           "LAUNCHER_CLASS"]

log = logging.getLogger(__name__)

LAUNCHER_CLASS = "io.sparrowllm.bridge.BridgeLauncher"
_REAL_HOST_JAR = "SparrowRecSys-1.0-SNAPSHOT-jar-with-dependencies.jar"
# How many of the host log's last lines (stack frames left out) an error line carries.
_LOG_LINES_IN_ERRORS = 6


# Variables of ours the host JVM must not inherit: an LLM key has no business in the host's process.
_NOT_FOR_THE_JVM = frozenset({"ZHIPUAI_API_KEY"})


class HostError(RuntimeError):
    """The host JVM could not be built, started or reached."""


@dataclass(frozen=True)
class HostRuntime:
    kind: str  # "sparrowrecsys" or "standin"
    class_root: Path  # the classpath folder that holds webroot/index.html
    host_jar: Path
    bridge_jar: Path

    @property
    def webroot(self) -> Path:
        return self.class_root / "webroot"

    @property
    def classpath(self) -> str:
        # The host first, as a deploy has it: its py4j 0.10.7 comes before ours, which is shaded.
        return os.pathsep.join(map(str, (self.class_root, self.host_jar, self.bridge_jar)))


def resolve_host(settings: Settings) -> HostRuntime:
    """Where the host's classes and web root are, without touching the disk."""
    hs = settings.host
    if hs.sparrow_home is not None:
        return HostRuntime("sparrowrecsys", hs.sparrow_home / "target" / "classes",
                           hs.sparrow_home / "target" / _REAL_HOST_JAR, hs.bridge_jar)
    return HostRuntime("standin", hs.work_dir / "standin-classroot", hs.standin_jar, hs.bridge_jar)


def _compose_standin_webroot(settings: Settings, runtime: HostRuntime) -> None:
    """A web root of links into the read-only fixture (`modeldata/` a real folder of links to its embeddings);
    no plugin data goes here: Jetty serves the web root to anyone, and the store lives in the work dir."""
    fixture = settings.host.data_webroot
    if not (fixture / schema.RATINGS_CSV).is_file():
        raise ConfigError(f"fixture web root not found at {fixture}: set SPARROW_LLM_SHARED to the shared/ folder")
    webroot = runtime.webroot
    (webroot / "modeldata").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(settings.host.jvm_dir / "sparrowrecsys-standin" / "webroot" / "index.html",
                    webroot / "index.html")
    for rel in ("sampledata", "posters", schema.ITEM_EMB_CSV, schema.USER_EMB_CSV):
        link = webroot / rel
        if link.is_symlink() or link.exists():
            if link.is_symlink() and link.resolve() == (fixture / rel).resolve():
                continue
            link.unlink()
        link.symlink_to(fixture / rel)


def _inside(path: Path, folder: Path) -> bool:
    """Whether `path` is `folder` or below it, as written or with links resolved."""
    path, folder = Path(path).absolute(), Path(folder).absolute()
    return path.is_relative_to(folder) or path.resolve().is_relative_to(folder.resolve())


def _refuse_private_paths_in_webroot(settings: Settings, webroot: Path) -> None:
    """The host serves its web root to anyone, links followed: the plugin's home (the connect file holds the
    gateway token, the log the host's output) and the connect file must be outside it. The launcher refuses too."""
    for variable, path in (("SPARROW_LLM_HOME", settings.host.work_dir),
                           ("SPARROW_LLM_CONNECT_FILE", settings.bridge.connect_file)):
        if _inside(path, webroot):
            raise HostError(f"{variable} {path} is inside the host's web root {webroot}, which the host serves to "
                            "anyone (the connect file holds the gateway token): move it outside")


def build_bridge(settings: Settings, *, run_tests: bool = False) -> None:
    """`mvn -q package` in jvm_bridge/ (the bridge jar and the stand-in host)."""
    mvn = shutil.which("mvn")
    if mvn is None:
        raise HostError("Maven (mvn) is not installed: `apt-get install maven`, or see the README set-up")
    cmd = [mvn, "-q", "-B", "package"] + ([] if run_tests else ["-DskipTests"])
    log.info("building the bridge: %s (in %s)", " ".join(cmd), settings.host.jvm_dir)
    done = subprocess.run(cmd, cwd=settings.host.jvm_dir, capture_output=True, text=True)
    if done.returncode != 0:
        raise HostError(f"the Maven build failed (exit {done.returncode}):\n{done.stdout[-4000:]}{done.stderr[-4000:]}")


def launcher_env(settings: Settings, runtime: HostRuntime, token: str, extra: dict[str, str] | None = None) -> dict:
    """The launcher's environment: the Java-side mirror of Settings (docs/bridge-contract.md)."""
    st = settings.store
    env = {
        "PORT": str(settings.host.http_port),
        "SPARROW_LLM_HOME": str(settings.host.work_dir),  # never served, whatever links the web root holds
        "SPARROW_LLM_TOKEN": token,
        "SPARROW_LLM_GATEWAY_PORT": str(settings.bridge.gateway_port),
        "SPARROW_LLM_CONNECT_FILE": str(settings.bridge.connect_file),
        "SPARROW_LLM_STORE": st.kind,
        "SPARROW_LLM_STORE_DIR": str(settings.store_dir),
        "SPARROW_LLM_REDIS_HOST": st.redis_host,
        "SPARROW_LLM_REDIS_PORT": str(st.redis_port),
        "SPARROW_LLM_REDIS_DB": str(st.redis_db),
        "SPARROW_LLM_MAX_AGE_S": str(st.max_age_s),
    }
    env["SPARROW_LLM_EXIT_ON_STDIN_EOF"] = "1"  # HostProcess keeps the JVM's stdin open while it lives
    if st.redis_password:
        env["SPARROW_LLM_REDIS_PASSWORD"] = st.redis_password
    env.update(extra or {})
    return env


def http_get(url: str, timeout_s: float) -> tuple[int, dict[str, str], bytes]:
    """GET `url` of the host: status, headers and body. No answer within `timeout_s` is one HostError naming
    the request, the limit and the setting that raises it, never a bare "timed out"."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except (TimeoutError, urllib.error.URLError) as exc:
        if not isinstance(exc, TimeoutError) and not isinstance(exc.reason, TimeoutError):
            raise
        raise HostError(f"GET {url}: the host gave no answer within {timeout_s:g} s (it is overloaded or stuck); "
                        "to wait longer, raise SPARROW_LLM_HTTP_TIMEOUT_S") from None


class HostProcess:
    """The host JVM under the bridge launcher, as a context manager."""

    def __init__(self, settings: Settings, *, extra_env: dict[str, str] | None = None,
                 log_path: Path | None = None):
        self.settings = settings
        self.runtime = resolve_host(settings)
        self.token = settings.bridge.token or secrets.token_urlsafe(32)
        self.extra_env = extra_env or {}
        self.log_path = log_path or settings.host.private_dir / schema.HOST_LOG
        self.http_port: int | None = None
        self._proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def prepare(self) -> None:
        rt = self.runtime
        _refuse_private_paths_in_webroot(self.settings, rt.webroot)
        if not rt.bridge_jar.is_file() or (rt.kind == "standin" and not rt.host_jar.is_file()):
            build_bridge(self.settings)
        if rt.kind == "standin":
            _compose_standin_webroot(self.settings, rt)
        elif not (rt.webroot / "index.html").is_file() or not rt.host_jar.is_file():
            raise HostError(f"SPARROW_HOME={self.settings.host.sparrow_home} is not a built SparrowRecSys checkout: "
                            f"expected {rt.webroot / 'index.html'} and {rt.host_jar} (run `mvn package` there)")

    def start(self) -> "HostProcess":
        self.prepare()
        connect_file = self.settings.bridge.connect_file
        for folder in {connect_file.parent, self.log_path.parent}:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)  # a folder made here is the owner's only
            if folder == self.settings.host.private_dir:
                folder.chmod(0o700)  # the token and the log: owner-only, whoever made the folder
        connect_file.unlink(missing_ok=True)  # a stale file must not be mistaken for this start
        # The JVM never needs an LLM key: it is left out of its environment.
        inherited = {k: v for k, v in os.environ.items() if k not in _NOT_FOR_THE_JVM}
        env = {**inherited, **launcher_env(self.settings, self.runtime, self.token, self.extra_env)}
        cmd = [self.settings.host.java, "-cp", self.runtime.classpath, LAUNCHER_CLASS]
        with open(self.log_path, "ab") as out:
            # stdin is a pipe this process holds open (as PySpark holds its gateway's): when this process dies,
            # even by SIGKILL, the pipe closes and the launcher's watchdog ends the JVM.
            self._proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                          stdin=subprocess.PIPE, start_new_session=True)
        self._wait_ready(connect_file)
        return self

    def _wait_ready(self, connect_file: Path) -> None:
        deadline = time.monotonic() + self.settings.host.start_timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise HostError(self._exit_line("while starting"))
            if connect_file.is_file():
                self.http_port = int(json.loads(connect_file.read_text())["httpPort"])
                return
            time.sleep(0.1)
        self.stop()
        raise HostError(f"the host JVM did not become ready in {self.settings.host.start_timeout_s:g} s (to wait "
                        f"longer, raise SPARROW_LLM_START_TIMEOUT_S); last lines of {self.log_path}: {self._log_gist()}")

    def _exit_line(self, when: str) -> str:
        """One line (the CLI prints errors as one): how the JVM ended, and the log's last lines."""
        code = self._proc.returncode
        how = (f"was killed by {signal.Signals(-code).name}" if code < 0 and -code in signal.valid_signals()
               else f"exited with code {code}")
        return f"the host JVM (pid {self._proc.pid}) {how} {when}; last lines of {self.log_path}: {self._log_gist()}"

    def _log_gist(self) -> str:
        """The log's last lines but stack frames, joined by ' | ': the exception's own line stays in view."""
        lines = [line.strip() for line in self.log_tail(200).splitlines()
                 if line.strip() and not line.lstrip().startswith(("at ", "... "))]
        return " | ".join(lines[-_LOG_LINES_IN_ERRORS:]) or "(empty)"

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout_s: float = 15.0) -> None:
        """Stops the JVM; its connect file goes too, also when the JVM died without deleting it (kill -9)."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.stdin.close()  # the watchdog's signal; terminate() follows in case it is off
            self._proc.terminate()
            try:
                self._proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._remove_connect_file()

    def _remove_connect_file(self) -> None:
        """Deletes the connect file when this JVM wrote it (another launcher's file is left alone)."""
        path = self.settings.bridge.connect_file
        try:
            if json.loads(path.read_text()).get("pid") == self._proc.pid:
                path.unlink(missing_ok=True)
        except (OSError, ValueError, AttributeError):
            pass  # absent, unreadable or not ours: nothing to clean up

    def kill(self) -> None:
        """Kill -9, as a crash would (tests of recovery)."""
        if self.alive():
            self._proc.kill()
            self._proc.wait()

    def wait_until_interrupted(self) -> None:
        """Block until Ctrl-C or SIGTERM (the foreground commands). The JVM's own exit, a crash or a kill -9, is a
        HostError: a supervisor must see the command fail (leaving the `with` block removes the connect file)."""
        import threading

        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            while not stop.wait(0.5) and self.alive():
                pass
        except KeyboardInterrupt:
            return
        if not stop.is_set() and not self.alive():
            raise HostError(self._exit_line("while serving"))

    def __enter__(self) -> "HostProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
