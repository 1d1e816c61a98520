"""Running and resuming a whole batch: the scheduler, the executor and the journal together.

The order of durable writes is what makes resume exact: a job's start is
journaled (with any results before it) and synced before its process is
spawned; its result is journaled after it ends and synced before the next job
starts or anything is reported. So after any interruption, every job is
either finished with a result, or known to have been running.
"""

from __future__ import annotations

import getpass
import os
import signal
import time
from typing import TYPE_CHECKING, Any, Callable

import attrs

from plainbox_like.define import plan as planning
from plainbox_like.define.resource import read_records
from plainbox_like.define.metadata import RunMetadata
from plainbox_like.define.scheduler import Scheduler
from plainbox_like.define.units import JobDefinition, ManifestEntry
from plainbox_like.errors import PlainboxLikeError, RunAborted
from plainbox_like.run import control, jobenv
from plainbox_like.run.requirements import RESOURCE_RAN_OUTCOMES, unmet_requirement
from plainbox_like.run.manual import ManualDesk
from plainbox_like.run.report import NullReporter, Reporter
from plainbox_like.run.executors import Executor, Exited, LocalExecutor, Lost, Process, ProcessSpec, Started, find_shell
from plainbox_like.run.executors import Leftover, find_marked, group_alive, kill_leftovers, process_env, signal_leftover, signal_name
from plainbox_like.run.executors import still_running
from plainbox_like.run.settle import FLAG_NORETURN, JOB_ENV, KILL_GRACE, SESSION_ENV
from plainbox_like.store import limits
from plainbox_like.store.model import (
    LEFTOVER_COMMAND_MAX,
    LEFTOVERS_LISTED,
    FLAG_PAUSED,
    OUTCOME_CRASH,
    OUTCOME_FAIL,
    OUTCOME_PASS,
    OUTCOME_SKIP,
    OUTCOME_SKIPPED_RESOURCE,
    Attempt,
    LeftoverProcess,
    LeftoverProcesses,
)
from plainbox_like.store.names import IO_LOGS, RECORD_SUFFIX
from plainbox_like.store.writer import SessionWriter
from plainbox_like.store.paths import open_regular
from plainbox_like.text import format_size

if TYPE_CHECKING:
    from plainbox_like.run.prepare import TemplateExpander

APP_ID = "plainbox-like"
#: Plugins whose command we run.
RUNNABLE_PLUGINS = frozenset({"shell", "resource", "attachment"})
#: The job flag that keeps the processes a job leaves running (a daemon it starts on purpose) alive.
FLAG_LEAVES_PROCESSES = "leaves-processes"
#: What a shutdown sends: the runner stopped by one of these while a noreturn job runs leaves that job without
#: a result (resume records it as after a restart); a noreturn job killed by one of them is waited on as one
#: that exited with status 0.
SHUTDOWN_SIGNALS = frozenset({signal.SIGTERM, signal.SIGHUP, signal.SIGKILL})
#: The largest ``-j`` accepted without ``--force``. Jobs are often I/O-bound (devices, network, sleeps), so
#: the number of CPUs is no limit; but each worker is a forked copy of the runner holding two of its pipe
#: ends, and 256 of them already take half of the common limit of 1,024 open files.
MAX_PARALLEL = 256
INTERRUPTED = "interrupted"
STOPPED_BY_REQUEST = "stopped by request"

SHARE_ENV = "PLAINBOX_SESSION_SHARE"


@attrs.define(eq=False)
class _Running:
    job: JobDefinition
    attempt: int
    started_wall: float
    log_stem: str
    log_name: str
    start_seq: int  # the journal sequence number of its start
    process: Process | None = None
    deadline: float | None = None
    kill_at: float | None = None
    why_stopped: str | None = None
    #: The deadline it was stopped at for its timeout: an exit before it is no timeout.
    timed_out_at: float | None = None
    #: A noreturn job that ended as it should (status 0, or killed as by a shutdown): its exit, kept without a
    #: result while the runner waits for the machine to go down (as Checkbox waits).
    held: Exited | None = None
    #: A noreturn job stopped with the runner by a shutdown's signal: no result is recorded (resume gives it one).
    unrecorded: bool = False

    @property
    def noreturn(self) -> bool:
        return FLAG_NORETURN in self.job.flags


def check_parallel(parallel: int, force: bool = False) -> None:
    """Refuse a parallelism above :data:`MAX_PARALLEL` unless *force* (a one-line error)."""
    if parallel > MAX_PARALLEL and not force:
        raise PlainboxLikeError(
            f"-j {parallel}: more than {MAX_PARALLEL} jobs at once needs --force "
            f"(each is a worker process forked from the runner)"
        )


def job_environment(base: dict[str, str], job: JobDefinition, session_id: str, share_dir: str) -> dict[str, str]:
    """The environment of a job: the caller's, our variables, and ``environ: NAME=value`` entries."""
    env = dict(base)
    env[SHARE_ENV] = share_dir
    env[SESSION_ENV] = session_id
    env[JOB_ENV] = job.id
    for item in job.environ:
        name, sep, value = item.partition("=")
        if sep and name:
            env[name] = value
    return env


class BatchRunner:
    """Runs the jobs of a plan into an open session."""

    def __init__(
        self,
        writer: SessionWriter,
        plan: planning.Plan,
        *,
        finished: dict[str, str] | None = None,
        parallel: int = 1,
        reporter: Reporter | None = None,
        executor: Executor | None = None,
        base_env: dict[str, str] | None = None,
        kill_grace: float = KILL_GRACE,
        clock: Callable[[], float] = time.monotonic,
        expander: TemplateExpander | None = None,
        providers: jobenv.ProviderIndex | None = None,
        launcher_env: dict[str, str] | None = None,
        warnings: list[str] | None = None,
        manifest_entries: tuple[ManifestEntry, ...] = (),
        manifest_answers: dict[str, Any] | None = None,
        dask: str | None = None,
        retries: int = 0,
        manual: ManualDesk | None = None,
    ) -> None:
        self.writer = writer
        self.expander = expander
        self.plan = plan
        self.scheduler = Scheduler(plan, finished=finished or {}, max_running=parallel)
        self.reporter = reporter or NullReporter()
        self._own_executor = executor is None
        self._parallel = parallel
        #: The Dask cluster to run on (see run/dask_executor.py), and how often a job whose worker was lost
        #: is run again; the jobs to run again come first.
        self.dask = dask
        self.retries = retries
        self._retried: dict[str, int] = {}
        self._again: list[JobDefinition] = []
        #: Made by :meth:`run` unless given: in-process for one job at a time, worker processes for more.
        self.executor: Executor | None = executor
        self.base_env = dict(os.environ if base_env is None else base_env)
        self.kill_grace = kill_grace
        self._clock = clock
        self._shell = find_shell()
        self._me = getpass.getuser()
        #: The provider of each job, and every provider's bin/ for PATH (met in the plan's order).
        self.providers = providers if providers is not None else jobenv.ProviderIndex()
        self.providers.learn(plan.jobs[job_id] for job_id in plan.order)
        self.launcher_env = dict(launcher_env or {})
        self.manifest_entries = manifest_entries
        self.manifest_answers = dict(manifest_answers or {})
        #: Answers the jobs that need a person (run/manual.py); without one they are skipped.
        self.manual = manual if manual is not None else ManualDesk()
        #: Problems met while running (told after the run).
        self.warnings = warnings if warnings is not None else []
        # What every job's spec needs from the session, worked out once.
        self._session_env = (writer.id, writer.share_dir)
        self._io_logs_dir = writer.io_logs_dir
        self._durable_logs = writer.durability == "fsync"
        self._user_ok: dict[str, str | None] = {}
        self._running: dict[str, _Running] = {}
        self._unreported: list[tuple[int, str, Attempt]] = []  # (journal seq, job, result) not yet durable
        self._durable_seq = 0  # every journal line up to this one is durable
        self._syncing_to = 0  # an executor that syncs the journal will make lines up to this one durable
        self._stop: int | None = None
        self._stop_comment = INTERRUPTED
        self._control = control.ControlWatcher(writer.path, clock)
        self._draining = False  # a stop request: finish the running jobs, start no more
        self._paused = False
        #: Why the run ended early: "signal" or "request" (None if it ran to the end).
        self.stopped_by: str | None = None
        # (kill_at, process) of stopped jobs whose leader exited while others in its group live on.
        self._stragglers: list[tuple[float, Process]] = []
        # (kill_at, process) of processes jobs left running, sent SIGTERM, to SIGKILL after the grace period.
        self._leftovers: list[tuple[float, Leftover]] = []
        self._wake_r: int | None = None  # the read end of the pipe a signal writes to, while run() runs

    # -- the loop

    def run(self) -> bool:
        """Run until every job has an outcome or a stop is requested; True if interrupted."""
        if self.executor is None:
            self.executor = self._make_executor()
        wake_r, wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self.executor.watch_fd(wake_r, "wakeup")
        self._wake_r = wake_r
        previous = {}

        def on_signal(signum: int, _frame: Any) -> None:
            if self._stop is None:
                self._stop = signum
                self.stopped_by = "signal"
            try:
                os.write(wake_w, b"\0")
            except OSError:
                pass

        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            previous[signum] = signal.signal(signum, on_signal)
        try:
            ended = False
            while self._stop is None:
                self._obey_control(force=ended)  # a job just ended: a pause asked while it ran holds the next
                if self._stop is not None:
                    break
                if not (self._paused or self._draining):
                    self._hand_out()
                self._commit()
                idle = not self._running and not self._stragglers and not self._leftovers
                if idle and (self._draining or self.scheduler.done()):
                    break
                if idle and self._paused:
                    self._set_paused_flag(True)
                running = len(self._running)
                self._handle(self.executor.poll(self._poll_timeout()))
                ended = len(self._running) < running
                self._enforce_deadlines()
                self.writer.tick()
            if self._stop is not None:
                self._shut_down()
            self.manual.abandon(self)  # a question left open: asked again on resume
            self._end_leftovers()
            self._set_paused_flag(False)
        except (OSError, RunAborted):  # the session cannot be written, or a worker died: no job may go on
            self._stop_after_failure()
            raise
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            os.close(wake_r)
            os.close(wake_w)
            self._wake_r = None
            if self._own_executor and not self.executor.running:
                self.executor.close()
            self.reporter.close()
        return self.stopped_by is not None

    def _make_executor(self) -> Executor:
        if self.dask is not None:
            from plainbox_like.run.dask_executor import DaskExecutor

            return DaskExecutor(
                self.dask, parallel=self._parallel, session_id=self.writer.id, share_dir=self.writer.share_dir,
                clock=self._clock, sync_fd=self.writer.journal_fd if self.writer.durability == "fsync" else None,
                base_env=self.base_env,
            )
        # No more workers than jobs to run (unless templates may add jobs while it runs).
        workers = self._parallel if self.expander is not None else min(self._parallel, self.scheduler.remaining)
        if workers < 2:
            return LocalExecutor(self._clock)
        from plainbox_like.run.workers import WorkerExecutor

        journal_sync = self.writer.journal_sync() if self.writer.durability == "fsync" else None
        return WorkerExecutor(workers, journal_sync=journal_sync, base_env=self.base_env)

    def request_stop(self, signum: int = signal.SIGTERM) -> None:
        """Ask the loop to stop as if interrupted (for callers driving it from Python)."""
        self._stop = signum
        self.stopped_by = "signal"

    def _obey_control(self, force: bool = False) -> None:
        """Act on a stop/pause/continue request left in the session directory (*force*: look now)."""
        request = self._control.poll(force)
        action = request.action if request is not None else None
        if action == control.STOP_NOW:
            self._stop = signal.SIGTERM
            self._stop_comment = STOPPED_BY_REQUEST
            self.stopped_by = "request"
            self._control.done()
        elif action == control.STOP:
            self._draining = True
            self.stopped_by = "request"
            self._release_held()
            self._control.done()
        elif action == control.PAUSE:
            self._paused = True
        elif self._paused:  # continue, or the request file was removed
            self._paused = False
            self._set_paused_flag(False)
            if action == control.CONTINUE:
                self._control.done()
        elif action == control.CONTINUE:
            self._control.done()

    def _set_paused_flag(self, paused: bool) -> None:
        flags = self.writer.state.metadata.flags
        if paused != (FLAG_PAUSED in flags):
            new = [f for f in flags if f != FLAG_PAUSED] + ([FLAG_PAUSED] if paused else [])
            self.writer.update_metadata(flags=new)

    def _poll_timeout(self) -> float:
        timeout = control.CHECK_INTERVAL if (self._paused or self._draining or self.manual.waiting) else 0.5
        now = self._clock()
        for running in self._running.values():
            for moment in (running.deadline, running.kill_at):
                if moment is not None:
                    timeout = min(timeout, max(0.0, moment - now))
        for kill_at, _process in self._stragglers:
            timeout = min(timeout, max(0.0, kill_at - now))
        if self._leftovers:  # look again soon: most go at the SIGTERM
            timeout = min(timeout, 0.05, *(max(0.0, kill_at - now) for kill_at, _ in self._leftovers))
        return timeout

    def _hand_out(self) -> None:
        while self._hand_out_some():  # a question queued while no job runs comes now, not after a poll
            pass

    def _hand_out_some(self) -> bool:
        """Start what may start; True if a job that needs a person was queued and no job runs."""
        if any(running.noreturn for running in self._running.values()):
            return False  # a job expected to end the run runs (or has ended and the machine is going down)
        if self.manual.pending is not None:  # a job that needs a person runs alone
            if self._running:
                return False
            self.manual.step(self)
            if self.manual.pending is not None:
                return False
        to_start, self._again = self._again, []
        while True:
            decision = self.scheduler.next_decision()
            if decision is None:
                break
            if decision.action == "skip":
                self._record(decision.job_id, Attempt(outcome=decision.outcome, skip_reason=decision.skip_reason))
                continue
            job = self.plan.jobs[decision.job_id]
            unmet = unmet_requirement(
                job, self.plan.jobs, self.scheduler.outcomes, self.writer.state.resources,
                self.manifest_entries, self.manifest_answers,
            )
            if unmet is not None:
                self.scheduler.finish(job.id, OUTCOME_SKIPPED_RESOURCE)
                self._record(job.id, Attempt(outcome=OUTCOME_SKIPPED_RESOURCE, skip_reason=unmet))
                continue
            if self.manual.takes(job):
                self.manual.queue(job)  # it starts once the jobs handed out before it have ended
                break
            reason = self._cannot_run(job)
            if reason is not None:
                self.scheduler.finish(job.id, OUTCOME_SKIP)
                self._record(job.id, Attempt(outcome=OUTCOME_SKIP, skip_reason=reason))
                continue
            to_start.append(job)
            if FLAG_NORETURN in job.flags:
                break  # expected to end the run: nothing starts after it
        # Journal every start (with the results before them), make them durable in one sync (or let the
        # executor do it just before each spawn), then spawn.
        for job in to_start:
            if FLAG_NORETURN in job.flags:
                self._tell("restart_expected", job.id)
        starting = [self._prepare(job) for job in to_start]
        if not starting:
            return self.manual.pending is not None and not self._running
        if self.executor.syncs_journal:
            self.writer.write_pending()
            self._syncing_to = starting[-1].start_seq
        else:
            self._sync()
        for running in starting:
            self._spawn(running)
        self._commit()
        return False

    def _sync(self) -> None:
        self.writer.sync()
        self._durable_seq = self.writer.state.journal_seq

    def _commit(self) -> None:
        """Report the results that are durable, making the journal durable first unless a start will."""
        if not self._unreported:
            return
        if self._unreported[-1][0] > max(self._durable_seq, self._syncing_to):
            self._sync()
        durable = self._durable_seq
        while self._unreported and self._unreported[0][0] <= durable:
            _seq, job_id, result = self._unreported.pop(0)
            self.reporter.finished(job_id, result)

    def _record(self, job_id: str, result: Attempt) -> None:
        if result.attempt == 1 and job_id in self.writer.state.results:
            result.attempt = self.writer.state.next_attempt(job_id)
        self.writer.job_finished(job_id, result, durable=False)
        self._unreported.append((self.writer.state.journal_seq, job_id, result))

    # -- what the desk of jobs that need a person (run/manual.py) asks

    def start_for_person(self, job: JobDefinition) -> None:
        """Run the command of a job that needs a person, as any job's (journaled, logged)."""
        running = self._prepare(job)
        self._sync()
        self._spawn(running)

    def record_for_person(self, job_id: str, result: Attempt) -> None:
        """The answer to a job that needs a person: its result, durable before the run moves on."""
        self.scheduler.finish(job_id, result.outcome)
        self._record(job_id, result)
        self._commit()

    def stop_requested(self) -> bool:
        """Whether the run is to stop now (a signal, or a stop request in the control file)."""
        self._obey_control()
        return self._stop is not None or self._draining

    def _cannot_run(self, job: JobDefinition) -> str | None:
        if planning.needs_person(job):
            return f"needs a person (plugin {job.plugin})"
        if job.plugin not in RUNNABLE_PLUGINS:
            return f"plugin {job.plugin!r} is not supported"
        if not job.command:
            return "the job has no command"
        if job.user and job.user != self._me:
            return self._user_problem(job.user)
        return None

    def _user_problem(self, user: str) -> str | None:
        if user not in self._user_ok:
            import subprocess  # only for jobs with a user: field

            try:
                ok = subprocess.run(
                    ["sudo", "-n", "-u", user, "true"], capture_output=True, timeout=10
                ).returncode == 0
            except (OSError, subprocess.TimeoutExpired):
                ok = False
            self._user_ok[user] = None if ok else f"cannot run as user {user!r} (sudo -n -u {user} is not permitted)"
        return self._user_ok[user]

    def _prepare(self, job: JobDefinition) -> _Running:
        attempt = self.writer.state.next_attempt(job.id)
        stem = self.writer.reserve_log(job.id, attempt)
        log_name = f"{IO_LOGS}/{stem}{RECORD_SUFFIX}"
        started = self.writer.job_started(job.id, attempt, log_name, durable=False, noreturn=FLAG_NORETURN in job.flags)
        running = _Running(
            job=job,
            attempt=attempt,
            started_wall=started,
            log_stem=stem,
            log_name=log_name,
            start_seq=self.writer.state.journal_seq,
        )
        self._running[job.id] = running
        return running

    def _spawn(self, running: _Running) -> None:
        job = running.job
        argv: tuple[str, ...] = (self._shell, "-c", job.command or "")
        if job.user and job.user != self._me:
            argv = ("/usr/bin/env", "sudo", "-n", "--preserve-env", "-u", job.user, "--", *argv)
        provider = self.providers.of_job(job)
        bin_dirs = self.providers.bin_dirs(provider.namespace) if provider is not None else ()
        env = jobenv.job_env(self.base_env, job, provider, bin_dirs, self.launcher_env)
        env = job_environment(env, job, *self._session_env)
        # The executor makes the directory and removes it (in a worker with -j N: not this process's time).
        other_user = bool(job.user and job.user != self._me)
        temp_cwd = jobenv.temp_cwd(job, self._session_env[0], running.attempt, shared=other_user)
        spec = ProcessSpec(
            job.id,
            argv,
            env,
            log=os.path.join(self._io_logs_dir, running.log_stem),
            durable_log=self._durable_logs,
            marker=((SESSION_ENV, self._session_env[0]), (JOB_ENV, job.id)),
            temp_cwd=temp_cwd,
        )
        # A job with a timeout needs its exact start at once. Otherwise workers tell a short job's start with
        # its exit (one wake-up, not two), while a local executor tells it at once: this process has a core
        # of its own while the job runs, and handling the start after the exit would delay the next job.
        at_once = bool(job.timeout) or isinstance(self.executor, LocalExecutor)
        try:
            running.process = self.executor.start(spec, report_at_once=at_once)
        except OSError as exc:  # it could not be spawned (a LogError, for its io-log, ends the run)
            self._cannot_start(running, str(exc))

    def _cannot_start(self, running: _Running, error: str) -> None:
        job = running.job
        del self._running[job.id]
        self.writer.open_log(running.log_stem, clock=self._clock).close()
        self.scheduler.finish(job.id, OUTCOME_FAIL)
        self.manual.command_failed(job.id)
        self._record(job.id, self._attempt(running, OUTCOME_FAIL, None, 0.0, f"cannot start: {error}"))

    def _started(self, running: _Running) -> None:
        """Its process runs, so its start (and every line before it) is durable."""
        self._durable_seq = max(self._durable_seq, running.start_seq)
        if running.job.timeout:
            running.deadline = running.process.started + running.job.timeout
        self.reporter.started(running.job.id, running.attempt)

    def _handle(self, events: list) -> None:
        for event in events:
            running = self._running[event.process.spec.key]
            if isinstance(event, Started):
                self._started(running)
            elif isinstance(event, Exited):
                self._finish(running, event)
            elif isinstance(event, Lost):
                self._lost(running, event)
            else:  # Failed: a worker could not spawn it
                self._cannot_start(running, event.error)

    def _tell(self, what: str, job_id: str) -> None:
        """Call the reporter's optional *what* method (``restart_expected``, ``restart_awaited``) with *job_id*."""
        method = getattr(self.reporter, what, None)
        if method is not None:
            method(job_id)

    def _holds(self, running: _Running, event: Exited) -> bool:
        """Whether a job's end is a noreturn job's that did what it should: the run waits for the restart."""
        code = event.returncode
        ended_well = code == 0 or (code < 0 and -code in SHUTDOWN_SIGNALS)
        waiting = self._stop is None and not self._draining
        return running.noreturn and ended_well and waiting and not running.why_stopped

    def _release_held(self) -> None:
        """Record the noreturn jobs the run was waiting on, from their exits (the run stops instead)."""
        for running in [r for r in self._running.values() if r.held is not None]:
            event, running.held = running.held, None
            self._finish(running, event)

    def _finish(self, running: _Running, event: Exited) -> None:
        job = running.job
        if running.held is None and self._holds(running, event):
            # As in Checkbox: a noreturn job's end is not the end of it; the machine is about to restart. Its
            # processes (the restart in progress) are left alone, nothing more starts, nothing is recorded.
            running.held = event
            running.deadline = running.kill_at = None
            self._tell("restart_awaited", job.id)
            return
        del self._running[job.id]
        if running.unrecorded:
            # Stopped with the runner by a shutdown: the restart came. The start stays in the journal and
            # resume records the job as after a restart; its processes go with the runner's.
            if running.kill_at is not None and group_alive(running.process.pgid):
                self._stragglers.append((running.kill_at, running.process))
            return
        code = event.returncode
        duration = event.when - running.process.started
        if running.timed_out_at is not None and event.when < running.timed_out_at:
            running.why_stopped = None  # it ended before its deadline, however late the runner saw it
        if running.why_stopped:
            stopped = running.why_stopped in (INTERRUPTED, STOPPED_BY_REQUEST)
            outcome, comments = (OUTCOME_CRASH if stopped else OUTCOME_FAIL), running.why_stopped
        elif code == 0:
            outcome, comments = OUTCOME_PASS, None
        elif code > 0:
            outcome, comments = OUTCOME_FAIL, None
        else:
            outcome, comments = OUTCOME_CRASH, f"killed by signal {signal_name(-code)}"
        if running.kill_at is not None and group_alive(running.process.pgid):
            # Told to stop, the leader is gone but its group is not: SIGKILL it after the grace period.
            self._stragglers.append((running.kill_at, running.process))
        leftovers = self._take_leftovers(running, getattr(event, "leftovers", ()))
        new_jobs: list[JobDefinition] = []
        if job.plugin == "resource" and outcome in RESOURCE_RAN_OUTCOMES:
            # As in Checkbox, a resource job that failed still gives the records it printed.
            records = self._resource_records(running)
            self.writer.resource_recorded(job.id, records, durable=False)
            if self.expander is not None and records:
                new_jobs = self.expander.expand(job.id, records, self.plan.jobs)
        if new_jobs:
            try:
                self.scheduler.extend(new_jobs, order=self.expander.run_order())
            except PlainboxLikeError as exc:  # a dependency cycle among the new jobs
                self.expander.warnings.append(f"jobs made from resource {job.id} not added: {exc}")
            else:
                jobs = {new.id: new.checksum for new in new_jobs}
                self.writer.record({"op": "plan", "jobs": jobs, "append": True}, durable=False)
                self._remember_metadata(new_jobs)
                added = getattr(self.reporter, "added", None)
                if added is not None:
                    added(len(jobs))
        attempt = self._attempt(running, outcome, code, duration, comments)
        attempt.leftover_processes = leftovers
        attempt.leftover_files = tuple(event.leftover_files)
        stopped = running.why_stopped in (INTERRUPTED, STOPPED_BY_REQUEST)
        if self.manual.command_ended(self, job.id, attempt, stopped):
            return  # the person's answer decides its outcome
        self.scheduler.finish(job.id, outcome)
        self._record(job.id, attempt)

    def _lost(self, running: _Running, event: Lost) -> None:
        """Its machine (or the way there) was lost: ``crash`` with the reason; again as a new attempt if
        ``--retries`` allows (the job stays running for the scheduler meanwhile)."""
        job = running.job
        del self._running[job.id]
        attempt = self._attempt(running, OUTCOME_CRASH, None, event.when - running.process.started, event.reason)
        self._record(job.id, attempt)
        if event.retry and self._retried.get(job.id, 0) < self.retries and not (self._draining or self._stop):
            self._retried[job.id] = self._retried.get(job.id, 0) + 1
            self._again.append(job)
        else:
            self.scheduler.finish(job.id, OUTCOME_CRASH)

    def _take_leftovers(self, running: _Running, found: tuple[Leftover, ...]) -> LeftoverProcesses | None:
        """What a job left running when it ended, for its result; SIGTERM them unless it keeps them.

        A job flagged ``leaves-processes`` keeps them, unless it was stopped
        (timeout, stop --now, interrupted): then, as for every other job, they
        get SIGTERM now and SIGKILL after the grace period.
        """
        if not found:
            return None
        kept = FLAG_LEAVES_PROCESSES in running.job.flags and not running.why_stopped
        if not kept and getattr(self.executor, "remote", False):  # they run on another machine: ended there
            self.executor.end_leftovers(running.process, found, self.kill_grace)
        elif not kept:
            kill_at = self._clock() + self.kill_grace
            for leftover in found:
                signal_leftover(leftover, signal.SIGTERM)
                self._leftovers.append((kill_at, leftover))
        listed = sorted(found, key=lambda leftover: leftover.pid)[:LEFTOVERS_LISTED]
        return LeftoverProcesses(
            count=len(found),
            kept=kept,
            processes=[LeftoverProcess(pid=p.pid, command=p.command[:LEFTOVER_COMMAND_MAX]) for p in listed],
        )

    def _end_leftovers(self) -> None:
        """The run ends: stop every process of the session's jobs still running, but those kept on purpose.

        Found by the session id in their environment, as ``resume`` finds a dead
        runner's: also those that escaped the look at their job's end.
        """
        session_id = self._session_env[0]
        keep = {job_id for job_id, job in self.plan.jobs.items() if FLAG_LEAVES_PROCESSES in job.flags}
        found = [
            leftover for leftover in find_marked({SESSION_ENV: session_id})
            if process_env(leftover.pid).get(JOB_ENV) not in keep
        ]
        pending = [leftover for _kill_at, leftover in self._leftovers] + found
        self._leftovers.clear()
        kill_leftovers(pending, self.kill_grace)

    def _remember_metadata(self, jobs: list[JobDefinition]) -> None:
        """Keep the category and certification status of jobs made from templates with the run's."""
        blob = self.writer.state.metadata.app_blob
        metadata = RunMetadata.from_app_blob(blob)
        if metadata is None:  # a session made without it (the Python API, older versions)
            return
        updated = metadata.with_jobs(jobs)
        if updated != metadata:
            self.writer.update_metadata(durable=False, app_blob=updated.to_app_blob(blob))

    def _resource_records(self, running: _Running) -> list[dict[str, str]]:
        stem = running.log_name[: -len(RECORD_SUFFIX)] if running.log_name.endswith(RECORD_SUFFIX) else running.log_name
        limit = limits.MAX_RESOURCE_OUTPUT
        try:
            with open_regular(os.path.join(self.writer.path, stem + ".stdout")) as handle:
                data = handle.read(limit + 1)
        except FileNotFoundError:  # the job printed nothing
            return []
        too_long = len(data) > limit
        if too_long:  # only whole records before the limit: up to the last blank line within it
            data = data[: data.rfind(b"\n\n", 0, limit) + 1]
        records, problem = read_records(data.decode("utf-8", errors="replace"))
        if problem is not None:
            self.warnings.append(
                f"resource job {running.job.id} printed output that is not RFC 822 ({problem}): "
                f"kept the {len(records)} record(s) before it"
            )
        elif too_long:
            self.warnings.append(
                f"resource job {running.job.id} printed more than {format_size(limit)}: "
                f"kept the {len(records)} record(s) before that, left out the rest"
            )
        return records

    def _attempt(self, running: _Running, outcome: str, code: int | None, duration: float, comments: str | None) -> Attempt:
        return Attempt(
            outcome=outcome,
            return_code=code,
            execution_duration=float(duration),
            comments=comments,
            io_log_filename=running.log_name,
            attempt=running.attempt,
            started=running.started_wall,
            ran_on=running.process.placement if running.process is not None else None,
        )

    def _enforce_deadlines(self) -> None:
        now = self._clock()
        if any(r.deadline is not None and now >= r.deadline for r in self._running.values()):
            # Woken late (stopped, starved, busy), the runner may find both a deadline passed and the job
            # already ended: take the exits first, so a job that ended in time is not recorded as timed out.
            self._handle(self.executor.poll(0))
        for item in list(self._leftovers):
            kill_at, leftover = item
            alive = still_running(leftover)
            if alive and now >= kill_at:
                signal_leftover(leftover, signal.SIGKILL)
            if not alive or now >= kill_at:
                self._leftovers.remove(item)
        for item in list(self._stragglers):
            kill_at, process = item
            alive = group_alive(process.pgid)
            if alive and now >= kill_at:
                self.executor.signal(process, signal.SIGKILL)
            if not alive or now >= kill_at:
                self._stragglers.remove(item)
        for running in self._running.values():
            if running.process is None:
                continue
            if running.kill_at is not None and now >= running.kill_at:
                self.executor.signal(running.process, signal.SIGKILL)
                running.kill_at = None
            elif running.deadline is not None and now >= running.deadline:
                running.why_stopped = f"timed out after {running.job.timeout:g} s"
                running.timed_out_at = running.deadline
                self._terminate(running, now)

    def _terminate(self, running: _Running, now: float) -> None:
        self.executor.signal(running.process, signal.SIGTERM)
        running.deadline = None
        running.kill_at = now + self.kill_grace

    def _stop_after_failure(self) -> None:
        """Stop the running jobs as an interruption does, recording them while that works; else kill them.

        A job killed without a result stays running in the journal, as after a
        crash of the runner: ``resume`` records it as a crash.
        """
        for job_id in [job_id for job_id, running in self._running.items() if running.process is None]:
            del self._running[job_id]  # its start was being journaled: it never ran
        try:
            self._shut_down()
            return
        except (OSError, RunAborted):
            pass
        for running in self._running.values():
            process = running.process
            if process is not None and process.pgid is not None:
                try:
                    os.killpg(process.pgid, signal.SIGKILL)
                except OSError:
                    pass

    def _drain_wakeups(self) -> None:
        if self._wake_r is None:
            return
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def _shut_down(self) -> None:
        """Stop every running job (SIGTERM, SIGKILL after the grace period) and record it as interrupted.

        A noreturn job, when the runner was stopped by a shutdown's signal, is
        stopped too but gets no result: its restart came (see :data:`SHUTDOWN_SIGNALS`).
        """
        now = self._clock()
        restart = self.stopped_by == "signal" and self._stop in SHUTDOWN_SIGNALS
        for running in list(self._running.values()):
            running.why_stopped = self._stop_comment
            running.unrecorded = restart and running.noreturn
            if running.held is not None:
                if running.unrecorded:
                    del self._running[running.job.id]
                else:
                    event, running.held = running.held, None
                    self._finish(running, event)
            elif running.process is not None:
                self._terminate(running, now)
                running.kill_at = now + min(self.kill_grace, 1.0)
        give_up = now + self.kill_grace + 5.0
        while (self._running or self._stragglers or self._leftovers) and self._clock() < give_up:
            self._drain_wakeups()  # else the signal's wake-up byte would make every poll return at once
            self._handle(self.executor.poll(self._poll_timeout()))
            self._enforce_deadlines()
        self._commit()

