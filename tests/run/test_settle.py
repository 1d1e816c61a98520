"""Settling the jobs a dead runner left running: one rule for resume, cleanup and repair."""

from __future__ import annotations

import os
import time

from plainbox_like.maintain import manage
from plainbox_like.run import batch, settle
from plainbox_like.store.runconfig import RunConfig
from plainbox_like.run import prepare
from plainbox_like.store.model import OUTCOME_CRASH, OUTCOME_PASS, RunningJob
from plainbox_like.store.reader import load_session

JOBS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "jobs")


def _died_running(repo, config):
    """A session whose runner died while every job of *config* ran (the lock released, nothing settled)."""
    units = prepare.load_run_units(config)
    writer = repo.create(title="died", app_id=batch.APP_ID, app_blob=config.to_blob())
    writer.set_plan({job.id: job.checksum for job in units.jobs}, [job.id for job in units.jobs])
    for job in units.jobs:
        writer.job_started(job.id, 1, None)
    writer.abandon()
    return writer.path


def test_settled_outcome_is_pass_only_for_a_noreturn_job(tmp_path):
    running = RunningJob(attempt=1, started=time.time())
    assert settle.settled_result(str(tmp_path), "reboot", running, frozenset({"reboot"}))[0] == OUTCOME_PASS
    assert settle.settled_result(str(tmp_path), "first", running, frozenset({"reboot"}))[0] == OUTCOME_CRASH
    assert settle.settled_result(str(tmp_path), "first", running, frozenset())[0] == OUTCOME_CRASH


def test_noreturn_ids_come_from_the_run_definitions(repo):
    config = RunConfig(sources=[os.path.join(JOBS, "noreturn.pxu")])
    path = _died_running(repo, config)
    notes: list[str] = []
    assert settle.noreturn_ids(load_session(path).state, notes) == frozenset({"reboot"})
    assert notes == []


def test_noreturn_ids_without_definitions_is_empty_with_a_note(repo):
    writer = repo.create(title="no configuration")
    notes: list[str] = []
    assert settle.noreturn_ids(writer.state, notes) == frozenset()
    writer.close()
    assert len(notes) == 1
    assert notes[0].startswith("the job definitions could not be loaded (")
    assert notes[0].endswith("): every running job is recorded as crash")


def test_cleanup_and_its_dry_run_settle_a_noreturn_job_as_resume_does(repo):
    config = RunConfig(sources=[os.path.join(JOBS, "noreturn.pxu")])
    path = _died_running(repo, config)
    expected = (("first", OUTCOME_CRASH), ("last", OUTCOME_CRASH), ("reboot", OUTCOME_PASS))
    assert manage.cleanup_session(path, dry_run=True).jobs == expected
    assert manage.cleanup_session(path).jobs == expected
    state = load_session(path).state
    assert state.latest("reboot").comments == settle.NORETURN_STOPPED
    assert state.latest("first").comments == settle.STOPPED_WHILE_RUNNING
    assert not state.running_jobs
