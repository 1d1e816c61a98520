"""Repairing session directories (``plainbox-like repair``).

:func:`repair_session` takes the session's lock and fixes what it can:

* a lost or corrupt snapshot is rebuilt (see :mod:`.salvage`) from the newest usable earlier
  snapshot (``session.bak``, or a complete snapshot temporary a killed writer
  left), from what can still be read of the damaged snapshot, and from the
  journal lines newer than that; what could not be recovered is said;
* a journal with damaged lines or a torn tail is folded into the new snapshot
  (its good lines) and emptied;
* cut or damaged ``.record.gz`` files are rewritten complete, with every
  readable record (and the bytes the raw files hold beyond them);
* ``.stdout``/``.stderr`` files that are missing or differ from the records
  are rebuilt from the records;
* jobs a dead runner left marked as running are settled as ``resume`` would;
* everything replaced or removed goes to ``quarantine/<timestamp>/`` inside
  the session, under its own relative path: nothing is ever deleted.

Plainbox/Checkbox session directories can be checked but never repaired.
"""

from __future__ import annotations

import base64
import datetime
import errno
import os
import socket
import stat
import tempfile
import time
import zlib
from typing import Callable, Iterator

import attrs

from plainbox_like.errors import OutsideSession, PlainboxLikeError, RepairStopped, SessionNotFound
from plainbox_like.maintain.check import SessionCheck, check_session
from plainbox_like.maintain.logscan import LogScan, LogUse, _describe, _log_path, _rel, log_uses, scan_log
from plainbox_like.maintain.salvage import RESULT_LOST, Rebuild, _stale_temporaries, rebuild_state
from plainbox_like.store import codec, confine, iolog, locks
from plainbox_like.store.model import FLAG_INCOMPLETE, Attempt, SessionState
from plainbox_like.store.names import BACKUP_FILE, IO_LOGS, JOURNAL_FILE, LOCK_FILE, SHARE_DIR, STATE_FILE
from plainbox_like.store.paths import open_regular, session_id_of
from plainbox_like.store.writer import SessionWriter, _write_all, acquire_lock, fsync_dir, write_atomically

QUARANTINE_DIR = "quarantine"
_CHUNK = 1 << 16
#: Errors of the disk, not of the session: a repair stops with a one-line error naming the file.
_DISK_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS})


# -- repairing --------------------------------------------------------------------------


@attrs.define
class RepairResult:
    """What :func:`repair_session` did, and what is still wrong."""

    id: str
    path: str
    actions: list[str] = attrs.Factory(list)
    #: What could not be recovered, in words.
    lost: list[str] = attrs.Factory(list)
    quarantine: str | None = None
    after: SessionCheck | None = None


def take_lock(path: str) -> int:
    """Take the session's write lock as a writer does; raises :class:`SessionLocked`."""
    return acquire_lock(path, "repair")


def release_lock(fd: int, restore: tuple[int, str] | None = None) -> None:
    """Empty the lock file (a clean stop), or put back the *restore* holder it named, and release it."""
    try:
        os.ftruncate(fd, 0)
        if restore is not None:
            os.pwrite(fd, f"{restore[0]} {restore[1]}\n".encode(), 0)
    finally:
        os.close(fd)


def refuse_symlinked_quarantine(session_path: str) -> None:
    """Raise :class:`OutsideSession` if ``quarantine/`` is a symbolic link: a repair never writes through it."""
    root = os.path.join(session_path, QUARANTINE_DIR)
    if os.path.islink(root):
        raise OutsideSession(
            f"session {session_id_of(session_path)} ({session_path}): {QUARANTINE_DIR}/ is a "
            f"symbolic link (to {os.readlink(root)!r:.200}): refusing to write through it"
        )


class _Quarantine:
    """``quarantine/<UTC timestamp>/`` of one repair, created when first needed."""

    def __init__(self, session_path: str, now: float | None = None) -> None:
        self.session_path = session_path
        stamp = datetime.datetime.fromtimestamp(time.time() if now is None else now, datetime.timezone.utc)
        self.stamp = stamp.strftime("%Y%m%dT%H%M%SZ")
        self.path: str | None = None

    def _ensure(self) -> str:
        if self.path is None:
            root = os.path.join(self.session_path, QUARANTINE_DIR)
            refuse_symlinked_quarantine(self.session_path)  # checked first thing too; again, just before use
            os.makedirs(root, mode=0o700, exist_ok=True)
            for n in range(1, 10_000):
                candidate = os.path.join(root, self.stamp if n == 1 else f"{self.stamp}-{n}")
                try:
                    os.mkdir(candidate, 0o700)
                except FileExistsError:
                    continue
                self.path = candidate
                break
            else:  # pragma: no cover
                raise PlainboxLikeError(f"{root}: no free quarantine directory name")
        return self.path

    def target(self, source: str) -> str:
        rel = os.path.relpath(source, self.session_path)
        target = os.path.join(self._ensure(), rel)
        os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
        return target

    def display(self, target: str) -> str:
        return os.path.relpath(target, self.session_path)

    def move(self, source: str) -> str:
        """Move *source* into the quarantine; returns its new name relative to the session."""
        target = self.target(source)
        os.rename(source, target)
        fsync_dir(os.path.dirname(source))
        return self.display(target)

    def keep_copy(self, source: str) -> str:
        """Keep the current content of *source* (a hard link, or a copy) before it is replaced."""
        target = self.target(source)
        try:
            os.link(source, target)
        except OSError:
            _copy_private(source, target)
        return self.display(target)


def _copy_private(source: str, target: str) -> None:
    """Copy *source* to a new file *target* with mode 0600, and fsync it (no part of a copy is left on failure)."""
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with open_regular(source) as src:
            while chunk := src.read(_CHUNK):
                _write_all(fd, chunk)
        os.fsync(fd)
    except OSError as exc:
        os.close(fd)
        os.unlink(target)
        raise _named(exc, target) from None
    os.close(fd)


class _AtomicFile:
    """A new file written under a temporary name beside *path*, then renamed over it.

    Whatever fails (a full disk), :meth:`abort` leaves no temporary file, and the error names the file.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        directory = os.path.dirname(path)
        self.fd, self.tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
        self._buffer = bytearray()

    def write(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) >= _CHUNK:
            self._flush()

    def _flush(self) -> None:
        try:
            _write_all(self.fd, bytes(self._buffer))
        except OSError as exc:
            raise _named(exc, self.path) from None
        self._buffer.clear()

    def commit(self, quarantine: _Quarantine | None) -> str | None:
        """fsync, keep the old file in *quarantine* (if it exists), rename into place."""
        self._flush()
        try:
            os.fsync(self.fd)
        except OSError as exc:
            raise _named(exc, self.path) from None
        os.close(self.fd)
        self.fd = -1
        kept = None
        if quarantine is not None and os.path.lexists(self.path):
            if stat.S_ISREG(os.lstat(self.path).st_mode):
                kept = quarantine.keep_copy(self.path)
            else:  # a directory (or a link) in its place: out of the way, whole
                kept = quarantine.move(self.path)
        os.replace(self.tmp, self.path)
        fsync_dir(os.path.dirname(self.path))
        return kept

    def abort(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        try:
            os.unlink(self.tmp)
        except OSError:
            pass


def _named(exc: OSError, path: str) -> OSError:
    """*exc* (raised by a write, which names no file) with *path* as its file name."""
    return OSError(exc.errno, exc.strerror, path) if exc.filename is None else exc


def _record_line(stream: str, data: bytes, delay: float) -> bytes:
    """A record line exactly as :class:`iolog.RecordWriter` writes it."""
    return f'[{float(delay)!r},"{stream}","{base64.b64encode(data).decode("ascii")}"]\n'.encode("ascii")


class _GzipOut:
    def __init__(self, out: _AtomicFile) -> None:
        self.out = out
        self.deflate = zlib.compressobj(6, zlib.DEFLATED, 31)

    def write(self, data: bytes) -> None:
        compressed = self.deflate.compress(data)
        if compressed:
            self.out.write(compressed)

    def finish(self) -> None:
        self.out.write(self.deflate.flush(zlib.Z_FINISH))


def _raw_tail(path: str, offset: int) -> Iterator[bytes]:
    with open_regular(path) as f:
        f.seek(offset)
        while True:
            chunk = f.read(_CHUNK)
            if not chunk:
                return
            yield chunk


def _forget_log(state: SessionState, users: list[LogUse], note: str) -> None:
    """The attempts (and running jobs) in *users* lose their log name; finished ones say why in a comment."""
    for use in users:
        target = use.result if use.result is not None else state.running_jobs.get(use.job_id)
        if use.result is not None:
            use.result.comments = f"{use.result.comments}; {note}" if use.result.comments else note
        if target is not None:
            target.io_log_filename = None


class _Repairer:
    def __init__(self, path: str, say: Callable[[str], None]) -> None:
        self.path = path
        self.say = say
        self.result = RepairResult(session_id_of(path), path)
        self.quarantine = _Quarantine(path)
        self.kept: dict[str, str] = {}

    def act(self, message: str) -> None:
        self.result.actions.append(message)
        self.say(message)

    def rel(self, path: str) -> str:
        return _rel(self.path, path)

    def keep(self, name: str) -> str | None:
        """Keep the original of top-level file *name* in quarantine before it is first replaced or emptied.

        Returns where it is kept (``None``: there is no such file, or it is empty). The journal is
        copied, not linked: writers empty it in place.
        """
        if name in self.kept:
            return self.kept[name]
        source = os.path.join(self.path, name)
        try:
            st = os.lstat(source)
            size = os.path.getsize(source)
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode):  # a directory (or a link) in its place: out of the way, whole
            self.kept[name] = self.quarantine.move(source)
            return self.kept[name]
        if name == JOURNAL_FILE and size == 0:
            return None
        if name == JOURNAL_FILE:
            target = self.quarantine.target(source)
            _copy_private(source, target)
            self.kept[name] = self.quarantine.display(target)
        else:
            self.kept[name] = self.quarantine.keep_copy(source)
        return self.kept[name]

    # -- logs

    def inside_logs(self, path: str) -> bool:
        logs = os.path.realpath(os.path.join(self.path, IO_LOGS))
        return os.path.realpath(os.path.dirname(path)) == logs

    def repair_logs(self, state: SessionState) -> None:
        seen: set[str] = set()
        for name, users in log_uses(state).items():
            why = confine.outside_reason(self.path, name)
            if why is not None:
                self.drop_outside(state, name, why, users)
                continue
            record_path = os.path.normpath(_log_path(self.path, name))
            if record_path in seen:
                continue
            seen.add(record_path)
            outside = confine.log_files_outside(self.path, name)
            if outside is not None:
                self.result.lost.append(f"{outside[0]}: {outside[1]}: not read, not repaired")
                continue
            if not self.inside_logs(record_path):
                self.result.lost.append(f"{name}: outside the session's io-logs directory: not repaired")
                continue
            scan = scan_log(record_path)
            if not scan.exists:
                self.missing_record(state, name, record_path, scan, users)
                continue
            if not scan.complete:
                self.rewrite_record(record_path, scan)
                scan = scan_log(record_path)
            stale = [s for s, r in scan.raw.items() if r.status != "equal"]
            if stale:
                self.rebuild_raw(record_path, scan, stale)

    def drop_outside(self, state: SessionState, name: str, why: str, users: list[LogUse]) -> None:
        """A log name that leads outside the session: never read nor written, dropped from the state."""
        note = f"its log name {name!r:.200} led outside the session ({why}) and was dropped by a repair"
        _forget_log(state, users, note)
        self.act(f"{name!r:.200}: {why}: dropped from {_describe(users)} (nothing was read or written there)")
        self.result.lost.append(f"the output of {_describe(users)} (its log name led outside the session)")
        self.state_changed = True

    def missing_record(
        self, state: SessionState, name: str, record_path: str, scan: LogScan, users: list[LogUse]
    ) -> None:
        raws = {s: r for s, r in scan.raw.items() if r.exists}
        if raws:
            out = _AtomicFile(record_path)
            try:
                gz = _GzipOut(out)
                for stream in iolog.STREAMS:
                    if stream in raws:
                        for chunk in _raw_tail(raws[stream].path, 0):
                            gz.write(_record_line(stream, chunk, 0.0))
                gz.finish()
                out.commit(None)
            except BaseException:
                out.abort()
                raise
            self.act(
                f"{self.rel(record_path)}: was missing: rebuilt from "
                f"{', '.join(self.rel(r.path) for r in raws.values())} (timing and the order of stdout and stderr are lost)"
            )
            return
        when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        note = f"log {name} was missing when the session was repaired ({when})"
        _forget_log(state, users, note)
        self.act(f"{name}: missing with its raw files: {_describe(users)} now records that its log was lost")
        self.result.lost.append(f"the output of {_describe(users)} ({name} and its raw files were missing)")
        self.state_changed = True

    def rewrite_record(self, record_path: str, scan: LogScan) -> None:
        """A complete file with every readable record, then the raw files' bytes beyond them."""
        out = _AtomicFile(record_path)
        count = 0
        try:
            gz = _GzipOut(out)
            for record in iolog.RecordReader(record_path):
                gz.write(_record_line(record.stream, record.data, record.delay))
                count += 1
            tail = 0
            for stream, raw in scan.raw.items():
                if raw.status == "longer":
                    for chunk in _raw_tail(raw.path, raw.expected):
                        gz.write(_record_line(stream, chunk, 0.0))
                        tail += len(chunk)
            gz.finish()
            kept = out.commit(self.quarantine)
        except BaseException:
            out.abort()
            raise
        extra = f", plus {tail} byte(s) from the raw files that the records lacked (with no timing)" if tail else ""
        self.act(f"{self.rel(record_path)}: {scan.problem}: rewritten complete with its {count} readable record(s){extra}; the original is in {kept}")

    def rebuild_raw(self, record_path: str, scan: LogScan, streams: list[str]) -> None:
        outs = {s: _AtomicFile(scan.raw[s].path) for s in streams}
        try:
            for record in iolog.RecordReader(record_path):
                out = outs.get(record.stream)
                if out is not None:
                    out.write(record.data)
            for stream, out in list(outs.items()):
                raw = scan.raw[stream]
                kept = out.commit(self.quarantine)
                del outs[stream]
                why = _RAW_STATUS_WORDS[raw.status]
                where = f"; the old one is in {kept}" if kept else ""
                self.act(f"{self.rel(raw.path)}: {why}: rebuilt from {self.rel(record_path)}{where}")
        except BaseException:
            for out in outs.values():
                out.abort()
            raise

    state_changed = False
    lock_released = False


_RAW_STATUS_WORDS = {
    "missing": "was missing",
    "longer": "was longer than the records",
    "shorter": "was shorter than the records",
    "differs": "differed from the records",
    "unreadable": "could not be read (not a regular file, or no permission)",
}


def repair_session(path: str, say: Callable[[str], None] = lambda _m: None) -> RepairResult:
    """Repair the session directory at *path* (see the module's description).

    Raises :class:`SessionLocked` if a writer holds it, and
    :class:`PlainboxLikeError` for a Checkbox/Plainbox session (read-only) or
    a directory that cannot be told to be ours.
    """
    path = os.path.abspath(path)
    if not os.path.isdir(path):
        raise SessionNotFound(f"{path}: no such session directory")
    preview = rebuild_state(path)
    if preview.origin == "plainbox":
        raise PlainboxLikeError(f"{path}: a Plainbox/Checkbox session is read-only: it can be checked, not repaired")
    if preview.origin is None:
        raise PlainboxLikeError(
            f"{path}: cannot tell whether this is a plainbox-like session (no journal, no lock, "
            "no readable snapshot): not repairing it"
        )
    refuse_symlinked_quarantine(path)
    previous_holder = locks.lock_holder(path)
    lock_fd = take_lock(path)
    repairer = _Repairer(path, say)
    try:
        _repair_locked(repairer, lock_fd, previous_holder)
    except BaseException as exc:
        if not repairer.lock_released:
            release_lock(lock_fd, restore=None if repairer.result.actions else previous_holder)
        if isinstance(exc, OSError) and exc.errno in _DISK_ERRORS:
            where = exc.filename or path
            done = f"; {len(repairer.result.actions)} repair(s) done before it stay done" if repairer.result.actions else ""
            raise RepairStopped(
                f"{where}: cannot write: {exc.strerror}: repair stopped{done}, the rest is as it was "
                "(run repair again when there is room)"
            ) from None
        raise
    result = repairer.result
    if result.actions:  # every repair leaves its own account, beside what it kept
        repairer.quarantine._ensure()
    result.quarantine = repairer.quarantine.path
    if result.quarantine is not None:
        log_fd = os.open(os.path.join(result.quarantine, "repair.log"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with open(log_fd, "w", encoding="utf-8") as f:
            f.write("".join(f"{line}\n" for line in result.actions))
            f.write("".join(f"lost: {line}\n" for line in result.lost))
    result.after = check_session(path)
    return result


def _repair_locked(rp: _Repairer, lock_fd: int, previous_holder: tuple[int, str] | None) -> None:
    path = rp.path
    rb = rebuild_state(path)  # again, now that nobody else can write
    if rb.origin != codec.FORMAT or rb.state is None:  # pragma: no cover - checked before locking
        raise PlainboxLikeError(f"{path}: not a plainbox-like session")
    state = rb.state
    rp.result.lost.extend(rb.losses)
    if rb.metadata_lost and not state.metadata.flags:
        state.metadata.flags = [FLAG_INCOMPLETE]
        rp.state_changed = True
        rp.act("metadata: lost with the snapshot: the rebuilt session is marked incomplete")
    # Directories a writer needs.
    for sub in (IO_LOGS, SHARE_DIR):
        directory = os.path.join(path, sub)
        if not os.path.isdir(directory):
            if os.path.lexists(directory):
                rp.act(f"{sub}: not a directory: moved to {rp.quarantine.move(directory)}")
            os.mkdir(directory, 0o700)
            rp.act(f"{sub}: was missing: created (empty)")
    # Temporaries of interrupted writes (snapshot temporaries were read as candidates already).
    for name in _stale_temporaries(path):
        rp.act(f"{name}: stale temporary file: moved to {rp.quarantine.move(os.path.join(path, name))}")
    # Logs (a log lost with its raw files is recorded in the state).
    rp.repair_logs(state)
    # The snapshot and the journal.
    state_path = os.path.join(path, STATE_FILE)
    if rb.backup_error is not None:
        moved = rp.quarantine.move(os.path.join(path, BACKUP_FILE))
        rp.act(f"{BACKUP_FILE}: {rb.backup_error.problem}: moved to {moved}")
    if not rb.snapshot_ok or rb.journal_needs_repair or rp.state_changed:
        kept = rp.keep(STATE_FILE)
        backup = None
        if rb.snapshot_ok:
            # The usual rotation: the old snapshot becomes the backup, the old backup goes to quarantine.
            backup = os.path.join(path, BACKUP_FILE)
            old_backup = rp.keep(BACKUP_FILE)
            if old_backup:
                rp.act(f"{BACKUP_FILE}: replaced by the previous snapshot; the old one is in {old_backup}")
        data, _ = codec.encode_state(state)
        write_atomically(state_path, data, backup=backup)
        if not rb.snapshot_ok:
            problem = "state file is missing" if rb.snapshot_data is None else rb.snapshot_error.problem
            where = f"; the damaged file is in {kept}" if kept else ""
            rp.act(
                f"{STATE_FILE}: {problem}: rebuilt (journal seq {state.journal_seq}) "
                f"from {' + '.join(rb.recovered)}{where}"
            )
        else:
            rp.act(
                f"{STATE_FILE}: new snapshot (journal seq {state.journal_seq}) with the "
                f"{rb.applied} good journal change(s) newer than the old one, which is now {BACKUP_FILE}"
            )
        _reset_journal(rp, rb, os.path.join(path, JOURNAL_FILE))
    elif not rb.journal.exists:
        _reset_journal(rp, rb, os.path.join(path, JOURNAL_FILE))
    # Jobs a dead runner left running: settled as resume and cleanup do.
    foreign = previous_holder is not None and previous_holder[1] != socket.gethostname()
    if state.running_jobs and foreign:
        rp.result.lost.append(
            f"not settled: {len(state.running_jobs)} job(s) marked as running by pid {previous_holder[0]} "
            f"on host {previous_holder[1]}, which this host cannot check"
        )
    if state.running_jobs and not foreign:
        uncertain = bool(rb.gaps) or (not rb.snapshot_ok and bool(rb.losses))
        _settle(rp, state, lock_fd, previous_holder, uncertain)
    else:
        rp.lock_released = True
        # Having done nothing, leave the lock naming whoever it named (a writer that did not finish).
        release_lock(lock_fd, restore=None if rp.result.actions else previous_holder)
    if not rp.result.actions:
        rp.say("nothing to repair")


def _reset_journal(rp: _Repairer, rb: Rebuild, journal_path: str) -> None:
    """Empty the journal now that the new snapshot has its good lines; the old one goes to quarantine."""
    scan = rb.journal
    if not scan.exists:
        if os.path.lexists(journal_path):  # a dangling symbolic link: out of the way, never followed
            rp.act(f"{JOURNAL_FILE}: a link to nothing: moved to {rp.quarantine.move(journal_path)}")
        fd = os.open(journal_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        os.close(fd)
        rp.act(f"{JOURNAL_FILE}: was missing: created (empty)")
        return
    if not scan.size:
        return
    kept = rp.keep(JOURNAL_FILE)
    if os.path.lexists(journal_path):
        os.truncate(journal_path, 0)
    else:  # it was no regular file (a link): moved away whole, never followed
        os.close(os.open(journal_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600))
    what = []
    if scan.bad:
        what.append(f"damaged line(s) {', '.join(str(n) for n, _ in scan.bad)}")
    if scan.torn:
        what.append(f"torn tail from line {scan.torn[0][0]}")
    if rb.unapplied:
        what.append(f"change(s) that cannot be applied at line(s) {', '.join(str(n) for n, _, _ in rb.unapplied)}")
    if rb.gaps:
        what.append("a sequence gap")
    rp.act(
        f"{JOURNAL_FILE}: {'; '.join(what) + ': ' if what else ''}its good lines are in the new snapshot; "
        f"emptied (the old journal is in {kept})"
    )
    for line, seq, error in rb.unapplied:
        rp.result.lost.append(f"journal line {line} (change seq {seq}) could not be applied: {error}")


def _settle(
    rp: _Repairer, state: SessionState, lock_fd: int, holder: tuple[int, str] | None, uncertain: bool
) -> None:
    """Give every job left running a result, through a writer on the lock we hold (it releases it)."""
    from plainbox_like.run import settle

    # The writer's snapshots replace session and session.bak and empty the journal: keep the originals.
    for name in (STATE_FILE, BACKUP_FILE, JOURNAL_FILE):
        rp.keep(name)
    writer = SessionWriter(rp.path, state, lock_fd)
    rp.lock_released = True  # the writer owns the lock from here on, and close() releases it
    try:
        before = sorted(state.running_jobs)
        if uncertain:
            # Their results may have been among the lost changes: do not claim they were cut short.
            leftovers = settle.find_leftovers(writer.id)
            for job_id in before:
                for pgid in sorted(leftovers.get(job_id, ())):
                    rp.act(f"{LOCK_FILE}: killing the leftover processes of job {job_id} (process group {pgid})")
                    settle.kill_group(pgid)
                running = state.running_jobs[job_id]
                writer.job_finished(
                    job_id,
                    Attempt(
                        outcome="crash",
                        comments=RESULT_LOST,
                        io_log_filename=running.io_log_filename,
                        attempt=running.attempt,
                        started=running.started,
                    ),
                )
        else:
            notes: list[str] = []
            noreturn = settle.noreturn_ids(state, notes)
            for note in notes:
                rp.act(f"{LOCK_FILE}: {note}")
            settle.settle_interrupted(writer, noreturn, lambda m: rp.act(f"{LOCK_FILE}: {m}"))
        if state.metadata.running_job_name and state.metadata.running_job_name not in state.running_jobs:
            writer.update_metadata(running_job_name=None)
        if FLAG_INCOMPLETE not in state.metadata.flags or state.metadata.finished is not None:
            writer.update_metadata(flags=sorted(set(state.metadata.flags) | {FLAG_INCOMPLETE}), finished=None)
        settled = ", ".join(f"{j} ({state.latest(j).outcome})" for j in before)
        if uncertain:
            rp.act(
                f"{LOCK_FILE}: job(s) still marked as running once changes were lost, "
                f"recorded as crash with an unknown result: {settled} (resume --rerun-failed runs them again)"
            )
        else:
            who = f"pid {holder[0]} on {holder[1]}" if holder else "its writer"
            rp.act(f"{LOCK_FILE}: interrupted run of {who}: recorded a result for the job(s) left running: {settled}")
    finally:
        writer.close()
