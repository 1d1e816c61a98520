"""A small run of ``scripts/profile_slots.py``: it follows the workers' code, so it must break with it here."""

from __future__ import annotations

import os
import re
import subprocess
import sys

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "scripts", "profile_slots.py")


def test_every_step_of_every_job_is_timed(tmp_path):
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    done = subprocess.run([sys.executable, SCRIPT, "--jobs", "20", "-j", "2", "--durability", "flush"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    counts = {step: int(count) for step, count in
              re.findall(r"^   (\S+(?: \S+)?) +median +\d+ µs +mean +\d+ µs +\((\d+) jobs\)", done.stdout, re.M)}
    assert set(counts) == {"start", "job", "finish", "to runner", "runner", "to worker"}, done.stdout
    assert counts["start"] == counts["job"] == counts["finish"] == 20
    assert counts["to runner"] == counts["runner"] == counts["to worker"] == 18  # each worker's last job has no next
    assert "handoff (the last three): median" in done.stdout
    assert not os.listdir(tmp_path)  # its temporary directory is gone


def test_one_job_at_a_time_is_refused(tmp_path):
    done = subprocess.run([sys.executable, SCRIPT, "-j", "1"], capture_output=True, text=True,
                          env={**os.environ, "TMPDIR": str(tmp_path)}, timeout=60)
    assert done.returncode == 2 and "-j must be 2 or more" in done.stderr
