"""The JVM boundary: the only module that imports py4j.

The launcher (`io.sparrowllm.bridge.BridgeLauncher`) writes `{host, port, token, ...}` to a
connect file once its gateway listens; this client reads it, authenticates with the token and
makes one call per list (each answer is one JSON string). After the JVM restarts it re-reads
the file and reconnects by itself.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import orjson
import py4j
from py4j.java_gateway import GatewayParameters, JavaGateway
from py4j.protocol import Py4JAuthenticationError, Py4JError, Py4JJavaError, Py4JNetworkError

from ..config import BridgeSettings
from ..schema import HOST_CANDIDATES
from ..domain import CandidateList, MovieMeta, UserBundle, UserHistory, UserRating

__all__ = [
    "BridgeError", "BridgeUnavailable", "BridgeTimeout", "BridgeAuthError", "BridgeCallError",
    "GatewayAddress", "BridgeClient", "CANDIDATE_SOURCES",
]

log = logging.getLogger(__name__)
# py4j logs every lost connection with its traceback (a launcher restart gave three chained ones, a JVM killed
# mid-rerank five), at levels a default run prints. Each loss reaches our caller as one BridgeError line, so
# py4j's loggers (all below "py4j") stay quiet unless something configured them first.
if logging.getLogger("py4j").level == logging.NOTSET:
    logging.getLogger("py4j").setLevel(logging.CRITICAL)
_PY4J_DIR = os.path.dirname(os.path.abspath(py4j.__file__)) + os.sep


def _not_py4j(record: logging.LogRecord) -> bool:
    """py4j also logs a timed-out read with `logging.exception`, on the root logger: that record is dropped."""
    return not record.pathname.startswith(_PY4J_DIR)


logging.getLogger().addFilter(_not_py4j)

CANDIDATE_SOURCES = ("host", "genre", "embedding")
_METAS_KEPT = 8192
_START_HINT = ("start it with `sparrow-llm demo` (stand-in host) or run the host with main class "
               "io.sparrowllm.bridge.BridgeLauncher and SPARROW_LLM_TOKEN set")


class BridgeError(RuntimeError):
    """Base of every error raised at the JVM boundary."""


class BridgeUnavailable(BridgeError):
    """No launcher answers at the address in the connect file."""


class BridgeTimeout(BridgeUnavailable):
    """The gateway did not answer within the call timeout: the JVM lives but is overloaded or stuck (`serve`
    waits and tries again, as for an outage)."""


class BridgeAuthError(BridgeError):
    """The gateway refused the token."""


class BridgeCallError(BridgeError):
    """The JVM answered a call with an exception."""


@dataclass(frozen=True)
class GatewayAddress:
    host: str
    port: int
    token: str
    http_port: int | None = None

    def __repr__(self) -> str:  # never show the token
        return f"GatewayAddress({self.host}:{self.port}, http={self.http_port})"

    @classmethod
    def from_connect_file(cls, path: Path) -> "GatewayAddress":
        try:
            data = json.loads(Path(path).read_text())
            return cls(host=data["host"], port=int(data["port"]), token=data["token"],
                       http_port=data.get("httpPort"))
        except FileNotFoundError:
            raise BridgeUnavailable(f"no connect file at {path}: the bridge is not running; {_START_HINT}") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise BridgeUnavailable(f"connect file {path} is unreadable ({exc}); restart the launcher") from None


def _ratings(rows: Iterable[Sequence]) -> tuple[UserRating, ...]:
    """History rows; a rating the gateway wrote as null (a NaN in the host's ratings.csv) is left out."""
    return tuple(UserRating(int(m), float(r), int(t)) for m, r, t in rows if r is not None)


def _timed_out(exc: BaseException, elapsed_s: float, limit_s: float) -> bool:
    """Whether a failed call ran into the read timeout: a connect or handshake says so in its cause; a read
    that timed out mid-call reaches us as a bare Py4JError (py4j logs the socket.timeout and answers "error"),
    after the whole timeout."""
    if isinstance(exc, Py4JNetworkError):
        while isinstance(exc, Py4JNetworkError):  # a handshake's error wraps the read's, which wraps the socket's
            exc = exc.cause
        return isinstance(exc, TimeoutError)
    return isinstance(exc, TimeoutError) or elapsed_s >= limit_s


def _is_connection_loss(exc: BaseException) -> bool:
    # py4j reports a socket closed mid-call as a plain Py4JError with one of these texts.
    return isinstance(exc, (Py4JNetworkError, OSError)) or any(
        text in str(exc) for text in ("Answer from Java side is empty", "Error while receiving",
                                      "Error while sending"))


class BridgeClient:
    """A thread-safe client of the launcher's recall entry point."""

    def __init__(self, settings: BridgeSettings):
        self._settings = settings
        self._lock = threading.Lock()
        self._gateway: JavaGateway | None = None
        self.address: GatewayAddress | None = None
        # Each movie's last row and its MovieMeta: an 800-candidate answer names the same movies every time,
        # and building the frozen dataclasses cost more than the call itself. A changed row is built again;
        # past _METAS_KEPT movies the memo starts over, so a large catalogue does not grow the client.
        self._metas: dict[tuple[int, int], tuple[list, MovieMeta]] = {}

    def __enter__(self) -> "BridgeClient":
        self._connected()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        self._metas.clear()
        if self._gateway is not None:
            try:
                self._gateway.close(keep_callback_server=False)
            except Exception:  # closing a dead socket may fail; nothing is lost
                pass
            self._gateway = None

    def _connected(self) -> JavaGateway:
        if self._gateway is None:
            address = GatewayAddress.from_connect_file(self._settings.connect_file)
            token = self._settings.token or address.token
            self._gateway = JavaGateway(gateway_parameters=GatewayParameters(
                address=address.host, port=address.port, auth_token=token,
                auto_convert=True, read_timeout=self._settings.call_timeout_s))
            self.address = address
        return self._gateway

    def _call(self, method: str, *args) -> Any:
        """One entry-point call, reconnecting once if the JVM went away (e.g. restarted); one that gets no
        answer within the call timeout is not tried again (BridgeTimeout)."""
        with self._lock:
            for attempt in (1, 2):
                started = time.monotonic()
                try:
                    gateway = self._connected()
                    # orjson: half of json's time on a bulk answer (0.39 vs 0.77 ms for 755 movies)
                    return orjson.loads(getattr(gateway.entry_point, method)(*args))
                except Py4JAuthenticationError:
                    self._drop()
                    raise BridgeAuthError(
                        f"the gateway at {self.address} refused the token: use the token the launcher "
                        f"was started with (SPARROW_LLM_TOKEN) or its connect file {self._settings.connect_file}"
                    ) from None
                except Py4JJavaError as exc:
                    raise BridgeCallError(f"{method} failed in the JVM: {exc.java_exception}") from None
                except (Py4JError, OSError) as exc:
                    limit = self._settings.call_timeout_s
                    if _timed_out(exc, time.monotonic() - started, limit):
                        address = self.address
                        self._drop()  # the late answer must not be read as the next call's
                        raise BridgeTimeout(
                            f"{method}: the bridge at {address or self._settings.connect_file} gave no answer within "
                            f"{limit:g} s (its JVM is overloaded or stuck); to wait longer, raise "
                            "SPARROW_LLM_BRIDGE_TIMEOUT_S") from None
                    if not _is_connection_loss(exc):
                        raise BridgeCallError(f"{method} failed: {exc}") from None
                    address = self.address
                    self._drop()
                    if attempt == 2:
                        raise BridgeUnavailable(
                            f"no sparrow-llm bridge answers at {address or self._settings.connect_file}; "
                            f"{_START_HINT}") from None
                    log.info("bridge connection lost (%s); reconnecting", type(exc).__name__)

    # ---- the recall layer, one round trip per list -------------------------------------------
    def info(self) -> dict[str, Any]:
        return self._call("info")

    def user_ids(self) -> list[int]:
        return [int(u) for u in self._call("userIds")]

    def candidates(self, user_id: int, source: str = "host", size: int = HOST_CANDIDATES) -> CandidateList:
        self._check_source(source)
        d = self._call("candidates", int(user_id), source, int(size))
        return CandidateList(int(d["userId"]), bool(d["known"]), d["source"], tuple(self._movie_metas(d["movies"])))

    def history(self, user_id: int) -> UserHistory:
        d = self._call("history", int(user_id))
        return UserHistory(int(d["userId"]), bool(d["known"]), _ratings(d["ratings"]))

    def movies(self, movie_ids: Iterable[int], with_emb: bool = False) -> tuple[dict[int, MovieMeta], list[int]]:
        d = self._call("movies", json.dumps([int(m) for m in movie_ids]), bool(with_emb))
        return {m.movie_id: m for m in self._movie_metas(d["movies"])}, [int(m) for m in d["missing"]]

    def user_bundles(self, user_ids: Iterable[int], source: str = "host", size: int = HOST_CANDIDATES,
                     with_emb: bool = False) -> tuple[list[UserBundle], dict[int, MovieMeta]]:
        """Histories and candidates of many users plus every movie they name, in one call."""
        self._check_source(source)
        d = self._call("userBundles", json.dumps([int(u) for u in user_ids]), source, int(size), bool(with_emb))
        bundles = [UserBundle(int(u["userId"]), bool(u["known"]), _ratings(u["ratings"]),
                              tuple(int(m) for m in u["candidates"])) for u in d["users"]]
        return bundles, {m.movie_id: m for m in self._movie_metas(d["movies"])}

    def take_misses(self, max_items: int = 100) -> list[tuple[str, int]]:
        """Users the stage served from the host's order because no fresh record existed."""
        return [(m["model"], int(m["userId"])) for m in self._call("takeMisses", int(max_items))]

    def _movie_metas(self, rows: list[list]) -> Iterator[MovieMeta]:
        """MovieMetas of the entry point's movie rows: `[movieId, title, releaseYear, [genres], averageRating,
        ratingNumber]`, then `[floats] | null` when the embedding was asked for."""
        for row in rows:
            key = (row[0], len(row))
            known = self._metas.get(key)
            if known is None or known[0] != row:
                if len(self._metas) >= _METAS_KEPT:
                    self._metas.clear()
                movie_id, title, year, genres, average, count, *emb = row
                # null: a number the host had as NaN (an average over a NaN rating; an embedding with a NaN is none)
                meta = MovieMeta(int(movie_id), title or "", int(year or 0), tuple(genres or ()), float(average or 0.0),
                                 int(count or 0), tuple(emb[0]) if emb and emb[0] and None not in emb[0] else None)
                known = self._metas[key] = (row, meta)
            yield known[1]

    @property
    def jvm(self):
        """The raw py4j JVM view, for diagnostics and the per-getter baseline in bench/ only."""
        with self._lock:
            return self._connected().jvm

    @staticmethod
    def _check_source(source: str) -> None:
        if source not in CANDIDATE_SOURCES:
            raise ValueError(f"candidate source must be one of {CANDIDATE_SOURCES}, got {source!r}")
