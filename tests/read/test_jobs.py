"""One view of each job for ``show`` and every export: the same status for the same job."""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET

import pytest

from plainbox_like import exports
from plainbox_like.cli.inspect import format_counts
from plainbox_like.exports import common
from plainbox_like.read import jobs, summary
from plainbox_like.store.model import FLAG_PAUSED, Attempt
from plainbox_like.store.reader import load_session
from cli_helpers import run


@pytest.fixture
def paused(repo):
    """A session whose live writer is paused while job b runs (its attempt 2; attempt 1 failed)."""
    writer = repo.create(title="paused")
    writer.set_plan({"a": "1", "b": "2", "c": "3"}, ["a", "b", "c"])
    writer.job_finished("a", Attempt("pass", return_code=0))
    writer.job_finished("b", Attempt("fail", return_code=1))
    log, name = writer.new_log("b", 2)
    writer.job_started("b", 2, name)
    log.write("stdout", b"so far\n")
    log.flush()
    writer.update_metadata(flags=sorted({*writer.state.metadata.flags, FLAG_PAUSED}))
    yield writer
    log.close()
    writer.close()


def _export(loaded, fmt) -> bytes:
    out = io.BytesIO()
    exports.write(loaded, fmt, out)
    return out.getvalue()


def test_a_paused_sessions_running_job_is_running_in_the_job_views(paused):
    loaded = load_session(paused.path)
    assert summary.session_status(loaded) == summary.STATUS_PAUSED
    views = {view.id: view for view in jobs.job_views(loaded)}
    assert [views[j].status for j in "abc"] == ["pass", jobs.RUNNING, jobs.NOT_RUN]
    assert views["b"].note == "attempt 2 is running"
    assert common.job_views is jobs.job_views and common.JobView is jobs.JobView


def test_a_paused_sessions_running_job_is_running_in_show(paused, root, capsys):
    assert run(root, "show", "--json", paused.id) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["status"] == "paused"
    job = {j["id"]: j for j in data["jobs"]}["b"]
    assert job["outcome"] == "running" and job["previous_outcome"] == "fail"
    assert job["running"]["attempt"] == 2 and job["execution_duration"] is not None
    assert run(root, "show", paused.id) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("b "))
    assert row.split()[1] == "running"


def test_a_paused_sessions_running_job_is_running_in_the_exports(paused):
    loaded = load_session(paused.path)
    (suite,) = ET.fromstring(_export(loaded, "junit")).findall("testsuite")
    case = {c.get("name"): c for c in suite.findall("testcase")}["b"]
    assert case.find("skipped").get("message") == "running: attempt 2 is running"
    assert case.find("error") is None
    page = _export(loaded, "html").decode()
    assert '<span class="pill o-running">running</span>' in page and "attempt 2 is running" in page
    assert "o-interrupted" not in page.split("</style>", 1)[1]


def test_show_and_the_exports_count_statuses_in_one_order():
    counts = {"skip": 1, "running": 2, "pass": 3, "interrupted": 4, "zzz": 5, "crash": 6}
    assert list(common.status_counts(_views(counts))) == ["pass", "crash", "interrupted", "running", "skip", "zzz"]
    assert format_counts(counts) == "pass 3, crash 6, interrupted 4, running 2, skip 1, zzz 5"


def _views(counts):
    return [
        jobs.JobView(id=f"{status}-{i}", index=0, status=status, latest=None, attempts=(), running=None, planned=True)
        for status, n in counts.items()
        for i in range(n)
    ]
