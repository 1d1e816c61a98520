"""The Dask executor (``--dask``), with real Dask processes on 127.0.0.1: a ``local:W`` cluster the run
starts, or ``dask scheduler`` and ``dask worker`` processes the test starts (and ends)."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import types

import pytest

from cli_helpers import assert_one_line_error, cli, cli_argv, cli_env, run
from factories import only_session, wait_until

from plainbox_like.run import dask_tasks
from plainbox_like.run.dask_executor import SCHEDULER_LOST, WORKER_LOST, DaskExecutor, _Task
from plainbox_like.run.executors import Exited, Process, ProcessSpec, find_marked
from plainbox_like.run.settle import STOPPED_WHILE_RUNNING
from plainbox_like.store import codec
from plainbox_like.store.model import Attempt, Placement, SessionState
from plainbox_like.store.runconfig import RunConfig
from plainbox_like.store.reader import load_session


#: An environment variable every job of these tests inherits (a value unique to the test): a test finds,
#: and at its end kills, only the processes it started.
MARKER = "PLAINBOX_LIKE_TEST_MARKER"


def wait_for(check, what, timeout=30.0):
    """Poll *check* until it returns something true (returned), or fail after *timeout* seconds."""
    return wait_until(check, timeout=timeout, interval=0.05, what=what)


def marked(marker):
    """Pids of the live processes that carry *marker*: the test's job processes."""
    return [leftover.pid for leftover in find_marked({MARKER: marker})]


def marked_env(marker):
    return cli_env(**{MARKER: marker})


def peak_rss_mib(args, env, stdout, stderr):
    """Run *args*: (exit code, its peak RSS in MiB), read from its ``VmHWM`` while it runs.

    Not ``wait4``'s ``ru_maxrss``: a child forked from this process counts this process's own peak
    (recorded when it execs), and the test process grows large in a full suite.
    """
    proc = subprocess.Popen(args, env=env, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL)
    peak = 0.0
    while proc.poll() is None:
        with contextlib.suppress(OSError, AssertionError):
            peak = max(peak, worker_peak_mib(proc.pid))
        time.sleep(0.02)
    return proc.returncode, peak


class Cluster:
    """``dask scheduler`` and *workers* ``dask worker`` processes (no nanny: a worker is one process)."""

    def __init__(self, tmp_path, workers=2, threads=2):
        self.dir = tmp_path / "cluster"
        self.dir.mkdir()
        self.env = cli_env()
        self.env["TMPDIR"] = str(self.dir)
        file = str(self.dir / "scheduler.json")
        self.scheduler = self._start(
            "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
            "--scheduler-file", file,
        )
        self.address = wait_for(lambda: self._address(file), "the scheduler")
        self.workers = [
            self._start(
                "distributed.cli.dask_worker", self.address, "--nthreads", str(threads), "--no-nanny",
                "--no-dashboard", "--host", "127.0.0.1", "--local-directory", str(self.dir),
            )
            for _ in range(workers)
        ]
        from distributed import Client

        with Client(self.address, timeout=30) as client:
            client.wait_for_workers(workers, timeout=60)

    def _start(self, module, *args):
        return subprocess.Popen(
            [sys.executable, "-m", module, *args], env=self.env, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )

    @staticmethod
    def _address(file):
        try:
            with open(file) as handle:
                return json.load(handle)["address"]
        except (OSError, ValueError, KeyError):
            return None

    def close(self):
        for process in [*self.workers, self.scheduler]:
            if process.poll() is None:
                process.kill()
            process.wait()


@pytest.fixture
def cluster(tmp_path):
    started = Cluster(tmp_path)
    yield started
    started.close()


def results(path):
    return load_session(path).state.results


def kill_marked_left(marker):
    for pid in marked(marker):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


# -- a run on a cluster it starts


def test_a_run_on_a_local_cluster_records_its_output_and_where_each_job_ran(root, tmp_path, capsys):
    share_check = 'echo "$PLAINBOX_SESSION_SHARE" > "$PLAINBOX_SESSION_SHARE/seen"; touch left-here'
    code = run(
        root, "run", "--dask", "local:2", "-j", "2",
        "-c", "echo out; echo err >&2", "-c", "exit 3", "-c", share_check,
    )
    assert code == 1  # c2 failed
    path = only_session(root)
    state = load_session(path).state
    assert {job: attempts[-1].outcome for job, attempts in state.results.items()} == {
        "c1": "pass", "c2": "fail", "c3": "pass",
    }
    assert state.results["c2"][-1].return_code == 3
    logs = os.path.join(path, "io-logs")
    assert open(os.path.join(logs, "c1.stdout")).read() == "out\n"
    assert open(os.path.join(logs, "c1.stderr")).read() == "err\n"
    share = os.path.join(path, "session-share")
    assert open(os.path.join(share, "seen")).read() == share + "\n"  # the workers share this filesystem
    assert state.results["c3"][-1].leftover_files == ("left-here",)  # its working directory on the worker
    for attempts in state.results.values():
        placement = attempts[-1].ran_on
        assert placement.address.startswith("tcp://127.0.0.1:")
        assert placement.host == socket.gethostname()
        assert (placement.share, placement.share_shared) == (share, True)
    assert RunConfig.from_blob(state.metadata.app_blob).dask == "local:2"
    capsys.readouterr()
    assert run(root, "show", path) == 0
    shown = capsys.readouterr().out
    assert "WORKER" in shown and state.results["c1"][-1].ran_on.address in shown
    assert "the session's (shared filesystem)" in shown
    assert run(root, "show", "--json", path) == 0
    shown = json.loads(capsys.readouterr().out)
    ran_on = shown["jobs"][0]["attempts"][0]["ran_on"]
    assert ran_on["host"] == socket.gethostname() and ran_on["share_shared"] is True


def test_bad_dask_values_are_one_line_errors(root, capsys):
    assert run(root, "run", "--dask", "local:0", "-c", "true") == 2
    assert_one_line_error(capsys.readouterr().err, "--dask local:0", "local:W")
    assert run(root, "run", "--retries", "2", "-c", "true") == 2
    assert_one_line_error(capsys.readouterr().err, "--retries", "--dask")
    assert not os.path.exists(os.path.join(root, "sessions")) or not os.listdir(os.path.join(root, "sessions"))


def test_without_dask_installed_dask_is_a_one_line_error_saying_how_to_install_it(tmp_path):
    fake = tmp_path / "nodask" / "distributed"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named distributed')\n")
    env = cli_env()
    env["PYTHONPATH"] = str(tmp_path / "nodask") + os.pathsep + env["PYTHONPATH"]
    repo = tmp_path / "repo"
    done = subprocess.run(
        cli_argv(repo, "run", "--dask", "local:1", "-c", "true"), env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert_one_line_error(done.stderr, "pip install 'plainbox-like[dask]'")
    assert not (repo / "sessions").exists() or not list((repo / "sessions").iterdir())
    # Without --dask, it runs as ever.
    done = subprocess.run(cli_argv(repo, "run", "-c", "true"), env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


# -- a cluster the test starts


def test_output_streams_back_while_the_job_runs_with_the_workers_delays(tmp_path, cluster):
    repo = tmp_path / "repo"
    job = 'echo first; while [ ! -e "$PLAINBOX_SESSION_SHARE/go" ]; do sleep 0.05; done; sleep 0.5; echo second'
    proc = subprocess.Popen(
        cli_argv(repo, "run", "--dask", cluster.address, "-c", job), env=cli_env(), stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        path = wait_for(lambda: os.path.isdir(repo / "sessions") and os.listdir(repo / "sessions"), "the session")
        path = os.path.join(repo, "sessions", path[0])
        stdout = os.path.join(path, "io-logs", "c1.stdout")
        wait_for(lambda: os.path.exists(stdout) and open(stdout).read() == "first\n", "the first line on the coordinator")
        assert proc.poll() is None  # the job still runs: its output came back while it ran
        open(os.path.join(path, "session-share", "go"), "w").close()
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert open(stdout).read() == "first\nsecond\n"
    with gzip.open(os.path.join(path, "io-logs", "c1.record.gz"), "rt") as records:
        delays = [json.loads(line)[0] for line in records]
    assert len(delays) == 2 and delays[1] >= 0.5  # measured on the worker: the sleep between the lines
    assert run(str(repo), "replay", "--speed", "1000", path, "c1") == 0


def test_a_large_output_arrives_whole_and_the_coordinator_and_workers_stay_small(tmp_path, cluster):
    repo = tmp_path / "repo"
    size = int(os.environ.get("DASK_TEST_SIZE", 150_000_000))
    job = f"head -c {size} /dev/urandom | tee $PLAINBOX_SESSION_SHARE/data"
    with open(tmp_path / "out", "wb") as out, open(tmp_path / "err", "wb") as err:
        code, peak = peak_rss_mib(cli_argv(repo, "run", "--dask", cluster.address, "-c", job), cli_env(), out, err)
    assert code == 0, (tmp_path / "err").read_text()
    path = only_session(str(repo))
    logs = os.path.join(path, "io-logs")
    assert os.path.getsize(os.path.join(logs, "c1.stdout")) == size
    with open(os.path.join(logs, "c1.stdout"), "rb") as got, open(os.path.join(path, "session-share", "data"), "rb") as sent:
        while True:
            a, b = got.read(1 << 20), sent.read(1 << 20)
            assert a == b
            if not a:
                break
    # Neither the coordinator nor the workers held the output (it went through a spool file and the queue
    # in batches): each peaked far below its size.
    print(f"coordinator peak {peak:.0f} MiB, workers {[worker_peak_mib(w.pid) for w in cluster.workers]} MiB")
    assert peak < 110
    for worker in cluster.workers:
        assert worker_peak_mib(worker.pid) < 140


def worker_peak_mib(pid):
    """The peak RSS (``VmHWM``) of live process *pid* so far, in MiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    raise AssertionError(f"no VmHWM for {pid}")


def test_a_timeout_stops_the_job_on_its_worker(tmp_path, cluster):
    repo = tmp_path / "repo"
    units = tmp_path / "slow.pxu"
    units.write_text("id: slow\nplugin: shell\ntimeout: 1\ncommand: sleep 60\n")
    started = time.monotonic()
    done = cli(repo, "run", "--dask", cluster.address, str(units), timeout=120)
    assert done.returncode == 1, done.stderr
    attempt = results(only_session(str(repo)))["slow"][-1]
    assert (attempt.outcome, attempt.comments) == ("fail", "timed out after 1 s")
    assert attempt.return_code == -signal.SIGTERM
    assert time.monotonic() - started < 60


def test_a_lost_worker_crashes_its_job_the_run_goes_on_and_retries_make_new_attempts(tmp_path, cluster):
    repo = tmp_path / "repo"
    marker = f"lost-{os.getpid()}-{time.monotonic_ns()}"
    flag = tmp_path / "flags"
    flag.mkdir()
    job = (
        f'if [ -e {flag}/tried ]; then echo again; exit 0; fi; touch {flag}/tried; '
        f'echo $PPID > {flag}/worker.tmp; mv {flag}/worker.tmp {flag}/worker; sleep 60'
    )
    proc = subprocess.Popen(
        cli_argv(repo, "run", "--dask", cluster.address, "--retries", "1", "-j", "2", "-c", job, "-c", "sleep 1"),
        env=marked_env(marker), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        worker = int(wait_for(lambda: (flag / "worker").exists() and (flag / "worker").read_text().strip(), "the job"))
        assert worker in [w.pid for w in cluster.workers]  # the job runs as a child of its worker
        os.kill(worker, signal.SIGKILL)
        _out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
        kill_marked_left(marker)
    assert proc.returncode == 0, err  # the retry passed
    got = results(only_session(str(repo)))
    first, second = got["c1"]
    assert (first.outcome, second.outcome) == ("crash", "pass")
    assert first.comments.startswith(f"{WORKER_LOST}: tcp://127.0.0.1:")
    assert (first.attempt, second.attempt) == (1, 2)
    assert second.ran_on.address != first.ran_on.address  # the other worker ran it
    assert got["c2"][-1].outcome == "pass"
    # The lost worker's job process (an orphan on this machine) was killed from the other worker.
    wait_for(lambda: not marked(marker), "the lost job's process to go")


def test_a_lost_scheduler_stops_the_run_cleanly_and_it_can_be_resumed(tmp_path, cluster):
    repo = tmp_path / "repo"
    marker = f"sched-{os.getpid()}-{time.monotonic_ns()}"
    job = 'touch "$PLAINBOX_SESSION_SHARE/started"; sleep 60'
    proc = subprocess.Popen(
        cli_argv(repo, "run", "--dask", cluster.address, "-c", job, "-c", "true"),
        env=marked_env(marker), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        path = wait_for(lambda: os.path.isdir(repo / "sessions") and os.listdir(repo / "sessions"), "the session")
        path = os.path.join(repo, "sessions", path[0])
        wait_for(lambda: os.path.exists(os.path.join(path, "session-share", "started")), "the job to start")
        cluster.scheduler.kill()
        _out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
        kill_marked_left(marker)
    assert proc.returncode == 1
    assert_one_line_error(err.strip().splitlines()[-1], SCHEDULER_LOST, "resume")
    state = load_session(path).state
    attempt = state.results["c1"][-1]
    assert (attempt.outcome, attempt.comments) == ("crash", SCHEDULER_LOST)
    assert "c2" not in state.results and "incomplete" in state.metadata.flags
    assert not state.running_jobs
    # Resumable, here on this machine.
    assert run(str(repo), "resume", "--dask", "none", path) == 1  # c1 crashed
    assert results(path)["c2"][-1].outcome == "pass"


def test_a_killed_coordinator_leaves_nothing_running_and_resume_settles_its_jobs(tmp_path, cluster):
    repo = tmp_path / "repo"
    marker = f"coord-{os.getpid()}-{time.monotonic_ns()}"
    job = 'echo $$ > "$PLAINBOX_SESSION_SHARE/pid.tmp"; mv "$PLAINBOX_SESSION_SHARE/pid.tmp" "$PLAINBOX_SESSION_SHARE/pid"; exec sleep 60'
    proc = subprocess.Popen(
        cli_argv(repo, "run", "--dask", cluster.address, "-c", job, "-c", "echo after"),
        env=marked_env(marker), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        path = wait_for(lambda: os.path.isdir(repo / "sessions") and os.listdir(repo / "sessions"), "the session")
        path = os.path.join(repo, "sessions", path[0])
        pidfile = os.path.join(path, "session-share", "pid")
        pid = int(wait_for(lambda: os.path.exists(pidfile) and open(pidfile).read().strip(), "the job to start"))
        proc.kill()
        proc.wait()
        # The scheduler drops the dead client's task; the worker plugin kills its job.
        wait_for(lambda: not marked(marker), f"job process {pid} to be killed on its worker")
    finally:
        if proc.poll() is None:
            proc.kill()
        kill_marked_left(marker)
    assert run(str(repo), "resume", path) == 1  # with the cluster the session was run with
    got = results(path)
    assert (got["c1"][-1].outcome, got["c1"][-1].comments) == ("crash", STOPPED_WHILE_RUNNING)
    assert got["c2"][-1].outcome == "pass" and got["c2"][-1].ran_on is not None


# -- the worker's side and the state


def test_a_worker_that_does_not_see_the_session_share_gives_jobs_a_directory_of_its_own(tmp_path):
    share = tmp_path / "session-share"
    share.mkdir()
    (share / "marker").write_text("token")
    local = tmp_path / "worker"
    assert dask_tasks.share_dir(str(share), "marker", "token", "S1", str(local)) == (str(share), True)
    # Another filesystem: the marker is not there (or holds another run's token).
    got = dask_tasks.share_dir(str(share), "marker", "other-token", "S1", str(local))
    assert got == (str(local / dask_tasks.PER_WORKER_SHARE / "S1"), False)
    assert os.path.isdir(got[0])


def test_attempts_keep_where_they_ran_and_older_states_still_load():
    placement = Placement("tcp://10.0.0.7:4000", "node7", "/scratch/share", False)
    state = SessionState(results={"a": [Attempt("pass", 0, 1.0, ran_on=placement)], "b": [Attempt("pass")]})
    data, _ = codec.encode_state(state)
    doc = json.loads(gzip.decompress(data))
    assert doc["version"] == codec.VERSION == 5
    assert doc["session"]["results"]["a"][0]["ran_on"] == {
        "address": "tcp://10.0.0.7:4000", "host": "node7", "share": "/scratch/share", "share_shared": False,
    }
    assert "ran_on" not in doc["session"]["results"]["b"][0]  # left out: ran on the runner's machine
    assert codec.decode_state(data, "s").state.results["a"][0].ran_on == placement
    v3 = {"format": codec.FORMAT, "version": 3, "session": {"results": {"a": [{"outcome": "pass", "ran_on": 5}]}}}
    loaded = codec.decode_state(gzip.compress(json.dumps(v3).encode()), "s")
    assert loaded.source_version == 3 and loaded.state.results["a"][0].ran_on is None
    v4 = {**v3, "version": 4}
    assert codec.decode_state(gzip.compress(json.dumps(v4).encode()), "s").state.results["a"][0].ran_on is None
    bad = {"format": codec.FORMAT, "version": 5, "session": {"results": {"a": [{"outcome": "pass", "ran_on": 5}]}}}
    with pytest.raises(codec.CorruptSession):
        codec.decode_state(gzip.compress(json.dumps(bad).encode()), "s")


def test_stop_now_and_leftover_processes_reach_the_jobs_on_their_workers(tmp_path, cluster):
    repo = tmp_path / "repo"
    marker = f"stop-{os.getpid()}-{time.monotonic_ns()}"
    leaves = 'sleep 60 & echo $! > "$PLAINBOX_SESSION_SHARE/left"'
    long = 'touch "$PLAINBOX_SESSION_SHARE/started"; sleep 60'
    proc = subprocess.Popen(
        cli_argv(repo, "run", "--dask", cluster.address, "-c", leaves, "-c", long),
        env=marked_env(marker), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        path = wait_for(lambda: os.path.isdir(repo / "sessions") and os.listdir(repo / "sessions"), "the session")
        path = os.path.join(repo, "sessions", path[0])
        wait_for(lambda: os.path.exists(os.path.join(path, "session-share", "started")), "the second job")
        # The first job's background sleep is found on its worker and ended there.
        left = int(open(os.path.join(path, "session-share", "left")).read())
        wait_for(lambda: left not in marked(marker), "the leftover process to be killed")
        assert run(str(repo), "stop", "--now", path) == 0
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        kill_marked_left(marker)
    assert proc.returncode == 130, err
    got = results(path)
    assert got["c1"][-1].outcome == "pass"
    assert got["c1"][-1].leftover_processes.count == 1 and got["c1"][-1].leftover_processes.kept is False
    assert (got["c2"][-1].outcome, got["c2"][-1].comments) == ("crash", "stopped by request")


def test_jobs_beyond_what_the_cluster_runs_wait_on_the_coordinator_and_stop_there_too(tmp_path):
    """local:1x1 runs one job at a time and takes two tasks: of -j 4, two wait on the coordinator."""
    repo = tmp_path / "repo"
    marker = f"held-{os.getpid()}-{time.monotonic_ns()}"
    job = 'touch "$PLAINBOX_SESSION_SHARE/started-$PLAINBOX_LIKE_JOB"; sleep 60'
    proc = subprocess.Popen(
        cli_argv(repo, "run", "--dask", "local:1x1", "-j", "4", *[arg for _ in range(4) for arg in ("-c", job)]),
        env=marked_env(marker), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        path = wait_for(lambda: os.path.isdir(repo / "sessions") and os.listdir(repo / "sessions"), "the session")
        path = os.path.join(repo, "sessions", path[0])
        share = os.path.join(path, "session-share")
        wait_for(lambda: any(name.startswith("started-") for name in os.listdir(share)), "a job to start")
        assert len(load_session(path).state.running_jobs) == 4  # all four journaled as started
        assert run(str(repo), "stop", "--now", path) == 0
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        kill_marked_left(marker)
    assert proc.returncode == 130, err
    got = results(path)
    assert [got[f"c{n}"][-1].comments for n in range(1, 5)] == ["stopped by request"] * 4
    assert len([name for name in os.listdir(share) if name.startswith("started-")]) == 1  # the others never ran


def test_a_task_that_fails_after_its_job_was_signalled_ends_by_that_signal():
    """A stop (or timeout) signals a running job on its worker; its task failing meanwhile (the run winds down
    around it: under load, once, an AssertionError from Dask) is the job ending by that signal, not a crash."""
    executor = DaskExecutor.__new__(DaskExecutor)  # no cluster: only the bookkeeping of one task
    sent = []
    executor.client = types.SimpleNamespace(run=lambda *args, **kwargs: sent.append(args), status="running")
    executor._tasks_module = types.SimpleNamespace(signal_job="signal_job")
    executor._clock, executor._lock, executor._lost, executor._in_dask = time.monotonic, threading.Lock(), None, 1
    process = Process(spec=ProcessSpec("c1", ("sh", "-c", "sleep 60"), {}), pid=4242, pgid=4242, started=1.0)
    task = _Task(process=process, key="task-c1", request={}, address="tcp://127.0.0.1:1", announced=True, in_dask=True)
    executor._tasks, executor._by_job = {task.key: task}, {"c1": task}
    executor.signal(process, signal.SIGTERM)
    wait_until(lambda: sent, timeout=10)  # sent to the worker (from a thread)
    events = []
    executor._done(task.key, None, AssertionError(), events)
    assert [(type(event), event.process, event.returncode) for event in events] == [(Exited, process, -signal.SIGTERM)]
    assert executor._tasks == {} and executor._by_job == {}
