#!/usr/bin/env python3
"""Where the coordinator's CPU goes at each -j, and what a wake-up costs it beside what a job costs.

For each -j given (2 or more: worker processes run the jobs), runs N `true` jobs (fsync, in a temporary
repository) in a fresh process, R times, the -j taking turns, and prints per job, medians over the runs:

  CPU        the coordinator's own over BatchRunner.run (getrusage RUSAGE_SELF, as section 4 of
             bench_runner.py, which takes the whole process: its workers and their jobs are its
             children, not counted)
  wake-ups   its voluntary context switches (its loop waiting for the workers' news)
  preempted  its involuntary ones (a worker or a job took its core)

then the CPU of each part of a turn of the run loop, and of steps within those parts (this thread's
CPU in each call while the loop runs, not the session's first and last snapshots; the parts follow
plainbox_like/run/batch.py and must change with it; timing a call costs about a microsecond, which
the figures hold). Last, a least-squares line through the -j:
CPU per job = a x wake-ups per job + b. The more jobs a wake-up finds, the fewer wake-ups a job
costs: a is what a turn of the loop costs, b what a job costs beside it.

Usage: python scripts/profile_coordinator.py [--jobs 2000] [--repeats 3] [-j 2 -j 4 -j 8 -j 16 -j 32]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(1, os.path.dirname(HERE))

#: The parts of a turn of the run loop (BatchRunner.run), each timed where the loop calls it.
LOOP_PARTS = (
    ("batch", "BatchRunner", "_obey_control"),
    ("batch", "BatchRunner", "_hand_out"),
    ("batch", "BatchRunner", "_commit"),
    ("batch", "BatchRunner", "_poll_timeout"),
    ("workers", "WorkerExecutor", "poll"),
    ("batch", "BatchRunner", "_handle"),
    ("batch", "BatchRunner", "_enforce_deadlines"),
    ("writer", "SessionWriter", "tick"),
)
#: Steps within those parts, timed wherever they are called.
STEPS = (
    ("batch", "BatchRunner", "_prepare"),
    ("batch", "BatchRunner", "_spawn"),
    ("workers", "WorkerExecutor", "start"),
    ("batch", "BatchRunner", "_finish"),
    ("batch", "BatchRunner", "_record"),
    ("writer", "SessionWriter", "snapshot"),
)
DEFAULT_PARALLEL = (2, 4, 8, 16, 32)


def _name(part: tuple[str, str, str]) -> str:
    return f"{part[1]}.{part[2]}"


#: How many timed calls are under way (in this process): a loop part counts only where the loop calls it.
_depth = [0]
#: Whether BatchRunner.run runs: calls before and after it (setting up and closing the session) are not timed.
_timing = [False]


def _timed_method(method, name: str, loop_part: bool, spent: dict[str, list[int]]):
    """*method*, adding this thread's CPU in each call to ``spent[name]`` ([nanoseconds, calls]); a loop part's
    calls nested in another timed call are left out (the parts then add up to no more than the run). Only
    while :data:`_timing`."""
    figures = spent.setdefault(name, [0, 0])
    clock = time.thread_time_ns

    def wrapper(*args, **kwargs):
        if not _timing[0]:
            return method(*args, **kwargs)
        outermost = _depth[0] == 0
        _depth[0] += 1
        began = clock()
        try:
            return method(*args, **kwargs)
        finally:
            _depth[0] -= 1
            if outermost or not loop_part:
                figures[0] += clock() - began
                figures[1] += 1

    return wrapper


def _instrument(spent: dict[str, list[int]]) -> None:
    """Time each of :data:`LOOP_PARTS` and :data:`STEPS` into *spent*."""
    from plainbox_like.run import batch, workers
    from plainbox_like.store import writer

    modules = {"batch": batch, "workers": workers, "writer": writer}
    for parts, loop_part in ((LOOP_PARTS, True), (STEPS, False)):
        for part in parts:
            owner = getattr(modules[part[0]], part[1])
            setattr(owner, part[2], _timed_method(getattr(owner, part[2]), _name(part), loop_part, spent))


def child(out: str, jobs: str, parallel: int) -> int:
    """One measured run (in a process of its own): its figures as JSON in *out*."""
    from plainbox_like.cli.main import main
    from plainbox_like.run import batch

    spent: dict[str, list[int]] = {}
    _instrument(spent)
    run = batch.BatchRunner.run
    usage: dict[str, object] = {}

    def measured_run(self, *args, **kwargs):
        before, thread_before = resource.getrusage(resource.RUSAGE_SELF), time.thread_time_ns()
        _timing[0] = True
        try:
            return run(self, *args, **kwargs)
        finally:
            _timing[0] = False
            after = resource.getrusage(resource.RUSAGE_SELF)
            usage.update(
                cpu_s=(after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
                thread_ns=time.thread_time_ns() - thread_before,
                wakeups=after.ru_nvcsw - before.ru_nvcsw,
                preempted=after.ru_nivcsw - before.ru_nivcsw,
            )

    batch.BatchRunner.run = measured_run
    with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
        code = main(["run", jobs, "-j", str(parallel)])
    with open(out, "w") as f:
        json.dump({"code": code, **usage, "spent": spent}, f)
    return code


def measure(tmp: str, env: dict[str, str], jobs: str, parallel: int) -> dict:
    """The figures of one run at -j *parallel* (see :func:`child`)."""
    out = os.path.join(tmp, "figures.json")
    done = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", out, jobs, str(parallel)],
                          env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the run at -j {parallel} exited {done.returncode}: {done.stderr.strip()[-500:]}")
    with open(out) as f:
        return json.load(f)


def per_job(runs: list[dict], count: int) -> dict[str, float]:
    """Medians over *runs*, per job: CPU (ms), wake-ups, preemptions, and each part's and step's CPU (µs)."""
    medians = {
        "cpu_ms": statistics.median(run["cpu_s"] for run in runs) * 1e3 / count,
        "wakeups": statistics.median(run["wakeups"] for run in runs) / count,
        "preempted": statistics.median(run["preempted"] for run in runs) / count,
    }
    for part in (*LOOP_PARTS, *STEPS):
        name = _name(part)
        medians[name] = statistics.median(run["spent"].get(name, [0, 0])[0] for run in runs) / 1e3 / count
    rest = [run["thread_ns"] - sum(run["spent"].get(_name(part), [0, 0])[0] for part in LOOP_PARTS) for run in runs]
    medians["rest"] = statistics.median(rest) / 1e3 / count
    return medians


def report(figures: dict[int, dict[str, float]], count: int, repeats: int) -> None:
    parallels = sorted(figures)
    print(f"{count} `true` jobs, fsync, median of {repeats} run(s) at each -j; per job:")
    print("   -j   coordinator CPU ms   wake-ups   preempted")
    for parallel in parallels:
        row = figures[parallel]
        print(f"   {parallel:<4} {row['cpu_ms']:18.3f} {row['wakeups']:10.2f} {row['preempted']:11.2f}")
    header = "".join(f"{'-j ' + str(parallel):>9}" for parallel in parallels)
    print(f"   CPU per job in each part of the loop's turn, µs:\n   {'part':32}{header}")
    for part in LOOP_PARTS:
        print(f"   {_name(part):32}" + "".join(f"{figures[p][_name(part)]:9.1f}" for p in parallels))
    print(f"   {'the rest of the loop':32}" + "".join(f"{figures[p]['rest']:9.1f}" for p in parallels))
    print(f"   steps within them, µs:\n   {'step':32}{header}")
    for step in STEPS:
        print(f"   {_name(step):32}" + "".join(f"{figures[p][_name(step)]:9.1f}" for p in parallels))
    wakeups = [figures[p]["wakeups"] for p in parallels]
    if len(parallels) >= 2 and len(set(wakeups)) >= 2:
        cpu = [figures[p]["cpu_ms"] for p in parallels]
        slope, intercept = statistics.linear_regression(wakeups, cpu)
        # Through two points a line fits exactly: r tells something from three on.
        fit = f" (r = {statistics.correlation(wakeups, cpu):.2f})" if len(parallels) >= 3 else ""
        print(f"   least-squares line through the {len(parallels)} -j: CPU per job = {slope:.3f} ms x wake-ups per job "
              f"+ {intercept:.3f} ms{fit}: a wake-up costs about {slope * 1e3:.0f} µs, "
              f"a job {intercept * 1e3:.0f} µs beside it")


def main() -> int:
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        return child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2000, help="`true` jobs a run (default 2000)")
    parser.add_argument("--repeats", type=int, default=3, help="runs at each -j (default 3)")
    parser.add_argument("-j", dest="parallel", type=int, action="append",
                        help=f"parallelism, 2 or more (repeatable; default {' '.join(map(str, DEFAULT_PARALLEL))})")
    args = parser.parse_args()
    parallels = sorted(set(args.parallel or DEFAULT_PARALLEL))
    if parallels[0] < 2:
        parser.error("-j must be 2 or more: with one job at a time no worker runs the jobs")
    if args.jobs < 1 or args.repeats < 1:
        parser.error("--jobs and --repeats must be 1 or more")
    from bench_runner import bench_env, job_file  # the benchmark's environment: a repository and compiled modules

    tmp = tempfile.mkdtemp(prefix="profile-coordinator-")
    try:
        env = bench_env(tmp)
        jobs = job_file(tmp, args.jobs)
        runs: dict[int, list[dict]] = {parallel: [] for parallel in parallels}
        for repeat in range(args.repeats):
            for parallel in parallels:
                runs[parallel].append(measure(tmp, env, jobs, parallel))
            print(f"repeat {repeat + 1}/{args.repeats} done", file=sys.stderr)
        report({parallel: per_job(values, args.jobs) for parallel, values in runs.items()}, args.jobs, args.repeats)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
