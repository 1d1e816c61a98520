"""The persisted model: attrs classes for a session's state, and how changes apply to it.

Field names follow Plainbox's session state where the meaning is the same
(``jobs``, ``results``, ``desired_job_list``, ``metadata.title`` ...); the rest
are our additions. ``SessionState.apply`` is the single place where a journal
change alters the state, used both by the writer and by the loader's replay,
so a loaded session is exactly what the writer had in memory.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs

from plainbox_like.store.names import (  # noqa: F401 (public here too)
    FAILED_OUTCOMES,
    FLAG_INCOMPLETE,
    FLAG_PAUSED,
    FLAG_WAITING,
    FLAG_SUBMITTED,
    OUTCOME_CRASH,
    OUTCOME_FAIL,
    OUTCOME_PASS,
    OUTCOME_SKIP,
    OUTCOME_SKIPPED_DEPENDENCY,
    OUTCOME_SKIPPED_RESOURCE,
    SKIP_OUTCOMES,
)


def planned_count(desired_job_list: Iterable[str], results: Iterable[str]) -> int:
    """How many jobs a session planned: those of ``desired_job_list`` and every other job with a result.

    Checkbox's ``desired_job_list`` holds the selected jobs only; the bootstrap
    and resource jobs it also ran have results and no place in it.
    """
    desired = dict.fromkeys(desired_job_list)
    return len(desired) + sum(1 for job in results if job not in desired)


@attrs.define
class LeftoverProcess:
    """One process a job left running when it ended."""

    pid: int
    #: Its command line (arguments joined by spaces, cut to :data:`LEFTOVER_COMMAND_MAX` characters).
    command: str


#: How many leftover processes an attempt lists (all are counted), and how long a listed command line may be.
LEFTOVERS_LISTED = 10
LEFTOVER_COMMAND_MAX = 200


@attrs.define
class LeftoverProcesses:
    """The processes a job left running when it ended (version 3)."""

    #: How many there were.
    count: int
    #: True if they were left alive (the job's ``leaves-processes`` flag), false if they were killed.
    kept: bool = False
    #: The first of them by pid, at most :data:`LEFTOVERS_LISTED`.
    processes: list[LeftoverProcess] = attrs.Factory(list)


@attrs.define
class Answered:
    """Who gave the outcome of a job that needs a person, and how (version 4)."""

    #: What was answered: ``pass``, ``fail``, ``skip`` or ``run`` (the command's exit status decided).
    answer: str
    #: The user name and host of whoever answered.
    user: str
    host: str
    #: When (a timestamp).
    time: float
    #: ``terminal`` (asked there), ``answers-file`` (``--answers``) or ``answer-command`` (``plainbox-like answer``).
    via: str


@attrs.define
class Placement:
    """Where an attempt ran when that was not the runner's machine: a Dask worker (version 5)."""

    #: The worker's address (``tcp://HOST:PORT``) and its machine's host name.
    address: str
    host: str
    #: The ``$PLAINBOX_SESSION_SHARE`` the job had there, and whether it was the session's own
    #: ``session-share`` (a filesystem the worker shares) or a directory of that worker.
    share: str | None = None
    share_shared: bool = False


@attrs.define(weakref_slot=False)  # one per attempt, never weakly referenced: 8 bytes less each
class Attempt:
    """One attempt at running a job: an entry of ``results[job_id]``."""

    outcome: str
    return_code: int | None = None
    execution_duration: float | None = None
    comments: str | None = None
    io_log_filename: str | None = None
    attempt: int = 1
    started: float | None = None
    skip_reason: str | None = None
    #: Processes the job left running when it ended; None if none (or not known: before version 3).
    leftover_processes: LeftoverProcesses | None = None
    #: Files and directories the job left in its temporary working directory (relative paths).
    #: A tuple: most attempts leave nothing, and share the one empty tuple (a list each cost 56 bytes).
    leftover_files: tuple[str, ...] = ()
    #: Who answered, for a job that needs a person (version 4); None for every other job.
    answered: Answered | None = None
    #: Where it ran if not on the runner's machine (a Dask worker); None: the runner's (version 5).
    ran_on: Placement | None = None


@attrs.define
class RunningJob:
    """A job whose start was journaled and whose result was not (yet)."""

    attempt: int
    started: float
    io_log_filename: str | None = None
    #: Journaled with its start: the job is flagged ``noreturn``, expected to end the run (a reboot, a
    #: power-off), so that after the restart its session is known to have ended as planned without loading
    #: the job definitions again. Left out of states when false.
    noreturn: bool = False


@attrs.define
class Runner:
    """The process that writes (or last wrote) the session."""

    pid: int
    host: str


@attrs.define
class SessionMetadata:
    """Plainbox's session metadata plus our timestamps, tags and lineage."""

    title: str | None = None
    flags: list[str] = attrs.Factory(list)
    running_job_name: str | None = None
    app_id: str | None = None
    app_blob: str | None = None
    created: float | None = None
    updated: float | None = None
    finished: float | None = None
    tags: list[str] = attrs.Factory(list)
    parent_session: str | None = None
    parent_job: str | None = None
    runner: Runner | None = None


@attrs.define
class SessionState:
    """Everything a session knows; stored as ``{"version": N, "session": <this>}``."""

    jobs: dict[str, str] = attrs.Factory(dict)
    results: dict[str, list[Attempt]] = attrs.Factory(dict)
    desired_job_list: list[str] = attrs.Factory(list)
    mandatory_job_list: list[str] = attrs.Factory(list)
    metadata: SessionMetadata = attrs.Factory(SessionMetadata)
    running_jobs: dict[str, RunningJob] = attrs.Factory(dict)
    journal_seq: int = 0
    #: Records printed by resource jobs that passed, by job id (version 2).
    resources: dict[str, list[dict[str, str]]] = attrs.Factory(dict)

    def latest(self, job_id: str) -> Attempt | None:
        """The newest attempt of *job_id*, if any."""
        attempts = self.results.get(job_id)
        return attempts[-1] if attempts else None

    def next_attempt(self, job_id: str) -> int:
        """The attempt number the next run of *job_id* gets."""
        numbers = [a.attempt for a in self.results.get(job_id, ())]
        running = self.running_jobs.get(job_id)
        if running is not None:
            numbers.append(running.attempt)
        return max(numbers, default=0) + 1

    def outcome_counts(self) -> dict[str, int]:
        """How many jobs have each latest outcome."""
        counts: dict[str, int] = {}
        for attempts in self.results.values():
            if attempts:
                outcome = attempts[-1].outcome
                counts[outcome] = counts.get(outcome, 0) + 1
        return counts

    def _latest_running(self) -> str | None:
        # Chosen from the data, not from dict order: snapshots store running_jobs
        # with sorted keys, so insertion order does not survive a reload.
        return max(self.running_jobs, key=lambda job: (self.running_jobs[job].started, job), default=None)

    def apply(self, change: dict[str, Any], structure_attempt: Any) -> None:
        """Apply one journal *change* (a JSON object) to this state.

        *structure_attempt* turns a result dict into an :class:`Attempt`
        (the codec's converter), injected to keep this module free of cattrs.
        """
        op = change["op"]
        meta = self.metadata
        if op == "start":
            job = change["job"]
            self.running_jobs[job] = RunningJob(
                attempt=change["attempt"],
                started=change["started"],
                io_log_filename=change.get("io_log_filename"),
                noreturn=change.get("noreturn") is True,
            )
            meta.running_job_name = job
        elif op == "result":
            job = change["job"]
            attempt = structure_attempt(change["result"])
            attempts = self.results.get(job)
            if attempts is None:  # a list of one, not one with room for four: a run keeps one per job
                self.results[job] = [attempt]
            else:
                attempts.append(attempt)
            self.running_jobs.pop(job, None)
            if meta.running_job_name == job:
                meta.running_job_name = self._latest_running()
        elif op == "abandon":
            # A start whose job never ran (e.g. could not be spawned and the
            # caller records nothing): forget it without a result.
            self.running_jobs.pop(change["job"], None)
            if meta.running_job_name == change["job"]:
                meta.running_job_name = self._latest_running()
        elif op == "resource":
            self.resources[change["job"]] = [dict(record) for record in change["records"]]
        elif op == "plan":
            if change.get("append"):
                # Jobs recorded as they come (the Python API): new ids join the desired list.
                self.desired_job_list.extend(j for j in change["jobs"] if j not in self.jobs)
            self.jobs.update(change["jobs"])
            if "desired_job_list" in change:
                self.desired_job_list = list(change["desired_job_list"])
            if "mandatory_job_list" in change:
                self.mandatory_job_list = list(change["mandatory_job_list"])
        elif op == "meta":
            for key, value in change["set"].items():
                if key not in _EDITABLE_METADATA:
                    raise ValueError(f"metadata field {key!r} cannot be edited")
                if key == "runner":
                    value = Runner(**value) if value is not None else None
                elif key in ("flags", "tags"):
                    value = list(value)
                setattr(meta, key, value)
        else:
            raise ValueError(f"unknown journal operation {op!r}")
        meta.updated = change.get("t", meta.updated)
        self.journal_seq = change["seq"]


_EDITABLE_METADATA = frozenset(
    {
        "title",
        "flags",
        "app_id",
        "app_blob",
        "created",
        "finished",
        "tags",
        "parent_session",
        "parent_job",
        "runner",
        "running_job_name",
    }
)
