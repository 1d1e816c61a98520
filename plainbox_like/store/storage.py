"""Session directories: create, lock, snapshot + journal, load.

A session's state is its last snapshot (``session``, replaced atomically)
plus the journal lines written after it (``journal``, append-only NDJSON with
sequence numbers). Every change is one journal line, durable before
:meth:`SessionWriter.record` returns; the snapshot is rewritten only when the
journal has grown past the snapshot's own size (so the cost per change stays
constant however large the session), every few seconds while that stays
cheap, and on close.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import stat
import tempfile
import time
from typing import Any, Callable, Iterable, Iterator

import attrs

from plainbox_like.store import codec, iolog
from plainbox_like.errors import CannotWrite, CorruptSession, PlainboxLikeError, SessionLocked, SessionNotFound
from plainbox_like.errors import OutsideSession
from plainbox_like.store.model import FLAG_INCOMPLETE, Attempt, Runner, SessionMetadata, SessionState
from plainbox_like.store.journalsync import JournalSync
from plainbox_like.store.locks import (  # noqa: F401 (public here too)
    LOCK_FILE,
    MAINTENANCE_NOTE,
    held_flocks,
    hostname,
    lock_holder,
    lock_note,
    pid_alive,
    writer_alive,
)
from plainbox_like.store.paths import (
    SESSION_SUFFIX,
    default_repository,
    open_regular_file,
    session_id_of,
    validate_session_id,
)

from plainbox_like.store.names import (  # noqa: F401 (public here too)
    BACKUP_FILE,
    IO_LOGS,
    JOURNAL_FILE,
    RECORD_SUFFIX,
    SHARE_DIR,
    STATE_FILE,
)

DURABILITY_MODES = ("fsync", "flush")
#: The journal may grow to max(this, uncompressed snapshot size) before a new snapshot.
MIN_JOURNAL_BYTES = 64 * 1024
#: Pending changes older than this get a snapshot, if the time budget allows.
SNAPSHOT_INTERVAL = 2.0
#: Share of the run's time that interval snapshots may take.
SNAPSHOT_TIME_BUDGET = 0.05


# -- confinement -----------------------------------------------------------------
#
# A session's state may come from anywhere (an imported archive, a directory
# someone else wrote): every path taken from it, and every directory of it that
# we write into, is checked here, and only here, before it is used.


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


# -- reading -------------------------------------------------------------------


@attrs.define
class JournalRead:
    """The usable changes of a journal, and what was wrong with its tail."""

    changes: list[dict[str, Any]]
    lines: int = 0
    torn: str | None = None


def parse_journal(data: bytes, path: str, after_seq: int) -> JournalRead:
    """Parse journal bytes, keeping changes with ``seq > after_seq``.

    A damaged last line (a crash mid-write, or zeros after a power cut) is
    reported in ``torn`` and ignored; a damaged line followed by good ones is
    an error naming the line.
    """
    result = JournalRead(changes=[])
    lines = data.split(b"\n")
    last_complete = len(lines) - 1  # the piece after the final newline is incomplete
    bad_line: tuple[int, str] | None = None
    expected = after_seq + 1
    for index, raw in enumerate(lines):
        if not raw.strip(b" \t\r"):  # zeros (a power cut) are damage, not blank lines
            continue
        number = index + 1
        change = parse_change(raw) if index < last_complete else None
        if change is None:
            problem = "incomplete last line" if index == last_complete else "not a journal entry"
            if bad_line is None:
                bad_line = (number, problem)
            continue
        if bad_line is not None:
            raise CorruptSession(path, f"bad journal line ({bad_line[1]})", line=bad_line[0])
        result.lines += 1
        seq = change["seq"]
        if seq < expected:
            continue
        if seq != expected:
            raise CorruptSession(path, f"journal sequence gap: expected {expected}, found {seq}", line=number)
        result.changes.append(change)
        expected += 1
    if bad_line is not None:
        result.torn = f"line {bad_line[0]}: {bad_line[1]} (ignored)"
    return result


def parse_change(raw: bytes) -> dict[str, Any] | None:
    """One complete journal line as a change, or ``None`` if it is not one."""
    try:
        change = codec.loads_json(raw)
    except ValueError:
        return None
    if (
        isinstance(change, dict)
        and isinstance(change.get("seq"), int)
        and not isinstance(change.get("seq"), bool)
        and isinstance(change.get("op"), str)
    ):
        return change
    return None


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


# -- writing -------------------------------------------------------------------


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def write_atomically(path: str, data: bytes, backup: str | None = None) -> None:
    """Replace *path* with *data*: temporary file, fsync, rename, fsync the directory.

    With *backup*, the file being replaced stays available under that name
    (a hard link, itself put in place atomically).
    """
    directory = os.path.dirname(path)
    prefix = "." + os.path.basename(path) + "."
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=directory)
    try:
        _write_all(fd, data)
        os.fsync(fd)
        os.close(fd)
        fd = -1
        if backup is not None:
            link = tmp + ".bak.tmp"
            try:
                os.link(path, link)
                os.replace(link, backup)
            except FileNotFoundError:
                pass
        os.replace(tmp, path)
    except BaseException as exc:
        if fd >= 0:
            os.close(fd)
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = path  # a failed write names no file: say which one (e.g. on a full disk)
        raise
    fsync_dir(directory)


def _cannot_write(path: str, what: str, exc: OSError) -> CannotWrite:
    return CannotWrite(f"{path}: {what} ({exc.strerror or exc})")


def _remove_stale_temporaries(path: str) -> None:
    """Remove snapshot temporaries a killed writer left behind (we hold the lock)."""
    prefix = "." + STATE_FILE + "."
    for name in os.listdir(path):
        if name.startswith(prefix) and name.endswith(".tmp"):
            try:
                os.unlink(os.path.join(path, name))
            except OSError:
                pass


def acquire_lock(path: str, command: str | None = None) -> int:
    """Take the session's write lock (flock on ``lock``) and write our pid and host into it.

    Raises :class:`SessionLocked`, naming the holder, if another process has it.
    Used by writers, and by ``repair``, which cannot open a session whose snapshot is damaged.
    A short management *command* (``tag``) says so on a second line (see :data:`locks.MAINTENANCE_NOTE`).
    Raises :class:`OutsideSession` first if the session is written through a symbolic link.
    """
    refuse_symlinked(path)
    lock_path = os.path.join(path, LOCK_FILE)
    try:  # never through a symbolic link: it could point anywhere
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:  # no permission, a directory or a symbolic link in its place, a full disk
        if exc.errno == errno.ELOOP:
            raise CannotWrite(f"{lock_path}: the session's lock is a symbolic link: refused") from None
        raise _cannot_write(lock_path, "cannot open the session's lock", exc) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            holder = lock_holder(path)
            raise SessionLocked(path, *(holder or (None, None))) from None
        raise _cannot_write(lock_path, "cannot lock the session", exc) from None
    # Write first, then cut to length: the file never looks empty (a writer killed here
    # still leaves a pid behind), and readers only take its first line.
    holder = f"{os.getpid()} {hostname()}\n".encode()
    if command is not None:
        holder += f"{MAINTENANCE_NOTE}{command}\n".encode()
    try:
        os.pwrite(fd, holder, 0)
        os.ftruncate(fd, len(holder))
    except OSError as exc:
        os.close(fd)
        raise _cannot_write(lock_path, "cannot write the session's lock", exc) from None
    return fd


class SessionWriter:
    """The one process that writes a session: holds its lock, journals its changes."""

    def __init__(
        self,
        path: str,
        state: SessionState,
        lock_fd: int,
        durability: str = "fsync",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if durability not in DURABILITY_MODES:
            raise PlainboxLikeError(f"unknown durability {durability!r} (use fsync or flush)")
        self.path = path
        self.state = state
        self.durability = durability
        self._lock_fd = lock_fd
        self._clock = clock
        self._journal_path = os.path.join(path, JOURNAL_FILE)
        self._journal_fd = os.open(  # never through a symbolic link: it could point anywhere
            self._journal_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
        )
        self._journal_bytes = os.fstat(self._journal_fd).st_size  # and the pending lines
        self._pending: list[bytes] = []  # journal lines not written yet (see record)
        self._unsynced = False
        self._appended = 0  # bytes appended to the journal by this writer: the marks of group commit
        self._journal_sync: JournalSync | None = None
        self._opened_at = clock()
        self._last_snapshot_at = self._opened_at
        self._last_snapshot_cost = 0.0
        self._snapshot_seconds = 0.0
        self._snapshot_raw_size = 0
        self.snapshots = 0
        self.closed = False
        self._log_stems: set[str] | None = None  # io-log stems in use, listed on first need

    # -- opening

    @classmethod
    def create(
        cls,
        sessions_dir: str,
        *,
        title: str | None = None,
        durability: str = "fsync",
        clock: Callable[[], float] = time.monotonic,
        **metadata: Any,
    ) -> "SessionWriter":
        """Create a new session directory with a random name and open it for writing."""
        refuse_symlinked_sessions(sessions_dir)
        path = writer = lock_fd = None
        try:
            os.makedirs(sessions_dir, mode=0o700, exist_ok=True)
            path = tempfile.mkdtemp(prefix="", suffix=SESSION_SUFFIX, dir=sessions_dir)
            for sub in (IO_LOGS, SHARE_DIR):
                os.mkdir(os.path.join(path, sub), 0o700)
            lock_fd = acquire_lock(path)
            now = time.time()
            meta = SessionMetadata(
                title=title,
                flags=[FLAG_INCOMPLETE],
                created=now,
                updated=now,
                runner=Runner(os.getpid(), hostname()),
                **metadata,
            )
            writer = cls(path, SessionState(metadata=meta), lock_fd, durability, clock)
            writer.snapshot()
            fsync_dir(sessions_dir)
        except BaseException as exc:
            # Half made, it holds nothing: leave no directory that would list as a broken session.
            if writer is not None:
                writer.abandon()
            elif lock_fd is not None:
                os.close(lock_fd)
            if path is not None:
                shutil.rmtree(path, ignore_errors=True)
            if isinstance(exc, OSError):
                raise _cannot_write(sessions_dir, "cannot create a session", exc) from None
            raise
        return writer

    @classmethod
    def open(
        cls,
        path: str,
        *,
        durability: str = "fsync",
        clock: Callable[[], float] = time.monotonic,
        command: str | None = None,
    ) -> "SessionWriter":
        """Take the lock of an existing session and continue writing it (*command*: see :func:`acquire_lock`)."""
        if not os.path.exists(os.path.join(path, JOURNAL_FILE)):
            # Only our sessions have a journal; never put a lock into anything else.
            load_session(path)  # raises if it is not a session at all
            raise PlainboxLikeError(f"{path}: a Plainbox/Checkbox session can be inspected but not written")
        try:
            lock_fd = acquire_lock(path, command)
        except OSError as exc:
            raise _cannot_write(path, "cannot write the session", exc) from None
        try:
            loaded = load_session(path)
            if loaded.origin != codec.FORMAT:
                raise PlainboxLikeError(f"{path}: a Plainbox/Checkbox session can be inspected but not written")
            refuse_paths_outside(path, loaded.state)
            writer = cls(path, loaded.state, lock_fd, durability, clock)
        except BaseException as exc:
            # Leave no pid in the lock: the session must not look like ours to cleanup or list.
            try:
                os.ftruncate(lock_fd, 0)
            finally:
                os.close(lock_fd)
            if isinstance(exc, OSError):  # e.g. a journal that is a symbolic link or a directory
                raise _cannot_write(exc.filename or path, "cannot write the session", exc) from None
            raise
        try:
            _remove_stale_temporaries(path)
            # A fresh snapshot drops any torn journal tail before we append to it.
            writer.snapshot()
            writer.record({"op": "meta", "set": {"runner": {"pid": os.getpid(), "host": hostname()}}})
        except OSError as exc:
            writer.abandon()  # what is on disk stays as it was
            raise _cannot_write(path, "cannot write the session", exc) from None
        return writer

    @property
    def id(self) -> str:
        return session_id_of(self.path)

    @property
    def io_logs_dir(self) -> str:
        return os.path.join(self.path, IO_LOGS)

    @property
    def journal_fd(self) -> int:
        """The open journal, for an executor that makes it durable before each spawn (``-j N`` workers).

        Call :meth:`write_pending` before handing it a job whose start must be in it.
        """
        return self._journal_fd

    def journal_sync(self) -> JournalSync:
        """Group commit of the journal with the processes forked after this call (``-j N`` workers).

        From then on this writer's own syncs go through it too; a worker makes
        the lines written before ``journal_sync().appended`` durable with
        :meth:`JournalSync.sync_to`.
        """
        if self._journal_sync is None:
            self._journal_sync = JournalSync(self._journal_fd)
            self._journal_sync.appended = self._appended
        return self._journal_sync

    @property
    def share_dir(self) -> str:
        return os.path.join(self.path, SHARE_DIR)

    # -- changes

    def record(
        self, change: dict[str, Any], durable: bool = True, lazy: bool = False, attempt: Attempt | None = None
    ) -> int:
        """Apply *change* and append it to the journal; durable on return unless told otherwise.

        With ``durable=False`` the line waits in memory: the next durable
        record (or :meth:`sync`, or :meth:`write_pending`) writes it with the
        lines before it in one write, so several changes share one write and
        one fsync (a job's result and the next job's start). A *lazy* change
        never calls for a sync by itself (it rides along with the next one).
        """
        if self.closed:
            raise PlainboxLikeError(f"{self.path}: session is closed")
        seq = self.state.journal_seq + 1
        change = {**change, "seq": seq, "t": time.time()}
        line = codec.dumps_json(change) + b"\n"
        # The writer already has the Attempt of a result: no need to structure it back from JSON.
        self.state.apply(change, codec.structure_attempt if attempt is None else lambda _data: attempt)
        self._pending.append(line)
        self._journal_bytes += len(line)
        self._unsynced = self._unsynced or not lazy
        if durable:
            self.sync()
        now = self._clock()
        if self._journal_bytes > max(MIN_JOURNAL_BYTES, self._snapshot_raw_size) or self._interval_due(now):
            self.snapshot()
        return seq

    def write_pending(self) -> None:
        """Write the lines that wait in memory (visible to readers, not synced)."""
        if not self._pending:
            return
        data = b"".join(self._pending)
        try:
            _write_all(self._journal_fd, data)
        except OSError:
            # Never leave half a line that later lines would follow; the lines stay pending (the state
            # already has them) and go out with the next write, e.g. once a full disk has room again.
            os.ftruncate(self._journal_fd, self._journal_bytes - len(data))
            self._pending[:] = [data]
            raise
        self._pending.clear()
        self._appended += len(data)
        if self._journal_sync is not None:
            self._journal_sync.appended = self._appended

    def sync(self) -> None:
        """Make every journaled change durable (fsync mode) or visible to readers (flush mode)."""
        self.write_pending()
        if self._unsynced:
            if self.durability != "fsync":
                pass
            elif self._journal_sync is not None:
                self._journal_sync.sync_to(self._appended)
            else:
                os.fdatasync(self._journal_fd)
            self._unsynced = False

    def tick(self) -> None:
        """Call now and then while idle: snapshots pending changes that have waited long enough."""
        if self._interval_due(self._clock()):
            self.snapshot()

    def _interval_due(self, now: float) -> bool:
        if self._journal_bytes == 0 or now - self._last_snapshot_at < SNAPSHOT_INTERVAL:
            return False
        spent = self._snapshot_seconds + self._last_snapshot_cost
        return spent <= SNAPSHOT_TIME_BUDGET * (now - self._opened_at)

    def snapshot(self) -> None:
        """Write the whole state as a new ``session`` file and start an empty journal."""
        started = self._clock()
        self.sync()
        data, self._snapshot_raw_size = codec.encode_state(self.state)
        write_atomically(os.path.join(self.path, STATE_FILE), data, backup=os.path.join(self.path, BACKUP_FILE))
        # Lines up to journal_seq are now in the snapshot; a reader that still
        # sees them skips them by their sequence numbers.
        os.ftruncate(self._journal_fd, 0)
        self._journal_bytes = 0
        ended = self._clock()
        self._last_snapshot_cost = ended - started
        self._snapshot_seconds += self._last_snapshot_cost
        self._last_snapshot_at = ended
        self.snapshots += 1

    # -- convenience changes

    def set_plan(
        self,
        jobs: dict[str, str],
        desired_job_list: Iterable[str],
        durable: bool = True,
        mandatory_job_list: Iterable[str] | None = None,
    ) -> None:
        """Record the job definitions (id -> checksum), the order they should run in, and the mandatory ones."""
        change: dict[str, Any] = {"op": "plan", "jobs": dict(jobs), "desired_job_list": list(desired_job_list)}
        if mandatory_job_list is not None:
            change["mandatory_job_list"] = list(mandatory_job_list)
        self.record(change, durable)

    def update_metadata(self, durable: bool = True, **fields: Any) -> None:
        """Set metadata fields (title, flags, tags, finished, ...)."""
        self.record({"op": "meta", "set": fields}, durable)

    def job_started(
        self, job_id: str, attempt: int, io_log_filename: str | None, durable: bool = True
    ) -> float:
        """Journal that *attempt* of *job_id* starts now; returns the wall-clock start."""
        started = time.time()
        self.record(
            {
                "op": "start",
                "job": job_id,
                "attempt": attempt,
                "started": started,
                "io_log_filename": io_log_filename,
            },
            durable,
        )
        return started

    def job_finished(self, job_id: str, result: Attempt, durable: bool = True) -> None:
        """Journal the result of one attempt."""
        unstructured = codec.converter.unstructure(result)
        self.record({"op": "result", "job": job_id, "result": unstructured}, durable, attempt=attrs.evolve(result))

    def resource_recorded(self, job_id: str, records: list[dict[str, str]], durable: bool = True) -> None:
        """Journal the records a resource job printed (replacing any earlier ones of that job)."""
        self.record({"op": "resource", "job": job_id, "records": [dict(r) for r in records]}, durable)

    def new_log(self, job_id: str, attempt: int, **kwargs: Any) -> tuple[iolog.RecordWriter, str]:
        """Create the log files of a new attempt; returns their writer and the name relative to the session."""
        stem = self.reserve_log(job_id, attempt)
        return self.open_log(stem, **kwargs), f"{IO_LOGS}/{stem}.record.gz"

    def reserve_log(self, job_id: str, attempt: int) -> str:
        """Choose the file stem of a new attempt's logs without creating them yet.

        The runner journals the name with the job's start and creates the
        files once the process is running, off the path from one job to the next.
        """
        if self._log_stems is None:
            try:
                names = os.listdir(self.io_logs_dir)
            except FileNotFoundError:
                names = []
            self._log_stems = {name[: -len(RECORD_SUFFIX)] for name in names if name.endswith(RECORD_SUFFIX)}
        stem = iolog.free_log_stem(self._log_stems, job_id, attempt)
        self._log_stems.add(stem)
        return stem

    def open_log(self, stem: str, **kwargs: Any) -> iolog.RecordWriter:
        """Create the log files of a stem from :meth:`reserve_log`."""
        record_fd = iolog.open_reserved_log(self.io_logs_dir, stem)
        return iolog.RecordWriter(os.path.join(self.io_logs_dir, stem), record_fd=record_fd, **kwargs)

    # -- closing

    def close(self) -> None:
        """Write a final snapshot and release the lock."""
        if self.closed:
            return
        try:
            self.snapshot()
        finally:
            self.closed = True
            os.close(self._journal_fd)
            if self._journal_sync is not None:
                self._journal_sync.close()
            try:
                os.ftruncate(self._lock_fd, 0)
            finally:
                os.close(self._lock_fd)

    def abandon(self) -> None:
        """Release files and lock without a final snapshot (the journal has everything it could take)."""
        if not self.closed:
            self.closed = True
            try:
                self.write_pending()
            except OSError:  # e.g. a full disk: those changes were not durable yet, as after a crash
                pass
            os.close(self._journal_fd)
            if self._journal_sync is not None:
                self._journal_sync.close()
            os.close(self._lock_fd)

    def __enter__(self) -> "SessionWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- the repository ----------------------------------------------------------


class SessionRepository:
    """All sessions under one root (``$XDG_CACHE_HOME/plainbox-like`` by default)."""

    def __init__(self, root: str | None = None) -> None:
        self.root = os.path.abspath(root) if root else default_repository()
        self.sessions_dir = os.path.join(self.root, SESSIONS_DIR)

    def create(self, **kwargs: Any) -> SessionWriter:
        """A new session, open for writing (see :meth:`SessionWriter.create`)."""
        try:
            os.makedirs(self.root, mode=0o700, exist_ok=True)
        except OSError as exc:  # a file in the way, no permission, a full disk
            raise _cannot_write(self.root, "cannot create the session repository", exc) from None
        return SessionWriter.create(self.sessions_dir, **kwargs)

    def session_paths(self) -> list[str]:
        """Every session directory, in no particular order."""
        try:
            entries = os.scandir(self.sessions_dir)
        except FileNotFoundError:
            return []
        except OSError as exc:  # not a directory, no permission
            raise PlainboxLikeError(f"{self.sessions_dir}: cannot list the sessions: {exc.strerror or exc}") from None
        with entries:
            return [
                e.path
                for e in entries
                if e.name.endswith(SESSION_SUFFIX) and not e.name.startswith(".") and e.is_dir()
            ]

    def resolve(self, ref: str) -> str:
        """The directory of the session named by *ref*: an id, a unique id prefix, or a path."""
        if os.sep in ref or ref in (".", ".."):
            path = os.path.abspath(ref)
            if os.path.isfile(os.path.join(path, STATE_FILE)):
                return path
            raise SessionNotFound(f"{ref}: not a session directory (no 'session' file)")
        validate_session_id(ref)
        exact = os.path.join(self.sessions_dir, ref + SESSION_SUFFIX)
        if os.path.isdir(exact):
            return exact
        matches = sorted(p for p in self.session_paths() if session_id_of(p).startswith(ref))
        if len(matches) == 1:
            return matches[0]
        if not matches:
            if os.path.isfile(os.path.join(ref, STATE_FILE)):
                return os.path.abspath(ref)
            raise SessionNotFound(f"no session matches {ref!r} in {self.sessions_dir}")
        names = ", ".join(session_id_of(p) for p in matches[:5])
        more = ", ..." if len(matches) > 5 else ""
        raise SessionNotFound(f"{ref!r} matches {len(matches)} sessions ({names}{more}): give more of the id")

    def load(self, ref: str) -> LoadedSession:
        """Read a session (id, prefix or path)."""
        return load_session(self.resolve(ref))

    def open(self, ref: str, **kwargs: Any) -> SessionWriter:
        """Open a session for writing (id, prefix or path)."""
        return SessionWriter.open(self.resolve(ref), **kwargs)
