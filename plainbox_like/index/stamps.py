"""Stamps: what a stat of a session directory and its files says, and the scans that take them.

A stamp is ``mtime_ns:size:inode:ctime_ns`` of one file or directory; a
session's stamps are those of its directory, its ``session`` and its
``journal`` file (``DIR|SESSION|JOURNAL``), stored as that text in the index.
Reconciles compare stamps only (no reading), so everything here is stat only.
"""

from __future__ import annotations

import os
import stat

from plainbox_like.store.names import JOURNAL_FILE, SESSION_SUFFIX, STATE_FILE

#: A session whose directory changed less than this long (seconds) before it was read is not
#: settled yet: modification times are coarse (a clock tick; a second on some file systems),
#: so a change in the same tick as the one before would leave the directory's time as it was.
RACY_SECONDS = 2.0

#: ``sessions.settled``: checked in full by every reconcile / settled: the quick reconcile
#: stats the directory only / would be settled but was read too soon after its directory changed.
UNSETTLED, SETTLED, SETTLING = 0, 1, 2


def _stamp(st: os.stat_result) -> str:
    """A file's or directory's stamp: ``mtime_ns:size:inode:ctime_ns``. The change time cannot be
    set back (``cp -a`` and ``touch`` set the modification time, not this), so a file or directory
    replaced by another, even with the same inode number, size and times, has another stamp."""
    return f"{st.st_mtime_ns}:{st.st_size}:{st.st_ino}:{st.st_ctime_ns}"


def file_stamp(path: str, dir_fd: int | None = None) -> str:
    """:func:`_stamp` of *path* (relative to *dir_fd* if given); ``-`` if it does not exist."""
    try:
        return _stamp(os.stat(path, dir_fd=dir_fd))
    except FileNotFoundError:
        return "-"
    except OSError as exc:
        return f"error{exc.errno}"


def session_stamps(path: str) -> str | None:
    """The stamps of a session directory: ``DIR|SESSION|JOURNAL``, each a :func:`_stamp` (``-`` for a
    missing file); None if *path* is not a directory (any more). Stat only."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode):
        return None
    return f"{_stamp(st)}|{file_stamp(path + '/' + STATE_FILE)}|{file_stamp(path + '/' + JOURNAL_FILE)}"


def _dir_key(session_id: str, stamps: str) -> str:
    """``NAME CTIME_NS:INODE`` of a session's directory (NAME: ``ID.session``), from its stamps: what
    the quick reconcile compares for a settled session. Any change to the directory (an entry made,
    removed or renamed; its times set; a directory put in its place) changes its change time or
    its inode."""
    parts = stamps.split("|", 1)[0].split(":")
    if len(parts) != 4:
        return f"{session_id}{SESSION_SUFFIX} -"  # (matches no directory)
    return f"{session_id}{SESSION_SUFFIX} {parts[3]}:{parts[2]}"


def _stamp_ctime(stamps: str) -> float | None:
    """The change time of the directory, from its stamps."""
    try:
        return int(stamps.split("|", 1)[0].split(":")[3]) / 1e9
    except (IndexError, ValueError):
        return None


def _stamp_mtime(stamps: str | None) -> float | None:
    """The modification time of the directory, from its stamps."""
    try:
        return int(stamps.split(":", 1)[0]) / 1e9  # type: ignore[union-attr]
    except (AttributeError, ValueError):
        return None


def _has_state(stamps: str) -> bool:
    return stamps.split("|")[1] != "-"


def scan_sessions(sessions_dir: str) -> dict[str, tuple[str, str]]:
    """Every session directory under *sessions_dir*: id -> (path, stamps). Stat only."""
    found: dict[str, tuple[str, str]] = {}
    try:
        entries = os.scandir(sessions_dir)
    except (FileNotFoundError, NotADirectoryError):
        return found
    suffix = SESSION_SUFFIX
    cut = -len(suffix)
    state_name = "/" + STATE_FILE
    journal_name = "/" + JOURNAL_FILE
    with entries:
        for entry in entries:
            name = entry.name
            if not name.endswith(suffix) or name.startswith("."):
                continue
            try:
                if not entry.is_dir(follow_symlinks=False):
                    continue
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            path = entry.path
            stamps = f"{_stamp(st)}|{file_stamp(path + state_name)}|{file_stamp(path + journal_name)}"
            found[name[:cut]] = (path, stamps)
    return found


def scan_ids(sessions_dir: str) -> set[str]:
    """The ids of the session directories under *sessions_dir* (no stat beyond the listing)."""
    try:
        entries = os.scandir(sessions_dir)
    except (FileNotFoundError, NotADirectoryError):
        return set()
    suffix = SESSION_SUFFIX
    cut = -len(suffix)
    found = set()
    with entries:
        for entry in entries:
            name = entry.name
            if name.endswith(suffix) and not name.startswith("."):
                try:
                    if entry.is_dir(follow_symlinks=False):
                        found.add(name[:cut])
                except OSError:
                    continue
    return found
