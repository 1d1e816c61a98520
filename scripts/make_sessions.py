#!/usr/bin/env python3
"""Make many realistic session directories quickly, for benchmarks and manual testing.

    python scripts/make_sessions.py --count 10000 --repository /tmp/repo [--seed 1] [--workers 2]

Writes a few job-definition files under ``DIR/units/`` (certification suites,
an ML sweep with ``model.fit`` commands, a nightly suite, a plain command
list), then ``N`` sessions under ``DIR/sessions/``, each run from one or two of
those files (its ``app_blob`` says which, as ``plainbox-like run`` would), with
20 to 200 jobs, checksums of the real definitions and mixed outcomes:

* about 75 % complete, 20 % incomplete (interrupted: some results, maybe a job
  that was running; some of them with part of their state in the journal),
* about 1 % corrupt (not gzip, truncated gzip, missing state file, a bad
  journal line followed by good ones),
* about 10 % children of an earlier session (``parent_session``), tags and
  titles from a small vocabulary ("nightly 2026-10-03", "lr sweep 0.01", ...).

Snapshots are written directly with ``codec.encode_state`` (no fsync), the
same bytes the library writes. Everything is derived from ``--seed`` and the
session's number, so the same arguments make the same sessions (directory
names included), also with several worker processes.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import sys
import time

try:
    import plainbox_like  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from plainbox_like.store import codec
from plainbox_like.store.model import Attempt, RunningJob, Runner, SessionMetadata, SessionState
from plainbox_like.run.batch import APP_ID
from plainbox_like.store.runconfig import RunConfig
from plainbox_like.define.loading import load_units

NAME_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_"
DAY = 86400.0
TAGS = ("nightly", "gpu", "x86", "arm64", "smoke", "release", "lab-a", "lab-b")
HOSTS = ("lab-node-1", "lab-node-2", "lab-node-3", "ci-runner-7")
OUTCOMES = (
    ("pass", 80),
    ("fail", 7),
    ("skip", 5),
    ("crash", 2),
    ("skipped-dependency", 4),
    ("not-supported", 2),
)


# -- job definition files ----------------------------------------------------------


def _certification(name: str, count: int, rng: random.Random) -> str:
    areas = {
        "disk": ("read", "write", "smart", "detect", "fio-randrw"),
        "cpu": ("frequency", "topology", "stress", "offline", "clocktest"),
        "network": ("ping", "iperf3", "wol", "detect", "dhcp"),
        "usb": ("insert", "storage", "hid", "detect"),
        "memory": ("info", "stress-ng", "ecc"),
        "graphics": ("glmark2", "xrandr", "vaapi"),
    }
    records = []
    for n in range(count):
        area = rng.choice(sorted(areas))
        test = rng.choice(areas[area])
        job_id = f"{name}/{area}/{test}-{n:03d}"
        device = rng.choice(("sda", "nvme0n1", "eth0", "wlan0", "card0", "cpu3"))
        command = rng.choice(
            (
                f"{test.replace('-', '_')}_test --device /dev/{device} --iterations {rng.randint(1, 50)}",
                f"checkbox-support-run {area} {test} {device}",
                f"timeout {rng.randint(10, 600)} {test} -v /dev/{device} | tee $PLAINBOX_SESSION_SHARE/{test}.log",
                f"python3 -m {area}_tests.{test.replace('-', '_')} --target {device}",
            )
        )
        records.append(
            f"id: {job_id}\nplugin: shell\n_summary: {area.capitalize()} {test} test on {device}\n"
            f"estimated_duration: {rng.randint(1, 300)}\ncommand:\n  {command}\n"
        )
    return "\n".join(records)


def _ml_sweep(count: int, rng: random.Random) -> str:
    records = []
    for n in range(count):
        lr = rng.choice(("0.1", "0.03", "0.01", "0.003", "0.001"))
        model = rng.choice(("resnet18", "resnet50", "vit-tiny", "mlp", "gpt-nano"))
        kind = rng.choice(("train", "eval", "prepare", "export"))
        job_id = f"ml/{kind}-{model}-{n:03d}"
        if kind == "train":
            command = (
                f"python3 -c 'import train; model = train.build(\"{model}\"); "
                f"model.fit(epochs={rng.randint(1, 90)}, lr={lr}); model.save(\"{model}.pt\")'"
            )
            summary = f"Train {model} with learning rate {lr}"
        elif kind == "eval":
            command = f"python3 evaluate.py --model {model}.pt --split {rng.choice(('val', 'test'))}"
            summary = f"Evaluate {model}"
        elif kind == "prepare":
            command = f"python3 prepare_data.py --shard {n} --out $PLAINBOX_SESSION_SHARE/data"
            summary = f"Prepare data shard {n}"
        else:
            command = f"python3 export.py --model {model}.pt --format onnx"
            summary = f"Export {model} to ONNX"
        records.append(f"id: {job_id}\nplugin: shell\n_summary: {summary}\ncommand:\n  {command}\n")
    return "\n".join(records)


def _command_list(count: int, rng: random.Random) -> str:
    lines = ["# smoke checks, one command per line"]
    for n in range(count):
        lines.append(
            rng.choice(
                (
                    f"test -d /sys/class/net/eth{n % 4}",
                    f"grep -q processor /proc/cpuinfo && echo cpu{n}",
                    f"df -h / | tail -1 # check {n}",
                    f"sleep 0.{n % 10} && true",
                    f"uname -a | grep -q Linux # {n}",
                )
            )
        )
    return "\n".join(lines) + "\n"


def write_units(directory: str, seed: int) -> list[list[str]]:
    """Write the job files; returns the source lists sessions may be run from."""
    os.makedirs(directory, exist_ok=True)
    rng = random.Random(f"{seed}:units")
    files = {
        "certification-desktop.pxu": _certification("desktop", 260, rng),
        "certification-server.pxu": _certification("server", 260, rng),
        "ml-sweep.pxu": _ml_sweep(240, rng),
        "nightly.pxu": _certification("nightly", 220, rng),
        "smoke.txt": _command_list(210, rng),
    }
    for name, text in files.items():
        path = os.path.join(directory, name)
        if not os.path.exists(path):  # keep mtimes stable across runs into the same repository
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
    p = {name: os.path.join(directory, name) for name in files}
    return [
        [p["certification-desktop.pxu"]],
        [p["certification-server.pxu"]],
        [p["ml-sweep.pxu"]],
        [p["nightly.pxu"]],
        [p["smoke.txt"]],
        [p["nightly.pxu"], p["smoke.txt"]],
    ]


# -- sessions ------------------------------------------------------------------------


def session_name(seed: int, number: int) -> str:
    rng = random.Random(f"{seed}:name:{number}")
    return "".join(rng.choice(NAME_CHARS) for _ in range(8))


def _outcome(rng: random.Random) -> str:
    total = sum(w for _, w in OUTCOMES)
    pick = rng.uniform(0, total)
    for outcome, weight in OUTCOMES:
        pick -= weight
        if pick <= 0:
            return outcome
    return "pass"


def _title(rng: random.Random, sources: list[str], created: float) -> str | None:
    day = time.strftime("%Y-%m-%d", time.gmtime(created))
    base = os.path.basename(sources[0]).rsplit(".", 1)[0]
    return rng.choice(
        (
            f"nightly {day}",
            f"{base} on {rng.choice(HOSTS)}",
            f"lr sweep {rng.choice(('0.1', '0.01', '0.001'))} ({day})",
            f"release candidate {rng.randint(1, 9)} {base}",
            f"{base} rerun {rng.randint(1, 40)}",
            None,
        )
    )


_UNITS: dict[tuple[str, ...], list] = {}


def _jobs_of(sources: list[str]) -> list:
    key = tuple(sources)
    if key not in _UNITS:
        _UNITS[key] = list(load_units(sources).jobs)
    return _UNITS[key]


def make_state(seed: int, number: int, count: int, source_sets: list[list[str]], now: float):
    """The state of session *number* and what kind it is (complete / incomplete / journal / corrupt kind)."""
    rng = random.Random(f"{seed}:session:{number}")
    sources = rng.choice(source_sets)
    jobs = _jobs_of(sources)
    n_jobs = rng.randint(20, min(200, len(jobs)))
    start = rng.randrange(0, len(jobs) - n_jobs + 1)
    chosen = jobs[start : start + n_jobs]
    created = now - rng.uniform(0, 90 * DAY)
    roll = rng.random()
    kind = "complete" if roll < 0.75 else "incomplete" if roll < 0.95 else "journal"
    corrupt = None
    if rng.random() < 0.012:
        corrupt = rng.choice(("garbage", "truncated", "missing", "journal"))
    parent = None
    if number > 0 and rng.random() < 0.1:
        parent = session_name(seed, rng.randrange(0, number))
    config = RunConfig(sources=list(sources), durability=rng.choice(("fsync", "flush")))
    meta = SessionMetadata(
        title=_title(rng, sources, created),
        flags=[] if kind == "complete" else ["incomplete"],
        app_id=APP_ID,
        app_blob=config.to_blob(),
        created=created,
        tags=sorted(rng.sample(TAGS, rng.randint(0, 3))),
        parent_session=parent,
        parent_job=f"{chosen[0].id}" if parent else None,
        runner=Runner(rng.randint(1000, 400000), rng.choice(HOSTS)),
    )
    state = SessionState(
        jobs={job.id: job.checksum for job in chosen},
        desired_job_list=[job.id for job in chosen],
        metadata=meta,
    )
    done = n_jobs if kind == "complete" else rng.randint(0, n_jobs - 1)
    t = created
    for job in chosen[:done]:
        attempts = 2 if rng.random() < 0.03 else 1
        history = []
        for attempt in range(1, attempts + 1):
            outcome = _outcome(rng) if attempt == attempts else "fail"
            ran = outcome not in ("skip", "skipped-dependency", "not-supported")
            duration = round(rng.expovariate(1 / 20.0), 3) if ran else None
            slug = job.id.replace("/", "_")
            history.append(
                Attempt(
                    outcome=outcome,
                    return_code=(0 if outcome == "pass" else rng.choice((1, 2, -9))) if ran else None,
                    execution_duration=duration,
                    comments="killed by signal SIGKILL" if outcome == "crash" else None,
                    io_log_filename=f"io-logs/{slug}.{attempt}.record.gz" if ran else None,
                    attempt=attempt,
                    started=t if ran else None,
                    skip_reason="depends on a failed job" if outcome == "skipped-dependency"
                    else "needs a person" if outcome == "skip" else None,
                )
            )
            t += duration or 0.0
        state.results[job.id] = history
    if kind != "complete" and done < n_jobs and rng.random() < 0.5:
        job = chosen[done]
        state.running_jobs[job.id] = RunningJob(attempt=1, started=t, io_log_filename=None)
        meta.running_job_name = job.id
    meta.updated = t
    if kind == "complete":
        meta.finished = t
    return state, kind, corrupt


def write_session(path: str, state: SessionState, kind: str, corrupt: str | None, rng: random.Random) -> None:
    os.mkdir(path, 0o700)
    os.mkdir(os.path.join(path, "io-logs"), 0o700)
    os.mkdir(os.path.join(path, "session-share"), 0o700)
    journal = b""
    if kind == "journal" and state.results:
        # Move the last few results from the snapshot into the journal, as a live writer leaves them.
        moved = list(state.results.items())[-rng.randint(1, min(5, len(state.results))):]
        for job_id, _ in moved:
            del state.results[job_id]
        seq = 0
        lines = []
        for job_id, history in moved:
            for attempt in history:
                seq += 1
                lines.append(
                    codec.dumps_json(
                        {"op": "result", "job": job_id, "result": codec.converter.unstructure(attempt),
                         "seq": seq, "t": state.metadata.updated}
                    )
                )
        journal = b"\n".join(lines) + b"\n"
    data, _ = codec.encode_state(state)
    if corrupt == "garbage":
        data = b"this is not gzip"
    elif corrupt == "truncated":
        data = data[: len(data) // 2]
    elif corrupt == "journal":
        journal = b'{"seq": 1, "op": "res\n' + codec.dumps_json({"seq": 2, "op": "meta", "set": {}}) + b"\n"
    if corrupt != "missing":
        _write(os.path.join(path, "session"), data)
    _write(os.path.join(path, "journal"), journal)
    _write(os.path.join(path, "lock"), b"")
    when = state.metadata.updated or state.metadata.created or time.time()
    os.utime(path, (when, when))  # as if last written then (also ends the "being created" grace)


def _write(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def _make_range(task: tuple[int, int, int, int, str, list[list[str]], float]) -> int:
    seed, first, last, count, sessions_dir, source_sets, now = task
    made = 0
    for number in range(first, last):
        state, kind, corrupt = make_state(seed, number, count, source_sets, now)
        name = session_name(seed, number)
        path = os.path.join(sessions_dir, name + ".session")
        if os.path.exists(path):
            path = os.path.join(sessions_dir, f"{name}{number}.session")
        write_session(path, state, kind, corrupt, random.Random(f"{seed}:write:{number}"))
        made += 1
    return made


def make_sessions(repository: str, count: int, seed: int = 1, workers: int = 2, now: float | None = None) -> float:
    """Make *count* sessions in *repository*; returns the seconds it took."""
    started = time.perf_counter()
    now = time.time() if now is None else now
    sessions_dir = os.path.join(repository, "sessions")
    os.makedirs(sessions_dir, mode=0o700, exist_ok=True)
    source_sets = write_units(os.path.join(repository, "units"), seed)
    step = max(1, min(500, count // max(1, workers * 4) or 1))
    tasks = [
        (seed, first, min(count, first + step), count, sessions_dir, source_sets, now)
        for first in range(0, count, step)
    ]
    if workers > 1 and len(tasks) > 1:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            made = sum(pool.imap_unordered(_make_range, tasks))
    else:
        made = sum(_make_range(task) for task in tasks)
    assert made == count
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, required=True, help="how many sessions to make")
    parser.add_argument("--repository", required=True, metavar="DIR", help="repository root (sessions go to DIR/sessions)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1): same seed, same sessions")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="worker processes (default 2)")
    args = parser.parse_args(argv)
    seconds = make_sessions(args.repository, args.count, args.seed, args.workers)
    print(f"made {args.count} sessions in {os.path.join(os.path.abspath(args.repository), 'sessions')} in {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
