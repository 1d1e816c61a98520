"""``plainbox-like log`` (including ``--follow``) and ``replay``."""

from __future__ import annotations

import gzip
import json
import os
import socket
import threading

import pytest

from plainbox_like.store import names, reader
from plainbox_like.cli import log as cli_log
from plainbox_like.cli.main import build_parser
from plainbox_like.store.model import Attempt
from cli_helpers import assert_one_line_error, run
from factories import dead_pid, wait_until

ALL_BYTES = bytes(range(256)) * 3


def run_job(writer, job_id, chunks, attempt=1, outcome="pass", close=True):
    """Record *chunks* ``(seconds since start, stream, bytes)`` as one attempt of *job_id*."""
    log, name = writer.new_log(job_id, attempt, started=0.0, clock=lambda: 0.0)
    writer.job_started(job_id, attempt, name)
    for now, stream, data in chunks:
        log.write(stream, data, now=now)
    if close:
        log.close()
        writer.job_finished(job_id, Attempt(outcome, return_code=0, io_log_filename=name, attempt=attempt))
    return log, name


INTERLEAVED = [(0.1, "stdout", b"out-1\n"), (0.2, "stderr", b"err-1\n"), (0.3, "stdout", b"out-2\n")]


@pytest.fixture
def session(repo):
    writer = repo.create(title="logs")
    writer.set_plan({"bin": "1", "mixed": "2", "todo": "3"}, ["bin", "mixed", "todo"])
    run_job(writer, "bin", [(0.5, "stdout", ALL_BYTES[:300]), (1.0, "stdout", ALL_BYTES[300:])])
    run_job(writer, "mixed", INTERLEAVED)
    writer.close()
    return writer


def test_commands_are_registered_with_help():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    helps = {c.dest: c.help for c in sub._choices_actions}
    for name in ("log", "replay"):
        assert helps[name]
        assert sub.choices[name].description


# -- log ---------------------------------------------------------------------------


def test_binary_output_is_byte_exact(session, root, capfdbinary):
    assert run(root, "log", session.id, "bin") == 0
    out, err = capfdbinary.readouterr()
    assert out == ALL_BYTES
    assert err == b""


def test_both_streams_interleave_in_recorded_order(session, root, capfdbinary):
    assert run(root, "log", session.id, "mixed") == 0
    assert capfdbinary.readouterr().out == b"out-1\nerr-1\nout-2\n"


@pytest.mark.parametrize("stream, expected", [("stdout", b"out-1\nout-2\n"), ("stderr", b"err-1\n")])
def test_one_stream(session, root, capfdbinary, stream, expected):
    assert run(root, "log", session.id, "mixed", "--stream", stream) == 0
    assert capfdbinary.readouterr().out == expected


def test_attempts(repo, root, capfdbinary):
    writer = repo.create()
    run_job(writer, "j", [(1, "stdout", b"first\n")], attempt=1, outcome="fail")
    run_job(writer, "j", [(1, "stdout", b"second\n")], attempt=2)
    writer.close()
    assert run(root, "log", writer.id, "j") == 0
    assert capfdbinary.readouterr().out == b"second\n"
    assert run(root, "log", writer.id, "j", "--attempt", "1") == 0
    assert capfdbinary.readouterr().out == b"first\n"


def test_running_attempt_is_the_latest(repo, root, capfdbinary):
    writer = repo.create()
    run_job(writer, "j", [(1, "stdout", b"first\n")], attempt=1)
    log, _ = run_job(writer, "j", [(1, "stdout", b"partial\n")], attempt=2, close=False)
    log.flush()
    try:
        assert run(root, "log", writer.id, "j") == 0
        out, err = capfdbinary.readouterr()
        assert out == b"partial\n"
        assert b"still running" in err
    finally:
        log.close()
        writer.close()


def test_cut_record_file_prints_prefix_and_a_note(repo, root, capfdbinary):
    writer = repo.create()
    log, name = run_job(writer, "j", [(1, "stdout", b"one\n"), (2, "stdout", b"two\n")], close=False)
    record_path = os.path.join(writer.path, name)
    size = os.path.getsize(record_path)  # both records were flushed
    log.write("stdout", b"three\n", now=2.1)
    log.close()
    writer.job_finished("j", Attempt("crash", io_log_filename=name))
    writer.close()
    with open(record_path, "r+b") as f:
        f.truncate(size)
    assert run(root, "log", writer.id, "j") == 0
    out, err = capfdbinary.readouterr()
    assert out == b"one\ntwo\n"
    lines = err.decode().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("plainbox-like: note: ")
    assert "cut" in lines[0]
    assert "6 more bytes" in lines[0]


def test_missing_record_file_falls_back_to_raw_files(session, root, capfdbinary):
    loaded = reader.load_session(session.path)
    name = loaded.state.results["mixed"][0].io_log_filename
    os.unlink(os.path.join(session.path, name))
    assert run(root, "log", session.id, "mixed") == 0
    out, err = capfdbinary.readouterr()
    assert out == b"out-1\nout-2\nerr-1\n"
    assert b"raw" in err and len(err.splitlines()) == 1
    assert run(root, "log", session.id, "mixed", "--stream", "stderr") == 0
    assert capfdbinary.readouterr().out == b"err-1\n"


def test_plainbox_v1_inline_log(tmp_path, root, capfdbinary):
    path = tmp_path / "pbox"
    path.mkdir()
    doc = {
        "version": 1,
        "session": {
            "jobs": {"j": "c"},
            "results": {"j": [{"outcome": "pass", "io_log": [[0.1, "stdout", "aGkK"], [0.2, "stderr", "AP8="]]}]},
            "metadata": {"title": "old", "flags": []},
        },
    }
    (path / "session").write_bytes(gzip.compress(json.dumps(doc).encode()))
    assert run(root, "log", str(path), "j") == 0
    assert capfdbinary.readouterr().out == b"hi\n\x00\xff"


def test_unknown_session(root, capfd):
    assert run(root, "log", "nosuch", "j") == 2
    out, err = capfd.readouterr()
    assert out == ""
    assert_one_line_error(err, "nosuch")


def test_unknown_job(session, root, capfd):
    assert run(root, "log", session.id, "nope") == 2
    out, err = capfd.readouterr()
    assert out == ""
    assert_one_line_error(err, "'nope'", session.id)


def test_job_not_run_yet(session, root, capfd):
    assert run(root, "log", session.id, "todo") == 2
    assert_one_line_error(capfd.readouterr().err, "'todo'", "not run yet")


def test_unknown_attempt(session, root, capfd):
    assert run(root, "log", session.id, "bin", "--attempt", "4") == 2
    assert_one_line_error(capfd.readouterr().err, "no attempt 4", "attempts: 1")


def test_bad_attempt_number_is_a_usage_error(session, root, capfd):
    with pytest.raises(SystemExit) as exc:
        run(root, "log", session.id, "bin", "--attempt", "0")
    assert exc.value.code == 2


# -- log --follow --------------------------------------------------------------------


@pytest.fixture
def fast_follow(monkeypatch):
    monkeypatch.setattr(cli_log, "FOLLOW_POLL", 0.02)
    monkeypatch.setattr(cli_log, "FOLLOW_RELOAD", 0.05)


def shown(size: int, late: list) -> None:
    """Wait (in the job's thread) until the follower has printed *size* bytes to the captured stdout,
    so that what the job writes next is written while it follows; a timeout is noted in *late*."""
    if not wait_until(lambda: os.fstat(1).st_size >= size):
        late.append(size)


def test_follow_streams_until_the_job_finishes(repo, root, capfdbinary, fast_follow):
    writer = repo.create()
    log, name = writer.new_log("slow", 1)
    writer.job_started("slow", 1, name)
    log.write("stdout", b"before\n")
    log.flush()
    later = [("stdout", b"tick 1\n"), ("stderr", b"warn\n"), ("stdout", b"tick 2\n"), ("stdout", b"\x00\xff")]
    late = []

    def job():
        printed = len(b"before\n")
        for stream, data in later:
            shown(printed, late)
            log.write(stream, data)
            printed += len(data) if stream == "stdout" else 0
        shown(printed, late)
        log.close()
        writer.job_finished("slow", Attempt("pass", return_code=0, io_log_filename=name))

    thread = threading.Thread(target=job)
    thread.start()
    try:
        assert run(root, "log", writer.id, "slow", "--follow", "--stream", "stdout") == 0
    finally:
        thread.join(10)
        writer.close()
    out, err = capfdbinary.readouterr()
    assert out == b"before\ntick 1\ntick 2\n\x00\xff"
    assert err == b""
    assert late == []  # each chunk was printed before the next was written: followed, not read at the end


def test_follow_both_streams(repo, root, capfdbinary, fast_follow):
    writer = repo.create()
    log, name = writer.new_log("slow", 1)
    writer.job_started("slow", 1, name)
    log.write("stderr", b"E0\n")
    log.write("stdout", b"O0\n")
    log.flush()

    late = []

    def job():
        shown(6, late)
        log.write("stdout", b"O1\n")
        shown(9, late)
        log.write("stderr", b"E1\n")
        log.close()
        shown(12, late)
        writer.job_finished("slow", Attempt("fail", return_code=1, io_log_filename=name))

    thread = threading.Thread(target=job)
    thread.start()
    try:
        assert run(root, "log", writer.id, "slow", "-f") == 0
    finally:
        thread.join(10)
        writer.close()
    out = capfdbinary.readouterr().out
    # What was recorded before following started keeps its order exactly.
    assert out.startswith(b"E0\nO0\n")
    assert sorted(out.splitlines()) == [b"E0", b"E1", b"O0", b"O1"]
    assert late == []


def test_follow_stops_when_the_writer_dies(repo, root, capfdbinary, fast_follow):
    writer = repo.create()
    log, name = writer.new_log("slow", 1)
    writer.job_started("slow", 1, name)
    log.write("stdout", b"last words\n")
    lock = os.path.join(writer.path, names.LOCK_FILE)

    late = []

    def crash():
        shown(len(b"last words\n"), late)  # it follows: then the runner dies
        with open(lock, "w") as f:  # as if the runner had been killed
            f.write(f"{dead_pid()} {socket.gethostname()}\n")

    thread = threading.Thread(target=crash)
    thread.start()
    try:
        assert run(root, "log", writer.id, "slow", "--follow") == 0
    finally:
        thread.join(10)
        log.close()
        writer.close()
    out, err = capfdbinary.readouterr()
    assert out == b"last words\n"
    assert b"writer stopped" in err
    assert late == []


def test_follow_of_a_finished_job_is_a_plain_log(session, root, capfdbinary):
    assert run(root, "log", session.id, "mixed", "--follow") == 0
    out, err = capfdbinary.readouterr()
    assert out == b"out-1\nerr-1\nout-2\n"
    assert err == b""


# -- replay ----------------------------------------------------------------------------


class FakeTime:
    def __init__(self):
        self.now = 0.0
        self.sleeps = []

    def monotonic(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(round(seconds, 9))
        self.now += seconds


@pytest.fixture
def fake_time(monkeypatch):
    fake = FakeTime()
    monkeypatch.setattr(cli_log, "time", fake)
    return fake


@pytest.fixture
def timed(repo):
    writer = repo.create()
    run_job(writer, "t", [(1.0, "stdout", b"a"), (11.0, "stderr", b"b"), (12.0, "stdout", b"c")])
    writer.close()
    return writer


def test_replay_with_timing(timed, root, capfdbinary, fake_time):
    assert run(root, "replay", timed.id, "t") == 0
    assert capfdbinary.readouterr().out == b"abc"
    assert fake_time.sleeps == [1.0, 10.0, 1.0]


def test_replay_idle_limit_and_speed(timed, root, capfdbinary, fake_time):
    assert run(root, "replay", timed.id, "t", "--idle-limit", "2", "--speed", "2") == 0
    assert capfdbinary.readouterr().out == b"abc"
    assert fake_time.sleeps == [0.5, 1.0, 0.5]


def test_replay_one_stream_keeps_timing(timed, root, capfdbinary, fake_time):
    assert run(root, "replay", timed.id, "t", "--stream", "stdout") == 0
    assert capfdbinary.readouterr().out == b"ac"
    assert fake_time.sleeps == [1.0, 11.0]


@pytest.mark.parametrize("option", [["--speed", "0"], ["--speed", "-2"], ["--speed", "x"], ["--idle-limit", "-1"]])
def test_replay_bad_options(timed, root, option):
    with pytest.raises(SystemExit) as exc:
        run(root, "replay", timed.id, "t", *option)
    assert exc.value.code == 2


def test_replay_unknown_job(timed, root, capfd):
    assert run(root, "replay", timed.id, "zzz") == 2
    assert_one_line_error(capfd.readouterr().err, "'zzz'", timed.id)
