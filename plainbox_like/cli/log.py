"""``log`` and ``replay``: a job's recorded output, as bytes or with its timing."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import BinaryIO, Callable, Iterable, Iterator

from plainbox_like.read import replay
from plainbox_like.store import locks
from plainbox_like.store.reader import load_session
from plainbox_like.cli import options, output
from plainbox_like.errors import CorruptSession, SessionNotFound
from plainbox_like.store.iolog import STREAMS, IORecord
from plainbox_like.read.replay import AttemptRef
from plainbox_like.store.paths import open_regular_file
from plainbox_like.store.reader import LoadedSession

#: ``--follow``: how often the raw output files are read, and the session reloaded.
FOLLOW_POLL = 0.2
FOLLOW_RELOAD = 0.5
READ_CHUNK = 1 << 20


def _float_type(minimum: float, strict: bool) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value != value or value == float("inf") or value < minimum or (strict and value == minimum):
            bound = "more than" if strict else "at least"
            raise argparse.ArgumentTypeError(f"must be {bound} {minimum:g}: {text!r}")
        return value

    return parse


def _add_common(p: argparse.ArgumentParser) -> None:
    options.add_session(p)
    p.add_argument("job", metavar="JOB", help="the job id")
    p.add_argument(
        "--stream",
        choices=("stdout", "stderr", "both"),
        default="both",
        help="which output to show (default: both, in the order it was written)",
    )
    p.add_argument(
        "--attempt",
        metavar="N",
        type=options.positive_int,
        help="which attempt of the job (default: the latest, a running one included)",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "log",
        help="print the output of a job",
        description="Print the bytes a job wrote, exactly as it wrote them, to standard output. "
        "Both streams are interleaved in the order they were recorded unless --stream picks one. "
        "A log cut short (by a crash or a reboot) is printed up to the cut, with a note on "
        "standard error.",
    )
    _add_common(p)
    p.add_argument(
        "-f",
        "--follow",
        action="store_true",
        help="if the job is running, keep printing its output as it is written until it ends",
    )
    p.set_defaults(func=cmd_log)

    p = subparsers.add_parser(
        "replay",
        help="replay the output of a job with its recorded timing",
        description="Write a job's output to standard output with the pauses it was recorded with, "
        "like a screen recording.",
    )
    _add_common(p)
    p.add_argument(
        "--speed",
        metavar="X",
        type=_float_type(replay.MIN_SPEED, strict=False),
        default=1.0,
        help=f"play X times as fast (default: 1; at least {replay.MIN_SPEED:g}, 1000 times as slow)",
    )
    p.add_argument(
        "--idle-limit",
        metavar="S",
        type=_float_type(0.0, strict=False),
        help="shorten any pause longer than S seconds to S (before --speed applies)",
    )
    p.set_defaults(func=cmd_replay)


# -- shared --------------------------------------------------------------------


def _binary_stdout() -> BinaryIO:
    sys.stdout.flush()
    return sys.stdout.buffer


def _streams(choice: str) -> tuple[str, ...]:
    return STREAMS if choice == "both" else (choice,)


def _open(args: argparse.Namespace) -> tuple[LoadedSession, AttemptRef]:
    path = options.repository(args).resolve(args.session)
    loaded = load_session(path)
    return loaded, replay.select_attempt(loaded, args.job, args.attempt)


def _read(loaded: LoadedSession, ref: AttemptRef, streams: tuple[str, ...]) -> tuple[Iterator[IORecord], Callable[[], None]]:
    """The attempt's records, read as they are iterated (a note on stderr says where from if that is unusual),
    and what to call once they have been: a note on stderr if the log was cut or damaged."""
    reader = replay.OutputReader(loaded, ref)
    what = f"job {ref.job_id!r} attempt {ref.attempt}"
    if reader.source == "none":
        output.note(f"{what} kept no output log")
    elif reader.source == "raw":
        order = " (their relative order is unknown)" if len(streams) > 1 else ""
        output.note(f"{reader.path}: missing; showing the raw .stdout and .stderr files without timing{order}")
    count = 0

    def counted() -> Iterator[IORecord]:
        nonlocal count
        for record in reader:
            count += 1
            yield record

    def after() -> None:
        if ref.running and locks.writer_alive(loaded.path):
            output.note(f"{what} is still running; this is its output so far")
        elif reader.problem:
            extra = sum(reader.raw_extra.get(s, 0) for s in streams)
            more = f" (the raw {'/'.join('.' + s for s in streams)} files hold {extra} more bytes)" if extra else ""
            output.note(f"{reader.path}: {reader.problem}; showing the {count} records before it{more}")

    return counted(), after


# -- log -----------------------------------------------------------------------


def cmd_log(args: argparse.Namespace) -> int:
    loaded, ref = _open(args)
    streams = _streams(args.stream)
    out = _binary_stdout()
    if args.follow and ref.running and locks.writer_alive(loaded.path):
        stopped = follow(loaded, ref, streams, out)
        if stopped:
            output.note(stopped)
        return 0
    records, after = _read(loaded, ref, streams)
    for record in replay.select_streams(records, streams):  # one record in memory at a time
        out.write(record.data)
    out.flush()
    after()
    return 0


def _attempt_state(path: str, ref: AttemptRef) -> tuple[bool, str | None]:
    """Whether *ref* has ended (result, abandoned, writer gone), and a note if it did not end well."""
    try:
        loaded = load_session(path)
    except SessionNotFound:
        return True, "the session directory is gone"
    except CorruptSession:
        return False, None  # maybe a moment of inconsistency; look again later
    state = loaded.state
    if any(a.attempt == ref.attempt for a in state.results.get(ref.job_id, ())):
        return True, None
    running = state.running_jobs.get(ref.job_id)
    if running is None or running.attempt != ref.attempt:
        return True, f"job {ref.job_id!r} attempt {ref.attempt} ended without a result"
    if not locks.writer_alive(path):
        return True, f"the session's writer stopped while job {ref.job_id!r} was running"
    return False, None


def follow(
    loaded: LoadedSession,
    ref: AttemptRef,
    streams: Iterable[str],
    out: BinaryIO,
    *,
    sleep: Callable[[float], object] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> str | None:
    """Print a running attempt's output as it is written, until it has a result.

    What is already in the record file is printed in recorded order; after
    that the raw ``.stdout``/``.stderr`` files are polled from where the
    records left off (interleaving across streams is then as good as the
    polling). Returns a note if the attempt ended without a result.
    """
    streams = tuple(streams)
    offsets = {s: 0 for s in STREAMS}
    for record in replay.OutputReader(loaded, ref) if ref.io_log_filename else ():
        if record.stream in streams:
            out.write(record.data)
        offsets[record.stream] += len(record.data)
    out.flush()
    paths = replay.log_paths(loaded, ref) or {}
    files: dict[str, int] = {}

    def drain() -> bool:
        got = False
        for stream in streams:
            if stream not in paths:
                continue
            if stream not in files:
                try:
                    files[stream] = open_regular_file(paths[stream])
                except FileNotFoundError:
                    continue
            while True:
                data = os.pread(files[stream], READ_CHUNK, offsets[stream])
                if not data:
                    break
                offsets[stream] += len(data)
                out.write(data)
                got = True
        if got:
            out.flush()
        return got

    try:
        next_check = clock() + FOLLOW_RELOAD
        while True:
            got = drain()
            if clock() >= next_check:
                ended, problem = _attempt_state(loaded.path, ref)
                if ended:
                    drain()
                    return problem
                next_check = clock() + FOLLOW_RELOAD
            if not got:
                sleep(FOLLOW_POLL)
    finally:
        for fd in files.values():
            os.close(fd)


# -- replay --------------------------------------------------------------------


def cmd_replay(args: argparse.Namespace) -> int:
    loaded, ref = _open(args)
    streams = _streams(args.stream)
    records, after = _read(loaded, ref, streams)
    out = _binary_stdout()

    def write(data: bytes) -> None:
        out.write(data)
        out.flush()

    replay.replay(
        records,
        write,
        streams=streams,
        speed_factor=args.speed,
        idle_limit=args.idle_limit,
        sleep=time.sleep,
        clock=time.monotonic,
    )
    after()
    return 0
