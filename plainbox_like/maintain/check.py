"""Checking session directories without writing anything (``plainbox-like check``).

:func:`check_session` lists a session's *problems* (things that stop the
session from loading, resuming or showing its logs faithfully) and *notes*
(things worth knowing that need no repair: a live writer, a log cut by an
interruption, an orphan file). It previews what :mod:`.repair` would rebuild.
Plainbox/Checkbox session directories can be checked but never repaired.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

import attrs

from plainbox_like.errors import SessionNotFound
from plainbox_like.maintain.logscan import (
    _cut_is_expected,
    _describe,
    _interrupted_comments,
    _log_path,
    _rel,
    log_uses,
    scan_log,
    stem_of,
)
from plainbox_like.maintain.salvage import Rebuild, _stale_temporaries, rebuild_state
from plainbox_like.read.summary import CREATING_GRACE  # a directory without a state this young may be being made
from plainbox_like.store import confine, locks, repository
from plainbox_like.store.names import (
    BACKUP_FILE,
    IO_LOGS,
    JOURNAL_FILE,
    LOCK_FILE,
    RECORD_SUFFIX,
    SHARE_DIR,
    STATE_FILE,
)
from plainbox_like.store.paths import session_id_of

PROBLEM = "problem"
NOTE = "note"


# -- findings -----------------------------------------------------------------------


@attrs.frozen
class Finding:
    """One thing found about one file of a session.

    *file* is relative to the session directory (``session``, ``journal``,
    ``io-logs/x.record.gz`` ...), *kind* a stable machine-readable name.
    """

    file: str
    message: str
    kind: str

    def as_dict(self) -> dict[str, str]:
        return {"file": self.file, "kind": self.kind, "message": self.message}


@attrs.define
class SessionCheck:
    """The result of checking one session directory."""

    id: str
    path: str
    origin: str | None = None
    problems: list[Finding] = attrs.Factory(list)
    notes: list[Finding] = attrs.Factory(list)

    @property
    def healthy(self) -> bool:
        return not self.problems

    def problem(self, file: str, message: str, kind: str) -> None:
        self.problems.append(Finding(file, message, kind))

    def note(self, file: str, message: str, kind: str) -> None:
        self.notes.append(Finding(file, message, kind))

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "path": self.path,
            "origin": self.origin,
            "healthy": self.healthy,
            "problems": [f.as_dict() for f in self.problems],
            "notes": [f.as_dict() for f in self.notes],
        }


# -- checking ---------------------------------------------------------------------------


def _being_created(path: str, rb: Rebuild, live: bool) -> bool:
    """No state file yet, and nothing that only an existing session has: probably being created."""
    if rb.snapshot_data is not None or rb.backup_exists or rb.journal.size:
        return False
    try:
        if os.listdir(os.path.join(path, IO_LOGS)):
            return False
    except OSError:
        pass
    if live:
        return True
    try:
        return time.time() - os.stat(path).st_mtime < CREATING_GRACE
    except OSError:
        return False


def check_session(path: str, held: set | None = None) -> SessionCheck:
    """Check the session directory at *path*; reads only, never raises for a damaged session."""
    path = os.path.abspath(path)
    report = SessionCheck(session_id_of(path), path)
    if not os.path.isdir(path):
        report.problem(".", "not a directory", "not-a-session")
        return report
    live = locks.writer_alive(path, held)
    holder = locks.lock_holder(path)
    rb = rebuild_state(path)
    report.origin = rb.origin
    ours = rb.ours
    if live and holder is not None:
        report.note(
            LOCK_FILE,
            f"being written by pid {holder[0]} on {holder[1]}: what follows may be out of date",
            "being-written",
        )
    # The snapshot.
    if rb.snapshot_data is None:
        if _being_created(path, rb, live):
            report.note(STATE_FILE, "not written yet: the session is being created", "being-created")
            return report
        report.problem(STATE_FILE, "state file is missing", "snapshot-missing")
    elif rb.snapshot_error is not None:
        report.problem(STATE_FILE, rb.snapshot_error.problem, "snapshot-corrupt")
    if rb.origin is None:
        report.note(
            ".",
            "nothing tells whether this is a plainbox-like or a Checkbox/Plainbox session "
            "(no journal, no lock, no readable snapshot)",
            "unknown-origin",
        )
        return report
    for part in confine.symlinked_parts(path):
        kind = "symlinked-directory" if part.is_dir else "symlinked-file"
        report.problem(
            part.name,
            f"{part.describe()}: nothing writes through it, repair neither (put what it points to in its place)",
            kind,
        )
    if ours:
        _check_our_files(report, rb, live, holder)
    if rb.state is not None:
        _check_logs(report, rb, live)
    return report


def _check_our_files(report: SessionCheck, rb: Rebuild, live: bool, holder: tuple[int, str] | None) -> None:
    path = rb.path
    if not rb.snapshot_ok:
        how = " + ".join(rb.recovered)
        lost = "; lost: " + "; ".join(rb.losses) if rb.losses else ""
        report.note(STATE_FILE, f"repair would rebuild it from {how}{lost}", "rebuild-preview")
    if rb.backup_error is not None:
        report.problem(BACKUP_FILE, rb.backup_error.problem, "backup-corrupt")
    # The journal.
    scan = rb.journal
    if scan.unreadable:
        report.problem(JOURNAL_FILE, f"{scan.unreadable} (the session cannot be loaded)", "journal-unreadable")
    elif not scan.exists:
        report.problem(JOURNAL_FILE, "missing (every plainbox-like session has one)", "journal-missing")
    for line, problem in scan.bad:
        report.problem(
            JOURNAL_FILE,
            f"line {line}: {problem}, followed by good lines (the session cannot be loaded)",
            "journal-bad-line",
        )
    if scan.torn:
        line, problem = scan.torn[0]
        more = f" and {len(scan.torn) - 1} more damaged line(s)" if len(scan.torn) > 1 else ""
        message = f"torn tail: line {line}: {problem}{more} (ignored when loading)"
        if live:  # possibly a line being appended at this very moment
            report.note(JOURNAL_FILE, message + "; the writer may be appending it right now", "journal-torn")
        else:
            report.problem(JOURNAL_FILE, message, "journal-torn")
    if rb.snapshot_ok and not scan.bad:
        for first, last, line in rb.gaps:
            report.problem(
                JOURNAL_FILE,
                f"line {line}: sequence gap: expected {first}, found {last + 1} (the session cannot be loaded)",
                "journal-gap",
            )
    for line, seq, error in rb.unapplied:
        report.problem(
            JOURNAL_FILE, f"line {line}: change seq {seq} cannot be applied: {error}", "journal-unapplicable"
        )
    # Temporaries and directories.
    for name in _stale_temporaries(path):
        if live:
            report.note(name, "a temporary file (the writer may be using it right now)", "temporary")
        else:
            report.problem(name, "stale temporary file left by an interrupted write", "stale-temporary")
    for sub in (IO_LOGS, SHARE_DIR):
        if not os.path.isdir(os.path.join(path, sub)):
            report.problem(sub, "directory is missing", "directory-missing")
    # The lock and the runner.
    try:
        os.close(confine.open_session_file(path, LOCK_FILE))
    except FileNotFoundError:
        pass
    except OSError as exc:
        report.problem(LOCK_FILE, f"cannot read: {exc.strerror} (no writer can lock the session)", "lock-unusable")
    state = rb.state
    if live or state is None:
        return
    here = socket.gethostname()
    if holder is not None and holder[1] != here:
        report.note(
            LOCK_FILE,
            f"last written by pid {holder[0]} on host {holder[1]}: this host cannot tell whether it still runs",
            "foreign-writer",
        )
        return
    if state.running_jobs:
        jobs = sorted(state.running_jobs)
        names = ", ".join(jobs[:5]) + (f" and {len(jobs) - 5} more" if len(jobs) > 5 else "")
        who = f"the writer (pid {holder[0]} on {holder[1]})" if holder else "the writer"
        report.problem(
            LOCK_FILE,
            f"interrupted run: {who} is gone while {len(jobs)} job(s) were running ({names}): resume or cleanup",
            "interrupted-run",
        )
    elif holder is not None:
        report.note(
            LOCK_FILE,
            f"the last writer (pid {holder[0]} on {holder[1]}) did not close the session; no job was running",
            "unclean-stop",
        )


def _check_logs(report: SessionCheck, rb: Rebuild, live: bool) -> None:
    path, state = rb.path, rb.state
    ours = rb.ours
    interrupted = _interrupted_comments()
    uses = log_uses(state)
    referenced: set[str] = set()
    seen: set[str] = set()
    for name, users in uses.items():
        outside = confine.log_files_outside(path, name)
        if outside is not None:
            field = confine.log_field(users[0].job_id, users[0].attempt)
            report.problem(outside[0], f"{field} {outside[1]}: refused, nothing is read through it", "path-outside")
            continue
        record_path = os.path.normpath(_log_path(path, name))
        if record_path in seen:
            continue
        seen.add(record_path)
        stem = stem_of(record_path)
        referenced.update({record_path, f"{stem}.stdout", f"{stem}.stderr"})
        running_live = live and any(u.result is None for u in users)
        if running_live:
            continue  # being written right now: cut and behind its raw files by design
        rel = _rel(path, record_path)
        scan = scan_log(record_path)
        if not scan.exists:
            raws = [r for r in scan.raw.values() if r.exists]
            extra = f" (its raw files are there: {', '.join(_rel(path, r.path) for r in raws)})" if raws else ""
            report.problem(rel, f"missing: the log of {_describe(users)}{extra}", "log-missing")
            continue
        expected_cut = _cut_is_expected(users, interrupted)
        if not scan.complete:
            extra = f"; the raw files hold {scan.raw_extra} more byte(s)" if scan.raw_extra else ""
            what = f"{scan.problem} ({scan.records} complete record(s) readable{extra})"
            if expected_cut:
                report.note(rel, f"{what}: expected, {_describe(users)} was stopped while it ran", "log-cut")
            else:
                report.problem(rel, what, "log-damaged")
        for stream, raw in scan.raw.items():
            status = raw.status
            raw_rel = _rel(path, raw.path)
            if status == "equal" or (status == "longer" and not scan.complete):
                continue
            if status == "missing":
                message = f"missing, while the records hold {raw.expected} byte(s) of {stream}"
                if ours:
                    report.problem(raw_rel, message, "raw-missing")
                else:
                    report.note(raw_rel, message, "raw-missing")
                continue
            if status == "unreadable":
                report.problem(raw_rel, raw.problem, "raw-unreadable")
                continue
            if status == "differs":
                message = f"differs from the records from byte {raw.differs_at} on"
            elif status == "shorter":
                message = f"shorter than the records: {raw.size} of {raw.expected} byte(s)"
            else:
                message = f"longer than the records: {raw.size} byte(s), the records hold {raw.expected}"
            report.problem(raw_rel, message, "raw-differs")
    if ours:
        _check_orphans(report, rb, referenced)


def _check_orphans(report: SessionCheck, rb: Rebuild, referenced: set[str]) -> None:
    logs_dir = os.path.join(rb.path, IO_LOGS)
    try:
        names = sorted(os.listdir(logs_dir))
    except OSError:
        return
    stems: dict[str, list[str]] = {}
    for name in names:
        if name.startswith("."):
            continue
        full = os.path.normpath(os.path.join(logs_dir, name))
        if full in referenced:
            continue
        for suffix in (RECORD_SUFFIX, ".stdout", ".stderr"):
            if name.endswith(suffix):
                stems.setdefault(name[: -len(suffix)], []).append(name)
                break
    for stem, files in stems.items():
        report.note(
            f"{IO_LOGS}/{stem}{RECORD_SUFFIX}" if f"{stem}{RECORD_SUFFIX}" in files else f"{IO_LOGS}/{files[0]}",
            "not the log of any attempt (left by a job start that was never recorded, or by lost changes)",
            "orphan-log",
        )


def check_repository(repo: repository.SessionRepository) -> list[SessionCheck]:
    """Check every session of *repo*, in id order."""
    held = locks.held_flocks()
    return [check_session(p, held) for p in sorted(repo.session_paths(), key=session_id_of)]


def looks_like_session(path: str) -> bool:
    """Whether directory *path* has any file a session (ours or Plainbox's) has."""
    return os.path.isdir(path) and any(
        os.path.exists(os.path.join(path, name))
        for name in (STATE_FILE, BACKUP_FILE, JOURNAL_FILE, LOCK_FILE, IO_LOGS)
    )


def resolve(repo: repository.SessionRepository, ref: str) -> str:
    """Like :meth:`SessionRepository.resolve`, but also finds a session directory whose state file is lost."""
    try:
        return repo.resolve(ref)
    except SessionNotFound:
        candidate = os.path.abspath(ref)
        if (os.sep in ref or ref in (".", "..")) and looks_like_session(candidate):
            return candidate
        raise
