"""The journal of a session: its NDJSON lines parsed back into changes, a torn tail told apart from damage.

Shared by the reader (which replays the changes newer than the snapshot) and by
the index's fast decoder; :class:`~plainbox_like.store.writer.SessionWriter`
writes the lines.
"""

from __future__ import annotations

from typing import Any

import attrs

from plainbox_like.errors import CorruptSession
from plainbox_like.store import codec


@attrs.define
class JournalRead:
    """The usable changes of a journal, and what was wrong with its tail."""

    changes: list[dict[str, Any]]
    lines: int = 0
    torn: str | None = None


def parse_journal(data: bytes, path: str, after_seq: int) -> JournalRead:
    """Parse journal bytes, keeping changes with ``seq > after_seq``.

    A damaged last line (a crash mid-write, or zeros after a power cut) is
    reported in ``torn`` and ignored; a damaged line followed by good ones is
    an error naming the line.
    """
    result = JournalRead(changes=[])
    lines = data.split(b"\n")
    last_complete = len(lines) - 1  # the piece after the final newline is incomplete
    bad_line: tuple[int, str] | None = None
    expected = after_seq + 1
    for index, raw in enumerate(lines):
        if not raw.strip(b" \t\r"):  # zeros (a power cut) are damage, not blank lines
            continue
        number = index + 1
        change = parse_change(raw) if index < last_complete else None
        if change is None:
            problem = "incomplete last line" if index == last_complete else "not a journal entry"
            if bad_line is None:
                bad_line = (number, problem)
            continue
        if bad_line is not None:
            raise CorruptSession(path, f"bad journal line ({bad_line[1]})", line=bad_line[0])
        result.lines += 1
        seq = change["seq"]
        if seq < expected:
            continue
        if seq != expected:
            raise CorruptSession(path, f"journal sequence gap: expected {expected}, found {seq}", line=number)
        result.changes.append(change)
        expected += 1
    if bad_line is not None:
        result.torn = f"line {bad_line[0]}: {bad_line[1]} (ignored)"
    return result


def parse_change(raw: bytes) -> dict[str, Any] | None:
    """One complete journal line as a change, or ``None`` if it is not one."""
    try:
        change = codec.loads_json(raw)
    except ValueError:
        return None
    if (
        isinstance(change, dict)
        and isinstance(change.get("seq"), int)
        and not isinstance(change.get("seq"), bool)
        and isinstance(change.get("op"), str)
    ):
        return change
    return None
