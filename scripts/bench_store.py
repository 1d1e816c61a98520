#!/usr/bin/env python3
"""Benchmark: cost per recorded result as a session grows (journal + snapshot).

Records one result per job into real sessions (``SessionRepository.create``,
``set_plan``, ``job_finished`` per job, ``close``) of several sizes, in the
``fsync`` and ``flush`` durability modes, and compares with "Plainbox's way"
measured in the same run: after every result, rewrite the whole state as
gzip(JSON) atomically (temporary file, fsync, rename, fsync of the directory),
with the same encoding (``codec.encode_state``) and ``writer.write_atomically``.

Only the recording loop is timed (``set_plan`` and ``close`` are not; the
time of ``close`` is reported on its own). Sizes are interleaved and repeated,
and medians are reported, because machines are noisy.

    python scripts/bench_store.py                 # the full run (a few minutes)
    python scripts/bench_store.py --quick         # smoke run (seconds)
    python scripts/bench_store.py --json          # machine-readable output
    python scripts/bench_store.py --profile 100000  # cProfile breakdown of one size

Progress goes to stderr; results go to stdout.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import hashlib
import json
import os
import platform
import pstats
import re
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

try:
    import plainbox_like
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import plainbox_like

from plainbox_like.store import codec, iolog, names
from plainbox_like.store.writer import MIN_JOURNAL_BYTES, SNAPSHOT_INTERVAL, SNAPSHOT_TIME_BUDGET, write_atomically
from plainbox_like.store.model import Attempt, SessionState
from plainbox_like.store.repository import SessionRepository

DEFAULT_SIZES = (100, 1_000, 10_000, 100_000)
#: Repeats per size for the default run (sizes not listed get the value for the nearest smaller size).
DEFAULT_REPEATS = {100: 9, 1_000: 5, 10_000: 3, 100_000: 2}
QUICK_SIZES = (100, 1_000)
QUICK_REPEATS = 2
MODES = ("fsync", "flush")
GOAL_RATIO = 1.15

_OUTCOMES = ("pass",) * 8 + ("fail", "skip")


# -- the workload --------------------------------------------------------------


def make_jobs(n: int) -> dict[str, str]:
    """*n* job ids in Plainbox's ``namespace::id`` style, each with a sha256 checksum."""
    jobs = {}
    for i in range(n):
        job_id = f"com.example.bench::group-{i % 37:02d}/job-{i:06d}"
        jobs[job_id] = hashlib.sha256(job_id.encode()).hexdigest()
    return jobs


def make_attempt(index: int, job_id: str) -> Attempt:
    """The result recorded for the *index*-th job (deterministic, a realistic mix)."""
    return Attempt(
        outcome=_OUTCOMES[index % len(_OUTCOMES)],
        return_code=0,
        execution_duration=0.25 + (index % 97) / 100,
        io_log_filename=f"io-logs/{iolog.job_slug(job_id)}.record.gz",
        attempt=1,
        started=time.time(),
    )


class GcTimer:
    """Time spent in the cyclic garbage collector while installed (via gc.callbacks)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.collections = 0
        self._start = 0.0

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._start
            self.collections += 1

    def __enter__(self) -> "GcTimer":
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)


# -- ours ----------------------------------------------------------------------


def fsync_floor(base_dir: str, count: int = 200) -> float:
    """Microseconds to append one 250-byte line to a file and fdatasync it: the floor of fsync mode."""
    root = tempfile.mkdtemp(prefix="bench-floor-", dir=base_dir)
    try:
        fd = os.open(os.path.join(root, "journal"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        line = b"x" * 249 + b"\n"
        started = time.perf_counter()
        for _ in range(count):
            os.write(fd, line)
            os.fdatasync(fd)
        elapsed = time.perf_counter() - started
        os.close(fd)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return elapsed / count * 1e6


def run_ours(base_dir: str, n: int, mode: str, jobs: dict[str, str], profiler: cProfile.Profile | None = None) -> dict:
    """Record *n* results into a new session in *mode*; return the measurements."""
    root = tempfile.mkdtemp(prefix="bench-ours-", dir=base_dir)
    try:
        writer = SessionRepository(root).create(title=f"bench {n} {mode}", durability=mode)
        writer.set_plan(jobs, list(jobs))
        snapshots_before = writer.snapshots
        snapshot_seconds_before = getattr(writer, "_snapshot_seconds", 0.0)
        gc.collect()
        with GcTimer() as gc_timer:
            load = os.getloadavg()[0]
            if profiler is not None:
                profiler.enable()
            cpu_started = time.process_time()
            started = time.perf_counter()
            for index, job_id in enumerate(jobs):
                writer.job_finished(job_id, make_attempt(index, job_id))
            loop = time.perf_counter() - started
            cpu = time.process_time() - cpu_started
            if profiler is not None:
                profiler.disable()
        snapshots = writer.snapshots - snapshots_before
        snapshot_seconds = getattr(writer, "_snapshot_seconds", 0.0) - snapshot_seconds_before
        started = time.perf_counter()
        writer.close()
        close = time.perf_counter() - started
        state_size = os.path.getsize(os.path.join(writer.path, names.STATE_FILE))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {
        "loop_s": loop,
        "us_per_result": loop / n * 1e6,
        "cpu_us_per_result": cpu / n * 1e6,
        "load1": load,
        "close_s": close,
        "snapshots": snapshots,
        "snapshot_s": snapshot_seconds,
        "gc_s": gc_timer.seconds,
        "gc_collections": gc_timer.collections,
        "state_gz_bytes": state_size,
    }


# -- Plainbox's way (the baseline) -----------------------------------------------


class PlainboxWay:
    """Keeps the state in memory and rewrites all of it atomically after every result."""

    def __init__(self, path: str, jobs: dict[str, str]) -> None:
        self.path = path
        self.state_path = os.path.join(path, names.STATE_FILE)
        self.state = SessionState()
        self.seq = 0
        self.apply({"op": "plan", "jobs": dict(jobs), "desired_job_list": list(jobs)})
        self.checkpoint()

    def apply(self, change: dict[str, Any]) -> None:
        self.seq += 1
        self.state.apply({**change, "seq": self.seq, "t": time.time()}, codec.structure_attempt)

    def record_result(self, job_id: str, result: Attempt) -> None:
        self.apply({"op": "result", "job": job_id, "result": codec.converter.unstructure(result)})

    def checkpoint(self) -> None:
        data, _raw_size = codec.encode_state(self.state)
        write_atomically(self.state_path, data)


def run_plainbox_way(base_dir: str, n: int, jobs: dict[str, str], samples: int | None) -> dict:
    """Plainbox's way for *n* results.

    With *samples* None every result is followed by a full checkpoint (the
    real O(N^2) loop). Otherwise only *samples* checkpoints are done, one in
    the middle of each of *samples* equal slices of the run, and the mean
    checkpoint cost they show stands for every result's (stratified sampling:
    a checkpoint's cost grows smoothly with the state, so this estimates the
    full loop's mean without its O(N^2) time).
    """
    root = tempfile.mkdtemp(prefix="bench-plainbox-", dir=base_dir)
    try:
        baseline = PlainboxWay(root, jobs)
        if samples is None or samples >= n:
            checkpoint_at = None
        else:
            checkpoint_at = {int((k + 0.5) * n / samples) for k in range(samples)}
        gc.collect()
        load = os.getloadavg()[0]
        checkpoint_s = 0.0
        checkpoints = 0
        started = time.perf_counter()
        for index, job_id in enumerate(jobs):
            baseline.record_result(job_id, make_attempt(index, job_id))
            if checkpoint_at is None or index in checkpoint_at:
                t0 = time.perf_counter()
                baseline.checkpoint()
                checkpoint_s += time.perf_counter() - t0
                checkpoints += 1
        loop = time.perf_counter() - started
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if checkpoint_at is None:
        per_result = loop / n
    else:
        per_result = (loop - checkpoint_s) / n + checkpoint_s / checkpoints
    return {
        "loop_s": loop,
        "us_per_result": per_result * 1e6,
        "checkpoints": checkpoints,
        "sampled": checkpoint_at is not None,
        "load1": load,
        "estimated_full_loop_s": per_result * n,
    }


# -- orchestration -------------------------------------------------------------


def parse_sizes(text: str) -> list[int]:
    try:
        sizes = sorted({int(token.replace("_", "")) for token in re.split(r"[\s,]+", text.strip()) if token})
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from None
    if not sizes or sizes[0] < 1:
        raise argparse.ArgumentTypeError("sizes must be positive integers")
    return sizes


def repeats_for(sizes: list[int], spec: str | None, quick: bool) -> dict[int, int]:
    if spec:
        values = [int(v) for v in spec.split(",")]
        if len(values) == 1:
            values = values * len(sizes)
        if len(values) != len(sizes) or min(values) < 1:
            raise SystemExit(f"--repeats: give one number or one per size ({len(sizes)})")
        return dict(zip(sizes, values))
    if quick:
        return {n: QUICK_REPEATS for n in sizes}
    out = {}
    for n in sizes:
        known = [k for k in DEFAULT_REPEATS if k <= n]
        out[n] = DEFAULT_REPEATS[max(known)] if known else DEFAULT_REPEATS[min(DEFAULT_REPEATS)]
    return out


def schedule(sizes: list[int], repeats: dict[int, int], baseline_max: int) -> list[tuple[str, int]]:
    """(variant, size) runs in rounds, sizes interleaved, direction alternating.

    A size with fewer repeats than there are rounds has its runs spread evenly
    over the rounds, so that every size samples the machine's load over the
    whole benchmark, not only its beginning.
    """
    rounds = max(repeats.values())
    in_round = {n: {int((k + 0.5) * rounds / repeats[n]) for k in range(repeats[n])} for n in sizes}
    runs = []
    for round_no in range(rounds):
        order = sizes if round_no % 2 == 0 else list(reversed(sizes))
        for n in order:
            if round_no in in_round[n]:
                variants = ["fsync", "flush"] + (["plainbox"] if n <= baseline_max else [])
                if round_no % 2:
                    variants.reverse()
                runs.extend((variant, n) for variant in variants)
    return runs


def filesystem_of(path: str) -> str:
    """The mount point and type of the file system holding *path* (Linux), for the report."""
    path = os.path.realpath(path)
    best = ("", "?")
    try:
        with open("/proc/self/mounts", encoding="utf-8") as f:
            for line in f:
                fields = line.split()
                mount, fstype = fields[1], fields[2]
                inside = path == mount or path.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) >= len(best[0]):
                    best = (mount, fstype)
    except OSError:
        pass
    return f"{best[1]} at {best[0]}"


def extrapolate_total(points: dict[int, float], n: int) -> float | None:
    """Seconds Plainbox's way would take for *n* results, from a linear fit of the per-result cost.

    The per-result cost is a + b*N (each checkpoint rewrites a state that grows
    with N), fitted through the two largest measured sizes; the run takes N times that.
    """
    if len(points) < 2:
        return None
    (n1, c1), (n2, c2) = sorted(points.items())[-2:]
    b = (c2 - c1) / (n2 - n1)
    a = c1 - b * n1
    return n * (a + b * n) / 1e6


def median_of(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def benchmark(args: argparse.Namespace) -> dict:
    sizes = args.sizes
    repeats = repeats_for(sizes, args.repeats, args.quick)
    baseline_max = args.baseline_max
    base_dir = args.dir or tempfile.gettempdir()
    plan = schedule(sizes, repeats, baseline_max)
    results: dict[str, dict[int, list[dict]]] = {v: {n: [] for n in sizes} for v in (*MODES, "plainbox")}
    job_sets = {n: make_jobs(n) for n in sizes}
    # Warm-up, not measured: the first use of each code path compiles cattrs
    # hooks and fills caches, which would otherwise land in the first run.
    warm_jobs = make_jobs(50)
    for mode in MODES:
        run_ours(base_dir, 50, mode, warm_jobs)
    run_plainbox_way(base_dir, 50, warm_jobs, None)
    floor_before = fsync_floor(base_dir)
    load_before = os.getloadavg()
    started = time.perf_counter()
    for number, (variant, n) in enumerate(plan, start=1):
        if variant == "plainbox":
            samples = None if (n <= args.baseline_full_max or args.baseline_full) else args.baseline_samples
            run = run_plainbox_way(base_dir, n, job_sets[n], samples)
        else:
            run = run_ours(base_dir, n, variant, job_sets[n])
        results[variant][n].append(run)
        log(
            f"[{number}/{len(plan)} {time.perf_counter() - started:6.1f}s] {variant:8} {n:>7}: "
            f"{run['us_per_result']:10.1f} us/result"
        )
    total = time.perf_counter() - started
    floor_after = fsync_floor(base_dir)
    load_after = os.getloadavg()

    rows = []
    smallest = sizes[0]
    base_fsync = median_of(results["fsync"][smallest], "us_per_result")
    base_flush = median_of(results["flush"][smallest], "us_per_result")
    base_cpu = {mode: median_of(results[mode][smallest], "cpu_us_per_result") for mode in MODES}
    baseline_points = {
        n: median_of(results["plainbox"][n], "us_per_result") for n in sizes if results["plainbox"][n]
    }
    for n in sizes:
        row: dict[str, Any] = {"size": n, "repeats": repeats[n]}
        for mode, base in (("fsync", base_fsync), ("flush", base_flush)):
            runs = results[mode][n]
            per = [r["us_per_result"] for r in runs]
            cpu = [r["cpu_us_per_result"] for r in runs]
            row[mode] = {
                "median_us": statistics.median(per),
                "median_cpu_us": statistics.median(cpu),
                "min_us": min(per),
                "max_us": max(per),
                "ratio_vs_smallest": statistics.median(per) / base,
                "cpu_ratio_vs_smallest": statistics.median(cpu) / base_cpu[mode],
                "max_load1": max(r["load1"] for r in runs),
                "snapshots_in_loop": median_of(runs, "snapshots"),
                "snapshot_share": statistics.median(r["snapshot_s"] / r["loop_s"] for r in runs),
                "gc_share": statistics.median(r["gc_s"] / r["loop_s"] for r in runs),
                "close_ms": median_of(runs, "close_s") * 1e3,
                "state_gz_bytes": runs[-1]["state_gz_bytes"],
                "runs": runs,
            }
        if n in baseline_points:
            runs = results["plainbox"][n]
            row["plainbox"] = {
                "median_us": baseline_points[n],
                "sampled": runs[0]["sampled"],
                "checkpoints_per_run": runs[0]["checkpoints"],
                "runs": runs,
            }
        else:
            row["plainbox"] = {
                "skipped": True,
                "extrapolated_total_s": extrapolate_total(baseline_points, n),
            }
        rows.append(row)
    largest = sizes[-1]
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "directory": base_dir,
        "filesystem": filesystem_of(base_dir),
        "plainbox_like": getattr(plainbox_like, "__version__", "?"),
        "state_version": codec.VERSION,
        "snapshot_policy": {
            "min_journal_bytes": MIN_JOURNAL_BYTES,
            "interval_s": SNAPSHOT_INTERVAL,
            "time_budget": SNAPSHOT_TIME_BUDGET,
        },
        "sizes": sizes,
        "repeats": repeats,
        "baseline_max": baseline_max,
        "baseline_samples": args.baseline_samples,
        "total_runtime_s": total,
        "fsync_floor_us": {"before": floor_before, "after": floor_after},
        "loadavg": {"before": load_before, "after": load_after},
        "max_load1_at_run_start": max(
            r["load1"] for variant in results.values() for runs in variant.values() for r in runs
        ),
        "rows": rows,
        "ratio": {
            "largest": largest,
            "smallest": smallest,
            "fsync": rows[-1]["fsync"]["ratio_vs_smallest"],
            "fsync_cpu": rows[-1]["fsync"]["cpu_ratio_vs_smallest"],
            "flush": rows[-1]["flush"]["ratio_vs_smallest"],
            "goal": GOAL_RATIO,
        },
    }


def print_report(report: dict) -> None:
    rows = report["rows"]
    smallest = report["ratio"]["smallest"]
    print(f"plainbox-like {report['plainbox_like']} store benchmark; Python {report['python']}, {report['platform']}")
    print(f"{report['cpus']} CPUs; sessions in {report['directory']} ({report['filesystem']})")
    floor = report["fsync_floor_us"]
    print(
        f"floor: append a 250-byte line + fdatasync = {floor['before']:.0f} us before the runs, "
        f"{floor['after']:.0f} us after"
    )
    load = report["loadavg"]
    print(
        f"load average (1 min): {load['before'][0]:.2f} before, {load['after'][0]:.2f} after, "
        f"up to {report['max_load1_at_run_start']:.2f} at the start of a run"
    )
    policy = report["snapshot_policy"]
    print(
        f"snapshot policy: journal > max({policy['min_journal_bytes']} B, snapshot size), "
        f"or every {policy['interval_s']} s within {policy['time_budget']:.0%} of run time"
    )
    print("mean cost per recorded result of the recording loop, median over repeats (microseconds)")
    print()
    header = (
        f"{'size':>8} {'runs':>4} {'ours fsync':>11} {'ours flush':>11} {'Plainbox-way':>38} "
        f"{f'fsync N/{smallest}':>11} {'PB/ours':>8}"
    )
    print(header)
    print("-" * len(header))
    notes = set()
    for row in rows:
        fsync, flush, pb = row["fsync"], row["flush"], row["plainbox"]
        if pb.get("skipped"):
            total = pb["extrapolated_total_s"]
            if total is None:
                pb_text, vs = "skipped", "-"
            else:
                pb_text = f"skipped (O(N^2), would take ~{total:,.0f} s)*"
                vs = f"~{total / row['size'] * 1e6 / fsync['median_us']:.0f}x*"
                notes.add("extrapolated")
        else:
            pb_text = f"{pb['median_us']:,.1f}" + (" (sampled)+" if pb["sampled"] else "")
            vs = f"{pb['median_us'] / fsync['median_us']:.1f}x"
            if pb["sampled"]:
                notes.add("sampled")
        print(
            f"{row['size']:>8,} {row['repeats']:>4} {fsync['median_us']:>11,.1f} {flush['median_us']:>11,.1f} "
            f"{pb_text:>38} {fsync['ratio_vs_smallest']:>11.2f} {vs:>8}"
        )
    print()
    if "sampled" in notes:
        print(
            f"+ sampled: the baseline ran every result but did a full checkpoint only after "
            f"{report['baseline_samples']} results spread evenly over the run (one per equal slice); "
            "their mean checkpoint cost stands for every result's. Use --baseline-full to run the "
            "whole O(N^2) loop."
        )
    if "extrapolated" in notes:
        print(
            "* extrapolated, NOT measured: per-result cost fitted as a + b*N through the two largest "
            "measured baseline sizes, times N results."
        )
    print("PB/ours: Plainbox-way cost per result divided by ours (fsync).")
    for mode in MODES:
        print()
        print(f"details, durability={mode} (medians over repeats; close is not in the per-result cost)")
        header = (
            f"{'size':>8} {'median us':>10} {'min us':>9} {'max us':>9} {f'N/{smallest}':>6} "
            f"{'cpu us':>8} {'cpu N/' + str(smallest):>9} {'snapshots':>9} {'snap %':>7} {'gc %':>6} "
            f"{'close ms':>9} {'session gz':>11} {'max load':>8}"
        )
        print(header)
        print("-" * len(header))
        for row in rows:
            d = row[mode]
            print(
                f"{row['size']:>8,} {d['median_us']:>10,.1f} {d['min_us']:>9,.1f} {d['max_us']:>9,.1f} "
                f"{d['ratio_vs_smallest']:>6.2f} {d['median_cpu_us']:>8,.1f} {d['cpu_ratio_vs_smallest']:>9.2f} "
                f"{d['snapshots_in_loop']:>9g} {d['snapshot_share']:>7.1%} "
                f"{d['gc_share']:>6.1%} {d['close_ms']:>9,.1f} {d['state_gz_bytes']:>11,} {d['max_load1']:>8.2f}"
            )
    print()
    print("cpu us: CPU time of this process per result (less sensitive to other processes than wall time);")
    print("snapshots: snapshots taken during the loop; snap %: their share of the loop time;")
    print("gc %: share of the loop time spent in Python's cyclic garbage collector;")
    print("max load: highest 1-minute load average seen at the start of that size's runs.")
    print(f"total benchmark time: {report['total_runtime_s']:.0f} s")
    ratio = report["ratio"]
    if report["max_load1_at_run_start"] > 0.5 * (report["cpus"] or 1):
        print(
            f"warning: the load average reached {report['max_load1_at_run_start']:.2f} on {report['cpus']} CPUs: "
            "other processes competed for CPU and disk, so wall-clock numbers are noisy (compare min us and cpu us)."
        )
    print(f"cpu-time ratio {ratio['largest']}/{ratio['smallest']} (fsync): {ratio['fsync_cpu']:.2f}")
    print(f"ratio {ratio['largest']}/{ratio['smallest']} (fsync): {ratio['fsync']:.2f} (goal <= {ratio['goal']})")


# -- profiling -------------------------------------------------------------------


def _find(stats: dict, filename_end: str, funcname: str) -> tuple | None:
    for key, value in stats.items():
        if key[0].endswith(filename_end) and key[2] == funcname:
            return key, value
    return None


def _builtin(stats: dict, name: str) -> tuple | None:
    for key, value in stats.items():
        if key[0] == "~" and name in key[2]:
            return key, value
    return None


def _ct(stats: dict, entry: tuple | None, caller: tuple | None = None) -> tuple[float, int]:
    """Cumulative time and call count of *entry*, optionally only when called from *caller*."""
    if entry is None:
        return 0.0, 0
    key, (cc, nc, tt, ct, callers) = entry
    if caller is None:
        return ct, nc
    sub = callers.get(caller[0]) if caller is not None else None
    if sub is None:
        return 0.0, 0
    return sub[3], sub[0]


def profile(args: argparse.Namespace) -> None:
    n = args.profile
    mode = args.profile_mode
    base_dir = args.dir or tempfile.gettempdir()
    jobs = make_jobs(n)
    log(f"plain run, {mode}, {n} results ...")
    plain = run_ours(base_dir, n, mode, jobs)
    log(f"profiled run, {mode}, {n} results ...")
    profiler = cProfile.Profile()
    profiled = run_ours(base_dir, n, mode, jobs, profiler=profiler)
    st = pstats.Stats(profiler).stats

    record = _find(st, "writer.py", "record")
    job_finished = _find(st, "writer.py", "job_finished")
    sync = _find(st, "writer.py", "sync")
    snapshot = _find(st, "writer.py", "snapshot")
    write_all = _find(st, "writer.py", "_write_all")
    apply = _find(st, "model.py", "apply")
    dumps = _find(st, "codec.py", "dumps_json")
    encode = _find(st, "codec.py", "encode_state")
    state_doc = _find(st, "codec.py", "state_document")
    write_atomic = _find(st, "writer.py", "write_atomically")
    fdatasync = _builtin(st, "posix.fdatasync")
    fsync = _builtin(st, "posix.fsync")
    structure = _find(st, "codec.py", "structure_attempt")

    loop = profiled["loop_s"]
    rows: list[tuple[str, float, int]] = []
    jf_total, _ = _ct(st, job_finished)
    rec_from_jf, _ = _ct(st, record, job_finished)
    journal_sync, sync_calls = _ct(st, sync, record)
    fdatasync_in_sync, _ = _ct(st, fdatasync, sync)
    line_json, _ = _ct(st, dumps, record)
    line_write, _ = _ct(st, write_all, record)
    apply_t, _ = _ct(st, apply, record)
    structure_t, _ = _ct(st, structure, apply) if apply else (0.0, 0)
    snap_t, snap_n = _ct(st, snapshot, record)
    enc_t, _ = _ct(st, encode, snapshot)
    unstructure_t, _ = _ct(st, state_doc, encode)
    enc_json_t, _ = _ct(st, dumps, encode)
    wa_t, _ = _ct(st, write_atomic, snapshot)
    wa_fsync, _ = _ct(st, fsync, write_atomic)
    snap_sync, _ = _ct(st, sync, snapshot)
    record_other = rec_from_jf - journal_sync - line_json - line_write - apply_t - snap_t
    rows += [
        ("journal fdatasync (sync() from record)", journal_sync, sync_calls),
        ("  of which os.fdatasync itself", fdatasync_in_sync, 0),
        ("journal line JSON (dumps_json from record)", line_json, 0),
        ("journal line write (os.write)", line_write, 0),
        ("apply (SessionState.apply)", apply_t, 0),
        ("  of which structure_attempt (cattrs)", structure_t, 0),
        (f"snapshots from record ({snap_n} snapshots)", snap_t, snap_n),
        ("  encode: unstructure state (cattrs)", unstructure_t, 0),
        ("  encode: JSON dumps", enc_json_t, 0),
        ("  encode: gzip (isal) + rest", enc_t - unstructure_t - enc_json_t, 0),
        ("  write_atomically (write, fsync, rename, dir fsync)", wa_t, 0),
        ("    of which os.fsync (file + directory)", wa_fsync, 0),
        ("  sync of the journal before the snapshot", snap_sync, 0),
        ("record(): rest (time.time, dict merge, clock, policy)", record_other, 0),
        ("job_finished(): unstructure Attempt + change dict", jf_total - rec_from_jf, 0),
        ("loop: Attempt construction, slug, loop overhead", loop - jf_total, 0),
    ]
    print(f"cProfile of the recording loop: {n} results, durability={mode}")
    print(
        f"without profiler: {plain['us_per_result']:.1f} us/result, {plain['snapshots']} snapshots in the loop "
        f"taking {plain['snapshot_s']:.2f} s ({plain['snapshot_s'] / plain['loop_s']:.1%} of {plain['loop_s']:.1f} s), "
        f"gc {plain['gc_s']:.2f} s in {plain['gc_collections']} collections, close {plain['close_s'] * 1e3:.0f} ms"
    )
    print(
        f"with profiler:    {profiled['us_per_result']:.1f} us/result, {profiled['snapshots']} snapshots "
        f"taking {profiled['snapshot_s']:.2f} s, gc {profiled['gc_s']:.2f} s "
        "(cProfile inflates Python-heavy parts, e.g. cattrs, much more than syscalls)"
    )
    print()
    print(f"{'where (profiled run)':<56} {'total s':>8} {'us/result':>10} {'share':>7}")
    for label, seconds, _count in rows:
        print(f"{label:<56} {seconds:>8.2f} {seconds / n * 1e6:>10.1f} {seconds / loop:>7.1%}")
    print(f"{'total loop':<56} {loop:>8.2f} {loop / n * 1e6:>10.1f} {1:>7.0%}")

    # The snapshot parts once more without the profiler, on a state of this size.
    state = _final_state(jobs)
    times = {}
    t0 = time.perf_counter()
    doc = codec.state_document(state)
    times["unstructure (cattrs)"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    raw = codec.dumps_json(doc)
    times["JSON dumps"] = time.perf_counter() - t0
    from isal import igzip  # what codec.encode_state compresses with

    t0 = time.perf_counter()
    igzip.compress(raw, compresslevel=1)
    times["gzip (isal, level 1)"] = time.perf_counter() - t0
    data, _ = codec.encode_state(state)
    root = tempfile.mkdtemp(prefix="bench-snap-", dir=base_dir)
    try:
        t0 = time.perf_counter()
        write_atomically(os.path.join(root, names.STATE_FILE), data)
        times["write_atomically"] = time.perf_counter() - t0
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print()
    print(
        f"one snapshot of the full {n}-result state without profiler: {len(raw) / 1e6:.1f} MB JSON, "
        f"{len(data) / 1e6:.2f} MB gzip"
    )
    for label, seconds in times.items():
        print(f"  {label:<24} {seconds * 1e3:8.1f} ms  ({seconds / len(raw) * 1e9:.1f} ns per JSON byte)")
    print(f"  {'total':<24} {sum(times.values()) * 1e3:8.1f} ms")
    if args.profile_top:
        print()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(args.profile_top)


def _final_state(jobs: dict[str, str]) -> SessionState:
    state = SessionState()
    state.apply({"op": "plan", "jobs": dict(jobs), "desired_job_list": list(jobs), "seq": 1}, codec.structure_attempt)
    for index, job_id in enumerate(jobs):
        state.results[job_id] = [make_attempt(index, job_id)]
    return state


# -- command line --------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=parse_sizes, help='session sizes, e.g. "100,1000,10000,100000" (the default)')
    parser.add_argument("--repeats", help="runs per size: one number, or one per size separated by commas")
    parser.add_argument("--quick", action="store_true", help=f"smoke run: sizes {QUICK_SIZES}, {QUICK_REPEATS} repeats")
    parser.add_argument("--json", action="store_true", help="print a JSON report instead of tables")
    parser.add_argument("--dir", help="where to create the temporary sessions (default: the temp dir)")
    parser.add_argument(
        "--baseline-max", type=int, default=10_000, help="largest size Plainbox's way runs at (default 10000)"
    )
    parser.add_argument(
        "--baseline-full-max",
        type=int,
        default=1_000,
        help="larger baseline sizes checkpoint only a sample of results (default 1000)",
    )
    parser.add_argument(
        "--baseline-samples", type=int, default=200, help="checkpoints per sampled baseline run (default 200)"
    )
    parser.add_argument(
        "--baseline-full", action="store_true", help="run the whole O(N^2) baseline loop at every size (slow)"
    )
    parser.add_argument("--profile", type=int, metavar="N", help="instead: cProfile one run of N results")
    parser.add_argument("--profile-mode", choices=MODES, default="fsync", help="durability for --profile")
    parser.add_argument("--profile-top", type=int, default=0, metavar="K", help="also print the K top functions")
    args = parser.parse_args(argv)
    if args.profile:
        profile(args)
        return 0
    if args.sizes is None:
        args.sizes = list(QUICK_SIZES if args.quick else DEFAULT_SIZES)
    if args.quick:
        args.baseline_full_max = min(args.baseline_full_max, 300)
        args.baseline_samples = min(args.baseline_samples, 50)
    report = benchmark(args)
    if args.json:
        json.dump(report, sys.stdout, indent=1)
        print()
    else:
        print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
