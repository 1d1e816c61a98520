"""The index's direct reading takes a running job's noreturn mark as the converter does."""

from __future__ import annotations

from plainbox_like.index import fastread


def _session(mark) -> dict:
    running = {"attempt": 1, "started": 1.0, "io_log_filename": None}
    if mark is not None:
        running["noreturn"] = mark
    return {"jobs": {}, "results": {}, "desired_job_list": [], "metadata": {}, "running_jobs": {"r": running}}


def test_a_noreturn_mark_that_is_not_a_boolean_goes_to_the_converter():
    assert fastread._plain_state(_session(None)) is not None
    assert fastread._plain_state(_session(True)) is not None
    assert fastread._plain_state(_session("yes")) is None  # the converter reports it
