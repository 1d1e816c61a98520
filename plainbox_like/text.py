"""Text for people: times, durations, sizes, and text from sessions and unit files made safe to print."""

from __future__ import annotations

import re

TYPE_CHECKING = False
if TYPE_CHECKING:
    import datetime


def to_datetime(epoch: float, utc: bool = False) -> "datetime.datetime | None":
    """*epoch* as an aware datetime (UTC, or local with its zone); ``None`` when no calendar date can hold it.

    Times come from session files anyone may have written: one past year 9999
    (or NaN) must show as itself, not stop a listing.
    """
    import datetime

    try:
        if utc:
            return datetime.datetime.fromtimestamp(epoch, tz=datetime.timezone.utc)
        return datetime.datetime.fromtimestamp(epoch).astimezone()
    except (OverflowError, OSError, ValueError):
        return None


def format_time(epoch: float | None) -> str:
    """Local time like ``2026-11-21 14:10:54``; ``-`` when unknown, the number itself when out of range."""
    if epoch is None:
        return "-"
    when = to_datetime(epoch)
    return when.strftime("%Y-%m-%d %H:%M:%S") if when is not None else f"{epoch!r} (not a date)"


def iso_time(epoch: float | None) -> str | float | None:
    """UTC ISO 8601 with offset, for JSON output; the number itself when no date can hold it."""
    if epoch is None:
        return None
    when = to_datetime(epoch, utc=True)
    return when.isoformat() if when is not None else epoch


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


_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([KMGT]?)(?:I?B)?", re.IGNORECASE | re.ASCII)


def parse_size(text: str) -> int:
    """A size in bytes from ``4096``, ``512K``, ``512M``, ``10G``, ``1.5G`` or ``2TiB`` (powers of 1024).

    Raises :class:`ValueError` with a message fit for people on anything else.
    """
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not a size: {text!r:.60} (a number of bytes, or with K, M, G or T: 512M, 10G)")
    number, unit = match.groups()
    size = (float(number) if "." in number else int(number)) * _SIZE_UNITS[unit.upper()]
    if size >= 1 << 63:
        raise ValueError(f"size too large: {text!r:.60}")
    return int(size)


def format_size(size: int) -> str:
    """``512 MiB``, ``10 GiB``, ``1.5 KiB``, ``100 bytes``: a size for people."""
    for unit, factor in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= factor:
            value = size / factor
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{size} bytes"
def clean(text: object) -> str:
    """*text* on one line with control characters escaped (safe to print on a terminal or in a table).

    Job ids, titles and comments come from unit files and sessions that others
    wrote: an escape sequence in them must not reach the terminal as one.
    """
    text = str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
