"""The Python API: sessions written from Python code."""

from __future__ import annotations

import threading
import time

import pytest

from plainbox_like.run import control
from plainbox_like.api import Session, StopRequested
from plainbox_like.store.iolog import read_records
from plainbox_like.store.reader import load_session
from plainbox_like.read.summary import summarize
from factories import wait_until


def test_jobs_outputs_and_outcomes_are_recorded(tmp_path):
    repo = str(tmp_path)
    with Session.create("sweep", repository=repo, tags=["ml"]) as session:
        with session.job("train") as job:
            job.print("epoch 1")
            job.write("stderr", b"warn\x00")
        with session.job("evaluate") as job:
            job.fail("accuracy too low", return_code=3)
        session.record("report", "skip", skip_reason="no data")
        with pytest.raises(ZeroDivisionError):
            with session.job("broken"):
                1 / 0
        path = session.path
    loaded = load_session(path)
    state = loaded.state
    assert state.desired_job_list == ["train", "evaluate", "report", "broken"]
    assert state.metadata.title == "sweep" and state.metadata.tags == ["ml"]
    assert state.latest("train").outcome == "pass"
    assert (state.latest("evaluate").outcome, state.latest("evaluate").return_code) == ("fail", 3)
    assert state.latest("report").skip_reason == "no data"
    crash = state.latest("broken")
    assert crash.outcome == "crash" and "ZeroDivisionError" in crash.comments
    records = read_records(f"{path}/{state.latest('train').io_log_filename}").records
    assert [(r.stream, r.data) for r in records] == [("stdout", b"epoch 1\n"), ("stderr", b"warn\x00")]
    assert "incomplete" not in state.metadata.flags and state.metadata.finished is not None
    assert summarize(path).status == "complete"


def test_the_attempt_returned_is_the_callers_to_change(tmp_path):
    """The session keeps the attempt it journaled; changing the one returned changes nothing there."""
    with Session.create("t", repository=str(tmp_path)) as session:
        returned = session.record("a", "fail", comments="too slow")
        returned.outcome, returned.comments = "pass", "edited"
        kept = session.state.latest("a")
        assert (kept.outcome, kept.comments) == ("fail", "too slow")
        path = session.path
    assert load_session(path).state.latest("a").outcome == "fail"


def test_reopen_continues_and_done_skips_finished_work(tmp_path):
    repo = str(tmp_path)
    session = Session.create("t", repository=repo)
    session.record("a")
    session.record("b", "fail")
    session.close(complete=False)
    again = Session.open(session.id, repository=repo)
    assert again.done("a") and not again.done("b") and not again.done("c")
    with again.job("b"):
        pass
    again.close()
    state = load_session(session.path).state
    assert [a.attempt for a in state.results["b"]] == [1, 2]
    assert state.latest("b").outcome == "pass"
    assert list(Session.open(session.id, repository=repo)) == ["a", "b"]


def test_checkpoint_honours_stop(tmp_path):
    session = Session.create("t", repository=str(tmp_path))
    session.checkpoint()  # nothing pending: returns at once
    control.write_request(session.path, control.STOP)
    with pytest.raises(StopRequested):
        session.checkpoint()
    session.close(complete=False)
    assert summarize(session.path).status == "incomplete"


def test_checkpoint_waits_while_paused(tmp_path):
    session = Session.create("t", repository=str(tmp_path))
    control.write_request(session.path, control.PAUSE)
    seen = {}

    def resume_later():
        wait_until(lambda: summarize(session.path).status == "paused", timeout=10, interval=0.05)
        seen["status"] = summarize(session.path).status
        control.write_request(session.path, control.CONTINUE)

    helper = threading.Thread(target=resume_later)
    started = time.monotonic()
    helper.start()
    session.checkpoint(poll=0.05)
    helper.join()
    assert seen["status"] == "paused"
    assert time.monotonic() - started > 0.05
    assert "paused" not in session.state.metadata.flags
    session.close()
