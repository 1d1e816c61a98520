"""io-logs: record.gz writer and tolerant reader, raw stdout/stderr, file names."""

from __future__ import annotations

import base64
import gzip
import json
import os
import random
import re
import subprocess
import tempfile
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import strategies
from factories import wait_until
from plainbox_like.store import iolog

SAFE = re.compile(r"^[A-Za-z0-9._-]+$")


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _write(stem: str, chunks, start: float = 1000.0):
    """Write *chunks* (stream, data, advance) with a fake clock; return the expected records and file sizes."""
    clock = FakeClock(start)
    writer = iolog.RecordWriter(stem, started=start, clock=clock)
    expected = []
    sizes = []
    last = start
    for stream, data, advance in chunks:
        clock.now += advance
        writer.write(stream, data)
        expected.append(iolog.IORecord(max(0.0, clock.now - last), stream, data))
        last = clock.now
        sizes.append(os.path.getsize(stem + ".record.gz"))
    writer.close()
    return expected, sizes


def _line(record: iolog.IORecord) -> bytes:
    return (
        json.dumps([record.delay, record.stream, base64.b64encode(record.data).decode("ascii")], separators=(",", ":"))
        + "\n"
    ).encode("ascii")


# -- round trip -------------------------------------------------------------------------


@settings(max_examples=120, deadline=None)
@given(strategies.io_chunks)
def test_round_trip(chunks):
    with tempfile.TemporaryDirectory() as directory:
        stem = os.path.join(directory, "job")
        expected, _ = _write(stem, chunks)
        read = iolog.read_records(stem + ".record.gz")
        assert read.records == expected
        assert read.complete
        assert read.problem is None
        with open(stem + ".record.gz", "rb") as f:
            raw = gzip.decompress(f.read())  # checks CRC and size too
        assert raw == b"".join(_line(r) for r in expected)
        for stream in iolog.STREAMS:
            data = b"".join(r.data for r in expected if r.stream == stream)
            # Both raw files always exist, empty for a stream without output.
            with open(f"{stem}.{stream}", "rb") as f:
                assert f.read() == data


def test_delays_follow_the_clock():
    with tempfile.TemporaryDirectory() as directory:
        stem = os.path.join(directory, "job")
        expected, _ = _write(stem, [("stdout", b"a", 0.25), ("stderr", b"b", 0.0), ("stdout", b"c\n", 2.5)], start=10.0)
        delays = [r.delay for r in iolog.read_records(stem + ".record.gz").records]
        assert delays == [0.25, 0.0, 2.5]
        assert [r.delay for r in expected] == delays


def test_empty_chunks_are_not_records(tmp_path):
    stem = str(tmp_path / "job")
    writer = iolog.RecordWriter(stem, started=0.0, clock=FakeClock(1.0))
    writer.write("stdout", b"")
    writer.write("stdout", b"x")
    writer.close()
    assert [r.data for r in iolog.read_records(stem + ".record.gz").records] == [b"x"]


@pytest.mark.parametrize("durable", [False, True])
def test_a_job_without_output_has_a_complete_empty_gzip(tmp_path, durable):
    stem = str(tmp_path / "job")
    iolog.RecordWriter(stem, started=0.0, clock=FakeClock(1.0)).close(durable=durable)
    path = stem + ".record.gz"
    assert gzip.decompress(open(path, "rb").read()) == b""
    assert subprocess.run(["zcat", path], capture_output=True, check=True).stdout == b""
    assert iolog.read_records(path) == iolog.RecordsRead([], True, None)
    # Both raw files exist, empty: every attempt has them (the on-disk contract, as Checkbox writes it).
    assert sorted(os.listdir(tmp_path)) == ["job.record.gz", "job.stderr", "job.stdout"]
    assert os.path.getsize(stem + ".stdout") == os.path.getsize(stem + ".stderr") == 0


def test_unknown_stream_is_refused_without_damaging_the_log(tmp_path):
    stem = str(tmp_path / "job")
    writer = iolog.RecordWriter(stem, started=0.0, clock=FakeClock(1.0))
    writer.write("stdout", b"before")
    with pytest.raises(ValueError):
        writer.write("stdin", b"nope")
    writer.write("stderr", b"after")
    writer.close()
    read = iolog.read_records(stem + ".record.gz")
    assert [r.data for r in read.records] == [b"before", b"after"]
    assert read.complete
    assert sorted(os.listdir(tmp_path)) == ["job.record.gz", "job.stderr", "job.stdout"]


def _sample_chunks(count: int, seed: int = 1, advance: float = 0.6):
    rng = random.Random(seed)
    return [
        (rng.choice(iolog.STREAMS), rng.randbytes(rng.randint(1, 400)), advance)
        for _ in range(count)
    ]


def test_standard_tools_read_the_file(tmp_path):
    stem = str(tmp_path / "job")
    expected, _ = _write(stem, _sample_chunks(60))
    path = stem + ".record.gz"
    with open(path, "rb") as f:
        data = f.read()
    assert data[:2] == b"\x1f\x8b"
    lines = gzip.decompress(data)
    assert lines == b"".join(_line(r) for r in expected)
    zcat = subprocess.run(["zcat", path], capture_output=True, check=True)
    assert zcat.stdout == lines
    subprocess.run(["gzip", "-t", path], check=True)
    with gzip.open(path, "rt", encoding="ascii") as f:
        for record, text in zip(expected, f):
            delay, stream, b64 = json.loads(text)
            assert (delay, stream, base64.b64decode(b64)) == (record.delay, record.stream, record.data)


# -- damaged files ------------------------------------------------------------------------


def test_cut_files_yield_every_flushed_record(tmp_path):
    stem = str(tmp_path / "job")
    # The clock advances past FLUSH_INTERVAL between writes, so each record is flushed.
    expected, sizes = _write(stem, _sample_chunks(80, seed=2, advance=iolog.FLUSH_INTERVAL + 0.1))
    with open(stem + ".record.gz", "rb") as f:
        full = f.read()
    cut_path = str(tmp_path / "cut.record.gz")
    rng = random.Random(5)
    offsets = rng.sample(range(len(full)), 200) + [0, 1, 9, 10, 11, len(full) - 1, len(full) - 8, len(full) - 9]
    for offset in offsets:
        with open(cut_path, "wb") as f:
            f.write(full[:offset])
        read = iolog.read_records(cut_path)  # must not raise
        n = len(read.records)
        assert read.records == expected[:n], offset
        assert not read.complete, offset
        assert read.problem, offset
        flushed = sum(1 for size in sizes if size <= offset)
        assert n >= flushed, (offset, n, flushed)
        if offset >= len(full) - 8:  # only the trailer is missing
            assert n == len(expected)
    with open(cut_path, "wb") as f:
        f.write(full)
    assert iolog.read_records(cut_path).complete


def test_a_log_that_is_still_being_written_can_be_read(tmp_path):
    stem = str(tmp_path / "job")
    clock = FakeClock(0.0)
    writer = iolog.RecordWriter(stem, started=0.0, clock=clock)
    for i in range(10):
        clock.now += 1.0
        writer.write("stdout", b"line %d\n" % i)
        read = iolog.read_records(stem + ".record.gz")
        assert [r.data for r in read.records] == [b"line %d\n" % k for k in range(i + 1)]
        assert not read.complete
    writer.write("stdout", b"unflushed")
    clock.now += 0.1
    writer.maybe_flush()  # not due yet
    clock.now += 1.0
    writer.maybe_flush()
    assert iolog.read_records(stem + ".record.gz").records[-1].data == b"unflushed"
    writer.close()
    assert iolog.read_records(stem + ".record.gz").complete


@pytest.mark.parametrize("garbage", [b"garbage", b"\0" * 64, b"\x1f", b"\x1f\x8b\x08\xffjunk"])
def test_trailing_garbage_is_tolerated_and_reported(tmp_path, garbage):
    stem = str(tmp_path / "job")
    expected, _ = _write(stem, _sample_chunks(5))
    with open(stem + ".record.gz", "ab") as f:
        f.write(garbage)
    read = iolog.read_records(stem + ".record.gz")
    assert read.records == expected
    assert not read.complete
    assert read.problem


def test_concatenated_members_are_read(tmp_path):
    first, second = str(tmp_path / "a"), str(tmp_path / "b")
    expected_a, _ = _write(first, _sample_chunks(3, seed=3))
    expected_b, _ = _write(second, _sample_chunks(4, seed=4))
    with open(first + ".record.gz", "ab") as out, open(second + ".record.gz", "rb") as f:
        out.write(f.read())
    read = iolog.read_records(first + ".record.gz")
    assert read.records == expected_a + expected_b
    assert read.complete


def test_corrupt_bytes_never_raise(tmp_path):
    stem = str(tmp_path / "job")
    _write(stem, _sample_chunks(20, seed=6))
    with open(stem + ".record.gz", "rb") as f:
        full = bytearray(f.read())
    rng = random.Random(9)
    path = str(tmp_path / "bad.record.gz")
    for _ in range(100):
        damaged = bytearray(full)
        for _ in range(rng.randint(1, 4)):
            damaged[rng.randrange(len(damaged))] ^= 1 << rng.randrange(8)
        with open(path, "wb") as f:
            f.write(damaged)
        read = iolog.read_records(path)
        assert isinstance(read.records, list)


@pytest.mark.parametrize(
    "content, problem",
    [(b"", "empty"), (b"not gzip", "corrupt"), (gzip.compress(b'[0.0,"stdout","aGk="]\nnot a record\n'), "bad record")],
)
def test_damaged_files_are_described(tmp_path, content, problem):
    path = tmp_path / "x.record.gz"
    path.write_bytes(content)
    read = iolog.read_records(str(path))
    assert not read.complete
    assert problem in read.problem
    missing = iolog.read_records(str(tmp_path / "missing.record.gz"))
    assert missing.records == [] and not missing.complete and missing.problem


# -- file names -------------------------------------------------------------------------


def test_first_attempt_keeps_plainbox_name(tmp_path):
    assert iolog.job_slug("ns::x") == "ns__x"
    assert iolog.create_log_files(str(tmp_path), "ns::x", 1) == "ns__x"
    assert iolog.create_log_files(str(tmp_path), "com.canonical.certification::cpu/info", 1) == (
        "com.canonical.certification__cpu_info"
    )


def _assert_safe_stem(io_logs: str, stem: str) -> None:
    assert SAFE.match(stem), stem
    assert stem not in (".", "..")
    assert not stem.startswith(".")
    for ext in (".record.gz", ".stdout", ".stderr"):
        name = stem + ext
        assert len(name.encode()) < 200, name
        path = os.path.normpath(os.path.join(io_logs, name))
        assert os.path.dirname(path) == io_logs


@settings(max_examples=200, deadline=None)
@given(job_id=st.text(max_size=300), attempt=st.integers(min_value=1, max_value=10**6))
def test_slugs_are_safe(job_id, attempt):
    io_logs = "/s/x.session/io-logs"
    assert SAFE.match(iolog.job_slug(job_id))
    for stem, _ in zip(iolog.log_stems(job_id, attempt), range(4)):
        _assert_safe_stem(io_logs, stem)


@pytest.mark.parametrize(
    "job_id",
    ["../../x", "/abs", "/etc/passwd", "..", ".", "", "a/../../b", "x\0y", "~root", ".hidden", "-rf", "é" * 5000, "x" * 10_000],
)
def test_hostile_ids_stay_inside_io_logs(tmp_path, job_id):
    io_logs = tmp_path / "s" / "io-logs"
    io_logs.mkdir(parents=True)
    stems = [iolog.create_log_files(str(io_logs), job_id, attempt) for attempt in (1, 2, 99)]
    assert len(set(stems)) == 3
    for stem in stems:
        _assert_safe_stem(str(io_logs), stem)
        assert (io_logs / (stem + ".record.gz")).is_file()
    assert os.listdir(tmp_path) == ["s"]
    assert os.listdir(tmp_path / "s") == ["io-logs"]


def test_10kb_id_gives_short_names():
    stem = next(iolog.log_stems("j" * 10_000, 12345))
    assert len((stem + ".record.gz").encode()) < 200
    assert next(iolog.log_stems("j" * 10_000, 1)) != next(iolog.log_stems("j" * 9_999 + "k", 1))


def test_colliding_ids_and_attempts_never_share_files(tmp_path):
    io_logs = str(tmp_path)
    ids = ["a/b", "a:b", "a b", "a_b", "x", "x.attempt-2", "ns::x", "ns__x", "ns/x"]
    stems = {}
    for job_id in ids:
        for attempt in (1, 2, 3):
            stems[(job_id, attempt)] = iolog.create_log_files(io_logs, job_id, attempt)
    assert len(set(stems.values())) == len(stems)
    # Resuming and asking again for an attempt whose files exist gives new files, never the same ones.
    again = iolog.create_log_files(io_logs, "a/b", 1)
    assert again not in stems.values()
    assert stems[("a/b", 1)] == "a_b"  # first come keeps the Plainbox name
    assert stems[("a:b", 1)].startswith("a_b-")  # the next one is told apart by a hash of its id
    assert stems[("a/b", 2)] == "a_b.attempt-2"
    assert stems[("ns::x", 1)] == "ns__x"
    assert stems[("x", 2)] == "x.attempt-2" and stems[("x.attempt-2", 1)] != "x.attempt-2"
    records = sorted(name for name in os.listdir(io_logs) if name.endswith(".record.gz"))
    assert len(records) == len(stems) + 1


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.text(alphabet="ab/:._ \0", max_size=6), st.integers(1, 3)), unique=True, max_size=12))
def test_distinct_attempts_get_distinct_files(pairs):
    with tempfile.TemporaryDirectory() as io_logs:
        stems = [iolog.create_log_files(io_logs, job_id, attempt) for job_id, attempt in pairs]
        assert len(set(stems)) == len(stems)
        for stem in stems:
            _assert_safe_stem(io_logs, stem)


def test_a_jobs_log_files_are_synced_together_and_every_error_is_told(tmp_path, monkeypatch):
    fds = [os.open(tmp_path / name, os.O_WRONLY | os.O_CREAT, 0o600) for name in ("r", "o", "e")]
    try:
        synced = []
        real = os.fdatasync

        def recording(fd):
            synced.append((fd, threading.current_thread().name))
            real(fd)

        monkeypatch.setattr(os, "fdatasync", recording)
        iolog.fdatasync_all(fds)
        assert sorted(fd for fd, _ in synced) == sorted(fds)
        assert len({name for _, name in synced}) > 1  # not one after the other in this thread

        def failing(fd):
            if fd == fds[2]:
                raise OSError(5, "Input/output error")
            synced.append((fd, "again"))

        synced.clear()
        monkeypatch.setattr(os, "fdatasync", failing)
        with pytest.raises(OSError, match="Input/output error"):
            iolog.fdatasync_all(fds)
        assert sorted(fd for fd, _ in synced) == sorted(fds[:2])  # the others were still synced
    finally:
        for fd in fds:
            os.close(fd)


def test_a_forked_process_syncs_with_threads_of_its_own(tmp_path):
    # A worker is forked from the runner: a pool of the runner's would have no threads in it, and hang it.
    fds = [os.open(tmp_path / name, os.O_WRONLY | os.O_CREAT, 0o600) for name in ("r", "o")]
    iolog.fdatasync_all(fds)  # the pool exists in this process now
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            iolog.fdatasync_all(fds)
            code = 0
        finally:
            os._exit(code)
    ended = []
    try:
        assert wait_until(lambda: ended.append(os.waitpid(pid, os.WNOHANG)) or ended[-1][0] == pid, timeout=20)
        assert os.waitstatus_to_exitcode(ended[-1][1]) == 0
    finally:
        try:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        for fd in fds:
            os.close(fd)
