"""The watcher: keeps ``index.sqlite3`` fresh while sessions are written.

A watchdog observer reports file events under ``sessions/``; events are
collapsed per session (a session is re-read once it has been quiet for
:data:`QUIET` seconds, and at the latest :data:`MAX_DELAY` seconds after its
first pending event), and only sessions whose stamps changed are re-read.

File events get lost (inotify queue overflow, the watch limit for new
directories, network file systems), so a stat-only reconcile runs at start
and every *interval* seconds, and at once when watchdog reports an overflow.
It is the full one (every session's directory, ``session`` and ``journal``
compared with the index; see :mod:`plainbox_like.index.query`): any change, also one
made in place to a finished session by another tool, is caught.
If the observer cannot start, or dies, the watcher polls: it reconciles
every *poll_interval* seconds.

One watcher per repository: it holds ``watch.lock`` (flock) in the repository
root, with its pid and host written in it; readers use the lock and the
heartbeat the watcher writes into the index at every reconcile to decide
whether they may skip their own reconcile.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket
import threading
import time
import warnings
from typing import Any, Callable

from plainbox_like.index import access
from plainbox_like.index import query as indexing
from plainbox_like.errors import PlainboxLikeError
from plainbox_like.store.paths import SESSION_SUFFIX

#: A session is re-read once no event came for it for this long (seconds)...
QUIET = 0.1
#: ...or at the latest this long after its first pending event.
MAX_DELAY = 0.5
#: Default seconds between reconcile scans.
DEFAULT_INTERVAL = 60.0
#: Seconds between scans when polling instead of watching.
DEFAULT_POLL_INTERVAL = 1.0
#: The shortest --interval and --poll-interval: shorter would only spin the CPU.
MIN_INTERVAL = 0.1
#: How long to wait for the watch lock before saying who holds it (a reader's probe holds it briefly).
LOCK_WAIT = 1.0
#: Longest sleep of the main loop: how quickly a stop request is noticed.
TICK = 0.2
#: Files of a session directory whose changes matter to the index.
RELEVANT_FILES = frozenset({"session", "journal"})
#: Minimum seconds between heartbeats written to the index.
HEARTBEAT_EVERY = 10.0


class WatcherRunning(PlainboxLikeError):
    """Another watcher holds the repository's watch lock."""

    def __init__(self, root: str, pid: int | None, host: str | None) -> None:
        self.pid = pid
        self.host = host
        who = f"pid {pid} on host {host}" if pid else "another process"
        super().__init__(f"{root}: a watcher is already running ({who})")


def acquire_watch_lock(root: str, wait: float = LOCK_WAIT) -> int:
    """Take the repository's watch lock (an open fd, released by closing it) or raise :class:`WatcherRunning`."""
    os.makedirs(root, mode=0o700, exist_ok=True)
    path = os.path.join(root, access.WATCH_LOCK_FILE)
    try:  # never through a symbolic link (it would create the link's target, wherever it points)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        raise indexing.IndexUnusable(f"{path}: is a symbolic link: the watch lock is never opened through one") from None
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                os.close(fd)
                raise
            if time.monotonic() >= deadline:
                try:
                    pid_text, host = os.pread(fd, 200, 0).decode("utf-8", "replace").split(None, 1)
                    pid: int | None = int(pid_text)
                    host = host.strip()
                except ValueError:
                    pid, host = None, None
                os.close(fd)
                raise WatcherRunning(root, pid, host) from None
            time.sleep(0.02)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
    return fd


def release_watch_lock(fd: int) -> None:
    try:
        os.ftruncate(fd, 0)
    finally:
        os.close(fd)


def default_observer(handler: Any, path: str) -> Any:
    """A watchdog observer (inotify on Linux) watching *path* recursively, not started yet.

    Only changes are asked for: with opens, reads and closes after reading
    (watchdog's default), every reader of a session, the watcher itself
    included, and even listing directories would flood the kernel's queue.
    """
    from watchdog import events
    from watchdog.observers import Observer

    observer = Observer()
    observer.schedule(
        handler,
        path,
        recursive=True,
        event_filter=[
            events.FileCreatedEvent,
            events.FileModifiedEvent,
            events.FileMovedEvent,
            events.FileDeletedEvent,
            events.FileClosedEvent,
            events.DirCreatedEvent,
            events.DirMovedEvent,
            events.DirDeletedEvent,
        ],
    )
    return observer


class _Handler:
    """A watchdog event handler that only notes which sessions changed (runs in the observer thread)."""

    def __init__(self, watcher: "Watcher") -> None:
        self.watcher = watcher

    def dispatch(self, event: Any) -> None:
        kind = getattr(event, "event_type", "")
        self.watcher.note(event.src_path, kind)
        dest = getattr(event, "dest_path", "")
        if dest:
            self.watcher.note(dest, kind)


class _OverflowSpy(logging.Handler):
    """Hears watchdog's warnings; an inotify queue overflow means events were lost: reconcile now."""

    def __init__(self, watcher: "Watcher") -> None:
        super().__init__(logging.WARNING)
        self.watcher = watcher

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001
            message = str(record.msg)
        if "overflow" in message.lower():
            self.watcher.events_lost("inotify queue overflow")


class Watcher:
    """Keeps the index of one repository fresh until :meth:`stop` is called."""

    def __init__(
        self,
        root: str,
        *,
        interval: float = DEFAULT_INTERVAL,
        poll: bool = False,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        quiet: float = QUIET,
        max_delay: float = MAX_DELAY,
        observer_factory: Callable[[Any, str], Any] | None = None,
        say: Callable[[str], None] | None = None,
        workers: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.root = os.path.abspath(root)
        self.sessions_dir = os.path.join(self.root, "sessions")
        self.interval = interval
        self.poll = poll
        self.poll_interval = poll_interval
        self.quiet = quiet
        self.max_delay = max_delay
        self.observer_factory = observer_factory or default_observer
        self.say = say or (lambda _msg: None)
        self.workers = workers
        self._clock = clock
        self._prefix = self.sessions_dir + os.sep
        self._lock = threading.Lock()
        self._pending: dict[str, list[float]] = {}
        self._wake = threading.Event()
        self._stop = False
        self._reconcile_now = False
        self._observer: Any = None
        self.index: indexing.SessionIndex | None = None
        #: "inotify" (or whatever the observer is) or "polling".
        self.mode = "polling"
        self.events = 0
        self.refreshes = 0
        self.reconciles = 0
        #: Called after every pass of the loop (tests use it to look inside).
        self.on_tick: Callable[["Watcher"], None] | None = None
        self.ready = threading.Event()

    # -- called from other threads or signal handlers

    def stop(self) -> None:
        """Ask the loop to finish (safe from a signal handler: sets a flag only)."""
        self._stop = True

    def note(self, path: str, kind: str = "") -> None:
        """A file event of *kind* (watchdog's ``event_type``) at *path* (observer thread)."""
        if not path.startswith(self._prefix):
            if path.rstrip(os.sep) == self.sessions_dir and kind in ("deleted", "moved"):
                self.events_lost("the sessions directory itself was moved or deleted")
            return
        name, sep, rest = path[len(self._prefix):].partition(os.sep)
        if not name.endswith(SESSION_SUFFIX) or name.startswith("."):
            return
        if sep and rest not in RELEVANT_FILES:
            return
        session = self._prefix + name
        now = self._clock()
        with self._lock:
            self.events += 1
            entry = self._pending.get(session)
            if entry is None:
                self._pending[session] = [now, now]
            else:
                entry[1] = now
        self._wake.set()

    def events_lost(self, why: str) -> None:
        """Events were lost: reconcile at once (any thread)."""
        if not self._reconcile_now:
            self.say(f"warning: file events were lost ({why}): reconciling")
        self._reconcile_now = True
        self._wake.set()

    # -- the loop

    def _take_due(self, now: float) -> tuple[list[str], float | None]:
        due = []
        next_due: float | None = None
        with self._lock:
            for session, (first, last) in list(self._pending.items()):
                when = min(last + self.quiet, first + self.max_delay)
                if now >= when:
                    due.append(session)
                    del self._pending[session]
                elif next_due is None or when < next_due:
                    next_due = when
        return due, next_due

    def _start_observer(self) -> None:
        if self.poll:
            self.mode = "polling"
            return
        try:
            observer = self.observer_factory(_Handler(self), self.sessions_dir)
            observer.start()
        except Exception as exc:  # noqa: BLE001 - inotify limits, missing support, ...
            self.say(
                f"warning: cannot watch {self.sessions_dir} for changes ({_describe(exc)}): "
                f"polling every {self.poll_interval:g} s instead"
            )
            self.mode = "polling"
            return
        self._observer = observer
        self.mode = "inotify" if "Inotify" in type(observer).__name__ else type(observer).__name__

    def _observer_died(self) -> bool:
        observer = self._observer
        if observer is None:
            return False
        alive = getattr(observer, "is_alive", None)
        if alive is None or alive():
            return False
        self.say(f"warning: the file watcher stopped: polling every {self.poll_interval:g} s instead")
        self._observer = None
        self.mode = "polling"
        return True

    def _stop_observer(self) -> None:
        observer, self._observer = self._observer, None
        if observer is not None:
            try:
                observer.stop()
                observer.join(5.0)
            except Exception:  # noqa: BLE001 - stopping anyway
                pass

    def _reconcile(self) -> indexing.ReconcileStats:
        assert self.index is not None
        stats = self.index.reconcile(full=True)  # file events may have been lost for any session
        self.reconciles += 1
        return stats

    def _heartbeat(self) -> None:
        assert self.index is not None
        self.index.set_info(
            indexing.HEARTBEAT_KEY,
            {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "interval": self.interval,
                "time": time.time(),
                "mode": self.mode,
            },
        )

    def run(self) -> None:
        """Watch until :meth:`stop`; raises :class:`WatcherRunning` if another watcher runs."""
        lock_fd = acquire_watch_lock(self.root)
        spy = _OverflowSpy(self)
        watchdog_logger = logging.getLogger("watchdog")
        watchdog_logger.addHandler(spy)
        # watchdog warns (warnings module) about races it resolves itself, e.g. a watch added twice
        # while a directory tree is copied in; the reconcile covers whatever it could not.
        warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"watchdog\.")
        try:
            os.makedirs(self.sessions_dir, mode=0o700, exist_ok=True)
            self.index = indexing.SessionIndex.open(
                self.root, notice=lambda msg: self.say(f"notice: {msg}"), workers=self.workers
            )
            # Watch first, then scan: a change during the scan is seen by one or the other.
            self._start_observer()
            started = time.perf_counter()
            stats = self._reconcile()
            self._heartbeat()
            every = self.interval if self.mode != "polling" else min(self.interval, self.poll_interval)
            self.say(
                f"watching {self.sessions_dir} ({self.mode}): {self.index.count()} sessions indexed"
                f" ({stats.read} read in {time.perf_counter() - started:.1f} s); reconcile every {every:g} s"
            )
            self.ready.set()
            self._loop()
        finally:
            self._stop_observer()
            watchdog_logger.removeHandler(spy)
            if self.index is not None:
                self.index.close()
            release_watch_lock(lock_fd)

    def _loop(self) -> None:
        assert self.index is not None
        now = self._clock()
        next_reconcile = now + self._scan_every()
        last_beat = now
        while not self._stop:
            self._wake.clear()
            now = self._clock()
            due, next_due = self._take_due(now)
            if due:
                try:
                    self.index.refresh(due)
                    self.refreshes += 1
                except Exception as exc:  # noqa: BLE001 - keep watching; the next reconcile catches up
                    self.say(f"warning: updating the index failed ({_describe(exc)}); will retry")
                    self._reconcile_now = True
            if self._observer_died():
                self._reconcile_now = True
            if self._reconcile_now or now >= next_reconcile:
                self._reconcile_now = False
                try:
                    stats = self._reconcile()
                    if stats.changed and self.mode != "polling":
                        self.say(
                            f"reconcile: {stats.added} new, {stats.updated} changed, {stats.removed} removed sessions"
                        )
                    if time.monotonic() - last_beat >= min(HEARTBEAT_EVERY, self.interval):
                        self._heartbeat()
                        last_beat = time.monotonic()
                except Exception as exc:  # noqa: BLE001
                    self.say(f"warning: reconcile failed ({_describe(exc)}); will retry")
                next_reconcile = self._clock() + self._scan_every()
            if self.on_tick is not None:
                self.on_tick(self)
            now = self._clock()
            timeout = min(TICK, max(0.0, next_reconcile - now))
            if next_due is not None:
                timeout = min(timeout, max(0.0, next_due - now))
            if not self._stop and timeout > 0:
                self._wake.wait(timeout)

    def _scan_every(self) -> float:
        return self.interval if self.mode != "polling" else min(self.interval, self.poll_interval)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return " ".join(str(exc).split()) or type(exc).__name__
