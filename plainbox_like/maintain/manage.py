"""Session maintenance: delete, edit title and tags, garbage-collect, clean up after dead runners.

Also lineage: which sessions were started from within a session's jobs.

Rules every function here keeps:

- A session with a live writer (:func:`locks.writer_alive`, or a lock we
  cannot take) is never changed; only ``delete --force`` removes one.
- A lock naming another host is taken as a possible live writer there: we
  cannot ask that host's kernel, so such a session is left alone too.
- Edits go through :class:`SessionWriter` (lock, journal, final
  snapshot), so ``session.bak`` keeps the state before the edit and readers
  see either the old or the new state. The ``runner`` that
  :meth:`SessionWriter.open` records is set back to the process that ran the
  jobs: maintenance never shows up as the session's runner, never changes
  its flags, and leaves its lock file empty (not running).
- Deletion first renames the directory to a hidden name in the same
  ``sessions/`` directory (atomic, then made durable), then removes it: a
  crash midway leaves a hidden ``.deleting-*`` directory that no command
  takes for a session, and that :func:`gc` removes.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import secrets
import shutil
import socket
import time
from typing import Any, Callable, Iterable

import attrs

from plainbox_like.store import codec, confine, locks, reader
from plainbox_like.store.writer import fsync_dir
from plainbox_like.store.names import JOURNAL_FILE, LOCK_FILE, STATE_FILE
from plainbox_like.read import summary
from plainbox_like.run import settle
from plainbox_like.errors import (
    BadDuration,
    BadTag,
    DeletionIncomplete,
    NotInRepository,
    PlainboxLikeError,
    ReadOnlySession,
    SessionBusy,
    SessionLocked,
)
from plainbox_like.store.model import FLAG_INCOMPLETE, Runner
from plainbox_like.store.paths import IMPORT_STAGING_PREFIX, session_id_of
from plainbox_like.store.repository import SessionRepository
from plainbox_like.store.writer import SessionWriter

#: Prefix of a session directory being deleted (renamed there first, then removed).
DELETING_PREFIX = ".deleting-"
#: A staging directory younger than this may belong to an import that has not locked it yet.
STAGING_GRACE = 60.0
#: ``gc`` removes sessions older than this unless told otherwise.
DEFAULT_GC_AGE = "30d"

_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([smhdw])")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_TAG_FORBIDDEN = re.compile(r"[\s,]")


# -- small helpers -----------------------------------------------------------------


def parse_duration(text: str) -> float:
    """Seconds in ``30d``, ``12h``, ``90m``, ``3600s`` or ``2w`` (a number and one unit)."""
    match = _DURATION.fullmatch(str(text).strip().lower())
    if not match:
        raise BadDuration(
            f"bad duration {text!r}: give a number and a unit, s, m, h, d or w (for example 30d, 12h, 90m)"
        )
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


def human_size(size: int) -> str:
    """``512 B``, ``1.5 KiB``, ``12.0 MiB`` ..."""
    if size < 1024:
        return f"{size} B"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024:
            break
    return f"{value:.1f} {unit}"


def tree_size(path: str) -> int:
    """The sum of the sizes of the files under *path* (symbolic links not followed)."""
    if os.path.islink(path):
        return 0  # a session directory that is a link: only the link is ever removed
    total = 0
    stack = [path]
    while stack:
        try:
            entries = os.scandir(stack.pop())
        except OSError:
            continue
        with entries:
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                    else:
                        total += entry.stat(follow_symlinks=False).st_size
                except OSError:
                    continue
    return total


def _host() -> str:
    return socket.gethostname()


def _describe_writer(sid: str, holder: tuple[int, str] | None, note: str | None = None) -> str:
    if holder is None:
        return f"session {sid} is being written by another process"
    pid, host = holder
    if note is not None:  # another management command, still at it after our wait
        return f"session {sid} is being changed by pid {pid} on host {host} ({note}) for more than {MAINTENANCE_WAIT:g} s"
    return f"session {sid} is being run by pid {pid} on host {host}"


#: How long a management command waits for another one (``tag``, ``rename``, ``delete`` ...) that
#: holds a session's lock, before it gives up naming it. A run's lock is not waited for. Each holds the
#: lock for a fraction of a second, but ten of them queued on a loaded machine took more than 5 s.
MAINTENANCE_WAIT = 30.0
_WAIT_STEP = 0.02


def _may_soon_be_free(path: str, holder: tuple[int, str] | None) -> bool:
    """Whether the lock of *path* is held by a management command, or is just being taken (worth waiting)."""
    if locks.lock_note(path) is not None:
        return True
    if holder is None:  # taken, nothing written in it yet
        return True
    if locks.lock_holder(path) != holder:
        # Changing hands since *holder* was read: a command that ends empties the file before it lets
        # go (while its process still lives), and the next one writes itself in. Look again.
        return True
    # What a writer that died left in it, not yet overwritten by the new holder.
    return holder[1] == _host() and not locks.pid_alive(holder[0])


def _wait_for_maintenance(path: str) -> bool:
    """Wait (up to :data:`MAINTENANCE_WAIT`) while a management command holds the lock; True once it is free."""
    deadline = time.monotonic() + MAINTENANCE_WAIT
    while _may_soon_be_free(path, locks.lock_holder(path)):
        if not locks.writer_alive(path):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(_WAIT_STEP)
    return not locks.writer_alive(path)


def _foreign_holder(path: str) -> tuple[int, str] | None:
    """The lock holder if the lock names another host (whose processes we cannot check)."""
    holder = locks.lock_holder(path)
    return holder if holder is not None and holder[1] != _host() else None


def _try_lock(path: str) -> int | None:
    """Take the session's write lock without waiting; None if another process holds it.

    Held while a session is deleted, so that no ``resume`` or edit starts
    writing it meanwhile. Our pid is written in it like a writer's. A lock
    file that is a symbolic link is not a lock (no writer opens it): -1, nothing written.
    """
    try:
        fd = os.open(os.path.join(path, LOCK_FILE), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return -1
        raise PlainboxLikeError(f"{path}: cannot open the lock file: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return None
        raise PlainboxLikeError(f"{path}: cannot lock: {exc.strerror}") from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {_host()}\n{locks.MAINTENANCE_NOTE}delete\n".encode(), 0)
    except OSError:
        pass  # the lock is what matters; the note in it is for messages
    return fd


# -- deleting ----------------------------------------------------------------------


@attrs.frozen
class Deleted:
    """A session that was deleted."""

    id: str
    path: str
    size: int
    title: str | None = None
    status: str | None = None
    #: Set when ``--force`` deleted a session whose runner may still write: (pid, host).
    runner_left: tuple[int, str] | None = None


def session_in_repository(repo: SessionRepository, ref: str) -> str:
    """The directory of session *ref*, which must be in *repo*'s ``sessions/`` directory."""
    path = repo.resolve(ref)
    # Where the entry is (a session directory that is a link counts as its link's place).
    parent = os.path.realpath(os.path.dirname(os.path.abspath(path)))
    if parent != os.path.realpath(repo.sessions_dir):
        raise NotInRepository(
            f"{path}: not a session of the repository {repo.root}; only the repository's own sessions are deleted"
        )
    return path


def busy_reason(path: str, held: set | None = None) -> tuple[str, tuple[int, str] | None] | None:
    """Why the session at *path* must not be changed now, and the writer's (pid, host); None if it may."""
    sid = session_id_of(path)
    if locks.writer_alive(path, held) and not _wait_for_maintenance(path):
        holder = locks.lock_holder(path)
        return _describe_writer(sid, holder, locks.lock_note(path)), holder
    foreign = _foreign_holder(path)
    if foreign is not None:
        return (
            f"session {sid} is locked by pid {foreign[0]} on host {foreign[1]}, "
            "which may still be running it (this host cannot tell)",
            foreign,
        )
    if not os.path.exists(os.path.join(path, STATE_FILE)) and summary.being_created(path):
        return f"session {sid} is being created", locks.lock_holder(path)
    return None


def delete_session(path: str, *, force: bool = False) -> Deleted:
    """Delete the session directory at *path* safely: hide it atomically, then remove it.

    Refuses (:class:`SessionBusy`) a session with a live or unknown writer
    unless *force*; then :attr:`Deleted.runner_left` names that writer.
    """
    path = os.path.abspath(path)
    sid = session_id_of(path)
    info = summary.summarize(path)
    if os.path.islink(path):
        # A session directory that is a symbolic link: the link goes, never what it points at
        # (nothing is locked or written there either).
        try:
            os.unlink(path)
        except OSError as exc:
            raise PlainboxLikeError(f"{path}: cannot delete: {exc.strerror}") from None
        fsync_dir(os.path.dirname(path))
        return Deleted(id=sid, path=path, size=0, title=info.title, status=info.status)
    busy = busy_reason(path)
    runner_left = None
    if busy is not None:
        message, holder = busy
        if not force:
            raise SessionBusy(message, _FORCE_ADVICE)
        runner_left = holder
    size = tree_size(path)  # before our note goes into the lock file
    try:
        fd = _try_lock(path)
    except FileNotFoundError:
        raise PlainboxLikeError(f"{path}: no such session directory (deleted meanwhile?)") from None
    if fd is None:
        holder = locks.lock_holder(path)
        if not force:
            raise SessionBusy(_describe_writer(sid, holder), _FORCE_ADVICE)
        runner_left = runner_left or holder
    try:
        hidden = _hide(path)
        try:
            shutil.rmtree(hidden)
        except OSError as exc:
            raise DeletionIncomplete(
                f"session {sid} is deleted, but removing its files failed ({exc.strerror or exc}); "
                f"they are left in {hidden}, which gc removes"
            ) from None
    finally:
        if fd is not None and fd >= 0:
            os.close(fd)
    return Deleted(
        id=sid,
        path=path,
        size=size,
        title=info.title,
        status=info.status,
        runner_left=runner_left,
    )


_FORCE_ADVICE = "not deleted (use --force to delete it anyway)"


def _hide(path: str) -> str:
    """Rename *path* to a hidden name in its directory, durably; returns the new path."""
    parent = os.path.dirname(path)
    hidden = os.path.join(parent, f"{DELETING_PREFIX}{session_id_of(path)}.{secrets.token_hex(4)}")
    try:
        os.rename(path, hidden)
    except OSError as exc:
        raise PlainboxLikeError(f"{path}: cannot delete: {exc.strerror}") from None
    fsync_dir(parent)
    return hidden


def delete_sessions(
    repo: SessionRepository,
    refs: Iterable[str],
    *,
    force: bool = False,
    on_deleted: Callable[[Deleted], None] = lambda _d: None,
) -> list[Deleted]:
    """Delete every session of *refs* (ids, prefixes or paths in the repository).

    Every ref is resolved and checked first: an unknown session, or (without
    *force*) one being run, stops the command before anything is deleted.
    A failure to remove the files of a session already hidden is raised
    after the other sessions were deleted.
    """
    paths = list(dict.fromkeys(session_in_repository(repo, ref) for ref in refs))
    if not force:
        held = locks.held_flocks()
        for path in paths:
            busy = busy_reason(path, held)
            if busy is not None:
                raise SessionBusy(busy[0], "nothing deleted (use --force to delete it anyway)")
    deleted = []
    failures: list[DeletionIncomplete] = []
    for path in paths:
        try:
            item = delete_session(path, force=force)
        except DeletionIncomplete as exc:
            failures.append(exc)
            continue
        deleted.append(item)
        on_deleted(item)
    if failures:
        raise failures[0] if len(failures) == 1 else DeletionIncomplete("; ".join(str(f) for f in failures))
    return deleted


# -- editing -----------------------------------------------------------------------


@attrs.frozen
class Edit:
    """What an edit of the title or tags did."""

    id: str
    path: str
    changed: bool
    title_before: str | None = None
    title: str | None = None
    tags_before: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    #: tag: tags given that the session already had; untag: tags given that it did not have.
    unchanged_tags: tuple[str, ...] = ()


def validate_tag(tag: str) -> str:
    """*tag* if it is usable: not empty, no whitespace, comma or control character."""
    if not tag or _TAG_FORBIDDEN.search(tag) or not tag.isprintable():
        raise BadTag(f"bad tag {tag!r}: a tag is a non-empty word without spaces, commas or control characters")
    return tag


def _snapshot_runner(path: str) -> Runner | None:
    """The ``runner`` in the snapshot on disk (written by :meth:`SessionWriter.open` before it records its own)."""
    state_path = os.path.join(path, STATE_FILE)
    with os.fdopen(confine.open_session_file(path, STATE_FILE), "rb") as f:
        data = f.read()
    return codec.decode_state(data, state_path).state.metadata.runner


def open_for_maintenance(path: str, command: str = "maintenance") -> tuple[SessionWriter, Runner | None]:
    """Open a session for writing, with errors fit for maintenance commands.

    Waits (up to :data:`MAINTENANCE_WAIT`) for another management command that holds the lock; the
    lock names *command* meanwhile. Returns the writer and the runner to restore before closing
    (see :func:`close_maintenance`).
    """
    sid = session_id_of(path)
    if not os.path.exists(os.path.join(path, JOURNAL_FILE)):
        loaded = reader.load_session(path)  # raises if it is no session at all
        if loaded.origin != codec.FORMAT:
            raise ReadOnlySession(
                f"session {sid} was written by Plainbox/Checkbox: it can be inspected but not changed"
            )
    foreign = _foreign_holder(path)
    if foreign is not None:
        raise SessionBusy(
            f"session {sid} is locked by pid {foreign[0]} on host {foreign[1]}",
            "change it after that run ends, on that host",
        )
    deadline = time.monotonic() + MAINTENANCE_WAIT
    try:
        while True:
            try:
                writer = SessionWriter.open(path, command=command)
                break
            except SessionLocked as exc:
                holder = (exc.pid, exc.host) if exc.pid else None
                if not _may_soon_be_free(path, holder) or time.monotonic() >= deadline:
                    note = locks.lock_note(path)
                    advice = "try again" if note else "change it after the run ends"
                    raise SessionBusy(_describe_writer(sid, holder, note), advice) from None
                time.sleep(_WAIT_STEP)
    except PlainboxLikeError as exc:
        if "Plainbox/Checkbox" in str(exc):
            raise ReadOnlySession(
                f"session {sid} was written by Plainbox/Checkbox: it can be inspected but not changed"
            ) from None
        raise
    try:
        runner = _snapshot_runner(path)
    except BaseException:
        writer.close()
        raise
    return writer, runner


def close_maintenance(writer: SessionWriter, runner: Runner | None) -> None:
    """Set the ``runner`` back to *runner* (journaled) and close: final snapshot, lock emptied."""
    try:
        if writer.state.metadata.runner != runner:
            writer.update_metadata(runner=attrs.asdict(runner) if runner is not None else None)
    finally:
        writer.close()


def _edit(
    repo: SessionRepository, ref: str, change: Callable[[SessionWriter], dict[str, Any]], command: str
) -> Edit:
    path = repo.resolve(ref)
    writer, runner = open_for_maintenance(path, command)
    try:
        meta = writer.state.metadata
        title_before, tags_before = meta.title, tuple(meta.tags)
        fields = change(writer)
        unchanged = fields.pop("_unchanged", ())
        fields = {k: v for k, v in fields.items() if getattr(meta, k) != v}
        if fields:
            writer.update_metadata(**fields)
    finally:
        close_maintenance(writer, runner)
    return Edit(
        id=session_id_of(path),
        path=path,
        changed=bool(fields),
        title_before=title_before,
        title=writer.state.metadata.title,
        tags_before=tags_before,
        tags=tuple(writer.state.metadata.tags),
        unchanged_tags=tuple(unchanged),
    )


def rename_session(repo: SessionRepository, ref: str, title: str) -> Edit:
    """Set the title of session *ref*; an empty *title* removes it."""
    return _edit(repo, ref, lambda _w: {"title": title or None}, "rename")


def tag_session(repo: SessionRepository, ref: str, tags: Iterable[str]) -> Edit:
    """Add *tags* to session *ref* (after its own, in the order given; no duplicates)."""
    wanted = [validate_tag(t) for t in dict.fromkeys(tags)]

    def change(writer: SessionWriter) -> dict[str, Any]:
        current = list(writer.state.metadata.tags)
        already = [t for t in wanted if t in current]
        return {"tags": current + [t for t in wanted if t not in current], "_unchanged": already}

    return _edit(repo, ref, change, "tag")


def untag_session(repo: SessionRepository, ref: str, tags: Iterable[str]) -> Edit:
    """Remove *tags* from session *ref*; tags it does not have are listed in ``unchanged_tags``."""
    unwanted = list(dict.fromkeys(tags))

    def change(writer: SessionWriter) -> dict[str, Any]:
        current = list(writer.state.metadata.tags)
        missing = [t for t in unwanted if t not in current]
        return {"tags": [t for t in current if t not in unwanted], "_unchanged": missing}

    return _edit(repo, ref, change, "untag")


# -- gc --------------------------------------------------------------------------


@attrs.frozen
class GcItem:
    """A session (or the leftover of an interrupted deletion) that gc looked at."""

    id: str
    path: str
    status: str
    age_time: float
    size: int = 0
    title: str | None = None
    #: True for a ``.deleting-*`` directory left by an interrupted deletion.
    leftover: bool = False
    #: Why an old session was kept, or why removing it failed.
    reason: str | None = None


@attrs.define
class GcReport:
    """What gc removed (or would remove), kept, and could not remove."""

    older_than: float
    cutoff: float
    dry_run: bool
    removed: list[GcItem] = attrs.Factory(list)
    kept: list[GcItem] = attrs.Factory(list)
    failed: list[GcItem] = attrs.Factory(list)

    @property
    def freed(self) -> int:
        return sum(item.size for item in self.removed)


def _age_time(s: summary.SessionSummary) -> float:
    """When the session was created; the directory's mtime if the session does not say."""
    if s.created is not None and s.status != summary.STATUS_CORRUPT:
        return s.created
    try:
        return os.stat(s.path).st_mtime
    except OSError:
        return time.time()


def gc(
    repo: SessionRepository,
    older_than: float | str = DEFAULT_GC_AGE,
    *,
    keep_incomplete: bool = False,
    dry_run: bool = False,
    now: float | None = None,
    on_item: Callable[[GcItem], None] = lambda _i: None,
) -> GcReport:
    """Remove the sessions created more than *older_than* (seconds, or ``30d`` ...) before *now*.

    The age is the session's ``created`` time, or its directory's
    modification time when it has none (corrupt, Plainbox). Never removed:
    a session with a live writer (or a lock naming another host), one being
    created, and with *keep_incomplete* an incomplete one. Leftovers of
    interrupted deletions are removed too, whatever their age.
    *on_item* hears of each removal (or, with *dry_run*, would-be removal) as it happens.
    """
    seconds = parse_duration(older_than) if isinstance(older_than, str) else float(older_than)
    if seconds < 0:
        raise BadDuration("the age must not be negative")
    now = time.time() if now is None else now
    report = GcReport(older_than=seconds, cutoff=now - seconds, dry_run=dry_run)
    held = locks.held_flocks()
    for path in sorted(repo.session_paths()):
        s = summary.summarize(path)
        age_time = _age_time(s)
        if age_time >= report.cutoff:
            continue
        item = GcItem(id=s.id, path=path, status=s.status, age_time=age_time, title=s.title)
        busy = busy_reason(path, held)
        if busy is not None:
            report.kept.append(attrs.evolve(item, reason=busy[0]))
            continue
        if keep_incomplete and s.status == summary.STATUS_INCOMPLETE:
            report.kept.append(attrs.evolve(item, reason="incomplete (--keep-incomplete)"))
            continue
        _gc_remove(report, attrs.evolve(item, size=tree_size(path)), dry_run, on_item)
    for path, status in _leftovers(repo):
        try:
            mtime = os.lstat(path).st_mtime
        except OSError:
            continue
        if status == "importing" and mtime > now - STAGING_GRACE:
            continue  # an import may not have locked its staging directory yet
        name = os.path.basename(path)
        if status == "deleting":
            name = name[len(DELETING_PREFIX):]
            name = name.rsplit(".", 1)[0] if "." in name else name
        item = GcItem(id=name, path=path, status=status, age_time=mtime, leftover=True, size=tree_size(path))
        _gc_remove(report, item, dry_run, on_item)
    return report


def _leftovers(repo: SessionRepository) -> list[tuple[str, str]]:
    """Hidden directories of interrupted deletions (``deleting``) and imports (``importing``)."""
    try:
        entries = os.scandir(repo.sessions_dir)
    except (FileNotFoundError, NotADirectoryError):
        return []
    found = []
    with entries:
        for e in entries:
            for prefix, status in ((DELETING_PREFIX, "deleting"), (IMPORT_STAGING_PREFIX, "importing")):
                if e.name.startswith(prefix) and (e.is_dir(follow_symlinks=False) or e.is_symlink()):
                    found.append((e.path, status))
    return sorted(found)


def _gc_remove(report: GcReport, item: GcItem, dry_run: bool, on_item: Callable[[GcItem], None]) -> None:
    if dry_run:
        if item.leftover and _lock_is_held(item.path):
            return  # a deletion in progress
        report.removed.append(item)
        on_item(item)
        return
    if item.leftover and os.path.islink(item.path):
        try:
            os.unlink(item.path)  # a link left by an older version's deletion: never its target
        except OSError as exc:
            report.failed.append(attrs.evolve(item, reason=f"cannot remove {item.path}: {exc.strerror or exc}"))
            return
        report.removed.append(item)
        on_item(item)
        return
    if item.leftover:
        fd = _try_lock_quietly(item.path)
        if fd is None:
            return  # another process is deleting it right now
        try:
            shutil.rmtree(item.path)
        except OSError as exc:
            report.failed.append(attrs.evolve(item, reason=f"cannot remove {item.path}: {exc.strerror or exc}"))
            return
        finally:
            if fd >= 0:
                os.close(fd)
        report.removed.append(item)
        on_item(item)
        return
    try:
        deleted = delete_session(item.path)
    except SessionBusy as exc:
        report.kept.append(attrs.evolve(item, reason=exc.reason))
        return
    except PlainboxLikeError as exc:
        report.failed.append(attrs.evolve(item, reason=str(exc)))
        return
    item = attrs.evolve(item, size=deleted.size)
    report.removed.append(item)
    on_item(item)


def _try_lock_quietly(path: str) -> int | None:
    """The lock of a leftover directory (-1 if it has no lock file), or None if someone holds it."""
    try:
        fd = os.open(os.path.join(path, LOCK_FILE), os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return -1
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _lock_is_held(path: str) -> bool:
    fd = _try_lock_quietly(path)
    if fd is None:
        return True
    if fd >= 0:
        os.close(fd)
    return False


# -- cleanup -----------------------------------------------------------------------


@attrs.frozen
class Cleaned:
    """A session whose dead runner left it marked as running, and what was done about it."""

    id: str
    path: str
    title: str | None = None
    #: (job id, outcome recorded) for each job that was marked as running.
    jobs: tuple[tuple[str, str], ...] = ()
    #: True if the ``incomplete`` flag was set by the cleanup (it was missing).
    flagged: bool = False
    #: (pid, host) the stale lock file named, if any.
    stale_lock: tuple[int, str] | None = None
    #: What else happened: leftover processes killed, definitions not found ...
    notes: tuple[str, ...] = ()


@attrs.define
class CleanupReport:
    cleaned: list[Cleaned] = attrs.Factory(list)
    #: (session id, why it was left alone) for sessions that look stale but were not touched.
    skipped: list[tuple[str, str]] = attrs.Factory(list)


def needs_cleanup(loaded: reader.LoadedSession) -> bool:
    """Whether a session (with no live writer) is still marked as being run."""
    state = loaded.state
    return bool(state.running_jobs or state.metadata.running_job_name or locks.lock_holder(loaded.path))


def cleanup_session(path: str, *, dry_run: bool = False) -> Cleaned:
    """Settle the session at *path* whose runner died: running jobs get a result, the session is incomplete.

    Jobs marked as running are recorded as ``crash`` with the comment
    "the session stopped while this job ran" (a ``noreturn`` job as
    ``pass``), after killing any of their processes still alive, exactly as
    ``resume`` would; the session keeps (or gets) the ``incomplete`` flag and
    can be resumed. A session that finished its run (no job running, flag
    cleared) stays complete; only its stale lock is cleared.
    """
    sid = session_id_of(path)
    stale = locks.lock_holder(path)
    if dry_run:
        busy = busy_reason(path)
        if busy is not None:
            raise SessionBusy(busy[0], "not cleaned up")
        loaded = reader.load_session(path)
        if loaded.origin != codec.FORMAT:
            raise ReadOnlySession(f"session {sid} was written by Plainbox/Checkbox: it is not cleaned up")
        state = loaded.state
        notes: list[str] = []
        noreturn = settle.noreturn_ids(state, notes) if state.running_jobs else frozenset()
        jobs = tuple(
            (j, settle.settled_result(path, j, state.running_jobs[j], noreturn)[0]) for j in sorted(state.running_jobs)
        )
        flagged = bool(state.running_jobs) and FLAG_INCOMPLETE not in state.metadata.flags
        return Cleaned(sid, path, state.metadata.title, jobs, flagged, stale, tuple(notes))
    busy = busy_reason(path)
    if busy is not None:
        raise SessionBusy(busy[0], "not cleaned up")
    writer, runner = open_for_maintenance(path, "cleanup")
    notes: list[str] = []
    try:
        state = writer.state
        was_running = bool(state.running_jobs)
        noreturn = settle.noreturn_ids(state, notes) if was_running else frozenset()
        jobs_before = list(state.running_jobs)
        # The same settling as resume's: leftover processes killed, crash (noreturn: pass) recorded.
        settle.settle_interrupted(writer, noreturn, notes.append)
        settled = tuple((j, state.latest(j).outcome) for j in sorted(jobs_before))
        if state.metadata.running_job_name and state.metadata.running_job_name not in state.running_jobs:
            writer.update_metadata(running_job_name=None)
        flagged = False
        if was_running and (FLAG_INCOMPLETE not in state.metadata.flags or state.metadata.finished is not None):
            flagged = FLAG_INCOMPLETE not in state.metadata.flags
            writer.update_metadata(flags=sorted(set(state.metadata.flags) | {FLAG_INCOMPLETE}), finished=None)
        title = state.metadata.title
    finally:
        close_maintenance(writer, runner)
    return Cleaned(sid, path, title, settled, flagged, stale, tuple(notes))


def cleanup(
    repo: SessionRepository,
    *,
    dry_run: bool = False,
    on_item: Callable[[Cleaned], None] = lambda _c: None,
) -> CleanupReport:
    """Clean up every session of *repo* still marked as running whose runner is dead (see :func:`cleanup_session`)."""
    report = CleanupReport()
    held = locks.held_flocks()
    for path in sorted(repo.session_paths()):
        sid = session_id_of(path)
        if locks.writer_alive(path, held):
            continue  # being run: untouched
        try:
            loaded = reader.load_session(path)
        except PlainboxLikeError:
            continue  # corrupt or being created: nothing we can settle
        if loaded.origin != codec.FORMAT or not needs_cleanup(loaded):
            continue
        foreign = _foreign_holder(path)
        if foreign is not None:
            report.skipped.append(
                (sid, f"locked by pid {foreign[0]} on host {foreign[1]}, which this host cannot check")
            )
            continue
        try:
            item = cleanup_session(path, dry_run=dry_run)
        except SessionBusy:
            continue  # a writer started meanwhile
        except PlainboxLikeError as exc:
            report.skipped.append((sid, str(exc)))
            continue
        report.cleaned.append(item)
        on_item(item)
    return report
