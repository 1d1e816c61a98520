"""Arguments several commands share, each declared once (as pip's ``cmdoptions``): same name, same help.

A command adds one with ``options.add_json(parser, "what it prints")`` and the like; where the help
differs between commands it is a parameter, the rest (name, metavar, type, action) is fixed here.
:func:`repository` turns ``--repository`` into the repository every command works in.
"""

from __future__ import annotations

import argparse

TYPE_CHECKING = False  # (not typing's: ``list`` starts without importing it)
if TYPE_CHECKING:
    from typing import Any

    from plainbox_like.store.repository import SessionRepository

#: The help of a SESSION argument (commands that take it another way say so).
SESSION_HELP = "session id, unique id prefix, or path to a session directory"
#: The help of ``--providers`` (run, launcher, plans).
PROVIDERS_HELP = (
    "load the Checkbox providers of DIR too: a directory of .provider files (as 'manage.py develop -d DIR' "
    "writes them) or a provider source tree (repeatable); with no FILE and no -c, the providers of the "
    "directories in $PROVIDERPATH (else /usr/local/share/plainbox-providers-1, /usr/share/plainbox-providers-1, "
    "~/.local/share/plainbox-providers-1 and /var/tmp/checkbox-providers-develop) are loaded as well"
)
#: The help of ``--manifest`` (run, launcher).
MANIFEST_HELP = (
    "Checkbox's machine manifest JSON ({\"ns::entry_id\": true, ...}): the answers the manifest resource job "
    "gives; an entry without an answer is false (0), as in Checkbox"
)


def repository(args: argparse.Namespace) -> SessionRepository:
    """The repository named by ``--repository`` (or the default); one that cannot be one is an error."""
    from plainbox_like.store.paths import check_repository_root, repository_given_as
    from plainbox_like.store.repository import SessionRepository  # not at import: list and search do without it

    override = getattr(args, "repository", None)
    repo = SessionRepository(override)
    check_repository_root(repo.root, repository_given_as(override))
    return repo


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def add_session(parser: argparse.ArgumentParser, help: str = SESSION_HELP, **kwargs: Any) -> None:
    """The SESSION argument (*kwargs* such as ``nargs="?"`` go to argparse)."""
    parser.add_argument("session", metavar="SESSION", help=help, **kwargs)


def add_json(parser: argparse.ArgumentParser, help: str) -> None:
    """``--json``; *help* says what the command prints with it."""
    parser.add_argument("--json", action="store_true", help=help)


def add_parallel(parser: argparse.ArgumentParser, help: str, default: int | None = None) -> None:
    """``-j/--jobs N`` and ``--force`` (needed above :data:`batch.MAX_PARALLEL`), as run, launcher and resume take them."""
    from plainbox_like.run.batch import MAX_PARALLEL

    parser.add_argument("-j", "--jobs", type=positive_int, default=default, metavar="N", help=help)
    parser.add_argument("--force", action="store_true", help=f"allow -j above {MAX_PARALLEL}")


def add_providers(parser: argparse.ArgumentParser) -> None:
    """``--providers DIR`` (repeatable)."""
    parser.add_argument("--providers", action="append", default=[], metavar="DIR", help=PROVIDERS_HELP)


def add_manifest(parser: argparse.ArgumentParser) -> None:
    """``--manifest FILE``."""
    parser.add_argument("--manifest", metavar="FILE", help=MANIFEST_HELP)


def add_durability(parser: argparse.ArgumentParser, help: str) -> None:
    """``--durability {fsync,flush}`` (default fsync)."""
    from plainbox_like.store.writer import DURABILITY_MODES

    parser.add_argument("--durability", choices=DURABILITY_MODES, default="fsync", help=help)
