"""A fake Zhipu chat-completions server on 127.0.0.1, scriptable per test, and the fixtures that use it.

It speaks the HTTP API the real `zhipuai` client calls: `POST <base_url>/chat/completions`
with `Authorization: Bearer <key>`, answering the SDK's `Completion` JSON or an
`{"error": {"code", "message"}}` body. Replies are taken from a script in order; once it is
used up, `default` answers.
"""
from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

import pytest

from sparrow_llm.domain import MovieMeta, UserRating
from sparrow_llm.config import LLMSettings
from sparrow_llm.domain import UserContext
from sparrow_llm.domain import Profile

__all__ = ["Reply", "FakeGLM", "fake_glm", "glm_settings", "movie", "MOVIES", "KIDS_FAN", "CRIME_FAN",
           "HOST_ORDER", "context", "VALID_KEY", "API_PATH"]

VALID_KEY = "fake-id.fake-SECRET-0123456789"
API_PATH = "/api/paas/v4"


@dataclass
class Reply:
    content: str = "[]"
    status: int = 200
    delay_s: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    error_code: str = "1234"
    usage: tuple[int, int] | None = None  # (prompt, completion); default: about chars / 4
    raw_body: bytes | None = None  # sent as is (a malformed answer)


# A reply, or a function of the request body that makes one (to answer about the prompt).
Script = Reply | Callable[[dict], Reply]


class FakeGLM:
    def __init__(self, key: str = VALID_KEY):
        self.key = key
        self.default: Script = Reply()
        self.requests: list[dict] = []
        self.refused = 0  # requests answered 401 (wrong key)
        self.in_flight = 0
        self.max_in_flight = 0
        self._script: deque[Script] = deque()
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{API_PATH}"

    def push(self, *replies: Script) -> None:
        with self._lock:
            self._script.extend(replies)

    @property
    def calls(self) -> int:
        with self._lock:
            return len(self.requests)

    def start(self) -> "FakeGLM":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._closing.set()  # wakes replies still sleeping
        self._server.shutdown()
        self._server.server_close()

    def _next(self, body: dict) -> Reply:
        with self._lock:
            self.requests.append(body)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            script = self._script.popleft() if self._script else self.default
        return script(body) if callable(script) else script

    def _done(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            # Headers and body go out in two writes; without this Nagle adds ~40 ms to every answer.
            disable_nagle_algorithm = True
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep pytest output clean
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                if self.path != f"{API_PATH}/chat/completions":
                    return self._send(404, {"error": {"code": "404", "message": f"no route {self.path}"}})
                if self.headers.get("Authorization") != f"Bearer {fake.key}":
                    with fake._lock:
                        fake.refused += 1
                    # Echo the key, as some APIs do: the client must never pass it on.
                    return self._send(401, {"error": {"code": "1000", "message":
                                                      f"Authentication failed for {self.headers.get('Authorization')}"}})
                reply = fake._next(body)
                try:
                    if reply.delay_s and fake._closing.wait(reply.delay_s):
                        return
                    if reply.raw_body is not None:
                        return self._send(reply.status, reply.raw_body, reply.headers)
                    if reply.status != 200:
                        return self._send(reply.status, {"error": {"code": reply.error_code,
                                                                   "message": f"scripted {reply.status}"}},
                                          reply.headers)
                    prompt = sum(len(m.get("content") or "") for m in body.get("messages", []))
                    usage = reply.usage or (prompt // 4, len(reply.content) // 4)
                    self._send(200, {
                        "id": f"fake-{time.monotonic_ns()}", "created": int(time.time()), "model": body.get("model"),
                        "request_id": "fake",
                        "choices": [{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": reply.content}}],
                        "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1],
                                  "total_tokens": sum(usage)},
                    }, reply.headers)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (its timeout); nothing to answer
                finally:
                    fake._done()

            def _send(self, status: int, payload, headers: dict[str, str] | None = None) -> None:
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

        return Handler


@pytest.fixture()
def fake_glm():
    server = FakeGLM().start()
    yield server
    server.stop()


@pytest.fixture()
def glm_settings(fake_glm) -> LLMSettings:
    """zhipuai settings against the fake: short timeouts, two retries, two requests in flight."""
    return LLMSettings(backend="zhipuai", base_url=fake_glm.url, api_key=VALID_KEY, timeout_s=0.5,
                       max_retries=2, concurrency=2, breaker_failures=3, breaker_cooldown_s=60.0)


def movie(movie_id: int, title: str, year: int, *genres: str) -> MovieMeta:
    return MovieMeta(movie_id, title, year, tuple(genres), 3.5, 100)


# A hand-made catalogue and two users with clear tastes.
MOVIES = {m.movie_id: m for m in (
    movie(1, "Toy Story", 1995, "Animation", "Children", "Comedy"),
    movie(2, "Lion King, The", 1994, "Animation", "Children", "Musical"),
    movie(3, "Aladdin", 1992, "Animation", "Children", "Comedy", "Musical"),
    movie(4, "Heat", 1995, "Action", "Crime", "Thriller"),
    movie(5, "Se7en", 1995, "Crime", "Mystery", "Thriller"),
    movie(6, "Shining, The", 1980, "Horror"),
    movie(7, "Saw", 2004, "Horror", "Thriller"),
    movie(8, "Finding Nemo", 2003, "Animation", "Children", "Comedy"),
    movie(9, "Goodfellas", 1990, "Crime", "Drama"),
    movie(10, "Alien", 1979, "Horror", "Sci-Fi"),
    movie(11, "Casino", 1995, "Crime", "Drama"),
    movie(12, "Beauty and the Beast", 1991, "Animation", "Children", "Musical", "Romance"),
    movie(13, "Scream", 1996, "Horror", "Mystery"),
    movie(14, "Monsters, Inc.", 2001, "Animation", "Children", "Comedy"),
    movie(15, "Godfather, The", 1972, "Crime", "Drama"),
)}
KIDS_FAN = ((1, 5.0), (2, 4.5), (6, 1.0), (3, 5.0), (12, 4.0), (7, 1.5))  # oldest first
CRIME_FAN = ((4, 5.0), (1, 2.0), (5, 4.5), (13, 1.0), (9, 5.0))
# The host's candidates: horror first, so a reranker has something to fix; 7 and 13 are rated by one user.
HOST_ORDER = (7, 13, 10, 8, 11, 14, 15)


def context(user_id: int, rated=KIDS_FAN, candidates=HOST_ORDER, profile: str | None = None) -> UserContext:
    ratings = tuple(UserRating(m, r, 1_600_000_000 + i) for i, (m, r) in enumerate(rated))
    stored = Profile(user_id, profile, "test", "v0", "h") if profile is not None else None
    return UserContext(user_id, ratings, tuple(candidates), MOVIES, stored)
