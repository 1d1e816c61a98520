"""``watch``, ``index`` and ``search``: the SQLite index of all sessions and what keeps it fresh."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sqlite3
import sys
from typing import Any, Iterator

from plainbox_like.index import access
from plainbox_like.index import query as indexing
from plainbox_like.cli import options, output
from plainbox_like.cli.output import notice

SNIPPET = 100
#: Matching jobs shown per session by ``search`` (``--json`` has them all).
JOBS_SHOWN = 10


def seconds(text: str) -> float:
    """A number of seconds for --interval and --poll-interval: at least :data:`MIN_INTERVAL`, finite."""
    from plainbox_like.index.watcher import MIN_INTERVAL

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= MIN_INTERVAL or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be at least {MIN_INTERVAL:g} seconds (and finite): {text!r}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    from plainbox_like.index.watcher import DEFAULT_INTERVAL, DEFAULT_POLL_INTERVAL, MIN_INTERVAL

    p = subparsers.add_parser(
        "watch",
        help="keep the session index fresh while sessions are written",
        description="Run in the foreground and keep index.sqlite3 (beside sessions/ in the repository) "
        "up to date: file events (inotify, through watchdog) trigger a re-read of the sessions that "
        "changed, within about half a second; a stat-only reconcile scan at start and every --interval "
        "seconds catches events that were lost. If file events are unavailable (e.g. the inotify watch "
        "limit is reached) it polls instead, with a warning. Only one watcher runs per repository; a "
        "second one exits with status 2 naming the process that holds the lock. Stops cleanly (exit "
        "status 0) on Ctrl-C or SIGTERM. While a watcher runs, list and search trust the index without "
        "scanning the sessions themselves.",
    )
    p.add_argument(
        "--interval",
        type=seconds,
        default=DEFAULT_INTERVAL,
        metavar="SECONDS",
        help=f"seconds between reconcile scans (default {DEFAULT_INTERVAL:g}; at least {MIN_INTERVAL:g})",
    )
    p.add_argument("--once", action="store_true", help="reconcile the index once and exit (no watching, no lock)")
    p.add_argument(
        "--poll",
        action="store_true",
        help="do not use file events; poll instead (for network file systems written by other hosts)",
    )
    p.add_argument(
        "--poll-interval",
        type=seconds,
        default=DEFAULT_POLL_INTERVAL,
        metavar="SECONDS",
        help=f"seconds between scans when polling (default {DEFAULT_POLL_INTERVAL:g}; at least {MIN_INTERVAL:g})",
    )
    p.add_argument(
        "-j", "--jobs", type=options.positive_int, metavar="N",
        help="read up to N sessions at once when many changed (default: the number of CPUs, at most 8)",
    )  # fmt: skip
    p.set_defaults(func=cmd_watch)

    p = subparsers.add_parser(
        "index",
        help="bring the session index up to date, or rebuild it",
        description="Update index.sqlite3 from the session directories: a stat-only comparison of every "
        "session's files with the index, re-reading only the sessions that changed, adding new ones and "
        "removing those that are gone. With --rebuild, recreate the index from scratch (it holds only "
        "derived data). A corrupt index, or one with an older schema, is rebuilt automatically with a "
        "notice.",
    )
    p.add_argument(
        "--rebuild",
        action="store_true",
        help="recreate the index from the session directories (also one made by a newer version)",
    )
    p.add_argument(
        "-j", "--jobs", type=options.positive_int, metavar="N",
        help="read up to N sessions at once (default: the number of CPUs, at most 8)",
    )  # fmt: skip
    options.add_json(p, "print what was done as a JSON object")
    p.set_defaults(func=cmd_index)

    p = subparsers.add_parser(
        "search",
        help="full-text search of session titles and the jobs sessions ran",
        description="Find sessions whose title, or one of whose jobs (id, summary or command), contains "
        "TEXT, case-insensitively: every word must occur (in the title or in any of the session's jobs). "
        "Prints the sessions, newest first, each with the jobs that matched. Reads the index, reconciled "
        "first unless a watcher keeps it fresh. Exit status 1 if no session matched.",
    )
    p.add_argument("text", nargs="+", metavar="TEXT", help="words to look for (substrings, case-insensitive)")
    p.add_argument("--limit", type=options.positive_int, metavar="N", help="show at most N sessions")
    options.add_json(p, "print a JSON list of sessions, each with its matching jobs")
    p.set_defaults(func=cmd_search)


@contextlib.contextmanager
def _index_errors(root: str) -> Iterator[None]:
    """An index that cannot be written midway (read-only, locked too long) is a one-line error naming it."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        path = os.path.join(root, indexing.INDEX_FILE)
        raise indexing.IndexUnusable(f"{path}: cannot update the index: {exc}") from None


# -- watch ---------------------------------------------------------------------


def cmd_watch(args: argparse.Namespace) -> int:
    from plainbox_like.index.watcher import Watcher

    root = access.repository_root(getattr(args, "repository", None))
    if args.once:
        with _index_errors(root), indexing.SessionIndex.open(root, notice=notice, workers=args.jobs) as index:
            stats = index.reconcile(full=True)
            total = index.count()
        output.say(
            f"{index.path}: {total} sessions; {stats.added} new, {stats.updated} changed, "
            f"{stats.removed} removed in {stats.seconds:.2f} s"
        )
        return 0
    watcher = Watcher(
        root,
        interval=args.interval,
        poll=args.poll,
        poll_interval=args.poll_interval,
        say=output.say,
        workers=args.jobs,
    )
    previous = {}

    def on_signal(_signum: int, _frame: Any) -> None:
        watcher.stop()

    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.signal(signum, on_signal)
    try:
        with _index_errors(root):
            watcher.run()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    output.say("watcher stopped")
    return 0


# -- index ---------------------------------------------------------------------


def cmd_index(args: argparse.Namespace) -> int:
    root = access.repository_root(getattr(args, "repository", None))
    index = indexing.SessionIndex.open(root, notice=notice, workers=args.jobs, replace_newer=args.rebuild)
    with _index_errors(root), index:
        stats = index.rebuild() if args.rebuild else index.reconcile(full=True)
        total = index.count()
        jobs = index.conn.execute("SELECT count(*) FROM jobs").fetchone()[0]
    if args.json:
        output.print_json(
            {
                "index": index.path,
                "rebuilt": bool(args.rebuild),
                "sessions": total,
                "jobs": jobs,
                "read": stats.read,
                "added": stats.added,
                "updated": stats.updated,
                "removed": stats.removed,
                "seconds": round(stats.seconds, 3),
            }
        )
        return 0
    if args.rebuild:
        print(f"rebuilt {index.path}: {total} sessions, {jobs} jobs in {stats.seconds:.2f} s")
    else:
        print(
            f"{index.path}: {total} sessions ({stats.added} new, {stats.updated} changed, "
            f"{stats.removed} removed) in {stats.seconds:.2f} s"
        )
    return 0


# -- search --------------------------------------------------------------------


def _snippet(text: str | None) -> str:
    from plainbox_like.cli.output import clean

    if not text:
        return ""
    text = " ".join(text.split())
    return clean(text if len(text) <= SNIPPET else text[: SNIPPET - 3] + "...")


def cmd_search(args: argparse.Namespace) -> int:
    from plainbox_like.cli.output import clean

    root = access.repository_root(getattr(args, "repository", None))
    text = " ".join(args.text)
    hits: list[indexing.SearchHit] = []
    if access.repository_exists(root):
        with access.fresh_index(root, notice) as index:
            hits = index.search(text, limit=args.limit)
    if args.json:
        out = []
        for hit in hits:
            data = json.loads(hit.listed.document)
            data["title_matched"] = hit.title_matched
            data["jobs"] = [job.as_dict() for job in hit.jobs]
            out.append(data)
        output.print_json(out)
        return 0 if hits else 1
    if not hits:
        print(f"no session matches {text!r}", file=sys.stderr)
        return 1
    for hit in hits:
        s = hit.listed.summary
        if s is None:  # pragma: no cover - search always builds summaries
            continue
        created = output.format_time(s.created)
        title = clean(s.title or "-")
        print(f"{s.id}  {s.status}  {created}  {title}")
        for job in hit.jobs[:JOBS_SHOWN]:
            line = f"    {clean(job.id)}  {job.outcome or ('running' if job.running else '-')}"
            if job.summary:
                line += f"  {_snippet(job.summary)}"
            print(line)
            if job.command:
                print(f"        $ {_snippet(job.command)}")
        if len(hit.jobs) > JOBS_SHOWN:
            print(f"    ... and {len(hit.jobs) - JOBS_SHOWN} more matching jobs (--json lists them all)")
    return 0
