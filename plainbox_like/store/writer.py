"""Writing a session: the one writer that holds its lock and journals every change, and snapshots made atomic.

A session's state is its last snapshot (``session``, replaced atomically)
plus the journal lines written after it (``journal``, append-only NDJSON with
sequence numbers). Every change is one journal line, durable before
:meth:`SessionWriter.record` returns; the snapshot is rewritten only when the
journal has grown past the snapshot's own size (so the cost per change stays
constant however large the session), every few seconds while that stays
cheap, and on close. Reading a session back is :mod:`.reader`'s job.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import tempfile
import time
from typing import Any, Callable, Iterable

from plainbox_like.errors import CannotWrite, PlainboxLikeError, SessionLocked
from plainbox_like.store import codec, iolog
from plainbox_like.store.confine import refuse_paths_outside, refuse_symlinked, refuse_symlinked_sessions
from plainbox_like.store.journalsync import JournalSync
from plainbox_like.store.locks import MAINTENANCE_NOTE, hostname, lock_holder
from plainbox_like.store.model import FLAG_INCOMPLETE, FLAG_WAITING, Attempt, Runner, SessionMetadata, SessionState
from plainbox_like.store.names import (
    BACKUP_FILE,
    IO_LOGS,
    JOURNAL_FILE,
    LOCK_FILE,
    RECORD_SUFFIX,
    SHARE_DIR,
    STATE_FILE,
)
from plainbox_like.store.paths import SESSION_SUFFIX, session_id_of

DURABILITY_MODES = ("fsync", "flush")
#: The journal may grow to max(this, uncompressed snapshot size) before a new snapshot.
MIN_JOURNAL_BYTES = 64 * 1024
#: Pending changes older than this get a snapshot, if the time budget allows.
SNAPSHOT_INTERVAL = 2.0
#: Share of the run's time that interval snapshots may take.
SNAPSHOT_TIME_BUDGET = 0.05


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


class _TakenStems:
    """The io-log stems in use, as seen when choosing one for *job_id*: those listed or chosen, and the
    job ids that name a job that started (its first attempt's stem may be its id, which is not listed)."""

    def __init__(self, listed: set[str], state: SessionState, job_id: str) -> None:
        self._listed, self._state, self._job_id = listed, state, job_id

    def __contains__(self, stem: object) -> bool:
        state = self._state
        return stem in self._listed or (stem != self._job_id and (stem in state.results or stem in state.running_jobs))


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
        # io-log stems in use, listed on first need, but for the usual one (see reserve_log)
        self._log_stems: set[str] | None = None

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
        from plainbox_like.store.reader import load_session  # (reading a state: not at start-up, a new run reads none)

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
            change: dict[str, Any] = {"runner": {"pid": os.getpid(), "host": hostname()}}
            if FLAG_WAITING in writer.state.metadata.flags:  # the dead writer's question, not ours (run/manual.py)
                change["flags"] = [flag for flag in writer.state.metadata.flags if flag != FLAG_WAITING]
            writer.record({"op": "meta", "set": change})
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
        self, job_id: str, attempt: int, io_log_filename: str | None, durable: bool = True, noreturn: bool = False
    ) -> float:
        """Journal that *attempt* of *job_id* starts now; returns the wall-clock start.

        *noreturn*: the job is expected to end the run (flag ``noreturn``), journaled with its start.
        """
        started = time.time()
        change = {
            "op": "start",
            "job": job_id,
            "attempt": attempt,
            "started": started,
            "io_log_filename": io_log_filename,
        }
        if noreturn:
            change["noreturn"] = True
        self.record(change, durable)
        return started

    def job_finished(self, job_id: str, result: Attempt, durable: bool = True) -> None:
        """Journal the result of one attempt.

        The state keeps *result* itself (a copy per job was a few per cent of a
        parallel run's coordinator): the caller must not change it afterwards.
        """
        unstructured = codec.converter.unstructure(result)
        self.record({"op": "result", "job": job_id, "result": unstructured}, durable, attempt=result)

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
        stem = iolog.free_log_stem(_TakenStems(self._log_stems, self.state, job_id), job_id, attempt)
        if stem != job_id:
            self._log_stems.add(stem)
        # else the usual first attempt, named as its job: known taken from the state while the job is running or
        # has a result (a set of every stem cost 40-100 bytes a job)
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
