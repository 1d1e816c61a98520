"""How ``scripts/bench_runner.py`` tells where a run's CPU goes: it wraps the workers' loop, so it must break with
it here."""

from __future__ import annotations

import importlib.util
import os
import sys

import pytest

SCRIPTS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "scripts")
#: About 0.1 s of a shell's own CPU: far above what a worker spends on a job.
BUSY = "i=0; while [ $i -lt 60000 ]; do i=$((i+1)); done"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("_bench_runner", os.path.join(SCRIPTS, "bench_runner.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _env(tmp_path) -> dict[str, str]:
    return {**os.environ, "PLAINBOX_LIKE_REPOSITORY": str(tmp_path / "repo"), "TMPDIR": str(tmp_path)}


@pytest.mark.parametrize("parallel", [1, 2])
def test_a_runs_cpu_is_split_between_the_coordinator_its_workers_and_its_jobs(bench, tmp_path, parallel):
    jobs = tmp_path / "busy.txt"
    jobs.write_text(f"{BUSY}\n" * 2)
    figures = bench.driven(str(tmp_path), ["run", str(jobs), "-j", str(parallel), "--durability", "flush"],
                           _env(tmp_path))
    assert figures["code"] == 0
    assert figures["jobs_cpu_s"] > 0.1  # the two busy shells, whoever spawned them
    if parallel == 1:
        assert figures["workers_cpu_s"] == 0  # no workers: the coordinator spawned the jobs
    else:
        assert 0 < figures["workers_cpu_s"] < figures["jobs_cpu_s"] / 2
    assert figures["cpu_s"] > 0


def test_timed_counts_the_cpu_of_every_descendant_waited_for(bench, tmp_path):
    run = bench.timed(["bash", "-c", f"bash -c '{BUSY}' & bash -c '{BUSY}'; wait"], _env(tmp_path))
    assert run.code == 0
    assert run.cpu > 0.1 and run.wall > 0


def test_the_coordinated_floor_does_each_jobs_work(bench, tmp_path):
    """A floor that skipped some of a job's work would make a goal look out of reach: it journals each start and
    result, creates each job's three log files, and leaves no working directory behind."""
    run = bench.timed([sys.executable, "-c", bench.COORDINATED_LOOP, "10", str(tmp_path)], _env(tmp_path))
    assert run.code == 0
    (logs,) = tmp_path.glob("io-logs-*")
    names = sorted(path.name for path in logs.iterdir())
    assert names == sorted(["journal", *(f"job-{n}{suffix}" for n in range(10)
                                         for suffix in (".record.gz", ".stdout", ".stderr"))])
    lines = (logs / "journal").read_text().splitlines()
    assert sorted(line.split('"')[3] for line in lines) == ["result"] * 10 + ["start"] * 10
    assert not list(tmp_path.glob("cwd-*"))
