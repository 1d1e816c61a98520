"""``check`` and ``repair``: find and fix damage in session directories."""

from __future__ import annotations

import argparse

from plainbox_like.maintain import check as checking
from plainbox_like.maintain import repair as repairing
from plainbox_like.store import locks
from plainbox_like.cli import options, output
from plainbox_like.store.paths import session_id_of


def cmd_check(args: argparse.Namespace) -> int:
    repo = options.repository(args)
    if args.sessions:
        # Every argument is resolved first: a bad one is an error (exit 2) before anything is checked.
        paths = list(dict.fromkeys(checking.resolve(repo, ref) for ref in args.sessions))
        held = locks.held_flocks()
        reports = [checking.check_session(path, held) for path in paths]
    else:
        reports = checking.check_repository(repo)
    unhealthy = [r for r in reports if not r.healthy]
    if args.json:
        output.print_json({"healthy": not unhealthy, "sessions": [r.as_dict() for r in reports]})
    else:
        for report in reports:
            for finding in report.problems:
                print(f"{report.id}: {finding.file}: {finding.message}")
            for finding in report.notes:
                output.note(f"{report.id}: {finding.file}: {finding.message}")
        if not reports:
            output.say(f"no sessions in {repo.sessions_dir}")
        elif unhealthy:
            problems = sum(len(r.problems) for r in unhealthy)
            output.say(
                f"{len(unhealthy)} of {len(reports)} session(s) need repair ({problems} problem(s)); "
                "see plainbox-like repair"
            )
        else:
            output.say(f"{len(reports)} session(s) checked: no problems")
    return 1 if unhealthy else 0


def cmd_repair(args: argparse.Namespace) -> int:
    repo = options.repository(args)
    path = checking.resolve(repo, args.session)
    sid = session_id_of(path)
    result = repairing.repair_session(path, say=lambda message: print(f"{sid}: {message}", flush=True))
    for what in result.lost:
        print(f"{sid}: lost: {what}")
    if result.quarantine:
        output.say(f"session {sid}: everything replaced or removed is kept in {result.quarantine}")
    after = result.after
    if after is not None and not after.healthy:
        for finding in after.problems:
            print(f"{sid}: {finding.file}: still a problem: {finding.message}")
        return 1
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    check = subparsers.add_parser(
        "check",
        help="check sessions for damage (snapshot, journal, logs, lock, leftovers)",
        description="Check session directories without changing them: that the snapshot (session) "
        "is valid gzip, JSON and state; that the journal has no damaged lines, torn tail or gaps; "
        "that every attempt's log files exist, that record files are complete and that .stdout and "
        ".stderr hold exactly the bytes of their records; that no run was left interrupted with jobs "
        "marked as running; that no stale temporary files remain; and that session.bak decodes. "
        "Prints one line per problem, SESSION: FILE: PROBLEM, and notes (a session being written, a "
        "log cut by an interruption) on standard error. Exit status: 0 if no session has a problem, "
        "1 if any has, 2 on bad arguments. Checkbox/Plainbox session directories can be checked "
        "too (give their path).",
    )
    check.add_argument(
        "sessions",
        nargs="*",
        metavar="SESSION",
        help="session id, unique id prefix or path to a session directory (default: every session "
        "of the repository)",
    )
    options.add_json(
        check, "print a JSON report instead: every session with its problems and notes (file, kind, message)"
    )
    check.set_defaults(func=cmd_check)

    repair = subparsers.add_parser(
        "repair",
        help="repair a damaged session, keeping everything it replaces in quarantine/",
        description="Take the session's lock and repair what check finds: rebuild a lost or corrupt "
        "snapshot from session.bak, from what is still readable of the damaged one and from the "
        "journal; fold the good lines of a damaged journal into a new snapshot; rewrite cut record "
        "files complete; rebuild .stdout and .stderr from the records; record a result for jobs a "
        "dead runner left running, as resume would; and move everything replaced or unusable into "
        "quarantine/TIMESTAMP/ inside the session: nothing is deleted. Prints one line per action, "
        "and what could not be recovered. Exit status: 0 when the session is healthy afterwards, 1 "
        "if problems remain, 2 on errors (a session being written, a Checkbox/Plainbox session, "
        "which is read-only).",
    )
    options.add_session(repair, "session id, unique id prefix or path to a session directory")
    repair.set_defaults(func=cmd_repair)
