"""Plain helper functions shared by the test modules (fixtures live in ``conftest.py``).

Each exists once here so that a change of, say, how long a test may wait is made in one place. The session
factory below builds sessions in every state the tests need (the conftest fixtures ``finished_session``,
``running_session``, ``interrupted_session`` and ``checkbox_session`` are its common cases):

* :func:`written_session`: through the writer alone, no process run (fast; finished, incomplete, running or
  interrupted, with chosen outcomes, metadata and output);
* :func:`run_session`, :func:`journaled_run`, :func:`interrupted_run`: real jobs run by the batch runner;
* :func:`real_checkbox_session` (written by real Checkbox, ``tests/data/checkbox``), :func:`plainbox_session`
  (each Plainbox state version) and :func:`logged_checkbox_session` (a Checkbox session with its io-logs).
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import shutil
import subprocess
import sys
import time
from typing import Any, Callable, Iterable, Mapping, TypeVar

from plainbox_like.store.runconfig import RunConfig
from plainbox_like.run import prepare
from plainbox_like.define import plan as planning
from plainbox_like.run import batch
from plainbox_like.store import iolog
from plainbox_like.store.iolog import RecordReader
from plainbox_like.maintain.repair import QUARANTINE_DIR
from plainbox_like.store.model import Attempt
from plainbox_like.store.names import LOCK_FILE
from plainbox_like.store.repository import SessionRepository
from plainbox_like.store.writer import SessionWriter

T = TypeVar("T")


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped (nobody has it, until the pids wrap)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def wait_until(predicate: Callable[[], T], timeout: float = 30.0, interval: float = 0.02, what: str | None = None) -> T:
    """Poll *predicate* until it returns a true value or *timeout* seconds pass; returns its last value.

    With *what*, a timeout raises ``AssertionError`` naming it instead of returning the false value.
    The timeout is a deadline for a slow machine, not a delay: a satisfied predicate returns at once.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    value = predicate()
    if not value and what is not None:
        raise AssertionError(f"timed out after {timeout} s waiting for {what}")
    return value


def only_session(root) -> str:
    """The path of the one session in the repository at *root* (fails if there is not exactly one)."""
    paths = SessionRepository(str(root)).session_paths()
    assert len(paths) == 1, paths
    return paths[0]


def session_files(path: str) -> dict[str, bytes]:
    """Every file of a session (relative name -> bytes), without quarantine/ and the lock."""
    out = {}
    for root, dirs, names in os.walk(path):
        dirs[:] = [d for d in dirs if not (root == path and d == QUARANTINE_DIR)]
        for name in names:
            full = os.path.join(root, name)
            rel = os.path.relpath(full, path)
            if rel != LOCK_FILE:
                with open(full, "rb") as f:
                    out[rel] = f.read()
    return out


def quarantined_files(path: str) -> dict[str, bytes]:
    """Files in every quarantine/<timestamp>/ (relative to it), without repair.log."""
    out = {}
    root = os.path.join(path, QUARANTINE_DIR)
    if not os.path.isdir(root):
        return out
    for stamp in os.listdir(root):
        base = os.path.join(root, stamp)
        for dirpath, _dirs, names in os.walk(base):
            for name in names:
                full = os.path.join(dirpath, name)
                rel = os.path.relpath(full, base)
                if rel != "repair.log":
                    with open(full, "rb") as f:
                        out[rel] = f.read()
    return out


def log_path(session_path: str, attempt, stream: str) -> str:
    """The file of *attempt*'s io-log for *stream* (``record`` is the gzipped record log)."""
    assert attempt.io_log_filename and attempt.io_log_filename.endswith(".record.gz")
    stem = attempt.io_log_filename[: -len(".record.gz")]
    return os.path.join(session_path, stem + ("." + stream if stream != "record" else ".record.gz"))


def records(session_path: str, attempt) -> list:
    """Every record of *attempt*'s record log, which must be complete."""
    reader = RecordReader(log_path(session_path, attempt, "record"))
    got = list(reader)
    assert reader.complete, reader.problem
    return got


# -- the session factory: sessions written through the writer ---------------------------------------

#: How :func:`written_session` leaves its writer: closed (the default), open (a live writer holding the
#: lock: a running session; the caller closes it) or abandoned with a job started (interrupted: a job left
#: running, nobody holding the lock).
CLOSE, OPEN, ABANDON = "close", "open", "abandon"


def written_session(
    repo: SessionRepository,
    title: str | None = "done",
    *,
    plan: Iterable[str] = ("a",),
    outcomes: Mapping[str, str] | Iterable[tuple[str, str]] = (),
    complete: bool = True,
    finished: bool = True,
    created: float | None = None,
    output: bytes | list[bytes] | None = None,
    duration: float | None = None,
    runner: dict | None = None,
    units: str | None = None,
    end: str = CLOSE,
    **metadata: Any,
) -> SessionWriter:
    """A session written through :class:`SessionWriter` alone, no job run; returns its writer.

    *plan* is the desired job list (checksums ``sum-<id>``), or with *units* the jobs of that .pxu file as
    ``plainbox-like run`` plans them. *outcomes* (job -> outcome, in order) become results, return code 0
    for a pass and 1 otherwise; with *output* (bytes, or chunks written as one record each) the first of
    them gets an io-log. *complete* clears the incomplete flag, with the finish time if *finished*.
    *metadata* goes to ``repo.create`` (tags, parent_session, durability, ...); *runner* replaces the
    runner recorded (as if another process ran it); *end*: :data:`CLOSE`, :data:`OPEN` or :data:`ABANDON`.
    """
    outcomes = dict(outcomes)
    if units is not None:
        config = RunConfig(sources=[units], durability=metadata.pop("durability", "flush"))
        writer = prepare.start_session(repo, config, title=title).writer
        if metadata:
            writer.update_metadata(**metadata)
        plan = writer.state.desired_job_list
    else:
        writer = repo.create(title=title, **metadata)
        plan = list(plan)
        writer.set_plan({job: f"sum-{job}" for job in plan}, plan)
    if runner is not None:
        writer.update_metadata(runner=runner)
    for i, (job, outcome) in enumerate(outcomes.items()):
        name = None
        if output is not None and i == 0:
            log, name = writer.new_log(job, 1)
            writer.job_started(job, 1, name)
            for chunk in [output] if isinstance(output, bytes) else output:
                log.write("stdout", chunk)
            log.close()
        result = Attempt(outcome, return_code=0 if outcome == "pass" else 1, execution_duration=duration,
                         io_log_filename=name)  # fmt: skip
        writer.job_finished(job, result)
    fields: dict[str, Any] = {}
    if complete:
        fields["flags"] = []
        if finished:
            fields["finished"] = time.time()
    if created is not None:
        fields["created"] = created
    if fields:
        writer.update_metadata(**fields)
    if end == CLOSE:
        writer.close()
    elif end == ABANDON:
        job = next(j for j in plan if j not in outcomes)
        writer.job_started(job, 1, None)
        writer.abandon()
    else:
        assert end == OPEN, end
    return writer


# -- sessions of real jobs run by the batch runner ------------------------------------------------

#: Jobs with output on both streams, a larger output, and none at all.
COMMANDS = ["printf 'hello\\n'; printf 'warn\\n' >&2", "seq 1 3000", "true"]


def run_session(root: str, commands: Iterable[str] = COMMANDS) -> str:
    """A session run to the end and closed: snapshot, session.bak, empty journal; returns its path."""
    prepared = prepare.start_session(SessionRepository(root), RunConfig(commands=list(commands)))
    prepare.run_prepared(prepared)
    return prepared.writer.path


def journaled_run(root: str, commands: Iterable[str] = COMMANDS) -> str:
    """A session whose writer ran every job and then died: first snapshot only, every change in the journal."""
    prepared = prepare.start_session(SessionRepository(root), RunConfig(commands=list(commands)))
    assert batch.BatchRunner(prepared.writer, prepared.plan).run() is False
    prepared.writer.abandon()
    return prepared.writer.path


def interrupted_run(root: str) -> str:
    """Job c1 ran; the writer died while c2 ran (its log cut, its start journaled, no result)."""
    config = RunConfig(commands=["echo a", "echo started; sleep 30"])
    prepared = prepare.start_session(SessionRepository(root), config)
    writer = prepared.writer
    first = planning.build_plan([prepared.plan.jobs["c1"]])
    assert batch.BatchRunner(writer, first).run() is False
    log, name = writer.new_log("c2", 1)
    writer.job_started("c2", 1, name)
    log.write("stdout", b"started\n")
    log.flush()
    log.write("stdout", b"after the last flush\n")  # raw file only: not flushed into the records
    os.close(log._record_fd)  # the process dies: no gzip trailer
    for fd in log._raw_fds.values():
        os.close(fd)
    writer.abandon()
    return writer.path


# -- sessions written by Checkbox / Plainbox ------------------------------------------------------------

#: A real Checkbox 1.18.1 session of the tutorial-base test plan (its ``session`` file).
CHECKBOX_SESSION = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "checkbox", "tutorial-base.session.gz")


def real_checkbox_session(directory: str) -> str:
    """A session directory holding the real Checkbox session :data:`CHECKBOX_SESSION` (no io-logs kept)."""
    os.makedirs(os.path.join(directory, "io-logs"))
    shutil.copyfile(CHECKBOX_SESSION, os.path.join(directory, "session"))
    return directory


def _record_gz(records) -> bytes:
    return gzip.compress(
        b"".join(json.dumps([delay, stream, base64.b64encode(data).decode()]).encode() + b"\n" for delay, stream, data in records)
    )


def logged_checkbox_session(directory: str) -> str:
    """A Checkbox session directory as Checkbox writes it, with its io-logs (state version 6, absolute log names)."""
    logs = os.path.join(directory, "io-logs")
    os.makedirs(logs)
    outputs = {
        "com.canonical.certification__cpu_info": [(0.0, "stdout", b"model name: x\n"), (0.1, "stderr", b"w\n")],
        "com.canonical.certification__silent": [],
    }
    for slug, records in outputs.items():
        with open(os.path.join(logs, slug + ".record.gz"), "wb") as f:
            f.write(_record_gz(records))
        for stream in iolog.STREAMS:
            with open(os.path.join(logs, f"{slug}.{stream}"), "wb") as f:
                f.write(b"".join(d for _t, s, d in records if s == stream))
    old = "/var/tmp/checkbox-ng/sessions/pbox.session/io-logs/"

    def result(slug, outcome):
        return {"outcome": outcome, "comments": None, "return_code": 0, "execution_duration": 0.5,
                "io_log_filename": old + slug + ".record.gz"}

    session = {
        "jobs": {"com.canonical.certification::cpu_info": "a" * 64, "com.canonical.certification::silent": "b" * 64},
        "results": {
            "com.canonical.certification::cpu_info": [result("com.canonical.certification__cpu_info", "pass")],
            "com.canonical.certification::silent": [result("com.canonical.certification__silent", "pass")],
        },
        "desired_job_list": ["com.canonical.certification::cpu_info", "com.canonical.certification::silent"],
        "mandatory_job_list": [],
        "metadata": {"title": "checkbox", "flags": [], "running_job_name": None, "app_id": "x", "app_blob": ""},
    }
    with open(os.path.join(directory, "session"), "wb") as f:
        f.write(gzip.compress(json.dumps({"version": 6, "session": session}).encode()))
    return directory


#: Where a moved Plainbox session once was (its absolute log names point there).
OLD_ROOT = "/var/tmp/checkbox-ng/sessions/session_title-2016-02-03T04.05.06.session"
APP_BLOB = base64.b64encode(b'{"testplan_id": "com.canonical.certification::smoke"}').decode("ascii")
INLINE_LOG = [
    [0.0, "stdout", base64.b64encode(b"hello\n").decode()],
    [0.25, "stderr", base64.b64encode(b"\x00\xffwarn").decode()],
]


def _plainbox_result(version, session_dir, job_log, outcome="pass", **extra):
    result = {"outcome": outcome, "comments": None, "return_code": 0, "execution_duration": 1.5}
    if version == 1:
        result["io_log"] = INLINE_LOG
    elif job_log is not None:
        result["io_log_filename"] = job_log
    result.update(extra)
    return result


def plainbox_session(directory, version: int) -> dict:
    """Write a Plainbox-format session directory as Plainbox (version *version*) would."""
    directory = str(directory)
    os.makedirs(os.path.join(directory, "io-logs"))
    for name in ("com.canonical.certification__cpu_info.record.gz", "local.record.gz", "inside.record.gz"):
        with gzip.open(os.path.join(directory, "io-logs", name), "wb") as f:
            f.write(b'[0.0,"stdout","aGkK"]\n')
    jobs = {
        "com.canonical.certification::cpu_info": "a" * 64,
        "com.canonical.certification::local": "b" * 64,
        "com.canonical.certification::inside": "c" * 64,
        "com.canonical.certification::gone": "d" * 64,
        "com.canonical.certification::never": "e" * 64,
    }
    results = {
        # Moved session: absolute name under the old location, the file is in our io-logs.
        "com.canonical.certification::cpu_info": [
            _plainbox_result(version, directory, OLD_ROOT + "/io-logs/com.canonical.certification__cpu_info.record.gz", "fail", return_code=1),
            _plainbox_result(version, directory, OLD_ROOT + "/io-logs/com.canonical.certification__cpu_info.record.gz"),
        ],
        "com.canonical.certification::local": [_plainbox_result(version, directory, "io-logs/local.record.gz")],
        "com.canonical.certification::inside": [
            _plainbox_result(version, directory, os.path.join(directory, "io-logs", "inside.record.gz"))
        ],
        "com.canonical.certification::gone": [
            _plainbox_result(version, directory, "/nowhere/io-logs/gone.record.gz", "crash", return_code=None, execution_duration=None)
        ],
        "com.canonical.certification::never": [
            {"outcome": None, "comments": "skipped by user", "return_code": None, "execution_duration": None}
        ],
    }
    metadata = {"title": f"session v{version}", "flags": ["incomplete"], "running_job_name": "com.canonical.certification::never"}
    if version >= 2:
        metadata["app_blob"] = APP_BLOB
    if version >= 3:
        metadata["app_id"] = "com.canonical.certification:checkbox"
    if version >= 7:
        metadata["custom_joblist"] = False
        metadata["rejected_jobs"] = []
    session = {
        "jobs": jobs,
        "results": results,
        "desired_job_list": list(jobs),
        "metadata": metadata,
    }
    if version >= 5:
        session["mandatory_job_list"] = ["com.canonical.certification::cpu_info"]
    with open(os.path.join(directory, "session"), "wb") as f:
        f.write(gzip.compress(json.dumps({"version": version, "session": session}).encode("utf-8")))
    return session


# -- a session with every kind of job a report shows (exports, log, html) --------------------------

#: Every byte value: NULs, escapes, invalid UTF-8.
ALL_BYTES = bytes(range(256)) * 2
HOSTILE = b'<script>alert("x")</script> & </pre></details><img src=x onerror=alert(1)>\n'
ANSI = b"\x1b[31mred\x1b[0m and \x1b[1mbold\x1b[0m\n"

CPU = "com.example::cpu/info"
DISK = "com.example::disk/smart"
GPU = "com.example::gpu/render"
GPU_DEP = "com.example::gpu/needs-render"
WIFI = "com.example::wifi/scan"
BINARY = "binary-dump"
FLAKY = "flaky"
NEVER = "never-run"
PLAN = [CPU, DISK, GPU, GPU_DEP, WIFI, BINARY, FLAKY, NEVER]


def record_attempt(writer, job_id, chunks, attempt=1, **result):
    """Run *job_id* as far as the state goes: its log gets *chunks* ``(stream, bytes)``."""
    log, name = writer.new_log(job_id, attempt, started=0.0, clock=lambda: 0.0)
    writer.job_started(job_id, attempt, name)
    for i, (stream, data) in enumerate(chunks, start=1):
        log.write(stream, data, now=0.1 * i)
    log.close()
    result.setdefault("outcome", "pass")
    result.setdefault("return_code", 0 if result["outcome"] == "pass" else None)
    started = writer.state.metadata.created + len(writer.state.results)
    writer.job_finished(job_id, Attempt(io_log_filename=name, attempt=attempt, started=started, **result))
    return name


def report_session(repo: SessionRepository, close: bool = True):
    """A session with every kind of job a report has to show."""
    writer = repo.create(title="Nightly <hardware> checks & more", tags=["nightly", "x86"])
    writer.set_plan({job: f"sum-{i}" for i, job in enumerate(PLAN)}, PLAN)
    record_attempt(
        writer,
        CPU,
        [("stdout", b"model name: Example CPU @ 3.00GHz\n"), ("stdout", b"cores: 8\nflags: sse4 avx2\n")],
        execution_duration=1.25,
    )
    record_attempt(
        writer,
        DISK,
        [
            ("stdout", b"checking /dev/sda\n"),
            ("stderr", b"SMART overall-health: FAILED\n"),
            ("stdout", b"reallocated sectors: 120\n"),
            ("stderr", b"replace the disk\n"),
        ],
        outcome="fail",
        return_code=3,
        execution_duration=4.5,
        comments="SMART status is FAILING",
    )
    record_attempt(
        writer,
        GPU,
        [("stdout", ANSI), ("stderr", b"Segmentation fault\n")],
        outcome="crash",
        return_code=-11,
        execution_duration=0.75,
        comments="killed by signal SIGSEGV",
    )
    writer.job_finished(
        GPU_DEP, Attempt("skipped-dependency", skip_reason=f"dependency {GPU} did not pass (outcome crash)")
    )
    writer.job_finished(WIFI, Attempt("skip", skip_reason="no wireless device"))
    record_attempt(writer, BINARY, [("stdout", ALL_BYTES), ("stderr", HOSTILE)], execution_duration=0.5)
    record_attempt(writer, FLAKY, [("stdout", b"try 1\n")], outcome="fail", return_code=1, execution_duration=2.0)
    record_attempt(writer, FLAKY, [("stdout", b"try 2\n")], attempt=2, execution_duration=3.0)
    if close:
        writer.update_metadata(flags=[], finished=writer.state.metadata.created + 12.5)
        writer.close()
    return writer
