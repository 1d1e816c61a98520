"""The worker side of the Dask executor: the task that runs one job on a Dask worker, and the worker plugin
that makes sure nothing of a cancelled task (or of one whose client went away) keeps running.

This module is imported by the workers (the coordinator pickles :func:`run_job` by reference), so
plainbox-like must be installed on them. The job runs as locally: a
:class:`~plainbox_like.run.executors.LocalExecutor` of the task's own spawns the same shell command line in
its own process group and reads its output, timed on the worker. A job that ends within
:data:`STREAM_AFTER` seconds (most do) sends its output back with its result, one message; a longer one (or
one that prints more than :data:`HOLD_LIMIT`) streams it: every record goes to a spool file on the worker
and a sender thread puts it, in batches of at most :data:`BATCH_BYTES`, on the run's Dask queue every
:data:`SEND_INTERVAL` seconds. The queue has a bounded size, so a coordinator that lags makes the sender
wait, never the job: its output waits in the spool file, not in memory.
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import struct
import tempfile
import threading
import time
from typing import Any

from distributed import Queue, get_worker
from distributed.diagnostics.plugin import WorkerPlugin

from plainbox_like.run.executors import Exited, LocalExecutor, Output, ProcessSpec, find_marked, signal_leftover
from plainbox_like.run.executors import Leftover, kill_leftovers
from plainbox_like.run.settle import JOB_ENV, SESSION_ENV

#: A job that runs longer than this (seconds) streams its output back while it runs.
STREAM_AFTER = 0.3
#: Output held in memory before the job streams, whatever its age (bytes).
HOLD_LIMIT = 256 << 10
#: Seconds between two batches of a streaming job's output (it is at most about this much behind).
SEND_INTERVAL = 0.25
#: The most bytes of output one queue message carries (one chunk more if a single chunk is larger).
BATCH_BYTES = 256 << 10
#: The most output a result carries in its end event (the scheduler keeps recent events: they stay small);
#: a result with more is fetched by the coordinator.
EVENT_LIMIT = 16 << 10
#: The name of the per-worker session-share directories, below the worker's local directory.
PER_WORKER_SHARE = "plainbox-like-share"
SHARE_ENV = "PLAINBOX_SESSION_SHARE"

_LENGTH = struct.Struct("<I")
#: posix_spawn cannot change directory: the spawner goes there and back, one task thread at a time.
_SPAWN_LOCK = threading.Lock()
#: Task key -> process group of the job it runs, on this worker (for the plugin and for signals).
_GROUPS: dict[str, int] = {}
_GROUPS_LOCK = threading.Lock()
#: (session-share path, marker name, marker content) -> the share directory this worker gives jobs, shared?
_SHARES: dict[tuple[str, str, str], tuple[str, bool]] = {}


def share_dir(path: str, marker: str, token: str, session_id: str, local_directory: str) -> tuple[str, bool]:
    """The ``$PLAINBOX_SESSION_SHARE`` of jobs on this worker, and whether it is the coordinator's own.

    The coordinator wrote *token* into the file *marker* of its session-share directory *path*: a
    worker that reads it there shares the filesystem. Otherwise its jobs get a directory of their own
    on the worker, ``<local_directory>/plainbox-like-share/<session_id>``.
    """
    cache_key = (path, marker, token)
    if cache_key not in _SHARES:
        try:
            with open(os.path.join(path, marker), encoding="ascii") as handle:
                shared = handle.read() == token
        except (OSError, UnicodeError):
            shared = False
        if shared:
            _SHARES[cache_key] = (path, True)
        else:
            own = os.path.join(local_directory, PER_WORKER_SHARE, session_id)
            os.makedirs(own, mode=0o700, exist_ok=True)
            _SHARES[cache_key] = (own, False)
    return _SHARES[cache_key]


class _Spool:
    """Output records waiting to be sent, in a file on the worker (memory stays bounded)."""

    def __init__(self, directory: str) -> None:
        fd, self.path = tempfile.mkstemp(prefix="plainbox-like-spool-", dir=directory)
        self._write = os.fdopen(fd, "wb", buffering=0)
        self._read = open(self.path, "rb", buffering=0)
        self._lock = threading.Lock()
        self._written = 0
        self._taken = 0

    def append(self, record: tuple[float, str, bytes]) -> None:
        data = pickle.dumps(record, protocol=pickle.HIGHEST_PROTOCOL)
        with self._lock:
            self._write.write(_LENGTH.pack(len(data)) + data)
            self._written += _LENGTH.size + len(data)

    def take(self, limit: int) -> list[tuple[float, str, bytes]]:
        """The next records, at most *limit* bytes of them (at least one if any)."""
        with self._lock:
            end = self._written
        records: list[tuple[float, str, bytes]] = []
        size = 0
        while self._taken < end and (not records or size < limit):
            (length,) = _LENGTH.unpack(self._read.read(_LENGTH.size))
            record = pickle.loads(self._read.read(length))
            self._taken += _LENGTH.size + length
            records.append(record)
            size += len(record[2])
        return records

    def close(self) -> None:
        self._write.close()
        self._read.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass


class _Sender(threading.Thread):
    """Puts a streaming job's spooled output on the run's queue, batch by batch, until told the job ended."""

    def __init__(self, spool: _Spool, queue_name: str, task: str) -> None:
        super().__init__(name=f"plainbox-like-sender-{task}", daemon=True)
        self.spool = spool
        self.queue = Queue(queue_name)
        self.task = task
        self.sent = 0
        self.error: BaseException | None = None
        self.ended = threading.Event()

    def run(self) -> None:
        try:
            while True:
                last = self.ended.wait(SEND_INTERVAL)
                while True:
                    batch = self.spool.take(BATCH_BYTES)
                    if not batch:
                        break
                    self.queue.put((self.task, self.sent, batch))  # waits while the queue is full
                    self.sent += 1
                if last:
                    return
        except BaseException as exc:  # noqa: BLE001 - the task reports it
            self.error = exc


def _where(worker: Any) -> dict[str, Any]:
    return {"address": worker.address, "host": socket.gethostname()}


def run_job(request: dict[str, Any]) -> dict[str, Any]:
    """Run one job on this worker and return its exit status, timing and (if it did not stream) output.

    *request* holds the task key (``task``), the spec's ``key``, ``argv``, ``marker``, its environment as
    differences (``env``, ``env_removed``) from the run's (:class:`RunEnvironment` ``run``), the
    temporary working directory to make here (``temp_cwd``; None: ``cwd``, the runner's own directory, if
    it exists here),
    the session share (``share``, ``share_marker``, ``share_token``, ``session``), and the run's
    queue and event topic (``queue``, ``topic``).
    """
    worker = get_worker()
    task = request["task"]
    where = _where(worker)
    share, shared = share_dir(
        request["share"], request["share_marker"], request["share_token"], request["session"], worker.local_directory
    )
    where.update(share=share, shared=shared)
    env = dict(worker.plugins[request["run"]].env)
    env.update(request["env"])
    for name in request["env_removed"]:
        env.pop(name, None)
    env[SHARE_ENV] = share
    # Its temporary working directory is made (and removed) here by the executor, named as the
    # coordinator names them; without one, it runs in the coordinator's directory if this machine has it.
    cwd = request["cwd"] if request["temp_cwd"] is None and os.path.isdir(request["cwd"]) else None
    spec = ProcessSpec(
        request["key"], tuple(request["argv"]), env, marker=tuple(map(tuple, request["marker"])), cwd=cwd,
        temp_cwd=request["temp_cwd"],
    )
    executor = LocalExecutor()
    try:
        with _SPAWN_LOCK:
            process = executor.start(spec, report_at_once=True)
    except OSError as exc:
        executor.close()
        return {**where, "failed": str(exc)}
    with _GROUPS_LOCK:
        _GROUPS[task] = process.pgid
    started = process.started
    worker.log_event(request["topic"], {"task": task, "pid": process.pid, "age": time.monotonic() - started, **where})
    held: list[tuple[float, str, bytes]] = []
    held_bytes = 0
    spool: _Spool | None = None
    sender: _Sender | None = None
    exited: Exited | None = None
    try:
        while exited is None:
            for event in executor.poll(SEND_INTERVAL):
                if isinstance(event, Output):
                    record = (event.when - started, event.stream, event.data)
                    if spool is not None:
                        spool.append(record)
                    else:
                        held.append(record)
                        held_bytes += len(event.data)
                elif isinstance(event, Exited):
                    exited = event
            if spool is None and exited is None and (time.monotonic() - started > STREAM_AFTER or held_bytes > HOLD_LIMIT):
                spool = _Spool(worker.local_directory)
                for record in held:
                    spool.append(record)
                held = []
                sender = _Sender(spool, request["queue"], task)
                sender.start()
    finally:
        with _GROUPS_LOCK:
            _GROUPS.pop(task, None)
        if exited is None:  # the task failed while its job ran: nothing of it may go on
            try:
                os.killpg(process.pgid, signal.SIGKILL)
            except OSError:
                pass
        executor.close()
        if sender is not None:
            sender.ended.set()
            sender.join()
        if spool is not None:
            spool.close()
    if sender is not None and sender.error is not None:
        raise sender.error
    result = {
        **where,
        "pid": process.pid,
        "returncode": exited.returncode,
        "duration": exited.when - started,
        "records": held,
        "sent": sender.sent if sender is not None else 0,
        "leftovers": [(p.pid, p.start, p.command) for p in exited.leftovers],
        "files": list(exited.leftover_files),
    }
    if held_bytes <= EVENT_LIMIT:  # announced as an event too: the coordinator has it without fetching it
        worker.log_event(request["topic"], {"task": task, "end": result})
    return result


def signal_job(task: str, signum: int) -> bool:
    """Send *signum* to the process group of the job task *task* runs on this worker (run by ``Client.run``)."""
    with _GROUPS_LOCK:
        pgid = _GROUPS.get(task)
    if pgid is None:
        return False
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        return False
    return True


def end_leftovers(leftovers: list[tuple[int, int, str]], grace: float) -> None:
    """SIGTERM the processes a job left on this worker, SIGKILL those still there after *grace* seconds
    (in a thread: ``Client.run`` calls this on the worker's event loop)."""
    found = [Leftover(pid, start, command) for pid, start, command in leftovers]
    threading.Thread(target=kill_leftovers, args=(found, grace), daemon=True).start()


def kill_marked(session_id: str, job_id: str | None = None) -> int:
    """SIGKILL the processes on this worker that run jobs of *session_id* (only *job_id*'s if given): what a
    dead coordinator or a lost worker left. Returns how many there were."""
    marker = {SESSION_ENV: session_id}
    if job_id is not None:
        marker[JOB_ENV] = job_id
    found = find_marked(marker)
    for leftover in found:
        signal_leftover(leftover, signal.SIGKILL)
    return len(found)


def _kill_groups(groups: list[int]) -> None:
    for pgid in groups:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except OSError:
            pass


class RunEnvironment(WorkerPlugin):
    """What the environment of a run's jobs mostly is, given to each worker once (registered under the
    run's name): a task carries only its job's differences from it."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env


class JobReaper(WorkerPlugin):
    """Kills the process group of a job whose task stops executing without finishing: cancelled, or
    released because its client went away (a coordinator killed), or the worker closing."""

    name = "plainbox-like-job-reaper"

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if start == "executing" and finish in ("cancelled", "released", "forgotten"):
            with _GROUPS_LOCK:
                pgid = _GROUPS.get(key)
            if pgid is not None:
                _kill_groups([pgid])

    def teardown(self, worker: Any) -> None:
        with _GROUPS_LOCK:
            groups = list(_GROUPS.values())
        _kill_groups(groups)
