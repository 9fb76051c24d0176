"""Publishing a folder whole: built in a temporary folder beside the target, synced, renamed into place.

`staged_folder(target)` yields an empty temporary folder in the target's parent (named `.<target>.publish-
<host>-<pid>-<token>`). When the block ends without an error, every file and folder in it is fsynced and it
becomes `target` by one rename; an error removes it and leaves `target` as it was. A reader therefore sees
the old version or the new one, complete, and never a half-written folder; a crash leaves at most a
temporary folder, never a partial target.

An existing target is replaced, never deleted first: on Linux the two folders are swapped atomically
(renameat2 with RENAME_EXCHANGE, through libc), and the old version, now under the temporary name, is
removed. Where that call is missing (another OS, an old libc) or refused (a filesystem without it), the
fallback renames the old version aside (`.<target>.old-...`), renames the new one into place and removes
the old one: between those two renames the target is missing (a reader finds no folder, never a partial
one), and a crash inside that window leaves no target (callers then build it again) and the old version
aside, a leftover.

Leftovers of a killed run (temporary or aside folders) are removed by the next `staged_folder` into the
same parent (or by `clean_leftovers(parent)`): on this host when the process named in the folder's name is gone; from another host (a shared
folder) when the leftover is older than `STALE_AFTER_S`.
"""
from __future__ import annotations

import ctypes
import errno
import functools
import os
import re
import secrets
import shutil
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

__all__ = ["staged_folder", "clean_leftovers", "STALE_AFTER_S"]

STALE_AFTER_S = 6 * 3600  # a leftover of another host's run: older than any training that could still write it
_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100
_LEFTOVER = re.compile(r"^\..+\.(?:publish|old)-(?P<host>[A-Za-z0-9_.]*)-(?P<pid>\d+)-[0-9a-f]+$")


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname())


def _temp_name(target: Path, kind: str) -> Path:
    return target.parent / f".{target.name}.{kind}-{_host()}-{os.getpid()}-{secrets.token_hex(4)}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def clean_leftovers(parent: Path) -> None:
    """Remove the temporary and aside folders of runs that ended without removing them."""
    host, now = _host(), time.time()
    for entry in parent.iterdir():
        found = _LEFTOVER.match(entry.name)
        if not found or not entry.is_dir() or entry.is_symlink():
            continue
        try:
            if found["host"] == host:
                stale = not _alive(int(found["pid"]))
            else:
                stale = now - entry.stat().st_mtime > STALE_AFTER_S
        except OSError:  # removed meanwhile
            continue
        if stale:
            shutil.rmtree(entry, ignore_errors=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """Every file and folder under `root` (symbolic links are not followed), folders after their contents."""
    for folder, _, files in os.walk(root, topdown=False):
        for name in files:
            if not os.path.islink(os.path.join(folder, name)):
                _fsync(Path(folder, name))
        _fsync(Path(folder))


@functools.cache
def _renameat2():
    """libc's renameat2 (glibc 2.28+), None where the process's C library has none."""
    try:
        call = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    call.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    call.restype = ctypes.c_int
    return call


def _exchange(a: Path, b: Path) -> bool:
    """Swap two folders atomically; False where the system cannot (then nothing changed)."""
    call = _renameat2()
    if call is None:
        return False
    if call(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _replace(staging: Path, target: Path) -> None:
    """`staging` becomes `target`, whose old version is then removed."""
    if _exchange(staging, target):
        _fsync(target.parent)
        shutil.rmtree(staging, ignore_errors=True)  # the old version, under the temporary name now
        return
    aside = _temp_name(target, "old")
    os.rename(target, aside)
    try:
        os.rename(staging, target)
    except OSError:
        os.rename(aside, target)
        raise
    _fsync(target.parent)
    shutil.rmtree(aside, ignore_errors=True)


@contextmanager
def staged_folder(target: Path | str, *, keep_existing: Callable[[Path], bool] | None = None) -> Iterator[Path]:
    """An empty temporary folder that becomes `target` when the block ends without an error (see the module's
    docstring). With `keep_existing`, a target for which it holds when the block ends (another process
    published the same thing meanwhile) is kept and the new folder discarded."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_leftovers(target.parent)
    staging = _temp_name(target, "publish")
    staging.mkdir()
    try:
        yield staging
        _fsync_tree(staging)
        if keep_existing is not None and keep_existing(target):
            return
        try:
            os.rename(staging, target)  # no target yet (or an empty folder): one rename
            _fsync(target.parent)
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            if keep_existing is not None and keep_existing(target):
                return
            _replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
