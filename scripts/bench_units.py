#!/usr/bin/env python3
"""Benchmark loading a large provider; prints each figure next to the 2 s goal of issue #6.

    python scripts/bench_units.py                         # synthetic provider (60 areas, ~2,500 jobs), 5 runs
    python scripts/bench_units.py --runs 9 --areas 120 --jobs 5000
    python scripts/bench_units.py --legacy-tarball FILE   # the 2014 provider from a local copy of its sdist
    python scripts/bench_units.py --offline               # never download

Goal: "Loading every unit file of a large real provider (hundreds of files,
templates, resources, test plans, nested parts) takes under 2 s and never
raises." Every figure is the median wall time of --runs fresh processes
(``python -m plainbox_like ...``), so interpreter start-up and imports count:

synthetic    a provider made by ``make_provider.py`` (shaped like Checkbox's
             checkbox-provider-base): ``plans DIR``, ``plans --json DIR`` (each
             plan's overrides in the order they apply), ``run --dry-run`` with every
             .pxu file named, and ``run --dry-run --test-plan`` of its largest plan
             (nested parts five deep, bootstrap, mandatory jobs, overrides).
checkbox     the real providers of ../shared/checkbox (when present): ``plans base
             resource`` (Checkbox lists the same 598 test plans in about 1 s; goal
             under 1 s) and ``run --dry-run --test-plan submission-cert-automated``
             with the providers found through ``PROVIDERPATH`` (a directory of
             ``.provider`` files made here, as ``manage.py develop -d`` makes them).
legacy       plainbox-provider-checkbox 0.3 (2014, from PyPI): ``plans`` and
             ``run --dry-run`` on provider_jobs/*.txt.in. The sdist is cached under
             $XDG_CACHE_HOME/plainbox-like-bench/ and its sha256 checked; without
             network (or with --offline) this part is skipped, saying so.
baseline     measured in the same run: ``python -c pass``, ``python -m plainbox_like
             --version`` (start-up and imports), and a fresh process that only reads
             every file's bytes. Ratios put the figures in context.

Every command must exit 0; a failure stops the benchmark with its stderr.
Progress goes to stderr; the report to stdout.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from make_provider import make_provider  # noqa: E402

GOAL = 2.0
CLI = [sys.executable, "-m", "plainbox_like"]
LEGACY_NAME = "plainbox-provider-checkbox-0.3.tar.gz"
LEGACY_URL = (
    "https://files.pythonhosted.org/packages/37/16/"
    "abba9c418b3aeaa87b7c0805f56cafdf04e691f7a898947691d8e4b33aae/" + LEGACY_NAME
)
LEGACY_SHA256 = "6a58ed37f93c2867cead01c9153a3600a0e51fd4069077e7b384879a6b931d03"
READ_ALL = "import sys\nfor path in sys.argv[1:]:\n    open(path, 'rb').read()\n"


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def median_wall(argv: list[str], runs: int, env: dict[str, str]) -> tuple[float, str, str]:
    """Median wall time of *runs* runs of *argv*; the last run's stdout and stderr."""
    times = []
    out = err = ""
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
        times.append(time.perf_counter() - start)
        out, err = done.stdout, done.stderr
        if done.returncode != 0:
            raise SystemExit(f"bench_units: {' '.join(argv[:6])} ... exited {done.returncode}:\n{err}")
    return statistics.median(times), out, err


def warnings_in(stderr: str) -> int:
    return sum(1 for line in stderr.splitlines() if line.startswith("plainbox-like: warning:"))


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "plainbox-like-bench"


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def legacy_tarball(given: str | None, offline: bool) -> tuple[Path | None, str]:
    """The verified sdist of the 2014 provider, or None and why not."""
    if given:
        path = Path(given)
        if not path.is_file():
            return None, f"{path}: no such file"
        digest = sha256_of(path)
        return (path, "given") if digest == LEGACY_SHA256 else (None, f"{path}: sha256 {digest} is not {LEGACY_SHA256}")
    cached = cache_dir() / LEGACY_NAME
    if cached.is_file() and sha256_of(cached) == LEGACY_SHA256:
        return cached, "cached"
    if offline:
        return None, "--offline and no verified copy in " + str(cached.parent)
    say(f"downloading {LEGACY_URL}")
    try:
        with urllib.request.urlopen(LEGACY_URL, timeout=30) as response:
            data = response.read()
    except (urllib.error.URLError, OSError) as exc:
        return None, f"cannot download it (offline?): {exc}"
    digest = hashlib.sha256(data).hexdigest()
    if digest != LEGACY_SHA256:
        return None, f"the download has sha256 {digest}, expected {LEGACY_SHA256}"
    cached.parent.mkdir(parents=True, exist_ok=True)
    partial = cached.with_suffix(".part")
    partial.write_bytes(data)
    partial.replace(cached)
    return cached, "downloaded"


def extract(tarball: Path, into: str) -> Path:
    with tarfile.open(tarball) as archive:
        if hasattr(tarfile, "data_filter"):
            archive.extractall(into, filter="data")
        else:  # Python without extraction filters: refuse anything that is not a plain file or directory
            members = [m for m in archive.getmembers() if (m.isfile() or m.isdir()) and ".." not in m.name.split("/")]
            archive.extractall(into, members=members)  # noqa: S202 (members checked above)
    return Path(into) / tarball.name[: -len(".tar.gz")]


#: ``<repo>/../shared/checkbox``, or ``../../shared/checkbox`` from a worktree under ``<project>/wt/``.
CHECKBOX_DEFAULT = next(
    (p for p in (HERE.parent.parent / "shared" / "checkbox", HERE.parent.parent.parent / "shared" / "checkbox")
     if p.is_dir()),
    HERE.parent.parent / "shared" / "checkbox",
)  # fmt: skip
#: Checkbox lists the test plans of base + resource in about 1 s here: loading them must take less.
CHECKBOX_GOAL = 1.0


def checkbox_part(checkbox: Path, tmp: Path, report: "Report", runs: int, env: dict[str, str]) -> str:
    """Time the real Checkbox providers, if present; a note for the report ('' when all is well)."""
    providers = checkbox / "providers"
    say(f"real Checkbox providers ({providers})")
    if not (providers / "base").is_dir() or not (providers / "resource").is_dir():
        say("  skipped: not found")
        return f"checkbox providers skipped: {providers}/base and resource not found"
    seconds, out, err = median_wall([*CLI, "plans", str(providers / "base"), str(providers / "resource")], runs, env)
    report.add("checkbox: plans base resource", seconds,
               f"{len(out.splitlines())} plans, {warnings_in(err)} warnings; goal < {CHECKBOX_GOAL:g} s")  # fmt: skip
    note = "" if seconds < CHECKBOX_GOAL else f"checkbox: plans took {seconds:.3f} s, NOT under {CHECKBOX_GOAL:g} s"
    path = tmp / "providerpath"
    path.mkdir()
    for name in ("base", "resource"):
        (path / f"{name}.provider").write_text(
            f"[PlainBox Provider]\nname = checkbox-provider-{name}\nnamespace = com.canonical.certification\n"
            f"location = {providers / name}\nversion = 1.0\n"
        )
    seconds, out, err = median_wall(
        [*CLI, "run", "--dry-run", "--test-plan", "com.canonical.certification::submission-cert-automated"],
        runs, dict(env, PROVIDERPATH=str(path)),
    )  # fmt: skip
    report.add("checkbox: run --dry-run --test-plan (PROVIDERPATH)", seconds, f"{len(out.splitlines())} jobs")
    return note


class Report:
    """Rows of (what, median seconds, note), printed with ratios at the end."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, float, str]] = []

    def add(self, what: str, seconds: float, note: str = "") -> float:
        self.rows.append((what, seconds, note))
        say(f"  {what}: {seconds:.3f} s {note}")
        return seconds

    def print(self, python: float, cli: float, read: float, runs: int) -> None:
        print(f"median wall time of {runs} fresh processes; goal {GOAL:g} s per load")
        print(f"{'what':<52} {'median':>8} {'/goal':>6} {'/python':>8} {'/cli':>6} {'/read':>6}  note")
        for what, seconds, note in self.rows:
            print(
                f"{what:<52} {seconds:>7.3f}s {seconds / GOAL:>6.2f} {seconds / python:>8.1f}"
                f" {seconds / cli:>6.1f} {seconds / read:>6.1f}  {note}"
            )
        print("columns: /goal = median / 2 s; /python = / `python -c pass`; /cli = / `plainbox-like --version`;")
        print("         /read = / a fresh process reading every file of the synthetic provider")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="processes per figure (median; default 5)")
    parser.add_argument("--areas", type=int, default=60, help="synthetic provider: units/ subdirectories")
    parser.add_argument("--jobs", type=int, default=2500, help="synthetic provider: jobs, about")
    parser.add_argument("--legacy-tarball", metavar="FILE", help="use this copy of " + LEGACY_NAME)
    parser.add_argument("--offline", action="store_true", help="do not download the legacy provider")
    parser.add_argument("--checkbox", metavar="DIR", default=str(CHECKBOX_DEFAULT),
                        help="the shared Checkbox directory with providers/ (default: ../shared/checkbox)")
    args = parser.parse_args(argv)

    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    env.pop("PLAINBOX_LIKE_SESSION", None)
    report = Report()
    with tempfile.TemporaryDirectory(prefix="bench-units-") as tmp:
        env["PLAINBOX_LIKE_REPOSITORY"] = os.path.join(tmp, "repository")
        info = make_provider(os.path.join(tmp, "provider"), args.areas, args.jobs)
        files = sorted(str(p) for p in (info.root / "units").rglob("*.pxu"))
        size = sum(os.path.getsize(f) for f in files)
        say(
            f"synthetic provider: {len(files)} files ({size / 1e6:.1f} MB), {info.jobs + info.resource_jobs} jobs, "
            f"{info.templates} templates, {info.test_plans} test plans"
        )

        say("baselines")
        python = report.add("baseline: python -c pass", median_wall([sys.executable, "-c", "pass"], args.runs, env)[0])
        cli = report.add("baseline: plainbox-like --version", median_wall([*CLI, "--version"], args.runs, env)[0])
        read = report.add(
            f"baseline: read the bytes of {len(files)} files",
            median_wall([sys.executable, "-c", READ_ALL, *files], args.runs, env)[0],
        )

        say("synthetic provider")
        seconds, out, err = median_wall([*CLI, "plans", str(info.root / "units")], args.runs, env)
        report.add("synthetic: plans DIR", seconds, f"{len(out.splitlines())} plans, {warnings_in(err)} warnings")
        seconds, out, err = median_wall([*CLI, "plans", "--json", str(info.root / "units")], args.runs, env)
        report.add("synthetic: plans --json DIR (with overrides)", seconds, f"{len(out) / 1e6:.1f} MB of JSON")
        seconds, out, err = median_wall([*CLI, "run", "--dry-run", *files], args.runs, env)
        report.add(f"synthetic: run --dry-run ({len(files)} files)", seconds,
                   f"{len(out.splitlines())} jobs, {warnings_in(err)} warnings")  # fmt: skip
        seconds, out, err = median_wall(
            [*CLI, "run", "--dry-run", "--test-plan", info.top_plan, str(info.root / "units")], args.runs, env
        )
        report.add("synthetic: run --dry-run --test-plan (nested)", seconds, f"{len(out.splitlines())} jobs")

        checkbox_note = checkbox_part(Path(args.checkbox), Path(tmp), report, args.runs, env)

        say("legacy provider (plainbox-provider-checkbox 0.3, 2014)")
        tarball, how = legacy_tarball(args.legacy_tarball, args.offline)
        if tarball is None:
            say(f"  skipped: {how}")
            skipped = f"legacy provider skipped: {how}"
        else:
            skipped = ""
            root = extract(tarball, os.path.join(tmp, "legacy"))
            legacy = sorted(str(p) for p in (root / "provider_jobs").glob("*.txt.in"))
            seconds, out, err = median_wall([*CLI, "run", "--dry-run", *legacy], args.runs, env)
            report.add(f"legacy: run --dry-run ({len(legacy)} files)", seconds,
                       f"{len(out.splitlines())} jobs, {warnings_in(err)} warnings ({how})")  # fmt: skip
            seconds, out, err = median_wall([*CLI, "plans", *legacy], args.runs, env)
            report.add("legacy: plans", seconds, f"{len(out.splitlines())} plans")
    report.print(python, cli, read, args.runs)
    if skipped:
        print(skipped)
    if checkbox_note:
        print(checkbox_note)
    worst = max(seconds for what, seconds, _note in report.rows if not what.startswith("baseline"))
    print(f"slowest load: {worst:.3f} s = {worst / GOAL:.2f} of the goal ({'met' if worst < GOAL else 'NOT met'})")
    return 0 if worst < GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
