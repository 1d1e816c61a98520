"""One-line summaries of sessions, for listing: status, counts, times.

:func:`summarize` never raises for a bad session: whatever is wrong with a
directory ends up in the summary as status ``corrupt`` and a one-line
``reason``, so that one broken session never hides the others.

Statuses:

``running``
    A writer process named in the session's lock file is alive on this host
    (or the directory is still being created).
``paused``
    A runner is alive but waits between jobs until ``plainbox-like continue``.
``incomplete``
    The ``incomplete`` flag is set and nobody writes the session: it was
    interrupted, or is waiting to be resumed.
``complete``
    The flag is cleared.
``corrupt``
    The state cannot be read; ``reason`` says why.
"""

from __future__ import annotations

import os
import time
from typing import Any

import attrs

from plainbox_like.store import locks, names, reader
from plainbox_like.errors import PlainboxLikeError, one_line  # noqa: F401 (one_line: also read from here)
from plainbox_like.store.model import FLAG_INCOMPLETE, FLAG_PAUSED, planned_count
from plainbox_like.store.paths import session_id_of
from plainbox_like.store.reader import LoadedSession
from plainbox_like.store.repository import SessionRepository

from plainbox_like.store.names import (  # noqa: F401 (public here too)
    STATUS_COMPLETE,
    STATUS_CORRUPT,
    STATUS_INCOMPLETE,
    STATUS_PAUSED,
    STATUS_RUNNING,
    STATUSES,
    TIME_FIELDS,
)

#: A directory without a state file younger than this is taken to be still being created.
CREATING_GRACE = 30.0



@attrs.frozen
class SessionSummary:
    """What ``list`` shows about one session."""

    id: str
    path: str
    status: str
    reason: str | None = None
    title: str | None = None
    created: float | None = None
    updated: float | None = None
    finished: float | None = None
    #: Latest outcome of each job that has a result -> number of such jobs.
    counts: dict[str, int] = attrs.field(factory=dict, hash=False)
    #: Number of planned jobs (:func:`plainbox_like.store.model.planned_count`).
    total: int = 0
    running_job: str | None = None
    runner_pid: int | None = None
    runner_host: str | None = None
    tags: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()
    parent_session: str | None = None
    app_id: str | None = None
    #: ``plainbox-like`` for ours, ``plainbox`` for a Checkbox/Plainbox session.
    origin: str | None = None

    @property
    def done(self) -> int:
        """How many jobs have a result."""
        return sum(self.counts.values())

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (times stay epoch floats; tuples become lists)."""
        data = attrs.asdict(self, recurse=False)
        data["counts"] = dict(self.counts)
        data["tags"] = list(self.tags)
        data["flags"] = list(self.flags)
        return data


def session_status(loaded: LoadedSession) -> str:
    """``running``, ``incomplete`` or ``complete`` for a session that could be read."""
    if locks.writer_alive(loaded.path):
        return STATUS_PAUSED if FLAG_PAUSED in loaded.state.metadata.flags else STATUS_RUNNING
    if FLAG_INCOMPLETE in loaded.state.metadata.flags:
        return STATUS_INCOMPLETE
    return STATUS_COMPLETE


def running_job(loaded: LoadedSession) -> str | None:
    """The job being run (or that was running when the session stopped), if any.

    Plainbox never clears ``running_job_name``; a job that has a result is not
    reported as running.
    """
    state = loaded.state
    name = state.metadata.running_job_name
    if name and (name in state.running_jobs or not state.results.get(name)):
        return name
    # The most recently started one (dict order does not survive a snapshot).
    return max(state.running_jobs, key=lambda job: (state.running_jobs[job].started, job), default=None)


def summarize_loaded(loaded: LoadedSession) -> SessionSummary:
    """The summary of a session already read with :func:`reader.load_session`."""
    state = loaded.state
    meta = state.metadata
    status = session_status(loaded)
    pid = host = None
    holder = locks.lock_holder(loaded.path) if status == STATUS_RUNNING else None
    if holder is not None:
        pid, host = holder
    elif meta.runner is not None:
        pid, host = meta.runner.pid, meta.runner.host
    return SessionSummary(
        id=loaded.id,
        path=loaded.path,
        status=status,
        title=meta.title,
        created=meta.created,
        updated=meta.updated,
        finished=meta.finished,
        counts=state.outcome_counts(),
        total=planned_count(state.desired_job_list, state.results),
        running_job=running_job(loaded),
        runner_pid=pid,
        runner_host=host,
        tags=tuple(meta.tags),
        flags=tuple(meta.flags),
        parent_session=meta.parent_session,
        app_id=meta.app_id,
        origin=loaded.origin,
    )


def being_created(path: str, now: float | None = None) -> bool:
    """Whether *path*, which has no state file, looks like a session still being created."""
    if locks.writer_alive(path):
        return True
    try:
        mtime = os.stat(path).st_mtime
    except OSError:
        return False
    now = time.time() if now is None else now
    return now - mtime < CREATING_GRACE


def summarize(path: str, now: float | None = None) -> SessionSummary:
    """The summary of the session directory at *path*; never raises for a bad session."""
    path = os.path.abspath(path)
    sid = session_id_of(path)
    try:
        if not os.path.exists(os.path.join(path, names.STATE_FILE)) and os.path.isdir(path):
            if being_created(path, now):
                holder = locks.lock_holder(path)
                pid, host = holder if holder else (None, None)
                return SessionSummary(
                    id=sid, path=path, status=STATUS_RUNNING, runner_pid=pid, runner_host=host
                )
        return summarize_loaded(reader.load_session(path))
    except Exception as exc:  # noqa: BLE001 - a summary reports every problem instead of raising
        return SessionSummary(id=sid, path=path, status=STATUS_CORRUPT, reason=one_line(exc))


def _sort_time(summary: SessionSummary) -> float:
    if summary.created is not None:
        return summary.created
    try:
        return os.stat(summary.path).st_mtime
    except OSError:
        return 0.0


def list_sessions(repo: SessionRepository, now: float | None = None) -> list[SessionSummary]:
    """Summaries of every session in *repo*, newest first.

    Sessions are ordered by their creation time; those that do not have one
    (corrupt, being created, Plainbox's) by their directory's modification time.
    """
    summaries = [summarize(path, now) for path in repo.session_paths()]
    keyed = [(_sort_time(s), s.id, s) for s in summaries]
    keyed.sort(key=lambda item: (item[0], item[1]), reverse=True)
    return [s for _, _, s in keyed]
