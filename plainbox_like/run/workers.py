"""Worker processes that start and watch the jobs of a parallel run (``-j N``).

With several jobs at once, one process that spawns every job, creates its
io-log, pumps its output and syncs the journal is the bottleneck: the jobs
wait for it, and the second core mostly idles. So a parallel run forks one
worker per slot before its first job. A worker runs one job at a time with a
:class:`~plainbox_like.run.executors.LocalExecutor` of its own: it makes the journal
durable (the job's start is in it), spawns the job, writes its io-log and
reports its exit once the log is closed. The runner only decides, journals
and reports, and sees the same :class:`~plainbox_like.run.executors.Started` and
:class:`~plainbox_like.run.executors.Exited` events as with a local executor.

Messages are pickles with a length prefix on one pipe each way per worker;
a job's environment goes as its difference from the runner's (which the
workers have from the fork). A worker tells that its job started when its
executor reports it (after :data:`~plainbox_like.run.executors.STARTED_DELAY`, or at
once for a job with a timeout); a job that ends sooner is told in one message
with its exit, so a short job costs the runner one wake-up, not two.

A worker whose runner dies sees its command pipe close and exits at once,
leaving its job to ``resume`` (which kills leftovers), as a dead runner does.
"""

from __future__ import annotations

import gc
import os
import pickle
import select
import signal
import struct
import traceback
from typing import Any

import attrs

from plainbox_like.errors import PlainboxLikeError, WorkerDied
from plainbox_like.store.iolog import FLUSH_INTERVAL
from plainbox_like.store.journalsync import JournalSync
from plainbox_like.run.executors import Exited, LocalExecutor, LogError, Process, ProcessSpec, Started
from plainbox_like.run.workdir import TempCwd

_LENGTH = struct.Struct("<I")


@attrs.frozen
class Failed:
    """A process could not be spawned (*error* says why); it never ran."""

    process: Process
    error: str


def _send(fd: int, message: tuple) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    data = _LENGTH.pack(len(data)) + data
    while data:
        data = data[os.write(fd, data):]


class _Inbox:
    """Reassembles the messages arriving on a pipe."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._buffer = b""
        os.set_blocking(fd, False)

    def read(self) -> list[tuple] | None:
        """The messages complete so far (reading once); None once the writer is gone."""
        try:
            data = os.read(self.fd, 1 << 16)
        except BlockingIOError:
            return []
        if not data:
            return None
        buffer = self._buffer + data
        messages = []
        while len(buffer) >= 4:
            (size,) = _LENGTH.unpack_from(buffer)
            if len(buffer) < 4 + size:
                break
            messages.append(pickle.loads(buffer[4: 4 + size]))
            buffer = buffer[4 + size:]
        self._buffer = buffer
        return messages


def _serve(commands: int, events: int, journal_sync: JournalSync | None, base_env: dict[str, str]) -> None:
    """A worker's loop: start what the runner sends, report starts and exits, until the runner goes."""
    executor = LocalExecutor()
    try:
        _serve_with(executor, commands, events, journal_sync, base_env)
    finally:
        executor.close()


def _serve_with(
    executor: LocalExecutor, commands: int, events: int, journal_sync: JournalSync | None, base_env: dict[str, str]
) -> None:
    executor.watch_fd(commands, "commands")
    inbox = _Inbox(commands)
    running = False
    while True:
        started: Process | None = None
        try:
            events_now = executor.poll(FLUSH_INTERVAL if running else None)
        except LogError as exc:  # its job is killed; the runner stops the run
            _send(events, ("error", str(exc)))
            return
        for event in events_now:
            if isinstance(event, Started):
                started = event.process
            elif isinstance(event, Exited):
                running = False
                if started is event.process:  # a short job: its start and exit in one message
                    started = None
                    _send(events, ("ran", event.process.pid, event.process.started, event.returncode, event.when,
                                   event.leftovers, event.leftover_files))
                else:
                    _send(events, ("exited", event.returncode, event.when, event.leftovers, event.leftover_files))
        if started is not None:
            _send(events, ("started", started.pid, started.started))
        messages = inbox.read()
        if messages is None:
            return  # the runner is gone
        for message in messages:
            if message[0] == "start":
                _kind, key, argv, env_changes, env_removed, log, durable_log, at_once, marker, cwd, temp_cwd, mark = message
                temp_cwd = TempCwd(*temp_cwd) if temp_cwd is not None else None
                env = {**base_env, **env_changes}
                for name in env_removed:
                    del env[name]
                if journal_sync is not None:
                    journal_sync.sync_to(mark)  # the job's start is journaled: durable before the job runs
                try:
                    executor.start(
                        ProcessSpec(key, argv, env, log, durable_log, marker=marker, cwd=cwd, temp_cwd=temp_cwd),
                        report_at_once=at_once,
                    )
                except LogError as exc:
                    _send(events, ("error", str(exc)))
                except OSError as exc:
                    _send(events, ("failed", str(exc)))
                else:
                    running = True
            elif message[0] == "signal":
                for process in executor.running:
                    executor.signal(process, message[1])
            elif message[0] == "workers":  # the other workers' children are their jobs, never this one's
                executor.other_spawners = frozenset(message[1]) - {os.getpid()}


def _env_difference(env: dict[str, str], base: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """What *env* sets that *base* has not (or not the same), and the names of *base* it has not.

    A job's environment is a copy of the runner's with a few variables set, so its other values are the
    base's own string objects: told apart by identity, in one pass (a value equal but not the same object is
    sent again, which changes nothing). A third of the time of set operations on the items, for every job.
    """
    get = base.get
    changes = {name: value for name, value in env.items() if get(name) is not value}
    if len(env) - len(changes) == len(base):  # every variable of base is there, unchanged: none removed
        return changes, []
    return changes, [name for name in base if name not in env]


def _temp_cwd_fields(temp_cwd: TempCwd | None) -> tuple | None:
    """What a worker needs to make *temp_cwd* (``TempCwd(*fields)`` there), once per job: cheaper than attrs.astuple."""
    return None if temp_cwd is None else (temp_cwd.prefix, temp_cwd.list_leftovers, temp_cwd.mode)


def _close_fds_except(keep: set[int]) -> None:
    low = 0
    for fd in sorted(keep):
        if fd > low:
            os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, os.sysconf("SC_OPEN_MAX"))


@attrs.define(eq=False)
class _Worker:
    pid: int
    commands: int  # write end, ours
    inbox: _Inbox  # read end, ours
    process: Process | None = None  # the job it runs now


class WorkerExecutor:
    """Runs each spec in one of *count* forked worker processes (one job per worker at a time).

    With *journal_sync* (the session's journal, see
    :meth:`~plainbox_like.store.writer.SessionWriter.journal_sync`), a worker
    makes the journal durable up to what was written when :meth:`start` was
    called, before it spawns (the runner does not sync before :meth:`start`);
    workers handed jobs together share one fdatasync. *base_env* is what job
    environments mostly are (only differences are sent).
    """

    def __init__(
        self, count: int, journal_sync: JournalSync | None = None, base_env: dict[str, str] | None = None
    ) -> None:
        self.syncs_journal = journal_sync is not None
        self._journal_sync = journal_sync
        self._base_env = dict(os.environ if base_env is None else base_env)
        # A bare epoll, not the selectors module: its per-wake-up bookkeeping was a few per cent of this process's CPU
        self._epoll = select.epoll()
        self._listeners: dict[int, _Worker] = {}
        self._workers: list[_Worker] = []
        gc.collect()  # garbage left now could be collected in a worker, closing descriptor numbers it reuses
        try:
            for _ in range(count):
                self._workers.append(self._fork(journal_sync))
            pids = [worker.pid for worker in self._workers]
            for worker in self._workers:
                _send(worker.commands, ("workers", pids))
        except BaseException:
            self.close()
            raise

    def _fork(self, journal_sync: JournalSync | None) -> _Worker:
        commands_r, commands_w = os.pipe2(os.O_CLOEXEC)
        events_r, events_w = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the worker (coverage does not follow forks)
            code = 0
            try:
                gc.freeze()  # the runner's objects are never collected here
                for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                    signal.signal(signum, signal.SIG_IGN)  # the runner stops jobs; a worker lives as long as it
                keep = {0, 1, 2, commands_r, events_w, *(journal_sync.fds if journal_sync is not None else ())}
                _close_fds_except(keep)
                _serve(commands_r, events_w, journal_sync, self._base_env)
            except OSError:
                code = 1  # the runner went away mid-message
            except BaseException:
                code = 1
                traceback.print_exc()
            finally:
                os._exit(code)
        os.close(commands_r)
        os.close(events_w)
        worker = _Worker(pid=pid, commands=commands_w, inbox=_Inbox(events_r))
        self._epoll.register(events_r, select.EPOLLIN)
        self._listeners[events_r] = worker
        return worker

    @property
    def running(self) -> list[Process]:
        return [w.process for w in self._workers if w.process is not None]

    def watch_fd(self, fd: int, tag: object) -> None:
        """Also wake :meth:`poll` when *fd* is readable."""
        self._epoll.register(fd, select.EPOLLIN)

    def start(self, spec: ProcessSpec, report_at_once: bool = False) -> Process:
        """Hand *spec* to an idle worker; its :class:`Started` (or :class:`Failed`) event follows.

        Started comes once the job has run :data:`~plainbox_like.run.executors.STARTED_DELAY`
        seconds (with its Exited if it ended sooner), or at once with *report_at_once*.
        """
        worker = next((w for w in self._workers if w.process is None), None)
        if worker is None:
            raise PlainboxLikeError(f"all {len(self._workers)} workers are busy")
        worker.process = Process(spec=spec)
        changes, removed = _env_difference(spec.env, self._base_env)
        _send(
            worker.commands,
            (
                "start", spec.key, spec.argv, changes, removed, spec.log, spec.durable_log, report_at_once,
                spec.marker, spec.cwd, _temp_cwd_fields(spec.temp_cwd),
                self._journal_sync.appended if self._journal_sync is not None else 0,
            ),
        )
        return worker.process

    def poll(self, timeout: float | None) -> list[Started | Exited | Failed]:
        """Wait up to *timeout* seconds (None: until something happens) for starts and exits."""
        events: list[Started | Exited | Failed] = []
        for fd, _ in self._epoll.poll(-1 if timeout is None else max(0.0, timeout)):
            worker = self._listeners.get(fd)
            if worker is None:  # a watch_fd descriptor: it only wakes us
                continue
            messages = worker.inbox.read()
            if messages is None:
                self._epoll.unregister(fd)
                del self._listeners[fd]
                job = f" while job {worker.process.spec.key} ran" if worker.process is not None else ""
                raise WorkerDied(f"worker process {worker.pid} ended unexpectedly{job}")
            for message in messages:
                self._events(worker, message, events)
        return events

    def _events(self, worker: _Worker, message: tuple[Any, ...], events: list) -> None:
        process = worker.process
        kind = message[0]
        if kind in ("started", "ran"):
            process.pid = process.pgid = message[1]
            process.started = message[2]
            events.append(Started(process))
            if kind == "started":
                return
            message = ("exited", *message[3:])
        worker.process = None
        if message[0] == "exited":
            events.append(Exited(process, *message[1:5]))
        elif kind == "failed":
            events.append(Failed(process, message[1]))
        else:  # "error": the worker stopped the job, its output would be lost
            raise LogError(message[1])

    def signal(self, process: Process, signum: int) -> None:
        """Send *signum* to the process group of *process* (through its worker while it runs there)."""
        worker = next((w for w in self._workers if w.process is process), None)
        if worker is not None:
            _send(worker.commands, ("signal", signum))  # the worker knows whether it still runs
            return
        if process.pgid is not None:  # the leader exited; what is left of its group
            try:
                os.killpg(process.pgid, signum)
            except ProcessLookupError:
                pass

    def close(self) -> None:
        """Let the workers go (they exit when their command pipe closes) and reap them."""
        for worker in self._workers:
            os.close(worker.commands)
        for worker in self._workers:
            try:
                os.waitpid(worker.pid, 0)
            except ChildProcessError:  # pragma: no cover
                pass
            os.close(worker.inbox.fd)
        self._workers.clear()
        self._epoll.close()
