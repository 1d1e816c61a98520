"""What the report formats share: a view of each job, reading output, making it printable."""

from __future__ import annotations

import codecs
import collections
import re
import shlex
from typing import Callable, Iterable

import attrs

from plainbox_like.store import locks
from plainbox_like.read import replay, summary
from plainbox_like.text import format_duration, to_datetime  # noqa: F401 (format_duration used as common.format_duration)
from plainbox_like.errors import PlainboxLikeError
from plainbox_like.store.iolog import STREAMS, IORecord
from plainbox_like.read.replay import AttemptRef
from plainbox_like.store.reader import LoadedSession
from plainbox_like.read.jobs import (  # noqa: F401 (the job view is read's: exports use it as common.X)
    BAD_STATUSES, INTERRUPTED, NOT_RUN, RUNNING, SKIPPED_STATUSES, STATUS_ORDER, JobView, job_views,
)
from plainbox_like.read.statuses import in_status_order


def session_status(loaded: LoadedSession) -> str:
    """``running``, ``incomplete`` or ``complete``."""
    return summary.session_status(loaded)


def status_counts(views: Iterable[JobView]) -> dict[str, int]:
    """Status -> number of jobs, in :data:`STATUS_ORDER` (others alphabetically after)."""
    counts: dict[str, int] = {}
    for view in views:
        counts[view.status] = counts.get(view.status, 0) + 1
    return in_status_order(counts)


def wall_time(loaded: LoadedSession) -> float | None:
    """Seconds from creation to finish (or last update), if both are known."""
    meta = loaded.state.metadata
    end = meta.finished if meta.finished is not None else meta.updated
    if meta.created is None or end is None:
        return None
    return max(0.0, end - meta.created)


def local_time(epoch: float | None) -> str | None:
    """``2026-11-21 14:10:54 CET``: local time with its zone, for people."""
    if epoch is None:
        return None
    when = to_datetime(epoch)
    if when is None:
        return None
    return when.strftime("%Y-%m-%d %H:%M:%S %Z").strip()


# -- reading output ---------------------------------------------------------------


@attrs.frozen
class AttemptOutput:
    """An attempt's output as ``(stream, bytes)`` runs, consecutive records of a stream merged."""

    segments: tuple[tuple[str, bytes], ...]
    #: ``record``, ``raw``, ``inline``, ``none`` (see :class:`replay.Output`) or ``missing``.
    source: str
    #: What is wrong with the log (cut, damaged, missing), if anything.
    problem: str | None = None

    def stream(self, name: str) -> bytes:
        """All bytes of one stream."""
        return b"".join(data for stream, data in self.segments if stream == name)

    @property
    def size(self) -> int:
        return sum(len(data) for _, data in self.segments)


def merge_records(records: Iterable[IORecord]) -> tuple[tuple[str, bytes], ...]:
    """Consecutive records of the same stream joined: records are chunks, not lines or characters."""
    segments: list[tuple[str, list[bytes]]] = []
    for record in records:
        if segments and segments[-1][0] == record.stream:
            segments[-1][1].append(record.data)
        else:
            segments.append((record.stream, [record.data]))
    return tuple((stream, b"".join(parts)) for stream, parts in segments)


def _report_problem(loaded: LoadedSession, ref: AttemptRef, source: str, problem: str | None) -> str | None:
    """What a report says is wrong with an attempt's log read from *source* (*problem*: the reader's word)."""
    if problem and ref.running and locks.writer_alive(loaded.path):
        return None  # still being written: not damaged, just not finished
    if source == "raw":
        return "the timed record file is missing: stdout and stderr are shown one after the other"
    return problem


def read_attempt(loaded: LoadedSession, ref: AttemptRef) -> AttemptOutput:
    """The output of *ref*; a missing or unreadable log gives no output and a ``problem``.

    This holds the whole output in memory; :func:`read_attempt_capped` does not.
    """
    try:
        output = replay.read_output(loaded, ref)
    except PlainboxLikeError as exc:
        return AttemptOutput((), "missing", summary.one_line(exc))
    return AttemptOutput(merge_records(output.records), output.source, _report_problem(loaded, ref, output.source, output.problem))


@attrs.frozen
class CappedOutput:
    """The head and tail of an attempt's output (in memory: at most the limit it was read with),
    with the size and UTF-8 validity of the whole of each stream."""

    #: ``(stream, bytes)`` runs: everything, or the first half of the limit if some was left out.
    head: tuple[tuple[str, bytes], ...]
    #: The last half of the limit, if some was left out (else empty).
    tail: tuple[tuple[str, bytes], ...]
    #: Bytes left out between *head* and *tail*.
    omitted: int
    #: Bytes of each stream read, and whether each was valid UTF-8 as a whole.
    sizes: dict[str, int]
    utf8: dict[str, bool]
    #: As in :class:`AttemptOutput`.
    source: str
    problem: str | None = None

    @property
    def size(self) -> int:
        return sum(self.sizes.values())


def read_attempt_capped(
    loaded: LoadedSession, ref: AttemptRef, limit: int, streams: Iterable[str] = STREAMS
) -> CappedOutput:
    """The output of *ref* on *streams* cut as :func:`cap_segments` cuts it, read as a stream:
    memory stays about *limit* however long the log. A missing or unreadable log gives no output
    and a ``problem``."""
    streams = tuple(streams)
    sizes = {s: 0 for s in streams}
    utf8 = {s: True for s in streams}
    decoders = {s: codecs.getincrementaldecoder("utf-8")() for s in streams}
    kept = HeadTail(limit)
    try:
        reader = replay.OutputReader(loaded, ref)
        for record in reader:
            stream, data = record.stream, record.data
            if stream not in sizes or not data:
                continue
            sizes[stream] += len(data)
            if utf8[stream]:
                try:
                    decoders[stream].decode(data)
                except UnicodeDecodeError:
                    utf8[stream] = False
            kept.add(stream, data)
    except PlainboxLikeError as exc:
        return CappedOutput((), (), 0, {s: 0 for s in streams}, {s: True for s in streams}, "missing", summary.one_line(exc))
    for stream in streams:
        if utf8[stream]:
            try:
                decoders[stream].decode(b"", final=True)
            except UnicodeDecodeError:
                utf8[stream] = False
    head, tail, omitted = kept.result()
    problem = _report_problem(loaded, ref, reader.source, reader.problem)
    return CappedOutput(merge_segments(head), merge_segments(tail), omitted, sizes, utf8, reader.source, problem)


def merge_segments(segments: Iterable[tuple[str, bytes]]) -> tuple[tuple[str, bytes], ...]:
    """Consecutive ``(stream, bytes)`` runs of the same stream joined."""
    return merge_records(IORecord(0.0, stream, data) for stream, data in segments)


# -- making output printable ----------------------------------------------------------

#: Terminal escape sequences: CSI (colours, cursor moves), OSC (titles, links), and two-byte ones.
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]")
#: C0 controls other than tab and newline, and DEL.
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
#: What XML 1.0 forbids even as a character reference, after the controls above are dealt with.
_NOT_XML = re.compile("[\ud800-\udfff\ufffe\uffff]")


def _control_picture(match: re.Match) -> str:
    code = ord(match.group())
    return "\u2421" if code == 0x7F else chr(0x2400 + code)


def printable(text: str) -> str:
    """*text* fit for a report: terminal escapes removed, CR line ends as newlines, other
    control characters as their visible Unicode pictures (NUL as U+2400 and so on).

    The result is also valid in XML 1.0.
    """
    text = _ANSI.sub("", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROLS.sub(_control_picture, text)
    return _NOT_XML.sub("\ufffd", text)


def decode(data: bytes) -> str:
    """UTF-8 with undecodable bytes as U+FFFD."""
    return data.decode("utf-8", errors="replace")


def is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def omitted_note(size: int, hint: str | None = None) -> str:
    """The line put where output was left out."""
    more = f"; {hint}" if hint else ""
    return f"[... {size} bytes omitted here{more} ...]"


class HeadTail:
    """Keeps the first and last halves of about *limit* bytes of ``(stream, bytes)`` runs fed one
    at a time, and counts what is left out between them: memory stays about *limit*."""

    def __init__(self, limit: int) -> None:
        self.head: list[tuple[str, bytes]] = []
        self._head_left = limit // 2
        self._tail_budget = limit - self._head_left
        self._tail: collections.deque[tuple[str, bytes]] = collections.deque()
        self._tail_size = 0
        self._dropped = 0

    def add(self, stream: str, data: bytes) -> None:
        if self._head_left > 0:
            self.head.append((stream, data[: self._head_left]))
            data = data[self._head_left :]
            self._head_left -= len(self.head[-1][1])
            if not data:
                return
        self._tail.append((stream, data))
        self._tail_size += len(data)
        while self._tail and self._tail_size - len(self._tail[0][1]) >= self._tail_budget:
            gone = len(self._tail.popleft()[1])
            self._tail_size -= gone
            self._dropped += gone

    def result(self) -> tuple[list[tuple[str, bytes]], list[tuple[str, bytes]], int]:
        """``(head, tail, bytes left out)``; with nothing left out, everything is in *head*."""
        extra = max(0, self._tail_size - self._tail_budget)
        omitted = self._dropped + extra
        tail = list(self._tail)
        if not omitted:
            return self.head + tail, [], 0
        if extra:
            tail[0] = (tail[0][0], tail[0][1][extra:])
        return self.head, tail, omitted


def cap_segments(
    segments: Iterable[tuple[str, bytes]], limit: int
) -> tuple[list[tuple[str, bytes]], list[tuple[str, bytes]], int]:
    """Keep about *limit* bytes: the first and last halves; returns (head, tail, bytes left out).

    With nothing left out, everything is in *head* and *tail* is empty.
    """
    segments = list(segments)
    if sum(len(data) for _, data in segments) <= limit:
        return segments, [], 0
    kept = HeadTail(limit)
    for stream, data in segments:
        kept.add(stream, data)
    return kept.result()


def cap_text(data: bytes, limit: int, note: Callable[[int], str]) -> str:
    """*data* decoded and made printable, its middle replaced by ``note(bytes left out)`` if too long."""
    head, tail, omitted = cap_segments([("", data)], limit)
    return _capped_text(head, tail, omitted, note)


def capped_text(output: CappedOutput, note: Callable[[int], str]) -> str:
    """The text of a one-stream *output* as :func:`cap_text` makes it, from its head and tail."""
    return _capped_text(output.head, output.tail, output.omitted, note)


def _capped_text(head: Iterable[tuple[str, bytes]], tail: Iterable[tuple[str, bytes]], omitted: int, note: Callable[[int], str]) -> str:
    text = printable(decode(b"".join(data for _, data in head)))
    if not omitted:
        return text
    return text + "\n" + note(omitted) + "\n" + printable(decode(b"".join(data for _, data in tail)))


def log_hint(loaded: LoadedSession, job_id: str, attempt: int | None = None) -> str:
    """The command that prints an attempt's whole output."""
    which = f" --attempt {attempt}" if attempt is not None else ""
    return f"'plainbox-like log{which} {shlex.quote(loaded.path)} {shlex.quote(job_id)}' prints all of it"

