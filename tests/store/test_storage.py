"""Session directories: creation, permissions, journal, snapshots, loading, locking."""

from __future__ import annotations

import copy
import gzip
import json
import multiprocessing
import os
import random
import signal
import socket
import stat
import time
import subprocess
import sys
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plainbox_like.store import codec, iolog, locks, repository
from plainbox_like.store import writer as writing
from plainbox_like.store.names import IO_LOGS, JOURNAL_FILE, LOCK_FILE, SHARE_DIR, STATE_FILE
from plainbox_like.errors import CorruptSession, PlainboxLikeError, SessionLocked
from plainbox_like.store.model import Attempt
from plainbox_like.store.reader import load_session
from plainbox_like.store.writer import SessionWriter

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _python(script: str, *args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", script, *args], env=_env(), cwd=REPO, text=True, **kwargs
    )


def _mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# -- creation and permissions ---------------------------------------------------------


def _check_private(session_path: str) -> None:
    for sub in ("", IO_LOGS, SHARE_DIR):
        path = os.path.join(session_path, sub)
        assert stat.S_ISDIR(os.stat(path).st_mode), path
        assert _mode(path) == 0o700, path
    for name in (STATE_FILE, JOURNAL_FILE, LOCK_FILE):
        path = os.path.join(session_path, name)
        assert stat.S_ISREG(os.stat(path).st_mode), path
        assert _mode(path) == 0o600, path
    for entry in os.scandir(os.path.join(session_path, IO_LOGS)):
        assert _mode(entry.path) == 0o600, entry.path


def _create_in_child(sessions_dir, start, results):
    start.wait(30)
    try:
        writer = SessionWriter.create(sessions_dir, title="process")
        writer.close()
        results.put(("ok", writer.path))
    except BaseException as exc:  # pragma: no cover - reported to the test
        results.put(("error", repr(exc)))


def test_64_concurrent_creators_get_distinct_private_directories(tmp_path):
    sessions_dir = str(tmp_path / "not-yet" / "sessions")
    ctx = multiprocessing.get_context("fork")  # fork before any thread exists
    start = ctx.Event()
    results = ctx.Queue()
    processes = [ctx.Process(target=_create_in_child, args=(sessions_dir, start, results)) for _ in range(32)]
    for process in processes:
        process.start()

    thread_paths: list[str] = []
    thread_errors: list[BaseException] = []
    barrier = threading.Barrier(33)

    def create_in_thread():
        try:
            barrier.wait(30)
            writer = SessionWriter.create(sessions_dir, title="thread")
            writer.close()
            thread_paths.append(writer.path)
        except BaseException as exc:  # pragma: no cover - reported below
            thread_errors.append(exc)

    threads = [threading.Thread(target=create_in_thread) for _ in range(32)]
    for thread in threads:
        thread.start()
    start.set()
    barrier.wait(30)
    process_results = [results.get(timeout=60) for _ in processes]
    for thread in threads:
        thread.join(60)
    for process in processes:
        process.join(60)
        assert process.exitcode == 0

    assert not thread_errors
    assert all(kind == "ok" for kind, _ in process_results), process_results
    paths = thread_paths + [path for _, path in process_results]
    assert len(paths) == 64
    assert len(set(paths)) == 64
    assert sorted(os.listdir(sessions_dir)) == sorted(os.path.basename(p) for p in paths)
    assert _mode(sessions_dir) == 0o700
    titles = []
    for path in paths:
        assert path.endswith(".session")
        _check_private(path)
        titles.append(load_session(path).state.metadata.title)
    assert sorted(titles) == ["process"] * 32 + ["thread"] * 32


def test_files_are_private_even_with_a_permissive_umask(tmp_path):
    old = os.umask(0)
    try:
        writer = SessionWriter.create(str(tmp_path / "sessions"), title="t")
        stem = iolog.create_log_files(writer.io_logs_dir, "ns::job", 1)
        name = f"{IO_LOGS}/{stem}.record.gz"
        started = writer.job_started("ns::job", 1, name)
        log = iolog.RecordWriter(os.path.join(writer.io_logs_dir, stem), started=0.0, clock=lambda: 1.0)
        log.write("stdout", b"out")
        log.write("stderr", b"err")
        log.close(durable=True)
        writer.job_finished("ns::job", Attempt("pass", 0, 1.0, io_log_filename=name, started=started))
        iolog.create_log_files(writer.io_logs_dir, "ns::job", 2)
        writer.snapshot()  # a replaced state file keeps its mode
        writer.update_metadata(title="u")
        _check_private(writer.path)
        names = os.listdir(writer.io_logs_dir)
        assert {f"{stem}.record.gz", f"{stem}.stdout", f"{stem}.stderr"} <= set(names)
        assert len(names) >= 4
        writer.close()
        _check_private(writer.path)
        reopened = SessionWriter.open(writer.path)
        reopened.close()
        _check_private(writer.path)
    finally:
        os.umask(old)


# -- every change is durable and visible -----------------------------------------------


def _loaded_state(path):
    return load_session(path).state


@pytest.mark.parametrize("durability", ["fsync", "flush"])
def test_every_change_is_visible_when_record_returns(tmp_path, durability):
    writer = SessionWriter.create(str(tmp_path), title="t", durability=durability)
    assert _loaded_state(writer.path) == writer.state
    writer.set_plan({"a": "1", "b": "2", "c": "3"}, ["a", "b", "c"])
    assert _loaded_state(writer.path) == writer.state
    for round_ in range(3):
        for job in ("c", "a", "b"):
            writer.job_started(job, writer.state.next_attempt(job), None)
            assert _loaded_state(writer.path) == writer.state
        if round_ == 1:
            writer.snapshot()
        for job in ("b", "c", "a"):
            writer.job_finished(job, Attempt("pass", return_code=0, execution_duration=0.5, attempt=round_ + 1))
            loaded = load_session(writer.path)
            assert loaded.state == writer.state
            assert loaded.state.metadata.running_job_name == writer.state.metadata.running_job_name
        writer.update_metadata(title=f"round {round_}", tags=["x", str(round_)])
        assert _loaded_state(writer.path) == writer.state
    seq = writer.record({"op": "meta", "set": {"finished": 123.5}})
    loaded = load_session(writer.path)
    assert loaded.state.journal_seq == seq == writer.state.journal_seq
    assert loaded.state.metadata.finished == 123.5
    assert [a.attempt for a in loaded.state.results["a"]] == [1, 2, 3]
    writer.close()
    assert _loaded_state(writer.path) == writer.state


def test_running_job_name_survives_a_snapshot(tmp_path):
    writer = SessionWriter.create(str(tmp_path))
    for job in ("c", "a", "b"):
        writer.job_started(job, 1, None)
    writer.snapshot()
    writer.job_finished("b", Attempt("pass"))
    assert load_session(writer.path).state.metadata.running_job_name == writer.state.metadata.running_job_name
    writer.job_finished("a", Attempt("pass"))
    assert load_session(writer.path).state.metadata.running_job_name == writer.state.metadata.running_job_name == "c"
    writer.close()


JOBS = st.sampled_from(["a", "b", "c", "ns::d"])
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("start"), JOBS),
        st.tuples(st.just("finish"), JOBS),
        st.tuples(st.just("abandon"), JOBS),
        st.tuples(st.just("meta"), st.text(max_size=8)),
        st.tuples(st.just("snapshot"), st.none()),
    ),
    max_size=25,
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
def test_loaded_state_is_what_the_writer_has(tmp_path_factory, ops):
    writer = SessionWriter.create(str(tmp_path_factory.mktemp("s")), durability="flush")
    try:
        for op, arg in ops:
            if op == "start":
                writer.job_started(arg, writer.state.next_attempt(arg), None)
            elif op == "finish":
                writer.job_finished(arg, Attempt("fail", return_code=1, attempt=writer.state.next_attempt(arg)))
            elif op == "abandon":
                writer.record({"op": "abandon", "job": arg})
            elif op == "meta":
                writer.update_metadata(title=arg)
            else:
                writer.snapshot()
            loaded = load_session(writer.path).state
            assert loaded == writer.state
            assert loaded.metadata.running_job_name == writer.state.metadata.running_job_name
    finally:
        writer.close()


def _journal(writer):
    with open(os.path.join(writer.path, JOURNAL_FILE), "rb") as f:
        return f.read()


@pytest.mark.parametrize("durability", ["fsync", "flush"])
def test_changes_not_durable_yet_go_out_together_with_the_next_sync(tmp_path, durability, monkeypatch):
    writer = SessionWriter.create(str(tmp_path), durability=durability)
    writes = []
    real_write_all = writing._write_all
    monkeypatch.setattr(writing, "_write_all", lambda fd, data: (writes.append(data), real_write_all(fd, data)))
    before = _journal(writer)
    writer.job_finished("a", Attempt("pass", attempt=1), durable=False)
    writer.job_started("b", 1, None, durable=False)
    assert _journal(writer) == before and writes == []  # waiting in memory, not half written
    writer.sync()
    assert len(writes) == 1 and writes[0].count(b"\n") == 2  # a result and a start: one write
    assert _loaded_state(writer.path) == writer.state
    writer.sync()
    assert len(writes) == 1  # nothing left to write
    writer.close()


def test_abandon_writes_the_waiting_changes(tmp_path):
    writer = SessionWriter.create(str(tmp_path))
    writer.job_started("a", 1, None, durable=False)
    writer.abandon()
    assert load_session(writer.path).state.running_jobs.keys() == {"a"}


def test_a_failed_journal_write_leaves_no_partial_line(tmp_path, monkeypatch):
    """A full disk mid-write: the journal is cut back to its last whole line, and nothing is lost."""
    writer = SessionWriter.create(str(tmp_path))
    writer.set_plan({"a": "1", "b": "2"}, ["a", "b"])
    intact = _journal(writer)
    real_write_all = writing._write_all

    def half_then_full(fd, data):
        os.write(fd, data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writing, "_write_all", half_then_full)
    with pytest.raises(OSError, match="No space"):
        writer.job_started("a", 1, None)
    assert _journal(writer) == intact
    monkeypatch.setattr(writing, "_write_all", real_write_all)  # room again
    writer.job_finished("b", Attempt("pass", attempt=1))
    loaded = load_session(writer.path)
    assert loaded.journal_torn is None
    assert loaded.state == writer.state  # the change that failed went out with the next one
    assert "a" in loaded.state.running_jobs and "b" in loaded.state.results
    writer.close()


def test_unknown_durability_is_refused(tmp_path):
    with pytest.raises(PlainboxLikeError, match="durability"):
        SessionWriter.create(str(tmp_path), durability="never")


def test_record_after_close_is_refused(tmp_path):
    writer = SessionWriter.create(str(tmp_path))
    writer.close()
    with pytest.raises(PlainboxLikeError, match="closed"):
        writer.update_metadata(title="late")


# -- torn and corrupt journals -------------------------------------------------------


def _journaled_session(tmp_path, count=12):
    """A session with *count* changes in its journal (after the creation snapshot), and the state after each."""
    writer = SessionWriter.create(str(tmp_path / "sessions"), durability="flush")
    states = [copy.deepcopy(writer.state)]
    for i in range(count):
        if i % 3 == 0:
            writer.job_started(f"j{i}", 1, f"io-logs/j{i}.record.gz")
        elif i % 3 == 1:
            writer.job_finished(f"j{i - 1}", Attempt("pass", 0, 0.25, comments="ok " * i))
        else:
            writer.update_metadata(title=f"title {i}", tags=[str(i)])
        states.append(copy.deepcopy(writer.state))
    writer.abandon()  # leave the journal as it is
    journal = os.path.join(writer.path, JOURNAL_FILE)
    with open(journal, "rb") as f:
        data = f.read()
    assert data.count(b"\n") == count
    return writer.path, journal, data, states


def test_journal_is_replayed(tmp_path):
    path, _, _, states = _journaled_session(tmp_path)
    loaded = load_session(path)
    assert loaded.state == states[-1]
    assert loaded.journal_changes == 12
    assert loaded.journal_torn is None


def test_torn_last_line_is_ignored_and_reported(tmp_path):
    path, journal, data, states = _journaled_session(tmp_path)
    last_start = data.rstrip(b"\n").rfind(b"\n") + 1
    offsets = range(last_start + 1, len(data))  # every cut inside the last line (newline included)
    rng = random.Random(7)
    for offset in rng.sample(list(offsets), min(40, len(offsets))) + [len(data) - 1]:
        with open(journal, "wb") as f:
            f.write(data[:offset])
        loaded = load_session(path)
        assert loaded.state == states[-2], offset
        assert loaded.journal_torn is not None and "line 12" in loaded.journal_torn
        assert loaded.journal_changes == 11
    # A cut exactly at a line boundary is not torn at all.
    with open(journal, "wb") as f:
        f.write(data[:last_start])
    loaded = load_session(path)
    assert loaded.state == states[-2]
    assert loaded.journal_torn is None


@pytest.mark.parametrize(
    "tail",
    [b"garbage", b'{"op":"meta","seq":13,"set":{"title":"x', b'{"op":"meta","seq":13,"set":{}}', b"\0" * 37, b"\0" * 8 + b"\n", b'{"op":"me' + b"\0" * 100],
    ids=["garbage", "half-line", "no-newline", "nul-bytes", "nul-line", "half-line-then-nul"],
)
def test_damaged_tail_is_ignored_and_reported(tmp_path, tail):
    path, journal, data, states = _journaled_session(tmp_path)
    with open(journal, "ab") as f:
        f.write(tail)
    loaded = load_session(path)
    assert loaded.state == states[-1]
    assert loaded.journal_torn is not None
    assert "line 13" in loaded.journal_torn


@pytest.mark.parametrize("bad", [b"garbage", b'{"op":"meta"', b"\0\0\0\0", b"[1,2,3]", b'{"seq":"3","op":"meta"}'])
def test_bad_line_in_the_middle_is_an_error_naming_the_line(tmp_path, bad):
    path, journal, data, _ = _journaled_session(tmp_path)
    lines = data.split(b"\n")
    lines[2] = bad
    with open(journal, "wb") as f:
        f.write(b"\n".join(lines))
    with pytest.raises(CorruptSession) as info:
        load_session(path)
    assert info.value.path == journal
    assert info.value.line == 3
    assert f"{journal}:3:" in str(info.value)


def test_missing_line_in_the_middle_is_a_sequence_gap(tmp_path):
    path, journal, data, _ = _journaled_session(tmp_path)
    lines = data.split(b"\n")
    del lines[4]
    with open(journal, "wb") as f:
        f.write(b"\n".join(lines))
    with pytest.raises(CorruptSession, match="gap") as info:
        load_session(path)
    assert info.value.line == 5


def test_open_after_a_torn_tail_loses_nothing(tmp_path):
    path, journal, data, states = _journaled_session(tmp_path)
    with open(journal, "ab") as f:
        f.write(b'{"op":"result","job":"j0","res')
    writer = SessionWriter.open(path)
    assert writer.state.journal_seq == 13  # 12 journaled + the runner change of open()
    for i in range(12, 30):
        writer.job_finished(f"k{i}", Attempt("pass"))
        loaded = load_session(path)
        assert loaded.journal_torn is None
        assert loaded.state == writer.state
    writer.abandon()
    loaded = load_session(path)
    assert loaded.state.journal_seq == 31
    for job, attempts in states[-1].results.items():
        assert loaded.state.results[job] == attempts
    assert all(f"k{i}" in loaded.state.results for i in range(12, 30))
    assert loaded.state.metadata.title == states[-1].metadata.title
    assert loaded.state.metadata.runner.pid == os.getpid()


def test_open_after_a_cut_last_line(tmp_path):
    path, journal, data, states = _journaled_session(tmp_path)
    with open(journal, "wb") as f:
        f.write(data[:-5])
    writer = SessionWriter.open(path)
    writer.update_metadata(title="after")
    writer.close()
    loaded = load_session(path)
    assert loaded.state.results == states[-2].results
    assert loaded.state.metadata.title == "after"
    assert loaded.journal_torn is None


# -- snapshot policy ----------------------------------------------------------------------


def test_journal_stays_bounded_and_close_snapshots_everything(tmp_path):
    writer = SessionWriter.create(str(tmp_path), durability="flush")
    state_path = os.path.join(writer.path, STATE_FILE)
    journal_path = os.path.join(writer.path, JOURNAL_FILE)
    raw_sizes: dict[tuple, int] = {}
    largest_journal = 0
    for i in range(2500):
        before = os.path.getsize(journal_path)
        if i % 2:
            writer.job_finished(f"job-{i}", Attempt("pass", 0, 0.125, comments="c" * 60))
        else:
            writer.update_metadata(title=f"t{i}")
        after = os.path.getsize(journal_path)
        line = after - before if after > before else after
        st_ = os.stat(state_path)
        key = (st_.st_ino, st_.st_size, st_.st_mtime_ns)
        if key not in raw_sizes:
            with open(state_path, "rb") as f:
                raw_sizes[key] = len(gzip.decompress(f.read()))
        assert after <= max(writing.MIN_JOURNAL_BYTES, raw_sizes[key]) + line
        largest_journal = max(largest_journal, after)
    # The state outgrew the minimum, so both regimes were exercised.
    assert max(raw_sizes.values()) > writing.MIN_JOURNAL_BYTES
    assert largest_journal > writing.MIN_JOURNAL_BYTES // 2
    assert writer.snapshots >= 4
    assert load_session(writer.path).state == writer.state
    writer.close()
    assert os.path.getsize(journal_path) == 0
    with open(state_path, "rb") as f:
        alone = codec.decode_state(f.read(), state_path).state
    assert alone == writer.state
    assert alone.journal_seq == 2500
    loaded = load_session(writer.path)
    assert loaded.journal_changes == 0
    assert loaded.state == writer.state
    assert locks.lock_holder(writer.path) is None  # close() clears the lock file


def test_interval_snapshot_with_a_fake_clock(tmp_path):
    now = [100.0]
    writer = SessionWriter.create(str(tmp_path), durability="flush", clock=lambda: now[0])
    journal_path = os.path.join(writer.path, JOURNAL_FILE)
    snapshots = writer.snapshots
    writer.update_metadata(title="a")
    now[0] += 0.5
    writer.update_metadata(title="b")
    assert writer.snapshots == snapshots
    assert os.path.getsize(journal_path) > 0
    now[0] += writing.SNAPSHOT_INTERVAL + 0.1
    writer.tick()
    assert writer.snapshots == snapshots + 1
    assert os.path.getsize(journal_path) == 0
    writer.tick()  # nothing pending: no new snapshot
    assert writer.snapshots == snapshots + 1
    assert load_session(writer.path).state == writer.state
    writer.close()


# -- lock -----------------------------------------------------------------------------

HOLDER = """
import sys, time
from plainbox_like.store.writer import SessionWriter
writer = SessionWriter.open(sys.argv[1])
writer.update_metadata(title="held")
print("locked", flush=True)
time.sleep(120)
"""

SECOND = """
import sys
from plainbox_like.errors import SessionLocked
from plainbox_like.store.writer import SessionWriter
try:
    SessionWriter.open(sys.argv[1])
except SessionLocked as exc:
    print("LOCKED", exc.pid, exc.host, "|", exc)
else:
    print("OPENED")
"""


def test_second_writer_is_refused_until_the_holder_dies(tmp_path):
    writer = SessionWriter.create(str(tmp_path))
    writer.close()
    holder = _python(HOLDER, writer.path, stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == "locked"
        host = socket.gethostname()
        # From another process...
        second = _python(SECOND, writer.path, stdout=subprocess.PIPE)
        out, _ = second.communicate(timeout=60)
        assert out.startswith(f"LOCKED {holder.pid} {host} |"), out
        assert f"pid {holder.pid}" in out and host in out
        # ... and from this one.
        with pytest.raises(SessionLocked) as info:
            SessionWriter.open(writer.path)
        assert info.value.pid == holder.pid
        assert info.value.host == host
        assert f"pid {holder.pid} on host {host}" in str(info.value)
        assert writer.path in str(info.value)
        assert locks.writer_alive(writer.path)
        # Readers are not blocked by the lock.
        assert load_session(writer.path).state.metadata.title == "held"
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(30)
    assert not locks.writer_alive(writer.path)
    reopened = SessionWriter.open(writer.path)
    try:
        assert locks.lock_holder(writer.path) == (os.getpid(), socket.gethostname())
        assert reopened.state.metadata.title == "held"
        assert reopened.state.metadata.runner.pid == os.getpid()
    finally:
        reopened.close()


# -- readers during writes ---------------------------------------------------------------

READER_PROGRESS = """
def progress(count):
    name = os.path.join(path, "..", os.path.basename(sys.argv[2]))
    with open(name + ".tmp", "w") as f:
        f.write(str(count))
    os.replace(name + ".tmp", name)
"""

RAW_READER = """
import gzip, json, os, sys
path = sys.argv[1]
stop = os.path.join(path, "..", "STOP")
""" + READER_PROGRESS + """
print("ready", flush=True)
reads = failures = 0
last_error = None
while True:
    done = os.path.exists(stop)
    try:
        with open(os.path.join(path, "session"), "rb") as f:
            doc = json.loads(gzip.decompress(f.read()))
        assert set(doc) == {"format", "version", "session"}
        assert isinstance(doc["session"]["journal_seq"], int)
        reads += 1
        if reads % 10 == 0:
            progress(reads)
    except Exception as exc:
        failures += 1
        last_error = repr(exc)
    if done:
        break
print(json.dumps({"reads": reads, "failures": failures, "last_error": last_error}))
"""

LOAD_READER = """
import json, os, sys
from plainbox_like.store.reader import load_session
path = sys.argv[1]
stop = os.path.join(path, "..", "STOP")
""" + READER_PROGRESS + """
print("ready", flush=True)
loads = errors = decreases = 0
last = -1
last_error = None
while True:
    done = os.path.exists(stop)
    try:
        seq = load_session(path).state.journal_seq
        loads += 1
        if loads % 2 == 0:
            progress(loads)
        if seq < last:
            decreases += 1
        last = max(last, seq)
    except Exception as exc:
        errors += 1
        last_error = repr(exc)
    if done:
        break
print(json.dumps({"loads": loads, "errors": errors, "decreases": decreases, "last": last, "last_error": last_error}))
"""


def test_readers_never_see_a_broken_or_older_session(tmp_path, monkeypatch):
    monkeypatch.setattr(writing, "MIN_JOURNAL_BYTES", 4096)  # many automatic snapshots
    writer = SessionWriter.create(str(tmp_path / "sessions"), title="busy")
    sessions = tmp_path / "sessions"
    wanted = {"raw": 200, "load": 20}  # reads each reader must make while the writer writes

    def enough() -> bool:
        for name, count in wanted.items():
            try:
                if int((sessions / name).read_text() or 0) < count:
                    return False
            except (FileNotFoundError, ValueError):
                return False
        return True

    readers = [
        _python(script, writer.path, name, stdout=subprocess.PIPE)
        for script, name in ((RAW_READER, "raw"), (LOAD_READER, "load"))
    ]
    try:
        for reader in readers:
            assert reader.stdout.readline().strip() == "ready"
        rng = random.Random(3)
        running: list[str] = []
        for i in range(1, 2001):
            kind = rng.random()
            if kind < 0.4 and len(running) < 8:
                job = rng.choice([f"job-{n}" for n in range(60) if f"job-{n}" not in running])
                writer.job_started(job, writer.state.next_attempt(job), None)
                running.append(job)
            elif kind < 0.8 and running:
                job = running.pop(rng.randrange(len(running)))
                attempt = writer.state.running_jobs[job].attempt
                writer.job_finished(job, Attempt("pass", 0, rng.random(), attempt=attempt))
            else:
                writer.update_metadata(title=f"busy {i}", tags=[str(i)])
            if i % 20 == 0:
                writer.snapshot()
        # However loaded the machine, the readers get their reads in while the session changes.
        deadline = time.monotonic() + 120
        extra = 0
        while not enough() and time.monotonic() < deadline:
            extra += 1
            writer.update_metadata(title=f"busy more {extra}")
            if extra % 20 == 0:
                writer.snapshot()
        final_seq = writer.state.journal_seq
        assert final_seq == 2000 + extra
        assert writer.snapshots > 100
        writer.close()
    finally:
        open(os.path.join(tmp_path, "sessions", "STOP"), "w").close()
        outputs = [reader.communicate(timeout=60)[0] for reader in readers]
    raw, loads = (json.loads(out.strip().splitlines()[-1]) for out in outputs)
    assert raw["failures"] == 0, raw
    assert raw["reads"] > wanted["raw"], raw
    assert loads["errors"] == 0, loads
    assert loads["decreases"] == 0, loads
    assert loads["loads"] > wanted["load"], loads
    assert loads["last"] == final_seq


def test_reserved_log_names_never_collide_with_files_or_each_other(tmp_path):
    repo = repository.SessionRepository(str(tmp_path))
    writer = repo.create()
    path = writer.path
    first = writer.reserve_log("a/b", 1)
    writer.open_log(first).close()
    writer.close()
    # A later writer (a resume) lists what exists; same-slug ids and attempts get their own names.
    writer = repo.open(path)
    names = {first, writer.reserve_log("a/b", 1), writer.reserve_log("a_b", 1), writer.reserve_log("a/b", 2)}
    assert len(names) == 4
    assert not any(n for n in names - {first} if os.path.exists(os.path.join(path, "io-logs", n + ".record.gz")))
    writer.close()


def test_a_job_named_as_another_jobs_log_never_shares_its_files(tmp_path):
    # A first attempt named as its job is not kept in the writer's set of names (memory: one a job of a
    # long run): the state says it is taken, while the job runs and once it has a result.
    writer = repository.SessionRepository(str(tmp_path)).create()
    chosen = []
    for job_id in ("a_b", "a/b", "c_d", "c/d", "a_b.attempt-2", "a_b"):
        attempt = writer.state.next_attempt(job_id)
        stem = writer.reserve_log(job_id, attempt)
        writer.job_started(job_id, attempt, f"io-logs/{stem}.record.gz")
        if job_id != "c_d":  # it still runs when the next names are chosen
            writer.job_finished(job_id, Attempt(outcome="pass", attempt=attempt, io_log_filename=stem))
        chosen.append(stem)
    assert chosen[0] == "a_b" and chosen[2] == "c_d" and chosen[4] == "a_b.attempt-2"  # Plainbox's names
    assert chosen[5] != "a_b.attempt-2"  # the second attempt of a_b: its name is another job's
    assert len(set(chosen)) == 6, chosen
    writer.close()


# -- a full disk -----------------------------------------------------------------------


def _no_space(*_args, **_kwargs):
    raise OSError(28, "No space left on device")


def test_a_session_that_cannot_be_created_leaves_nothing_behind(tmp_path, monkeypatch):
    from plainbox_like.errors import CannotWrite

    sessions = tmp_path / "sessions"
    monkeypatch.setattr(writing, "write_atomically", _no_space)  # its first snapshot does not fit
    with pytest.raises(CannotWrite, match="cannot create a session .No space left on device"):
        SessionWriter.create(str(sessions), title="t")
    assert os.listdir(sessions) == []  # no half-made directory to list as a broken session


def test_a_session_that_cannot_be_reopened_stays_as_it_was(tmp_path, monkeypatch):
    from plainbox_like.errors import CannotWrite

    writer = SessionWriter.create(str(tmp_path), title="t")
    writer.job_started("a", 1, None)
    writer.abandon()  # as if its runner died
    before = load_session(writer.path).state
    monkeypatch.setattr(writing, "write_atomically", _no_space)
    with pytest.raises(CannotWrite, match="cannot write the session"):
        SessionWriter.open(writer.path)
    assert load_session(writer.path).state == before
    monkeypatch.undo()
    again = SessionWriter.open(writer.path)  # the lock was let go
    assert again.state.running_jobs.keys() == {"a"}
    again.close()
