"""What the commands print: messages on stderr with the one prefix, JSON and times, terminal-safe text.

Every message for the user goes through :func:`say` (or :func:`note`, :func:`notice`, :func:`warn`,
:func:`error`), so each line starts with ``plainbox-like: `` and a script can tell them from a
command's output on stdout. Text others wrote (job ids, titles, comments) goes through :func:`clean`
before it reaches a terminal; :func:`format_table` lays out the tables of list, show, gc and search.
Imports nothing heavy: every command loads it.
"""

from __future__ import annotations

import sys

from plainbox_like.text import clean, format_duration, format_time, iso_time  # noqa: F401 (for the command modules)

TYPE_CHECKING = False  # (not typing's: ``list`` starts without importing it)
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from typing import Any

PREFIX = "plainbox-like: "


def say(message: object, kind: str | None = None) -> None:
    """*message* on stderr after the prefix (and ``kind: `` when given), at once: a pipe sees it now."""
    head = f"{PREFIX}{kind}: " if kind else PREFIX
    sys.stderr.write(f"{head}{message}\n")
    sys.stderr.flush()


def note(message: object) -> None:
    """``plainbox-like: note: ...``: something the user may want to know (a launcher's unused section)."""
    say(message, "note")


def notice(message: object) -> None:
    """``plainbox-like: notice: ...``: something done on the user's behalf (an index rebuilt, a fallback)."""
    say(message, "notice")


def warn(message: object) -> None:
    """``plainbox-like: warning: ...``: something went wrong but the command goes on."""
    say(message, "warning")


def error(message: object) -> None:
    """``plainbox-like: error: ...``: what stops the command (or one of its items)."""
    say(message, "error")


def print_json(obj: Any) -> None:
    """Print *obj* as indented JSON on stdout."""
    import json  # not at import: ``list --json`` writes the index's bytes without it

    json.dump(obj, sys.stdout, indent=2, sort_keys=True, ensure_ascii=False)
    sys.stdout.write("\n")


def format_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """Left-aligned columns separated by two spaces; the last column is not padded."""
    rows = [list(header), *(list(r) for r in rows)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    lines = []
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths)] + [row[-1]]
        lines.append("  ".join(cells).rstrip())
    return lines
