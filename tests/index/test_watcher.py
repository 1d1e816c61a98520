"""The watcher: file events, debouncing, reconcile after lost events, the lock, polling, signals."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import signal
import subprocess
import threading
import time

import pytest

from plainbox_like.index import access
from plainbox_like.index import query as indexing
from plainbox_like.store import reader
from plainbox_like.store.names import JOURNAL_FILE
from plainbox_like.store.model import Attempt
from plainbox_like.store.repository import SessionRepository
from plainbox_like.index.watcher import Watcher, WatcherRunning, default_observer
from cli_helpers import cli, cli_argv, cli_env
from factories import wait_until

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(HERE)


class Running:
    """A watcher running in a thread, stopped at the end of the test."""

    def __init__(self, watcher: Watcher) -> None:
        self.watcher = watcher
        self.messages: list[str] = []
        watcher.say = self.messages.append
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.watcher.run()
        except BaseException as exc:  # noqa: BLE001
            self.error = exc

    def __enter__(self) -> "Running":
        self.thread.start()
        assert wait_until(lambda: self.watcher.ready.is_set() or self.error is not None, 30)
        if self.error is not None:
            raise self.error
        return self

    def __exit__(self, *exc: object) -> None:
        self.watcher.stop()
        self.thread.join(10)
        assert not self.thread.is_alive()


def refreshes(monkeypatch):
    """The names of the sessions the index is asked to refresh from now on (the watcher's re-reads)."""
    names = []
    real = indexing.SessionIndex.refresh

    def refresh(self, paths, *args, **kwargs):
        paths = list(paths)
        names.extend(os.path.basename(path) for path in paths)
        return real(self, paths, *args, **kwargs)

    monkeypatch.setattr(indexing.SessionIndex, "refresh", refresh)
    return names


def indexed(root):
    """id -> summary, read from the index file by a separate connection (as list does with a watcher)."""
    with indexing.SessionIndex.open(root) as index:
        return {s.id: s for s in index.summaries()}


def make(repo, title="s", close=True):
    writer = repo.create(title=title, durability="flush")
    writer.set_plan({"a": "1", "b": "2"}, ["a", "b"])
    if close:
        writer.close()
    return writer


class SilentObserver:
    """An observer that starts and stays alive but delivers no events: every event is lost."""

    def __init__(self, handler, path):
        self.alive = False

    def start(self):
        self.alive = True

    def stop(self):
        self.alive = False

    def join(self, timeout=None):
        pass

    def is_alive(self):
        return self.alive


class DroppingObserver:
    """A real observer whose events are dropped with probability *drop* (deterministically: every n-th kept)."""

    def __init__(self, keep_every: int):
        self.keep_every = keep_every

    def __call__(self, handler, path):
        outer = self

        class Dropper:
            count = 0

            def dispatch(self, event):
                Dropper.count += 1
                if outer.keep_every and Dropper.count % outer.keep_every == 0:
                    handler.dispatch(event)

        return default_observer(Dropper(), path)


# -- events -------------------------------------------------------------------------


def test_new_result_is_visible_within_seconds(repo, root):
    writer = make(repo, "live", close=False)
    with Running(Watcher(root, interval=60)) as running:
        assert running.watcher.mode == "inotify"
        assert indexed(root)[writer.id].counts == {}
        started = time.monotonic()
        writer.job_finished("a", Attempt("pass", return_code=0))
        assert wait_until(lambda: indexed(root)[writer.id].counts == {"pass": 1}, 5)
        assert time.monotonic() - started < 3
        writer.close()
        assert wait_until(lambda: indexed(root)[writer.id].status == "incomplete", 5)
        assert running.watcher.reconciles == 1  # only the one at start: events did it


def test_new_and_removed_sessions_follow_the_directory(repo, root):
    with Running(Watcher(root, interval=60)) as running:
        writer = make(repo, "appears")
        assert wait_until(lambda: writer.id in indexed(root), 5)
        shutil.rmtree(writer.path)
        assert wait_until(lambda: writer.id not in indexed(root), 5)
        assert running.watcher.reconciles == 1


def test_io_log_writes_do_not_reread_the_session(repo, root, monkeypatch):
    writer = make(repo, "chatty", close=False)
    loads = []
    real = reader.load_session
    monkeypatch.setattr(reader, "load_session", lambda path, *a, **k: loads.append(path) or real(path, *a, **k))
    refreshed = refreshes(monkeypatch)
    with Running(Watcher(root, interval=60)):
        loads.clear()
        log, _name = writer.new_log("a", 1)
        for _ in range(50):
            log.write("stdout", b"x" * 100)  # the raw .stdout file is written at once
            log.flush()
        log.close()
        # A change the watcher must act on, made after the writes: once it is indexed, the events
        # before it have been handled too (one observer thread, events in order).
        later = make(repo, "later")
        assert wait_until(lambda: os.path.basename(later.path) in refreshed, 10)
        assert os.path.basename(writer.path) not in refreshed
        assert writer.path not in loads
    writer.close()


def test_reading_sessions_makes_no_events(repo, root, monkeypatch):
    writers = [make(repo, f"s{n}") for n in range(3)]
    refreshed = refreshes(monkeypatch)
    with Running(Watcher(root, interval=60)) as running:
        for _ in range(20):
            for writer in writers:
                reader.load_session(writer.path)
                os.listdir(writer.path)
        assert running.watcher.events == 0
        later = make(repo, "later")  # seen after the reads' events, if they made any (events come in order)
        assert wait_until(lambda: os.path.basename(later.path) in refreshed, 10)
        assert set(refreshed) == {os.path.basename(later.path)}


# -- lost events -----------------------------------------------------------------------


def test_lost_events_are_recovered_by_the_reconcile(repo, root):
    watcher = Watcher(root, interval=0.5, observer_factory=SilentObserver)
    with Running(watcher):
        assert watcher.mode != "polling"
        writers = [make(repo, f"s{n}") for n in range(5)]
        assert wait_until(lambda: set(indexed(root)) == {w.id for w in writers}, 5)
        shutil.rmtree(writers[0].path)
        assert wait_until(lambda: writers[0].id not in indexed(root), 5)
        assert watcher.events == 0 and watcher.reconciles >= 2


def test_the_watchers_reconcile_compares_every_file(repo, root, monkeypatch):
    """A finished session edited in place (its directory unchanged) is caught by the watcher's reconcile
    even when its file events are lost (list's quick reconcile stats only the directory of such a one)."""
    monkeypatch.setattr("plainbox_like.index.stamps.RACY_SECONDS", -1.0)  # finished sessions settle at once
    writer = make(repo, "edited in place")
    watcher = Watcher(root, interval=0.3, observer_factory=SilentObserver)
    with Running(watcher):
        assert wait_until(lambda: writer.id in indexed(root), 5)
        seq = reader.load_session(writer.path).state.journal_seq + 1
        with open(os.path.join(writer.path, JOURNAL_FILE), "ab") as f:
            f.write(b'{"seq": %d, "op": "result", "job": "a", "result": {"outcome": "fail"}, "t": 1.0}\n' % seq)
        assert wait_until(lambda: indexed(root)[writer.id].counts == {"fail": 1}, 5)


def test_many_sessions_with_most_events_dropped(repo, root, tmp_path):
    staging = SessionRepository(str(tmp_path / "staging"))
    made = [make(staging, f"burst {n}") for n in range(60)]
    watcher = Watcher(root, interval=1.0, observer_factory=DroppingObserver(keep_every=7))
    with Running(watcher):
        os.makedirs(repo.sessions_dir, exist_ok=True)
        for writer in made:  # appear at once
            os.rename(writer.path, os.path.join(repo.sessions_dir, os.path.basename(writer.path)))
        assert wait_until(lambda: set(indexed(root)) == {w.id for w in made}, 10)


def test_an_inotify_overflow_triggers_a_reconcile_at_once(repo, root):
    watcher = Watcher(root, interval=3600, observer_factory=SilentObserver)
    with Running(watcher) as running:
        writer = make(repo, "missed")
        # Nothing can index it but the overflow: no events, the first reconcile was done before ready.
        assert writer.id not in indexed(root) and running.watcher.reconciles == 1
        logging.getLogger("watchdog.observers.inotify_c").warning("Inotify queue overflowed; filesystem events were lost")
        assert wait_until(lambda: writer.id in indexed(root), 5)
        assert any("lost" in m for m in running.messages)


# -- one watcher, polling, stopping ------------------------------------------------------


def test_a_second_watcher_is_refused_naming_the_holder(root):
    with Running(Watcher(root, interval=60)):
        with pytest.raises(WatcherRunning) as caught:
            Watcher(root).run()
        assert caught.value.pid == os.getpid()
        assert f"pid {os.getpid()}" in str(caught.value)
        assert access.watch_lock_holder(root)[0] == os.getpid()
    assert access.watch_lock_holder(root) is None


def test_second_watcher_from_the_command_line(root):
    with Running(Watcher(root, interval=60)):
        result = cli(root, "watch", timeout=60, cwd=ROOT)
    assert result.returncode == 2
    assert f"pid {os.getpid()}" in result.stderr and "already running" in result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_polling_when_the_observer_cannot_start(repo, root):
    def no_inotify(handler, path):
        raise OSError(errno.ENOSPC, "inotify watch limit reached")

    watcher = Watcher(root, interval=60, poll_interval=0.2, observer_factory=no_inotify)
    with Running(watcher) as running:
        assert watcher.mode == "polling"
        warning = [m for m in running.messages if "warning" in m]
        assert len(warning) == 1 and "inotify watch limit reached" in warning[0] and "polling" in warning[0]
        writer = make(repo, "polled", close=False)
        assert wait_until(lambda: writer.id in indexed(root), 5)
        writer.job_finished("a", Attempt("fail"))
        assert wait_until(lambda: indexed(root)[writer.id].counts == {"fail": 1}, 5)
        writer.close()


def test_polling_when_the_observer_dies(repo, root):
    class DyingObserver(SilentObserver):
        def is_alive(self):
            return False

    watcher = Watcher(root, interval=60, poll_interval=0.2, observer_factory=DyingObserver)
    with Running(watcher) as running:
        assert wait_until(lambda: watcher.mode == "polling", 5)
        assert any("stopped" in m and "polling" in m for m in running.messages)
        writer = make(repo, "after the death")
        assert wait_until(lambda: writer.id in indexed(root), 5)


def test_list_trusts_a_running_watcher(repo, root, monkeypatch):
    make(repo, "one")
    with Running(Watcher(root, interval=60)):
        with indexing.SessionIndex.open(root) as index:
            assert access.watcher_keeps_fresh(index)
        calls = []
        monkeypatch.setattr(indexing.SessionIndex, "reconcile", lambda self: calls.append(1))
        with access.fresh_index(root) as index:
            assert index.count() == 1
        assert calls == []
    with access.fresh_index(root) as index:
        pass
    assert calls == [1]  # no watcher: list reconciles first


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_watch_stops_cleanly_on_a_signal(repo, root, signum):
    make(repo, "indexed by the command")
    proc = subprocess.Popen(
        cli_argv(root, "watch", "--interval", "60"),
        env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    try:
        line = proc.stderr.readline()
        assert "watching" in line and "1 sessions indexed" in line
        assert access.watch_lock_holder(root)[0] == proc.pid
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "stopped" in err
    assert access.watch_lock_holder(root) is None


def test_watch_once_reconciles_and_exits(repo, root):
    writer = make(repo, "once")
    result = cli(root, "watch", "--once", timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "1 sessions; 1 new" in result.stderr
    assert writer.id in indexed(root)
