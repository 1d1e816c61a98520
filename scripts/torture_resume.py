#!/usr/bin/env python3
"""Kill ``plainbox-like`` with SIGKILL at random moments and resume, until the batch is done.

A batch of short jobs each appends its id to a side-effect file (and prints
it). The runner is started with ``plainbox-like run``, SIGKILLed at random
moments (some soon after it starts, most after a random number of jobs), and
continued each time with ``plainbox-like resume <id>``; a last resume runs
without a kill. Checked along the way and at the end:

* the session loads (``reader.load_session``) after every kill, and at most
  ``-j`` jobs are recorded as running at that moment;
* at the end every job has exactly one result: ``pass``, or ``crash`` with the
  "stopped while this job ran" comment for a job that was running at a kill;
* every passed job's side effect is there exactly once, a crashed job's at
  most once (it may have written before the kill; it is never rerun);
* every io-log reads back: a passed job's output is complete, a crashed job's
  is a prefix of what it would print;
* no process of the session is left running.

Prints a summary table; exits 1 on any violation (listed), 0 otherwise.

    python scripts/torture_resume.py --kills 25 --jobs 2 --seed 7
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from plainbox_like.store.iolog import RecordReader  # noqa: E402
from plainbox_like.run.executors import iter_pids, process_env  # noqa: E402
from plainbox_like.run.settle import SESSION_ENV, STOPPED_WHILE_RUNNING  # noqa: E402
from plainbox_like.store.reader import load_session  # noqa: E402
from plainbox_like.store.repository import SessionRepository  # noqa: E402

#: Seconds to wait for anything before giving up on a round.
ROUND_TIMEOUT = 120.0


def job_id(number: int) -> str:
    return f"j{number:03d}"


def write_units(path: str, side: str, size: int, rng: random.Random) -> list[str]:
    """A .pxu file of *size* jobs; each sleeps a little, records itself, sleeps a little."""
    naps = (0, 0, 0, 0.002, 0.005, 0.01, 0.02, 0.04)
    ids = []
    with open(path, "w", encoding="utf-8") as f:
        for number in range(size):
            jid = job_id(number)
            ids.append(jid)
            before, after = rng.choice(naps), rng.choice(naps)
            command = f"sleep {before}; echo {jid} >> '{side}'; echo {jid}; sleep {after}"
            f.write(f"id: {jid}\ncommand: {command}\n\n")
    return ids


def side_counts(side: str) -> collections.Counter:
    try:
        with open(side, encoding="utf-8") as f:
            return collections.Counter(line.strip() for line in f if line.strip())
    except FileNotFoundError:
        return collections.Counter()


def side_lines(side: str) -> int:
    try:
        with open(side, "rb") as f:
            return f.read().count(b"\n")
    except FileNotFoundError:
        return 0


def leftover_pids(session_id: str) -> list[int]:
    me = os.getpid()
    return [pid for pid in iter_pids() if pid != me and process_env(pid).get(SESSION_ENV) == session_id]


def check(state, ids, counts, killed_running, parallel, session_path=None) -> list[str]:
    """Every violation of the final state (an empty list if all is well)."""
    problems = []
    crashed_ever = set().union(*killed_running) if killed_running else set()
    for jid in ids:
        attempts = state.results.get(jid, [])
        seen = counts.get(jid, 0)
        if len(attempts) != 1:
            problems.append(f"{jid}: {len(attempts)} results, expected exactly 1")
            if not attempts:
                continue
        latest = attempts[-1]
        if latest.outcome == "pass":
            if seen != 1:
                problems.append(f"{jid}: passed but its side effect appears {seen} times")
        elif latest.outcome == "crash" and latest.comments == STOPPED_WHILE_RUNNING:
            if seen > 1:
                problems.append(f"{jid}: crashed at a kill but its side effect appears {seen} times")
            if jid not in crashed_ever:
                problems.append(f"{jid}: recorded as stopped by a kill, but was not running at any kill")
        else:
            problems.append(f"{jid}: unexpected outcome {latest.outcome} ({latest.comments})")
        if session_path and latest.io_log_filename:
            problems.extend(_check_log(session_path, jid, latest))
    unknown = set(counts) - set(ids)
    if unknown:
        problems.append(f"side-effect file has lines from no job: {sorted(unknown)[:5]}")
    for number, running in enumerate(killed_running, start=1):
        if len(running) > parallel:
            problems.append(f"kill {number}: {len(running)} jobs running with -j {parallel}")
    if state.running_jobs:
        problems.append(f"jobs still recorded as running at the end: {sorted(state.running_jobs)}")
    if "incomplete" in state.metadata.flags:
        problems.append("the finished session still has the incomplete flag")
    return problems


def _check_log(session_path, jid, attempt) -> list[str]:
    path = os.path.join(session_path, attempt.io_log_filename)
    if not os.path.exists(path):
        return [f"{jid}: io-log {attempt.io_log_filename} is missing"]
    try:
        reader = RecordReader(path)
        data = b"".join(r.data for r in reader if r.stream == "stdout")
    except Exception as exc:  # the reader must never raise
        return [f"{jid}: reading {attempt.io_log_filename} raised {exc!r}"]
    expected = f"{jid}\n".encode()
    if attempt.outcome == "pass":
        if data != expected or not reader.complete:
            return [f"{jid}: io-log of a passed job holds {data!r} (complete={reader.complete})"]
    elif not expected.startswith(data):
        return [f"{jid}: io-log of a crashed job holds {data!r}"]
    return []


class Torture:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.workdir = args.workdir or tempfile.mkdtemp(prefix="plainbox-like-torture-")
        os.makedirs(self.workdir, exist_ok=True)
        self.repo = os.path.join(self.workdir, "repo")
        self.side = os.path.join(self.workdir, "side-effects.txt")
        self.units = os.path.join(self.workdir, "jobs.pxu")
        self.ids = write_units(self.units, self.side, args.size, self.rng)
        self.env = dict(os.environ)
        for name in (SESSION_ENV, "PLAINBOX_LIKE_JOB"):
            self.env.pop(name, None)
        self.env["PLAINBOX_LIKE_REPOSITORY"] = self.repo
        root = os.path.dirname(HERE)
        self.env["PYTHONPATH"] = root + os.pathsep + self.env.get("PYTHONPATH", "")
        self.session_path: str | None = None
        self.killed_running: list[set[str]] = []
        self.loads_ok = 0
        self.problems: list[str] = []
        self.kills_early = 0

    def say(self, message: str) -> None:
        if self.args.verbose:
            print(message, file=sys.stderr, flush=True)

    def command(self, first: bool) -> list[str]:
        base = [sys.executable, "-m", "plainbox_like", "--repository", self.repo]
        if first:
            return base + ["run", "-j", str(self.args.jobs), "--durability", self.args.durability,
                           "--title", "torture", self.units]
        return base + ["resume", os.path.basename(self.session_path)[: -len(".session")]]

    def spawn(self, first: bool) -> subprocess.Popen:
        return subprocess.Popen(
            self.command(first),
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def find_session(self) -> str | None:
        paths = SessionRepository(self.repo).session_paths()
        return paths[0] if len(paths) == 1 else None

    def results_so_far(self) -> int:
        if self.session_path is None:
            return 0
        try:
            return len(load_session(self.session_path).state.results)
        except Exception:
            return 0

    def one_kill(self, number: int) -> bool:
        """Start (or resume) the runner and SIGKILL it at a random moment; False if it ended first."""
        first = self.session_path is None
        kills_left = self.args.kills - number
        remaining = self.args.size - self.results_so_far()
        # Jobs this round may finish before the kill: leave enough for the kills still to come.
        step_max = max(0, min(remaining // (kills_left + 1) * 2, remaining - 1) - self.args.jobs)
        lines_before = side_lines(self.side)
        # Some kills land soon after the start (start-up, settling the last kill, the first jobs),
        # but only while so many jobs are left that the runner cannot finish first.
        early = not first and remaining >= 4 * (kills_left + 1) + 20 and self.rng.random() < 0.2
        proc = self.spawn(first)
        try:
            deadline = time.monotonic() + ROUND_TIMEOUT
            if early:
                # Anywhere from start-up, through settling the last kill, to the first jobs.
                time.sleep(self.rng.uniform(0.0, 0.4))
            else:
                target = lines_before + max(1 if first else 0, self.rng.randint(0, step_max))
                while side_lines(self.side) < target and proc.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.002)
                time.sleep(self.rng.uniform(0.0, 0.02))
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace")
                if proc.returncode not in (0, 1):
                    self.problems.append(f"round {number}: runner exited {proc.returncode} before the kill: {err.strip()}")
                return False
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=ROUND_TIMEOUT)
            proc.stderr.close()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        self.kills_early += early
        if self.session_path is None:
            self.session_path = self.find_session()
            if self.session_path is None:
                self.problems.append(f"kill {number}: no session directory after the first run")
                return False
        try:
            state = load_session(self.session_path).state
        except Exception as exc:
            self.problems.append(f"kill {number}: session does not load: {exc}")
            self.killed_running.append(set())
            return True
        self.loads_ok += 1
        running = set(state.running_jobs)
        self.killed_running.append(running)
        self.say(f"kill {number + 1}: {len(state.results)} results, running {sorted(running)}")
        return True

    def finish(self) -> int | None:
        proc = self.spawn(self.session_path is None)
        try:
            _, err = proc.communicate(timeout=ROUND_TIMEOUT * 4)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            self.problems.append("the final resume did not finish")
            return None
        if self.session_path is None:
            self.session_path = self.find_session()
        self.say(err.decode(errors="replace").strip())
        return proc.returncode

    def run(self) -> int:
        started = time.monotonic()
        delivered = 0
        for number in range(self.args.kills):
            if not self.one_kill(number):
                break
            delivered += 1
        final_code = self.finish()
        if delivered < self.args.kills:
            self.problems.append(f"only {delivered} of {self.args.kills} kills landed before the batch ended")
        state = None
        if self.session_path is not None:
            try:
                state = load_session(self.session_path).state
            except Exception as exc:
                self.problems.append(f"the final session does not load: {exc}")
        counts = side_counts(self.side)
        crashed = 0
        if state is not None:
            self.problems.extend(
                check(state, self.ids, counts, self.killed_running, self.args.jobs, self.session_path)
            )
            crashed = sum(
                1 for jid in self.ids
                if (a := state.latest(jid)) is not None and a.outcome == "crash"
            )
            expected_code = 1 if crashed else 0
            if final_code != expected_code:
                self.problems.append(f"final resume exited {final_code}, expected {expected_code}")
            sid = os.path.basename(self.session_path)[: -len(".session")]
            if wait_for(lambda: not leftover_pids(sid), 10.0) is False:
                self.problems.append(f"processes of the session still run: {leftover_pids(sid)}")
        passed = sum(1 for jid in self.ids if counts.get(jid, 0) >= 1)
        duplicates = sum(max(0, n - 1) for n in counts.values())
        missing = sum(
            1 for jid in self.ids
            if state is not None and (a := state.latest(jid)) is not None and a.outcome == "pass" and not counts.get(jid)
        )
        results = len(state.results) if state is not None else 0
        all_loaded = self.loads_ok == delivered
        rows = [
            ("jobs", self.args.size),
            ("parallel (-j)", self.args.jobs),
            ("seed", self.args.seed),
            ("durability", self.args.durability),
            ("kills delivered", f"{delivered} of {self.args.kills} ({self.kills_early} soon after start)"),
            ("jobs running at kills", len(set().union(*self.killed_running))),
            ("jobs crashed by kills", crashed),
            ("side effects seen", passed),
            ("jobs with a result", f"{results} of {self.args.size}"),
            ("duplicates", duplicates),
            ("missing", missing),
            ("all-loaded", "yes" if all_loaded else f"no ({self.loads_ok} of {delivered})"),
            ("final exit code", final_code),
            ("seconds", f"{time.monotonic() - started:.1f}"),
            ("verdict", "OK" if not self.problems else f"{len(self.problems)} violation(s)"),
        ]
        width = max(len(name) for name, _ in rows)
        for name, value in rows:
            print(f"{name:<{width}}  {value}")
        for problem in self.problems[:50]:
            print(f"VIOLATION: {problem}")
        if not self.problems and not self.args.keep and not self.args.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        else:
            print(f"work directory kept: {self.workdir}")
        return 1 if self.problems else 0


def wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=200, help="jobs in the batch (default 200)")
    parser.add_argument("--kills", type=int, default=25, help="SIGKILLs to deliver (default 25)")
    parser.add_argument("--jobs", "-j", type=int, default=1, help="-j for the runner (default 1)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random, printed)")
    parser.add_argument("--durability", choices=("fsync", "flush"), default="fsync",
                        help="the runner's --durability (default fsync)")
    parser.add_argument("--workdir", help="work here (kept) instead of a temporary directory")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--verbose", "-v", action="store_true", help="tell about every kill on stderr")
    args = parser.parse_args(argv)
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1 << 32)
    if args.size < 1 or args.kills < 0 or args.jobs < 1:
        parser.error("--size and --jobs must be at least 1, --kills at least 0")
    return args


def main(argv=None) -> int:
    return Torture(parse_args(argv)).run()


if __name__ == "__main__":
    sys.exit(main())
