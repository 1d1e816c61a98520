"""Worker processes for parallel runs: events, signals, failures, environments, lifetime.

Timing assertions are generous: the machine running the tests is shared and noisy.
"""

from __future__ import annotations

import os
import signal
import time

import attrs
import pytest

from plainbox_like.define import plan as planning
from plainbox_like.store.iolog import RecordReader
from plainbox_like.store.journalsync import JournalSync
from plainbox_like.store.model import OUTCOME_CRASH, OUTCOME_FAIL, OUTCOME_PASS, Attempt
from plainbox_like.run.executors import (
    STARTED_DELAY, Exited, LogError, ProcessSpec, Started, find_marked, find_shell, iter_pgid_members,
)
from plainbox_like.run.batch import INTERRUPTED, BatchRunner
from plainbox_like.store.reader import load_session
from plainbox_like.store.repository import SessionRepository
from plainbox_like.define.units import JobDefinition
from plainbox_like.run.workers import Failed, WorkerDied, WorkerExecutor

from factories import records, wait_until


def spec(tmp_path, key, command, env=None, log=True):
    return ProcessSpec(
        key, (find_shell(), "-c", command), dict(os.environ if env is None else env),
        log=str(tmp_path / key) if log else None,
    )


def collect(executor, count, timeout=20.0):
    """Events until *count* processes exited (or failed)."""
    events = []

    def ended():
        events.extend(executor.poll(0.2))  # the poll waits: no sleep between calls
        return sum(isinstance(event, (Exited, Failed)) for event in events)

    wait_until(lambda: ended() >= count, timeout=timeout, interval=0)
    assert sum(isinstance(event, (Exited, Failed)) for event in events) == count, events
    return events


def gone(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture
def executor():
    made = WorkerExecutor(2)
    yield made
    made.close()


def test_jobs_run_in_workers_with_their_logs(tmp_path, executor):
    one = executor.start(spec(tmp_path, "one", "printf out; printf err >&2; exit 3"))
    two = executor.start(spec(tmp_path, "two", 'echo "$$ $(cut -d" " -f5 /proc/$$/stat)"'))
    events = collect(executor, 2)
    kinds = [(type(e).__name__, e.process.spec.key) for e in events]
    for key in ("one", "two"):
        assert kinds.index(("Started", key)) < kinds.index(("Exited", key))
    exits = {e.process.spec.key: e for e in events if isinstance(e, Exited)}
    assert exits["one"].returncode == 3
    assert exits["two"].returncode == 0
    assert one.pid and one.pgid == one.pid and one.started <= exits["one"].when
    assert (tmp_path / "one.stdout").read_bytes() == b"out"
    assert (tmp_path / "one.stderr").read_bytes() == b"err"
    stream = {r.stream: r.data for r in _records(tmp_path / "one")}
    assert stream == {"stdout": b"out", "stderr": b"err"}
    pid, pgid = (tmp_path / "two.stdout").read_text().split()
    assert int(pid) == int(pgid) == two.pid  # its own process group
    assert executor.running == []


def _records(stem):
    reader = RecordReader(str(stem) + ".record.gz")
    got = list(reader)
    assert reader.complete, reader.problem
    return got


HELD_BACK = 30.0  # a STARTED_DELAY no test waits for: the workers are forked after it is set


def test_a_short_job_is_started_and_exited_in_one_message(tmp_path, monkeypatch):
    monkeypatch.setattr("plainbox_like.run.executors.STARTED_DELAY", HELD_BACK)  # "short" whatever the machine's speed
    executor = WorkerExecutor(1)
    try:
        executor.start(spec(tmp_path, "quick", "true"))
        first = wait_until(lambda: executor.poll(0.5), timeout=20, interval=0)
    finally:
        executor.close()
    assert [type(e) for e in first] == [Started, Exited]


def test_a_longer_job_is_told_started_while_it_runs(tmp_path, executor):
    executor.start(spec(tmp_path, "slow", f"sleep {STARTED_DELAY * 20}"))
    first = wait_until(lambda: executor.poll(0.5), timeout=20, interval=0)
    assert [type(e) for e in first] == [Started]
    collect(executor, 1)


def test_report_at_once_does_not_wait(tmp_path, monkeypatch):
    monkeypatch.setattr("plainbox_like.run.executors.STARTED_DELAY", HELD_BACK)  # without report_at_once: no Started for 30 s
    executor = WorkerExecutor(1)
    try:
        executor.start(spec(tmp_path, "timed", "sleep 60"), report_at_once=True)
        first = wait_until(lambda: executor.poll(0.5), timeout=HELD_BACK / 3, interval=0)
        assert [type(e) for e in first] == [Started]
        executor.signal(first[0].process, signal.SIGKILL)
        collect(executor, 1)
    finally:
        executor.close()


def test_a_signal_sent_before_the_start_is_told_reaches_the_job(tmp_path, executor):
    process = executor.start(spec(tmp_path, "stopped", "sleep 30"))
    executor.signal(process, signal.SIGTERM)  # pid not known here yet: the worker delivers it
    exits = [e for e in collect(executor, 1) if isinstance(e, Exited)]
    assert exits[0].returncode == -signal.SIGTERM


def _copy(text):
    return "".join(list(text))  # equal, not the same object


@pytest.mark.parametrize("made", ["changed, dropped, added", "only added", "equal copies, one dropped"])
def test_environment_is_exactly_the_specs(tmp_path, made):
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "KEEP": "1", "DROP": "x", "CHANGE": "old"}
    executor = WorkerExecutor(1, base_env=base)
    try:
        env = {
            "changed, dropped, added": {"PATH": base["PATH"], "KEEP": "1", "CHANGE": "new", "ADDED": "a b"},
            "only added": {**base, "ADDED": "a b"},
            "equal copies, one dropped": {name: _copy(value) for name, value in base.items() if name != "DROP"},
        }[made]
        executor.start(spec(tmp_path, "env", "env", env=env))
        collect(executor, 1)
    finally:
        executor.close()
    seen = dict(line.split("=", 1) for line in (tmp_path / "env.stdout").read_text().splitlines())
    seen.pop("PWD", None), seen.pop("SHLVL", None), seen.pop("_", None)  # the shell's own
    assert seen == env


def test_a_job_that_cannot_be_spawned_fails(tmp_path, executor):
    bad = ProcessSpec("bad", (str(tmp_path / "no-such-shell"), "-c", "true"), dict(os.environ), log=str(tmp_path / "bad"))
    executor.start(bad)
    events = collect(executor, 1)
    assert isinstance(events[-1], Failed) and "no-such-shell" in events[-1].error
    assert executor.running == []
    executor.start(spec(tmp_path, "after", "true"))  # the worker is free again
    assert isinstance(collect(executor, 1)[-1], Exited)


def test_a_log_that_cannot_be_created_stops_the_job_and_the_run(tmp_path, executor):
    marker = tmp_path / "ran"
    mark = {"TEST_JOB_MARK": str(tmp_path)}  # the job's processes, whatever group they are in, carry it
    executor.start(ProcessSpec(
        "nolog", (find_shell(), "-c", f"sleep 2; touch {marker}"), dict(os.environ, **mark),
        log=str(tmp_path / "missing-dir" / "nolog"),
    ))
    with pytest.raises(LogError, match="nolog"):
        collect(executor, 1)
    # Once none of the job's processes is left, nothing can make the marker any more: a job left
    # running without a log would have made it by then (2 s), so the wait proves the kill.
    assert wait_until(lambda: not find_marked(mark), timeout=20)
    assert not marker.exists()  # the job was killed, not left running without a log


def test_a_dead_worker_is_an_error(tmp_path, executor):
    executor.start(spec(tmp_path, "victim", "sleep 30"))
    started = [e for e in _poll_until(executor, Started)]
    os.kill(executor._workers[0].pid, signal.SIGKILL)
    with pytest.raises(WorkerDied, match="victim"):
        collect(executor, 1)
    os.killpg(started[0].process.pgid, signal.SIGKILL)


def _poll_until(executor, kind, timeout=20.0):
    return wait_until(
        lambda: [e for e in executor.poll(0.5) if isinstance(e, kind)],  # the poll waits: no sleep between calls
        timeout=timeout, interval=0, what=f"a {kind.__name__} event",
    )  # fmt: skip


def test_workers_keep_only_their_own_descriptors_and_are_reaped(tmp_path):
    kept = os.open(os.devnull, os.O_RDONLY)  # e.g. the session's lock: a worker must not hold it
    sync = os.open(tmp_path / "journal", os.O_WRONLY | os.O_CREAT, 0o600)
    journal_sync = JournalSync(sync)
    executor = WorkerExecutor(2, journal_sync=journal_sync)
    pids = [w.pid for w in executor._workers]
    try:
        for number in range(2):  # a job through each worker: both are surely past their set-up
            executor.start(spec(tmp_path, f"synced{number}", "sleep 0.2"))
        collect(executor, 2)
        for pid in pids:
            fds = {int(name) for name in os.listdir(f"/proc/{pid}/fd")}
            assert kept not in fds or os.readlink(f"/proc/{pid}/fd/{kept}") != os.devnull
            assert set(journal_sync.fds) <= fds
            others = {os.readlink(f"/proc/{pid}/fd/{fd}").split(":")[0] for fd in fds - {0, 1, 2, *journal_sync.fds}}
            assert others <= {"pipe", "anon_inode"}  # its pipe ends, its selector and spare pipes
    finally:
        executor.close()
        os.close(kept)
        journal_sync.close()
        os.close(sync)
    assert all(gone(pid) for pid in pids)


def test_workers_exit_when_their_runner_dies(tmp_path):
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - a runner to kill
        try:
            os.close(read_end)
            executor = WorkerExecutor(2)
            os.write(write_end, " ".join(str(w.pid) for w in executor._workers).encode() + b"\n")
            time.sleep(60)
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        pids = [int(p) for p in pipe.readline().split()]
    os.kill(child, signal.SIGKILL)
    os.waitpid(child, 0)
    # The workers are the dead runner's children: reparented, they exit; init reaps them.
    assert wait_until(lambda: all(gone(pid) or _zombie(pid) for pid in pids), timeout=10)


def _zombie(pid):
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except OSError:
        return True


# -- a parallel batch ----------------------------------------------------------------


def _runner(tmp_path, jobs, **kwargs):
    repo = SessionRepository(str(tmp_path))
    writer = repo.create(title="workers")
    plan = planning.build_plan(jobs)
    writer.set_plan({job_id: plan.jobs[job_id].checksum for job_id in plan.order}, plan.order)
    return writer, BatchRunner(writer, plan, parallel=2, kill_grace=0.5, **kwargs)


def test_parallel_batch_timeouts_and_outcomes(tmp_path):
    jobs = [
        JobDefinition(id="slow", command="sleep 30", timeout=0.5),
        JobDefinition(id="ok", command="echo fine"),
        JobDefinition(id="bad", command="exit 4"),
        JobDefinition(id="later", command="true", depends=["ok"]),
    ]
    writer, runner = _runner(tmp_path, jobs)
    started = time.monotonic()
    try:
        assert runner.run() is False
    finally:
        writer.close()
    assert time.monotonic() - started < 15
    state = load_session(writer.path).state
    slow = state.latest("slow")
    assert slow.outcome == OUTCOME_FAIL and "timed out" in slow.comments
    assert 0.4 < slow.execution_duration < 10
    assert state.latest("ok").outcome == OUTCOME_PASS
    assert state.latest("bad").outcome == OUTCOME_FAIL and state.latest("bad").return_code == 4
    assert state.latest("later").outcome == OUTCOME_PASS
    assert [r.data for r in records(writer.path, state.latest("ok"))] == [b"fine\n"]
    assert state.running_jobs == {}


def test_parallel_batch_interrupted_kills_its_jobs(tmp_path):
    # No thread in the test process: a runner forks its workers (and Python 3.12 warns about threads then).
    jobs = [
        JobDefinition(id="long", command='echo $$ > "$PLAINBOX_SESSION_SHARE/long.pid"; sleep 60'),
        JobDefinition(id="trigger", command=f"sleep 1; kill -TERM {os.getpid()}; sleep 60"),
        JobDefinition(id="never", command="true"),
    ]
    writer, runner = _runner(tmp_path, jobs)
    try:
        assert runner.run() is True
    finally:
        writer.close()
    state = load_session(writer.path).state
    for job_id in ("long", "trigger"):
        assert state.latest(job_id).outcome == OUTCOME_CRASH
        assert state.latest(job_id).comments == INTERRUPTED
    assert state.latest("never") is None
    pgid = int(open(os.path.join(writer.share_dir, "long.pid")).read())
    assert wait_until(lambda: not _group_alive(pgid), timeout=10)


def _group_alive(pgid):
    return any(True for _ in iter_pgid_members(pgid))


def test_starts_handed_out_together_share_one_fdatasync(tmp_path):
    """Group commit: the first worker's sync makes every start written before it durable; the others skip theirs."""
    repo = SessionRepository(str(tmp_path / "repo"))
    writer = repo.create()
    journal_sync = writer.journal_sync()
    executor = WorkerExecutor(4, journal_sync=journal_sync)
    try:
        for number in range(4):
            writer.job_started(f"j{number}", 1, None, durable=False)
        writer.write_pending()  # as the runner does: four starts in one write, then four hand-outs
        before = journal_sync.syncs
        for number in range(4):
            executor.start(spec(tmp_path, f"j{number}", "true"))
        collect(executor, 4)
        assert journal_sync.syncs == before + 1
        executor.start(spec(tmp_path, "again", "true"))  # nothing written since: durable already
        collect(executor, 1)
        assert journal_sync.syncs == before + 1
        writer.job_started("later", 1, None, durable=False)
        writer.write_pending()
        executor.start(spec(tmp_path, "later", "true"))  # a new line: it needs a sync of its own
        collect(executor, 1)
        assert journal_sync.syncs == before + 2
        writer.job_finished("later", Attempt(outcome=OUTCOME_PASS))
        assert journal_sync.syncs == before + 3  # the writer's own syncs go through it too
    finally:
        executor.close()
        writer.close()


def test_a_worker_that_cannot_make_the_temporary_directory_reports_a_failure(tmp_path, monkeypatch):
    from plainbox_like.run.workdir import TempCwd

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    executor = WorkerExecutor(1)
    try:
        made = spec(tmp_path, "k", f"touch {tmp_path / 'ran'}")
        executor.start(ProcessSpec(made.key, made.argv, made.env, made.log, temp_cwd=TempCwd("missing/parent-")))
        (failed,) = collect(executor, 1)
    finally:
        executor.close()
    assert isinstance(failed, Failed) and failed.error.startswith("no temporary working directory: ")
    assert not (tmp_path / "ran").exists()


def test_a_worker_looking_for_leftovers_passes_over_the_other_workers_jobs(tmp_path, monkeypatch):
    # Their jobs may be caught in execve with no environment yet: a worker must not wait for them to settle.
    import plainbox_like.run.executors as executors

    real = executors.find_marked
    told = tmp_path / "told"

    def recording(marker, pgid=None, since_pid=None, other_spawners=()):
        told.write_text(f"{os.getpid()} {sorted(other_spawners)}")
        return real(marker, pgid, since_pid, other_spawners)

    monkeypatch.setattr(executors, "find_marked", recording)  # the workers are forked after it is set
    executor = WorkerExecutor(2)
    try:
        pids = {w.pid for w in executor._workers}
        job = spec(tmp_path, "marked", "true")
        executor.start(attrs.evolve(job, marker=(("PLAINBOX_LIKE_TEST_MARK", "x"),)))
        collect(executor, 1)
    finally:
        executor.close()
    looker, others = told.read_text().split(" ", 1)
    assert int(looker) in pids
    assert others == str(sorted(pids - {int(looker)}))


@pytest.mark.parametrize("listed", [True, False])
def test_every_setting_of_a_jobs_temporary_directory_reaches_its_worker(tmp_path, monkeypatch, listed):
    from plainbox_like.run.workdir import TempCwd

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    executor = WorkerExecutor(1)
    try:
        made = spec(tmp_path, "k", "stat -c %a . && touch left-here")
        temp_cwd = TempCwd("job-cwd-", list_leftovers=listed, mode=0o777)
        executor.start(ProcessSpec(made.key, made.argv, made.env, made.log, temp_cwd=temp_cwd))
        exited = [event for event in collect(executor, 1) if isinstance(event, Exited)][0]
    finally:
        executor.close()
    assert exited.returncode == 0
    assert (tmp_path / "k.stdout").read_bytes() == b"777\n"  # the mode it was given
    assert ("left-here" in exited.leftover_files) is listed


def test_a_temporary_directory_crosses_to_a_worker_with_every_field():
    from plainbox_like.run.workdir import TempCwd
    from plainbox_like.run.workers import _temp_cwd_fields

    fields = _temp_cwd_fields(TempCwd("p-", list_leftovers=False, mode=0o750))
    assert len(fields) == len(attrs.fields(TempCwd)), "a new field of TempCwd must be sent to the workers too"
    assert TempCwd(*fields) == TempCwd("p-", list_leftovers=False, mode=0o750)
    assert _temp_cwd_fields(None) is None
