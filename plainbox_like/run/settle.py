"""Settling the jobs a dead runner left running: one rule for ``resume``, ``cleanup`` and ``repair``.

A job journaled as started but never finished was cut short when its runner
died. Whoever next opens the session for writing (``resume``, ``cleanup``,
``repair``) gives it a result: ``crash`` with :data:`STOPPED_WHILE_RUNNING`,
except a job flagged ``noreturn`` (it is meant to end the session, a reboot for
instance), which passes, as Checkbox records it after the restart. As in
Checkbox, a noreturn job may leave its own outcome in
``$PLAINBOX_SESSION_SHARE/__result`` (:func:`result_file_outcome`). A job is
known to be noreturn from its start in the journal (since it was journaled so)
or from the ids the callers hand over: the run's plan when resuming, the
definitions loaded again (:func:`noreturn_ids`) when cleaning up or repairing.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import time
from collections.abc import Callable, Collection

from plainbox_like.errors import one_line
from plainbox_like.run import jobenv
from plainbox_like.run.executors import find_marked, iter_pgid_members, process_env
from plainbox_like.run.manual import remove_logs
from plainbox_like.store.names import RECORD_SUFFIX
from plainbox_like.store.runconfig import RunConfig
from plainbox_like.store.model import OUTCOME_CRASH, OUTCOME_FAIL, OUTCOME_PASS, OUTCOME_SKIP, Attempt, RunningJob, SessionState
from plainbox_like.store.confine import session_file
from plainbox_like.store.names import IO_LOGS, SHARE_DIR
from plainbox_like.store.writer import SessionWriter

#: Seconds between SIGTERM and SIGKILL when a job is stopped.
KILL_GRACE = 3.0
#: The comment of a job recorded as crash because its session stopped while it ran.
STOPPED_WHILE_RUNNING = "the session stopped while this job ran"
#: How the comment of every settled noreturn job starts (``check`` expects such a job's log to be cut).
NORETURN_PREFIX = "noreturn job: "
#: The comment of a noreturn job settled as passed.
NORETURN_STOPPED = f"{NORETURN_PREFIX}the session stopped while it ran, as expected"
#: The environment variables that mark a job's processes with its session and job (found again by them).
SESSION_ENV = "PLAINBOX_LIKE_SESSION"
JOB_ENV = "PLAINBOX_LIKE_JOB"
#: The job flag of a job expected to end the run (a reboot, a power-off test; Checkbox's meaning).
FLAG_NORETURN = "noreturn"
#: The file in the session's share directory where a noreturn job may leave its outcome for after the
#: restart, as Checkbox reads it: ``{"outcome": "pass" | "fail" | "skip", "comments": "..."}``.
RESULT_FILE = "__result"
#: The outcomes a result file may give.
RESULT_FILE_OUTCOMES = (OUTCOME_PASS, OUTCOME_FAIL, OUTCOME_SKIP)
#: The most of a result file that is read.
RESULT_FILE_MAX = 64 * 1024
#: A result file older than its job's start by more than this (seconds: coarse file times) is an earlier
#: job's, and is not used.
RESULT_FILE_SLACK = 2.0


def is_noreturn(job_id: str, running: RunningJob, noreturn_ids: Collection[str]) -> bool:
    """Whether a running job is flagged noreturn: journaled so at its start, or among *noreturn_ids*."""
    return running.noreturn or job_id in noreturn_ids


def settled_result(session_dir: str, job_id: str, running: RunningJob, noreturn_ids: Collection[str]) -> tuple[str, str]:
    """The outcome and comments a job left running gets (one rule for resume, cleanup and repair).

    ``crash`` (:data:`STOPPED_WHILE_RUNNING`) for an ordinary job; for a noreturn
    job the outcome its result file gives (:func:`result_file_outcome`), else
    ``pass`` (:data:`NORETURN_STOPPED`).
    """
    if not is_noreturn(job_id, running, noreturn_ids):
        return OUTCOME_CRASH, STOPPED_WHILE_RUNNING
    return result_file_outcome(os.path.join(session_dir, SHARE_DIR, RESULT_FILE), running.started) or (
        OUTCOME_PASS,
        NORETURN_STOPPED,
    )


def result_file_outcome(path: str, started: float) -> tuple[str, str] | None:
    """The outcome a noreturn job left in *path* (``$PLAINBOX_SESSION_SHARE/__result``), if any.

    As Checkbox reads it after a restart: a JSON object whose ``outcome`` is
    ``pass``, ``fail`` or ``skip``, with optional ``comments`` (kept after a
    note saying where the outcome came from). None when there
    is no such regular file or it is older than the job (*started*, with
    :data:`RESULT_FILE_SLACK`): an earlier job's is not this one's. One that
    cannot be used (not JSON, another outcome) gives ``crash`` with a comment
    saying why, as Checkbox's agent records it.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_mtime < started - RESULT_FILE_SLACK:
            return None
        data = handle.read(RESULT_FILE_MAX + 1)
    where = f"{SHARE_DIR}/{RESULT_FILE}"
    try:
        if len(data) > RESULT_FILE_MAX:
            raise ValueError(f"larger than {RESULT_FILE_MAX} bytes")
        document = json.loads(data.decode("utf-8"))
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError too
        return OUTCOME_CRASH, f"{NORETURN_PREFIX}its result file {where} is not JSON ({one_line(exc)})"
    outcome = document.get("outcome") if isinstance(document, dict) else None
    if outcome not in RESULT_FILE_OUTCOMES:
        return OUTCOME_CRASH, (
            f"{NORETURN_PREFIX}its result file {where} gives no outcome among {', '.join(RESULT_FILE_OUTCOMES)}"
        )
    comments = document.get("comments")
    given = f": {comments.strip()}" if isinstance(comments, str) and comments.strip() else ""
    return outcome, f"{NORETURN_PREFIX}outcome {outcome} from its result file {where}{given}"


def noreturn_ids(state: SessionState, notes: list[str]) -> frozenset[str]:
    """The ids of the noreturn jobs of the session's run, from its definitions loaded again.

    Best effort (``cleanup`` and ``repair`` must work on a session whose unit files are gone):
    when they cannot be loaded, a note says so in *notes* and no job counts as noreturn.
    """
    from plainbox_like.run import prepare  # the run machinery: only when a job was left running

    try:
        units = prepare.load_run_units(RunConfig.from_blob(state.metadata.app_blob))
    except Exception as exc:  # noqa: BLE001 - best effort: only the noreturn flag is looked up
        notes.append(f"the job definitions could not be loaded ({one_line(exc)}): every running job is recorded as crash")
        return frozenset()
    return frozenset(job.id for job in units.jobs if FLAG_NORETURN in job.flags)


def settle_interrupted(
    writer: SessionWriter,
    noreturn: Collection[str],
    say: Callable[[str], None],
    ask_again: Collection[str] = frozenset(),
) -> list[str]:
    """Give every job that was running when the runner died its result (see :func:`settled_result`).

    *noreturn*: the ids of the run's noreturn jobs. *ask_again*: jobs that need
    a person (their command ran while their question was open): their start is
    abandoned and its logs removed, so that they are asked again, with no result.
    Processes the dead runner's
    jobs left behind are found by the session id in their environment and
    killed first, so that nothing runs twice at once. Returns the jobs recorded
    as crashed (a noreturn job is not listed, whatever its result file says).
    """
    settled = []
    leftovers = find_leftovers(writer.id) if writer.state.running_jobs else {}
    for job_id, running in list(writer.state.running_jobs.items()):
        for pgid in leftovers.get(job_id, ()):
            say(f"killing the leftover processes of job {job_id} (process group {pgid})")
            kill_group(pgid)
        _complete_missing_log(writer, running.io_log_filename)
        jobenv.remove_stale_cwds(writer.id, job_id, running.attempt)
        if job_id in ask_again:
            writer.record({"op": "abandon", "job": job_id})
            remove_logs(writer.path, running.io_log_filename)
            continue
        outcome, comments = settled_result(writer.path, job_id, running, noreturn)
        writer.job_finished(
            job_id,
            Attempt(
                outcome=outcome,
                comments=comments,
                io_log_filename=running.io_log_filename,
                attempt=running.attempt,
                started=running.started,
            ),
        )
        if is_noreturn(job_id, running, noreturn):  # it did what it should: never rerun as interrupted
            say(f"job {job_id} (noreturn) recorded as after a restart: {outcome} ({comments})")
        else:
            settled.append(job_id)
    jobenv.remove_empty_cwds(writer.id)  # those of jobs that had ended: the runner removes them late
    return settled


def _complete_missing_log(writer: SessionWriter, io_log_filename: str | None) -> None:
    """Give an attempt whose runner died before creating its log an empty one.

    The runner journals a job's start before spawning it and creates the log
    files just after; a death in between leaves a name without a file.
    """
    prefix, suffix = f"{IO_LOGS}/", RECORD_SUFFIX
    if not io_log_filename or not (io_log_filename.startswith(prefix) and io_log_filename.endswith(suffix)):
        return
    if not os.path.isdir(writer.io_logs_dir):  # damaged (check and repair say so): no log to complete
        return
    # Confined (the writer refuses a state naming paths outside), and never written through a link.
    if not os.path.lexists(session_file(writer.path, io_log_filename, "io_log_filename")):
        writer.open_log(io_log_filename[len(prefix): -len(suffix)]).close()


def find_leftovers(session_id: str) -> dict[str, set[int]]:
    """Process groups of live processes started as jobs of *session_id*, by job id."""
    found: dict[str, set[int]] = {}
    for leftover in find_marked({SESSION_ENV: session_id}):
        job_id = process_env(leftover.pid).get(JOB_ENV)
        if job_id is not None:
            try:
                found.setdefault(job_id, set()).add(os.getpgid(leftover.pid))
            except ProcessLookupError:
                pass
    return found


def kill_group(pgid: int, grace: float = KILL_GRACE) -> None:
    """SIGTERM process group *pgid*, then SIGKILL what is left after *grace* seconds."""
    try:
        os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(True for _ in iter_pgid_members(pgid)):
            time.sleep(0.05)
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
