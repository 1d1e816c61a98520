"""A writer killed with SIGKILL at random moments never loses an acknowledged change."""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import time

from plainbox_like.store import locks, names
from plainbox_like.store.reader import load_session
from plainbox_like.store.writer import SessionWriter

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Each change is acknowledged on stdout only after record() has returned (fsync mode).
WRITER = r"""
import sys
from plainbox_like.store.model import Attempt
from plainbox_like.store.writer import SessionWriter

writer = SessionWriter.open(sys.argv[1], durability="fsync")
out = sys.stdout
print("ready", writer.state.journal_seq, flush=True)
n = 0
while True:
    n += 1
    job = f"j{writer.state.journal_seq + 1}"
    writer.job_started(job, 1, None)
    print("start", writer.state.journal_seq, job, flush=True)
    result = Attempt("pass" if n % 7 else "fail", return_code=n % 3, execution_duration=n / 8, comments="x" * (n % 50))
    writer.job_finished(job, result)
    print("result", writer.state.journal_seq, job, flush=True)
    if n % 4 == 0:
        title = f"title-{writer.state.journal_seq + 1}"
        writer.update_metadata(title=title, tags=[title])
        print("meta", writer.state.journal_seq, title, flush=True)
"""


def _read_until_ready(proc: subprocess.Popen, timeout: float) -> bytes:
    fd = proc.stdout.fileno()
    buf = b""
    deadline = time.monotonic() + timeout
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            break
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        buf += chunk
    return buf


def test_sigkill_never_loses_acknowledged_changes(tmp_path):
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    writer = SessionWriter.create(str(tmp_path / "sessions"), title="crash")
    path = writer.path
    writer.close()

    rng = random.Random(2024)
    started: set[str] = set()
    finished: set[str] = set()
    last_meta_seq = 0
    acked_seq = 0
    last_loaded_seq = 0
    readied = 0
    for run in range(50):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, path], stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0, env=env, cwd=REPO
        )
        early = rng.random() < 0.2
        if early:  # somewhere in start-up, open() or the first changes
            head = b""
            time.sleep(rng.uniform(0.0, 0.4))
        else:
            head = _read_until_ready(proc, 30)
            assert head.startswith(b"ready"), (head, proc.poll())
            readied += 1
            time.sleep(rng.uniform(0.0, 0.25))
        proc.send_signal(signal.SIGKILL)
        rest, err = proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL, err.decode(errors="replace")
        text = (head + rest).decode()
        complete_lines = text.split("\n")[:-1]  # a line cut by the kill was not acknowledged
        for line in complete_lines:
            if line.startswith("ready "):
                assert int(line.split()[1]) >= acked_seq
                continue
            kind, seq, what = line.split()
            seq = int(seq)
            assert seq > acked_seq
            acked_seq = seq
            if kind == "start":
                started.add(what)
            elif kind == "result":
                finished.add(what)
            else:
                assert what == f"title-{seq}"
                last_meta_seq = seq

        loaded = load_session(path)  # never raises
        state = loaded.state
        assert state.journal_seq >= acked_seq
        assert state.journal_seq >= last_loaded_seq
        last_loaded_seq = state.journal_seq
        missing = [job for job in finished if job not in state.results]
        assert not missing, (run, missing[:5])
        assert all(job in state.results or job in state.running_jobs for job in started)
        for job in finished:
            assert len(state.results[job]) == 1
        if last_meta_seq:
            assert int(state.metadata.title.split("-")[1]) >= last_meta_seq
        assert locks.lock_holder(path) is not None

    assert readied >= 30
    assert len(finished) >= 100, len(finished)
    # A clean stop after all that: a snapshot with everything and an empty journal.
    final = SessionWriter.open(path)
    final.close()
    loaded = load_session(path)
    assert loaded.journal_changes == 0
    assert os.path.getsize(os.path.join(path, names.JOURNAL_FILE)) == 0
    assert finished <= set(loaded.state.results)
    assert loaded.state.journal_seq > acked_seq
