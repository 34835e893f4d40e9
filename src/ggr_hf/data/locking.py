"""A lock file so that processes sharing one data cache take turns (POSIX `fcntl.flock`).

`cache_lock(path)` holds an exclusive lock on `path` (created if needed) for writers: a second
`ggr-hf data prepare` into the same `--out`, or a second training filling the MovieLens cache, waits
for the first and then finds the cache complete and reuses it. `cache_lock(path, shared=True)` is the
readers' lock: any number of readers at once, never while a writer replaces the folder.

The kernel releases a `flock` when its process ends, however it ends, so a killed process never leaves
a stale lock; the lock file (holding the writer's pid, for messages) is removed by its last holder, and
one left by a killed process is harmless (the next holder locks and removes it).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

from ggr_hf.errors import GGRLockTimeoutError

from .schema import RecDataBundle

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_LOCK_TIMEOUT", "cache_lock", "lock_path", "lock_timeout", "open_prepared"]

# Seconds a process waits for another one's lock: preparing the largest public sets takes minutes.
DEFAULT_LOCK_TIMEOUT = 4 * 3600.0
_POLL_SECONDS = 0.05


def lock_timeout() -> float:
    """`$GGR_HF_LOCK_TIMEOUT` (seconds) if set and valid, else `DEFAULT_LOCK_TIMEOUT`."""
    try:
        value = float(os.environ.get("GGR_HF_LOCK_TIMEOUT", DEFAULT_LOCK_TIMEOUT))
    except ValueError:
        return DEFAULT_LOCK_TIMEOUT
    return value if value >= 0 else DEFAULT_LOCK_TIMEOUT


def _holder(path: Path) -> str:
    try:
        pid = path.read_text().strip()
    except OSError:
        return "another process"
    return f"process {pid}" if pid.isdigit() else "another process"


def _same_file(fd: int, path: Path) -> bool:
    """Whether `path` still names the file `fd` has open (a finished holder may have removed it)."""
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def _acquire(path: Path, shared: bool, timeout: float) -> int | None:
    """Opens (creating) and locks `path`; `None` for a reader that cannot create it."""
    mode = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB
    deadline = time.monotonic() + timeout
    waited = False
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as err:
            if shared and err.errno in (errno.EACCES, errno.EROFS, errno.EPERM, errno.ENOENT):
                return None
            raise
        try:
            fcntl.flock(fd, mode)
        except BlockingIOError:
            os.close(fd)
            if not waited:
                logger.info("%s: waiting for %s to finish with this cache", path, _holder(path))
                waited = True
            if time.monotonic() >= deadline:
                raise GGRLockTimeoutError(
                    f"{path}: {_holder(path)} has held this cache's lock for over {timeout:g} s; wait "
                    "for it to finish, or raise GGR_HF_LOCK_TIMEOUT (seconds)"
                ) from None
            time.sleep(_POLL_SECONDS)
            continue
        if _same_file(fd, path):
            return fd
        # The previous holder removed the file between our open and our lock: lock the new one.
        os.close(fd)


@contextlib.contextmanager
def cache_lock(path: str | Path, *, shared: bool = False, timeout: float | None = None) -> Iterator[bool]:
    """Holds a lock on the file `path` for the duration of the `with` block.

    The lock file exists only while someone holds or waits for the lock: the last holder removes it
    (a writer always, a reader when no other reader is left), and a process that locked a file
    removed meanwhile locks the new one instead, so removal never lets two writers in.

    Args:
        path (`str` or `Path`): the lock file (its folder must exist).
        shared (`bool`, *optional*, defaults to `False`): a readers' lock; a reader that cannot create
            the lock file (a read-only or missing folder: nobody can write there either) goes on
            unlocked.
        timeout (`float`, *optional*): seconds to wait; defaults to `lock_timeout()`.

    Yields:
        `bool`: whether the lock is held (always `True` for an exclusive lock).

    Raises:
        `GGRLockTimeoutError` when the lock is still held by another process after `timeout` seconds (the message
        names the lock file and the holder's pid).
    """
    path = Path(path)
    fd = _acquire(path, shared, lock_timeout() if timeout is None else timeout)
    if fd is None:
        yield False
        return
    try:
        if not shared:
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
        yield True
    finally:
        try:
            if not shared:
                path.unlink(missing_ok=True)
            else:
                # The last reader out removes the file; if anyone else holds it, it stays.
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    if _same_file(fd, path):
                        path.unlink(missing_ok=True)
                except BlockingIOError:
                    pass
        finally:
            os.close(fd)  # releases the lock


def lock_path(out_dir: str | Path) -> Path:
    """The lock file of the cache folder `out_dir`: `.<name>.lock` beside it."""
    out_dir = Path(out_dir)
    return out_dir.parent / f".{out_dir.name}.lock"


def open_prepared(out_dir: str | Path) -> RecDataBundle:
    """`RecDataBundle.load_from_disk(out_dir)` under the cache's shared lock, so that a prepare
    replacing `out_dir` at the same moment is waited for instead of read half-way.

    Raises:
        `GGRFileNotFoundError` when `out_dir` is not a complete prepared folder.
    """
    with cache_lock(lock_path(out_dir), shared=True):
        return RecDataBundle.load_from_disk(out_dir)
