#!/usr/bin/env python3
"""Kill a Dask worker and (several times) the coordinator of a ``--dask`` run, resume, check everything.

Starts ``dask scheduler`` and 2 ``dask worker`` processes (no nanny, 2 threads each) on 127.0.0.1, then
``plainbox-like run --dask ADDRESS -j 4`` over N jobs (default 200; each sleeps a little, appends its id
to a side-effect file and prints it). At a random moment one worker is killed (SIGKILL); at random
moments the coordinator is killed (SIGKILL, K times, default 5), each time followed by
``plainbox-like resume`` (which uses the session's cluster); a last resume runs without a kill.
Checked at the end:

* every job has exactly one result: ``pass``; or ``crash`` with "worker lost: ADDRESS" (the killed
  worker's address) for a job that ran on the killed worker, or with the "stopped while this job ran"
  comment for a job in flight when the coordinator was killed;
* a passed job's side effect is there exactly once and its io-log holds its output; a crashed job's
  side effect at most once (never run again);
* no process of the session is left on any worker (this machine), and none of a killed coordinator's
  jobs ran on after the kill (the worker plugin killed them).

Prints a summary; exits 1 on any violation (listed), 0 otherwise.

    python scripts/torture_dask.py                       # 200 jobs, 5 coordinator kills
    python scripts/torture_dask.py --size 60 --kills 2 --seed 3
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from plainbox_like.run.dask_executor import WORKER_LOST  # noqa: E402
from plainbox_like.run.executors import find_marked  # noqa: E402
from plainbox_like.run.settle import SESSION_ENV, STOPPED_WHILE_RUNNING  # noqa: E402
from plainbox_like.store.reader import load_session  # noqa: E402

ROUND_TIMEOUT = 180.0


def env_for(work: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env["TMPDIR"] = work
    env.pop("PLAINBOX_LIKE_SESSION", None)
    env.pop("PLAINBOX_LIKE_JOB", None)
    return env


def start_cluster(work: str) -> tuple[subprocess.Popen, list[subprocess.Popen], str]:
    env = env_for(work)
    file = os.path.join(work, "scheduler.json")
    quiet = {"stdin": subprocess.DEVNULL, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL,
             "start_new_session": True, "env": env}
    scheduler = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                                  "--port", "0", "--no-dashboard", "--scheduler-file", file], **quiet)
    deadline = time.monotonic() + 60
    address = None
    while address is None:
        try:
            with open(file) as handle:
                address = json.load(handle)["address"]
        except (OSError, ValueError, KeyError):
            if time.monotonic() > deadline:
                scheduler.kill()
                raise SystemExit("the scheduler did not start")
            time.sleep(0.1)
    workers = [
        subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "2",
                          "--no-nanny", "--no-dashboard", "--host", "127.0.0.1", "--local-directory", work], **quiet)
        for _ in range(2)
    ]
    from distributed import Client

    try:
        with Client(address, timeout=30) as client:
            client.wait_for_workers(2, timeout=60)
            addresses = {pid: address for address, pid in client.run(os.getpid).items()}
    except BaseException:
        for process in [*workers, scheduler]:
            process.kill()
            process.wait()
        raise
    return scheduler, workers, addresses


def write_jobs(path: str, side: str, size: int, rng: random.Random) -> list[str]:
    ids = []
    with open(path, "w") as handle:
        for number in range(size):
            job = f"j{number:03d}"
            nap = rng.choice((0.05, 0.1, 0.2, 0.3, 0.5))
            handle.write(
                f"id: {job}\nplugin: shell\n"
                f"command: sleep {nap}; echo {job} >> {side}; echo out-{job}; sleep {nap}\n\n"
            )
            ids.append(job)
    return ids


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=200, help="jobs in the batch (default 200)")
    parser.add_argument("--kills", type=int, default=5, help="coordinator kills (default 5)")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    work = tempfile.mkdtemp(prefix="torture-dask-")
    scheduler, workers, pids_to_addresses = start_cluster(work)
    problems: list[str] = []
    try:
        side = os.path.join(work, "side-effects")
        units = os.path.join(work, "jobs.pxu")
        ids = write_jobs(units, side, args.size, rng)
        repo = os.path.join(work, "repo")
        env = env_for(work)
        base = [sys.executable, "-m", "plainbox_like", "--repository", repo]
        address = json.load(open(os.path.join(work, "scheduler.json")))["address"]
        # Kill rounds: the coordinator dies after a random number of results; the worker dies in one of them.
        worker_round = rng.randrange(args.kills + 1)
        killed_worker: str | None = None
        session = None
        rounds = []
        for round_number in range(args.kills + 1):
            argv = base + (["run", "--dask", address, "-j", "4", units] if session is None else ["resume", session])
            proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, text=True, start_new_session=True)
            if session is None:
                deadline = time.monotonic() + ROUND_TIMEOUT
                while not (os.path.isdir(os.path.join(repo, "sessions")) and os.listdir(os.path.join(repo, "sessions"))):
                    if time.monotonic() > deadline:
                        raise SystemExit("no session appeared")
                    time.sleep(0.05)
                session = os.path.join(repo, "sessions", os.listdir(os.path.join(repo, "sessions"))[0])
            last = round_number == args.kills
            kill_after = None if last else rng.uniform(1.0, 6.0)
            # The worker dies once the coordinator runs jobs (it takes a second or two to start), and the
            # coordinator sees it go before its own kill.
            worker_at = rng.uniform(3.0, 6.0) if round_number == worker_round else None
            if worker_at is not None and kill_after is not None:
                kill_after = max(kill_after, worker_at + 3.0)
            started = time.monotonic()
            while proc.poll() is None:
                elapsed = time.monotonic() - started
                if worker_at is not None and elapsed >= worker_at:
                    victim = workers[rng.randrange(len(workers))]
                    victim.kill()
                    victim.wait()
                    killed_worker = pids_to_addresses.get(victim.pid)
                    worker_at = None
                if kill_after is not None and elapsed >= kill_after:
                    proc.kill()
                    break
                if elapsed > ROUND_TIMEOUT:
                    proc.kill()
                    problems.append(f"round {round_number} did not end in {ROUND_TIMEOUT:.0f} s")
                    break
                time.sleep(0.02)
            proc.wait()
            err = proc.stderr.read()
            proc.stderr.close()
            state = load_session(session).state
            rounds.append((round_number, ("worker killed, " if round_number == worker_round else "") + ("killed" if kill_after is not None and proc.returncode == -9 else
                           f"exit {proc.returncode}"), sum(1 for j in ids if j in state.results)))
            if not last and proc.returncode != -9:
                if len(state.results) == len(ids):
                    break  # it finished before its kill
            if os.environ.get("TORTURE_DEBUG"):
                print(f"round {round_number} exit {proc.returncode} stderr: {err.strip()[-400:]}", file=sys.stderr)
            if last and proc.returncode not in (0, 1):
                problems.append(f"the last resume exited {proc.returncode}: {err.strip()[-300:]}")
        # What a killed coordinator left on the workers is gone (the worker plugin, then resume).
        session_id = os.path.basename(session).split(".")[0]
        deadline = time.monotonic() + 15
        while find_marked({SESSION_ENV: session_id}) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = find_marked({SESSION_ENV: session_id})
        if left:
            problems.append(f"{len(left)} job process(es) left running: {[p.command for p in left][:5]}")
        state = load_session(session).state
        seen = collections.Counter(open(side).read().split()) if os.path.exists(side) else collections.Counter()
        outcomes = collections.Counter()
        reasons = collections.Counter()
        for job in ids:
            attempts = state.results.get(job, [])
            if len(attempts) != 1:
                problems.append(f"{job}: {len(attempts)} results")
                continue
            attempt = attempts[0]
            outcomes[attempt.outcome] += 1
            if attempt.outcome == "pass":
                if seen[job] != 1:
                    problems.append(f"{job} passed but its side effect is there {seen[job]} times")
                out = os.path.join(session, attempt.io_log_filename[: -len(".record.gz")] + ".stdout")
                if open(out).read() != f"out-{job}\n":
                    problems.append(f"{job} passed but its io-log holds {open(out).read()!r:.60}")
            elif attempt.outcome == "crash":
                if attempt.comments == STOPPED_WHILE_RUNNING:
                    reasons["coordinator killed"] += 1
                elif attempt.comments and attempt.comments.startswith(WORKER_LOST + ": "):
                    reasons["worker lost"] += 1
                    if killed_worker and attempt.comments != f"{WORKER_LOST}: {killed_worker}":
                        problems.append(f"{job}: {attempt.comments!r}, but the worker killed was {killed_worker}")
                else:
                    problems.append(f"{job}: crash with an unexpected reason {attempt.comments!r}")
                if seen[job] > 1:
                    problems.append(f"{job} crashed and its side effect is there {seen[job]} times")
            else:
                problems.append(f"{job}: outcome {attempt.outcome}")
        print(f"seed {seed}: {args.size} jobs, 2 workers (one killed: {killed_worker or 'not reached'}), "
              f"{sum(1 for r in rounds if r[1].endswith('killed'))} coordinator kills")
        for number, how, done in rounds:
            print(f"  round {number}: {how}, {done} jobs with a result")
        print(f"  outcomes: {dict(outcomes)}; crash reasons: {dict(reasons)}")
        print(f"  job processes left on the workers: {len(left)}")
    finally:
        for process in [*workers, scheduler]:
            if process.poll() is None:
                process.kill()
            process.wait()
        shutil.rmtree(work, ignore_errors=True)
    for problem in problems:
        print(f"PROBLEM: {problem}")
    print("OK" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
