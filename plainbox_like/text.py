"""Text for people: durations, and text from sessions and unit files made safe to print."""

from __future__ import annotations


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


def clean(text: object) -> str:
    """*text* on one line with control characters escaped (safe to print on a terminal or in a table).

    Job ids, titles and comments come from unit files and sessions that others
    wrote: an escape sequence in them must not reach the terminal as one.
    """
    text = str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
