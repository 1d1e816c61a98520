"""Starting job processes and collecting their output and exit status.

The batch logic (``session.py``) talks to an executor through a small
interface: :meth:`LocalExecutor.start` a :class:`ProcessSpec`, then
:meth:`LocalExecutor.poll` for :class:`Output` and :class:`Exited` events, and
:meth:`LocalExecutor.signal` to stop a job. Another executor (one that runs
jobs on other machines) only has to produce the same events.

Locally, each job is ``bash -c COMMAND`` started with ``posix_spawn`` in its
own process group, stdin from /dev/null, stdout and stderr on separate pipes
read by one epoll loop (no thread per job), exit noticed through a pidfd.
Pipes start at the kernel's default size and grow when a job fills one.

A spec that names an io-log (``log``) has its output written there by the
executor, which closes the log before it reports the exit: the controller
then only sees :class:`Started` and :class:`Exited`. Without one, every chunk
comes back as an :class:`Output` event. A :class:`Started` is reported once
the job has run :data:`STARTED_DELAY` seconds, or with its exit if it ended
sooner (so a short job costs its controller one wake-up, not two), or at
once when asked (a job with a timeout) or when its output comes as events.
:mod:`plainbox_like.run.workers` runs specs in worker processes with the same
interface.
"""

from __future__ import annotations

import fcntl
import os
import select
import shutil
import signal
import time
from typing import Any, Callable, Collection, Iterator, Protocol

import attrs

from plainbox_like.errors import LogError
from plainbox_like.run import workdir
from plainbox_like.run.workdir import TempCwd
from plainbox_like.store.iolog import RecordWriter, open_reserved_log

READ_SIZE = 1 << 20
#: The size Linux gives a new pipe; a read that returns this much found the pipe full.
_PIPE_SIZE = 1 << 16
F_SETPIPE_SZ = 1031
#: Seconds a job runs before its :class:`Started` is reported, unless asked at once.
STARTED_DELAY = 0.05
#: A job that ran longer than this may have left processes with any pid (see find_marked).
FULL_SCAN_AFTER = 1.0
#: A poll that returns this long after the previous one began may see exits that happened a while ago
#: (the runner was busy, stopped or starved): their time is then taken from the kernel (see exit_time).
LATE = 0.05
#: Signals a job starts with default handling for, whatever the runner ignores.
_DEFAULT_SIGNALS = tuple(
    s for s in (signal.SIGPIPE, signal.SIGINT, signal.SIGTERM, signal.SIGQUIT, signal.SIGHUP, signal.SIGCHLD)
)


def _enter(directory: str) -> int:
    """Change to *directory*; returns a descriptor of the directory left, for :func:`_leave`."""
    back = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.chdir(directory)
    except BaseException:
        os.close(back)
        raise
    return back


def _leave(back: int) -> None:
    """Return to the directory :func:`_enter` left."""
    try:
        os.fchdir(back)
    finally:
        os.close(back)


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
    #: Environment entries that mark the job's processes (its session and job): with them, the processes
    #: it leaves running are looked for when it ends and reported with its :class:`Exited`.
    marker: tuple[tuple[str, str], ...] = ()
    #: The directory the process starts in (None: this process's own).
    cwd: str | None = None
    #: A fresh temporary directory to start it in instead (made by the executor, which removes it when
    #: the process ends and reports what was left there with its :class:`Exited`).
    temp_cwd: TempCwd | None = None


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
    #: Where it runs when not on this machine (a Dask worker), for its attempt's ``ran_on``.
    placement: Any = None
    cwd: str | None = None  # the temporary directory made for it (see ProcessSpec.temp_cwd)


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
class Leftover:
    """A live process a job left behind: its pid, its start (to tell it from a later process with the same
    pid) and its command line."""

    pid: int
    start: int  # clock ticks after boot (/proc/PID/stat)
    command: str


@attrs.frozen
class Exited:
    """A process ended; *returncode* is negative for a signal, as in subprocess.

    *leftovers* are the processes of its job still running when it ended
    (found by its spec's marker), not signalled: the caller decides.
    *leftover_files* are what it left in its temporary directory (see
    :func:`plainbox_like.run.workdir.remove`), which the executor removes (an
    empty one once the next job runs, or the executor is idle or closed: off the
    path from one job to the next).
    """

    process: Process
    returncode: int
    when: float
    leftovers: tuple[Leftover, ...] = ()
    leftover_files: tuple[str, ...] = ()


@attrs.frozen
class Lost:
    """A process's fate is unknown: the machine it ran on (or the way there) was lost. *reason* is for its
    result; *retry*: running it again may work (its worker died, the others are there)."""

    process: Process
    reason: str
    when: float
    retry: bool = False


class Executor(Protocol):
    """What the batch runner needs from whatever runs its jobs."""

    #: True if the executor makes the journal durable itself before each spawn (see workers.py).
    syncs_journal: bool

    def start(self, spec: ProcessSpec, report_at_once: bool = False) -> Process: ...

    def poll(self, timeout: float | None) -> list[Started | Output | Exited]: ...

    def signal(self, process: Process, signum: int) -> None: ...


def _enlarge_pipe(fd: int) -> None:
    """Let a job that writes a lot run further ahead of the reader (fewer wake-ups, as with ``seq``)."""
    try:
        fcntl.fcntl(fd, F_SETPIPE_SZ, READ_SIZE)
    except OSError:  # beyond the user's pipe limits: the default size still works
        pass


def _new_poller() -> tuple[Any, float]:
    """An epoll object and the factor that turns seconds into its timeout unit."""
    if hasattr(select, "epoll"):
        return select.epoll(), 1.0
    return select.poll(), 1000.0  # pragma: no cover - not Linux


class LocalExecutor:
    """Runs processes on this machine, in this process."""

    syncs_journal = False

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._poller, self._poll_scale = _new_poller()
        self._owners: dict[int, Process] = {}  # watched pipe and pidfd -> its process (not watch_fd's)
        self._running: dict[int, Process] = {}
        self._use_pidfd = hasattr(os, "pidfd_open")
        self._spare_pipes: list[tuple[int, int]] = []  # made while a job starts, for the next one
        self._unannounced: dict[Process, float] = {}  # running, Started not reported yet -> when it is due
        self._empty_cwds: list[str] = []  # temporary directories of ended jobs, found empty, to remove
        #: The empty temporary directory of an ended job that left no process, renamed for the next job instead
        #: of removing one and making another (see workdir.reuse); removed once the executor is idle.
        self._spare_cwd: str | None = None
        self._polled_at = clock()  # when the last poll began: exits seen later than LATE after it may be old
        # The kernel's times are on the monotonic clock's time line; an injected clock's are not.
        self._kernel_times = clock is time.monotonic
        #: Processes that spawn the jobs of other executors (sibling workers): see :func:`find_marked`.
        self.other_spawners: frozenset[int] = frozenset()

    @property
    def running(self) -> list[Process]:
        return list(self._running.values())

    def watch_fd(self, fd: int, tag: object) -> None:
        """Also wake :meth:`poll` when *fd* is readable (e.g. a signal wakeup pipe); *tag* is for the caller."""
        self._poller.register(fd, select.POLLIN)

    def _watch(self, fd: int, process: Process) -> None:
        self._poller.register(fd, select.POLLIN)
        self._owners[fd] = process

    def _unwatch(self, fd: int) -> None:
        self._poller.unregister(fd)
        del self._owners[fd]
        os.close(fd)

    def start(self, spec: ProcessSpec, report_at_once: bool = False) -> Process:
        """Spawn *spec* in a new process group with piped stdout/stderr, then create its io-log.

        Its :class:`Started` comes from :meth:`poll` (see the module's
        docstring for when). Raises OSError if it cannot be spawned,
        :class:`LogError` (after killing it) if its io-log cannot be created.
        """
        out_r, out_w = self._spare_pipes.pop() if self._spare_pipes else os.pipe2(os.O_CLOEXEC)
        err_r, err_w = self._spare_pipes.pop() if self._spare_pipes else os.pipe2(os.O_CLOEXEC)
        back = None  # posix_spawn cannot change directory: the spawner goes there and back (one thread spawns)
        cwd = made = None
        try:
            if spec.temp_cwd is not None:
                try:
                    spare, self._spare_cwd = self._spare_cwd, None
                    cwd = made = workdir.make(spec.temp_cwd, spare)
                except OSError as exc:
                    raise OSError(f"no temporary working directory: {exc}") from None
            else:
                cwd = spec.cwd
            # Before the spawn: posix_spawn returns once the child has exec'd, and the job may run a while
            # before this process is scheduled again, so a clock read after it could come after the job began.
            started = self._clock()
            if cwd is not None:
                back = _enter(cwd)
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
            if back is not None:
                _leave(back)
                back = None
            if made is not None:
                workdir.remove(made)
            raise
        finally:
            if back is not None:
                _leave(back)
        os.close(out_w)
        os.close(err_w)
        process = Process(spec=spec, pid=pid, pgid=pid, started=started)
        process.cwd = made
        for fd, stream in ((out_r, "stdout"), (err_r, "stderr")):
            os.set_blocking(fd, False)
            process.fds[fd] = stream
            self._watch(fd, process)
        if self._use_pidfd:
            try:
                process.pidfd = os.pidfd_open(pid)
                self._watch(process.pidfd, process)
            except OSError:
                self._use_pidfd = False
        self._running[pid] = process
        if spec.log is not None:  # the shell is starting meanwhile: creating the files costs it no time
            self._open_log(process)
        at_once = report_at_once or spec.log is None  # its Output events must not come before it
        self._unannounced[process] = started if at_once else started + STARTED_DELAY
        while len(self._spare_pipes) < 2:
            self._spare_pipes.append(os.pipe2(os.O_CLOEXEC))
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
        if self._running:  # the directories of jobs that ended go while another job runs...
            self._remove_empty_cwds()
        if self._unannounced:
            due = min(self._unannounced.values()) - self._clock()
            timeout = max(0.0, due if timeout is None else min(timeout, due))
        events: list[Started | Output | Exited] = []
        exited: list[Process] = []
        began, self._polled_at = self._polled_at, self._clock()
        ready = self._poller.poll(-1 if timeout is None else timeout * self._poll_scale)
        woke = self._clock()
        late = self._kernel_times and woke - began > LATE
        for fd, _ in ready:
            process = self._owners.get(fd)
            if process is None:  # a watch_fd descriptor: it only wakes us
                continue
            if fd == process.pidfd:
                exited.append(process)
            else:
                self._read(process, fd, events)
        if not self._use_pidfd:
            exited.extend(p for p in self._running.values() if p.status is None and self._reap(p, os.WNOHANG))
        for process in exited:
            when = None
            if process.status is None:
                if late:  # still a zombie: ask the kernel when it ended
                    when = exit_time(process.pid, woke, process.started)
                self._reap(process, 0)
            self._finish(process, events, when)
        now = self._clock()
        if self._unannounced:
            due = [p for p, at in self._unannounced.items() if at <= now or p.status is not None]
            if due:
                for process in due:
                    del self._unannounced[process]
                events[:0] = [Started(process) for process in due]
        for process in self._running.values():
            if process.log is not None:
                process.log.maybe_flush(now)
        # ...or once a whole poll went by with nothing to wake it. Not when a watched descriptor woke it: a worker
        # is woken so by its next job, which would wait for the removal (a few hundred µs on some file systems).
        if not ready:
            self._remove_empty_cwds(idle=not self._running)
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
            if len(data) == _PIPE_SIZE:  # the pipe was full
                _enlarge_pipe(fd)
            self._output(process, process.fds[fd], data, events)
            return
        del process.fds[fd]
        self._unwatch(fd)

    def _reap(self, process: Process, flags: int) -> bool:
        pid, status = os.waitpid(process.pid, flags)
        if pid == 0:
            return False
        process.status = status
        return True

    def _finish(self, process: Process, events: list, when: float | None = None) -> None:
        """The leader exited (at *when*, if known better than now): take what is already in the pipes, then close them.

        Background processes the job left behind may keep the pipes open; we
        do not wait for them (they get EPIPE if they write later), and read at
        most 64 chunks more in case they write without pause.
        """
        for fd in list(process.fds):
            stream = process.fds.pop(fd)
            for _ in range(64):  # bounded: a background process may write forever
                try:
                    data = os.read(fd, READ_SIZE)
                except (BlockingIOError, OSError):
                    break
                if not data:
                    break
                self._output(process, stream, data, events)
            self._unwatch(fd)
        if process.pidfd is not None:
            self._unwatch(process.pidfd)
            process.pidfd = None
        del self._running[process.pid]
        if when is None:
            when = self._clock()
        leftovers: tuple[Leftover, ...] = ()
        if process.spec.marker:
            # A short job's descendants have pids after its own: only those need a look (a long one's
            # may have wrapped around, and the look costs little next to it).
            since = process.pid if when - process.started < FULL_SCAN_AFTER else None
            leftovers = tuple(find_marked(dict(process.spec.marker), process.pgid, since, self.other_spawners))
        files: tuple[str, ...] = ()
        if process.cwd is None:
            pass
        elif workdir.is_empty(process.cwd):
            if self._spare_cwd is None and process.spec.marker and not leftovers and process.spec.temp_cwd.mode is None:
                self._spare_cwd = process.cwd  # no process of the job is left to write there
            else:  # removed later (see poll): after the exit is reported and, in a loop, the next job started
                self._empty_cwds.append(process.cwd)
        else:
            files = tuple(workdir.remove(process.cwd, process.spec.temp_cwd.list_leftovers))
        process.cwd = None
        if process.log is not None:
            process.log.close(durable=process.spec.durable_log)
        events.append(Exited(process, os.waitstatus_to_exitcode(process.status), when, leftovers, files))

    def _remove_empty_cwds(self, idle: bool = False) -> None:
        """Remove the temporary directories of ended jobs found empty (what appeared since is removed unlisted),
        and the spare one too if *idle* (no job runs: the next may be long in coming)."""
        if idle and self._spare_cwd is not None:
            self._empty_cwds.append(self._spare_cwd)
            self._spare_cwd = None
        while self._empty_cwds:
            workdir.remove(self._empty_cwds.pop(), list_leftovers=False)

    def _output(self, process: Process, stream: str, data: bytes, events: list) -> None:
        if process.log is not None:
            try:
                process.log.write(stream, data, self._clock())
            except OSError as exc:  # a full disk, an I/O error: what it prints now would be lost
                self.signal(process, signal.SIGKILL)
                raise LogError(f"cannot write the io-log of job {process.spec.key}: {exc.strerror or exc}") from None
        else:
            events.append(Output(process, stream, data, self._clock()))

    def signal(self, process: Process, signum: int) -> None:
        """Send *signum* to the process group of *process*."""
        try:
            os.killpg(process.pgid, signum)
        except ProcessLookupError:
            pass

    def close(self) -> None:
        self._remove_empty_cwds(idle=True)
        if hasattr(self._poller, "close"):  # select.poll objects have no descriptor to close
            self._poller.close()
        for pair in self._spare_pipes:
            for fd in pair:
                os.close(fd)
        self._spare_pipes.clear()


def _sched_exec_start(path: str) -> float:
    """``se.exec_start`` of a ``/proc/.../sched`` file: when the task last began running, in seconds."""
    with open(path, "rb") as f:
        for line in f:
            if line.startswith(b"se.exec_start"):
                return float(line.split(b":", 1)[1]) / 1000.0  # milliseconds
    raise ValueError(f"{path}: no se.exec_start")


def _last_cpu(path: str) -> int:
    """The CPU a task last ran on (field 39 of a ``/proc/.../stat`` file)."""
    with open(path, "rb") as f:
        stat = f.read()
    return int(stat[stat.rfind(b")") + 2:].split()[36])


def exit_time(pid: int, now: float, started: float | None) -> float | None:
    """When zombie *pid* exited, on the monotonic clock, *now* being when its exit was seen; None if unknown.

    A runner that was stopped, starved or busy sees an exit late. The
    scheduler knows when the zombie last ran (its exit) and when this thread
    last began running, each on the clock of the CPU it ran on: on the same
    CPU, their difference is how long before that moment the process ended
    (clocks of different CPUs drift apart, by seconds in a virtual machine),
    so this thread moves to the zombie's last CPU for the reading. That moment
    is taken as the monotonic clock read right after, not *now*: moving to a
    busy CPU can take a while, and measuring back from *now* would put the
    exit too early. Linux shows these in ``/proc/PID/sched`` where the kernel
    keeps scheduler statistics (most distributions' kernels); elsewhere the
    time is unknown and the caller keeps when it saw the exit. The result is
    kept between *started* (if given) and *now*.
    """
    try:
        theirs = _sched_exec_start(f"/proc/{pid}/sched")
        cpu = _last_cpu(f"/proc/{pid}/stat")
        if _last_cpu("/proc/thread-self/stat") == cpu:
            mine, read_at = _sched_exec_start("/proc/thread-self/sched"), time.monotonic()
        else:
            allowed = os.sched_getaffinity(0)
            if cpu not in allowed:
                return None
            os.sched_setaffinity(0, {cpu})  # returns once this thread runs there
            try:
                mine, read_at = _sched_exec_start("/proc/thread-self/sched"), time.monotonic()
            finally:
                os.sched_setaffinity(0, allowed)
    except (OSError, ValueError, IndexError, AttributeError):
        return None
    when = min(now, read_at - max(0.0, mine - theirs))
    return when if started is None else max(started, when)


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


def _pids_after(pid: int) -> Iterator[int] | None:
    """Pids that may have been given out after *pid* (its descendants among them), without listing /proc.

    None if that cannot be told (no ``/proc/sys/kernel/ns_last_pid``) or the range is wide.
    """
    try:
        last = int(_read_small("/proc/sys/kernel/ns_last_pid") or b"")
    except ValueError:
        return None
    if last >= pid:
        return iter(range(pid + 1, last + 1)) if last - pid <= 256 else None
    return None  # wrapped around: look at everything


def _read_small(path: str) -> bytes | None:
    """A small file of /proc in one read, None if it cannot be read: three system calls where open() makes
    nine, for files read at every job's end."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.read(fd, 4096)
    except OSError:
        return None
    finally:
        os.close(fd)


def read_stat(pid: int) -> tuple[str, int, int, int] | None:
    """(state, process group, start in clock ticks after boot, parent) of *pid*, or None if it is gone."""
    stat = _read_small(f"/proc/{pid}/stat")
    if stat is None:
        return None
    fields = stat[stat.rfind(b")") + 2:].split()
    try:
        return fields[0].decode("ascii", "replace"), int(fields[2]), int(fields[19]), int(fields[1])
    except (IndexError, ValueError):
        return None


def command_line(pid: int, limit: int = 200, retries: int = 0) -> str:
    """The command line of *pid*, arguments joined by spaces, cut to *limit* characters ("" if unknown).

    *retries*: while it shows none and is no kernel thread, read it again that many times at most,
    :data:`ENV_RETRY_DELAY` apart: a process caught in ``execve`` (a job's background process, started just
    before the job ended) has none for a moment, and "[bash]" tells less than "sleep 600".
    """
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read(limit * 4 + 1)
            for _ in range(retries):
                if raw or _kernel_thread(pid) is not False:
                    break
                time.sleep(ENV_RETRY_DELAY)
                raw = os.pread(f.fileno(), limit * 4 + 1, 0)
    except OSError:
        return ""
    if not raw:  # a kernel thread or a zombie: the name the kernel keeps
        try:
            with open(f"/proc/{pid}/comm", "rb") as f:
                return "[" + f.read().strip().decode("utf-8", "replace")[:limit] + "]"
        except OSError:
            return ""
    text = raw.rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", "replace")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def find_marked(
    marker: dict[str, str],
    pgid: int | None = None,
    since_pid: int | None = None,
    other_spawners: Collection[int] = (),
) -> list[Leftover]:
    """Live processes whose environment holds every entry of *marker*, or that are in process group *pgid*.

    With *since_pid*, only processes with pids given out after it are looked
    at when that can be told cheaply (see :func:`_pids_after`); otherwise all.
    A job's processes inherit its environment, whatever process group or
    session they move to; only one that replaces its environment escapes.
    This process itself is never one of them, nor a child of *other_spawners*
    (processes that spawn other jobs: a child of one is another job's leader,
    which may be caught in ``execve`` with no environment to read yet).
    """
    pids = _pids_after(since_pid) if since_pid is not None else None
    if pids is None:
        pids = iter_pids()
    me = os.getpid()
    found = []
    items = marker.items()
    for pid in pids:
        if pid == me:
            continue
        stat = read_stat(pid)
        if stat is None or stat[0] in ("Z", "X"):
            continue
        if stat[1] != pgid:
            if stat[3] in other_spawners:
                continue
            env = _settled_env(pid)
            if not env or any(env.get(name) != value for name, value in items):
                continue
        found.append(Leftover(pid, stat[2], command_line(pid, retries=ENV_RETRIES)))
    return found


def still_running(leftover: Leftover) -> bool:
    """Whether *leftover* is alive (not a zombie) and is still the same process (same start)."""
    stat = read_stat(leftover.pid)
    return stat is not None and stat[0] not in ("Z", "X") and stat[2] == leftover.start


def signal_leftover(leftover: Leftover, signum: int) -> None:
    """Send *signum* to *leftover* if it is still that process (never to a later one with its pid)."""
    if still_running(leftover):
        try:
            os.kill(leftover.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass


#: A process caught in the middle of ``execve`` shows an empty environment for a moment (a job's
#: background process, started just before the job ended): it is read again this often, this far apart.
ENV_RETRIES, ENV_RETRY_DELAY = 10, 0.002
#: The ``flags`` bit (``/proc/PID/stat``) of kernel threads, whose environment is always empty.
_PF_KTHREAD = 0x00200000


def _settled_env(pid: int) -> dict[str, str]:
    """:func:`process_env`, read again a few times while a user process shows none (see :data:`ENV_RETRIES`).

    Not one whose environment may not be read at all (another user's process, as every process but one's
    own is to a user other than root; in some containers even init to root): it never becomes readable, and
    waiting for it cost 20 ms a process at every look (the end of every run).
    """
    env = process_env(pid)
    for _ in range(ENV_RETRIES):
        if env or _kernel_thread(pid) is not False or not _env_readable(pid):
            break
        time.sleep(ENV_RETRY_DELAY)
        env = process_env(pid)
    return env


def _env_readable(pid: int) -> bool:
    """Whether this process may read the environment of *pid* (False too if it is gone)."""
    try:
        os.close(os.open(f"/proc/{pid}/environ", os.O_RDONLY))
    except OSError:
        return False
    return True


def _kernel_thread(pid: int) -> bool | None:
    """Whether *pid* is a kernel thread; None if it is gone."""
    stat = _read_small(f"/proc/{pid}/stat")
    try:
        return bool(int(stat[stat.rfind(b")") + 2:].split()[6]) & _PF_KTHREAD) if stat is not None else None
    except (IndexError, ValueError):
        return None


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


def group_alive(pgid: int) -> bool:
    """Whether process group *pgid* still has a live member."""
    return any(True for _ in iter_pgid_members(pgid))


def signal_name(number: int) -> str:
    """``SIGTERM`` for 15; the number itself if no signal has it."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def kill_leftovers(leftovers: list[Leftover], grace: float) -> None:
    """SIGTERM each of *leftovers* that still runs, then SIGKILL those left after *grace* seconds."""
    for leftover in leftovers:
        signal_leftover(leftover, signal.SIGTERM)
    deadline = time.monotonic() + grace
    alive = [leftover for leftover in leftovers if still_running(leftover)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.02)
        alive = [leftover for leftover in alive if still_running(leftover)]
    for leftover in alive:
        signal_leftover(leftover, signal.SIGKILL)
