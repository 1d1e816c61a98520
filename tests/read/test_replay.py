"""The replay pipeline (pure, with fake sleep), and finding and reading an attempt's output."""

from __future__ import annotations

import gzip
import json
import os
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plainbox_like.read import replay
from plainbox_like.store import names, reader
from plainbox_like.store.iolog import IORecord
from plainbox_like.store.model import Attempt
from plainbox_like.read.replay import (
    AttemptNotFound,
    JobNotFound,
    cap_idle,
    play,
    select_streams,
    speed,
    to_absolute,
    to_relative,
)


def R(delay, data=b"x", stream="stdout"):
    return IORecord(float(delay), stream, data)


class FakeTime:
    """A clock that only moves when slept on (or when told to)."""

    def __init__(self):
        self.now = 100.0
        self.sleeps = []

    def monotonic(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


# -- pipeline stages -----------------------------------------------------------


def test_cap_idle_shortens_only_long_pauses():
    records = [R(0.5), R(3.0), R(2.0), R(10.0)]
    assert [r.delay for r in cap_idle(records, 2.0)] == [0.5, 2.0, 2.0, 2.0]
    assert [r.delay for r in cap_idle(records, None)] == [0.5, 3.0, 2.0, 10.0]
    assert [r.delay for r in cap_idle(records, 0)] == [0.0, 0.0, 0.0, 0.0]


def test_speed_divides_delays():
    records = [R(1.0), R(3.0), R(0.0)]
    assert [r.delay for r in speed(records, 2.0)] == [0.5, 1.5, 0.0]
    assert [r.delay for r in speed(records, 0.5)] == [2.0, 6.0, 0.0]
    assert list(speed(records, 1)) == records


@pytest.mark.parametrize("factor", [0, -1, float("nan")])
def test_speed_must_be_positive(factor):
    with pytest.raises(ValueError):
        list(speed([R(1)], factor))


def test_negative_idle_limit_is_refused():
    with pytest.raises(ValueError):
        list(cap_idle([R(1)], -1))


def test_stages_keep_data_and_streams():
    records = [R(1, b"a", "stdout"), R(5, b"b", "stderr")]
    out = list(speed(cap_idle(records, 2), 4))
    assert [(r.stream, r.data) for r in out] == [("stdout", b"a"), ("stderr", b"b")]
    assert [r.delay for r in out] == [0.25, 0.5]


def test_select_streams_carries_the_delays_of_dropped_records():
    records = [R(1, b"o1"), R(2, b"e1", "stderr"), R(3, b"e2", "stderr"), R(4, b"o2"), R(5, b"e3", "stderr")]
    out = list(select_streams(records, ["stdout"]))
    assert [(r.delay, r.data) for r in out] == [(1.0, b"o1"), (9.0, b"o2")]
    assert list(select_streams(records, ["stdout", "stderr"])) == records


def test_absolute_and_relative_times():
    records = [R(1), R(0.5), R(0), R(2)]
    timed = list(to_absolute(records))
    assert [t for t, _ in timed] == [1.0, 1.5, 1.5, 3.5]
    assert list(to_relative(timed)) == records


# -- play ------------------------------------------------------------------------


def test_play_sleeps_each_delay_and_writes_in_order():
    clock = FakeTime()
    written = []
    records = [R(0, b"a"), R(1.5, b"b"), R(0, b"c", "stderr"), R(0.25, b"d")]
    total = play(records, written.append, clock.sleep)
    assert written == [b"a", b"b", b"c", b"d"]
    assert clock.sleeps == [1.5, 0.25]
    assert total == 4


def test_play_with_clock_does_not_drift():
    clock = FakeTime()
    written = []

    def slow_write(data):
        written.append((clock.now, data))
        clock.now += 0.1  # writing takes time

    play([R(1, b"a"), R(1, b"b"), R(0.05, b"c"), R(1, b"d")], slow_write, clock.sleep, clock.monotonic)
    # Each record comes out at its recorded moment since the start.
    assert [round(t - 100.0, 9) for t, _ in written] == [1.0, 2.0, 2.1, 3.05]


def test_full_pipeline_idle_cap_then_speed_exactly():
    clock = FakeTime()
    written = []
    records = [R(0.2, b"1"), R(30.0, b"2", "stderr"), R(1.0, b"3"), R(4.0, b"4")]
    replay.replay(
        records,
        written.append,
        idle_limit=2.0,
        speed_factor=4.0,
        sleep=clock.sleep,
        clock=None,
    )
    assert written == [b"1", b"2", b"3", b"4"]
    assert clock.sleeps == [0.05, 0.5, 0.25, 0.5]


def test_full_pipeline_one_stream():
    clock = FakeTime()
    written = []
    records = [R(1.0, b"1"), R(3.0, b"2", "stderr"), R(1.0, b"3")]
    replay.replay(records, written.append, streams=["stdout"], idle_limit=10, sleep=clock.sleep, clock=None)
    assert written == [b"1", b"3"]
    assert clock.sleeps == [1.0, 4.0]


delays = st.lists(st.floats(min_value=0, max_value=1e4, allow_nan=False), max_size=30)


@given(delays, st.floats(min_value=0, max_value=100), st.floats(min_value=0.01, max_value=100))
def test_pipeline_properties(values, limit, factor):
    records = [R(d) for d in values]
    out = list(speed(cap_idle(records, limit), factor))
    assert len(out) == len(records)
    for before, after in zip(records, out):
        assert after.delay == pytest.approx(min(before.delay, limit) / factor)
        assert after.delay <= limit / factor * (1 + 1e-12)


# -- attempts and their output ----------------------------------------------------


def run_job(writer, job_id, chunks, attempt=1, outcome="pass", close=True):
    log, name = writer.new_log(job_id, attempt, started=0.0, clock=lambda: 0.0)
    writer.job_started(job_id, attempt, name)
    for now, stream, data in chunks:
        log.write(stream, data, now=now)
    if close:
        log.close()
        writer.job_finished(job_id, Attempt(outcome, return_code=0, io_log_filename=name, attempt=attempt))
    return log, name


def test_select_attempt(repo):
    writer = repo.create()
    writer.set_plan({"a": "1", "never": "2"}, ["a", "never"])
    run_job(writer, "a", [(1, "stdout", b"first")], attempt=1, outcome="fail")
    run_job(writer, "a", [(1, "stdout", b"second")], attempt=2)
    loaded = reader.load_session(writer.path)
    assert replay.select_attempt(loaded, "a").attempt == 2
    assert replay.select_attempt(loaded, "a", 1).result.outcome == "fail"
    with pytest.raises(AttemptNotFound, match=r"no attempt 3 .*attempts: 1, 2"):
        replay.select_attempt(loaded, "a", 3)
    with pytest.raises(JobNotFound, match=r"no job 'b' in session " + writer.id):
        replay.select_attempt(loaded, "b")
    with pytest.raises(JobNotFound, match="has not run yet"):
        replay.select_attempt(loaded, "never")
    writer.close()


def test_running_attempt_counts_as_latest(repo):
    writer = repo.create()
    run_job(writer, "a", [(1, "stdout", b"done")], attempt=1)
    log, _ = run_job(writer, "a", [(1, "stdout", b"now")], attempt=2, close=False)
    loaded = reader.load_session(writer.path)
    ref = replay.select_attempt(loaded, "a")
    assert (ref.attempt, ref.running) == (2, True)
    log.flush()
    assert [r.data for r in replay.read_output(loaded, ref).records] == [b"now"]
    log.close()
    writer.close()


def test_read_output_in_recorded_order(repo):
    writer = repo.create()
    chunks = [(0.5, "stdout", b"out1"), (1.0, "stderr", b"err1"), (2.5, "stdout", b"out2")]
    run_job(writer, "a", chunks)
    loaded = reader.load_session(writer.path)
    output = replay.read_output(loaded, replay.select_attempt(loaded, "a"))
    assert output.source == "record"
    assert output.complete
    assert [(r.delay, r.stream, r.data) for r in output.records] == [
        (0.5, "stdout", b"out1"),
        (0.5, "stderr", b"err1"),
        (1.5, "stdout", b"out2"),
    ]
    writer.close()


def test_read_output_of_a_cut_file(repo):
    writer = repo.create()
    log, name = run_job(writer, "a", [(1, "stdout", b"one"), (2, "stdout", b"two")], close=False)
    record_path = os.path.join(writer.path, name)
    size = os.path.getsize(record_path)  # both records were flushed (a second apart)
    log.write("stdout", b"three", now=2.1)
    log.close()
    writer.job_finished("a", Attempt("pass", io_log_filename=name))
    with open(record_path, "r+b") as f:
        f.truncate(size)
    loaded = reader.load_session(writer.path)
    output = replay.read_output(loaded, replay.select_attempt(loaded, "a"))
    assert [r.data for r in output.records] == [b"one", b"two"]
    assert not output.complete
    assert "cut" in output.problem
    assert output.raw_extra == {"stdout": 5}
    writer.close()


def test_read_output_falls_back_to_raw_files(repo):
    writer = repo.create()
    _, name = run_job(writer, "a", [(1, "stderr", b"E"), (2, "stdout", b"O")])
    os.unlink(os.path.join(writer.path, name))
    loaded = reader.load_session(writer.path)
    output = replay.read_output(loaded, replay.select_attempt(loaded, "a"))
    assert output.source == "raw"
    assert [(r.stream, r.data) for r in output.records] == [("stdout", b"O"), ("stderr", b"E")]
    writer.close()


def test_missing_logs_are_an_error(repo):
    writer = repo.create()
    _, name = run_job(writer, "a", [(1, "stdout", b"O")])
    stem = os.path.join(writer.path, name[: -len(".record.gz")])
    for ext in (".record.gz", ".stdout", ".stderr"):  # (the empty .stderr too, as sessions before it had none)
        os.unlink(stem + ext)
    loaded = reader.load_session(writer.path)
    with pytest.raises(replay.LogMissing, match="missing"):
        replay.read_output(loaded, replay.select_attempt(loaded, "a"))
    writer.close()


def test_attempt_without_log(repo):
    writer = repo.create()
    writer.job_finished("skipped", Attempt("skip", skip_reason="no hardware"))
    loaded = reader.load_session(writer.path)
    output = replay.read_output(loaded, replay.select_attempt(loaded, "skipped"))
    assert (output.source, output.records) == ("none", [])
    writer.close()


def test_plainbox_v1_inline_logs(tmp_path):
    path = tmp_path / "pbox"
    path.mkdir()
    doc = {
        "version": 1,
        "session": {
            "jobs": {"j": "c"},
            "results": {
                "j": [{"outcome": "pass", "io_log": [[0.1, "stdout", "aGk="], [0.2, "stderr", "b29wcw=="]]}]
            },
            "desired_job_list": ["j"],
            "metadata": {"title": "old", "flags": []},
        },
    }
    (path / "session").write_bytes(gzip.compress(json.dumps(doc).encode()))
    loaded = reader.load_session(str(path))
    output = replay.read_output(loaded, replay.select_attempt(loaded, "j"))
    assert output.source == "inline"
    assert [(r.stream, r.data) for r in output.records] == [("stdout", b"hi"), ("stderr", b"oops")]


def test_lock_file_of_other_host_does_not_matter_for_reading(repo):
    # Reading never depends on the writer: a session locked elsewhere reads the same.
    writer = repo.create()
    run_job(writer, "a", [(1, "stdout", b"x")])
    writer.abandon()
    with open(os.path.join(writer.path, names.LOCK_FILE), "w") as f:
        f.write(f"1 other-{socket.gethostname()}\n")
    loaded = reader.load_session(writer.path)
    assert [r.data for r in replay.read_output(loaded, replay.select_attempt(loaded, "a")).records] == [b"x"]
