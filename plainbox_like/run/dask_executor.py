"""Running a batch's jobs on a Dask cluster (``run --dask ADDRESS``): the coordinator side of the executor.

The session stays on this machine (the coordinator); only the jobs' processes run on Dask workers. Each job
is one Dask task, :func:`plainbox_like.run.dask_tasks.run_job`, which spawns the job's command line there
as the local executor would and returns its exit status and timing. Three channels come back:

- the task announces the job's start (pid, worker address, host name) as a Dask event on the run's topic
  (no round trip: it rides on the worker's batched stream to the scheduler, which forwards it here);
- a job that runs longer than :data:`~plainbox_like.run.dask_tasks.STREAM_AFTER` streams its output in
  batches through the run's Dask queue, bounded (:data:`QUEUE_SLOTS` batches), read by one thread here;
  what waits is spooled to a file on the worker, so memory stays bounded on both sides;
- the task's result: exit status, duration and leftovers measured on the worker, and the output of a job
  too short to stream.

Output is written to the job's io-log here, with the delays measured on the worker, so ``log --follow``
and ``replay`` work as for local jobs. The batch loop sees the events of every executor
(:class:`~plainbox_like.run.executors.Started`, :class:`~plainbox_like.run.executors.Exited`) and one
more, :class:`~plainbox_like.run.executors.Lost`: a job whose worker died ("worker lost: ADDRESS"), or
every running job once the scheduler cannot be reached for :data:`SCHEDULER_GRACE` seconds ("scheduler
lost", after which :meth:`DaskExecutor.poll` raises :class:`~plainbox_like.errors.SchedulerLost`).

The scheduler is told not to run a task again when its worker dies (a job must not run twice without
asking), a worker plugin kills the processes of a task that is cancelled or whose client went away (a
coordinator killed), and a new executor for a session first kills whatever jobs of that session still run
on the workers (what a killed coordinator left).
"""

from __future__ import annotations

import collections
import logging
import math
import os
import queue
import re
import secrets
import selectors
import threading
import time
import warnings
from typing import Any, Callable

import attrs

from plainbox_like.errors import LogError, PlainboxLikeError, SchedulerLost, one_line
from plainbox_like.run.executors import Exited, Leftover, Lost, Output, Process, ProcessSpec, Started
from plainbox_like.run.workers import Failed
from plainbox_like.store.iolog import RecordWriter, open_reserved_log
from plainbox_like.store.model import Placement

#: The one-line error of ``--dask`` without Dask installed.
DASK_MISSING = "--dask needs Dask's distributed package, which is not installed: pip install 'plainbox-like[dask]'"
#: Seconds the scheduler may be unreachable before the run stops with its running jobs ``scheduler lost``.
SCHEDULER_GRACE = 3.0
#: Seconds to wait for the scheduler when connecting.
CONNECT_TIMEOUT = 10.0
#: Output batches the run's queue holds on the scheduler before the workers' senders wait.
QUEUE_SLOTS = 16
#: Output batches received but not yet written here before the receiving thread waits.
INBOX_SLOTS = 16
#: Tasks in Dask at once per worker thread of the cluster; more jobs in flight wait here (counted again every
#: THREADS_REFRESH seconds: workers come and go).
WINDOW_PER_THREAD = 2
THREADS_REFRESH = 5.0
#: The comment of a job whose worker died, followed by the worker's address.
WORKER_LOST = "worker lost"
#: The comment of the jobs running when the scheduler was lost.
SCHEDULER_LOST = "scheduler lost"
#: The file in the session-share directory a worker reads to tell it shares the coordinator's filesystem.
SHARE_MARKER = ".plainbox-like-dask-share"
#: ``local:W`` or ``local:WxT`` (T threads per worker; by default enough for ``-j`` jobs in flight).
_LOCAL = re.compile(r"local:([1-9][0-9]*)(?:x([1-9][0-9]*))?")
_SCHEDULER = re.compile(r"(?:(tcp|tls|ws|wss|ucx)://)?(?:[^\s/:\[\]]+|\[[0-9a-fA-F:.]+\]):[0-9]{1,5}")


#: Functions the scheduler and workers run before they are known to have this program: sent by value.
_NO_RERUNS = """
def no_reruns(dask_scheduler):
    # A task whose worker died is not run again (allowed-failures 0): a job must not run twice unasked.
    previous = dask_scheduler.allowed_failures
    dask_scheduler.allowed_failures = 0
    return previous
"""
_CAN_RUN = """
def can_run():
    try:
        import plainbox_like.run.dask_tasks
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return True
"""


def _by_value(source: str, name: str) -> Callable[..., Any]:
    """The function *name* defined by *source* as if in ``__main__``: Dask pickles it whole, so the
    scheduler or a worker runs it without importing this program."""
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(source, f"<plainbox-like {name}>", "exec"), namespace)  # noqa: S102 - our own constant source
    return namespace[name]


def require_dask() -> None:
    """Raise the one-line :data:`DASK_MISSING` error if Dask's distributed package cannot be imported."""
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise PlainboxLikeError(DASK_MISSING) from None


def check_address(text: str) -> str:
    """*text* if it is a ``--dask`` value (``local:W``, ``local:WxT`` or a scheduler address), else a one-line error."""
    if _LOCAL.fullmatch(text) or (not text.startswith("local") and _SCHEDULER.fullmatch(text)):
        return text
    raise PlainboxLikeError(
        f"--dask {text}: not a scheduler address (tcp://HOST:PORT) or local:W (W worker processes on this machine) "
        f"or local:WxT (T threads each)"
    )


@attrs.define(eq=False)
class _Task:
    """A job handed to the cluster: its process, its Dask future and what came back so far."""

    process: Process
    key: str
    request: dict[str, Any]
    future: Any = None
    address: str | None = None  # the worker it runs on, once its start is known
    announced: bool = False  # its Started was reported
    received: int = 0  # output batches written
    result: dict[str, Any] | None = None
    signalled: int | None = None  # a signal asked before its start was known (the task was cancelled)
    asked: int | None = None  # the last signal sent to its job on its worker
    in_dask: bool = False  # handed to Dask (else held here until the cluster has room for it)


class _Cancelled(Exception):
    """A task stopped before it was submitted."""


class _SyncFailed(Exception):
    """The journal could not be made durable before a task was submitted (it was not): *error* says why."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


class DaskExecutor:
    """Runs each spec as a task on a Dask cluster (*address*: a scheduler, or ``local:W[xT]``).

    With *sync_fd* (the session's journal), the journal is made durable before each task is submitted
    (in the submitting thread), so the runner does not sync before :meth:`start`.
    """

    #: Its jobs run on other machines: their leftover processes are ended there (:meth:`end_leftovers`).
    remote = True

    def __init__(
        self,
        address: str,
        *,
        parallel: int,
        session_id: str,
        share_dir: str,
        clock: Callable[[], float] = time.monotonic,
        grace: float = SCHEDULER_GRACE,
        sync_fd: int | None = None,
        base_env: dict[str, str] | None = None,
    ) -> None:
        require_dask()
        import dask
        import distributed

        from plainbox_like.run import dask_tasks

        self._tasks_module = dask_tasks
        self._clock = clock
        self._grace = grace
        self._session_id = session_id
        self._address = check_address(address)
        self._cluster = None
        for name in ("distributed", "tornado"):
            logging.getLogger(name).setLevel(logging.ERROR)  # what matters is told in the session and on exit
        local = _LOCAL.fullmatch(address)
        try:
            with dask.config.set({"distributed.scheduler.allowed-failures": 0}), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # e.g. its HTTP port taken by another cluster: another is used
                if local:
                    workers = int(local.group(1))
                    threads = int(local.group(2)) if local.group(2) else max(1, math.ceil(parallel / workers))
                    self._cluster = distributed.LocalCluster(
                        n_workers=workers, threads_per_worker=threads, processes=True, host="127.0.0.1",
                        dashboard_address=None, silence_logs=logging.ERROR,
                    )
                    self.client = distributed.Client(self._cluster)
                else:
                    self.client = distributed.Client(address, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError, ValueError) as exc:
            raise SchedulerLost(f"--dask {address}: cannot reach the scheduler ({one_line(exc)})") from None
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._notices: collections.deque[tuple] = collections.deque()  # starts and results, from Dask's threads
        try:
            self._check_workers()
            self.client.run_on_scheduler(_by_value(_NO_RERUNS, "no_reruns"))
            self.client.register_plugin(dask_tasks.JobReaper(), name=dask_tasks.JobReaper.name)
            # What a killed coordinator of this session left running on the workers goes first.
            self.client.run(dask_tasks.kill_marked, session_id, on_error="ignore")
            self._prefix = f"plainbox-like-{secrets.token_hex(6)}"
            self._base_env = dict(os.environ if base_env is None else base_env)
            self.client.register_plugin(dask_tasks.RunEnvironment(self._base_env), name=self._prefix)
            self._queue = distributed.Queue(self._prefix, client=self.client, maxsize=QUEUE_SLOTS)
            self._share_dir = share_dir
            self._share_token = secrets.token_hex(16)
            self._write_share_marker()
            self._ended: set[str] = set()
            self.client.subscribe_topic(self._prefix, self._on_event)
        except BaseException as exc:
            self._close_client()
            self._selector.close()
            os.close(self._wake_r)
            os.close(self._wake_w)
            if isinstance(exc, Exception) and not isinstance(exc, PlainboxLikeError):
                # A worker with another version of this program, a scheduler going away...
                raise SchedulerLost(f"--dask {address}: cannot set up the cluster for the run ({one_line(exc)})") from None
            raise
        self._outputs: queue.Queue = queue.Queue(INBOX_SLOTS)  # output batches, from the receiving thread
        self._tasks: dict[str, _Task] = {}  # by task key
        self._by_job: dict[str, _Task] = {}  # by the spec's key (the job id)
        self._count = 0
        self._held: collections.deque[_Task] = collections.deque()  # submitted here, not to Dask yet
        self._in_dask = 0
        self._threads = 1
        self._threads_at = -math.inf  # when the cluster's threads were counted
        self._unreachable_since: float | None = None
        self._lost: str | None = None
        self._closing = threading.Event()
        self._receiver = threading.Thread(target=self._receive, name="plainbox-like-dask-receiver", daemon=True)
        self._receiver.start()
        self._sync_fd = sync_fd
        self.syncs_journal = sync_fd is not None
        self._lock = threading.Lock()
        self._to_submit: queue.SimpleQueue = queue.SimpleQueue()
        self._submitter = threading.Thread(target=self._submitting, name="plainbox-like-dask-submitter", daemon=True)
        self._submitter.start()

    def _check_workers(self) -> None:
        """Fail with one line if a worker cannot import this program (it is not installed there)."""
        found = self.client.run(_by_value(_CAN_RUN, "can_run"), on_error="return")
        for address, answer in sorted(found.items()):
            if answer is not True:
                raise SchedulerLost(
                    f"--dask {self._address}: worker {address} cannot run plainbox-like's tasks ({answer!r:.200}); "
                    f"install plainbox-like on the workers (the same version, with its dask extra)"
                )

    # -- the coordinator's side of the channels (run in Dask's threads)

    def _write_share_marker(self) -> None:
        path = os.path.join(self._share_dir, SHARE_MARKER)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(self._share_token)

    def _notify(self, notice: tuple) -> None:
        self._notices.append(notice)
        try:
            os.write(self._wake_w, b"\0")
        except OSError:  # full (it will be read) or closed (we are closing)
            pass

    def _on_event(self, event: tuple[float, dict[str, Any]]) -> None:
        """A task's start or end, as it announced it (in the client's event loop)."""
        message = event[1]
        if "end" in message:  # its result, without a round trip to fetch it
            self._ended.add(message["task"])
            self._notify(("done", message["task"], message["end"], None))
        else:
            self._notify(("start", message, self._clock()))

    def _on_done(self, future: Any) -> None:
        """A task's future is done (in Dask's callback thread): its end event came first, unless it failed."""
        if future.key in self._ended:
            self._ended.discard(future.key)
            return
        try:
            result = future.result(timeout=60)
        except BaseException as exc:  # noqa: BLE001 - told to poll(): lost worker, cancelled, lost scheduler
            self._notify(("done", future.key, None, exc))
        else:
            self._notify(("done", future.key, result, None))

    def _receive(self) -> None:
        """Move output batches from the run's queue to :attr:`_outputs` (waits while that is full)."""
        while not self._closing.is_set():
            try:  # no timeout: the scheduler would log each one; close() puts None to end the wait
                items = [self._queue.get()]
                # Then what waits, counted first: batch=True takes what the senders put meanwhile too, without
                # end while they keep up (this thread is the only reader: that many are there).
                waiting = min(self._queue.qsize(), QUEUE_SLOTS)
                if waiting:
                    items += self._queue.get(batch=waiting)
            except Exception:  # noqa: BLE001 - the scheduler out of reach (poll() tells)
                if self._closing.wait(0.5):
                    return
                continue
            for item in items:
                if item is None:
                    return
                while not self._closing.is_set():
                    try:
                        self._outputs.put(item, timeout=0.5)
                        break
                    except queue.Full:
                        continue
                self._notify(("output",))

    # -- the executor interface

    @property
    def running(self) -> list[Process]:
        return [task.process for task in self._tasks.values()]

    def watch_fd(self, fd: int, tag: object) -> None:
        """Also wake :meth:`poll` when *fd* is readable."""
        self._selector.register(fd, selectors.EVENT_READ, tag)

    def start(self, spec: ProcessSpec, report_at_once: bool = False) -> Process:
        """Submit *spec* as a task; its :class:`Started` follows once it runs on a worker.

        Its io-log is created here when it starts there (a run may have thousands of jobs queued on the
        cluster: they hold no files). Raises :class:`SchedulerLost` once the scheduler was lost.
        """
        if self._lost is not None:
            raise SchedulerLost(f"{SCHEDULER_LOST}: {self._address}")
        process = Process(spec=attrs.evolve(spec, env={}))  # the request has what it needs of the environment
        request = {
            "key": spec.key,
            "argv": list(spec.argv),
            "run": self._prefix,
            "env": {name: value for name, value in spec.env.items() if self._base_env.get(name) != value},
            "env_removed": [name for name in self._base_env if name not in spec.env],
            "marker": [list(item) for item in spec.marker],
            "temp_cwd": spec.temp_cwd,  # made and removed on the worker
            "cwd": spec.cwd or os.getcwd(),  # else it runs in this directory, if the worker has it
            "share": self._share_dir,
            "share_marker": SHARE_MARKER,
            "share_token": self._share_token,
            "session": self._session_id,
            "queue": self._prefix,
            "topic": self._prefix,
        }
        self._submit(_Task(process=process, key="", request=request))
        return process

    def _submit(self, task: _Task) -> None:
        """Queue *task* here; :meth:`_release` hands it to Dask when the cluster has room for it."""
        self._count += 1
        task.key = f"{self._prefix}-{self._count}"
        task.request["task"] = task.key
        self._tasks[task.key] = task
        self._by_job[task.process.spec.key] = task
        self._held.append(task)
        self._release()

    def _release(self) -> None:
        """Hand held tasks to the submitting thread, up to :data:`WINDOW_PER_THREAD` per worker thread of the
        cluster in Dask at once (thousands of jobs queued cost little here, much more as Dask tasks). That
        thread makes the journal durable (the jobs' starts are in it) and submits them: neither holds up
        this thread, which has the other jobs' events to handle."""
        now = self._clock()
        if now - self._threads_at > THREADS_REFRESH:
            self._threads_at = now
            try:
                self._threads = max(1, sum(self.client.nthreads().values()))
            except Exception:  # noqa: BLE001 - the scheduler out of reach: poll() tells
                pass
        while self._held and self._in_dask < self._threads * WINDOW_PER_THREAD:
            task = self._held.popleft()
            if self._tasks.get(task.key) is not task:
                continue  # forgotten meanwhile
            task.in_dask = True
            self._in_dask += 1
            self._to_submit.put(task)

    def _submitting(self) -> None:
        """The submitting thread: sync, then submit, in the order the jobs were started (one sync for all
        the jobs waiting: their starts are all in the journal already)."""
        while True:
            tasks = [self._to_submit.get()]
            while not self._to_submit.empty():
                tasks.append(self._to_submit.get())
            if self._sync_fd is not None:
                try:
                    os.fdatasync(self._sync_fd)
                except OSError as exc:
                    for task in tasks:
                        if task is not None:
                            self._notify(("done", task.key, None, _SyncFailed(exc)))
                    tasks = [task for task in tasks if task is None]
            for task in tasks:
                if task is None:
                    return
                self._submit_now(task)

    def _submit_now(self, task: _Task) -> None:
        with self._lock:
            if task.signalled is not None:  # stopped before it was submitted: it never runs
                self._notify(("done", task.key, None, _Cancelled()))
                return
            try:
                task.future = self.client.submit(self._tasks_module.run_job, task.request, key=task.key, pure=False)
            except Exception as exc:  # noqa: BLE001 - the scheduler went away: poll() tells
                self._notify(("done", task.key, None, exc))
                return
        task.future.add_done_callback(self._on_done)

    def poll(self, timeout: float | None) -> list[Started | Output | Exited | Failed | Lost]:
        """Wait up to *timeout* seconds (None: until something happens) for starts, output and ends."""
        events: list[Any] = []
        if self._lost is not None:  # the scheduler is gone: what still runs is lost with it
            for task in list(self._tasks.values()):
                self._lose(task, SCHEDULER_LOST, events, retry=False)
            return events
        if self._notices or not self._outputs.empty():
            timeout = 0
        elif self._tasks or timeout is None:
            timeout = 0.5 if timeout is None else min(timeout, 0.5)  # look at the scheduler now and then
        self._selector.select(timeout)
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        while True:
            try:
                self._output(self._outputs.get_nowait(), events)
            except queue.Empty:
                break
        while self._notices:
            notice = self._notices.popleft()
            if notice[0] == "start":
                self._started(notice[1], notice[2], events)
            elif notice[0] == "done":
                self._done(*notice[1:], events)
        for task in [t for t in self._tasks.values() if t.result is not None and t.received >= t.result["sent"]]:
            self._exited(task, events)
        self._release()
        self._watch_scheduler()
        return events

    def _watch_scheduler(self) -> None:
        if self.client.status == "running":
            self._unreachable_since = None
            return
        now = self._clock()
        if self._unreachable_since is None:
            self._unreachable_since = now
        elif now - self._unreachable_since >= self._grace:
            self._lost = SCHEDULER_LOST
            raise SchedulerLost(f"{SCHEDULER_LOST}: {self._address} unreachable for {self._grace:g} s")

    def _started(self, info: dict[str, Any], arrived: float, events: list) -> None:
        task = self._tasks.get(info.get("task"))
        if task is None or task.announced:
            return
        process = task.process
        task.address = info["address"]
        process.pid = info["pid"]
        process.started = arrived - info["age"]
        process.placement = Placement(info["address"], info["host"], info.get("share"), bool(info.get("shared")))
        task.announced = True
        self._open_log(process)  # `log --follow` finds it from now on
        events.append(Started(process))

    def _output(self, item: tuple[str, int, list], events: list) -> None:
        key, _seq, batch = item
        task = self._tasks.get(key)
        if task is None:
            return
        self._write(task, batch, events)
        task.received += 1

    def _open_log(self, process: Process) -> RecordWriter | None:
        """The job's io-log, created at its first use (None if its spec has none)."""
        spec = process.spec
        if process.log is None and spec.log is not None:
            try:
                fd = open_reserved_log(os.path.dirname(spec.log), os.path.basename(spec.log))
                # Times are the worker's, in seconds since the job began: the delays are measured there.
                process.log = RecordWriter(spec.log, started=0.0, record_fd=fd)
            except OSError as exc:
                self.signal(process, 9)
                raise LogError(f"cannot create the io-log of job {spec.key}: {exc}") from None
        return process.log

    def _close_log(self, process: Process, durable: bool = False) -> None:
        if self._open_log(process) is not None:
            process.log.close(durable=durable)

    def _write(self, task: _Task, records: list, events: list) -> None:
        process = task.process
        if self._open_log(process) is None:
            base = process.started if process.started is not None else self._clock()
            events.extend(Output(process, stream, data, base + at) for at, stream, data in records)
            return
        try:
            for at, stream, data in records:
                process.log.write(stream, data, at)
            if records:
                process.log.flush(records[-1][0])
        except OSError as exc:
            self.signal(process, 9)
            raise LogError(f"cannot write the io-log of job {process.spec.key}: {exc.strerror or exc}") from None

    def _done(self, key: str, result: dict[str, Any] | None, error: BaseException | None, events: list) -> None:
        task = self._tasks.get(key)
        if task is None:
            return
        if error is None:
            if "failed" in result:
                self._forget(task)
                self._close_log(task.process)
                events.append(Failed(task.process, f"on worker {result['address']}: {result['failed']}"))
                return
            task.result = result
            return
        if isinstance(error, _SyncFailed):  # the session cannot be written: the run stops, as locally
            raise error.error
        name = type(error).__name__
        if name == "KilledWorker":
            address = getattr(error, "last_worker", None)
            address = task.address or getattr(address, "address", None) or str(address or "unknown")
            self._clean_up_after(task)
            if task.announced:
                self._lose(task, f"{WORKER_LOST}: {address}", events, retry=True)
            else:  # it never started (or its start was lost with the worker, and it is gone now): again
                self._forget(task)
                self._submit(task)
            return
        # Stopped before its start was known, or its task failed after its job was sent a signal (a stop, a
        # timeout: the task can fail as the run winds down around it): the job ended by that signal.
        if task.signalled is not None or task.asked is not None or isinstance(error, _Cancelled):
            if task.process.started is None:
                task.process.started = self._clock()
            self._forget(task)
            self._close_log(task.process)
            events.append(Exited(task.process, -(task.signalled or task.asked or 15), self._clock()))
            return
        if self.client.status != "running":
            return  # the scheduler is out of reach: _watch_scheduler decides
        self._lose(task, f"the Dask task failed ({name}: {error})"[:500], events, retry=False)

    def _clean_up_after(self, task: _Task) -> None:
        """A worker died: kill what its job left on the machines of the others (an orphan on a shared
        machine), before the job may run again (the job id marks both)."""
        try:
            self.client.run(self._tasks_module.kill_marked, self._session_id, task.process.spec.key, on_error="ignore")
        except Exception:  # noqa: BLE001 - the scheduler is going too: poll() tells
            pass

    def _forget(self, task: _Task) -> None:
        if task.in_dask:
            task.in_dask = False
            self._in_dask -= 1
        self._tasks.pop(task.key, None)
        if self._by_job.get(task.process.spec.key) is task:
            del self._by_job[task.process.spec.key]

    def _lose(self, task: _Task, reason: str, events: list, retry: bool) -> None:
        self._forget(task)
        process = task.process
        now = self._clock()
        if process.started is None:
            process.started = now
        self._close_log(process)
        events.append(Lost(process, reason, now, retry))

    def _exited(self, task: _Task, events: list) -> None:
        result = task.result
        process = task.process
        self._forget(task)
        self._write(task, result["records"], events)
        self._close_log(process, durable=process.spec.durable_log)
        if not task.announced:
            process.pid = result["pid"]
            process.started = self._clock() - result["duration"]
            process.placement = Placement(result["address"], result["host"], result["share"], result["shared"])
            events.append(Started(process))
        leftovers = tuple(Leftover(pid, start, command) for pid, start, command in result["leftovers"])
        events.append(
            Exited(
                process, result["returncode"], process.started + result["duration"], leftovers,
                leftover_files=tuple(result["files"]),
            )
        )

    def signal(self, process: Process, signum: int) -> None:
        """Send *signum* to the job's process group on its worker (cancel its task if it has not started)."""
        task = self._by_job.get(process.spec.key)
        if task is None or task.process is not process or self._lost is not None:
            return
        if not task.in_dask:  # still held here: it never runs
            if task.signalled is None:
                task.signalled = signum
                self._notify(("done", task.key, None, _Cancelled()))
            return
        if task.address is None:
            with self._lock:
                if task.signalled is None:
                    task.signalled = signum
                    if task.future is not None:
                        task.future.cancel()  # the worker plugin kills its job if it did start meanwhile
            return
        task.asked = signum
        threading.Thread(
            target=self.client.run,
            args=(self._tasks_module.signal_job, task.key, signum),
            kwargs={"workers": [task.address], "on_error": "ignore"},
            daemon=True,
        ).start()

    def end_leftovers(self, process: Process, leftovers: tuple[Leftover, ...], grace: float) -> None:
        """SIGTERM what a job left on its worker, SIGKILL it after *grace* seconds (done there)."""
        address = process.placement.address if process.placement is not None else None
        if address is None or self._lost is not None:
            return
        found = [(leftover.pid, leftover.start, leftover.command) for leftover in leftovers]
        threading.Thread(
            target=self.client.run,
            args=(self._tasks_module.end_leftovers, found, grace),
            kwargs={"workers": [address], "on_error": "ignore"},
            daemon=True,
        ).start()

    def _close_client(self) -> None:
        try:
            self.client.close(timeout=5)
        except Exception:  # noqa: BLE001 - the scheduler may be gone
            pass
        if self._cluster is not None:
            try:
                self._cluster.close(timeout=10)
            except Exception:  # noqa: BLE001
                pass

    def close(self) -> None:
        """Stop receiving, leave the cluster (a ``local:W`` one is stopped), remove the share marker."""
        self._closing.set()
        self._to_submit.put(None)
        self._submitter.join(timeout=5)
        try:
            self.client.unsubscribe_topic(self._prefix)
            if self._lost is None:
                self.client.unregister_worker_plugin(self._prefix)
            if self._lost is None:
                self._queue.put(None, timeout=5)
        except Exception:  # noqa: BLE001 - the scheduler may be gone
            pass
        self._receiver.join(timeout=5)
        try:
            os.unlink(os.path.join(self._share_dir, SHARE_MARKER))
        except OSError:
            pass
        self._close_client()
        self._selector.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

