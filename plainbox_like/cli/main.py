"""``plainbox-like`` entry point: builds the parser from the command modules and reports errors."""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from typing import Sequence

from plainbox_like import __version__
from plainbox_like.errors import PlainboxLikeError
from plainbox_like.paths import REPOSITORY_ENV

#: Modules under ``plainbox_like.cli`` that each add one or more commands with ``register(subparsers)``.
COMMAND_MODULES: tuple[str, ...] = ("run", "inspect", "log", "watch", "control", "manage", "integrity", "export")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with every command registered."""
    parser = argparse.ArgumentParser(
        prog="plainbox-like",
        description="Run batches of shell jobs into crash-safe, resumable session directories.",
        epilog=f"Sessions live in ${REPOSITORY_ENV}, or $XDG_CACHE_HOME/plainbox-like by default. "
        "See plainbox-like(1).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--repository",
        metavar="DIR",
        help=f"the session repository root (default: ${REPOSITORY_ENV}, else $XDG_CACHE_HOME/plainbox-like)",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"plainbox_like.cli.{name}")
        except ModuleNotFoundError as exc:  # a command module still being written
            if exc.name != f"plainbox_like.cli.{name}":
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except PlainboxLikeError as exc:
        print(f"plainbox-like: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:
        # Output piped into `head` and the like: not an error worth a traceback.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
