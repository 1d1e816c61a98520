"""``stop``, ``pause`` and ``continue``: requests to a session's runner from another terminal."""

from __future__ import annotations

import argparse

from plainbox_like.run import control
from plainbox_like.cli import options, output
from plainbox_like.cli.options import repository


def _request(args: argparse.Namespace, action: str, what: str) -> int:
    path = repository(args).resolve(args.session)
    control.write_request(path, action)
    output.say(f"asked the runner of {args.session} to {what}")
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    if args.now:
        return _request(args, control.STOP_NOW, "stop now (running jobs are killed and recorded as crash)")
    return _request(args, control.STOP, "stop after the running jobs end")


def cmd_pause(args: argparse.Namespace) -> int:
    return _request(args, control.PAUSE, "pause after the running jobs end")


def cmd_continue(args: argparse.Namespace) -> int:
    return _request(args, control.CONTINUE, "continue")


def register(subparsers: argparse._SubParsersAction) -> None:
    session_help = "session id, unique id prefix or path"
    stop = subparsers.add_parser(
        "stop",
        help="ask a running session to stop",
        description="Ask the runner of a session (on this machine) to stop at its next checkpoint: after the "
        "jobs that are running now end. It writes its state and exits with status 130; the session stays "
        "incomplete and can be resumed. The runner reacts within a second.",
    )
    options.add_session(stop, session_help)
    stop.add_argument("--now", action="store_true",
                      help="kill the running jobs instead of waiting for them (recorded as crash, "
                      "\"stopped by request\")")
    stop.set_defaults(func=cmd_stop)
    pause = subparsers.add_parser(
        "pause",
        help="ask a running session to pause between jobs",
        description="Ask the runner of a session (on this machine) to start no more jobs; once the running "
        "jobs end it waits, and list and show report the session as paused, until continue.",
    )
    options.add_session(pause, session_help)
    pause.set_defaults(func=cmd_pause)
    cont = subparsers.add_parser(
        "continue",
        help="let a paused session go on",
        description="Let the runner of a paused session (on this machine) start jobs again.",
    )
    options.add_session(cont, session_help)
    cont.set_defaults(func=cmd_continue)
