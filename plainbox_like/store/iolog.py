"""io-logs: the record.gz writer and its tolerant reader, plus raw stdout/stderr files.

A record file is gzip of one JSON line per chunk read from the job,
``[delay, "stdout"|"stderr", base64]``, byte-compatible with Plainbox's reader.
The writer sync-flushes the deflate stream every half second while output
flows (and at the end), so a file cut short by a crash still yields every
record up to the last flush; the reader returns those and says it was cut.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import struct
import time
import zlib
from typing import TYPE_CHECKING, Any, Callable, Container, Iterator

import attrs
import orjson
from isal import isal_zlib

from plainbox_like.store.limits import max_state_size
from plainbox_like.store.names import RECORD_SUFFIX
from plainbox_like.store.paths import open_regular
from plainbox_like.text import format_size

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

STREAMS = ("stdout", "stderr")
#: Longest output-free stretch before buffered records are flushed to disk.
FLUSH_INTERVAL = 0.5
MAX_SLUG = 150
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
#: Never through a symbolic link: a log file is only ever written inside its session.
_RAW_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW
_GZIP_HEADER = b"\x1f\x8b\x08\x00" + struct.pack("<I", 0) + b"\x00\x03"
#: The most a record file is inflated at a time while reading.
_INFLATE_CHUNK = 1 << 20
#: A finished deflate stream with nothing in it, and the gzip trailer of no data (CRC 0, size 0).
_EMPTY_TAIL = b"\x03\x00" + struct.pack("<II", 0, 0)


@attrs.frozen
class IORecord:
    """One chunk of output: seconds since the previous record, stream, bytes."""

    delay: float
    stream: str
    data: bytes


# -- names -------------------------------------------------------------------


def job_slug(job_id: str) -> str:
    """A file-name-safe form of *job_id*, as Plainbox makes it (``ns::x`` -> ``ns__x``)."""
    slug = _UNSAFE.sub("_", job_id)
    if slug.startswith("."):
        slug = "_" + slug[1:]
    if not slug or len(slug) > MAX_SLUG:
        slug = f"{slug[:MAX_SLUG - 13]}-{_short_hash(job_id)}"
    return slug


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:12]


def log_stems(job_id: str, attempt: int) -> Iterator[str]:
    """Candidate file stems for *attempt* of *job_id*, best first.

    The first attempt keeps Plainbox's name; later attempts add ``.attempt-N``.
    If a name is taken (another job with the same slug), a hash of the job id
    tells them apart, and a counter after that.
    """
    base = job_slug(job_id)
    suffix = "" if attempt == 1 else f".attempt-{attempt}"
    yield base + suffix
    hashed = f"{base[:MAX_SLUG - 13]}-{_short_hash(job_id)}"
    yield hashed + suffix
    for n in range(2, 10_000):
        yield f"{hashed}-{n}{suffix}"


def open_log_files(io_logs_dir: str, job_id: str, attempt: int) -> tuple[str, int]:
    """Claim the log files of a new attempt: create its ``.record.gz`` exclusively.

    Returns the stem and the open record file. Exclusive creation guarantees
    that no two attempts (and no two job ids) ever share log files, even
    across resumes; ``.stdout``/``.stderr`` share the claimed stem.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    for stem in log_stems(job_id, attempt):
        try:
            return stem, os.open(os.path.join(io_logs_dir, stem + RECORD_SUFFIX), flags, 0o600)
        except FileExistsError:
            continue
    raise RuntimeError(f"no free log file name for job {job_id!r}")  # pragma: no cover


def free_log_stem(taken: Container[str], job_id: str, attempt: int) -> str:
    """The first candidate stem of *attempt* of *job_id* not in *taken* (the stems in use)."""
    for stem in log_stems(job_id, attempt):
        if stem not in taken:
            return stem
    raise RuntimeError(f"no free log file name for job {job_id!r}")  # pragma: no cover


def open_reserved_log(io_logs_dir: str, stem: str) -> int:
    """Create the ``.record.gz`` of a stem chosen by :func:`free_log_stem`.

    The name is already in the journal; a file that appeared under it since
    the directory was listed can only be a leftover of this same attempt.
    """
    path = os.path.join(io_logs_dir, stem + RECORD_SUFFIX)
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW)


def create_log_files(io_logs_dir: str, job_id: str, attempt: int) -> str:
    """Like :func:`open_log_files`, closing the file; returns the stem."""
    stem, fd = open_log_files(io_logs_dir, job_id, attempt)
    os.close(fd)
    return stem


# -- writing -------------------------------------------------------------------


class RecordWriter:
    """Writes one attempt's ``.record.gz``, ``.stdout`` and ``.stderr``.

    *clock* is a monotonic clock (injected for tests); *started* is the job's
    start on that clock, from which the first record's delay is measured;
    *record_fd* is the record file already open (from :func:`open_log_files`).
    ``.stdout`` and ``.stderr`` are created at once, with the record file:
    every attempt has both, empty when its stream had no output (the on-disk
    contract, and what Checkbox writes); the runner creates them while the job's
    shell starts, so they cost the job no time.
    """

    def __init__(
        self,
        stem_path: str,
        *,
        started: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        level: int = 1,
        record_fd: int | None = None,
    ) -> None:
        self.stem_path = stem_path
        self._clock = clock
        self._last = clock() if started is None else started
        self._last_flush = self._last
        self._dirty = False
        if record_fd is None:
            record_fd = os.open(stem_path + RECORD_SUFFIX, _RAW_FLAGS, 0o600)
        self._record_fd = record_fd
        self._raw_fds: dict[str, int] = {}
        try:
            for stream in STREAMS:
                self._raw_fds[stream] = os.open(f"{stem_path}.{stream}", _RAW_FLAGS, 0o600)
        except BaseException:
            for fd in (record_fd, *self._raw_fds.values()):
                os.close(fd)
            raise
        self._level = level
        self._deflate: Any = None  # made by the first write (most jobs print little, many nothing)
        self._crc = 0
        self._size = 0
        self.bytes_written = {s: 0 for s in STREAMS}
        _write_all(self._record_fd, _GZIP_HEADER)
        self.closed = False

    def restart_clock(self, started: float) -> None:
        """Measure the first record's delay from *started* (when the process really began)."""
        self._last = self._last_flush = started

    def write(self, stream: str, data: bytes, now: float | None = None) -> None:
        """Record one chunk as read from *stream* at *now* (monotonic)."""
        if stream not in STREAMS:  # checked first: a bad record would hide all later ones
            raise ValueError(f"unknown stream {stream!r} (use stdout or stderr)")
        if not data:
            return
        now = self._clock() if now is None else now
        delay = max(0.0, now - self._last)
        self._last = now
        line = f'[{float(delay)!r},"{stream}","{base64.b64encode(data).decode("ascii")}"]\n'.encode("ascii")
        self._crc = isal_zlib.crc32(line, self._crc)
        self._size += len(line)
        if self._deflate is None:
            self._deflate = isal_zlib.compressobj(self._level, isal_zlib.DEFLATED, -15)
        compressed = self._deflate.compress(line)
        if compressed:
            _write_all(self._record_fd, compressed)
        _write_all(self._raw_fds[stream], data)
        self.bytes_written[stream] += len(data)
        self._dirty = True
        if now - self._last_flush >= FLUSH_INTERVAL:
            self.flush(now)

    def flush(self, now: float | None = None) -> None:
        """Sync-flush the deflate stream so everything so far can be decompressed."""
        if self._dirty:
            _write_all(self._record_fd, self._deflate.flush(isal_zlib.Z_SYNC_FLUSH))
            self._dirty = False
        self._last_flush = self._clock() if now is None else now

    def maybe_flush(self, now: float | None = None) -> None:
        """Flush if output has waited :data:`FLUSH_INTERVAL` seconds; call this while idle."""
        now = self._clock() if now is None else now
        if self._dirty and now - self._last_flush >= FLUSH_INTERVAL:
            self.flush(now)

    def close(self, durable: bool = False) -> None:
        """Finish the gzip stream; with *durable*, fsync the files that hold output."""
        if self.closed:
            return
        self.closed = True
        if self._deflate is None:
            _write_all(self._record_fd, _EMPTY_TAIL)
        else:
            tail = self._deflate.flush(isal_zlib.Z_FINISH)
            _write_all(self._record_fd, tail + struct.pack("<II", self._crc & 0xFFFFFFFF, self._size & 0xFFFFFFFF))
        fds = [self._record_fd, *self._raw_fds.values()]
        if durable and self._size:
            # An empty raw file has no data to sync (and a sync of the file alone never made its name durable).
            fdatasync_all([self._record_fd, *(self._raw_fds[s] for s in STREAMS if self.bytes_written[s])])
        for fd in fds:
            os.close(fd)


#: Threads that sync a job's other log files while the caller syncs the first (made at the first need).
_sync_pool: ThreadPoolExecutor | None = None


def _forget_sync_pool() -> None:
    global _sync_pool
    _sync_pool = None  # a forked child has none of its parent's threads: it makes its own


os.register_at_fork(after_in_child=_forget_sync_pool)


def fdatasync_all(fds: list[int]) -> None:
    """fdatasync every descriptor of *fds*, at the same time: a job that printed on both streams has three
    files to make durable, and the disk takes the three requests together (0.8 -> 0.5 ms here)."""
    global _sync_pool
    if len(fds) < 2:
        for fd in fds:
            os.fdatasync(fd)
        return
    if _sync_pool is None:
        from concurrent.futures import ThreadPoolExecutor  # 6 ms of imports: not at every start-up

        _sync_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="plainbox-like-sync")
    others = [_sync_pool.submit(os.fdatasync, fd) for fd in fds[1:]]
    try:
        os.fdatasync(fds[0])
    finally:
        errors = [future.exception() for future in others]  # waits for every one
    for error in errors:
        if error is not None:
            raise error


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


# -- reading -------------------------------------------------------------------


class RecordReader:
    """Iterates the records of a ``.record.gz``, never raising on a damaged file.

    After iteration, :attr:`complete` says whether the file ended cleanly and
    :attr:`problem` says what was wrong otherwise (cut, trailing garbage...).
    Memory stays bounded whatever the file holds: it is inflated a piece at a
    time, and a record line longer than *max_line* (default
    :func:`limits.max_state_size`) is a problem like any damage.
    """

    def __init__(self, path: str, chunk_size: int = 1 << 16, max_line: int | None = None) -> None:
        self.path = path
        self.chunk_size = chunk_size
        self.max_line = max_state_size() if max_line is None else max_line
        self.complete = False
        self.problem: str | None = None

    def __iter__(self) -> Iterator[IORecord]:
        pending: list[bytes] = []  # the start of the line being read, in pieces
        pending_size = 0
        line_no = 0
        try:
            fileobj = open_regular(self.path)  # a FIFO in its place must not hang a reader
        except OSError as exc:
            self.problem = f"cannot open: {exc.strerror}"
            return
        with fileobj:
            for text in self._decompressed(fileobj):
                *lines, rest = text.split(b"\n")
                for line in lines:
                    if pending:
                        line = b"".join([*pending, line])
                        pending, pending_size = [], 0
                    line_no += 1
                    too_long = len(line) > self.max_line
                    record = None if too_long else _parse_record(line)
                    if record is None:
                        self._bad(line_no, too_long)
                        return
                    yield record
                if rest:
                    pending.append(rest)
                    pending_size += len(rest)
                    if pending_size > self.max_line:
                        self._bad(line_no + 1, too_long=True)
                        return
            ended = self.problem is None
            if pending:
                record = _parse_record(b"".join(pending)) if ended else None
                if record is not None:
                    yield record
                elif ended:
                    self.problem = "last record is incomplete"
            self.complete = ended and self.problem is None

    def _bad(self, line_no: int, too_long: bool) -> None:
        limit = f" (longer than {format_size(self.max_line)}, the limit)" if too_long else ""
        self.problem = f"bad record at line {line_no}{limit}"
        self.complete = False

    def _decompressed(self, fileobj) -> Iterator[bytes]:
        decomp = zlib.decompressobj(31)
        seen_member = False
        while True:
            chunk = fileobj.read(self.chunk_size)
            if not chunk:
                break
            while chunk:
                try:
                    # At most 1 MiB at a time: a few bytes of a bomb inflate to gigabytes.
                    out = decomp.decompress(chunk, _INFLATE_CHUNK)
                except zlib.error as exc:
                    self.problem = f"corrupt gzip data ({exc})"
                    return
                seen_member = True
                if out:
                    yield out
                if not decomp.eof:
                    chunk = decomp.unconsumed_tail
                    continue
                chunk = decomp.unused_data
                if chunk and not chunk.startswith(b"\x1f\x8b"):
                    self.problem = "trailing garbage after the gzip stream"
                    return
                decomp = zlib.decompressobj(31)
                seen_member = False
        if seen_member and not decomp.eof:
            tail = decomp.flush()  # what the last call held back (all input was given to it)
            if tail:
                yield tail
            self.problem = "file was cut (gzip stream has no end)"
        elif not seen_member and fileobj.tell() == 0:
            self.problem = "empty file"


def _parse_record(line: bytes) -> IORecord | None:
    try:
        delay, stream, data = orjson.loads(line)
        if stream not in STREAMS or isinstance(delay, bool) or not isinstance(delay, (int, float)):
            return None
        return IORecord(float(delay), stream, base64.b64decode(data, validate=True))
    except (ValueError, TypeError, binascii.Error):
        return None


@attrs.frozen
class RecordsRead:
    """All records of a file, and whether it was complete."""

    records: list[IORecord]
    complete: bool
    problem: str | None


def read_records(path: str) -> RecordsRead:
    """Read every record of *path*; a damaged file yields its complete prefix."""
    reader = RecordReader(path)
    records = list(reader)
    return RecordsRead(records, reader.complete, reader.problem)


def records_from_json(items: list) -> list[IORecord]:
    """Records from Plainbox's inline ``io_log`` lists (session format v1)."""
    out = []
    for item in items:
        record = _parse_record(json.dumps(item).encode())
        if record is not None:
            out.append(record)
    return out
