"""``plainbox-like`` entry point: builds the parser from the command modules and reports errors."""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
from collections.abc import Sequence  # (not typing: start-up stays short)

from plainbox_like import __version__
from plainbox_like.errors import PlainboxLikeError
from plainbox_like.store.paths import REPOSITORY_ENV

#: Each command, and the module under ``plainbox_like.cli`` that registers it with ``register(subparsers)``.
#: Only the module of the command being run is imported, which keeps start-up short.
COMMANDS: dict[str, str] = {
    "run": "run",
    "resume": "run",
    "plans": "run",
    "launcher": "run",
    "list": "inspect",
    "show": "inspect",
    "log": "log",
    "replay": "log",
    "watch": "watch",
    "index": "watch",
    "search": "watch",
    "stop": "control",
    "pause": "control",
    "continue": "control",
    "answer": "answer",
    "delete": "manage",
    "rename": "manage",
    "tag": "manage",
    "untag": "manage",
    "gc": "manage",
    "cleanup": "manage",
    "check": "integrity",
    "repair": "integrity",
    "export": "export",
    "import": "export",
    "autoresume": "autoresume",
}
COMMAND_MODULES: tuple[str, ...] = tuple(dict.fromkeys(COMMANDS.values()))
#: Errors of the machine, not of this program: a one-line message, not a traceback.
_ENVIRONMENT_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO})


def build_parser(modules: Sequence[str] = COMMAND_MODULES) -> argparse.ArgumentParser:
    """The argument parser, with the commands of *modules* (by default all) registered."""
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
    for name in modules:
        try:
            module = importlib.import_module(f"plainbox_like.cli.{name}")
        except ModuleNotFoundError as exc:  # a command module still being written
            if exc.name != f"plainbox_like.cli.{name}":
                raise
            continue
        module.register(subparsers)
    return parser


def _command_word(argv: list[str]) -> str | None:
    """The command named in *argv* (the first word that is not a global option or its value)."""
    words = iter(argv)
    for word in words:
        if word == "--repository":
            next(words, None)
        elif not word.startswith("-"):
            return word
        elif word in ("-h", "--help", "--version"):
            return None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    for word in argv:  # no command line can hold one (only a call of main() can): refuse it before any path use
        if "\0" in word:
            from plainbox_like.cli.output import error

            error(f"argument {word!r} contains a NUL character")
            return 2
    command = _command_word(argv)
    if command is None and "--version" in argv and not {"-h", "--help"} & set(argv):
        modules: Sequence[str] = ()  # the version needs no command module
    else:
        modules = (COMMANDS[command],) if command in COMMANDS else COMMAND_MODULES
    parser = build_parser(modules)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        from plainbox_like.store.limits import max_state_size  # (not for --version, which answers at once)

        max_state_size()  # a bad $PLAINBOX_LIKE_MAX_STATE_SIZE is an error before any session is read
        return args.func(args)
    except PlainboxLikeError as exc:
        from plainbox_like.cli.output import error  # (not at import: --version needs none of it)

        error(exc)
        return exc.exit_code
    except BrokenPipeError:
        # Output piped into `head` and the like: not an error worth a traceback.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except OSError as exc:  # after BrokenPipeError, one of its kind
        if exc.errno not in _ENVIRONMENT_ERRORS:
            raise
        from plainbox_like.cli.output import error

        where = f"{exc.filename}: " if exc.filename else ""
        error(f"{where}{exc.strerror}")
        return 2
    except KeyboardInterrupt:
        import signal

        return 128 + signal.SIGINT
