"""Small helpers shared by the command modules."""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from plainbox_like.storage import SessionRepository


def repository(args: argparse.Namespace) -> SessionRepository:
    """The repository named by ``--repository`` (or the default)."""
    from plainbox_like.storage import SessionRepository  # not at import: list and search do without it

    return SessionRepository(getattr(args, "repository", None))


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


def format_duration(seconds: float | None) -> str:
    """``0.12s``, ``3m05s``, ``2h01m``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.2f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
