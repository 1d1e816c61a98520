"""Acceptance: a provider in the style of Checkbox's tutorial provider runs as documented.

``tests/data/providers/tutorial`` has a ``manage.py`` naming the namespace
``com.canonical.certification``, a resource job run as the bootstrap of the
test plan ``tutorial-base``, one job of each kind, and jobs that need a person.
"""

from __future__ import annotations

import os

from plainbox_like.define import plan as planning
from plainbox_like.run import batch
from plainbox_like.store.runconfig import RunConfig
from plainbox_like.run import prepare
from plainbox_like.cli.main import main
from plainbox_like.store.reader import load_session
from plainbox_like.store.repository import SessionRepository

PROVIDER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "providers", "tutorial")
NS = "com.canonical.certification::"
RESOURCE = NS + "tutorial_resources"

EXPECTED = [
    ("tutorial/passing", "pass"),
    ("tutorial/failing", "fail"),
    ("tutorial/crashing", "crash"),
    ("tutorial/has_resource", "pass"),
    ("tutorial/no_resource", "skipped-resource"),
    ("tutorial/depends_on_passing", "pass"),
    ("tutorial/depends_on_failing", "skipped-dependency"),
    ("tutorial/environ", "pass"),
    ("tutorial/manual", "skip"),
    ("tutorial/user-interact", "skip"),
    ("tutorial/user-verify", "skip"),
    ("tutorial/user-interact-verify", "skip"),
]


def _config():
    return RunConfig(sources=[PROVIDER], test_plan="tutorial-base")


def test_dry_run_lists_bootstrap_first_then_the_plan(tmp_path, capsys):
    assert main(["--repository", str(tmp_path), "run", "--dry-run", "--test-plan", "tutorial-base", PROVIDER]) == 0
    lines = capsys.readouterr().out.split()
    assert lines == [RESOURCE] + [NS + job for job, _ in EXPECTED]
    assert main(["plans", PROVIDER]) == 0
    assert NS + "tutorial-base       Tutorial: every kind of job" in capsys.readouterr().out


def test_tutorial_outcomes(tmp_path):
    prepared = prepare.start_session(SessionRepository(str(tmp_path)), _config())
    summary = prepare.run_prepared(prepared)
    state = load_session(summary.path).state
    assert state.latest(RESOURCE).outcome == "pass"
    assert state.resources[RESOURCE] == [
        {"state": "supported", "kind": "tutorial"},
        {"state": "example", "kind": "other"},
    ]
    got = [(job, state.latest(NS + job).outcome) for job, _ in EXPECTED]
    assert got == EXPECTED
    assert "tutorial_resources.state == \"unsupported\"" in state.latest(NS + "tutorial/no_resource").skip_reason
    assert "tutorial/failing" in state.latest(NS + "tutorial/depends_on_failing").skip_reason
    assert "needs a person" in state.latest(NS + "tutorial/manual").skip_reason
    assert summary.exit_code == 1


def test_resume_after_bootstrap_keeps_the_resources(tmp_path):
    repo = SessionRepository(str(tmp_path))
    prepared = prepare.start_session(repo, _config())
    # Run only the bootstrap job, then stop as if interrupted.
    runner = batch.BatchRunner(prepared.writer, planning.build_plan([prepared.plan.jobs[RESOURCE]]))
    try:
        runner.run()
    finally:
        prepared.writer.close()
    session_id = prepared.writer.id

    resumed = prepare.resume_session(repo, session_id)
    assert resumed.finished == {RESOURCE: "pass"}
    summary = prepare.run_prepared(resumed)
    state = load_session(summary.path).state
    assert len(state.results[RESOURCE]) == 1  # not run again
    assert [(job, state.latest(NS + job).outcome) for job, _ in EXPECTED] == EXPECTED

    # --rerun-bootstrap runs it again, and the jobs it decided about are decided again.
    again = prepare.resume_session(repo, session_id, rerun_bootstrap=True)
    assert RESOURCE not in again.finished
    assert NS + "tutorial/no_resource" not in again.finished
    assert NS + "tutorial/passing" in again.finished
    summary = prepare.run_prepared(again)
    state = load_session(summary.path).state
    assert len(state.results[RESOURCE]) == 2
    assert len(state.results[NS + "tutorial/no_resource"]) == 2
    assert len(state.results[NS + "tutorial/passing"]) == 1
