"""Job processes and time: leftovers a job leaves running, timeouts that measure the job, bounded workers.

Every test starts its own jobs with a marker unique to the test (a random
token in the command line or environment) and only ever signals processes that
carry it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from plainbox_like import plan as planning
from plainbox_like import session as batch
from plainbox_like import workers
from plainbox_like.storage import SessionRepository, load_session
from plainbox_like.units import JobDefinition

from cli_helpers import assert_one_line_error

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli_env():
    env = dict(os.environ)
    env.pop("PLAINBOX_LIKE_SESSION", None)
    env.pop("PLAINBOX_LIKE_JOB", None)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def cli_argv(repo, *args):
    return [sys.executable, "-m", "plainbox_like", "--repository", str(repo), *args]


def cli(repo, *args, timeout=90):
    return subprocess.run(
        cli_argv(repo, *args), env=cli_env(), capture_output=True, text=True, timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def only_session(repo):
    (path,) = SessionRepository(str(repo)).session_paths()
    return path


def wait_until(predicate, timeout=30.0, interval=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


# -- how many workers ------------------------------------------------------------------


@pytest.mark.parametrize("command", ["run", "resume"])
def test_a_huge_j_is_a_one_line_error_without_force(tmp_path, command):
    args = ["run", "-j", "300", "-c", "true"] if command == "run" else ["resume", "-j", "257", "nosuchsession"]
    done = cli(tmp_path / "repo", *args, timeout=60)
    assert done.returncode == 2
    assert_one_line_error(done.stderr, "-j", "--force")
    assert not os.path.isdir(tmp_path / "repo" / "sessions") or not os.listdir(tmp_path / "repo" / "sessions")


def test_force_allows_a_huge_j_and_workers_are_capped_by_the_jobs(tmp_path):
    done = cli(tmp_path / "repo", "run", "-j", "5000", "--force", "-c", "true", "-c", "echo two", timeout=60)
    assert done.returncode == 0, done.stderr
    state = load_session(only_session(tmp_path / "repo")).state
    assert sorted(a[-1].outcome for a in state.results.values()) == ["pass", "pass"]


def test_no_more_workers_than_jobs_left(tmp_path, monkeypatch):
    forked = []
    real_fork = workers.WorkerExecutor._fork

    def counting_fork(self, sync_fd):
        worker = real_fork(self, sync_fd)
        forked.append(worker.pid)
        return worker

    monkeypatch.setattr(workers.WorkerExecutor, "_fork", counting_fork)
    jobs = [JobDefinition(id=f"j{n}", plugin="shell", command="true") for n in range(3)]
    repo = SessionRepository(str(tmp_path / "repo"))
    writer = repo.create()
    plan = planning.build_plan(jobs)
    writer.set_plan({job_id: plan.jobs[job_id].checksum for job_id in plan.order}, plan.order)
    runner = batch.BatchRunner(writer, plan, parallel=64)
    try:
        assert runner.run() is False
    finally:
        writer.close()
    assert len(forked) == 3
    assert all(a[-1].outcome == "pass" for a in load_session(writer.path).state.results.values())
