#!/usr/bin/env python3
"""Compare the coordinator's own CPU per job of two source trees, runs interleaved.

What section 4 of bench_runner.py measures for one tree (getrusage(RUSAGE_SELF)
of the process that runs `plainbox-like run`: the jobs and the -j N workers are
its children, not counted; a run of N `true` jobs less a run of one), here for
two trees (each a directory holding `plainbox_like/`, e.g. a `git worktree` of an
older commit), A and B taking turns so that a noisy machine weighs on both alike.
Prints the medians per tree and the ratio B/A for each -j.

Usage: python scripts/ab_coordinator.py TREE_A TREE_B [--jobs 3000] [--repeats 9] [-j 2 -j 8]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_runner import bench_env, driven, job_file  # noqa: E402 - the same driver and job files as the benchmark


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("trees", nargs=2, metavar="TREE", help="directories holding plainbox_like/ (A, then B)")
    parser.add_argument("--jobs", type=int, default=3000, help="jobs per run (default 3000)")
    parser.add_argument("--repeats", type=int, default=9, help="runs per tree and -j (default 9)")
    parser.add_argument("-j", dest="parallel", type=int, action="append", help="parallelism (repeatable; default 2 and 8)")
    args = parser.parse_args()
    trees = [os.path.abspath(tree) for tree in args.trees]
    for tree in trees:
        if not os.path.isdir(os.path.join(tree, "plainbox_like")):
            parser.error(f"{tree}: no plainbox_like/ there")
    parallels = args.parallel or [2, 8]
    tmp = tempfile.mkdtemp(prefix="ab-coordinator-")
    try:
        many, one = job_file(tmp, args.jobs), job_file(tmp, 1)
        cpu: dict[tuple[str, int], list[float]] = {}
        envs = {tree: bench_env(tmp, dict(os.environ, PYTHONPATH=tree)) for tree in trees}
        for repeat in range(args.repeats):
            for parallel in parallels:
                for tree in trees:
                    env = envs[tree]
                    whole = driven(tmp, ["run", many, "-j", str(parallel)], env)["cpu_s"]
                    alone = driven(tmp, ["run", one, "-j", str(parallel)], env)["cpu_s"]
                    cpu.setdefault((tree, parallel), []).append((whole - alone) / (args.jobs - 1) * 1000)
            print(f"repeat {repeat + 1}/{args.repeats} done", file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    a, b = trees
    print(f"coordinator CPU per job (ms), {args.jobs} `true` jobs less one job, fsync, median of {args.repeats} "
          f"interleaved runs\n   A = {a}\n   B = {b}")
    for parallel in parallels:
        med_a, med_b = (statistics.median(cpu[(tree, parallel)]) for tree in trees)
        spread = {tree: f"{min(cpu[(tree, parallel)]):.3f}-{max(cpu[(tree, parallel)]):.3f}" for tree in trees}
        print(f"   -j {parallel}: A {med_a:.3f} ({spread[a]}), B {med_b:.3f} ({spread[b]}): B/A {med_b / med_a:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
