"""Confinement of a session's files: every path taken from a state, and every part of a session we write, checked once.

A session's state may come from anywhere (an imported archive, a directory
someone else wrote): every path taken from it, and every directory of it that
we write into, is checked here, and only here, before it is used. Readers
open a session's own files through :func:`open_session_file`; writers call
:func:`refuse_symlinked` before they write anything.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Iterator

import attrs

from plainbox_like.errors import OutsideSession
from plainbox_like.store import iolog
from plainbox_like.store.model import SessionState
from plainbox_like.store.names import IO_LOGS, JOURNAL_FILE, LOCK_FILE, RECORD_SUFFIX, SHARE_DIR
from plainbox_like.store.paths import open_regular_file, session_id_of


def _inside(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip(os.sep) + os.sep)


def outside_reason(
    session_dir: str, name: object, real_dir: str | None = None, plain_dirs: set[str] | None = None
) -> str | None:
    """Why *name*, a path taken from the state of the session at *session_dir*, does not stay inside it.

    ``None``: it names a file inside the session directory, after following every
    symbolic link on the way. Absolute names and names with ``..`` are refused
    whatever they point at: our writer never makes them. *real_dir* is
    ``os.path.realpath(session_dir)`` if the caller has it already; *plain_dirs*
    caches, across calls, the directories already found not to be links.
    """
    if not isinstance(name, str) or not name or "\0" in name:
        return "not a file name"
    if os.path.isabs(name):
        return "an absolute path"
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        return "climbs out with '..'"
    if not parts:
        return "not a file name"
    real_dir = os.path.realpath(session_dir) if real_dir is None else real_dir
    current = real_dir
    for number, part in enumerate(parts, start=1):
        current = current + os.sep + part
        last = number == len(parts)
        if not last and plain_dirs is not None and current in plain_dirs:
            continue
        try:
            mode = os.lstat(current).st_mode
        except OSError:
            return None  # nothing below a missing name can be a link yet
        if stat.S_ISLNK(mode):
            real = os.path.realpath(os.path.join(real_dir, name))
            if real == real_dir or not _inside(real, real_dir):
                return "leads outside the session through a symbolic link"
            return None
        if not last and plain_dirs is not None:
            plain_dirs.add(current)
    return None


def session_file(session_dir: str, name: object, field: str) -> str:
    """The path of *name* (the value of state field *field*) inside the session at *session_dir*.

    Raises :class:`OutsideSession`, naming the session and the field, if it would lead outside.
    """
    why = outside_reason(session_dir, name)
    if why is not None:
        raise OutsideSession(
            f"session {session_id_of(session_dir)} ({session_dir}): {field} {name!r:.200}: {why}: refused"
        )
    return os.path.join(session_dir, name)  # type: ignore[arg-type]


def open_session_file(session_dir: str, name: str) -> int:
    """A read-only descriptor of the file *name* of the session at *session_dir* (its state, journal...).

    How every reader opens a session's own files: an :class:`OSError` naming the
    file if it is not a regular file (a FIFO would hang the reader) or if it
    leads outside the session through a symbolic link (see :func:`outside_reason`).
    """
    path = os.path.join(session_dir, name)
    why = outside_reason(session_dir, name)
    if why is not None:
        raise OSError(errno.EXDEV, why, path)
    return open_regular_file(path)


def _refused_outside(session_dir: str, name: str) -> OutsideSession:
    """The error of a reader refusing the session's file *name*, a symbolic link leading outside it."""
    try:
        target = os.readlink(os.path.join(session_dir, name))
    except OSError:
        target = "?"
    return OutsideSession(
        f"session {session_id_of(session_dir)} ({session_dir}): {name} is a symbolic link (to {target!r:.200}) "
        "that leads outside the session: refused"
    )


def refuse_paths_outside(session_dir: str, state: SessionState) -> None:
    """Raise :class:`OutsideSession` if *state* names any path outside the session (see :func:`paths_outside`)."""
    found = paths_outside(session_dir, state)
    if found:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise OutsideSession(
            f"session {session_id_of(session_dir)} ({session_dir}): {found[0]}{more}: refused "
            "(repair drops such names)"
        )


def log_field(job_id: str, attempt: int) -> str:
    """How messages name the ``io_log_filename`` field of one attempt."""
    return f"io_log_filename of job {job_id!r} attempt {attempt}"


def log_file_names(name: str) -> dict[str, str]:
    """The files of the log whose record file is *name* (a state's ``io_log_filename``): record, stdout, stderr."""
    stem = name[: -len(RECORD_SUFFIX)] if name.endswith(RECORD_SUFFIX) else name
    return {"record": name, **{stream: f"{stem}.{stream}" for stream in iolog.STREAMS}}


def log_files_outside(session_dir: str, name: str) -> tuple[str, str] | None:
    """The first file of log *name* (see :func:`log_file_names`) that leads outside the session, and why."""
    for file_name in log_file_names(name).values():
        why = outside_reason(session_dir, file_name)
        if why is not None:
            return file_name, why
    return None


def state_paths(state: SessionState) -> Iterator[tuple[str, str]]:
    """``(field, name)`` for every path a state names (the ``io_log_filename`` of each attempt, running ones too)."""
    for job_id, attempts in state.results.items():
        for attempt in attempts:
            if attempt.io_log_filename is not None:
                yield log_field(job_id, attempt.attempt), attempt.io_log_filename
    for job_id, running in state.running_jobs.items():
        if running.io_log_filename is not None:
            yield log_field(job_id, running.attempt), running.io_log_filename


def paths_outside(session_dir: str, state: SessionState) -> list[str]:
    """One message per path of *state* that leads outside the session at *session_dir* (``[]``: none)."""
    found = []
    real_dir = os.path.realpath(session_dir)
    plain_dirs: set[str] = set()
    # The usual name, io-logs/FILE in a real io-logs/: one directory listing tells which files
    # are links (the only ones that need resolving), instead of a stat per attempt.
    logs_dir = real_dir + os.sep + IO_LOGS
    plain_logs: set[str] | None = None
    try:
        if not os.path.islink(logs_dir):
            with os.scandir(logs_dir) as entries:
                plain_logs = {f"{IO_LOGS}/{e.name}" for e in entries if not e.is_symlink()}
    except OSError:
        plain_logs = None
    for field, name in state_paths(state):
        if plain_logs is not None and name in plain_logs:
            continue
        why = outside_reason(session_dir, name, real_dir, plain_dirs)
        if why is not None:
            found.append(f"{field} {name!r:.200}: {why}")
    return found


#: What a writer writes in place (the directory itself is ``.``): none of it may be a symbolic link.
WRITTEN_DIRS = (".", IO_LOGS, SHARE_DIR)
WRITTEN_FILES = (LOCK_FILE, JOURNAL_FILE)


@attrs.frozen
class SymlinkedPart:
    """A part of a session that is a symbolic link: never written through."""

    name: str
    target: str

    @property
    def is_dir(self) -> bool:
        return self.name in WRITTEN_DIRS

    def describe(self) -> str:
        what = "the session directory" if self.name == "." else f"{self.name}/" if self.is_dir else self.name
        return f"{what} is a symbolic link (to {self.target!r:.200})"


def symlinked_parts(session_dir: str) -> list[SymlinkedPart]:
    """The parts of a session written in place that are symbolic links (see :data:`WRITTEN_DIRS`)."""
    found = []
    for name in (*WRITTEN_DIRS, *WRITTEN_FILES):
        path = os.path.normpath(session_dir) if name == "." else os.path.join(session_dir, name)
        try:
            if os.path.islink(path):
                found.append(SymlinkedPart(name, os.readlink(path)))
        except OSError:
            continue
    return found


#: The directory of a repository that holds its sessions.
SESSIONS_DIR = "sessions"


def refuse_symlinked_sessions(sessions_dir: str) -> None:
    """Raise :class:`OutsideSession` if the repository's sessions directory is a symbolic link.

    As for a session directory: nothing is created or changed through it (readers still read).
    """
    if os.path.islink(sessions_dir):
        try:
            target = os.readlink(sessions_dir)
        except OSError:
            target = "?"
        raise OutsideSession(
            f"{sessions_dir}: the repository's sessions directory is a symbolic link (to {target!r:.200}): "
            "refusing to write through it"
        )


def refuse_symlinked(session_dir: str) -> None:
    """Raise :class:`OutsideSession` if a part of the session written in place is a symbolic link.

    Called before anything writes a session (the lock is the first thing written), so that
    no writer ever writes through such a link to wherever it points (nor through a
    symbolic link in place of the repository's sessions directory that holds it).
    """
    parent = os.path.dirname(os.path.normpath(session_dir))
    if os.path.basename(parent) == SESSIONS_DIR:
        refuse_symlinked_sessions(parent)
    for part in symlinked_parts(session_dir):
        raise OutsideSession(
            f"session {session_id_of(session_dir)} ({session_dir}): {part.describe()}: refusing to write through it"
        )
