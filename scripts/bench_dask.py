#!/usr/bin/env python3
"""Benchmark: a run on a Dask cluster against a bare Dask loop and against a local run.

Runs N jobs ``sleep 0.05`` (default 2,000):

- ``bare``: a ``concurrent.futures`` loop on a Dask cluster of 2 worker processes with 2 threads each
  (``Client.get_executor()``), keeping J commands in flight (default 4), each ``bash -c 'sleep 0.05'``
  through :mod:`subprocess`: what any Dask user would write, with no session;
- ``dask``: ``plainbox-like run --dask ADDRESS -j J`` on that same cluster (and ``dask-flush``: the same
  with ``--durability flush``, no journal sync before each job: what durability costs);
- ``dask-local``: ``plainbox-like run --dask local:2x2 -j J`` (starts and stops its own cluster);
- ``local``: ``plainbox-like run -j J`` on this machine (forked workers);

and prints each one's wall time (median of R repeats), the overhead per job of ``dask`` above
``bare`` (goal: under 2 ms) and their ratio (goal: under 1.2). Then the coordinator's peak memory
(``ru_maxrss``) for a run with Q jobs queued on the cluster at once (``-j Q --force``, default
20,000 ``true`` jobs; goal: under 200 MB).

    python scripts/bench_dask.py                        # the issue's figures
    python scripts/bench_dask.py --jobs 500 --queued 5000 --repeats 1

Progress goes to stderr, results to stdout; everything is written in a temporary directory removed
at the end. Needs the dask extra.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # the cluster's workers (spawned with this sys.path) import plainbox_like
COMMAND = "sleep 0.05"


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def peak_kib(pid: int) -> int:
    """``VmHWM`` of live process *pid* (its peak RSS so far), in KiB; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def cli(work: str, *args: str) -> tuple[float, int]:
    """Run ``plainbox-like ARGS`` in a child process: (wall seconds, its peak RSS in KiB).

    The peak is read from /proc while it runs, not from ``wait4``: a child forked from this process
    would count this process's own peak (recorded when it execs).
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env["TMPDIR"] = work
    argv = [sys.executable, "-m", "plainbox_like", "--repository", os.path.join(work, "repo"), *args]
    started = time.monotonic()
    with tempfile.TemporaryFile("w+", dir=work) as errors:
        child = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors)
        peak = 0
        while child.poll() is None:
            peak = max(peak, peak_kib(child.pid))
            time.sleep(0.05)
        wall = time.monotonic() - started
        errors.seek(0)
        err = errors.read()
    if child.returncode != 0:
        raise SystemExit(f"plainbox-like {' '.join(args)} failed: {err.strip()[-500:]}")
    return wall, peak


def shell(command: str) -> int:
    return subprocess.run(["bash", "-c", command]).returncode


def bare(client, count: int, in_flight: int) -> float:
    """The same commands through a concurrent.futures loop on the cluster, *in_flight* at a time."""
    started = time.monotonic()
    with client.get_executor(pure=False) as executor:
        pending: set = set()
        submitted = 0
        while submitted < count or pending:
            while submitted < count and len(pending) < in_flight:
                pending.add(executor.submit(shell, COMMAND))
                submitted += 1
            done, pending = concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in done:
                assert future.result() == 0
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2000, help="jobs per timed run (default 2000)")
    parser.add_argument("-j", type=int, default=4, help="jobs in flight (default 4)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each kind (default 3)")
    parser.add_argument("--queued", type=int, default=20000,
                        help="jobs queued at once for the memory figure (default 20000; 0: skip it)")
    args = parser.parse_args()

    import dask
    from distributed import Client, LocalCluster

    work = tempfile.mkdtemp(prefix="bench-dask-")
    os.environ["TMPDIR"] = work
    os.environ["PYTHONPATH"] = ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")  # the workers import it
    try:
        jobs_file = os.path.join(work, "jobs.txt")
        with open(jobs_file, "w") as handle:
            handle.write(f"{COMMAND}\n" * args.jobs)
        queued_file = os.path.join(work, "queued.txt")
        with open(queued_file, "w") as handle:
            handle.write("true\n" * args.queued)
        with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
            cluster = LocalCluster(n_workers=2, threads_per_worker=2, processes=True, host="127.0.0.1",
                                   dashboard_address=None)
        client = Client(cluster)
        address = cluster.scheduler_address
        times: dict[str, list[float]] = {"bare": [], "dask": [], "dask-flush": [], "dask-local": [], "local": []}
        bare(client, 20, args.j)  # warm up the workers (imports)
        for repeat in range(args.repeats):
            say(f"repeat {repeat + 1}/{args.repeats}")
            times["bare"].append(bare(client, args.jobs, args.j))
            times["dask"].append(cli(work, "run", "--dask", address, "-j", str(args.j), jobs_file)[0])
            times["dask-flush"].append(
                cli(work, "run", "--durability", "flush", "--dask", address, "-j", str(args.j), jobs_file)[0]
            )
            times["dask-local"].append(cli(work, "run", "--dask", "local:2x2", "-j", str(args.j), jobs_file)[0])
            times["local"].append(cli(work, "run", "-j", str(args.j), jobs_file)[0])
            shutil.rmtree(os.path.join(work, "repo"), ignore_errors=True)
            say("  " + ", ".join(f"{name} {values[-1]:.2f}s" for name, values in times.items()))
        medians = {name: statistics.median(values) for name, values in times.items()}
        print(f"{args.jobs} jobs '{COMMAND}', {args.j} in flight, cluster of 2 workers x 2 threads, "
              f"median of {args.repeats} (machine shared: compare ratios)")
        for name, value in medians.items():
            print(f"  {name:<11} {value:8.2f} s   {value / args.jobs * 1000:7.2f} ms/job   "
                  f"{value / medians['bare']:5.2f}x bare")
        overhead = (medians["dask"] - medians["bare"]) / args.jobs * 1000
        print(f"  overhead of --dask above the bare Dask loop: {overhead:.2f} ms/job (goal < 2), "
              f"ratio {medians['dask'] / medians['bare']:.2f} (goal < 1.2)")
        print(f"  ideal (no overhead at all): {args.jobs * 0.05 / args.j:.2f} s")
        if args.queued:
            say(f"memory: {args.queued} jobs queued at once")
            wall, peak = cli(work, "run", "--dask", address, "-j", str(args.queued), "--force", queued_file)
            print(f"{args.queued} jobs 'true' queued at once (-j {args.queued}): coordinator peak RSS "
                  f"{peak / 1024:.0f} MB (goal < 200), run took {wall:.1f} s")
        client.close()
        cluster.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
