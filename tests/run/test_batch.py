"""Running and resuming whole batches: journaling, parallelism, skips, interruptions, resume.

The in-process tests drive :mod:`plainbox_like.run.batch` directly; the
interruption tests run ``plainbox-like`` as a subprocess and signal it. Every
session lives under ``tmp_path`` (``--repository`` / ``PLAINBOX_LIKE_REPOSITORY``).
"""

from __future__ import annotations

import errno
import glob
import os
import shutil
import signal
import sys
import time

import pytest

from plainbox_like.define import plan as planning
from plainbox_like.run import batch, settle
from plainbox_like.store.runconfig import RunConfig
from plainbox_like.run import prepare
from plainbox_like.store.iolog import RecordReader
from plainbox_like.store.model import (
    FLAG_INCOMPLETE,
    OUTCOME_CRASH,
    OUTCOME_FAIL,
    OUTCOME_PASS,
    OUTCOME_SKIP,
    OUTCOME_SKIPPED_DEPENDENCY,
)
from plainbox_like.run.executors import iter_pgid_members
from plainbox_like.store.reader import load_session
from plainbox_like.store.repository import SessionRepository
from plainbox_like.define.units import JobDefinition
from cli_helpers import cli, cli_env, read_pid, start_cli
from factories import only_session, wait_until

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JOBS = os.path.join(HERE, "data", "jobs")
ROOT = os.path.dirname(HERE)


# -- helpers ---------------------------------------------------------------------


def group_members(pgid):
    return list(iter_pgid_members(pgid))


def run_jobs(root, jobs, *, parallel=1, kill_grace=0.5, base_env=None):
    """Run *jobs* in-process into a new session; returns (wall seconds, loaded session)."""
    repo = SessionRepository(str(root))
    writer = repo.create(title="test_session")
    plan = planning.build_plan(jobs)
    writer.set_plan({job_id: plan.jobs[job_id].checksum for job_id in plan.order}, plan.order)
    runner = batch.BatchRunner(writer, plan, parallel=parallel, kill_grace=kill_grace, base_env=base_env)
    started = time.monotonic()
    try:
        assert runner.run() is False
    finally:
        writer.close()
    return time.monotonic() - started, load_session(writer.path)


def run_file(root, path, *, parallel=1):
    """Run a unit file in-process the way ``plainbox-like run`` does; returns the summary and loaded session."""
    config = RunConfig(sources=[path], parallel=parallel)
    prepared = prepare.start_session(SessionRepository(str(root)), config)
    summary = prepare.run_prepared(prepared)
    return summary, load_session(summary.path)


def raw_output(session_path, attempt, stream="stdout"):
    stem = attempt.io_log_filename[: -len(".record.gz")]
    with open(os.path.join(session_path, f"{stem}.{stream}"), "rb") as f:
        return f.read()


def marker_env(repo, marker_dir=None):
    """The CLI's environment (:func:`cli_helpers.cli_env`) with ``MARKER_DIR`` for jobs that leave marks."""
    return cli_env(repo, **({"MARKER_DIR": str(marker_dir)} if marker_dir is not None else {}))


def no_traceback(text):
    return "Traceback" not in text


# -- journaling of running jobs --------------------------------------------------


PEEK = (
    "import os; from plainbox_like.store.reader import load_session; "
    "me = os.environ['PLAINBOX_LIKE_JOB']; "
    "state = load_session(os.path.dirname(os.environ['PLAINBOX_SESSION_SHARE'])).state; "
    "print(state.metadata.running_job_name); print(me in state.running_jobs); "
    "print(state.running_jobs[me].attempt if me in state.running_jobs else None); "
    "print(sorted(state.results))"
)


def test_start_is_journaled_before_the_job_runs(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    command = f'"{sys.executable}" -c "{PEEK}"'
    jobs = [JobDefinition(id="peek-1", command=command), JobDefinition(id="peek-2", command=command)]
    _, loaded = run_jobs(tmp_path, jobs, base_env=env)
    state = loaded.state
    out1 = raw_output(loaded.path, state.latest("peek-1")).decode().splitlines()
    out2 = raw_output(loaded.path, state.latest("peek-2")).decode().splitlines()
    assert state.latest("peek-1").outcome == OUTCOME_PASS, out1
    assert out1 == ["peek-1", "True", "1", "[]"]
    # The first job's result was durable before the second started.
    assert out2 == ["peek-2", "True", "1", "['peek-1']"]
    assert state.metadata.running_job_name is None
    assert state.running_jobs == {}


def test_running_job_name_is_cleared_after_each_job(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    # The second job looks at the session while the first is long finished and
    # itself is running; after the batch, nothing is running.
    jobs = [
        JobDefinition(id="quick", command="true"),
        JobDefinition(id="look", command=f'"{sys.executable}" -c "{PEEK}"', after=("quick",)),
    ]
    _, loaded = run_jobs(tmp_path, jobs, base_env=env)
    out = raw_output(loaded.path, loaded.state.latest("look")).decode().splitlines()
    assert out[0] == "look"
    assert loaded.state.metadata.running_job_name is None
    assert loaded.state.running_jobs == {}
    # Also in the snapshot alone (not only after journal replay).
    from plainbox_like.store import codec

    with open(os.path.join(loaded.path, "session"), "rb") as f:
        snapshot = codec.decode_state(f.read(), "session").state
    assert snapshot.metadata.running_job_name is None


# -- parallel runs -----------------------------------------------------------------


def test_parallel_jobs_overlap_and_respect_after_and_depends(tmp_path):
    jobs = [
        JobDefinition(id="a", command="sleep 1"),
        JobDefinition(id="b", command="sleep 1"),
        JobDefinition(id="c", command="true", after=("a", "b")),
        JobDefinition(id="d", command="true", depends=("a",)),
    ]
    wall, loaded = run_jobs(tmp_path, jobs, parallel=2)
    state = loaded.state
    assert wall < 1.8, f"two 1 s jobs with -j 2 took {wall:.2f} s"
    for job_id in "abcd":
        assert state.latest(job_id).outcome == OUTCOME_PASS
    a, b, c, d = (state.latest(j) for j in "abcd")
    # a and b ran at the same time.
    assert abs(a.started - b.started) < 0.8
    # c started only after both ended; d only after a ended.
    slack = 0.05
    assert c.started >= a.started + a.execution_duration - slack
    assert c.started >= b.started + b.execution_duration - slack
    assert d.started >= a.started + a.execution_duration - slack


def test_sequential_by_default(tmp_path):
    jobs = [JobDefinition(id="a", command="sleep 0.3"), JobDefinition(id="b", command="sleep 0.3")]
    wall, loaded = run_jobs(tmp_path, jobs)
    a, b = loaded.state.latest("a"), loaded.state.latest("b")
    assert b.started >= a.started + a.execution_duration - 0.05
    assert wall >= 0.6


# -- skips -----------------------------------------------------------------------


def test_dependency_skips(tmp_path):
    summary, loaded = run_file(tmp_path, os.path.join(JOBS, "outcomes.pxu"))
    state = loaded.state
    assert state.latest("ok").outcome == OUTCOME_PASS
    assert state.latest("bad").outcome == OUTCOME_FAIL
    assert state.latest("bad").return_code == 7
    assert state.latest("segv").outcome == OUTCOME_CRASH
    assert state.latest("needs-ok").outcome == OUTCOME_PASS
    needs_bad = state.latest("needs-bad")
    assert needs_bad.outcome == OUTCOME_SKIPPED_DEPENDENCY
    assert "bad" in needs_bad.skip_reason
    ghost = state.latest("needs-ghost")
    assert ghost.outcome == OUTCOME_SKIPPED_DEPENDENCY
    assert "no/such/job" in ghost.skip_reason
    assert summary.exit_code == 1
    assert FLAG_INCOMPLETE not in state.metadata.flags
    assert state.metadata.finished is not None


def test_plugins_and_other_users_are_skipped_with_reasons(tmp_path, monkeypatch):
    marker = tmp_path / "markers"
    marker.mkdir()
    monkeypatch.setenv("MARKER_DIR", str(marker))
    summary, loaded = run_file(tmp_path / "repo", os.path.join(JOBS, "plugins.pxu"))
    state = loaded.state
    for job_id, plugin in [
        ("person/manual", "manual"),
        ("person/interact", "user-interact"),
        ("person/verify", "user-verify"),
        ("person/interact-verify", "user-interact-verify"),
    ]:
        attempt = state.latest(job_id)
        assert attempt.outcome == OUTCOME_SKIP, (job_id, attempt)
        assert attempt.skip_reason and plugin in attempt.skip_reason
        assert attempt.io_log_filename is None
    other = state.latest("other-user")
    assert other.outcome == OUTCOME_SKIP
    assert "plainbox-like-no-such-user" in other.skip_reason
    assert not (marker / "other-user-ran").exists()
    assert state.latest("runs").outcome == OUTCOME_PASS
    assert summary.exit_code == 0


# -- resume without a live runner (in-process) -------------------------------------


def test_resume_without_argument_takes_most_recent_incomplete(tmp_path):
    repo = SessionRepository(str(tmp_path / "repo"))
    config = RunConfig(commands=["echo one", "echo two"])
    # abandon() is what a dying runner leaves: a released lock whose file still
    # names a pid -- here our own, a live process, as when the pid was reused
    # after a reboot. A lock nobody holds must not count as a live runner.
    older = prepare.start_session(repo, config, title="older")
    older.writer.abandon()
    time.sleep(0.01)
    newer = prepare.start_session(repo, config, title="newer")
    newer.writer.abandon()
    done = prepare.start_session(repo, config, title="done-later")
    prepare.run_prepared(done)  # complete: never picked

    prepared = prepare.resume_session(repo)
    assert prepared.writer.path == newer.writer.path
    summary = prepare.run_prepared(prepared)
    assert summary.exit_code == 0
    state = load_session(newer.writer.path).state
    assert [state.latest(j).outcome for j in ("c1", "c2")] == ["pass", "pass"]
    assert FLAG_INCOMPLETE not in state.metadata.flags
    assert FLAG_INCOMPLETE in load_session(older.writer.path).state.metadata.flags


def test_skip_reasons_survive_resume(tmp_path):
    repo = SessionRepository(str(tmp_path / "repo"))
    config = RunConfig(sources=[os.path.join(JOBS, "outcomes.pxu")])
    summary = prepare.run_prepared(prepare.start_session(repo, config))
    before = load_session(summary.path).state
    prepared = prepare.resume_session(repo, summary.session_id)
    after_summary = prepare.run_prepared(prepared)
    after = load_session(summary.path).state
    assert after_summary.exit_code == 1
    for job_id in ("needs-bad", "needs-ghost"):
        assert after.latest(job_id).skip_reason == before.latest(job_id).skip_reason
        assert len(after.results[job_id]) == 1


# -- interruptions (subprocess) ----------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_then_resume(tmp_path, signum, kill_later):
    repo, markers = tmp_path / "repo", tmp_path / "markers"
    markers.mkdir()
    env = marker_env(repo, markers)
    proc = start_cli(repo, "run", os.path.join(JOBS, "interrupt.pxu"), env=env)
    pgid = read_pid(markers / "first.pid", proc)
    kill_later.append(pgid)
    path = only_session(repo)
    sid = os.path.basename(path)[: -len(".session")]
    running = load_session(path).state
    assert "first" in running.running_jobs
    assert running.metadata.running_job_name == "first"

    # Only the lock holder writes: a resume meanwhile is refused.
    locked = cli(repo, "resume", sid, env=env)
    assert locked.returncode == 2
    assert "locked" in locked.stderr and no_traceback(locked.stderr)

    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert no_traceback(err)
    assert f"plainbox-like resume {sid}" in err
    assert wait_until(lambda: not group_members(pgid), timeout=15), "the job's processes survived the interrupt"

    state = load_session(path).state
    first = state.latest("first")
    assert first.outcome == OUTCOME_CRASH
    assert first.comments == "interrupted"
    assert "second" not in state.results
    assert FLAG_INCOMPLETE in state.metadata.flags
    assert state.running_jobs == {}
    assert state.metadata.running_job_name is None
    assert not (markers / "second.ran").exists()
    assert "first" in out  # the crash was reported as a line

    resumed = cli(repo, "resume", env=env)
    assert resumed.returncode == 1, resumed.stderr  # the interrupted job stays a crash
    assert no_traceback(resumed.stderr)
    assert (markers / "second.ran").exists()
    state = load_session(path).state
    assert state.latest("second").outcome == OUTCOME_PASS
    assert len(state.results["first"]) == 1
    assert FLAG_INCOMPLETE not in state.metadata.flags

    # Nothing left: a resume without argument says so.
    nothing = cli(repo, "resume", env=env)
    assert nothing.returncode == 2
    assert no_traceback(nothing.stderr) and nothing.stderr.count("\n") == 1


def test_interrupt_kills_a_job_that_ignores_sigterm(tmp_path, kill_later):
    repo, markers = tmp_path / "repo", tmp_path / "markers"
    markers.mkdir()
    env = marker_env(repo, markers)
    command = 'echo "$$" > "$MARKER_DIR/p.tmp" && mv "$MARKER_DIR/p.tmp" "$MARKER_DIR/p"; trap "" TERM INT; sleep 30'
    proc = start_cli(repo, "run", "-c", command, "-c", "true", env=env)
    pgid = read_pid(markers / "p", proc)
    kill_later.append(pgid)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert wait_until(lambda: not group_members(pgid), timeout=15)
    state = load_session(only_session(repo)).state
    assert state.latest("c1").outcome == OUTCOME_CRASH
    assert state.latest("c1").comments == "interrupted"
    assert "c2" not in state.results


def test_rerun_interrupted_after_ctrl_c(tmp_path, kill_later):
    repo, markers = tmp_path / "repo", tmp_path / "markers"
    markers.mkdir()
    env = marker_env(repo, markers)
    proc = start_cli(repo, "run", os.path.join(JOBS, "interrupt.pxu"), env=env)
    kill_later.append(read_pid(markers / "first.pid", proc))
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode == 130
    (markers / "go").touch()
    resumed = cli(repo, "resume", "--rerun-interrupted", env=env)
    assert resumed.returncode == 0, resumed.stderr
    path = only_session(repo)
    attempts = load_session(path).state.results["first"]
    assert [(a.attempt, a.outcome) for a in attempts] == [(1, OUTCOME_CRASH), (2, OUTCOME_PASS)]
    assert raw_output(path, attempts[0]).startswith(b"first attempt")
    assert raw_output(path, attempts[1]) == b"second attempt\n"


def test_resume_after_sigkill(tmp_path, kill_later):
    repo, markers = tmp_path / "repo", tmp_path / "markers"
    markers.mkdir()
    env = marker_env(repo, markers)
    proc = start_cli(repo, "run", "-j", "2", os.path.join(JOBS, "noreturn.pxu"), env=env)
    first_pgid = read_pid(markers / "first.pid", proc)
    reboot_pgid = read_pid(markers / "reboot.pid", proc)
    kill_later.extend([first_pgid, reboot_pgid])
    proc.kill()
    proc.communicate(timeout=30)
    path = only_session(repo)
    sid = os.path.basename(path)[: -len(".session")]

    state = load_session(path).state
    assert set(state.running_jobs) == {"first", "reboot"}
    assert state.metadata.running_job_name in ("first", "reboot")
    assert FLAG_INCOMPLETE in state.metadata.flags
    # The runner is gone, its jobs are not.
    assert group_members(first_pgid) and group_members(reboot_pgid)

    (markers / "go").touch()  # a rerun would now finish at once; a plain resume must not rerun
    resumed = cli(repo, "resume", sid, env=env)
    assert resumed.returncode == 1, resumed.stderr
    assert no_traceback(resumed.stderr)
    assert "leftover" in resumed.stderr
    assert str(first_pgid) in resumed.stderr and str(reboot_pgid) in resumed.stderr
    assert wait_until(lambda: not group_members(first_pgid) and not group_members(reboot_pgid), timeout=15)

    state = load_session(path).state
    first = state.results["first"]
    assert len(first) == 1
    assert first[0].outcome == OUTCOME_CRASH
    assert first[0].comments == settle.STOPPED_WHILE_RUNNING
    assert first[0].attempt == 1
    assert raw_output(path, first[0]).startswith(b"first attempt")
    reboot = state.results["reboot"]
    assert [a.outcome for a in reboot] == [OUTCOME_PASS]
    assert state.latest("last").outcome == OUTCOME_PASS
    assert (markers / "last.ran").exists()
    assert state.running_jobs == {}
    assert state.metadata.running_job_name is None
    assert FLAG_INCOMPLETE not in state.metadata.flags


def logged_stdout(path, job_id):
    """What the record logs of *job_id*'s attempts in the session at *path* hold of its stdout so far."""
    data = b""
    for name in sorted(glob.glob(os.path.join(glob.escape(path), "io-logs", f"{job_id}*.record.gz"))):
        data += b"".join(r.data for r in RecordReader(name) if r.stream == "stdout")
    return data


def test_rerun_interrupted_after_sigkill(tmp_path, kill_later):
    repo, markers = tmp_path / "repo", tmp_path / "markers"
    markers.mkdir()
    env = marker_env(repo, markers)
    proc = start_cli(repo, "run", os.path.join(JOBS, "interrupt.pxu"), env=env)
    pgid = read_pid(markers / "first.pid", proc)
    kill_later.append(pgid)
    # The runner flushes an idle log within about a second: kill it once the first line is in the record log.
    assert wait_until(lambda: logged_stdout(only_session(repo), "first") == b"first attempt\n")
    proc.kill()
    proc.communicate(timeout=30)
    (markers / "go").touch()
    resumed = cli(repo, "resume", "--rerun-interrupted", env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert "leftover" in resumed.stderr
    assert wait_until(lambda: not group_members(pgid), timeout=15)
    path = only_session(repo)
    state = load_session(path).state
    attempts = state.results["first"]
    assert [(a.attempt, a.outcome) for a in attempts] == [(1, OUTCOME_CRASH), (2, OUTCOME_PASS)]
    assert attempts[0].comments == settle.STOPPED_WHILE_RUNNING
    assert attempts[0].io_log_filename != attempts[1].io_log_filename
    assert raw_output(path, attempts[0]).startswith(b"first attempt")
    assert raw_output(path, attempts[1]) == b"second attempt\n"
    assert state.latest("second").outcome == OUTCOME_PASS
    # The killed attempt's record.gz has no gzip trailer, yet yields what was printed.
    cut = RecordReader(os.path.join(path, attempts[0].io_log_filename))
    assert b"".join(r.data for r in cut if r.stream == "stdout") == b"first attempt\n"
    assert not cut.complete and cut.problem
    whole = RecordReader(os.path.join(path, attempts[1].io_log_filename))
    assert [r.data for r in whole] == [b"second attempt\n"] and whole.complete


def test_rerun_failed_keeps_old_logs(tmp_path):
    repo, markers = tmp_path / "repo", tmp_path / "markers"
    markers.mkdir()
    env = marker_env(repo, markers)
    first = cli(repo, "run", os.path.join(JOBS, "flaky.pxu"), env=env)
    assert first.returncode == 1, first.stderr
    path = only_session(repo)
    sid = os.path.basename(path)[: -len(".session")]
    before = load_session(path).state
    assert before.latest("flaky").outcome == OUTCOME_FAIL
    assert before.latest("needs-flaky").outcome == OUTCOME_SKIPPED_DEPENDENCY

    (markers / "go").touch()
    again = cli(repo, "resume", sid, "--rerun-failed", env=env)
    assert again.returncode == 1, again.stderr  # 'broken' crashes again
    state = load_session(path).state
    flaky = state.results["flaky"]
    assert [(a.attempt, a.outcome) for a in flaky] == [(1, OUTCOME_FAIL), (2, OUTCOME_PASS)]
    broken = state.results["broken"]
    assert [(a.attempt, a.outcome) for a in broken] == [(1, OUTCOME_CRASH), (2, OUTCOME_CRASH)]
    assert len(state.results["steady"]) == 1
    assert [(a.attempt, a.outcome) for a in state.results["needs-flaky"]] == [
        (1, OUTCOME_SKIPPED_DEPENDENCY),
        (2, OUTCOME_PASS),
    ]
    for attempts in (flaky, broken):
        names = [a.io_log_filename for a in attempts]
        assert len(set(names)) == 2
        for name in names:
            assert os.path.exists(os.path.join(path, name))
    assert raw_output(path, flaky[0]) == b"try\n"
    assert raw_output(path, flaky[1]) == b"try\n"


def test_changed_definitions_block_resume(tmp_path, kill_later):
    repo, markers = tmp_path / "repo", tmp_path / "markers"
    markers.mkdir()
    units = tmp_path / "jobs.pxu"
    shutil.copy(os.path.join(JOBS, "interrupt.pxu"), units)
    env = marker_env(repo, markers)
    proc = start_cli(repo, "run", str(units), env=env)
    kill_later.append(read_pid(markers / "first.pid", proc))
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode == 130
    path = only_session(repo)
    before = load_session(path).state

    # A new command for 'second' is a change ('first' stays as it was).
    text = units.read_text().replace("second.ran", "second.changed")
    units.write_text(text)
    refused = cli(repo, "resume", env=env)
    assert refused.returncode == 2
    assert no_traceback(refused.stderr)
    assert "second" in refused.stderr and "--ignore-changed" in refused.stderr
    assert "first" not in refused.stderr.replace("plainbox-like", "")
    assert refused.stderr.strip().count("\n") == 0, refused.stderr
    assert not (markers / "second.changed").exists() and not (markers / "second.ran").exists()
    after = load_session(path).state
    assert after.results.keys() == before.results.keys()
    assert FLAG_INCOMPLETE in after.metadata.flags

    forced = cli(repo, "resume", "--ignore-changed", env=env)
    assert forced.returncode == 1, forced.stderr  # 'first' stays a crash
    assert (markers / "second.changed").exists()
    assert load_session(path).state.latest("second").outcome == OUTCOME_PASS


def test_rerun_interrupted_does_not_rerun_a_noreturn_job(tmp_path, kill_later):
    # A noreturn job (think: reboot) that was running when the session stopped
    # did what it should; running it again would only stop the session again.
    repo, markers = tmp_path / "repo", tmp_path / "markers"
    markers.mkdir()
    env = marker_env(repo, markers)
    proc = start_cli(repo, "run", "-j", "2", os.path.join(JOBS, "noreturn.pxu"), env=env)
    kill_later.append(read_pid(markers / "first.pid", proc))
    reboot_pgid = read_pid(markers / "reboot.pid", proc)
    kill_later.append(reboot_pgid)
    proc.kill()
    proc.communicate(timeout=30)
    os.unlink(markers / "reboot.pid")
    (markers / "go").touch()
    resumed = cli(repo, "resume", "--rerun-interrupted", env=env)
    assert resumed.returncode == 0, resumed.stderr
    state = load_session(only_session(repo)).state
    assert [(a.attempt, a.outcome) for a in state.results["reboot"]] == [(1, OUTCOME_PASS)]
    assert [(a.attempt, a.outcome) for a in state.results["first"]] == [(1, OUTCOME_CRASH), (2, OUTCOME_PASS)]
    assert not (markers / "reboot.pid").exists()
    assert state.latest("last").outcome == OUTCOME_PASS
    assert wait_until(lambda: not group_members(reboot_pgid), timeout=15)


def test_settling_gives_a_job_killed_before_its_log_existed_an_empty_log(tmp_path):
    # The runner journals a start, spawns, then creates the log: a death in between leaves a name only.
    repo = SessionRepository(str(tmp_path))
    writer = repo.create(title="died early")
    stem = writer.reserve_log("a", 1)
    writer.job_started("a", 1, f"io-logs/{stem}.record.gz")
    path = writer.path
    writer.abandon()
    log = os.path.join(path, "io-logs", f"{stem}.record.gz")
    assert not os.path.exists(log)

    writer = SessionRepository(str(tmp_path)).open(path)
    settled = settle.settle_interrupted(writer, frozenset(), lambda _m: None)
    writer.close()
    assert settled == ["a"]
    reader = RecordReader(log)
    assert list(reader) == [] and reader.complete
    assert load_session(path).state.latest("a").outcome == OUTCOME_CRASH


# -- a full disk ---------------------------------------------------------------------

# Jobs sleep (31.7 s, to be found in /proc) only until the test marks the session as resumed.
FULL_DISK_UNITS = """\
id: first
command: echo first

id: big
command: head -c 2000000 /dev/zero | tr '\\0' x; test -e "$PLAINBOX_SESSION_SHARE/resumed" || sleep 31.7

id: slow
command: test -e "$PLAINBOX_SESSION_SHARE/resumed" || sleep 31.7

id: last
command: echo last
"""


def _no_space(*_args):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _sleepers():
    found = []
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"31.7" in f.read():
                    found.append(pid)
        except OSError:
            pass
    return found


@pytest.mark.parametrize("parallel", [1, 2], ids=["j1", "j2"])
@pytest.mark.parametrize("what", ["io-log", "journal"])
def test_a_full_disk_stops_the_run_cleanly_and_resume_continues(tmp_path, monkeypatch, parallel, what):
    from plainbox_like.store import iolog
    from plainbox_like.store import writer as writing
    from plainbox_like.errors import RunAborted

    units = tmp_path / "units.pxu"
    units.write_text(FULL_DISK_UNITS)
    repo = SessionRepository(str(tmp_path / "repo"))
    prepared = prepare.start_session(repo, RunConfig(sources=[str(units)], parallel=parallel))
    sid, path = prepared.writer.id, prepared.writer.path
    if what == "io-log":  # the big output is the first io-log write that does not fit (workers inherit this)
        real = iolog._write_all
        monkeypatch.setattr(iolog, "_write_all", lambda fd, data: _no_space() if len(data) > 4096 else real(fd, data))
    else:  # the journal is full from the first result on
        real = writing._write_all
        monkeypatch.setattr(
            writing, "_write_all", lambda fd, data: _no_space() if b'"op":"result"' in data else real(fd, data)
        )
    started = time.monotonic()
    with pytest.raises(RunAborted) as caught:
        prepare.run_prepared(prepared)
    message = str(caught.value)
    assert "No space left on device" in message and f"plainbox-like resume {sid}" in message
    assert "\n" not in message
    assert time.monotonic() - started < 20  # the sleeping jobs were stopped, not waited for
    assert wait_until(lambda: not _sleepers(), timeout=10), "a job of the stopped run still runs"
    loaded = load_session(path)  # it loads: no torn line, no sequence gap
    assert loaded.journal_torn is None
    assert FLAG_INCOMPLETE in loaded.state.metadata.flags

    monkeypatch.undo()  # room again
    open(os.path.join(path, "session-share", "resumed"), "w").close()
    summary = prepare.run_prepared(prepare.resume_session(repo, sid))
    state = load_session(summary.path).state
    assert FLAG_INCOMPLETE not in state.metadata.flags
    assert set(state.results) == {"first", "big", "slow", "last"}
    assert state.latest("last").outcome == OUTCOME_PASS
    if what == "io-log":
        assert state.latest("big").outcome == OUTCOME_CRASH  # its output could not be kept: never a pass
        if parallel == 1:
            assert state.latest("first").outcome == OUTCOME_PASS  # done before the disk filled up
    else:
        assert state.latest("first").outcome == OUTCOME_CRASH  # its result could not be written: never a pass
