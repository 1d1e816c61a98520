"""Stamps: what a stat of a session directory and its files says, and the scans that take them.

A stamp is ``mtime_ns:size:inode:ctime_ns`` of one file or directory; a
session's stamps are those of its directory, its ``session`` and its
``journal`` file (``DIR|SESSION|JOURNAL``), stored as that text in the index.
Reconciles compare stamps only (no reading), so everything here is stat only.
"""

from __future__ import annotations

import collections
import os
import stat

from plainbox_like.store.names import JOURNAL_FILE, SESSION_SUFFIX, STATE_FILE, is_session_name

#: A session whose directory changed less than this long (seconds) before it was read is not
#: settled yet: modification times are coarse (a clock tick; a second on some file systems),
#: so a change in the same tick as the one before would leave the directory's time as it was.
RACY_SECONDS = 2.0

#: ``sessions.settled``: checked in full by every reconcile / settled: the quick reconcile
#: stats the directory only / would be settled but was read too soon after its directory changed.
UNSETTLED, SETTLED, SETTLING = 0, 1, 2


class Stat(collections.namedtuple("Stat", "mtime_ns size ino ctime_ns")):
    """A file's or directory's stamp, stored as ``mtime_ns:size:inode:ctime_ns``. The change time
    cannot be set back (``cp -a`` and ``touch`` set the modification time, not this), so a file or
    directory replaced by another, even with the same inode number, size and times, has another stamp."""

    __slots__ = ()

    @classmethod
    def parse(cls, text: str) -> Stat | str | None:
        """The stamp written as *text*: None for ``-`` (no such file); any other text that is not a
        stamp (``errorN``: the file could not be stat'ed) is returned as it is."""
        if text == MISSING:
            return None
        parts = text.split(":")
        if len(parts) == 4:
            try:
                return cls(*map(int, parts))
            except ValueError:
                pass
        return text

    def __str__(self) -> str:
        return f"{self.mtime_ns}:{self.size}:{self.ino}:{self.ctime_ns}"


#: The stamp of a file that does not exist.
MISSING = "-"


def _stamp(st: os.stat_result) -> str:
    """``str(Stat)`` of a stat result, without making the Stat (reconciles take thousands)."""
    return f"{st.st_mtime_ns}:{st.st_size}:{st.st_ino}:{st.st_ctime_ns}"


def join_stamps(directory: str, state: str, journal: str) -> str:
    """The stored text of a session's stamps from the texts of its three: ``DIR|SESSION|JOURNAL``."""
    return f"{directory}|{state}|{journal}"


def _text(part: Stat | str | None) -> str:
    return MISSING if part is None else str(part)


class Stamps(collections.namedtuple("Stamps", "dir state journal")):
    """A session's stamps: its directory's, its ``session`` file's and its ``journal`` file's, each a
    :class:`Stat`, None (no such file) or the text of a stamp that could not be taken. ``str()`` gives
    the text stored in the index, and :meth:`parse` reads it back: ``str(Stamps.parse(t)) == t``."""

    __slots__ = ()

    @classmethod
    def parse(cls, text: str) -> Stamps:
        parts = text.split("|")
        parts += [MISSING] * (3 - len(parts))
        return cls(*map(Stat.parse, parts[:3]))

    def __str__(self) -> str:
        return join_stamps(*map(_text, self))

    @property
    def has_state(self) -> bool:
        """Whether the session has a state file (or something there that could not be stat'ed)."""
        return self.state is not None

    @property
    def changed(self) -> float | None:
        """The change time of the directory (epoch seconds), if its stamp is one."""
        return self.dir.ctime_ns / 1e9 if isinstance(self.dir, Stat) else None

    @property
    def modified(self) -> float | None:
        """The modification time of the directory (epoch seconds), if its stamp is one."""
        return self.dir.mtime_ns / 1e9 if isinstance(self.dir, Stat) else None

    def dir_key(self, session_id: str) -> str:
        """``NAME CTIME_NS:INODE`` of a session's directory (NAME: ``ID.session``): what the quick
        reconcile compares for a settled session. Any change to the directory (an entry made,
        removed or renamed; its times set; a directory put in its place) changes its change time
        or its inode."""
        if not isinstance(self.dir, Stat):
            return f"{session_id}{SESSION_SUFFIX} -"  # (matches no directory)
        return f"{session_id}{SESSION_SUFFIX} {self.dir.ctime_ns}:{self.dir.ino}"


def file_stamp(path: str, dir_fd: int | None = None) -> str:
    """The stamp text of *path* (relative to *dir_fd* if given); ``-`` if it does not exist."""
    try:
        return _stamp(os.stat(path, dir_fd=dir_fd))
    except FileNotFoundError:
        return MISSING
    except OSError as exc:
        return f"error{exc.errno}"


def session_stamps(path: str) -> str | None:
    """The stamps text of a session directory (see :class:`Stamps`); None if *path* is not a
    directory (any more). Stat only."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode):
        return None
    return join_stamps(_stamp(st), file_stamp(path + "/" + STATE_FILE), file_stamp(path + "/" + JOURNAL_FILE))


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
            if not is_session_name(name):
                continue
            try:
                if not entry.is_dir():
                    continue
                st = entry.stat()
            except OSError:
                continue
            path = entry.path
            stamps = join_stamps(_stamp(st), file_stamp(path + state_name), file_stamp(path + journal_name))
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
            if is_session_name(name):
                try:
                    if entry.is_dir():
                        found.add(name[:cut])
                except OSError:
                    continue
    return found
