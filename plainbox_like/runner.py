"""Starting job processes and collecting their output and exit status.

The batch logic (``session.py``) talks to an executor through a small
interface: :meth:`LocalExecutor.start` a :class:`ProcessSpec`, then
:meth:`LocalExecutor.poll` for :class:`Output` and :class:`Exited` events, and
:meth:`LocalExecutor.signal` to stop a job. Another executor (one that runs
jobs on other machines) only has to produce the same events.

Locally, each job is ``bash -c COMMAND`` started with ``posix_spawn`` in its
own process group, stdin from /dev/null, stdout and stderr on separate pipes
read by one selector loop (no thread per job), exit noticed through a pidfd.

A spec that names an io-log (``log``) has its output written there by the
executor, which closes the log before it reports the exit: the controller
then only sees :class:`Started` and :class:`Exited`. Without one, every chunk
comes back as an :class:`Output` event. :mod:`plainbox_like.workers` runs
specs in worker processes with the same interface.
"""

from __future__ import annotations

import fcntl
import os
import selectors
import shutil
import signal
import time
from typing import Callable, Iterator, Protocol

import attrs

from plainbox_like.errors import PlainboxLikeError
from plainbox_like.iolog import RecordWriter, open_reserved_log

READ_SIZE = 1 << 20
F_SETPIPE_SZ = 1031
#: Signals a job starts with default handling for, whatever the runner ignores.
_DEFAULT_SIGNALS = tuple(
    s for s in (signal.SIGPIPE, signal.SIGINT, signal.SIGTERM, signal.SIGQUIT, signal.SIGHUP, signal.SIGCHLD)
)


def find_shell() -> str:
    """bash if installed, else sh."""
    return shutil.which("bash") or shutil.which("sh") or "/bin/sh"


@attrs.frozen
class ProcessSpec:
    """What to run: a command line for the shell, its environment, and a key to know it by.

    *log* is the path of an io-log without its suffixes (a stem reserved in a
    session's ``io-logs``): the executor writes the output there and closes
    it (synced if *durable_log*) before reporting the exit.
    """

    key: str
    argv: tuple[str, ...]
    env: dict[str, str]
    log: str | None = None
    durable_log: bool = False


@attrs.define(eq=False)
class Process:
    """A job process; *pid*, *pgid* and *started* are None until it has started (see :class:`Started`)."""

    spec: ProcessSpec
    pid: int | None = None
    pgid: int | None = None
    started: float | None = None  # monotonic
    fds: dict[int, str] = attrs.Factory(dict)  # open pipe fd -> stream name
    pidfd: int | None = None
    status: int | None = None
    log: RecordWriter | None = None


class LogError(PlainboxLikeError):
    """A job's io-log could not be created: its output would be lost, so the job was stopped."""


@attrs.frozen
class Started:
    """A process is running (its spec's journaled start was durable before it did)."""

    process: Process


@attrs.frozen
class Output:
    """A chunk a process wrote to one of its streams, read at *when* (monotonic)."""

    process: Process
    stream: str
    data: bytes
    when: float


@attrs.frozen
class Exited:
    """A process ended; *returncode* is negative for a signal, as in subprocess."""

    process: Process
    returncode: int
    when: float


class Executor(Protocol):
    """What the batch runner needs from whatever runs its jobs."""

    #: True if the executor makes the journal durable itself before each spawn (see workers.py).
    syncs_journal: bool

    def start(self, spec: ProcessSpec, report_at_once: bool = False) -> Process: ...

    def poll(self, timeout: float | None) -> list[Started | Output | Exited]: ...

    def signal(self, process: Process, signum: int) -> None: ...


def _new_pipe() -> tuple[int, int]:
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        fcntl.fcntl(r, F_SETPIPE_SZ, READ_SIZE)
    except OSError:
        pass
    return r, w


class LocalExecutor:
    """Runs processes on this machine, in this process."""

    syncs_journal = False

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._selector = selectors.DefaultSelector()
        self._running: dict[int, Process] = {}
        self._extra: dict[int, object] = {}
        self._use_pidfd = hasattr(os, "pidfd_open")
        self._spare_pipes: list[tuple[int, int]] = []  # made while a job starts, for the next one
        self._started: list[Started] = []  # reported by the next poll

    @property
    def running(self) -> list[Process]:
        return list(self._running.values())

    def watch_fd(self, fd: int, tag: object) -> None:
        """Also wake :meth:`poll` when *fd* is readable (e.g. a signal wakeup pipe)."""
        self._selector.register(fd, selectors.EVENT_READ, tag)
        self._extra[fd] = tag

    def start(self, spec: ProcessSpec, report_at_once: bool = True) -> Process:
        """Spawn *spec* in a new process group with piped stdout/stderr, then create its io-log.

        Its :class:`Started` comes with the next :meth:`poll` (*report_at_once*
        is always so here). Raises OSError if it cannot be spawned, :class:`LogError` (after
        killing it) if its io-log cannot be created.
        """
        out_r, out_w = self._spare_pipes.pop() if self._spare_pipes else _new_pipe()
        err_r, err_w = self._spare_pipes.pop() if self._spare_pipes else _new_pipe()
        # Before the spawn: posix_spawn returns once the child has exec'd, and the job may run a while before
        # this process is scheduled again, so a clock read after it could come after the job began.
        started = self._clock()
        try:
            pid = os.posix_spawn(
                spec.argv[0],
                list(spec.argv),
                spec.env,
                file_actions=[
                    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                    (os.POSIX_SPAWN_DUP2, out_w, 1),
                    (os.POSIX_SPAWN_DUP2, err_w, 2),
                ],
                setpgroup=0,
                setsigdef=_DEFAULT_SIGNALS,
                setsigmask=(),
            )
        except BaseException:
            for fd in (out_r, out_w, err_r, err_w):
                os.close(fd)
            raise
        os.close(out_w)
        os.close(err_w)
        process = Process(spec=spec, pid=pid, pgid=pid, started=started)
        for fd, stream in ((out_r, "stdout"), (err_r, "stderr")):
            os.set_blocking(fd, False)
            process.fds[fd] = stream
            self._selector.register(fd, selectors.EVENT_READ, process)
        if self._use_pidfd:
            try:
                process.pidfd = os.pidfd_open(pid)
                self._selector.register(process.pidfd, selectors.EVENT_READ, process)
            except OSError:
                self._use_pidfd = False
        self._running[pid] = process
        if spec.log is not None:  # the shell is starting meanwhile: creating the files costs it no time
            self._open_log(process)
        self._started.append(Started(process))
        while len(self._spare_pipes) < 2:
            self._spare_pipes.append(_new_pipe())
        return process

    def _open_log(self, process: Process) -> None:
        try:
            fd = open_reserved_log(os.path.dirname(process.spec.log), os.path.basename(process.spec.log))
            process.log = RecordWriter(process.spec.log, started=process.started, clock=self._clock, record_fd=fd)
        except OSError as exc:
            self.signal(process, signal.SIGKILL)
            self._reap(process, 0)
            self._finish(process, [])
            raise LogError(f"cannot create the io-log of job {process.spec.key}: {exc}") from None

    def poll(self, timeout: float | None) -> list[Started | Output | Exited]:
        """Wait up to *timeout* seconds (None: until something happens) for output or exits."""
        events: list[Started | Output | Exited] = self._started
        self._started = []
        if events:
            timeout = 0
        exited: list[Process] = []
        for key, _ in self._selector.select(timeout):
            fd = key.fd
            if fd in self._extra:
                continue
            process: Process = key.data
            if fd == process.pidfd:
                exited.append(process)
                continue
            self._read(process, fd, events)
        if not self._use_pidfd:
            exited.extend(p for p in self._running.values() if p.status is None and self._reap(p, os.WNOHANG))
        for process in exited:
            if process.status is None:
                self._reap(process, 0)
            self._finish(process, events)
        now = self._clock()
        for process in self._running.values():
            if process.log is not None:
                process.log.maybe_flush(now)
        return events

    def _read(self, process: Process, fd: int, events: list) -> None:
        """Read one chunk; at end of file, stop watching the fd."""
        try:
            data = os.read(fd, READ_SIZE)
        except BlockingIOError:
            return
        except OSError:  # pragma: no cover - EIO and the like: treat as end of file
            data = b""
        if data:
            self._output(process, process.fds[fd], data, events)
            return
        self._selector.unregister(fd)
        os.close(fd)
        del process.fds[fd]

    def _reap(self, process: Process, flags: int) -> bool:
        pid, status = os.waitpid(process.pid, flags)
        if pid == 0:
            return False
        process.status = status
        return True

    def _finish(self, process: Process, events: list) -> None:
        """The leader exited: take what is already in the pipes, then close them.

        Background processes the job left behind may keep the pipes open; we
        do not wait for them (they get EPIPE if they write later), and read at
        most 64 chunks more in case they write without pause.
        """
        for fd in list(process.fds):
            stream = process.fds[fd]
            for _ in range(64):  # bounded: a background process may write forever
                try:
                    data = os.read(fd, READ_SIZE)
                except (BlockingIOError, OSError):
                    break
                if not data:
                    break
                self._output(process, stream, data, events)
            self._selector.unregister(fd)
            os.close(fd)
            del process.fds[fd]
        if process.pidfd is not None:
            self._selector.unregister(process.pidfd)
            os.close(process.pidfd)
            process.pidfd = None
        del self._running[process.pid]
        when = self._clock()
        if process.log is not None:
            process.log.close(durable=process.spec.durable_log)
        events.append(Exited(process, os.waitstatus_to_exitcode(process.status), when))

    def _output(self, process: Process, stream: str, data: bytes, events: list) -> None:
        if process.log is not None:
            process.log.write(stream, data, self._clock())
        else:
            events.append(Output(process, stream, data, self._clock()))

    def signal(self, process: Process, signum: int) -> None:
        """Send *signum* to the process group of *process*."""
        try:
            os.killpg(process.pgid, signum)
        except ProcessLookupError:
            pass

    def close(self) -> None:
        self._selector.close()
        for pair in self._spare_pipes:
            for fd in pair:
                os.close(fd)
        self._spare_pipes.clear()


def iter_pids() -> Iterator[int]:
    """Pids of all processes (from /proc)."""
    try:
        names = os.listdir("/proc")
    except OSError:  # pragma: no cover
        return
    for name in names:
        if name.isdigit():
            yield int(name)


def iter_pgid_members(pgid: int) -> Iterator[int]:
    """Pids of the live (not zombie) processes in process group *pgid*."""
    for pid in iter_pids():
        name = str(pid)
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != b"Z":
            yield int(name)


def process_env(pid: int) -> dict[str, str]:
    """The environment of process *pid* (empty if it cannot be read)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            raw = f.read()
    except OSError:
        return {}
    env = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            env[key.decode(errors="replace")] = value.decode(errors="replace")
    return env
