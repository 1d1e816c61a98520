"""Job processes and time: leftovers a job leaves running, timeouts that measure the job, bounded workers.

Every test starts its own jobs with a marker unique to the test (a random
token in the command line or environment) and only ever signals processes that
carry it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import uuid

import pytest

from plainbox_like.define import plan as planning
from plainbox_like.run import batch
from plainbox_like.run import workers
from plainbox_like.run.executors import iter_pids, process_env
from plainbox_like.store.reader import load_session
from plainbox_like.store.repository import SessionRepository
from plainbox_like.define.units import JobDefinition

from cli_helpers import assert_one_line_error, cli, cli_argv, cli_env
from factories import only_session, wait_until

#: An environment variable every job of these tests inherits (with a value unique to the test), so that
#: a test finds, and at its end kills, only the processes it started.
MARKER = "PLAINBOX_LIKE_TEST_MARKER"


def marked(marker):
    """Live processes (not zombies) that carry *marker*: this test's job processes."""
    found = []
    for pid in iter_pids():
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state not in (b"Z", b"X") and process_env(pid).get(MARKER) == marker:
            found.append(pid)
    return found


@pytest.fixture
def marker():
    """A marker unique to the test; whatever process still carries it at the end is killed."""
    value = f"test-{uuid.uuid4().hex}"
    yield value
    for pid in marked(value):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


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

    def counting_fork(self, journal_sync):
        worker = real_fork(self, journal_sync)
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


# -- timeouts measure the job -----------------------------------------------------------


@pytest.mark.parametrize("jobs, whole_group", [("1", False), ("2", False), ("2", True)],
                         ids=["local", "workers", "workers-stopped-too"])
def test_a_job_that_ended_in_time_is_not_timed_out_by_a_runner_that_woke_late(tmp_path, jobs, whole_group):
    """``timeout: 2``, ``sleep 1``: the runner is stopped (SIGSTOP) from the job's start until after its
    deadline, then continued (SIGCONT). The job ended at 1 s: it passed, exit status 0, duration about 1 s.
    With *whole_group*, the workers are stopped too (as Ctrl-Z stops the runner's process group)."""
    started = tmp_path / "started"
    units = tmp_path / "timed.pxu"
    units.write_text(f"id: timed\nplugin: shell\ntimeout: 2\ncommand: touch {started}; sleep 1\n")
    proc = subprocess.Popen(
        cli_argv(tmp_path / "repo", "run", "-j", jobs, str(units), "-c", "true"),
        env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        assert wait_until(lambda: started.exists() or proc.poll() is not None, timeout=60), "the job never started"
        assert proc.poll() is None, proc.communicate()
        stopped_at = time.monotonic()
        if whole_group:
            os.killpg(proc.pid, signal.SIGSTOP)  # the runner's own new session: the runner and its workers
        else:
            os.kill(proc.pid, signal.SIGSTOP)
        # Past the job's deadline (2 s after its start, which came before stopped_at), with a margin.
        wait_until(lambda: time.monotonic() > stopped_at + 3.0, timeout=10)
    finally:
        if whole_group:
            os.killpg(proc.pid, signal.SIGCONT)
        else:
            os.kill(proc.pid, signal.SIGCONT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, (out, err)
    state = load_session(only_session(tmp_path / "repo")).state
    (attempt,) = state.results["timed"]
    assert (attempt.outcome, attempt.return_code, attempt.comments) == ("pass", 0, None)
    if os.path.exists("/proc/self/sched"):  # where the kernel tells when the job ended (see runner.exit_time)
        assert 0.9 <= attempt.execution_duration < 1.8, attempt.execution_duration


def test_a_job_past_its_deadline_still_times_out(tmp_path):
    units = tmp_path / "slow.pxu"
    units.write_text("id: slow\nplugin: shell\ntimeout: 0.5\ncommand: sleep 30\n")
    started = time.monotonic()
    done = cli(tmp_path / "repo", "run", str(units), timeout=60)
    assert done.returncode == 1, done.stderr
    assert time.monotonic() - started < 20
    (attempt,) = load_session(only_session(tmp_path / "repo")).state.results["slow"]
    assert attempt.outcome == "fail" and attempt.comments == "timed out after 0.5 s"
    assert 0.5 <= attempt.execution_duration < 10


# -- processes a job leaves running ------------------------------------------------------


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_background_processes_are_killed_when_their_job_ends_and_named_in_its_result(tmp_path, marker, jobs):
    done = cli(tmp_path / "repo", "run", "-j", jobs, "-c", "sleep 600 & echo one",
               "-c", "setsid sleep 599 & echo two", "-c", "true", env=cli_env(**{MARKER: marker}))
    assert done.returncode == 0, done.stderr
    assert wait_until(lambda: not marked(marker), timeout=10), "a job's background process outlived the run"
    state = load_session(only_session(tmp_path / "repo")).state
    commands = []
    for attempts in state.results.values():
        left = attempts[-1].leftover_processes
        assert attempts[-1].outcome == "pass"
        if left is not None:
            assert (left.count, left.kept, len(left.processes)) == (1, False, 1)
            assert left.processes[0].pid > 0
            commands.append(left.processes[0].command)
    # Each is named by its command line as it was when its job ended: the background process may then still
    # be bash's fork, setsid, or in the middle of an exec (named by the kernel's name for it, like "[bash]"),
    # both alike at times.
    assert len(commands) == 2, commands
    assert all("sleep 59" in c or "sleep 600" in c or (c.startswith("[") and c.endswith("]")) for c in commands)
    assert sum(1 for a in state.results.values() if a[-1].leftover_processes is None) == 1
    assert done.stdout.count("  (left 1 process running, stopped)\n") == 2


def test_a_job_that_moves_to_a_new_session_does_not_survive_its_timeout(tmp_path, marker):
    units = tmp_path / "escape.pxu"
    units.write_text("id: escape\nplugin: shell\ntimeout: 1\ncommand: setsid sleep 598; true\n")
    done = cli(tmp_path / "repo", "run", str(units), env=cli_env(**{MARKER: marker}), timeout=60)
    assert done.returncode == 1, done.stderr
    assert wait_until(lambda: not marked(marker), timeout=10), "the job's process survived its timeout"
    (attempt,) = load_session(only_session(tmp_path / "repo")).state.results["escape"]
    assert attempt.outcome == "fail" and attempt.comments == "timed out after 1 s"
    assert attempt.leftover_processes.count == 1
    assert attempt.leftover_processes.processes[0].command == "sleep 598"
    assert attempt.leftover_processes.kept is False


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_stop_now_kills_what_a_job_moved_out_of_its_process_group(tmp_path, marker, jobs):
    started = tmp_path / "started"
    repo = tmp_path / "repo"
    proc = subprocess.Popen(
        cli_argv(repo, "run", "-j", jobs, "-c", f"touch {started}; setsid sleep 597; true", "-c", "true"),
        env=cli_env(**{MARKER: marker}), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert wait_until(lambda: started.exists() and marked(marker) or proc.poll() is not None, timeout=60)
        assert proc.poll() is None, proc.communicate()
        done = cli(repo, "stop", "--now", only_session(repo), timeout=60)
        assert done.returncode == 0, done.stderr
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert wait_until(lambda: not marked(marker), timeout=10), "the job's process survived stop --now"
    (attempt,) = load_session(only_session(repo)).state.results["c1"]
    assert attempt.outcome == "crash" and attempt.comments == "stopped by request"
    assert attempt.leftover_processes is not None
    assert [p.command for p in attempt.leftover_processes.processes] == ["sleep 597"]


def test_a_job_flagged_leaves_processes_keeps_its_daemon(tmp_path, marker):
    units = tmp_path / "daemon.pxu"
    units.write_text(
        "id: daemon\nplugin: shell\nflags: leaves-processes\ncommand: setsid sleep 596 & echo started\n\n"
        "id: plain\nplugin: shell\ncommand: sleep 595 & echo started\n"
    )
    done = cli(tmp_path / "repo", "run", str(units), env=cli_env(**{MARKER: marker}))
    assert done.returncode == 0, done.stderr
    # The kept one lives on after the run; the other job's was killed.
    assert wait_until(lambda: len(marked(marker)) == 1, timeout=10)
    (pid,) = marked(marker)
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        assert f.read().split(b"\0")[:2] == [b"sleep", b"596"]
    results = load_session(only_session(tmp_path / "repo")).state.results
    daemon = results["daemon"][-1].leftover_processes
    assert (daemon.count, daemon.kept, [p.pid for p in daemon.processes]) == (1, True, [pid])
    plain = results["plain"][-1].leftover_processes
    assert (plain.count, plain.kept) == (1, False)
    assert "daemon  (left 1 process running, kept)" in done.stdout
    shown = json.loads(cli(tmp_path / "repo", "show", "--json", only_session(tmp_path / "repo")).stdout)
    (daemon_job,) = [job for job in shown["jobs"] if job["id"] == "daemon"]
    shown_left = daemon_job["attempts"][-1]["leftover_processes"]
    assert (shown_left["count"], shown_left["kept"], [p["pid"] for p in shown_left["processes"]]) == (1, True, [pid])
    assert shown_left["processes"][0]["command"] == daemon.processes[0].command  # (as it was when the job ended)


def test_many_leftovers_are_all_counted_and_a_bounded_number_listed(tmp_path, marker):
    done = cli(tmp_path / "repo", "run", "-c", "for i in $(seq 25); do sleep 594 & done; echo", env=cli_env(**{MARKER: marker}))
    assert done.returncode == 0, done.stderr
    assert wait_until(lambda: not marked(marker), timeout=10)
    (attempt,) = load_session(only_session(tmp_path / "repo")).state.results["c1"]
    left = attempt.leftover_processes
    assert left.count == 25 and len(left.processes) == 10
    assert [p.pid for p in left.processes] == sorted(p.pid for p in left.processes)
    assert all("sleep 594" in p.command or p.command == "[bash]" for p in left.processes)  # (bash's fork, not yet sleep)


def test_a_process_caught_in_the_middle_of_exec_is_still_found(monkeypatch):
    """Its environment reads empty for a moment (execve): it is read again, not taken for a stranger's."""
    from plainbox_like.run import executors as runner

    marker = {"PLAINBOX_LIKE_TEST_MARK": uuid.uuid4().hex}
    child = subprocess.Popen(["sleep", "60"], env={**os.environ, **marker})
    try:
        wait_until(lambda: process_env(child.pid).get("PLAINBOX_LIKE_TEST_MARK"), timeout=10)
        reads = {"n": 0}

        def mid_exec(pid):
            if pid == child.pid:
                reads["n"] += 1
                if reads["n"] <= 2:
                    return {}
            return process_env(pid)

        monkeypatch.setattr(runner, "process_env", mid_exec)
        found = runner.find_marked(marker)
        assert [leftover.pid for leftover in found] == [child.pid]
        assert reads["n"] == 3
    finally:
        child.kill()
        child.wait()


@contextlib.contextmanager
def _child_without_environment(monkeypatch):
    """A child of this process whose environment reads as none, and the pids whose environment was read."""
    import plainbox_like.run.executors as runner

    child = subprocess.Popen(["sleep", "60"], env={})
    looked_at = []

    def reading(pid):
        looked_at.append(pid)
        return {} if pid == child.pid else process_env(pid)

    monkeypatch.setattr(runner, "process_env", reading)
    try:
        yield child, looked_at
    finally:
        child.kill()
        child.wait()


def test_a_process_whose_environment_may_not_be_read_is_passed_over_without_waiting(monkeypatch):
    # Another user's process (every process but one's own, to a user other than root): its environment reads
    # as none, and never becomes readable. Waiting for it cost 20 ms a process at the end of every run.
    import plainbox_like.run.executors as runner

    marker = {"PLAINBOX_LIKE_TEST_MARK": uuid.uuid4().hex}
    with _child_without_environment(monkeypatch) as (child, looked_at):
        monkeypatch.setattr(runner, "_env_readable", lambda pid: pid != child.pid)
        assert runner.find_marked(marker) == []
        assert looked_at.count(child.pid) == 1
    monkeypatch.undo()
    assert runner._env_readable(os.getpid())
    assert not runner._env_readable(child.pid)  # gone


def test_another_workers_job_caught_in_the_middle_of_exec_is_passed_over_without_waiting(monkeypatch):
    # With -j N a worker's look for its job's leftovers sees the jobs the other workers just spawned; one
    # caught in execve shows no environment, and waiting for it to settle cost a worker up to 20 ms a time.
    import plainbox_like.run.executors as runner

    marker = {"PLAINBOX_LIKE_TEST_MARK": uuid.uuid4().hex}
    since = int(open("/proc/sys/kernel/ns_last_pid").read())
    with _child_without_environment(monkeypatch) as (child, looked_at):  # "another worker": this process
        assert runner.find_marked(marker, since_pid=since, other_spawners={os.getpid()}) == []
        assert child.pid not in looked_at
        assert runner.find_marked(marker, since_pid=since) == []  # without: read again and again
        assert looked_at.count(child.pid) == runner.ENV_RETRIES + 1

