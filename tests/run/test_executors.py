"""Running single jobs: process groups, stdin, byte-exact capture, environment, outcomes, timeouts.

Most tests drive :class:`plainbox_like.run.batch.BatchRunner` in-process with a
session in ``tmp_path`` (never ``~/.cache``); a few talk to the
:class:`plainbox_like.run.executors.LocalExecutor` directly. Timing assertions are
generous on purpose: the machine running the tests is shared and noisy.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import stat
import struct
import termios
import time

import pytest

from plainbox_like.define import plan as planning
from plainbox_like.run import executors as runner_module
from plainbox_like.store.model import OUTCOME_CRASH, OUTCOME_FAIL, OUTCOME_PASS
from plainbox_like.run.executors import Exited, LocalExecutor, Output, ProcessSpec, Started, find_shell, iter_pgid_members
from plainbox_like.run.batch import BatchRunner
from plainbox_like.store.reader import load_session
from plainbox_like.store.repository import SessionRepository
from plainbox_like.define.units import JobDefinition
from factories import log_path, records, wait_until


# -- helpers ---------------------------------------------------------------------


def run_batch(root, jobs, *, parallel=1, kill_grace=0.5, base_env=None):
    """Run *jobs* into a new session under *root*; return (writer, loaded session)."""
    repo = SessionRepository(str(root))
    writer = repo.create(title="test_runner")
    plan = planning.build_plan(jobs)
    writer.set_plan({job_id: plan.jobs[job_id].checksum for job_id in plan.order}, plan.order)
    runner = BatchRunner(writer, plan, parallel=parallel, kill_grace=kill_grace, base_env=base_env)
    try:
        interrupted = runner.run()
    finally:
        writer.close()
    assert interrupted is False
    return writer, load_session(writer.path)


def raw_output(session_path, attempt, stream="stdout"):
    """The raw file's bytes (every attempt that ran has both raw files, empty ones included)."""
    with open(log_path(session_path, attempt, stream), "rb") as f:
        return f.read()


def stream_from_records(session_path, attempt, stream):
    return b"".join(r.data for r in records(session_path, attempt) if r.stream == stream)


def group_members(pgid):
    return list(iter_pgid_members(pgid))


# -- the executor ----------------------------------------------------------------


def poll_until_exit(executor, process, timeout=20.0):
    outputs = []

    def exited():
        for event in executor.poll(0.2):  # the poll waits: no sleep between calls
            if isinstance(event, Output):
                outputs.append(event)
            elif isinstance(event, Exited) and event.process is process:
                return event
        return None

    return outputs, wait_until(exited, timeout=timeout, interval=0, what="the process to exit")


def test_executor_runs_job_in_its_own_process_group():
    executor = LocalExecutor()
    try:
        process = executor.start(ProcessSpec("k", (find_shell(), "-c", "sleep 30"), dict(os.environ)))
        assert process.pgid == process.pid
        assert os.getpgid(process.pid) == process.pid
        assert os.getpgid(process.pid) != os.getpgrp()
        executor.signal(process, signal.SIGTERM)
        _, exited = poll_until_exit(executor, process)
        assert exited.returncode == -signal.SIGTERM
        assert wait_until(lambda: not group_members(process.pgid), timeout=10)
    finally:
        executor.close()


def test_executor_delivers_output_without_waiting_for_newline_or_exit():
    executor = LocalExecutor()
    try:
        process = executor.start(
            ProcessSpec("k", (find_shell(), "-c", "printf abc; sleep 1; printf def"), dict(os.environ))
        )
        outputs, exited = poll_until_exit(executor, process)
    finally:
        executor.close()
    assert exited.returncode == 0
    assert b"".join(o.data for o in outputs) == b"abcdef"
    first = outputs[0]
    assert first.data == b"abc"
    # "abc" was read while the job still slept, well before it ended.
    assert exited.when - first.when >= 0.5


def logged_spec(tmp_path, key, command):
    return ProcessSpec(key, (find_shell(), "-c", command), dict(os.environ), log=str(tmp_path / key))


def events_until_exit(executor, timeout=20.0):
    """Every poll's events (one list per poll that had any) until an Exited."""
    polls = []

    def exited():
        events = executor.poll(0.2)  # the poll waits: no sleep between calls
        if events:
            polls.append(events)
        return any(isinstance(e, Exited) for e in events)

    wait_until(exited, timeout=timeout, interval=0, what="the process to exit")
    return polls


@pytest.mark.parametrize(
    "delay, command, expected",
    [
        (30.0, "echo hi", [[Started, Exited]]),  # ends before its start is due: one poll tells both
        (0.05, "sleep 1.5", [[Started], [Exited]]),  # runs past the delay: its start is told first
    ],
    ids=["short", "longer"],
)
def test_when_a_start_is_reported(tmp_path, monkeypatch, delay, command, expected):
    monkeypatch.setattr("plainbox_like.run.executors.STARTED_DELAY", delay)
    executor = LocalExecutor()
    try:
        process = executor.start(logged_spec(tmp_path, "job", command))
        polls = events_until_exit(executor)
    finally:
        executor.close()
    assert [[type(e) for e in events] for events in polls] == expected
    assert all(e.process is process for events in polls for e in events)


def test_report_at_once_does_not_wait_for_the_delay(tmp_path, monkeypatch):
    monkeypatch.setattr("plainbox_like.run.executors.STARTED_DELAY", 30.0)
    executor = LocalExecutor()
    try:
        held = executor.start(logged_spec(tmp_path, "held", "sleep 60"))
        told = executor.start(logged_spec(tmp_path, "told", "sleep 60"), report_at_once=True)
        started = [e.process for e in executor.poll(5.0) if isinstance(e, Started)]
        assert started == [told]
        assert executor.poll(0.3) == []  # the other one is held back (its delay is 30 s)
    finally:
        for process in executor.running:
            executor.signal(process, signal.SIGKILL)
        while executor.running:
            executor.poll(1.0)
        executor.close()
    assert not held.fds and not told.fds


def test_output_events_never_come_before_the_start(tmp_path, monkeypatch):
    monkeypatch.setattr("plainbox_like.run.executors.STARTED_DELAY", 30.0)  # ignored: no io-log, output comes as events
    executor = LocalExecutor()
    try:
        process = executor.start(ProcessSpec("k", (find_shell(), "-c", "echo a; sleep 0.5; echo b"), dict(os.environ)))
        polls = events_until_exit(executor)
    finally:
        executor.close()
    kinds = [type(e) for events in polls for e in events]
    assert kinds[0] is Started and kinds[-1] is Exited and kinds.count(Output) >= 1
    assert polls[0][0].process is process


F_GETPIPE_SZ = 1032  # Linux fcntl: a pipe's capacity


def pipe_fill(fd: int) -> int:
    """How many bytes wait in the pipe *fd* reads from."""
    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4))[0]


def test_a_pipe_grows_only_when_a_job_fills_it(tmp_path, monkeypatch):
    grown = []
    real = runner_module._enlarge_pipe
    monkeypatch.setattr(runner_module, "_enlarge_pipe", lambda fd: (grown.append(fd), real(fd)))
    executor = LocalExecutor()
    try:
        executor.start(logged_spec(tmp_path, "small", "echo small"))
        events_until_exit(executor)
        assert grown == []
        process = executor.start(logged_spec(tmp_path, "big", "head -c 3000000 /dev/zero"))
        [stdout] = [fd for fd, stream in process.fds.items() if stream == "stdout"]
        assert wait_until(lambda: pipe_fill(stdout) >= fcntl.fcntl(stdout, F_GETPIPE_SZ))  # not read: it fills
        events_until_exit(executor)
    finally:
        executor.close()
    assert len(grown) >= 1
    assert os.path.getsize(tmp_path / "big.stdout") == 3_000_000


# -- one job in a session --------------------------------------------------------


def test_job_process_group_is_its_own_pid(tmp_path):
    have_ps = shutil.which("ps") is not None
    command = 'echo "$$"; ' + ('ps -o pgid= $$' if have_ps else "cut -d' ' -f5 /proc/$$/stat")
    writer, loaded = run_batch(tmp_path, [JobDefinition(id="pg", command=command)])
    attempt = loaded.state.latest("pg")
    assert attempt.outcome == OUTCOME_PASS
    pid, pgid = raw_output(loaded.path, attempt).split()
    assert int(pid) == int(pgid)
    assert int(pgid) != os.getpgrp()


def test_stdin_is_dev_null(tmp_path):
    jobs = [
        JobDefinition(id="cat", command="cat", timeout=30),
        JobDefinition(id="readlink", command="readlink /proc/$$/fd/0"),
    ]
    started = time.monotonic()
    writer, loaded = run_batch(tmp_path, jobs)
    assert time.monotonic() - started < 20
    cat = loaded.state.latest("cat")
    assert cat.outcome == OUTCOME_PASS, cat
    assert raw_output(loaded.path, cat) == b""
    assert raw_output(loaded.path, loaded.state.latest("readlink")).strip() == b"/dev/null"


def test_output_is_captured_byte_exact_per_stream(tmp_path):
    blob = os.urandom(2_500_000) + b"\0\0\n\r\xff"  # more than a pipe buffer on both streams
    blob_file = tmp_path / "blob.bin"
    blob_file.write_bytes(blob)
    jobs = [
        JobDefinition(id="nul", command=r"printf 'a\000b\377\r\n'; printf 'err\000\001' >&2; printf 'c\000'"),
        JobDefinition(id="big", command=f"cat '{blob_file}'; cat '{blob_file}' >&2; cat '{blob_file}'"),
    ]
    writer, loaded = run_batch(tmp_path / "repo", jobs)
    nul = loaded.state.latest("nul")
    assert raw_output(loaded.path, nul, "stdout") == b"a\0b\xff\r\nc\0"
    assert raw_output(loaded.path, nul, "stderr") == b"err\0\x01"
    assert stream_from_records(loaded.path, nul, "stdout") == b"a\0b\xff\r\nc\0"
    assert stream_from_records(loaded.path, nul, "stderr") == b"err\0\x01"
    big = loaded.state.latest("big")
    assert raw_output(loaded.path, big, "stdout") == blob + blob
    assert raw_output(loaded.path, big, "stderr") == blob
    assert stream_from_records(loaded.path, big, "stdout") == blob + blob
    assert stream_from_records(loaded.path, big, "stderr") == blob


def test_environment(tmp_path):
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "CALLER_VAR": "from caller", "OVERRIDDEN": "old"}
    job = JobDefinition(
        id="ns::env-job",
        command='env -0; test -d "$PLAINBOX_SESSION_SHARE" && touch "$PLAINBOX_SESSION_SHARE/was-here"',
        environ=("FOO=bar", "OVERRIDDEN=new", "WITH_EQUALS=a=b", "EMPTY="),
    )
    writer, loaded = run_batch(tmp_path, [job], base_env=base)
    attempt = loaded.state.latest("ns::env-job")
    assert attempt.outcome == OUTCOME_PASS, attempt
    env = dict(item.split("=", 1) for item in raw_output(loaded.path, attempt).decode().split("\0") if item)
    assert env["CALLER_VAR"] == "from caller"
    assert env["FOO"] == "bar"
    assert env["OVERRIDDEN"] == "new"
    assert env["WITH_EQUALS"] == "a=b"
    assert env["EMPTY"] == ""
    assert env["PLAINBOX_SESSION_SHARE"] == os.path.join(writer.path, "session-share")
    assert env["PLAINBOX_LIKE_SESSION"] == writer.id
    assert env["PLAINBOX_LIKE_JOB"] == "ns::env-job"
    assert os.path.exists(os.path.join(writer.path, "session-share", "was-here"))


def test_caller_environment_is_inherited_by_default(tmp_path, monkeypatch):
    monkeypatch.setenv("PLAINBOX_LIKE_TEST_MARK", "inherited-value")
    writer, loaded = run_batch(tmp_path, [JobDefinition(id="e", command='printf %s "$PLAINBOX_LIKE_TEST_MARK"')])
    assert raw_output(loaded.path, loaded.state.latest("e")) == b"inherited-value"


# -- outcomes --------------------------------------------------------------------


def test_outcomes_and_return_codes(tmp_path):
    jobs = [
        JobDefinition(id="zero", command="exit 0"),
        JobDefinition(id="three", command="echo x; exit 3"),
        JobDefinition(id="segv", command="kill -SEGV $$"),
        JobDefinition(id="term", command="kill -TERM $$"),
    ]
    writer, loaded = run_batch(tmp_path, jobs)
    state = loaded.state
    zero, three, segv, term = (state.latest(j) for j in ("zero", "three", "segv", "term"))
    assert (zero.outcome, zero.return_code) == (OUTCOME_PASS, 0)
    assert (three.outcome, three.return_code) == (OUTCOME_FAIL, 3)
    assert segv.outcome == OUTCOME_CRASH
    assert "SEGV" in (segv.comments or "")
    assert term.outcome == OUTCOME_CRASH
    assert "TERM" in (term.comments or "")
    for attempt in (zero, three, segv, term):
        assert isinstance(attempt.execution_duration, float)
        assert 0.0 <= attempt.execution_duration < 30
        assert attempt.attempt == 1
        assert isinstance(attempt.started, float)


def test_execution_duration_is_plausible(tmp_path):
    writer, loaded = run_batch(tmp_path, [JobDefinition(id="nap", command="sleep 0.3")])
    attempt = loaded.state.latest("nap")
    assert attempt.outcome == OUTCOME_PASS
    assert isinstance(attempt.execution_duration, float)
    assert 0.3 <= attempt.execution_duration < 20


@pytest.mark.skipif(not os.path.exists("/proc/self/sched"), reason="needs the kernel's scheduler statistics")
def test_an_exit_time_is_not_put_earlier_by_a_slow_move_to_the_jobs_cpu(monkeypatch):
    """Moving to a busy CPU to read its clock can take long; the exit must not come out that much earlier."""
    real_last_cpu, real_setaffinity = runner_module._last_cpu, os.sched_setaffinity

    def elsewhere(path):  # this thread is on another CPU than the job was: exit_time must move
        return -1 if path == "/proc/thread-self/stat" else real_last_cpu(path)

    def slow_move(pid, cpus):
        if len(cpus) == 1:  # the move to the job's CPU, slow as under load
            time.sleep(0.3)
        real_setaffinity(pid, cpus)

    spawned = time.monotonic()
    pid = os.posix_spawn("/bin/true", ["true"], dict(os.environ))
    try:
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)  # a zombie now
        seen = time.monotonic()
        monkeypatch.setattr(runner_module, "_last_cpu", elsewhere)
        monkeypatch.setattr(os, "sched_setaffinity", slow_move)
        when = runner_module.exit_time(pid, seen, None)
    finally:
        monkeypatch.undo()
        os.waitpid(pid, 0)
    assert when is not None
    assert spawned - 0.02 <= when <= seen


def test_record_delays_follow_the_output_timing(tmp_path):
    writer, loaded = run_batch(tmp_path, [JobDefinition(id="slow", command="echo a; sleep 0.4; echo b")])
    recs = records(loaded.path, loaded.state.latest("slow"))
    assert [r.data for r in recs] == [b"a\n", b"b\n"]
    assert all(isinstance(r.delay, float) and r.delay >= 0 for r in recs)
    assert recs[1].delay >= 0.3
    assert recs[0].delay < recs[1].delay


def test_timeout_terminates_the_job(tmp_path):
    job = JobDefinition(id="slow", command='echo "$$"; sleep 30', timeout=0.5)
    started = time.monotonic()
    writer, loaded = run_batch(tmp_path, [job])
    assert time.monotonic() - started < 20
    attempt = loaded.state.latest("slow")
    assert attempt.outcome == OUTCOME_FAIL
    assert "timed out" in (attempt.comments or "")
    assert 0.5 <= attempt.execution_duration < 20
    pgid = int(raw_output(loaded.path, attempt))
    assert wait_until(lambda: not group_members(pgid), timeout=10)


def test_timeout_kills_a_job_that_ignores_sigterm(tmp_path):
    job = JobDefinition(id="stubborn", command='echo "$$"; trap "echo got TERM" TERM; sleep 30; sleep 30', timeout=0.5)
    job2 = JobDefinition(id="deaf", command='echo "$$"; trap "" TERM; sleep 30', timeout=0.5)
    started = time.monotonic()
    writer, loaded = run_batch(tmp_path, [job, job2], kill_grace=0.5)
    assert time.monotonic() - started < 25
    for job_id in ("stubborn", "deaf"):
        attempt = loaded.state.latest(job_id)
        assert attempt.outcome == OUTCOME_FAIL, attempt
        assert "timed out" in (attempt.comments or "")
        assert attempt.return_code == -signal.SIGKILL
        pgid = int(raw_output(loaded.path, attempt).split()[0])
        assert wait_until(lambda: not group_members(pgid), timeout=10)
    assert b"got TERM" in raw_output(loaded.path, loaded.state.latest("stubborn"))


def test_timeout_kills_group_members_that_outlive_the_leader(tmp_path):
    # The shell dies of SIGTERM at once; a helper in its group ignores it.
    # SIGKILL after the grace period must reach the whole group all the same.
    command = 'echo "$$"; sh -c \'trap "" TERM; sleep 30\' & wait'
    job = JobDefinition(id="helper", command=command, timeout=0.5)
    writer, loaded = run_batch(tmp_path, [job], kill_grace=0.5)
    attempt = loaded.state.latest("helper")
    assert attempt.outcome == OUTCOME_FAIL
    assert "timed out" in (attempt.comments or "")
    pgid = int(raw_output(loaded.path, attempt).split()[0])
    assert wait_until(lambda: not group_members(pgid), timeout=10), "processes of a timed-out job survived"


def test_jobs_without_timeout_are_not_stopped(tmp_path):
    writer, loaded = run_batch(tmp_path, [JobDefinition(id="a", command="sleep 0.6"), JobDefinition(id="b", command="true", timeout=5)])
    assert loaded.state.latest("a").outcome == OUTCOME_PASS
    assert loaded.state.latest("b").outcome == OUTCOME_PASS


def test_background_process_does_not_hold_up_the_batch(tmp_path):
    # The job's shell ends at once; a helper it started keeps the pipes open.
    job = JobDefinition(id="daemonish", command='echo "$$"; sleep 20 & echo started')
    started = time.monotonic()
    writer, loaded = run_batch(tmp_path, [job, JobDefinition(id="next", command="echo next")])
    try:
        assert time.monotonic() - started < 15
        attempt = loaded.state.latest("daemonish")
        assert attempt.outcome == OUTCOME_PASS
        assert attempt.execution_duration < 15
        assert loaded.state.latest("next").outcome == OUTCOME_PASS
    finally:
        pgid = int(raw_output(loaded.path, loaded.state.latest("daemonish")).split()[0])
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_a_batch_leaves_no_file_descriptor_open(tmp_path):
    # Pipes made ahead for the next job, pidfds, log files and the selector are all closed at the end.
    def open_fds():
        return set(os.listdir("/proc/self/fd"))

    jobs = [JobDefinition(id=f"j{i}", command=f"echo {i}; echo e >&2") for i in range(4)]
    run_batch(tmp_path / "warm", jobs[:1])  # imports and caches first
    before = open_fds()
    run_batch(tmp_path / "a", jobs)
    run_batch(tmp_path / "b", jobs, parallel=2)
    assert open_fds() - before == set()


def test_an_interrupted_run_waits_for_its_jobs_without_spinning(tmp_path, monkeypatch):
    """After SIGTERM the runner waits out the grace period in poll(), not in a busy loop on the signal's wake-up."""
    polls = []
    real_poll = LocalExecutor.poll
    monkeypatch.setattr(LocalExecutor, "poll", lambda self, timeout: (polls.append(timeout), real_poll(self, timeout))[1])

    class SignalOnStart:
        def started(self, job_id, attempt):
            assert wait_until(lambda: os.path.exists(ready), timeout=20)  # its trap is set
            os.kill(os.getpid(), signal.SIGTERM)  # the runner's handler is installed while it runs

        def finished(self, job_id, result):
            pass

        def close(self):
            pass

    repo = SessionRepository(str(tmp_path))
    writer = repo.create()
    ready = tmp_path / "ready"
    plan = planning.build_plan([JobDefinition("stubborn", command=f"trap '' TERM; touch {ready}; sleep 30")])
    writer.set_plan({"stubborn": plan.jobs["stubborn"].checksum}, plan.order)
    runner = BatchRunner(writer, plan, kill_grace=1.0, reporter=SignalOnStart())
    started = time.monotonic()
    try:
        assert runner.run() is True
    finally:
        writer.close()
    assert time.monotonic() - started >= 0.9  # it did wait for the job to be killed
    assert len(polls) < 50, f"{len(polls)} polls while waiting"
    assert load_session(writer.path).state.latest("stubborn").outcome == OUTCOME_CRASH


def test_the_executor_makes_the_temporary_directory_and_reports_what_was_left(tmp_path, monkeypatch):
    from plainbox_like.run.workdir import TempCwd

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    executor = LocalExecutor()
    try:
        messy = executor.start(
            ProcessSpec("messy", (find_shell(), "-c", "pwd > ../messy.pwd; mkdir d; touch d/x top"), dict(os.environ),
                        temp_cwd=TempCwd("job-messy-"))
        )
        _, messy_exit = poll_until_exit(executor, messy)
        tidy = executor.start(
            ProcessSpec("tidy", (find_shell(), "-c", "pwd > ../tidy.pwd"), dict(os.environ), temp_cwd=TempCwd("job-tidy-"))
        )
        _, tidy_exit = poll_until_exit(executor, tidy)
        executor.poll(0)  # an empty directory goes at the next poll, after its exit was reported
    finally:
        executor.close()
    assert messy_exit.leftover_files == ("d", "d/x", "top")
    assert tidy_exit.leftover_files == ()
    made = [(tmp_path / name).read_text().strip() for name in ("messy.pwd", "tidy.pwd")]
    assert [os.path.basename(path)[:9] for path in made] == ["job-messy", "job-tidy-"]
    assert all(os.path.dirname(path) == str(tmp_path) and not os.path.exists(path) for path in made)


def test_an_ended_jobs_empty_directory_goes_off_the_path_to_the_next_start(tmp_path, monkeypatch):
    """Removing a directory can take a file system hundreds of microseconds: a poll woken by a watched
    descriptor (a worker's next command, a signal) leaves it; one that timed out, or one while the next
    job runs, removes it."""
    from plainbox_like.run.workdir import TempCwd

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    executor = LocalExecutor()
    command_r, command_w = os.pipe()
    executor.watch_fd(command_r, "commands")

    def spec(key, command="true"):
        return ProcessSpec(key, (find_shell(), "-c", command), dict(os.environ), temp_cwd=TempCwd(f"job-{key}-"))

    def left():
        return sorted(name[:6] for name in os.listdir(tmp_path) if name.startswith("job-"))

    try:
        poll_until_exit(executor, executor.start(spec("a")))
        os.write(command_w, b"x")
        assert executor.poll(None) == []  # woken by the command: the next job is about to start
        assert left() == ["job-a-"]
        os.read(command_r, 1)
        executor.poll(0)  # nothing came
        assert left() == []
        poll_until_exit(executor, executor.start(spec("b")))
        second = executor.start(spec("c", "while [ ! -e ../go ]; do sleep 0.01; done"))
        executor.poll(0)  # while c runs (until told to go: its exit must not come in this poll)
        assert left() == ["job-c-"]
        (tmp_path / "go").touch()
        poll_until_exit(executor, second)
    finally:
        executor.close()
        os.close(command_r)
        os.close(command_w)
    assert left() == []


def _marked_spec(key, command, temp_cwd):
    """A spec as the runner makes them: marked, so that the processes a job leaves are looked for."""
    marker = (("PLAINBOX_LIKE_SESSION", "reuse-test"), ("PLAINBOX_LIKE_JOB", key))
    return ProcessSpec(key, (find_shell(), "-c", command), {**os.environ, **dict(marker)}, marker=marker,
                       temp_cwd=temp_cwd)


def test_an_empty_directory_a_job_left_no_process_in_is_the_next_jobs_renamed(tmp_path, monkeypatch):
    """Renaming a directory costs a file system mounted with discard far less than removing one and making
    another: the next job gets it under its own name, empty; nothing is left once the executor is idle."""
    from plainbox_like.run.workdir import TempCwd

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    executor = LocalExecutor()
    try:
        first = executor.start(_marked_spec("a", "pwd > ../a.pwd; touch x; rm x", TempCwd("job-a-")))
        first_dir = os.stat(first.cwd).st_ino
        _, first_exit = poll_until_exit(executor, first)
        second = executor.start(_marked_spec("b", "pwd > ../b.pwd; ls -A", TempCwd("job-b-")))
        second_dir = second.cwd
        assert os.path.basename(second_dir).startswith("job-b-") and os.stat(second_dir).st_ino == first_dir
        outputs, second_exit = poll_until_exit(executor, second)
        assert [name[:6] for name in os.listdir(tmp_path) if name.startswith("job-")] == ["job-b-"]  # the spare
        executor.poll(0)  # a poll that found nothing to do, with no job running: the spare goes
        assert not [name for name in os.listdir(tmp_path) if name.startswith("job-")]
    finally:
        executor.close()
    assert first_exit.leftover_files == second_exit.leftover_files == ()
    assert b"".join(o.data for o in outputs if o.stream == "stdout") == b""  # nothing of a's in it
    assert (tmp_path / "b.pwd").read_text().strip() == second_dir != (tmp_path / "a.pwd").read_text().strip()


@pytest.mark.parametrize("case", ["process left", "mode changed", "shared", "other root"])
def test_a_directory_is_not_reused_when_it_may_not_be_fresh(tmp_path, monkeypatch, case):
    """A process the job left may write there; a job may chmod its directory; a shared one is 0777; the
    temporary root may have changed: then the next job gets a directory made for it, and the old one goes."""
    from plainbox_like.run.workdir import TempCwd

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    command = {"process left": "sleep 30 &", "mode changed": "chmod 755 ."}.get(case, "true")
    first_spec = TempCwd("job-a-", mode=0o777 if case == "shared" else None)
    executor = LocalExecutor()
    try:
        _, first_exit = poll_until_exit(executor, executor.start(_marked_spec("a", command, first_spec)))
        root = tmp_path
        if case == "other root":
            root = tmp_path / "other"
            root.mkdir()
            monkeypatch.setenv("TMPDIR", str(root))
        second = executor.start(_marked_spec("b", "true", TempCwd("job-b-")))
        assert os.path.dirname(second.cwd) == str(root)
        assert stat.S_IMODE(os.stat(second.cwd).st_mode) == 0o700
        for leftover in first_exit.leftovers:  # not in b's directory
            assert os.readlink(f"/proc/{leftover.pid}/cwd") != second.cwd
        poll_until_exit(executor, second)
    finally:
        for leftover in first_exit.leftovers:
            os.kill(leftover.pid, signal.SIGKILL)
        executor.close()
    assert bool(first_exit.leftovers) == (case == "process left")
    assert not [path for path in tmp_path.rglob("job-*")]


def test_a_job_whose_temporary_directory_cannot_be_made_is_not_started(tmp_path, monkeypatch):
    from plainbox_like.run.workdir import TempCwd

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    executor = LocalExecutor()
    out = tmp_path / "ran"
    try:
        with pytest.raises(OSError, match="^no temporary working directory: "):
            executor.start(ProcessSpec("k", (find_shell(), "-c", f"touch {out}"), dict(os.environ),
                                       temp_cwd=TempCwd("missing/parent-")))
        assert executor.running == []
    finally:
        executor.close()
    assert not out.exists()


def _a_kernel_thread() -> int:
    """A kernel thread's pid: its command line is empty for good."""
    pid = next((pid for pid in runner_module.iter_pids() if runner_module._kernel_thread(pid)), None)
    if pid is None:
        pytest.skip("no kernel thread is visible here")
    return pid


def test_a_command_line_caught_empty_in_an_exec_is_read_again(monkeypatch):
    """A job's background process may be caught in execve, its command line empty for a moment: with
    retries it is read again until it shows, so that its job's result names it ("sleep 600", not "[bash]")."""
    pid = _a_kernel_thread()
    monkeypatch.setattr(runner_module, "_kernel_thread", lambda _pid: False)  # as a process in execve
    reads = []
    monkeypatch.setattr(runner_module.os, "pread", lambda fd, size, offset: reads.append(offset) or (
        b"sleep\x00600\x00" if len(reads) == 3 else b""))
    monkeypatch.setattr(runner_module, "ENV_RETRY_DELAY", 0.0)
    assert runner_module.command_line(pid, retries=5) == "sleep 600"
    assert reads == [0, 0, 0]


def test_a_kernel_threads_command_line_is_not_waited_for(monkeypatch):
    pid = _a_kernel_thread()
    sleeps = []
    monkeypatch.setattr(runner_module.time, "sleep", sleeps.append)
    name = runner_module.command_line(pid, retries=runner_module.ENV_RETRIES)
    assert name.startswith("[") and name.endswith("]")
    assert sleeps == []
