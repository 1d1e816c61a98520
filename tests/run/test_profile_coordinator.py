"""A small run of ``scripts/profile_coordinator.py``: it wraps the run loop's own methods, so it must break with them here."""

from __future__ import annotations

import os
import re
import subprocess
import sys

SCRIPT = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "scripts", "profile_coordinator.py"
)
sys.path.insert(0, os.path.dirname(SCRIPT))

import profile_coordinator  # noqa: E402


def _numbers(line: str) -> list[float]:
    return [float(n) for n in re.findall(r"-?\d+\.\d+", line)]


def test_each_part_of_the_loop_is_timed_at_each_parallelism(tmp_path):
    done = subprocess.run([sys.executable, SCRIPT, "--jobs", "40", "--repeats", "1", "-j", "2", "-j", "4"],
                          capture_output=True, text=True, env={**os.environ, "TMPDIR": str(tmp_path)}, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    rows = {int(m.group(1)): _numbers(m.group(2)) for m in (re.match(r"^   (\d+) +(.*)$", line) for line in lines) if m}
    assert set(rows) == {2, 4}
    for cpu_ms, wakeups, _preempted in rows.values():
        assert cpu_ms > 0 and wakeups > 0  # the loop ran and waited for its workers
    parts = {}
    for part in (*profile_coordinator.LOOP_PARTS, *profile_coordinator.STEPS):
        name = profile_coordinator._name(part)
        line = next(line for line in lines if line.startswith(f"   {name} "))
        parts[name] = _numbers(line)
        assert len(parts[name]) == 2
    for name in ("BatchRunner._hand_out", "WorkerExecutor.poll", "BatchRunner._handle", "BatchRunner._spawn",
                 "WorkerExecutor.start", "BatchRunner._finish"):
        assert min(parts[name]) > 0, name  # called for every job: a part that is not wrapped shows 0
    rest = _numbers(next(line for line in lines if line.startswith("   the rest of the loop")))
    assert min(rest) >= 0  # nested calls of a loop part are not counted twice
    assert "least-squares line through the 2 -j: CPU per job =" in done.stdout
    assert not os.listdir(tmp_path)  # its temporary directory is gone


def test_a_part_counts_only_where_the_loop_calls_it(monkeypatch):
    calls = []

    class Loop:
        def outer(self):
            calls.append("outer")
            self.inner()

        def inner(self):
            calls.append("inner")

    spent: dict[str, list[int]] = {}
    wrapper = profile_coordinator._timed_method
    Loop.outer = wrapper(Loop.outer, "outer", True, spent)
    Loop.inner = wrapper(Loop.inner, "inner", True, spent)
    Loop().inner()  # before the run loop: not timed
    monkeypatch.setattr(profile_coordinator, "_timing", [True])
    Loop().outer()
    Loop().inner()
    assert calls == ["inner", "outer", "inner", "inner"]
    assert spent["outer"][1] == 1 and spent["inner"][1] == 1  # the inner call within outer is outer's


def test_one_job_at_a_time_is_refused(tmp_path):
    done = subprocess.run([sys.executable, SCRIPT, "-j", "1"], capture_output=True, text=True,
                          env={**os.environ, "TMPDIR": str(tmp_path)}, timeout=60)
    assert done.returncode == 2 and "-j must be 2 or more" in done.stderr
