"""Reading a session directory: its snapshot plus the journal lines newer than it, without writing anything.

:func:`load_session` copes with a writer replacing the snapshot while it reads
(it reads again), with a torn last journal line (reported, ignored), and with
Plainbox/Checkbox sessions (decoded by the codec, nothing to replay).
"""

from __future__ import annotations

import errno
import os

import attrs

from plainbox_like.errors import CorruptSession, SessionNotFound
from plainbox_like.store import codec
from plainbox_like.store.confine import _refused_outside, open_session_file
from plainbox_like.store.journal import parse_journal
from plainbox_like.store.model import SessionState
from plainbox_like.store.names import JOURNAL_FILE, STATE_FILE
from plainbox_like.store.paths import session_id_of


@attrs.define
class LoadedSession:
    """A session as read from disk: snapshot plus newer journal lines."""

    path: str
    state: SessionState
    origin: str = codec.FORMAT
    source_version: int = codec.VERSION
    inline_io_logs: dict = attrs.Factory(dict)
    journal_torn: str | None = None
    journal_changes: int = 0

    @property
    def id(self) -> str:
        return session_id_of(self.path)


def _read_fd(fd: int) -> bytes:
    chunks = []
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def _read_file(session_dir: str, name: str) -> tuple[bytes, os.stat_result]:
    fd = open_session_file(session_dir, name)
    try:
        st = os.fstat(fd)
        return _read_fd(fd), st
    finally:
        os.close(fd)


def load_session(path: str, attempts: int = 10) -> LoadedSession:
    """Read the session directory at *path* without writing anything.

    Copes with a writer replacing the snapshot meanwhile: if the snapshot was
    replaced while we read, we read again.
    """
    state_path = os.path.join(path, STATE_FILE)
    for attempt in range(attempts):
        try:
            # Kept open until the journal is read: while it is, a newer snapshot
            # cannot get the same inode number, so _replaced() is reliable.
            fd = open_session_file(path, STATE_FILE)
        except FileNotFoundError:
            if not os.path.isdir(path):
                raise SessionNotFound(f"{path}: no such session directory") from None
            raise CorruptSession(state_path, "state file is missing") from None
        except OSError as exc:
            if exc.errno == errno.EXDEV:
                raise _refused_outside(path, STATE_FILE) from None
            raise CorruptSession(state_path, f"cannot read: {exc.strerror}") from None
        try:
            st = os.fstat(fd)
            try:
                data = _read_fd(fd)
            except OSError as exc:
                raise CorruptSession(state_path, f"cannot read: {exc.strerror}") from None
            loaded = codec.decode_state(data, state_path)
            loaded_session = LoadedSession(
                path=path,
                state=loaded.state,
                origin=loaded.origin,
                source_version=loaded.source_version,
                inline_io_logs=loaded.inline_io_logs,
            )
            if loaded.origin == codec.FORMAT:
                _replay(loaded_session, path)
                # A newer snapshot truncates the journal: the lines we read may
                # lack changes that only that snapshot has. Read again.
                if _replaced(state_path, st):
                    raise CorruptSession(state_path, "state kept changing while being read")
            return loaded_session
        except CorruptSession:
            if attempt + 1 < attempts and _replaced(state_path, st):
                continue
            raise
        finally:
            os.close(fd)
    raise CorruptSession(state_path, "state kept changing while being read")  # pragma: no cover


def _replaced(state_path: str, st: os.stat_result) -> bool:
    try:
        now = os.stat(state_path)
    except OSError:
        return True
    return (now.st_ino, now.st_mtime_ns) != (st.st_ino, st.st_mtime_ns)


def _replay(loaded: LoadedSession, path: str) -> None:
    journal_path = os.path.join(path, JOURNAL_FILE)
    try:
        data, _ = _read_file(path, JOURNAL_FILE)
    except FileNotFoundError:
        return
    except OSError as exc:
        if exc.errno == errno.EXDEV:
            raise _refused_outside(path, JOURNAL_FILE) from None
        raise CorruptSession(journal_path, f"cannot read: {exc.strerror}") from None
    journal = parse_journal(data, journal_path, loaded.state.journal_seq)
    for change in journal.changes:
        try:
            loaded.state.apply(change, codec.structure_attempt)
        except Exception as exc:
            raise CorruptSession(journal_path, f"journal entry seq {change.get('seq')} cannot be applied: {exc}") from None
    loaded.journal_torn = journal.torn
    loaded.journal_changes = len(journal.changes)
