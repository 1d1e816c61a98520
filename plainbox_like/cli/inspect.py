"""``list`` and ``show``: what sessions there are and what is in one."""

from __future__ import annotations

import argparse
import os
import re
import sys
import time

from plainbox_like.index import access, lineage, listing
from plainbox_like.index import query as indexing
from plainbox_like.cli import options, output
from plainbox_like.cli.output import clean, format_table  # noqa: F401 (kept importable here)

# ``list`` through the index is a short-lived process: what only ``show`` and the table need
# (datetime, typing, the state machinery) is imported where it is used.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from plainbox_like.read import summary
    from plainbox_like.store.model import Attempt
    from plainbox_like.store.reader import LoadedSession

def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "list",
        help="list the sessions in the repository, newest first",
        description="List every session in the repository, newest first: id, status "
        "(running, incomplete, complete or corrupt), creation time, jobs done, title and "
        "outcome counts. A corrupt session is shown with the reason and never stops the "
        "others from being listed. Reads the index (index.sqlite3); unless a watcher keeps it "
        "fresh, a stat-only scan of the session directories first re-reads the sessions that "
        "changed, so the answer is never stale. Filters combine: a session is listed if it "
        "passes all of them.",
    )
    options.add_json(p, "print a JSON list of session summaries")
    p.add_argument(
        "--status",
        action="append",
        choices=indexing.STATUSES,
        help="only sessions with this status (repeatable: any of them)",
    )
    p.add_argument("--tag", action="append", metavar="TAG", help="only sessions with this tag (repeatable: all of them)")
    p.add_argument(
        "--since",
        type=parse_since,
        metavar="DATE",
        help="only sessions created at or after DATE: 2026-11-21, '2026-11-21 14:00', ISO 8601 with an "
        "offset, or an age such as 90m, 12h, 7d, 2w",
    )
    p.add_argument("--title", metavar="TEXT", help="only sessions whose title contains TEXT (case-insensitive)")
    p.add_argument(
        "--parent", metavar="SESSION", help="only sessions started from within session SESSION (id or unique prefix)"
    )
    p.add_argument(
        "--failed-job",
        metavar="JOB",
        help="only sessions in which job JOB (shell wildcards allowed) failed or crashed in its latest attempt",
    )
    p.add_argument("--limit", type=options.positive_int, metavar="N", help="list at most N sessions (the newest)")
    p.set_defaults(func=cmd_list)

    p = subparsers.add_parser(
        "show",
        help="show one session and its jobs",
        description="Show a session's metadata and a table of its jobs in plan order: latest "
        "outcome (running for a job being run, - for one not run yet), duration, return code, "
        "number of attempts and skip reason or comments.",
    )
    options.add_session(p)
    options.add_json(p, "print the session as a JSON object, with every attempt of every job")
    p.set_defaults(func=cmd_show)


# -- helpers -------------------------------------------------------------------


def format_counts(counts: dict[str, int]) -> str:
    """``pass 10, fail 2`` in a stable order; ``-`` when there are none."""
    from plainbox_like.read.statuses import in_status_order  # light: no state machinery

    return ", ".join(f"{name} {n}" for name, n in in_status_order(counts).items() if n) or "-"


def summary_json(s: summary.SessionSummary) -> dict[str, Any]:
    """A summary for JSON output: times as ISO 8601 UTC strings."""
    from plainbox_like.read import summary
    data = s.as_dict()
    for key in summary.TIME_FIELDS:
        data[key] = output.iso_time(data[key])
    return data


def waiting_for_person(status: str, flags: tuple[str, ...] | list[str], running_job: str | None) -> str | None:
    """``waiting for a person: JOB`` for a live session whose runner waits for ``answer``, else None."""
    from plainbox_like.store.names import FLAG_WAITING, STATUS_PAUSED, STATUS_RUNNING

    if status in (STATUS_RUNNING, STATUS_PAUSED) and FLAG_WAITING in flags and running_job:
        return f"waiting for a person: job {clean(running_job)}"
    return None


# -- list ----------------------------------------------------------------------


_AGE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str) -> float:
    """``--since`` as epoch seconds: a date, a date and time (local unless it has an offset), or an age."""
    value = text.strip()
    match = _AGE.fullmatch(value.lower())
    if match:
        return time.time() - float(match.group(1)) * _AGE_UNITS[match.group(2)]
    import datetime

    try:
        when = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a date, time or age: {text!r} (try 2026-11-21, '2026-11-21 14:00' or 7d)"
        ) from None
    return when.timestamp()  # naive: local time


def list_filter(args: argparse.Namespace) -> listing.ListFilter:
    """The filters of ``list`` given on the command line."""
    return listing.ListFilter(
        statuses=tuple(args.status or ()),
        tags=tuple(args.tag or ()),
        since=args.since,
        title=args.title,
        parent=args.parent,
        failed_job=args.failed_job,
        limit=args.limit,
    )


def _write_bytes(parts: list[bytes]) -> None:
    """*parts* (UTF-8) on stdout, one after the other, as they are."""
    out = sys.stdout
    buffer = getattr(out, "buffer", None)
    if buffer is None:  # a text-only stream (redirected in-process)
        out.write(b"".join(parts).decode("utf-8", "surrogateescape"))
        return
    out.flush()
    for part in parts:
        buffer.write(part)
    buffer.flush()


def cmd_list(args: argparse.Namespace) -> int:
    root = access.repository_root(getattr(args, "repository", None))  # no session decoder needed
    flt = list_filter(args)
    exists = access.repository_exists(root)
    if args.json:
        # The stored documents, joined by SQLite: no Python object per session.
        parts = [b"[]\n"]
        if exists:
            with access.fresh_index(root, output.notice) as index:
                parts = index.json_parts(flt)
        _write_bytes(parts)
        return 0
    listed: list[listing.Listed] = []
    if exists:
        with access.fresh_index(root, output.notice) as index:
            listed = index.list(flt)
    sessions = [item.summary for item in listed]
    if not sessions:
        filtered = flt != listing.ListFilter()
        print(f"no {'matching ' if filtered else ''}sessions in {os.path.join(root, 'sessions')}", file=sys.stderr)
        return 0
    header = ["ID", "STATUS", "CREATED", "JOBS", "TITLE", "RESULTS"]
    id_width = max(len(header[0]), *(len(s.id) for s in sessions))
    rows = []
    for s in sessions:
        if s.status == indexing.STATUS_CORRUPT:
            continue
        jobs = f"{s.done}/{s.total}" if s.total or s.done else "-"
        created = output.format_time(s.created)
        title = clean(s.title or "-")
        status = s.status
        waiting = waiting_for_person(s.status, s.flags, s.running_job)
        if waiting:
            status = f"{status}: {waiting}"
        rows.append([s.id.ljust(id_width), status, created, jobs, title, format_counts(s.counts)])
    header[0] = header[0].ljust(id_width)
    lines = iter(format_table(header, rows))
    print(next(lines))
    for s in sessions:
        if s.status == indexing.STATUS_CORRUPT:
            # The reason takes the rest of the line.
            print(f"{s.id.ljust(id_width)}  corrupt: {clean(s.reason)}")
        else:
            print(next(lines))
    return 0


# -- show ----------------------------------------------------------------------


def _load_for_show(path: str) -> LoadedSession:
    from plainbox_like.store import names, reader
    from plainbox_like.read import summary
    from plainbox_like.errors import CorruptSession, PlainboxLikeError

    try:
        return reader.load_session(path)
    except CorruptSession:
        if not os.path.exists(os.path.join(path, names.STATE_FILE)) and summary.being_created(path):
            raise PlainboxLikeError(f"{path}: the session is being created; try again in a moment") from None
        raise


def _attempt_json(a: Attempt) -> dict[str, Any]:
    import attrs

    return {
        "attempt": a.attempt,
        "outcome": a.outcome,
        "return_code": a.return_code,
        "execution_duration": a.execution_duration,
        "comments": a.comments,
        "skip_reason": a.skip_reason,
        "io_log_filename": a.io_log_filename,
        "started": output.iso_time(a.started),
        "leftover_processes": attrs.asdict(a.leftover_processes) if a.leftover_processes is not None else None,
        "answered": attrs.asdict(a.answered) if a.answered is not None else None,
        "ran_on": attrs.asdict(a.ran_on) if a.ran_on is not None else None,
    }


def _share_note(ran_on: dict[str, Any]) -> str:
    """Which ``$PLAINBOX_SESSION_SHARE`` a job had on its worker: the session's (shared) or the worker's own."""
    if ran_on["share_shared"]:
        return "the session's (shared filesystem)"
    return f"the worker's own: {clean(ran_on['share'] or '-')}"


def _print_placements(jobs: list[dict[str, Any]]) -> None:
    """Where the latest attempt of each job ran, for sessions run on a Dask cluster (nothing otherwise)."""
    rows = []
    for job in jobs:
        ran_on = job["attempts"][-1]["ran_on"] if job["attempts"] else None
        if ran_on is not None:
            rows.append([clean(job["id"]), clean(ran_on["address"]), clean(ran_on["host"]), _share_note(ran_on)])
    if rows:
        print()
        for line in format_table(["JOB", "WORKER", "HOST", "SESSION SHARE"], rows):
            print(line)


def job_rows(loaded: LoadedSession, status: str, now: float | None = None) -> list[dict[str, Any]]:
    """One dict per job (a rendering of :func:`read.jobs.job_views`), in its order.

    ``outcome`` is the job's status: the latest outcome, ``running`` for a job
    being run now (its session running or paused), ``interrupted`` for one that
    was running when its writer stopped, and ``None`` for a job that has not run.
    """
    from plainbox_like.read import jobs as job_status

    now = time.time() if now is None else now
    rows = []
    for view in job_status.job_views(loaded, status):
        attempts = loaded.state.results.get(view.id, [])
        latest, running = view.latest, view.running
        outcome = None if view.status == job_status.NOT_RUN and latest is None else view.status
        entry: dict[str, Any] = {
            "id": view.id,
            "outcome": outcome,
            "return_code": latest.return_code if latest else None,
            "execution_duration": latest.execution_duration if latest else None,
            "skip_reason": latest.skip_reason if latest else None,
            "comments": latest.comments if latest else None,
            "attempt_count": len(attempts) + (running is not None),
            "attempts": [_attempt_json(a) for a in attempts],
            "running": None,
            "previous_outcome": None,
        }
        if running is not None:
            live = view.status == job_status.RUNNING
            entry["return_code"] = None
            entry["execution_duration"] = max(0.0, now - running.started) if live else None
            entry["skip_reason"] = entry["comments"] = None
            entry["previous_outcome"] = latest.outcome if latest else None
            entry["running"] = {
                "attempt": running.attempt,
                "started": output.iso_time(running.started),
                "io_log_filename": running.io_log_filename,
            }
        rows.append(entry)
    return rows


def _note(job: dict[str, Any]) -> str:
    if job.get("previous_outcome"):
        note = f"previous: {job['previous_outcome']}"
    else:
        note = job["skip_reason"] or job["comments"] or ""
    note = " ".join(str(note).split())
    return clean(note[:117] + "..." if len(note) > 120 else note)


def cmd_show(args: argparse.Namespace) -> int:
    from plainbox_like.store import codec
    from plainbox_like.read import summary
    repo = options.repository(args)
    path = repo.resolve(args.session)
    loaded = _load_for_show(path)
    s = summary.summarize_loaded(loaded)
    meta = loaded.state.metadata
    jobs = job_rows(loaded, s.status)
    children = lineage.find_children(repo.root, s.id)
    if args.json:
        data = summary_json(s)
        data.update(
            source_version=loaded.source_version,
            parent_job=meta.parent_job,
            journal_problem=loaded.journal_torn,
            desired_job_list=list(loaded.state.desired_job_list),
            mandatory_job_list=list(loaded.state.mandatory_job_list),
            jobs=jobs,
            children=[_child_json(c) for c in children],
        )
        output.print_json(data)
        return 0
    status = s.status
    if s.running_job and s.status in (summary.STATUS_RUNNING, summary.STATUS_PAUSED, summary.STATUS_INCOMPLETE):
        verb = "was running" if s.status == summary.STATUS_INCOMPLETE else "is running"
        status += f" (job {clean(s.running_job)} {verb})"
    waiting = waiting_for_person(s.status, s.flags, s.running_job)
    if waiting:
        status = f"{s.status} ({waiting})"
    parent = meta.parent_session or "-"
    if meta.parent_job:
        parent += f" (job {meta.parent_job})"
    origin = s.origin if s.origin == codec.FORMAT else f"{s.origin} (state version {loaded.source_version})"
    fields = [
        ("Title", clean(s.title or "-")),
        ("Id", s.id),
        ("Path", clean(s.path)),
        ("Status", status),
        ("Origin", origin),
        ("Created", output.format_time(s.created)),
        ("Updated", output.format_time(s.updated)),
        ("Finished", output.format_time(s.finished)),
        ("Flags", clean(", ".join(s.flags) or "-")),
        ("Tags", clean(", ".join(s.tags) or "-")),
        ("Parent", clean(parent)),
        ("Runner", f"pid {s.runner_pid} on {clean(s.runner_host)}" if s.runner_pid else "-"),
        ("App", clean(s.app_id or "-")),
        ("Results", f"{format_counts(s.counts)} ({s.done} of {s.total} planned jobs done)"),
    ]
    if loaded.journal_torn:
        fields.append(("Journal", clean(loaded.journal_torn)))
    width = max(len(name) for name, _ in fields) + 1
    for name, value in fields:
        print(f"{(name + ':').ljust(width)} {value}")
    if not jobs:
        print("\n(no jobs)")
        _print_children(children)
        return 0
    print()
    rows = []
    for job in jobs:
        rc = job["return_code"]
        rows.append(
            [
                clean(job["id"]),
                job["outcome"] or "-",
                output.format_duration(job["execution_duration"]),
                "-" if rc is None else str(rc),
                str(job["attempt_count"]),
                _note(job),
            ]
        )
    for line in format_table(["JOB", "OUTCOME", "DURATION", "RC", "ATTEMPTS", "NOTE"], rows):
        print(line)
    _print_placements(jobs)
    _print_children(children)
    return 0


def _child_json(child: lineage.Child) -> dict[str, Any]:
    return {
        "id": child.id,
        "title": child.title,
        "status": child.status,
        "parent_job": child.parent_job,
        "created": output.iso_time(child.created),
        "path": child.path,
    }


def _print_children(children: list[lineage.Child]) -> None:
    """The sessions started from within this session's jobs, if any."""
    if not children:
        return
    print(f"\nChild sessions ({len(children)}, started from its jobs):")
    rows = [[c.id, c.status, clean(c.parent_job or "-"), clean(c.title or "-")] for c in children]
    for line in format_table(["ID", "STATUS", "JOB", "TITLE"], rows):
        print(line)
