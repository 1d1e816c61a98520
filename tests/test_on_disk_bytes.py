"""The bytes a run leaves on disk are those the code wrote before the layered refactoring (b7b15f0).

``tests/data/golden/`` holds two sessions written by plainbox-like at b7b15f0 from the fixed batch beside
them: ``finished.session`` (``run batch.pxu``: closed, final snapshot, ``session.bak``, empty journal) and
``interrupted.session`` (``run batch.pxu dies.pxu``: the last job kills its runner, so every change since
the first snapshot is still in the journal and the lock names the dead runner). The test runs the same
batches with today's code and compares every file after normalising only what must differ between two runs
(times, durations, pids, host, the path of the .pxu files) and the changes made on purpose since b7b15f0,
each named in :func:`normal_attempt` and :func:`normal_metadata` with the commit that made it.

Regenerate the golden sessions (from the repository root; the old code in a detached worktree)::

    git worktree add --detach /tmp/plainbox-like-b7b15f0 b7b15f0
    /work/venv/bin/python tests/test_on_disk_bytes.py /tmp/plainbox-like-b7b15f0
    git worktree remove /tmp/plainbox-like-b7b15f0

This module imports nothing from ``plainbox_like``: the script runs the old code's CLI the way the test
runs today's, and the comparison reads the files as the on-disk contract describes them.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN = os.path.join(HERE, "data", "golden")
REPO_ROOT = os.path.dirname(HERE)
#: Golden session name -> the .pxu files of its run, in order.
RUNS = {"finished.session": ["batch.pxu"], "interrupted.session": ["batch.pxu", "dies.pxu"]}
RAW_STREAMS = ("stdout", "stderr")
TIME, DURATION, PID, HOST = "<time>", "<duration>", "<pid>", "<host>"


# -- running a batch with some code -------------------------------------------------------------------


def run_batch(code_root: str, repository: str, name: str) -> str:
    """Run golden session *name*'s batch with the plainbox-like at *code_root*; the new session's path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PLAINBOX_LIKE_", "PLAINBOX_SESSION_"))}
    env["PYTHONPATH"] = code_root
    sources = [os.path.join(GOLDEN, pxu) for pxu in RUNS[name]]
    subprocess.run(
        [sys.executable, "-m", "plainbox_like", "--repository", repository, "run", *sources],
        env=env, cwd=repository, capture_output=True, timeout=120,
    )  # fmt: skip
    # finished: exit 1 (a job failed); interrupted: the runner was killed. What counts is what it left.
    sessions = os.path.join(repository, "sessions")
    (only,) = os.listdir(sessions)
    return os.path.join(sessions, only)


# -- normalising -------------------------------------------------------------------------------------


def timed(value, placeholder: str):
    """A time or duration as *placeholder* (None stays None: a job that never ran has none)."""
    if value is None:
        return None
    assert isinstance(value, (int, float)) and value >= 0, value
    return placeholder


def normal_attempt(attempt: dict) -> dict:
    """One result of a job, its times replaced, the fields added since b7b15f0 removed once checked."""
    out = dict(attempt)
    out["started"] = timed(out.get("started"), TIME)
    out["execution_duration"] = timed(out.get("execution_duration"), DURATION)
    # State format version 3 (1523540 "leftover processes ... named"): every attempt names the processes a
    # job left running, null when none; leftover_files (fab56d3) is written only when a job left files.
    # No job of the batch leaves either, so both must be empty.
    assert out.pop("leftover_processes", None) is None, attempt
    assert out.pop("leftover_files", []) == [], attempt
    return out


def normal_metadata(metadata: dict) -> dict:
    out = dict(metadata)
    for key in ("created", "updated", "finished"):
        out[key] = timed(out.get(key), TIME)
    if out.get("runner") is not None:
        assert set(out["runner"]) == {"host", "pid"}, out["runner"]
        out["runner"] = {"host": HOST, "pid": PID}
    blob = json.loads(base64.b64decode(out["app_blob"]))
    blob["sources"] = [os.path.basename(path) for path in blob["sources"]]  # where the checkout is
    # The run configuration gained the launcher's environment and manifest answers (fab56d3) and the
    # provider directories (b3c2607); this batch uses none of them, so they must be empty.
    for key, empty in (("environment", {}), ("manifest", {}), ("providers", [])):
        assert blob.pop(key, empty) == empty, (key, blob)
    out["app_blob"] = blob
    return out


def normal_state(data: bytes) -> dict:
    """A state file (gzipped JSON) parsed and normalised; the format version compared by the caller."""
    doc = json.loads(gzip.decompress(data))
    session = dict(doc["session"])
    session["metadata"] = normal_metadata(session["metadata"])
    session["results"] = {job: [normal_attempt(a) for a in attempts] for job, attempts in session["results"].items()}
    return {**{k: v for k, v in doc.items() if k != "version"}, "session": session}


def normal_journal(data: bytes) -> list:
    """The journal's records, one per line, with their times normalised."""
    out = []
    for line in data.splitlines():
        record = json.loads(line)
        record["t"] = timed(record["t"], TIME)
        if "started" in record:
            record["started"] = timed(record["started"], TIME)
        if "result" in record:
            record["result"] = normal_attempt(record["result"])
        if "metadata" in record:  # a metadata change carries the fields it changed
            record["metadata"] = {k: timed(v, TIME) if k in ("created", "updated", "finished") else v
                                  for k, v in record["metadata"].items()}  # fmt: skip
        out.append(record)
    return out


def normal_records(data: bytes) -> list:
    """An io-log record file's records with their time deltas normalised and consecutive records of one
    stream joined: where a job's output is cut into records depends on how the pipe delivered it to the
    runner (one read or several), which varies from run to run. The file of a runner killed while its job
    ran has no gzip trailer, so it is read as far as it goes."""
    text = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data)
    out: list = []
    for line in text.splitlines():
        delay, stream, payload = json.loads(line)
        timed(delay, DURATION)
        if out and out[-1][1] == stream:
            out[-1][2] += base64.b64decode(payload)
        else:
            out.append([DURATION, stream, base64.b64decode(payload)])
    return out


def normal_lock(data: bytes) -> bytes:
    """A lock file: empty once released, else ``PID HOST`` of the runner that held it."""
    return re.sub(rb"\A\d+ \S+\n\Z", b"<pid> <host>\n", data)


def tree_files(path: str) -> dict[str, bytes]:
    """Every file of a session directory (relative name -> bytes); directories must hold files."""
    out = {}
    for dirpath, _dirs, names in os.walk(path):
        for name in names:
            full = os.path.join(dirpath, name)
            with open(full, "rb") as f:
                out[os.path.relpath(full, path)] = f.read()
    return out


def normal_file(name: str, data: bytes):
    if name in ("session", "session.bak"):
        return normal_state(data)
    if name == "journal":
        return normal_journal(data)
    if name == "lock":
        return normal_lock(data)
    if name.endswith(".record.gz"):
        return normal_records(data)
    return data  # raw io-log files: byte for byte


def compare_sessions(old: str, new: str) -> None:
    old_files, new_files = tree_files(old), tree_files(new)
    # Every attempt now has both raw files, an empty one for a stream without output (287dc69 "every attempt
    # gets both .stdout and .stderr ... as Checkbox writes it"): b7b15f0 wrote only non-empty ones.
    for name in sorted(set(new_files) - set(old_files)):
        stem, _, stream = name.rpartition(".")
        assert stream in RAW_STREAMS and new_files[name] == b"" and stem + ".record.gz" in old_files, name
        del new_files[name]
    assert sorted(new_files) == sorted(old_files)
    for name in sorted(old_files):
        assert normal_file(name, new_files[name]) == normal_file(name, old_files[name]), name
    for name in ("session", "session.bak"):
        if name in old_files:
            old_version = json.loads(gzip.decompress(old_files[name]))["version"]
            new_version = json.loads(gzip.decompress(new_files[name]))["version"]
            # version 3: see normal_attempt; version 4 adds an attempt's "answered" (a job that needs a person),
            # left out when null: no attempt of these batches has one.
            # version 5 adds ran_on (the Dask worker), left out for jobs run on the runner's machine
            assert (old_version, new_version) == (2, 5), name


# -- the test ------------------------------------------------------------------------------------------


def test_golden_data_is_what_the_batch_writes():
    """The golden sessions are what their batches leave: every job of batch.pxu has a result, and the
    interrupted one has journaled the start of runner-dies and no result for it."""
    finished = normal_state(tree_files(os.path.join(GOLDEN, "finished.session"))["session"])["session"]
    outcomes = {job: [a["outcome"] for a in attempts] for job, attempts in finished["results"].items()}
    assert outcomes == {"device": ["pass"], "ok": ["pass"], "bad": ["fail"], "needs-tpu": ["skipped-resource"],
                        "needs-disk": ["pass"]}  # fmt: skip
    journal = normal_journal(tree_files(os.path.join(GOLDEN, "interrupted.session"))["journal"])
    assert [(r["op"], r.get("job")) for r in journal[-2:]] == [("result", "needs-disk"), ("start", "runner-dies")]


def test_a_run_writes_the_same_bytes_as_before_the_refactoring(tmp_path):
    for name in RUNS:
        repository = tmp_path / name
        repository.mkdir()
        new = run_batch(REPO_ROOT, str(repository), name)
        compare_sessions(os.path.join(GOLDEN, name), new)


# -- regenerating ----------------------------------------------------------------------------------------


def regenerate(old_code_root: str) -> None:
    """Replace the golden sessions by what the code at *old_code_root* writes (see the module docstring)."""
    for name in RUNS:
        with tempfile.TemporaryDirectory() as repository:
            written = run_batch(os.path.abspath(old_code_root), repository, name)
            target = os.path.join(GOLDEN, name)
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(written, target)
            print(f"{target} <- {written}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} OLD_CHECKOUT  (the plainbox-like tree at b7b15f0)")
    regenerate(sys.argv[1])
