"""Plain helper functions shared by the test modules (fixtures live in ``conftest.py``).

Each exists once here so that a change of, say, how long a test may wait is made in one place.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Callable, TypeVar

from plainbox_like.store.iolog import RecordReader
from plainbox_like.store.repository import SessionRepository

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
