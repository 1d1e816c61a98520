"""Jobs that restart the machine: journaled as noreturn, waited on, said ahead, continued after the restart.

A reboot is simulated by a noreturn job that SIGKILLs the runner and its own
process group (tests/data/jobs/reboot.pxu): everything of the run dies at once,
as in a power cycle; ``resume --autoresume`` is then what the boot runs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time

import pytest

from factories import wait_until
from cli_helpers import cli, cli_env, read_pid, start_cli

from plainbox_like.run import settle
from plainbox_like.store.model import FLAG_INCOMPLETE, OUTCOME_CRASH, OUTCOME_FAIL, OUTCOME_PASS, OUTCOME_SKIP, RunningJob
from plainbox_like.store.reader import load_session
from plainbox_like.store.repository import SessionRepository

JOBS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "jobs")
REBOOT = os.path.join(JOBS, "reboot.pxu")
RESTART = os.path.join(JOBS, "restart.pxu")


def _sessions(repo) -> list[str]:
    """The session paths of *repo*, oldest first."""
    paths = SessionRepository(str(repo)).session_paths()
    return sorted(paths, key=lambda p: load_session(p).state.metadata.created)


def _sid(path: str) -> str:
    return os.path.basename(path)[: -len(".session")]


def _rebooted_run(repo, env):
    """Run reboot.pxu until its noreturn job 'reboots'; returns (completed run, session path)."""
    before = set(SessionRepository(str(repo)).session_paths())
    done = cli(repo, "run", REBOOT, env=env)
    assert done.returncode == -signal.SIGKILL, done.stderr
    (path,) = set(SessionRepository(str(repo)).session_paths()) - before
    return done, path


class _Lines:
    """Reads a process's stderr in a thread, so a test can wait for a line."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.text = ""
        self._thread = threading.Thread(target=self._read, args=(proc.stderr,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            self.text += line

    def wait_for(self, needle: str) -> None:
        wait_until(lambda: needle in self.text, timeout=60, what=f"{needle!r} on stderr")

    def join(self) -> str:
        self._thread.join(timeout=30)
        return self.text


def test_a_noreturn_job_is_journaled_as_such_before_it_is_spawned(tmp_path):
    repo = tmp_path / "repo"
    done, path = _rebooted_run(repo, cli_env(repo))
    with open(os.path.join(path, "journal"), "rb") as f:
        starts = [json.loads(line) for line in f if b'"op":"start"' in line]
    assert [(s["job"], s.get("noreturn")) for s in starts] == [("before", None), ("reboot", True)]
    state = load_session(path).state
    assert state.running_jobs["reboot"].noreturn is True
    assert FLAG_INCOMPLETE in state.metadata.flags
    assert "after" not in state.results


def test_run_says_before_a_noreturn_job_that_the_machine_restarts_and_how_to_continue(tmp_path):
    repo = tmp_path / "repo"
    done, path = _rebooted_run(repo, cli_env(repo))
    sid = _sid(path)
    # The job killed the runner first thing: whatever the runner said, it said before the job ran.
    (line,) = [line for line in done.stderr.splitlines() if "restart the machine" in line]
    assert line.startswith("plainbox-like: job reboot is expected to restart the machine (flag noreturn)")
    assert f"plainbox-like --repository {repo} resume {sid}" in line
    assert "autoresume enable" in line


def test_with_autoresume_enabled_the_message_says_the_run_continues_by_itself(tmp_path):
    repo = tmp_path / "repo"
    env = cli_env(repo)
    fake_bin, units, runtime = tmp_path / "bin", tmp_path / "units", tmp_path / "run-systemd"
    fake_bin.mkdir()
    runtime.mkdir()
    systemctl = fake_bin / "systemctl"
    systemctl.write_text(f'#!/bin/sh\necho "$*" >> {tmp_path}/systemctl.calls\n')
    systemctl.chmod(0o755)
    env.update(
        PATH=f"{fake_bin}{os.pathsep}{env['PATH']}",
        PLAINBOX_LIKE_SYSTEMD_UNIT_DIR=str(units),
        PLAINBOX_LIKE_SYSTEMD_RUNTIME=str(runtime),
    )
    assert cli(repo, "autoresume", "enable", env=env).returncode == 0
    done, path = _rebooted_run(repo, env)
    (line,) = [line for line in done.stderr.splitlines() if "restart the machine" in line]
    assert f"session {_sid(path)} continues by itself (autoresume is enabled for {repo})" in line


def test_autoresume_after_a_simulated_reboot_continues_only_the_sessions_a_noreturn_job_ended(tmp_path, kill_later):
    repo = tmp_path / "repo"
    env = cli_env(repo)
    first = _rebooted_run(repo, env)[1]
    # A session killed during an ordinary job: not a restart, so it is left alone.
    marker = tmp_path / "sleeper.pid"
    proc = start_cli(repo, "run", "-c", f"echo $$ > {marker}.tmp && mv {marker}.tmp {marker}; sleep 60", env=env)
    pgid = wait_until(lambda: marker.exists() and int(marker.read_text()), what="the sleeper's pid")
    kill_later.append(pgid)
    proc.kill()
    proc.communicate(timeout=30)
    os.killpg(pgid, signal.SIGKILL)
    crashed = next(p for p in _sessions(repo) if p != first)
    second = _rebooted_run(repo, env)[1]
    untouched = load_session(crashed)
    with open(os.path.join(crashed, "journal"), "rb") as f:
        journal_before = f.read()

    done = cli(repo, "resume", "--autoresume", env=env)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert f"plainbox-like: session {_sid(crashed)}: left alone: it did not stop on a noreturn job" in lines
    assert (
        "plainbox-like: job reboot (noreturn) recorded as after a restart: pass "
        f"({settle.NORETURN_STOPPED})"
    ) in lines
    continuing = [line for line in lines if "(noreturn) ran: continuing it" in line]
    assert continuing == [
        f"plainbox-like: session {_sid(first)} stopped while job reboot (noreturn) ran: continuing it",
        f"plainbox-like: session {_sid(second)} stopped while job reboot (noreturn) ran: continuing it",
    ]  # in order of creation
    for path in (first, second):
        state = load_session(path).state
        assert FLAG_INCOMPLETE not in state.metadata.flags
        assert not state.running_jobs
        reboot = state.results["reboot"]
        assert [(a.attempt, a.outcome, a.comments) for a in reboot] == [(1, OUTCOME_PASS, settle.NORETURN_STOPPED)]
        assert state.latest("after").outcome == OUTCOME_PASS
    # The other session: not a byte of its journal changed, its job still marked as running.
    with open(os.path.join(crashed, "journal"), "rb") as f:
        assert f.read() == journal_before
    assert load_session(crashed).state.running_jobs.keys() == untouched.state.running_jobs.keys()

    again = cli(repo, "resume", "--autoresume", env=env)
    assert again.returncode == 0, again.stderr
    assert again.stderr.splitlines()[-1] == (
        f"plainbox-like: no session of {repo} stopped on a noreturn job: nothing to resume"
    )


def test_autoresume_with_no_session_says_so_in_one_line(tmp_path):
    repo = tmp_path / "repo"
    done = cli(repo, "resume", "--autoresume", env=cli_env(repo))
    assert done.returncode == 0
    assert done.stderr == f"plainbox-like: no session of {repo} stopped on a noreturn job: nothing to resume\n"


def test_autoresume_takes_no_session(tmp_path):
    repo = tmp_path / "repo"
    done = cli(repo, "resume", "--autoresume", "abc", env=cli_env(repo))
    assert done.returncode == 2
    assert done.stderr.startswith("plainbox-like: error: resume --autoresume: give no SESSION")
    assert len(done.stderr.splitlines()) == 1


def test_a_result_file_the_noreturn_job_left_gives_its_outcome_after_the_restart(tmp_path):
    repo = tmp_path / "repo"
    env = cli_env(repo)
    env["RESULT_JSON"] = json.dumps({"outcome": "fail", "comments": "3 of 3 cycles failed"})
    path = _rebooted_run(repo, env)[1]
    done = cli(repo, "resume", "--autoresume", env=env)
    assert done.returncode == 1, done.stderr  # a job failed
    state = load_session(path).state
    assert (state.latest("reboot").outcome, state.latest("reboot").comments) == (
        OUTCOME_FAIL, "noreturn job: outcome fail from its result file session-share/__result: 3 of 3 cycles failed"
    )  # fmt: skip
    assert state.latest("after").outcome == OUTCOME_PASS
    # Its log, cut by the restart, is expected so.
    checked = cli(repo, "check", _sid(path), env=env)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def _result_file(tmp_path, text: str, age: float = 0.0) -> tuple[str, RunningJob]:
    share = tmp_path / "session-share"
    share.mkdir(exist_ok=True)
    path = share / settle.RESULT_FILE
    path.write_text(text)
    started = time.time()
    os.utime(path, (started - age, started - age))
    return str(tmp_path), RunningJob(attempt=1, started=started, noreturn=True)


@pytest.mark.parametrize(
    "text,expected",
    [
        (
            '{"outcome": "skip", "comments": "no second disk"}',
            (OUTCOME_SKIP, "noreturn job: outcome skip from its result file session-share/__result: no second disk"),
        ),
        ('{"outcome": "pass"}', (OUTCOME_PASS, "noreturn job: outcome pass from its result file session-share/__result")),
        ('{"outcome": "crash"}', (OUTCOME_CRASH, None)),
        ("not json", (OUTCOME_CRASH, None)),
    ],
)
def test_result_file_outcomes(tmp_path, text, expected):
    session_dir, running = _result_file(tmp_path, text)
    outcome, comments = settle.settled_result(session_dir, "reboot", running, frozenset())
    assert outcome == expected[0]
    if expected[1] is not None:
        assert comments == expected[1]
    else:
        assert "result file session-share/__result" in comments


def test_an_earlier_result_file_is_not_the_jobs(tmp_path):
    session_dir, running = _result_file(tmp_path, '{"outcome": "fail"}', age=600.0)
    assert settle.settled_result(session_dir, "reboot", running, frozenset()) == (OUTCOME_PASS, settle.NORETURN_STOPPED)


def test_a_result_file_does_not_change_an_ordinary_job(tmp_path):
    session_dir, running = _result_file(tmp_path, '{"outcome": "pass"}')
    running.noreturn = False
    assert settle.settled_result(session_dir, "job", running, frozenset()) == (OUTCOME_CRASH, settle.STOPPED_WHILE_RUNNING)


# -- a noreturn job whose command returns: the runner waits for the restart, as Checkbox does -----------


def _waiting_run(tmp_path, status: int = 0):
    repo = tmp_path / "repo"
    env = cli_env(repo)
    env["RESTART_STATUS"] = str(status)
    proc = start_cli(repo, "run", RESTART, env=env)
    return repo, env, proc, _Lines(proc)


def test_after_a_noreturn_job_returns_the_runner_waits_and_a_shutdown_leaves_it_running(tmp_path):
    repo, env, proc, err = _waiting_run(tmp_path)
    err.wait_for("job restart ended: waiting for the machine to restart")
    state = load_session(_sessions(repo)[0]).state
    assert "restart" in state.running_jobs and "after" not in state.results  # nothing recorded, nothing started
    proc.send_signal(signal.SIGTERM)  # what a shutdown sends
    assert proc.wait(timeout=60) == 130
    err.join()
    path = _sessions(repo)[0]
    state = load_session(path).state
    assert state.running_jobs["restart"].noreturn and "restart" not in state.results
    done = cli(repo, "resume", "--autoresume", env=env)
    assert done.returncode == 0, done.stderr
    state = load_session(path).state
    assert [(a.outcome, a.comments) for a in state.results["restart"]] == [(OUTCOME_PASS, settle.NORETURN_STOPPED)]
    assert state.latest("after").outcome == OUTCOME_PASS


def test_ctrl_c_while_waiting_for_the_restart_records_the_job_as_interrupted(tmp_path):
    repo, env, proc, err = _waiting_run(tmp_path)
    err.wait_for("waiting for the machine to restart")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    err.join()
    state = load_session(_sessions(repo)[0]).state
    assert not state.running_jobs
    latest = state.latest("restart")
    assert (latest.outcome, latest.comments, latest.return_code) == (OUTCOME_CRASH, "interrupted", 0)
    assert "after" not in state.results
    assert cli(repo, "resume", "--autoresume", env=env).stderr.splitlines()[0].endswith(
        "left alone: it did not stop on a noreturn job"
    )


def test_a_noreturn_job_that_fails_did_not_restart_the_machine_and_the_run_goes_on(tmp_path):
    repo, env, proc, err = _waiting_run(tmp_path, status=3)
    assert proc.wait(timeout=60) == 1
    text = err.join()
    assert "job restart is expected to restart the machine" in text and "waiting for the machine" not in text
    state = load_session(_sessions(repo)[0]).state
    assert (state.latest("restart").outcome, state.latest("restart").return_code) == (OUTCOME_FAIL, 3)
    assert state.latest("after").outcome == OUTCOME_PASS
    assert FLAG_INCOMPLETE not in state.metadata.flags


def test_a_shutdown_while_a_noreturn_job_runs_leaves_it_for_resume_and_stops_the_others(tmp_path, kill_later):
    repo, markers = tmp_path / "repo", tmp_path / "markers"
    markers.mkdir()
    env = cli_env(repo, MARKER_DIR=str(markers))
    proc = start_cli(repo, "run", "-j", "2", os.path.join(JOBS, "noreturn.pxu"), env=env)
    kill_later.append(read_pid(markers / "first.pid", proc))
    kill_later.append(read_pid(markers / "reboot.pid", proc))
    proc.send_signal(signal.SIGTERM)  # what a shutdown sends the runner (and its jobs)
    assert proc.wait(timeout=60) == 130
    proc.communicate(timeout=30)
    path = _sessions(repo)[0]
    state = load_session(path).state
    assert (state.latest("first").outcome, state.latest("first").comments) == (OUTCOME_CRASH, "interrupted")
    assert "reboot" not in state.results and state.running_jobs["reboot"].noreturn
    (markers / "go").touch()
    done = cli(repo, "resume", "--autoresume", env=env)
    assert done.returncode == 1, done.stderr  # 'first' stays a crash
    state = load_session(path).state
    assert [(a.outcome, a.comments) for a in state.results["reboot"]] == [(OUTCOME_PASS, settle.NORETURN_STOPPED)]
    assert state.latest("last").outcome == OUTCOME_PASS


def test_a_session_a_restart_ended_still_continues_after_cleanup_settled_it(tmp_path):
    repo = tmp_path / "repo"
    env = cli_env(repo)
    path = _rebooted_run(repo, env)[1]
    cleaned = cli(repo, "cleanup", env=env)
    assert cleaned.returncode == 0, cleaned.stderr
    state = load_session(path).state
    assert not state.running_jobs and state.latest("reboot").comments == settle.NORETURN_STOPPED
    done = cli(repo, "resume", "--autoresume", env=env)
    assert done.returncode == 0, done.stderr
    state = load_session(path).state
    assert len(state.results["reboot"]) == 1 and state.latest("after").outcome == OUTCOME_PASS
    assert FLAG_INCOMPLETE not in state.metadata.flags


def test_resume_says_so_before_the_next_noreturn_job_and_each_boot_continues_the_session(tmp_path):
    repo = tmp_path / "repo"
    env = cli_env(repo)
    first = cli(repo, "run", os.path.join(JOBS, "two_reboots.pxu"), env=env)
    assert first.returncode == -signal.SIGKILL, first.stderr
    path = _sessions(repo)[0]
    sid = _sid(path)
    boot = cli(repo, "resume", "--autoresume", env=env)  # the first boot: it restarts the machine again
    assert boot.returncode == -signal.SIGKILL, boot.stderr
    lines = boot.stderr.splitlines()
    assert f"plainbox-like: session {sid} stopped while job reboot1 (noreturn) ran: continuing it" in lines
    (said,) = [line for line in lines if "restart the machine" in line]
    assert said.startswith("plainbox-like: job reboot2 is expected to restart the machine (flag noreturn)")
    assert f"resume {sid}" in said
    state = load_session(path).state
    assert state.latest("reboot1").outcome == OUTCOME_PASS and state.running_jobs["reboot2"].noreturn
    boot = cli(repo, "resume", "--autoresume", env=env)  # the second boot
    assert boot.returncode == 0, boot.stderr
    state = load_session(path).state
    assert [state.latest(j).outcome for j in ("reboot1", "reboot2", "after")] == [OUTCOME_PASS] * 3
    assert FLAG_INCOMPLETE not in state.metadata.flags
