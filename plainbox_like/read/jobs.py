"""One view of each job of a session, for ``show`` and every export: the per-job status rule, once.

A job's status is its latest outcome, :data:`NOT_RUN` without any attempt, and for
an attempt started without a result :data:`RUNNING` while the session's writer
lives (running or paused: a paused runner still owns the jobs it started) or
:data:`INTERRUPTED` once it is gone.
"""

from __future__ import annotations

import attrs

from plainbox_like.read import replay, summary
from plainbox_like.read.replay import AttemptRef
from plainbox_like.read.statuses import INTERRUPTED, NOT_RUN, RUNNING, STATUS_ORDER  # noqa: F401 (also read from here)
from plainbox_like.store import codec
from plainbox_like.store.model import FAILED_OUTCOMES, SKIP_OUTCOMES, Attempt, RunningJob
from plainbox_like.store.reader import LoadedSession

#: Session statuses in which a started job without a result is still running.
LIVE_STATUSES = frozenset({summary.STATUS_RUNNING, summary.STATUS_PAUSED})
#: Statuses that mean "something is wrong with this job".
BAD_STATUSES = frozenset(FAILED_OUTCOMES | {INTERRUPTED})
#: Statuses of a job that did not run (by design, or not yet).
SKIPPED_STATUSES = frozenset(SKIP_OUTCOMES | {NOT_RUN, "undecided"})


@attrs.frozen
class JobView:
    """One job as a report shows it."""

    id: str
    #: 1-based position in the report.
    index: int
    #: Latest outcome, or :data:`NOT_RUN`, :data:`RUNNING`, :data:`INTERRUPTED`.
    status: str
    #: The latest finished attempt, if any.
    latest: Attempt | None
    #: Every attempt, oldest first, a running one last.
    attempts: tuple[AttemptRef, ...]
    running: RunningJob | None
    #: Whether the job is in ``desired_job_list``.
    planned: bool

    @property
    def duration(self) -> float | None:
        """Duration of the latest finished attempt, unless a newer one is running."""
        if self.running is not None or self.latest is None:
            return None
        return self.latest.execution_duration

    @property
    def return_code(self) -> int | None:
        if self.running is not None or self.latest is None:
            return None
        return self.latest.return_code

    @property
    def note(self) -> str | None:
        """The skip reason or comments of the latest attempt, or why there is no result."""
        if self.status == RUNNING:
            return f"attempt {self.running.attempt} is running"
        if self.status == INTERRUPTED:
            if self.running is not None:
                previous = f" (previous attempt: {self.latest.outcome})" if self.latest else ""
                return f"attempt {self.running.attempt} was started but has no result{previous}"
            return "was running when the session stopped"
        if self.latest is None:
            return None
        return self.latest.skip_reason or self.latest.comments

    @property
    def namespace(self) -> str | None:
        """``com.canonical.certification`` of ``com.canonical.certification::cpu_info``."""
        if "::" in self.id:
            namespace = self.id.rsplit("::", 1)[0]
            return namespace or None
        return None


def job_views(loaded: LoadedSession, status: str | None = None) -> list[JobView]:
    """Every job in plan order, then jobs with results or running that are not in the plan.

    *status*: the session's (:func:`summary.session_status`, read again when not given).
    """
    state = loaded.state
    status = summary.session_status(loaded) if status is None else status
    # A paused session's writer still runs the jobs it started: they are running, not interrupted.
    live = status in LIVE_STATUSES
    plainbox_running = summary.running_job(loaded) if loaded.origin != codec.FORMAT else None
    planned = set(state.desired_job_list)
    views = []
    for index, job_id in enumerate(replay.known_jobs(loaded), start=1):
        attempts = state.results.get(job_id) or []
        latest = attempts[-1] if attempts else None
        running = state.running_jobs.get(job_id)
        if running is not None:
            job_status = RUNNING if live else INTERRUPTED
        elif job_id == plainbox_running and status != summary.STATUS_COMPLETE:
            job_status = INTERRUPTED
        elif latest is not None:
            job_status = latest.outcome
        else:
            job_status = NOT_RUN
        views.append(
            JobView(
                id=job_id,
                index=index,
                status=job_status,
                latest=latest,
                attempts=tuple(replay.attempts_of(loaded, job_id)),
                running=running,
                planned=job_id in planned,
            )
        )
    return views
