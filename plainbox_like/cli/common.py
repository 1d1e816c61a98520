"""Small helpers shared by the command modules."""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from typing import TYPE_CHECKING, Any

from plainbox_like.text import format_duration  # noqa: F401 (for the command modules)

if TYPE_CHECKING:
    from plainbox_like.store.storage import SessionRepository


def repository(args: argparse.Namespace) -> SessionRepository:
    """The repository named by ``--repository`` (or the default); one that cannot be one is an error."""
    from plainbox_like.store.paths import check_repository_root, repository_given_as
    from plainbox_like.store.storage import SessionRepository  # not at import: list and search do without it

    override = getattr(args, "repository", None)
    repo = SessionRepository(override)
    check_repository_root(repo.root, repository_given_as(override))
    return repo


def print_json(obj: Any) -> None:
    """Print *obj* as indented JSON on stdout."""
    json.dump(obj, sys.stdout, indent=2, sort_keys=True, ensure_ascii=False)
    sys.stdout.write("\n")


def format_time(epoch: float | None) -> str:
    """Local time like ``2026-11-21 14:10:54``, or ``-``."""
    if epoch is None:
        return "-"
    return datetime.datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S")


def iso_time(epoch: float | None) -> str | None:
    """UTC ISO 8601 with offset, for JSON output."""
    if epoch is None:
        return None
    return datetime.datetime.fromtimestamp(epoch, tz=datetime.timezone.utc).isoformat()


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value
