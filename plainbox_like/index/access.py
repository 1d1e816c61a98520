"""How a reader gets a repository's index: fresh (reconciled first unless a live watcher keeps it so), or a
temporary in-memory one when the file cannot be used; and the watcher's lock as readers see it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import sqlite3
import time

from plainbox_like.index.query import IndexUnusable, SessionIndex
from plainbox_like.index.schema import INDEX_FILE

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

WATCH_LOCK_FILE = "watch.lock"


def watch_lock_holder(root: str) -> tuple[int, str] | None:
    """The pid and host of the watcher holding *root*'s watch lock, or None if no watcher holds it."""
    path = os.path.join(root, WATCH_LOCK_FILE)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                return None
            try:
                pid, host = os.pread(fd, 200, 0).decode("utf-8", "replace").split(None, 1)
                return int(pid), host.strip()
            except ValueError:
                return (0, "?")
        return None  # we got the lock: nobody holds it (closing the fd releases it)
    finally:
        os.close(fd)


def watcher_keeps_fresh(index: SessionIndex, now: float | None = None) -> bool:
    """Whether a live watcher holds the lock and has reconciled this very index file recently."""
    holder = watch_lock_holder(index.root)
    if holder is None:
        return False
    beat = index._heartbeat()
    if beat is None:
        return False
    interval, when = beat
    try:
        interval = float(interval or 60.0)
        when = float(when or 0.0)
    except (TypeError, ValueError):
        return False
    now = time.time() if now is None else now
    return now - when < 2 * interval + 30.0


def open_index(root: str, notice: Callable[[str], None] | None = None, workers: int | None = None) -> SessionIndex:
    """Open the index of *root*; if the file cannot be used, a temporary in-memory one (with a notice)."""
    try:
        return SessionIndex.open(root, notice=notice, workers=workers)
    except IndexUnusable as exc:
        if notice:
            notice(f"cannot use the index ({exc}): reading every session instead")
        index = SessionIndex.open(root, notice=notice, memory=True, workers=workers)
        return index


def fresh_index(root: str, notice: Callable[[str], None] | None = None, workers: int | None = None) -> SessionIndex:
    """The index of *root*, reconciled first (the quick way) unless a watcher keeps it fresh.

    If the index cannot be written (a read-only file or file system, a writer
    holding it beyond the busy timeout), a temporary in-memory one is used,
    with a notice: the answer is still complete and fresh, only slower.
    """
    index = open_index(root, notice, workers)
    try:
        if index.memory or not watcher_keeps_fresh(index):
            index.reconcile()
    except sqlite3.OperationalError as exc:
        index.close()
        if notice:
            notice(f"cannot update the index {index.path} ({exc}): reading every session instead")
        index = SessionIndex.open(root, notice=notice, memory=True, workers=workers)
        try:
            index.reconcile()
        except BaseException:
            index.close()
            raise
    except BaseException:
        index.close()
        raise
    return index


def repository_root(override: str | None = None) -> str:
    """The repository root, as :class:`repository.SessionRepository` finds it (without importing it)."""
    from plainbox_like.store.paths import check_repository_root, default_repository, repository_given_as

    root = os.path.abspath(override) if override else default_repository()
    return check_repository_root(root, repository_given_as(override))


def repository_exists(root: str) -> bool:
    """Whether *root* has a sessions directory or an index (else there is nothing to list)."""
    return os.path.isdir(os.path.join(root, "sessions")) or os.path.exists(os.path.join(root, INDEX_FILE))
