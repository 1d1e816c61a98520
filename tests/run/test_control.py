"""stop / pause / continue requests to a running session."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

from plainbox_like.run import control
from plainbox_like.cli.main import main
from plainbox_like.errors import PlainboxLikeError
from plainbox_like.store.reader import load_session
from plainbox_like.store.repository import SessionRepository
from plainbox_like.read.summary import summarize
from cli_helpers import cli, cli_argv, cli_env
from factories import only_session, wait_until


def start_run(repo: str, *commands: str, extra: tuple[str, ...] = ()) -> subprocess.Popen:
    argv = cli_argv(repo, "run", *extra)
    for command in commands:
        argv += ["-c", command]
    return subprocess.Popen(argv, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def started_session(repo: str) -> str:
    """The session of the run just started, once it exists."""
    wait_until(lambda: SessionRepository(repo).session_paths(), what="a session")
    return only_session(repo)


def running_job(path: str) -> str | None:
    try:
        return load_session(path).state.metadata.running_job_name
    except PlainboxLikeError:
        return None


def latest(path: str, job: str):
    return load_session(path).state.latest(job)


def test_stop_waits_for_the_running_job_then_exits_resumable(tmp_path):
    repo = str(tmp_path / "repo")
    proc = start_run(repo, "sleep 1; echo first", "echo second")
    path = started_session(repo)
    wait_until(lambda: running_job(path) == "c1", what="c1 to start")
    asked = time.monotonic()
    assert main(["--repository", repo, "stop", os.path.basename(path)[: -len(".session")]]) == 0
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert "Stopped by request" in err and "resume" in err
    state = load_session(path).state
    assert state.latest("c1").outcome == "pass"  # finished, not killed
    assert state.latest("c2") is None  # never started
    assert "incomplete" in state.metadata.flags
    assert not os.path.exists(os.path.join(path, control.CONTROL_FILE))
    assert time.monotonic() - asked < 10
    # The session resumes and completes.
    done = cli(repo, "resume")
    assert done.returncode == 0, done.stderr
    assert load_session(path).state.latest("c2").outcome == "pass"


def test_stop_now_kills_the_running_job_as_crash(tmp_path):
    repo = str(tmp_path / "repo")
    proc = start_run(repo, "sleep 30", "echo never")
    path = started_session(repo)
    wait_until(lambda: running_job(path) == "c1", what="c1 to start")
    asked = time.monotonic()
    asked_wall = time.time()
    assert main(["--repository", repo, "stop", "--now", path]) == 0
    proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert time.monotonic() - asked < 5
    attempt = latest(path, "c1")
    assert (attempt.outcome, attempt.comments) == ("crash", "stopped by request")
    # The runner reacted within a second: the job ended (SIGTERM kills sleep at once) soon after the request.
    ended = attempt.started + attempt.execution_duration
    assert ended - asked_wall < 1.5, ended - asked_wall
    assert latest(path, "c2") is None


def test_pause_and_continue(tmp_path):
    repo = str(tmp_path / "repo")
    release = tmp_path / "release"  # c1 runs until the test makes it: the pause surely comes while it runs
    proc = start_run(repo, f"until [ -e {release} ]; do sleep 0.02; done", "echo second")
    path = started_session(repo)
    wait_until(lambda: running_job(path) == "c1", what="c1 to start")
    assert main(["--repository", repo, "pause", path]) == 0
    assert summarize(path).status == "running"  # a job still runs: not paused yet
    release.touch()
    # The runner says "paused" only once it is idle after declining to hand out the next job, so
    # by then c2 would have started if a pause did not hold it back.
    wait_until(lambda: summarize(path).status == "paused", what="paused status")
    assert latest(path, "c1").outcome == "pass"
    assert latest(path, "c2") is None and running_job(path) is None  # nothing starts while paused
    assert proc.poll() is None
    assert main(["--repository", repo, "continue", path]) == 0
    proc.communicate(timeout=30)
    assert proc.returncode == 0
    state = load_session(path).state
    assert state.latest("c2").outcome == "pass"
    assert "paused" not in state.metadata.flags
    assert summarize(path).status == "complete"


def test_request_file_is_atomic_json_and_survives_until_read(tmp_path, monkeypatch):
    repo = SessionRepository(str(tmp_path / "repo"))
    writer = repo.create(title="t")
    try:
        control.write_request(writer.path, control.PAUSE)
        with open(os.path.join(writer.path, control.CONTROL_FILE)) as f:
            data = json.load(f)
        assert data["action"] == "pause" and data["pid"] == os.getpid()
        assert oct(os.stat(os.path.join(writer.path, control.CONTROL_FILE)).st_mode & 0o777) == "0o600"
        watcher = control.ControlWatcher(writer.path)
        assert watcher.poll().action == "pause"
        watcher.done()
        assert watcher.poll(force=True) is None
    finally:
        writer.close()


def test_requests_need_a_live_runner_on_this_host(tmp_path, capsys):
    repo = str(tmp_path / "repo")
    writer = SessionRepository(repo).create(title="t")
    writer.close()
    assert main(["--repository", repo, "stop", writer.path]) == 2
    assert "not running" in capsys.readouterr().err
    with open(os.path.join(writer.path, "lock"), "w") as f:
        f.write("4242 some-other-host\n")
    assert main(["--repository", repo, "pause", writer.path]) == 2
    err = capsys.readouterr().err
    assert "some-other-host" in err and "same machine" in err


def test_sigint_while_paused_interrupts_and_clears_the_pause(tmp_path):
    repo = str(tmp_path / "repo")
    proc = start_run(repo, "sleep 0.5", "echo second")
    path = started_session(repo)
    wait_until(lambda: running_job(path) == "c1", what="c1 to start")
    control.write_request(path, control.PAUSE)
    wait_until(lambda: summarize(path).status == "paused", what="paused status")
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    state = load_session(path).state
    assert "paused" not in state.metadata.flags and "incomplete" in state.metadata.flags
    assert state.latest("c2") is None
