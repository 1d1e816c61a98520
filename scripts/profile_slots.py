#!/usr/bin/env python3
"""Where a parallel run's time goes, per worker slot: a timeline of every job's steps, summed up.

Runs N `true` jobs at -j J (J >= 2: jobs are started by worker processes) in
this process, in a temporary repository, and notes the moment of each step,
on the one monotonic clock every process shares:

  worker: reads a job's start -> has spawned it -> sees it exit -> has sent its end
  runner: reads that end -> has sent the worker its next start

and prints, over every job of every worker, the median and mean of:

  start    the worker's start of a job (journal sync in fsync mode, its directory, the spawn, its log files)
  job      from the spawn to the worker seeing the exit (the job itself, and the wake-up of its worker)
  finish   what the worker does at the exit before telling it (the output left, leftovers, log closed)
  to runner    the runner waking up to that message
  runner       the runner's own work, from the message to the next start sent (result, scheduling, start)
  to worker    the worker waking up to its next start

The last three are the handoff: what a slot waits between two jobs. The
figures hold the cost of taking them (about a microsecond each). The steps are
found by wrapping the package's own functions, so this follows the code
(plainbox_like/run/workers.py and executors.py) and must change with it.

Usage: python scripts/profile_slots.py [--jobs 1000] [-j 2] [--durability fsync|flush]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from plainbox_like.cli.main import main as cli_main  # noqa: E402
from plainbox_like.run import executors, workers  # noqa: E402

STEPS = ("start", "job", "finish", "to runner", "runner", "to worker")
#: (what, moment, descriptor) noted in the process that notes it (the runner, or a worker after its fork).
NOTES: list[tuple[str, float, int]] = []


def _note(what: str, fd: int = -1) -> None:
    NOTES.append((what, time.perf_counter(), fd))


def instrument(out_dir: str, forks: dict[int, tuple[int, int]]) -> None:
    """Wrap the steps; *forks* gets worker pid -> (its commands descriptor, its events descriptor)."""
    send, read = workers._send, workers._Inbox.read
    start, finish = executors.LocalExecutor.start, executors.LocalExecutor._finish
    serve, fork = workers._serve, workers.WorkerExecutor._fork

    def noted_send(fd, message):  # noted before: the reader may have it before the write returns here
        if message[0] in ("ran", "exited"):
            _note("sent")
        elif message[0] == "start":
            _note("start-out", fd)
        return send(fd, message)

    def noted_read(self):
        messages = read(self)
        for message in messages or ():
            if message[0] == "start":
                _note("recv")
            elif message[0] in ("ran", "exited"):
                _note("end-in", self.fd)
        return messages

    def noted_start(self, spec, report_at_once=False):
        process = start(self, spec, report_at_once)
        _note("spawned")
        return process

    def noted_finish(self, process, events, when=None):
        _note("exit")
        return finish(self, process, events, when)

    def noted_serve(*args):
        NOTES.clear()  # the runner's notes, copied by the fork
        try:
            serve(*args)
        finally:
            with open(os.path.join(out_dir, f"worker-{os.getpid()}"), "w") as f:
                f.writelines(f"{what} {moment!r}\n" for what, moment, _fd in NOTES)

    def noted_fork(self, journal_sync):
        worker = fork(self, journal_sync)
        forks[worker.pid] = (worker.commands, worker.inbox.fd)
        return worker

    workers._send, workers._Inbox.read = noted_send, noted_read
    executors.LocalExecutor.start, executors.LocalExecutor._finish = noted_start, noted_finish
    workers._serve, workers.WorkerExecutor._fork = noted_serve, noted_fork


def _after(moments: list[float], t: float) -> float | None:
    return next((m for m in moments if m >= t), None)


def slot_steps(worker: list[tuple[str, float]], ends_in: list[float], starts_out: list[float]) -> dict[str, list[float]]:
    """The steps of each job of one worker, from its notes and the runner's notes about it."""
    steps: dict[str, list[float]] = {step: [] for step in STEPS}
    recv = spawned = exited = None
    recvs = [m for what, m in worker if what == "recv"]
    for what, moment in worker:
        if what == "recv":
            recv = moment
        elif what == "spawned" and recv is not None:
            steps["start"].append(moment - recv)
            spawned = moment
        elif what == "exit" and spawned is not None:
            steps["job"].append(moment - spawned)
            exited = moment
        elif what == "sent" and exited is not None:
            steps["finish"].append(moment - exited)
            end_in = _after(ends_in, moment)
            start_out = _after(starts_out, end_in) if end_in is not None else None
            next_recv = _after(recvs, start_out) if start_out is not None else None
            if next_recv is not None:
                steps["to runner"].append(end_in - moment)
                steps["runner"].append(start_out - end_in)
                steps["to worker"].append(next_recv - start_out)
            recv = spawned = exited = None
    return steps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=1000, help="`true` jobs to run (default 1000)")
    parser.add_argument("-j", dest="parallel", type=int, default=2, help="parallelism, 2 or more (default 2)")
    parser.add_argument("--durability", choices=("fsync", "flush"), default="fsync")
    args = parser.parse_args()
    if args.parallel < 2:
        parser.error("-j must be 2 or more: with one job at a time no worker runs the jobs")
    tmp = tempfile.mkdtemp(prefix="profile-slots-")
    try:
        jobs = os.path.join(tmp, "jobs.txt")
        with open(jobs, "w") as f:
            f.write("true\n" * args.jobs)
        os.environ["PLAINBOX_LIKE_REPOSITORY"] = os.path.join(tmp, "repo")
        forks: dict[int, tuple[int, int]] = {}
        instrument(tmp, forks)
        began = time.perf_counter()
        with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
            code = cli_main(["run", jobs, "-j", str(args.parallel), "--durability", args.durability])
        wall = time.perf_counter() - began
        if code != 0:
            raise SystemExit(f"the run exited {code}")
        steps: dict[str, list[float]] = {step: [] for step in STEPS}
        for pid, (commands, events) in forks.items():
            with open(os.path.join(tmp, f"worker-{pid}")) as f:
                notes = [(what, float(moment)) for what, moment in (line.split() for line in f)]
            ends_in = [m for what, m, fd in NOTES if what == "end-in" and fd == events]
            starts_out = [m for what, m, fd in NOTES if what == "start-out" and fd == commands]
            for step, values in slot_steps(notes, ends_in, starts_out).items():
                steps[step].extend(values)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{args.jobs} `true` jobs, -j {args.parallel}, {args.durability}: {wall:.3f} s, "
          f"{wall * args.parallel / args.jobs * 1000:.3f} ms a job in each slot")
    for step in STEPS:
        values = steps[step]
        if values:
            print(f"   {step:10} median {statistics.median(values) * 1e6:7.0f} µs   mean {statistics.mean(values) * 1e6:7.0f} µs"
                  f"   ({len(values)} jobs)")
    handoff = [sum(parts) for parts in zip(steps["to runner"], steps["runner"], steps["to worker"])]
    if handoff:
        print(f"   handoff (the last three): median {statistics.median(handoff) * 1e6:.0f} µs, "
              f"mean {statistics.mean(handoff) * 1e6:.0f} µs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
