"""A session's io-logs against its state: which attempts use each log, and what each log holds.

:func:`scan_log` reads a ``.record.gz`` file record by record (where it is cut
or damaged) and compares the raw ``.stdout``/``.stderr`` files with it;
:func:`log_uses` maps each log name of a state to the attempts that use it.
``check`` reports from these, ``repair`` rewrites logs from them.
"""

from __future__ import annotations

import os
from typing import Any

import attrs

from plainbox_like.maintain.salvage import RESULT_LOST
from plainbox_like.store import iolog
from plainbox_like.store.model import Attempt, SessionState
from plainbox_like.store.names import RECORD_SUFFIX
from plainbox_like.store.paths import open_regular


@attrs.define
class LogUse:
    """An attempt whose log is a given file."""

    job_id: str
    attempt: int
    #: The result, ``None`` for a job still marked as running.
    result: Attempt | None


@attrs.define
class RawCompare:
    """How one raw file (``.stdout``/``.stderr``) compares with the records of its stream."""

    path: str
    exists: bool = False
    size: int = 0
    #: Bytes the records hold for this stream.
    expected: int = 0
    #: Offset of the first differing byte.
    differs_at: int | None = None
    #: The file ended before the records' data did (and matched up to there).
    short: bool = False
    #: Why it cannot be read (not a regular file, no permission), if it cannot.
    problem: str | None = None

    @property
    def status(self) -> str:
        """``equal``, ``missing``, ``unreadable``, ``differs``, ``shorter`` or ``longer``."""
        if self.problem is not None:
            return "unreadable"
        if not self.exists:
            return "equal" if self.expected == 0 else "missing"
        if self.differs_at is not None:
            return "differs"
        if self.short or self.size < self.expected:
            return "shorter"
        if self.size > self.expected:
            return "longer"
        return "equal"


@attrs.define
class LogScan:
    """A ``.record.gz`` read through, and its raw files compared with it."""

    record_path: str
    exists: bool = False
    records: int = 0
    complete: bool = False
    problem: str | None = None
    raw: dict[str, RawCompare] = attrs.Factory(dict)

    @property
    def raw_extra(self) -> int:
        """Bytes the raw files hold beyond the records, where they extend them exactly."""
        return sum(r.size - r.expected for r in self.raw.values() if r.status == "longer")


def stem_of(record_path: str) -> str:
    return record_path[: -len(RECORD_SUFFIX)] if record_path.endswith(RECORD_SUFFIX) else record_path


def scan_log(record_path: str, compare_raw: bool = True) -> LogScan:
    """Read *record_path* record by record, comparing each stream's data with its raw file as it goes.

    Memory stays bounded by one record, however large the files.
    """
    scan = LogScan(record_path, exists=os.path.exists(record_path))
    stem = stem_of(record_path)
    handles: dict[str, Any] = {}
    for stream in iolog.STREAMS:
        raw = scan.raw[stream] = RawCompare(f"{stem}.{stream}")
        if compare_raw:
            try:
                handles[stream] = open_regular(raw.path)
                raw.exists = True
            except FileNotFoundError:
                pass
            except OSError as exc:
                raw.exists = True
                raw.problem = f"cannot read: {exc.strerror}"
    try:
        if scan.exists:
            reader = iolog.RecordReader(record_path)
            for record in reader:
                scan.records += 1
                raw = scan.raw[record.stream]
                handle = handles.get(record.stream)
                if handle is not None and raw.differs_at is None and not raw.short:
                    got = handle.read(len(record.data))
                    if got != record.data:
                        same = _common_prefix(got, record.data)
                        if same < len(got):
                            raw.differs_at = raw.expected + same
                        else:
                            raw.short = True
                raw.expected += len(record.data)
            scan.complete, scan.problem = reader.complete, reader.problem
        for stream, handle in handles.items():
            scan.raw[stream].size = os.fstat(handle.fileno()).st_size
    finally:
        for handle in handles.values():
            handle.close()
    return scan


def _common_prefix(a: bytes, b: bytes) -> int:
    n = min(len(a), len(b))
    lo, hi = 0, n
    while lo < hi:  # binary search on slices: fast for large equal prefixes
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def log_uses(state: SessionState) -> dict[str, list[LogUse]]:
    """``io_log_filename`` -> the attempts that name it (results and running jobs)."""
    uses: dict[str, list[LogUse]] = {}
    for job_id, attempts in state.results.items():
        for attempt in attempts:
            if attempt.io_log_filename:
                uses.setdefault(attempt.io_log_filename, []).append(LogUse(job_id, attempt.attempt, attempt))
    for job_id, running in state.running_jobs.items():
        if running.io_log_filename:
            uses.setdefault(running.io_log_filename, []).append(LogUse(job_id, running.attempt, None))
    return uses


def _interrupted_comments() -> frozenset[str]:
    from plainbox_like.run import batch, settle

    return frozenset(
        {settle.STOPPED_WHILE_RUNNING, batch.INTERRUPTED, batch.STOPPED_BY_REQUEST, settle.NORETURN_STOPPED, RESULT_LOST}
    )


def _cut_is_expected(uses: list[LogUse], interrupted: frozenset[str]) -> bool:
    """Whether a damaged log belongs to an attempt that was stopped while it ran (a noreturn job's, too)."""
    from plainbox_like.run.settle import NORETURN_PREFIX

    return any(
        u.result is None or u.result.comments in interrupted or (u.result.comments or "").startswith(NORETURN_PREFIX)
        for u in uses
    )


def _describe(uses: list[LogUse]) -> str:
    first = uses[0]
    return f"job {first.job_id!r} attempt {first.attempt}"


def _log_path(session_path: str, name: str) -> str:
    """Where log *name* is; only for names :func:`confine.outside_reason` accepted (relative, inside)."""
    return os.path.join(session_path, name)


def _rel(session_path: str, path: str) -> str:
    try:
        rel = os.path.relpath(path, session_path)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel
