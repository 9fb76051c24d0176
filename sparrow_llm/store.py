"""The store the host's rerank stage reads: ranked lists, user profiles and the LLM answer cache.

Two backends keep the same JSON records (docs/bridge-contract.md): files (the default; atomic temp file +
rename) under the plugin's own folder, `Settings.store_dir`: SPARROW_LLM_STORE_DIR, else
`$SPARROW_LLM_HOME/store` (`~/.sparrow-llm/store`), never under the host's web root, which the host serves
to anyone and its build deletes (`adopt_legacy_store` moves records from the old default there); and Redis
(production; one MULTI/EXEC per batch).
"""
from __future__ import annotations

import json
import logging
import errno
import os
import shutil
import stat
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Iterable, Iterator

from . import schema
from .config import Settings, StoreSettings
from .domain import Profile, Record
from .schema import MODEL_NAME_RE

__all__ = [
    "Store", "FileStore", "RedisStore",
    "StoreError", "StoreUnavailable", "open_store", "open_default_store", "adopt_legacy_store", "STORE_BACKENDS",
]

log = logging.getLogger(__name__)

# The largest stored value read back (the stage's reader has the same limit, SPARROW_LLM_MAX_RECORD_BYTES).
MAX_VALUE_BYTES = 1 << 20


class StoreError(RuntimeError):
    """The store refused a read or a write."""


class StoreUnavailable(StoreError):
    """The store cannot be reached (Redis down, folder not writable)."""


def _parse_or_none(raw, parse, where: str):
    """A stored value parsed, or None when absent or unreadable (logged: the reader falls back)."""
    if raw is None:
        return None
    if len(raw) > MAX_VALUE_BYTES:
        log.warning("ignoring %s: larger than %d bytes", where, MAX_VALUE_BYTES)
        return None
    try:
        return parse(raw)
    except (ValueError, KeyError, TypeError, RecursionError) as exc:  # RecursionError: hostile nesting
        log.warning("ignoring unreadable %s: %s", where, exc)
        return None


def _read_regular_file(path: Path) -> str | None:
    """A stored file's text: only a regular file (never a link, FIFO or device: a FIFO would block),
    at most `MAX_VALUE_BYTES` (a larger one is logged and treated as unreadable)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # a symlink where a record belongs
            log.warning("ignoring store file %s: a link, not a file", path.name)
            return None
        raise StoreUnavailable(f"cannot read {path}: {exc.strerror}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_VALUE_BYTES:
        os.close(fd)
        log.warning("ignoring store file %s: not a regular file of at most %d bytes", path.name, MAX_VALUE_BYTES)
        return None
    with os.fdopen(fd, "rb") as fh:
        return fh.read(MAX_VALUE_BYTES + 1).decode("utf-8", errors="replace")


class Store(ABC):
    """Records, profiles and cache entries; every write is all-or-nothing for a reader."""

    @abstractmethod
    def put_records(self, records: Iterable[Record]) -> int:
        """Write records; returns how many. A reader sees each one whole or not at all."""

    @abstractmethod
    def get_record(self, model: str, user_id: int) -> Record | None: ...

    @abstractmethod
    def models(self) -> list[str]: ...

    @abstractmethod
    def put_profiles(self, profiles: Iterable[Profile]) -> int: ...

    @abstractmethod
    def get_profile(self, user_id: int) -> Profile | None: ...

    @abstractmethod
    def cache_get(self, key: str) -> dict | None: ...

    @abstractmethod
    def cache_put(self, key: str, value: dict) -> None: ...

    def close(self) -> None:
        """Release connections (nothing to do for files)."""


class FileStore(Store):
    """JSON files under one root; each written to a temp file in its folder, then renamed over."""

    def __init__(self, root: Path, *, fsync: bool = True):
        self.root = Path(root)
        self.fsync = fsync
        if self.root.exists() and not self.root.is_dir():
            raise StoreUnavailable(f"the store folder {self.root} is a file, not a folder (SPARROW_LLM_STORE_DIR)")

    def __repr__(self) -> str:
        return f"FileStore({str(self.root)!r})"

    def _record_path(self, model: str, user_id: int) -> Path:
        return self.root / schema.FILE_RECORDS / model / f"{int(user_id)}.json"

    def _profile_path(self, user_id: int) -> Path:
        return self.root / schema.FILE_PROFILES / f"{int(user_id)}.json"

    def _cache_path(self, key: str) -> Path:
        if not key.isalnum():
            raise StoreError(f"cache key must be alphanumeric, got {key!r}")
        return self.root / schema.FILE_CACHE / key[:2] / f"{key}.json"

    def _write_atomic(self, path: Path, text: str) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        except OSError as exc:
            raise StoreUnavailable(f"cannot write under {path.parent}: {exc.strerror}") from None
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                if self.fsync:
                    os.fsync(fh.fileno())
            os.chmod(tmp, 0o644)  # mkstemp makes 0600; the host reads these files
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def put_records(self, records: Iterable[Record]) -> int:
        count = 0
        for record in records:
            self._write_atomic(self._record_path(record.model, record.user_id), record.to_json())
            count += 1
        return count

    def get_record(self, model: str, user_id: int) -> Record | None:
        return self._parse(self._record_path(model, user_id), Record.from_json)

    def models(self) -> list[str]:
        base = self.root / schema.FILE_RECORDS
        if not base.is_dir():
            return []
        return sorted(p.name for p in base.iterdir() if p.is_dir() and MODEL_NAME_RE.match(p.name))

    def put_profiles(self, profiles: Iterable[Profile]) -> int:
        count = 0
        for profile in profiles:
            self._write_atomic(self._profile_path(profile.user_id), profile.to_json())
            count += 1
        return count

    def get_profile(self, user_id: int) -> Profile | None:
        return self._parse(self._profile_path(user_id), Profile.from_json)

    def cache_get(self, key: str) -> dict | None:
        return self._parse(self._cache_path(key), json.loads)

    def cache_put(self, key: str, value: dict) -> None:
        self._write_atomic(self._cache_path(key), json.dumps(value, ensure_ascii=False))

    def _parse(self, path: Path, parse):
        return _parse_or_none(_read_regular_file(path), parse, f"store file {path}")


class RedisStore(Store):
    """Redis keys under `sllm:` (schema.REDIS_*); a batch of records is one MULTI/EXEC."""

    def __init__(self, settings: StoreSettings, *, client=None):
        import redis  # imported here so the file store works without a Redis client installed

        self._redis_errors = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
        self.address = f"{settings.redis_host}:{settings.redis_port}/{settings.redis_db}"
        self.ttl_s = settings.ttl_s
        from redis.backoff import ExponentialBackoff
        from redis.retry import Retry

        # After a Redis restart pooled connections are dead: each command retries twice on a fresh connection,
        # and idle connections are checked before use.
        self._client = client or redis.Redis(
            host=settings.redis_host, port=settings.redis_port, db=settings.redis_db,
            password=settings.redis_password, socket_timeout=5, socket_connect_timeout=2,
            retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), 2), retry_on_error=list(self._redis_errors),
            health_check_interval=10,
        )

    def __repr__(self) -> str:
        return f"RedisStore({self.address!r})"

    def _run(self, fn):
        try:
            return fn(self._client)
        except self._redis_errors as exc:
            raise StoreUnavailable(f"Redis at {self.address} is not reachable: {exc}") from None

    def _set_many(self, pairs: Iterator[tuple[str, str]], models: set[str] | None = None) -> int:
        pairs = list(pairs)

        def write(client):
            with client.pipeline(transaction=True) as pipe:
                for key, value in pairs:
                    pipe.set(key, value, ex=self.ttl_s)
                if models:
                    pipe.sadd(schema.REDIS_MODELS, *models)
                pipe.execute()

        if pairs:
            self._run(write)
        return len(pairs)

    def put_records(self, records: Iterable[Record]) -> int:
        records = list(records)
        return self._set_many(
            ((schema.REDIS_RECORD.format(model=r.model, user_id=r.user_id), r.to_json()) for r in records),
            models={r.model for r in records},
        )

    def _get(self, key: str, parse):
        return _parse_or_none(self._run(lambda c: c.get(key)), parse, f"Redis value {key}")

    def get_record(self, model: str, user_id: int) -> Record | None:
        return self._get(schema.REDIS_RECORD.format(model=model, user_id=int(user_id)), Record.from_json)

    def models(self) -> list[str]:
        return sorted(m.decode() for m in self._run(lambda c: c.smembers(schema.REDIS_MODELS)))

    def put_profiles(self, profiles: Iterable[Profile]) -> int:
        return self._set_many((schema.REDIS_PROFILE.format(user_id=p.user_id), p.to_json()) for p in profiles)

    def get_profile(self, user_id: int) -> Profile | None:
        return self._get(schema.REDIS_PROFILE.format(user_id=int(user_id)), Profile.from_json)

    def cache_get(self, key: str) -> dict | None:
        return self._get(schema.REDIS_CACHE.format(key=key), json.loads)

    def cache_put(self, key: str, value: dict) -> None:
        self._set_many(iter([(schema.REDIS_CACHE.format(key=key), json.dumps(value, ensure_ascii=False))]))

    def close(self) -> None:
        self._client.close()


STORE_BACKENDS = {
    "file": lambda settings, default_dir: FileStore(settings.dir or default_dir),
    "redis": lambda settings, default_dir: RedisStore(settings),
}


def open_store(settings: StoreSettings, default_dir: Path | None = None) -> Store:
    """The store `settings` describe; a file store without a folder of its own uses `default_dir`."""
    if settings.kind == "file" and settings.dir is None and default_dir is None:
        raise StoreError("the file store needs a folder: set SPARROW_LLM_STORE_DIR or --store-dir")
    return STORE_BACKENDS[settings.kind](settings, default_dir)


def open_default_store(settings: Settings) -> Store:
    """The configured store; a file store defaults to `Settings.store_dir`."""
    return open_store(settings.store, settings.store_dir)


def _plugin_file(rel: Path, text: str) -> bool:
    """Whether a file at `rel` (relative to a store root) is one the plugin wrote: at its place in the layout
    (docs/bridge-contract.md) and parsing as what belongs there, of the model and user its path names."""
    parts, stem = rel.parts, rel.stem
    try:
        if len(parts) == 3 and parts[0] == schema.FILE_RECORDS and MODEL_NAME_RE.match(parts[1]) and stem.isdigit():
            record = Record.from_json(text)
            return record.model == parts[1] and record.user_id == int(stem)
        if len(parts) == 2 and parts[0] == schema.FILE_PROFILES and stem.isdigit():
            return Profile.from_json(text).user_id == int(stem)
        if len(parts) == 3 and parts[0] == schema.FILE_CACHE and stem.isalnum() and stem[:2] == parts[1]:
            return isinstance(json.loads(text), dict)
    except (ValueError, KeyError, TypeError, RecursionError):
        return False
    return False


def adopt_legacy_store(legacy: Path, store_dir: Path) -> int:
    """Moves the records, profiles and cache entries of a store kept at the old default (`<web root>/modeldata/
    sparrow-llm`, which the host serves to anyone and its build deletes) into `store_dir`, once; a file already
    in `store_dir` wins. Deletes nothing: a file that is not a plugin record (an operator's notes, a link, a
    file of another layout) stays where it is, and a folder is removed only when it is empty (os.rmdir).
    Returns how many files moved (0: nothing there)."""
    legacy, store_dir = Path(legacy), Path(store_dir)
    if not legacy.is_dir() or legacy.is_symlink() or legacy.resolve() == store_dir.resolve():
        return 0
    moved = 0
    for path in sorted(legacy.rglob("*.json")):
        rel = path.relative_to(legacy)
        if path.is_symlink() or not path.is_file():
            continue  # only regular files: a link could point anywhere
        target = store_dir / rel
        if target.exists() or not _plugin_file(rel, _read_regular_file(path) or ""):
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(path, target)  # a rename on the same file system
        moved += 1
    left = _remove_empty_folders(legacy)
    if moved:
        log.warning("moved %d store files from the host's web root (served to anyone) into the plugin's store "
                    "folder; the stage reads them from SPARROW_LLM_STORE_DIR now", moved)
    if left:
        log.warning("left %d files that are not plugin records in %s (not deleted: move them out of the web root)",
                    left, legacy)
    return moved


def _remove_empty_folders(root: Path) -> int:
    """Removes the empty folders under `root` (and `root` when it ends empty) with os.rmdir, deepest first;
    returns how many entries that are not folders are left."""
    left = 0
    for folder, subfolders, files in os.walk(root, topdown=False):
        left += len(files) + sum(1 for name in subfolders if Path(folder, name).is_symlink())
        try:
            os.rmdir(folder)
        except OSError:
            pass  # not empty: what is there stays
    return left
