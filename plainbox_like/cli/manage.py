"""``delete``, ``rename``, ``tag``, ``untag``, ``gc`` and ``cleanup``: keeping the repository tidy.

A thin layer over :mod:`plainbox_like.maintain.manage`: results on standard output,
notices and warnings on standard error.
"""

from __future__ import annotations

import argparse
import sys

from plainbox_like.maintain import manage
from plainbox_like.cli import options, output
from plainbox_like.cli.output import clean

SESSION_HELP = options.SESSION_HELP


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "delete",
        help="delete sessions",
        description="Delete sessions of the repository with all their files, and say how much space "
        "that freed. A session being run is not deleted (nothing is, if one of those given is) unless "
        "--force is given. Deletion is crash-safe: the directory is first renamed to a hidden name "
        "(.deleting-*), then removed, so an interrupted deletion never leaves a half session behind; "
        "gc removes such leftovers.",
    )
    p.add_argument("sessions", nargs="+", metavar="SESSION", help=SESSION_HELP + " (one or more)")
    p.add_argument(
        "--force",
        action="store_true",
        help="delete even a session whose runner is alive (it is not stopped, and may go on writing "
        "until it notices)",
    )
    p.set_defaults(func=cmd_delete)

    p = subparsers.add_parser(
        "rename",
        help="set a session's title",
        description="Set the title of a session; an empty TITLE removes it. The change is journaled "
        "like any other, and the state before it stays in session.bak. A session being run cannot be "
        "edited (edit it after the run ends), nor can a Plainbox/Checkbox session.",
    )
    options.add_session(p)
    p.add_argument("title", metavar="TITLE", help="the new title ('' to remove the title)")
    p.set_defaults(func=cmd_rename)

    p = subparsers.add_parser(
        "tag",
        help="add tags to a session",
        description="Add tags to a session, after those it has, in the order given. A tag the session "
        "already has is not added twice (a notice says so). A tag is a word without spaces, commas or "
        "control characters. Journaled like rename; the same sessions cannot be edited.",
    )
    options.add_session(p)
    p.add_argument("tags", nargs="+", metavar="TAG", help="a tag to add (one or more)")
    p.set_defaults(func=cmd_tag)

    p = subparsers.add_parser(
        "untag",
        help="remove tags from a session",
        description="Remove tags from a session. A tag the session does not have is reported in a "
        "notice on standard error and is not an error (exit status 0), so untag can be repeated "
        "safely. Journaled like rename; the same sessions cannot be edited.",
    )
    options.add_session(p)
    p.add_argument("tags", nargs="+", metavar="TAG", help="a tag to remove (one or more)")
    p.set_defaults(func=cmd_untag)

    p = subparsers.add_parser(
        "gc",
        help="delete old sessions",
        description="Delete the sessions created more than DURATION ago (corrupt sessions and those "
        "that do not record a creation time: whose directory was last modified then), and the leftovers "
        "of interrupted deletions and imports. A session being run or being created is never deleted. Prints each "
        "session deleted and the total space freed.",
    )
    p.add_argument(
        "--older-than",
        metavar="DURATION",
        default=manage.DEFAULT_GC_AGE,
        help="delete sessions older than DURATION: a number and a unit, s, m, h, d or w, such as 3600s, "
        f"90m, 12h, 30d or 2w (default: {manage.DEFAULT_GC_AGE})",
    )
    p.add_argument(
        "--keep-incomplete", action="store_true", help="keep incomplete sessions (they may still be resumed)"
    )
    p.add_argument(
        "--dry-run", action="store_true", help="only print what would be deleted and the space it would free"
    )
    p.set_defaults(func=cmd_gc)

    p = subparsers.add_parser(
        "cleanup",
        help="settle sessions left running by a runner that died",
        description="Find sessions still marked as running although the process that ran them is "
        "gone (killed, crashed, the machine rebooted): jobs marked as running, or a lock file naming "
        "a process that no longer holds it. Leftover processes of their running jobs are stopped, "
        "each such job is recorded as crash ('the session stopped while this job ran'; a noreturn job "
        "as pass), and the session is marked incomplete, ready for resume. Sessions being run are "
        "not touched.",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="only print which sessions would be cleaned up, and how"
    )
    p.set_defaults(func=cmd_cleanup)


# -- helpers -------------------------------------------------------------------


def _title(title: str | None) -> str:
    return f'"{clean(title)}"' if title else "(no title)"


def _tags(tags: tuple[str, ...]) -> str:
    return clean(", ".join(tags)) if tags else "(none)"


# -- delete --------------------------------------------------------------------


def cmd_delete(args: argparse.Namespace) -> int:
    repo = options.repository(args)

    def on_deleted(item: manage.Deleted) -> None:
        if item.runner_left is not None:
            pid, host = item.runner_left
            output.warn(f"session {item.id} was deleted while pid {pid} on host {clean(host)} ran it; it may still write")
        print(f"deleted {item.id}  {item.status or '-'}  {manage.human_size(item.size)}  {_title(item.title)}")
        sys.stdout.flush()

    deleted = manage.delete_sessions(repo, args.sessions, force=args.force, on_deleted=on_deleted)
    total = sum(item.size for item in deleted)
    noun = "session" if len(deleted) == 1 else "sessions"
    print(f"{len(deleted)} {noun} deleted, {manage.human_size(total)} freed")
    return 0


# -- edits ---------------------------------------------------------------------


def cmd_rename(args: argparse.Namespace) -> int:
    edit = manage.rename_session(options.repository(args), args.session, args.title)
    if edit.changed:
        print(f"{edit.id}: title {_title(edit.title_before)} -> {_title(edit.title)}")
    else:
        print(f"{edit.id}: title unchanged, {_title(edit.title)}")
    return 0


def cmd_tag(args: argparse.Namespace) -> int:
    edit = manage.tag_session(options.repository(args), args.session, args.tags)
    for tag in edit.unchanged_tags:
        output.notice(f"{edit.id} already has tag {clean(tag)!r}")
    print(f"{edit.id}: tags {_tags(edit.tags)}")
    return 0


def cmd_untag(args: argparse.Namespace) -> int:
    edit = manage.untag_session(options.repository(args), args.session, args.tags)
    for tag in edit.unchanged_tags:
        output.notice(f"{edit.id} has no tag {clean(tag)!r}")
    print(f"{edit.id}: tags {_tags(edit.tags)}")
    return 0


# -- gc ------------------------------------------------------------------------


def cmd_gc(args: argparse.Namespace) -> int:
    repo = options.repository(args)
    seconds = manage.parse_duration(args.older_than)
    verb = "would delete" if args.dry_run else "deleted"

    def on_item(item: manage.GcItem) -> None:
        if item.leftover:
            what = "deletion" if item.status == "deleting" else "import"
            print(f"{verb} {item.id}  leftover of an interrupted {what}  {manage.human_size(item.size)}")
        else:
            created = output.format_time(item.age_time)
            print(
                f"{verb} {item.id}  {item.status}  {created}  {manage.human_size(item.size)}  {_title(item.title)}"
            )
        sys.stdout.flush()

    report = manage.gc(
        repo, seconds, keep_incomplete=args.keep_incomplete, dry_run=args.dry_run, on_item=on_item
    )
    for item in report.kept:
        output.notice(f"kept {item.id}: {item.reason}")
    for item in report.failed:
        output.error(f"{item.id}: {item.reason}")
    n = len(report.removed)
    noun = "session" if n == 1 else "sessions"
    if args.dry_run:
        print(f"{n} {noun} would be deleted, {manage.human_size(report.freed)} would be freed (dry run)")
    elif n:
        print(f"{n} {noun} deleted, {manage.human_size(report.freed)} freed")
    elif report.kept:
        kept = len(report.kept)
        print(f"nothing deleted: {'the session' if kept == 1 else f'all {kept} sessions'} older than "
              f"{args.older_than.strip()} kept")
    else:
        print(f"nothing to delete: no session older than {args.older_than.strip()}")
    return 2 if report.failed else 0


# -- cleanup -------------------------------------------------------------------


def cmd_cleanup(args: argparse.Namespace) -> int:
    repo = options.repository(args)
    would = "would be " if args.dry_run else ""

    def on_item(item: manage.Cleaned) -> None:
        what = [f"job {clean(job)} {would}recorded as {outcome}" for job, outcome in item.jobs]
        if item.flagged:
            what.append(f"{would}marked incomplete")
        if item.stale_lock is not None and not item.jobs:
            pid, host = item.stale_lock
            what.append(f"stale lock of pid {pid} on {clean(host)} {would}cleared")
        print(f"{item.id}  {_title(item.title)}: {'; '.join(what)}")
        for note in item.notes:
            output.notice(f"{item.id}: {note}")
        sys.stdout.flush()

    report = manage.cleanup(repo, dry_run=args.dry_run, on_item=on_item)
    for sid, reason in report.skipped:
        output.notice(f"left {sid} alone: {reason}")
    n = len(report.cleaned)
    noun = "session" if n == 1 else "sessions"
    if not n:
        print("nothing to clean up")
    elif args.dry_run:
        print(f"{n} {noun} would be cleaned up (dry run)")
    else:
        print(f"{n} {noun} cleaned up")
    return 0
