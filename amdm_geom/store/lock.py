"""One writer per store: an OS lock on ``<parent>/.<name>.lock`` beside it, holding the writer's
PID. Readers never take it."""

from __future__ import annotations

import atexit
import errno
import fcntl
import os
import time
import weakref
from pathlib import Path

from amdm_geom.store.identity import StoreError

__all__ = ["StoreLock"]

# --------------------------------------------------------------------------------------------
# one writer per store: an OS lock beside it

_LIVE_LOCKS: weakref.WeakSet = weakref.WeakSet()


class StoreLock:
    """``fcntl.flock(LOCK_EX | LOCK_NB)`` on ``<parent>/.<name>.lock``, holding the writer's PID.

    The lock file is deleted on release, so the usual pattern applies: open, lock, then check
    that the locked file is still the one at the path (a releasing holder may have unlinked it
    between our open and our lock); if not, start over. Only the holder deletes it, while still
    holding it. The OS drops the lock when its holder dies, so a lock file left by a killed
    process (its PID long gone) is simply locked again and rewritten."""

    def __init__(self, store: Path, shown: Path):
        self.store, self.shown = store, shown
        self.path = store.parent / f".{store.name}.lock"
        self.fd: int | None = None
        self.pid = os.getpid()

    @property
    def held(self) -> bool:
        return self.fd is not None

    def acquire(self) -> None:
        for _ in range(50):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise StoreError(f"cannot lock trace store {self.shown}: {exc.strerror or exc} ({self.path})") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                busy = exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)
                holder = _read_pid(fd) if busy else None
                os.close(fd)
                if not busy:
                    why = exc.strerror or exc
                    raise StoreError(f"cannot lock trace store {self.shown}: {why} ({self.path})") from None
                raise StoreError(_held_message(self.shown, holder)) from None
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if not same:  # the previous holder unlinked it after our open: try the new one
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            self.fd, self.pid = fd, os.getpid()
            _LIVE_LOCKS.add(self)
            return
        raise StoreError(f"cannot lock trace store {self.shown}: its lock file {self.path} keeps changing")

    def release(self) -> None:
        fd, self.fd = self.fd, None
        if fd is None:
            return
        _LIVE_LOCKS.discard(self)
        try:
            # only the process that took the lock deletes the file (a forked child holding a
            # copy of the descriptor must not), and only while it still is the locked file
            if os.getpid() == self.pid and os.path.samestat(os.fstat(fd), os.stat(self.path)):
                os.unlink(self.path)
        except OSError:
            pass
        finally:
            os.close(fd)


def _read_pid(fd: int) -> int | None:
    """The PID a lock holder wrote (it writes right after locking, so retry briefly)."""
    for _ in range(20):
        try:
            data = os.pread(fd, 64, 0)
            return int(data.split()[0])
        except (OSError, ValueError, IndexError):
            time.sleep(0.01)
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _held_message(shown: Path, pid: int | None) -> str:
    if pid is None:
        return f"trace store {shown} is being written by another process; wait for it or choose another --out"
    if pid == os.getpid():
        return (f"trace store {shown} is being written by process {pid} (this process: another ZarrRecorder "
                f"on it is still open; end or close() it first)")
    if not _alive(pid):
        return (f"trace store {shown} is being written by a process that process {pid} (no longer running) "
                f"started; wait for it or choose another --out")
    return f"trace store {shown} is being written by process {pid}; wait for it or choose another --out"


@atexit.register
def _release_all_locks() -> None:
    for lock in list(_LIVE_LOCKS):
        lock.release()
