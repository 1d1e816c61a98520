"""A job's recorded output: finding an attempt's log, reading it, and replaying it with its timing.

Replay is a pipeline of generators over :class:`~plainbox_like.store.iolog.IORecord`
(whose ``delay`` is already relative: seconds since the previous record)::

    play(speed(cap_idle(select_streams(records, {"stdout"}), 2.0), 4.0), write, sleep)

Every stage is pure; :func:`play` takes ``write`` and ``sleep`` functions, so
nothing here needs a terminal or real waiting.
"""

from __future__ import annotations

import os
import time
from typing import Callable, Iterable, Iterator

import attrs

from plainbox_like.store import iolog
from plainbox_like.errors import AttemptNotFound, JobNotFound, LogMissing, LogUnreadable
from plainbox_like.store.iolog import STREAMS, IORecord
from plainbox_like.store.model import Attempt
from plainbox_like.store.paths import open_regular, open_regular_file
from plainbox_like.store.confine import log_field, log_file_names, session_file  # noqa: F401
from plainbox_like.store.names import RECORD_SUFFIX  # noqa: F401
from plainbox_like.store.reader import LoadedSession  # noqa: F401

#: The slowest ``--speed``: slower is no replay anyone waits for (and a tiny factor overflows the pauses).
MIN_SPEED = 0.001
#: The longest single pause :func:`play` sleeps (68 years): any platform's sleep takes it, whatever
#: delay a damaged or hostile log records.
MAX_PAUSE = float(2**31 - 1)


# -- the pipeline ------------------------------------------------------------


def select_streams(records: Iterable[IORecord], streams: Iterable[str]) -> Iterator[IORecord]:
    """Keep the records of *streams*; the delays of dropped records add to the next kept one.

    So the kept records still come out at the moments they were recorded.
    """
    wanted = frozenset(streams)
    carried = 0.0
    for record in records:
        if record.stream in wanted:
            yield record if not carried else attrs.evolve(record, delay=record.delay + carried)
            carried = 0.0
        else:
            carried += record.delay


def to_absolute(records: Iterable[IORecord]) -> Iterator[tuple[float, IORecord]]:
    """``(seconds since the start, record)`` pairs."""
    now = 0.0
    for record in records:
        now += record.delay
        yield now, record


def to_relative(timed: Iterable[tuple[float, IORecord]]) -> Iterator[IORecord]:
    """The inverse of :func:`to_absolute`: records whose delay is the time since the previous one."""
    previous = 0.0
    for moment, record in timed:
        yield attrs.evolve(record, delay=max(0.0, moment - previous))
        previous = moment


def cap_idle(records: Iterable[IORecord], idle_limit: float | None) -> Iterator[IORecord]:
    """Shorten every pause longer than *idle_limit* seconds to *idle_limit* (``None``: no limit)."""
    if idle_limit is not None and idle_limit < 0:
        raise ValueError("idle limit must not be negative")
    for record in records:
        if idle_limit is not None and record.delay > idle_limit:
            record = attrs.evolve(record, delay=float(idle_limit))
        yield record


def speed(records: Iterable[IORecord], factor: float) -> Iterator[IORecord]:
    """Play *factor* times as fast (2.0: pauses take half as long)."""
    if not factor > 0:
        raise ValueError("speed factor must be positive")
    for record in records:
        yield record if factor == 1 else attrs.evolve(record, delay=record.delay / factor)


def play(
    records: Iterable[IORecord],
    write: Callable[[bytes], object],
    sleep: Callable[[float], object],
    clock: Callable[[], float] | None = None,
) -> int:
    """Write each record's data after its delay; returns the number of bytes written.

    Without *clock*, sleeps exactly each record's delay (zero delays are not
    slept). With a monotonic *clock*, sleeps until each record's moment since
    the start, so time spent writing does not add up over a long replay.
    """
    written = 0
    start = clock() if clock is not None else 0.0
    moment = 0.0
    for record in records:
        moment += record.delay
        if clock is None:
            pause = record.delay
        else:
            pause = start + moment - clock()
        if pause > 0:
            sleep(min(pause, MAX_PAUSE))
        write(record.data)
        written += len(record.data)
    return written


# -- finding an attempt ------------------------------------------------------


@attrs.frozen
class AttemptRef:
    """One attempt of one job in a loaded session."""

    job_id: str
    attempt: int
    io_log_filename: str | None
    #: The result, if the attempt has finished.
    result: Attempt | None = None
    #: Whether the attempt is in ``running_jobs`` (started, no result).
    running: bool = False


def known_jobs(loaded: LoadedSession) -> list[str]:
    """Every job the session mentions: planned, with results, or running."""
    state = loaded.state
    return list(dict.fromkeys([*state.desired_job_list, *state.results, *state.running_jobs]))


def attempts_of(loaded: LoadedSession, job_id: str) -> list[AttemptRef]:
    """The attempts of *job_id*, oldest first, a running one last."""
    state = loaded.state
    refs = [AttemptRef(job_id, a.attempt, a.io_log_filename, result=a) for a in state.results.get(job_id, ())]
    running = state.running_jobs.get(job_id)
    if running is not None:
        refs.append(AttemptRef(job_id, running.attempt, running.io_log_filename, running=True))
    refs.sort(key=lambda ref: (ref.attempt, ref.running))
    return refs


def select_attempt(loaded: LoadedSession, job_id: str, attempt: int | None = None) -> AttemptRef:
    """The attempt numbered *attempt* of *job_id*, or its latest (a running attempt counts)."""
    where = f"session {loaded.id} ({loaded.path})"
    refs = attempts_of(loaded, job_id)
    if not refs:
        if job_id in loaded.state.jobs or job_id in loaded.state.desired_job_list:
            raise JobNotFound(f"job {job_id!r} has not run yet in {where}")
        raise JobNotFound(f"no job {job_id!r} in {where}")
    if attempt is None:
        return refs[-1]
    matching = [ref for ref in refs if ref.attempt == attempt]
    if not matching:
        numbers = ", ".join(str(n) for n in dict.fromkeys(ref.attempt for ref in refs))
        raise AttemptNotFound(f"job {job_id!r} has no attempt {attempt} in {where} (attempts: {numbers})")
    return matching[-1]


def log_paths(loaded: LoadedSession, ref: AttemptRef) -> dict[str, str] | None:
    """Absolute paths of the attempt's ``record``, ``stdout`` and ``stderr`` files (``None``: no log).

    Raises :class:`~plainbox_like.errors.OutsideSession` if the state names a log outside the session.
    """
    name = ref.io_log_filename
    if not name:
        return None
    field = log_field(ref.job_id, ref.attempt)
    # The raw files too: a .stdout that is a link to elsewhere is never read either.
    return {key: session_file(loaded.path, file_name, field) for key, file_name in log_file_names(name).items()}


# -- reading an attempt's output -----------------------------------------------


@attrs.frozen
class Output:
    """The records of one attempt, and where they came from."""

    records: list[IORecord]
    #: ``record`` (the .record.gz), ``raw`` (.stdout/.stderr, no timing),
    #: ``inline`` (Plainbox v1 state) or ``none`` (the attempt kept no log).
    source: str
    #: What was wrong with the record file (cut, damaged), if anything.
    problem: str | None = None
    #: The file read from.
    path: str | None = None
    #: Bytes per stream the raw files hold beyond what the records cover.
    raw_extra: dict[str, int] = attrs.Factory(dict)

    @property
    def complete(self) -> bool:
        return self.problem is None


def _raw_size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


#: Bytes read at a time from a raw ``.stdout``/``.stderr`` file.
RAW_CHUNK = 1 << 20


def _raw_records(path: str, stream: str) -> Iterator[IORecord]:
    """The content of a raw output file as records of at most :data:`RAW_CHUNK` bytes (none if it is missing)."""
    try:
        f = open_regular(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise LogMissing(f"{path}: cannot read: {exc.strerror}") from None
    with f:
        while True:
            try:
                data = f.read(RAW_CHUNK)
            except OSError as exc:
                raise LogMissing(f"{path}: cannot read: {exc.strerror}") from None
            if not data:
                return
            yield IORecord(0.0, stream, data)


def _log_file_size(path: str, ref: AttemptRef) -> int | None:
    """The size of one file of *ref*'s log (``None``: it does not exist).

    Raises :class:`LogUnreadable` naming it if it is there but cannot be read as a
    regular file (a FIFO in its place would hang a reader).
    """
    try:
        fd = open_regular_file(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise LogUnreadable(
            f"{path}: cannot read the log of job {ref.job_id!r} attempt {ref.attempt}: {exc.strerror}"
        ) from None
    try:
        return os.fstat(fd).st_size
    finally:
        os.close(fd)


class OutputReader:
    """The records of one attempt, read as they are iterated: memory stays the same however long the log.

    Where the output comes from is known at once (:attr:`source`, :attr:`path`);
    what was wrong with it (:attr:`problem`) and how much more the raw files
    hold (:attr:`raw_extra`) once the records have been iterated. See
    :func:`read_output`.
    """

    def __init__(self, loaded: LoadedSession, ref: AttemptRef) -> None:
        self._inline = loaded.inline_io_logs.get((ref.job_id, ref.attempt))
        self._paths = log_paths(loaded, ref)
        self.problem: str | None = None
        self.path: str | None = None
        self.raw_extra: dict[str, int] = {}
        paths = self._paths
        if paths is None:
            self.source = "none" if self._inline is None else "inline"
            return
        sizes = {key: _log_file_size(path, ref) for key, path in paths.items()}
        if sizes["record"] is not None:
            self.source, self.path = "record", paths["record"]
        elif self._inline is not None:
            self.source = "inline"
        else:
            # Empty raw files say nothing: every attempt has both, so without the record file they are no log.
            if not any(sizes[s] for s in STREAMS):
                raise LogMissing(f"{paths['record']}: log of job {ref.job_id!r} attempt {ref.attempt} is missing")
            self.source, self.path = "raw", paths["record"]

    def __iter__(self) -> Iterator[IORecord]:
        if self.source == "inline":
            yield from iolog.records_from_json(self._inline)
        elif self.source == "raw":
            for stream in STREAMS:
                yield from _raw_records(self._paths[stream], stream)
        elif self.source == "record":
            reader = iolog.RecordReader(self._paths["record"])
            shown = {s: 0 for s in STREAMS}
            for record in reader:
                shown[record.stream] += len(record.data)
                yield record
            self.problem = reader.problem
            if not reader.complete:
                paths = self._paths
                self.raw_extra = {s: n for s in STREAMS if (n := _raw_size(paths[s]) - shown[s]) > 0}


def read_output(loaded: LoadedSession, ref: AttemptRef) -> Output:
    """All recorded output of *ref*, in recorded order.

    Prefers the ``.record.gz`` (read tolerantly: a cut file gives the records
    before the cut, and ``problem`` says so); falls back to the raw
    ``.stdout``/``.stderr`` files (stdout first; their relative order is
    unknown) and to logs kept inside a Plainbox v1 state. This holds the
    whole output in memory: :class:`OutputReader` reads it as it goes.
    """
    reader = OutputReader(loaded, ref)
    records = list(reader)
    return Output(records, reader.source, reader.problem, reader.path, reader.raw_extra)


def replay(
    records: Iterable[IORecord],
    write: Callable[[bytes], object],
    *,
    streams: Iterable[str] = STREAMS,
    speed_factor: float = 1.0,
    idle_limit: float | None = None,
    sleep: Callable[[float], object] = time.sleep,
    clock: Callable[[], float] | None = time.monotonic,
) -> int:
    """The whole pipeline: stream selection, idle cap, speed, then :func:`play`."""
    pipeline = speed(cap_idle(select_streams(records, streams), idle_limit), speed_factor)
    return play(pipeline, write, sleep, clock)
