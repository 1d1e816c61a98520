#!/usr/bin/env python3
"""Benchmark the session index and the watcher; prints each figure next to its goal.

    python scripts/bench_index.py                      # 10,000 sessions in a temporary repository
    python scripts/bench_index.py --repository DIR     # reuse DIR (sessions are made there if it has none)
    python scripts/bench_index.py --quick              # 1,000 sessions, short phases (a smoke run)
    python scripts/bench_index.py --phases list,burst  # only some phases

Phases (all in one run, baselines measured in the same run):

rebuild      ``plainbox-like index --rebuild`` of every session (CLI, wall time).
list         ``plainbox-like list --json`` with a warm index, as a subprocess (median of
             --runs), with no watcher (it runs the stat-only reconcile first) and with a
             watcher holding the lock (it reads the index only); in-process times too.
             Baseline: listing by reading every session from disk (``summary.list_sessions``
             and the JSON the old ``list --json`` printed), in-process and as a subprocess.
freshness    ``plainbox-like watch`` running and ``plainbox-like run`` of slow-ish jobs in the
             same repository: seconds from a job's result being journaled to it being
             visible in what ``list --json`` reads (polled every 10 ms).
burst        2,000 session directories copied in at once while an in-process watcher runs
             whose file events are mostly dropped (a test double keeps 1 in 20): seconds
             until the index holds exactly those sessions, against the reconcile interval.
concurrency  a runner, the watcher and 4 processes looping ``list --json`` for --seconds:
             reader errors and "database is locked" (then the same without a watcher,
             where every ``list`` reconciles, i.e. writes).

Progress goes to stderr; the report to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)  # benchenv

from benchenv import compiled_env  # noqa: E402 - a script beside this one
from plainbox_like.index import access, listing  # noqa: E402
from plainbox_like.index import query as indexing  # noqa: E402
from plainbox_like.read import summary  # noqa: E402
from plainbox_like.store.reader import load_session  # noqa: E402
from plainbox_like.store.repository import SessionRepository  # noqa: E402
from plainbox_like.index.watcher import Watcher, default_observer  # noqa: E402

sys.path.insert(0, HERE)
import make_sessions  # noqa: E402

CLI = [sys.executable, "-m", "plainbox_like"]
PHASES = ("rebuild", "list", "freshness", "burst", "concurrency")
RESULTS: list[tuple[str, str, str, str]] = []

OLD_LIST = """
import io, json, sys, time
from plainbox_like.cli.main import build_parser
from plainbox_like.read import summary
from plainbox_like.cli.inspect import summary_json
from plainbox_like.store.repository import SessionRepository
build_parser()  # the same imports as the CLI
repo = SessionRepository(sys.argv[1])
json.dump([summary_json(s) for s in summary.list_sessions(repo)], sys.stdout, indent=2, sort_keys=True, ensure_ascii=False)
sys.stdout.write("\\n")
"""

READER = """
import os, sys, time, contextlib, io
from plainbox_like.cli.main import main
root, seconds = sys.argv[1], float(sys.argv[2])
runs = errors = locked = 0
deadline = time.monotonic() + seconds
while time.monotonic() < deadline:
    err = io.StringIO()
    with open(os.devnull, "w") as out, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(["--repository", root, "list", "--json"])
        except Exception as exc:
            code = -1
            print(repr(exc), file=err)
    runs += 1
    text = err.getvalue()
    if code != 0 or "error" in text.lower() or "Traceback" in text:
        errors += 1
        sys.stderr.write(text)
    if "locked" in text:
        locked += 1
print(runs, errors, locked)
"""


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def record(name: str, value: str, goal: str, ok: bool | None) -> None:
    verdict = "" if ok is None else ("PASS" if ok else "FAIL")
    RESULTS.append((name, value, goal, verdict))
    say(f"  {name}: {value}  (goal {goal}) {verdict}")


def timed_cli(argv: list[str], env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    result = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{argv}: exit {result.returncode}: {result.stderr.decode(errors='replace')}")
    return elapsed


def median_of(fn, runs: int) -> tuple[float, list[float]]:
    times = [fn() for _ in range(runs)]
    return statistics.median(times), times


#: The byte-code cache of the timed commands: in the benchmark's own temporary directory (set by main).
PYCACHE = ""


def cli_env() -> dict[str, str]:
    """The environment of the timed commands: the checkout first on the path, and byte-code caching on
    (see benchenv.compiled_env)."""
    env = compiled_env(dict(os.environ), PYCACHE)
    env["PYTHONPATH"] = os.path.dirname(HERE) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("PLAINBOX_LIKE_SESSION", None)
    env.pop("PLAINBOX_LIKE_JOB", None)
    return env


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


# -- phases ------------------------------------------------------------------------


def phase_rebuild(root: str, args: argparse.Namespace) -> None:
    say("rebuild")
    times = []
    cpu = []
    for _ in range(args.rebuild_runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        times.append(timed_cli([*CLI, "--repository", root, "index", "--rebuild"], cli_env()))
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    with indexing.SessionIndex.open(root) as index:
        sessions = index.count()
        jobs = index.conn.execute("SELECT count(*) FROM jobs").fetchone()[0]
    # Baseline in the same run: the same sessions read one by one the ordinary way (no index written).
    base = _in_process_read_all(root, args.baseline_sample)
    middle = statistics.median(times)
    workers = indexing.default_workers()
    record(
        f"index --rebuild of {sessions} sessions ({jobs} jobs), CLI wall time",
        f"{middle:.2f} s median (runs: {', '.join(f'{t:.2f}' for t in times)}; {workers} reading processes; "
        f"CPU time of the process tree {statistics.median(cpu):.1f} s median)",
        "<= 10 s",
        middle <= 10.0,
    )
    record(
        "  baseline: reading every session the ordinary way (load_session + summary), one process, no writing",
        f"{base * sessions:.1f} s (estimated from {args.baseline_sample} sessions: {base * 1000:.2f} ms each)",
        "-",
        None,
    )


def _in_process_read_all(root: str, sample: int) -> float:
    """Seconds per session to read a session for the index the ordinary way (a sample of *sample* sessions)."""
    sessions_dir = os.path.join(root, "sessions")
    names = sorted(os.listdir(sessions_dir))
    step = max(1, len(names) // max(1, sample))
    paths = [os.path.join(sessions_dir, name) for name in names[::step]][:sample]
    definitions = indexing.DefinitionCache()
    for path in paths[:20]:  # warm: the definitions of the unit files are parsed once per run in any case
        indexing.read_session(path, definitions)
    started = time.process_time()
    for path in paths:
        indexing.read_session(path, definitions)
    return (time.process_time() - started) / len(paths)


def _in_process_index_list(root: str) -> float:
    started = time.perf_counter()
    with access.fresh_index(root) as index, open(os.devnull, "wb") as out:
        for part in index.json_parts():
            out.write(part)
    return time.perf_counter() - started


def _in_process_old_list(root: str) -> float:
    from plainbox_like.cli.inspect import summary_json

    started = time.perf_counter()
    repo = SessionRepository(root)
    with open(os.devnull, "w") as out:
        json.dump([summary_json(s) for s in summary.list_sessions(repo)], out, indent=2, sort_keys=True, ensure_ascii=False)
    return time.perf_counter() - started


def phase_list(root: str, args: argparse.Namespace) -> None:
    say("list")
    env = cli_env()
    # Warm the index (and the page cache) first.
    timed_cli([*CLI, "--repository", root, "list", "--json"], env)
    startup, _ = median_of(lambda: timed_cli([sys.executable, "-c", "pass"], env), args.runs)
    imports, _ = median_of(
        lambda: timed_cli([sys.executable, "-c", "import plainbox_like.cli.main as m; m.build_parser(['inspect'])"], env),
        args.runs,
    )
    index_cli, index_cli_all = median_of(lambda: timed_cli([*CLI, "--repository", root, "list", "--json"], env), args.runs)
    index_inproc, _ = median_of(lambda: _in_process_index_list(root), args.runs)
    # With a watcher holding the lock and a fresh heartbeat, list skips the reconcile.
    watcher = Watcher(root, interval=3600)
    thread = threading.Thread(target=watcher.run, daemon=True)
    thread.start()
    watcher.ready.wait(600)
    try:
        watched_cli, watched_all = median_of(
            lambda: timed_cli([*CLI, "--repository", root, "list", "--json"], env), args.runs
        )
        watched_inproc, _ = median_of(lambda: _in_process_index_list(root), args.runs)
    finally:
        watcher.stop()
        thread.join(30)
    base_runs = max(1, min(args.runs, args.baseline_runs))
    old_inproc, old_all = median_of(lambda: _in_process_old_list(root), base_runs)
    old_cli, old_cli_all = median_of(lambda: timed_cli([sys.executable, "-c", OLD_LIST, root], env), base_runs)
    say(f"  python startup {startup:.3f} s; importing the CLI and building the parser of list {imports:.3f} s")
    record(
        "list --json, warm index, no watcher (stat-only reconcile first): CLI subprocess",
        f"{index_cli:.3f} s median ({', '.join(f'{t:.3f}' for t in index_cli_all)})",
        "<= 0.2 s",
        index_cli <= 0.2,
    )
    record(
        "list --json, warm index, watcher running (index read only): CLI subprocess",
        f"{watched_cli:.3f} s median ({', '.join(f'{t:.3f}' for t in watched_all)})",
        "<= 0.2 s",
        watched_cli <= 0.2,
    )
    record(
        "  of which Python start-up / start-up with list's imports and parser (no listing at all)",
        f"{startup:.3f} s / {imports:.3f} s",
        "-",
        None,
    )
    record(
        "baseline: old list --json reading every session from disk: CLI subprocess",
        f"{old_cli:.2f} s median ({', '.join(f'{t:.2f}' for t in old_cli_all)})",
        "-",
        None,
    )
    record(
        "speed-up of list --json, CLI vs CLI (no watcher / watcher)",
        f"{old_cli / index_cli:.0f}x / {old_cli / watched_cli:.0f}x",
        ">= 50x",
        old_cli / index_cli >= 50,
    )
    record(
        "in-process: index (no watcher / watcher) vs summary.list_sessions + JSON",
        f"{index_inproc * 1000:.0f} ms / {watched_inproc * 1000:.0f} ms vs {old_inproc:.2f} s "
        f"= {old_inproc / index_inproc:.0f}x / {old_inproc / watched_inproc:.0f}x",
        ">= 50x",
        old_inproc / index_inproc >= 50,
    )


def phase_freshness(root: str, args: argparse.Namespace) -> None:
    say("freshness")
    env = cli_env()
    watch = subprocess.Popen(
        [*CLI, "--repository", root, "watch", "--interval", "60"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        line = watch.stderr.readline()
        say(f"  {line.strip()}")
        threading.Thread(target=lambda: watch.stderr.read(), daemon=True).start()
        jobs = args.fresh_jobs
        title = f"freshness probe {os.getpid()} {time.time():.0f}"
        run = subprocess.Popen(
            [*CLI, "--repository", root, "run", "--title", title, "--durability", "fsync",
             *[arg for n in range(jobs) for arg in ("-c", f"sleep {args.job_seconds}; echo job {n}")]],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
        )  # fmt: skip
        seen: list[float] = []  # seen[k] = when the (k+1)-th result became visible in the index
        journal_times: dict[tuple[str, int], float] = {}  # (job, attempt) -> "t" of its result line
        index = indexing.SessionIndex.open(root)
        session_id = None
        deadline = time.monotonic() + jobs * (args.job_seconds + 5) + 60
        while time.monotonic() < deadline:
            now = time.time()
            # What list --json shows while a watcher runs: the index, read as it is.
            newest = index.list(listing.ListFilter(title=title, limit=1))
            if newest:
                s = newest[0].summary
                session_id = s.id
                while len(seen) < s.done:
                    seen.append(now)
                _tail_journal(os.path.join(root, "sessions", s.id + ".session", "journal"), journal_times)
            if run.poll() is not None and len(seen) >= jobs:
                break
            time.sleep(0.01)
        index.close()
        run.wait(60)
    finally:
        watch.send_signal(signal.SIGTERM)
        watch.wait(30)
    loaded = load_session(os.path.join(root, "sessions", session_id + ".session"))
    # When each result was journaled: the line's own time stamp, or (for a line a snapshot removed
    # before it was seen) when the job ended, which is a few milliseconds earlier.
    journaled = []
    missed = 0
    for job_id, attempts in loaded.state.results.items():
        for a in attempts:
            t = journal_times.get((job_id, a.attempt))
            if t is None:
                missed += 1
                t = a.started + a.execution_duration
            journaled.append(t)
    journaled.sort()
    if missed:
        say(f"  {missed} of {len(journaled)} result lines were gone from the journal (snapshot) before being seen")
    latencies = sorted(max(0.0, v - j) for v, j in zip(seen, journaled))
    p95 = latencies[max(0, int(round(0.95 * len(latencies))) - 1)]
    record(
        f"freshness: result journaled -> visible in list (watch running, {jobs} jobs of {args.job_seconds} s)",
        f"p50 {statistics.median(latencies):.3f} s, p95 {p95:.3f} s, max {latencies[-1]:.3f} s",
        "p95 <= 1 s",
        p95 <= 1.0,
    )


def _tail_journal(path: str, times: dict[int, float]) -> None:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return
    for line in data.split(b"\n"):
        try:
            change = json.loads(line)
        except ValueError:
            continue
        if isinstance(change, dict) and change.get("op") == "result":
            times.setdefault((change["job"], change["result"].get("attempt", 1)), change["t"])


class Dropping:
    """An observer factory whose handler passes on only 1 event in *keep_every*."""

    def __init__(self, keep_every: int) -> None:
        self.keep_every = keep_every
        self.seen = 0
        self.passed = 0

    def __call__(self, handler, path):
        outer = self

        class Handler:
            def dispatch(self, event):
                outer.seen += 1
                if outer.seen % outer.keep_every == 0:
                    outer.passed += 1
                    handler.dispatch(event)

        return default_observer(Handler(), path)


def phase_burst(root: str, args: argparse.Namespace, workdir: str) -> None:
    say("burst")
    staging = os.path.join(workdir, "burst-staging")
    shutil.rmtree(staging, ignore_errors=True)
    make_sessions.make_sessions(staging, args.burst, seed=args.seed + 1000, workers=2)
    # A repository with only the burst in it, so "exactly those sessions" is easy to check.
    target = os.path.join(workdir, "burst-repo")
    shutil.rmtree(target, ignore_errors=True)
    os.makedirs(os.path.join(target, "sessions"), mode=0o700)
    interval = args.burst_interval
    dropping = Dropping(keep_every=20)
    watcher = Watcher(target, interval=interval, observer_factory=dropping)
    thread = threading.Thread(target=watcher.run, daemon=True)
    thread.start()
    watcher.ready.wait(60)
    names = sorted(os.listdir(os.path.join(staging, "sessions")))
    wanted = {name[: -len(".session")] for name in names}
    started = time.monotonic()
    subprocess.run(["cp", "-a", *[os.path.join(staging, "sessions", n) for n in names], os.path.join(target, "sessions")], check=True)
    copied = time.monotonic() - started
    index = indexing.SessionIndex.open(target)
    done_at = None
    try:
        while time.monotonic() - started < interval * 3 + 120:
            on_disk = indexing.scan_sessions(os.path.join(target, "sessions"))
            stored = index.stored_stamps()
            if set(stored) == wanted and all(stored[i][1] == on_disk[i][1] for i in wanted):
                done_at = time.monotonic() - started
                break
            time.sleep(0.05)
    finally:
        index.close()
        watcher.stop()
        thread.join(60)
    ok = done_at is not None and done_at <= interval + copied + 5
    record(
        f"burst: {len(wanted)} sessions copied in at once, 95% of file events dropped, reconcile every {interval:g} s",
        f"index exact after {done_at:.1f} s (copy took {copied:.1f} s; {dropping.passed} of {dropping.seen} events passed; "
        f"{watcher.reconciles} reconciles)" if done_at is not None else "never exact",
        "within one reconcile interval",
        ok,
    )
    shutil.rmtree(target, ignore_errors=True)
    shutil.rmtree(staging, ignore_errors=True)


def _readers(root: str, seconds: float, count: int, env: dict[str, str]) -> list[tuple[int, int, int, str]]:
    procs = [
        subprocess.Popen([sys.executable, "-c", READER, root, str(seconds)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=env)  # fmt: skip
        for _ in range(count)
    ]
    out = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=seconds + 600)
        runs, errors, locked = map(int, stdout.split())
        out.append((runs, errors, locked, stderr))
    return out


def phase_concurrency(root: str, args: argparse.Namespace) -> None:
    say("concurrency")
    env = cli_env()
    seconds = args.seconds
    jobs = int(seconds / 0.05) + 200
    for with_watcher in (True, False):
        watch = None
        if with_watcher:
            watch = subprocess.Popen([*CLI, "--repository", root, "watch", "--interval", "5"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
            say("  " + watch.stderr.readline().strip())
            threading.Thread(target=lambda: watch.stderr.read(), daemon=True).start()
        run = subprocess.Popen(
            [*CLI, "--repository", root, "run", "--title", f"concurrency probe {time.time():.0f}", "--durability", "flush",
             *[arg for n in range(jobs) for arg in ("-c", f"sleep 0.05; echo {n}")]],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
        )  # fmt: skip
        duration = seconds if with_watcher else max(5.0, seconds / 3)
        results = _readers(root, duration, 4, env)
        run.send_signal(signal.SIGINT)
        run.wait(60)
        if watch is not None:
            watch.send_signal(signal.SIGTERM)
            watch.wait(30)
        runs = sum(r[0] for r in results)
        errors = sum(r[1] for r in results)
        locked = sum(r[2] for r in results)
        for r in results:
            if r[3].strip():
                say("  reader stderr: " + r[3].strip().splitlines()[-1])
        label = "watcher running" if with_watcher else "no watcher: every list reconciles (writes)"
        record(
            f"concurrency ({label}): runner + 4 readers looping list --json for {duration:g} s",
            f"{runs} lists, {errors} errors, {locked} 'database is locked'",
            "0 errors, 0 locked",
            errors == 0 and locked == 0,
        )


# -- main ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repository", metavar="DIR", help="repository to use (made in a temporary directory if not given)")
    parser.add_argument("--count", type=int, default=10_000, help="sessions to make if the repository has none (default 10000)")
    parser.add_argument("--seed", type=int, default=1, help="seed for make_sessions (default 1)")
    parser.add_argument("--runs", type=int, default=7, help="runs per timing, medians reported (default 7)")
    parser.add_argument("--baseline-runs", type=int, default=3, help="runs of the slow baseline (default 3)")
    parser.add_argument("--rebuild-runs", type=int, default=3, help="runs of index --rebuild, median reported (default 3)")
    parser.add_argument("--baseline-sample", type=int, default=500,
                        help="sessions read the ordinary way for the rebuild's baseline (default 500)")
    parser.add_argument("--fresh-jobs", type=int, default=40, help="jobs in the freshness run (default 40)")
    parser.add_argument("--job-seconds", type=float, default=0.3, help="how long each freshness job sleeps (default 0.3)")
    parser.add_argument("--burst", type=int, default=2000, help="sessions in the burst (default 2000)")
    parser.add_argument("--burst-interval", type=float, default=10.0, help="reconcile interval in the burst (default 10)")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the concurrency phase (default 30)")
    parser.add_argument("--phases", default=",".join(PHASES), help=f"comma-separated subset of {','.join(PHASES)}")
    parser.add_argument("--quick", action="store_true", help="1,000 sessions, fewer runs, short phases")
    parser.add_argument("--keep", action="store_true", help="keep the temporary repository")
    args = parser.parse_args(argv)
    if args.quick:
        args.count, args.runs, args.baseline_runs, args.rebuild_runs = 1000, 3, 1, 1
        args.fresh_jobs, args.burst, args.burst_interval, args.seconds = 15, 300, 3.0, 6.0
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    workdir = tempfile.mkdtemp(prefix="bench-index-")
    global PYCACHE
    PYCACHE = os.path.join(workdir, "pycache")
    root = os.path.abspath(args.repository or os.path.join(workdir, "repo"))
    try:
        if not os.path.isdir(os.path.join(root, "sessions")) or not os.listdir(os.path.join(root, "sessions")):
            say(f"making {args.count} sessions in {root}")
            seconds = make_sessions.make_sessions(root, args.count, seed=args.seed, workers=2)
            record(f"make_sessions.py --count {args.count}", f"{seconds:.1f} s", "well under a few minutes", seconds < 180)
        total = len(os.listdir(os.path.join(root, "sessions")))
        say(f"{total} sessions in {root}; load average {load_average()}")
        if "rebuild" in phases:
            phase_rebuild(root, args)
        if "list" in phases:
            phase_list(root, args)
        if "freshness" in phases:
            phase_freshness(root, args)
        if "burst" in phases:
            phase_burst(root, args, workdir)
        if "concurrency" in phases:
            phase_concurrency(root, args)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"plainbox-like index benchmark: {total} sessions; {platform.python_implementation()} {platform.python_version()}; "
          f"{os.cpu_count()} CPUs; load average at the end {load_average()}")  # fmt: skip
    width = max(len(r[0]) for r in RESULTS)
    for name, value, goal, verdict in RESULTS:
        print(f"{name.ljust(width)}  {value}  [goal {goal}] {verdict}")
    return 0 if all(r[3] != "FAIL" for r in RESULTS) else 1


if __name__ == "__main__":
    sys.exit(main())
