"""``check`` and ``repair`` in the library: fault injection on real sessions.

Every fault test follows the same script: build a session by running real
jobs, damage it, then

* :func:`check_session` reports exactly the expected problems;
* :func:`repair_session` fixes them and says what it did;
* the session then checks clean, loads, and resumes;
* every byte of every file repair replaced or removed is in ``quarantine/``.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import strategies
from plainbox_like.maintain import salvage as salvaging
from plainbox_like.maintain import logscan
from plainbox_like.store import locks
from plainbox_like.store.journal import parse_journal
from plainbox_like.store.model import Attempt
from plainbox_like.maintain import check as checking
from plainbox_like.maintain import repair as repairing
from plainbox_like.store import codec, iolog
from plainbox_like.run.report import RunSummary
from plainbox_like.run import prepare
from plainbox_like.run import settle
from plainbox_like.errors import PlainboxLikeError, SessionLocked
from plainbox_like.store.model import FLAG_INCOMPLETE, OUTCOME_CRASH, OUTCOME_PASS
from plainbox_like.store.repository import SessionRepository
from plainbox_like.store.writer import SessionWriter
from plainbox_like.store.reader import load_session
from factories import (
    journaled_run,
    logged_checkbox_session,
    plainbox_session,
    quarantined_files,
    run_session,
    session_files,
)

JOBS = ["c1", "c2", "c3"]


# -- reading sessions ----------------------------------------------------------------


def problems(report: checking.SessionCheck) -> set[tuple[str, str]]:
    return {(f.file, f.kind) for f in report.problems}


def assert_nothing_deleted(before: dict[str, bytes], path: str) -> None:
    """Every file as it was before repair is still in place, or in quarantine with the same bytes."""
    after = session_files(path)
    kept = quarantined_files(path)
    for rel, data in before.items():
        if after.get(rel) != data:
            assert kept.get(rel) == data, f"{rel}: changed by repair and not kept in quarantine"


def repair_and_verify(path: str, expected: set[tuple[str, str]], before_damage=None) -> repairing.RepairResult:
    """The common script: check finds *expected*, repair fixes it, nothing is deleted, check is clean."""
    report = checking.check_session(path)
    assert problems(report) == expected, report.problems
    assert not report.healthy
    before = session_files(path)
    said = []
    result = repairing.repair_session(path, say=said.append)
    assert result.actions and said == result.actions
    assert_nothing_deleted(before, path)
    after = checking.check_session(path)
    assert after.healthy, after.problems
    assert result.after is not None and result.after.healthy
    load_session(path)  # loads without error
    with open(os.path.join(result.quarantine, "repair.log"), encoding="utf-8") as f:
        assert f.read().splitlines()[: len(result.actions)] == result.actions
    return result


def resume(path: str) -> RunSummary:
    root = os.path.dirname(os.path.dirname(path))
    prepared = prepare.resume_session(SessionRepository(root), path)
    return prepare.run_prepared(prepared)


# -- healthy sessions -------------------------------------------------------------------


def test_healthy_closed_session(root, finished_session):
    path = finished_session
    report = checking.check_session(path)
    assert report.healthy, report.problems
    assert report.notes == []
    assert report.origin == codec.FORMAT
    assert report.id == os.path.basename(path)[: -len(".session")]
    before = session_files(path)
    result = repairing.repair_session(path)
    assert result.actions == [] and result.quarantine is None
    assert session_files(path) == before
    assert not os.path.exists(os.path.join(path, repairing.QUARANTINE_DIR))


def test_a_stream_without_output_needs_no_raw_file(root, finished_session):
    path = finished_session
    for stream in iolog.STREAMS:  # "true" printed nothing: an empty raw file or none are both fine
        raw = os.path.join(path, "io-logs", f"c3.{stream}")
        open(raw, "wb").close()
        assert checking.check_session(path).healthy
        os.unlink(raw)
        assert checking.check_session(path).healthy


def test_journal_with_good_lines_only_is_healthy(root):
    path = journaled_run(root)
    report = checking.check_session(path)
    assert report.healthy, report.problems
    # The dead writer's lock is worth a note, not a problem: nothing was running.
    assert [f.kind for f in report.notes] == ["unclean-stop"]
    lock = open(os.path.join(path, "lock"), "rb").read()
    before = session_files(path)
    assert repairing.repair_session(path).actions == []
    assert session_files(path) == before
    assert open(os.path.join(path, "lock"), "rb").read() == lock  # still names the writer that did not finish


def test_live_writer_is_a_note_and_blocks_repair(root):
    writer = SessionRepository(root).create(title="live")
    try:
        log, name = writer.new_log("j", 1)
        writer.job_started("j", 1, name)
        log.write("stdout", b"x" * 100)  # raw file ahead of the unflushed records
        report = checking.check_session(writer.path)
        assert report.healthy, report.problems
        assert [f.kind for f in report.notes] == ["being-written"]
        assert str(os.getpid()) in report.notes[0].message
        with pytest.raises(SessionLocked):
            repairing.repair_session(writer.path)
        log.close()
    finally:
        writer.close()


def test_session_being_created_is_a_note(root):
    path = os.path.join(root, "sessions", "new.session")
    os.makedirs(os.path.join(path, "io-logs"))
    open(os.path.join(path, "journal"), "wb").close()
    report = checking.check_session(path)
    assert report.healthy
    assert [f.kind for f in report.notes] == ["being-created"]


def test_check_repository_checks_every_session_in_id_order(root):
    paths = [run_session(root) for _ in range(3)]
    os.unlink(os.path.join(paths[1], "session"))
    reports = checking.check_repository(SessionRepository(root))
    assert [r.path for r in reports] == sorted(paths, key=os.path.basename)
    assert [r.healthy for r in reports] == [p != paths[1] for p in sorted(paths, key=os.path.basename)]


# -- the snapshot -----------------------------------------------------------------------


def _damage_snapshot(path: str, how: str, rng: random.Random) -> None:
    state_path = os.path.join(path, "session")
    with open(state_path, "rb") as f:
        data = f.read()
    if how == "delete":
        os.unlink(state_path)
        return
    damaged = {
        "truncate": lambda: data[: rng.randrange(1, len(data))],
        "garbage": lambda: b"this is not gzip\n" * 8,
        "empty": lambda: b"",
        "zeros": lambda: b"\0" * len(data),
        "bitflip": lambda: data[:40] + bytes([data[40] ^ 0xFF]) + data[41:],
    }[how]()
    with open(state_path, "wb") as f:
        f.write(damaged)


SNAPSHOT_DAMAGE = ["truncate", "garbage", "empty", "zeros", "bitflip", "delete"]


#: The builders, with the names that seed each case's damage (those it always had: the same bytes are damaged).
SNAPSHOT_MAKERS = {run_session: "closed_session", journaled_run: "journaled_session"}


@pytest.mark.parametrize("backup", [True, False], ids=["with-bak", "without-bak"])
@pytest.mark.parametrize("how", SNAPSHOT_DAMAGE)
@pytest.mark.parametrize("make", list(SNAPSHOT_MAKERS), ids=["closed", "journaled"])
def test_damaged_snapshot(root, make, how, backup):
    rng = random.Random(f"{how}-{backup}-{SNAPSHOT_MAKERS[make]}")
    path = make(root)
    original = load_session(path).state
    if not backup:
        bak = os.path.join(path, "session.bak")
        if os.path.exists(bak):
            os.unlink(bak)
    _damage_snapshot(path, how, rng)
    kind = "snapshot-missing" if how == "delete" else "snapshot-corrupt"
    damaged_bytes = session_files(path).get("session")
    report = checking.check_session(path)
    assert {f.kind for f in report.notes} >= {"rebuild-preview"}
    result = repair_and_verify(path, {("session", kind)})
    if damaged_bytes is not None:
        assert quarantined_files(path)["session"] == damaged_bytes
    assert any(a.startswith("session: ") and "rebuilt" in a for a in result.actions)
    state = load_session(path).state
    assert FLAG_INCOMPLETE in state.metadata.flags or state.metadata.flags == original.metadata.flags
    # What survives is exact; what does not is said.
    for job, attempts in state.results.items():
        assert attempts == original.results[job][: len(attempts)]
    if make is journaled_run:
        # Every change is in the journal: results, plan and order all come back.
        assert state.results == original.results
        assert state.desired_job_list == original.desired_job_list
    if state.results != original.results:
        assert result.lost
    if state.metadata.app_blob is None:
        assert any("metadata" in line for line in result.lost)
        with pytest.raises(PlainboxLikeError, match="how it was run"):
            resume(path)
    else:
        summary = resume(path)
        assert set(summary.counts) <= {OUTCOME_PASS}
        assert checking.check_session(path).healthy
        resumed = load_session(path).state
        assert FLAG_INCOMPLETE not in resumed.metadata.flags
        assert set(resumed.results) >= set(state.desired_job_list)


@pytest.mark.parametrize("seed", range(12))
def test_truncated_snapshot_salvages_exact_fields(root, seed, finished_session):
    """Whatever the cut, the rebuilt state never holds a wrong value: salvaged fields equal the originals."""
    path = finished_session
    original = codec.converter.unstructure(load_session(path).state)
    data = open(os.path.join(path, "session"), "rb").read()
    cut = random.Random(seed).randrange(1, len(data))
    with open(os.path.join(path, "session"), "wb") as f:
        f.write(data[:cut])
    rebuilt = salvaging.rebuild_state(path)
    assert not rebuilt.snapshot_ok
    state = codec.converter.unstructure(rebuilt.state)
    salvage = salvaging.salvage_snapshot(data[:cut])
    if salvage is not None:
        for key, value in salvage.fields.items():
            assert original[key] == value
        for key, entries in salvage.partial.items():
            for name, value in entries.items():
                assert original[key][name] == value
    assert state["journal_seq"] <= original["journal_seq"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(strategies.session_states, st.floats(min_value=0, max_value=1))
def test_salvage_never_invents(state, where):
    data, _ = codec.encode_state(state)
    raw = gzip.decompress(data)
    cut = int(len(raw) * where)
    partial = gzip.compress(raw[:cut])[:-8]  # a stream that ends early, as a cut file does
    salvage = salvaging.salvage_snapshot(partial)
    doc = codec.converter.unstructure(state)
    if salvage is None:
        return
    for key, value in salvage.fields.items():
        assert doc[key] == value
    for key, entries in salvage.partial.items():
        for name, value in entries.items():
            assert doc[key][name] == value
    if cut == len(raw):
        assert set(salvage.fields) == set(doc)


def test_salvage_of_garbage_is_nothing():
    assert salvaging.salvage_snapshot(b"") is None
    assert salvaging.salvage_snapshot(b"\0" * 100) is None
    assert salvaging.salvage_snapshot(gzip.compress(b'{"version": 6, "session": {}}')) is None


def test_snapshot_rebuilt_from_a_complete_stale_temporary(root):
    """A writer killed after writing a new snapshot but before renaming it: that temporary is the newest state."""
    path = journaled_run(root)
    state = load_session(path).state
    data, _ = codec.encode_state(state)
    with open(os.path.join(path, ".session.k1ll3d.tmp"), "wb") as f:
        f.write(data)
    open(os.path.join(path, "journal"), "wb").close()  # the journal was emptied after that snapshot
    os.unlink(os.path.join(path, "session"))
    result = repair_and_verify(
        path, {("session", "snapshot-missing"), (".session.k1ll3d.tmp", "stale-temporary")}
    )
    assert load_session(path).state.results == state.results
    assert any(".session.k1ll3d.tmp" in a and "rebuilt" in a for a in result.actions)
    assert quarantined_files(path)[".session.k1ll3d.tmp"] == data


def test_backup_and_journal_gap_are_reported_as_lost(root, finished_session):
    """Snapshot lost, backup older, journal newer than the lost snapshot: the changes in between are lost."""
    path = finished_session
    writer = SessionWriter.open(path)
    writer.update_metadata(title="only in the lost snapshot")
    writer.snapshot()  # session: with the title; session.bak: without; journal: emptied
    lost_seq = writer.state.journal_seq
    writer.update_metadata(tags=["after the snapshot"])
    writer.abandon()
    os.unlink(os.path.join(path, "session"))
    report = checking.check_session(path)
    preview = next(f for f in report.notes if f.kind == "rebuild-preview")
    assert "session.bak" in preview.message and "only the damaged snapshot had them" in preview.message
    result = repair_and_verify(path, {("session", "snapshot-missing")})
    state = load_session(path).state
    assert state.metadata.tags == ["after the snapshot"]
    assert state.metadata.title is None  # lost, and said so
    assert any(f"to {lost_seq} " in line and "only the damaged snapshot had them" in line for line in result.lost), result.lost
    resume(path)


def test_corrupt_backup(root, finished_session):
    path = finished_session
    with open(os.path.join(path, "session.bak"), "wb") as f:
        f.write(b"\x1f\x8bnot really")
    result = repair_and_verify(path, {("session.bak", "backup-corrupt")})
    assert not os.path.exists(os.path.join(path, "session.bak"))
    assert quarantined_files(path)["session.bak"] == b"\x1f\x8bnot really"
    assert any(a.startswith("session.bak: ") for a in result.actions)
    resume(path)


# -- the journal ---------------------------------------------------------------------------


def _journal_lines(path: str) -> list[bytes]:
    with open(os.path.join(path, "journal"), "rb") as f:
        return f.read().split(b"\n")[:-1]


def _write_journal(path: str, data: bytes) -> None:
    with open(os.path.join(path, "journal"), "wb") as f:
        f.write(data)


@pytest.mark.parametrize(
    "tail", [b'{"op":"meta","seq":99,"set":{"ti', b"\0\0\0\0\0\0", b"\0\0\0\0\n\0\0\0"],
    ids=["partial", "zeros", "zero-lines"],
)
def test_torn_journal_tail(root, tail):
    path = journaled_run(root)
    original = load_session(path).state
    journal = open(os.path.join(path, "journal"), "rb").read()
    _write_journal(path, journal + tail)
    assert load_session(path).journal_torn is not None  # the loader copes already
    result = repair_and_verify(path, {("journal", "journal-torn")})
    state = load_session(path).state
    assert state.results == original.results
    assert state.journal_seq == original.journal_seq
    assert os.path.getsize(os.path.join(path, "journal")) == 0
    assert quarantined_files(path)["journal"] == journal + tail
    assert any(a.startswith("journal: torn tail") for a in result.actions)
    resume(path)


def test_bad_line_in_the_middle_of_the_journal_is_skipped(root):
    """An inserted damaged line: every change is still there, the session loads again."""
    path = journaled_run(root)
    original = load_session(path).state
    lines = _journal_lines(path)
    damaged = b"\n".join(lines[:3] + [b"#$%garbage"] + lines[3:]) + b"\n"
    _write_journal(path, damaged)
    with pytest.raises(PlainboxLikeError, match="bad journal line"):
        load_session(path)
    report = checking.check_session(path)
    assert [f.message.split(":")[0] for f in report.problems] == ["line 4"]
    repair_and_verify(path, {("journal", "journal-bad-line")})
    state = load_session(path).state
    assert state.results == original.results
    assert quarantined_files(path)["journal"] == damaged
    resume(path)


@pytest.mark.parametrize("seed", range(6))
def test_overwritten_journal_line_loses_only_that_change(root, seed):
    """A line overwritten by garbage: its change is lost (and said), every other one is kept."""
    path = journaled_run(root)
    original = load_session(path).state
    lines = _journal_lines(path)
    victim = random.Random(seed).randrange(0, len(lines) - 1)  # not the last: that would be a torn tail
    lost = json.loads(lines[victim])
    lines[victim] = b"\xff" * len(lines[victim])
    _write_journal(path, b"\n".join(lines) + b"\n")
    expected = {("journal", "journal-bad-line")}
    if lost["op"] == "result":
        expected.add(("lock", "interrupted-run"))  # as far as the readable journal tells, its job still runs
    result = repair_and_verify(path, expected)
    assert any(f"{lost['seq']}" in line for line in result.lost), result.lost
    state = load_session(path).state
    if lost["op"] == "result":
        # Its job looks as if it never finished: settled, without pretending it was cut short.
        latest = state.latest(lost["job"])
        assert latest.outcome == OUTCOME_CRASH and latest.comments == salvaging.RESULT_LOST
    else:
        assert state.results == original.results
    assert state.running_jobs == {}
    resume(path)


def test_journal_gap_with_good_snapshot(root):
    path = journaled_run(root)
    lines = _journal_lines(path)
    index = next(i for i, line in enumerate(lines) if json.loads(line)["op"] == "start")
    seq = json.loads(lines.pop(index))["seq"]
    _write_journal(path, b"\n".join(lines) + b"\n")
    with pytest.raises(PlainboxLikeError, match="gap"):
        load_session(path)
    report = checking.check_session(path)
    assert problems(report) == {("journal", "journal-gap")}
    assert f"expected {seq}, found {seq + 1}" in report.problems[0].message
    result = repair_and_verify(path, {("journal", "journal-gap")})
    assert any(f"change(s) {seq} " in line for line in result.lost)
    resume(path)


def test_unappliable_journal_change(root):
    path = journaled_run(root)
    lines = _journal_lines(path)
    seq = json.loads(lines[-1])["seq"] + 1
    bad = json.dumps({"op": "meta", "seq": seq, "set": {"updated": 5}, "t": 1.0}).encode()
    _write_journal(path, b"\n".join(lines + [bad]) + b"\n")
    result = repair_and_verify(path, {("journal", "journal-unapplicable")})
    assert any("cannot be edited" in line or "could not be applied" in line for line in result.lost)
    assert quarantined_files(path)["journal"].endswith(bad + b"\n")


def test_missing_journal(root, finished_session):
    path = finished_session
    os.unlink(os.path.join(path, "journal"))
    with pytest.raises(PlainboxLikeError):
        SessionWriter.open(path)  # why it matters: no journal, no resume
    repair_and_verify(path, {("journal", "journal-missing")})
    resume(path)


# -- io-logs ---------------------------------------------------------------------------------


def _log(path: str, job: str, suffix: str = ".record.gz") -> str:
    return os.path.join(path, "io-logs", job + suffix)


@pytest.mark.parametrize("seed", range(10))
def test_cut_record_file(root, seed, finished_session):
    path = finished_session
    record = _log(path, "c2")
    data = open(record, "rb").read()
    stdout = open(_log(path, "c2", ".stdout"), "rb").read()
    cut = random.Random(seed).randrange(0, len(data) - 8)  # anything short of the trailer's end
    with open(record, "wb") as f:
        f.write(data[:cut])
    reader = iolog.RecordReader(record)
    list(reader)
    assert not reader.complete
    result = repair_and_verify(path, {("io-logs/c2.record.gz", "log-damaged")})
    assert quarantined_files(path)["io-logs/c2.record.gz"] == data[:cut]
    fixed = iolog.read_records(record)
    assert fixed.complete
    # Nothing printed is lost: what the records lacked came from the raw file.
    assert b"".join(r.data for r in fixed.records if r.stream == "stdout") == stdout
    assert open(_log(path, "c2", ".stdout"), "rb").read() == stdout
    assert any(a.startswith("io-logs/c2.record.gz: ") for a in result.actions)


def test_record_file_with_a_bad_record_in_the_middle(root, finished_session):
    path = finished_session
    record = _log(path, "c1")
    lines = gzip.decompress(open(record, "rb").read()).split(b"\n")
    damaged = gzip.compress(b"\n".join([b"[0.1,\"stdout\",\"!!!\"]"] + lines))
    with open(record, "wb") as f:
        f.write(damaged)
    repair_and_verify(path, {("io-logs/c1.record.gz", "log-damaged")})
    records = iolog.read_records(record)
    assert records.complete
    assert b"".join(r.data for r in records.records if r.stream == "stdout") == b"hello\n"
    assert b"".join(r.data for r in records.records if r.stream == "stderr") == b"warn\n"


@pytest.mark.parametrize(
    "change, kind",
    [
        (lambda d: b"", "raw-differs"),  # truncated to nothing
        (lambda d: d[:-1], "raw-differs"),
        (lambda d: d + b"extra", "raw-differs"),
        (lambda d: b"J" + d[1:], "raw-differs"),
        (None, "raw-missing"),
    ],
    ids=["emptied", "shorter", "longer", "altered", "deleted"],
)
def test_raw_file_differs_from_records(root, change, kind, finished_session):
    path = finished_session
    raw = _log(path, "c1", ".stdout")
    data = open(raw, "rb").read()
    if change is None:
        os.unlink(raw)
    else:
        with open(raw, "wb") as f:
            f.write(change(data))
    result = repair_and_verify(path, {("io-logs/c1.stdout", kind)})
    assert open(raw, "rb").read() == data == b"hello\n"
    assert any(a.startswith("io-logs/c1.stdout: ") and "rebuilt" in a for a in result.actions)


def test_raw_comparison_streams_large_files(root, tmp_path):
    """A big log is compared record by record: a difference deep inside is found at its offset."""
    stem = str(tmp_path / "big")
    writer = iolog.RecordWriter(stem, clock=lambda: 0.0)
    chunk = bytes(range(256)) * 256
    for _ in range(64):  # 4 MiB of stdout
        writer.write("stdout", chunk, now=0.0)
    writer.close()
    with open(stem + ".stdout", "r+b") as f:
        f.seek(3_000_000)
        f.write(b"\0\0")
    scan = logscan.scan_log(stem + ".record.gz")
    assert scan.complete and scan.records == 64
    raw = scan.raw["stdout"]
    assert raw.status == "differs"
    assert raw.differs_at == 3_000_000 + (0 if chunk[3_000_000 % len(chunk)] else 1)
    assert scan.raw["stderr"].status == "equal"


def test_missing_record_file_is_rebuilt_from_raw_files(root, finished_session):
    path = finished_session
    os.unlink(_log(path, "c1"))
    result = repair_and_verify(path, {("io-logs/c1.record.gz", "log-missing")})
    records = iolog.read_records(_log(path, "c1"))
    assert records.complete
    assert {(r.stream, r.data) for r in records.records} == {("stdout", b"hello\n"), ("stderr", b"warn\n")}
    assert any("timing" in a for a in result.actions)


def test_log_missing_with_its_raw_files(root, finished_session):
    path = finished_session
    for suffix in (".record.gz", ".stdout", ".stderr"):
        os.unlink(_log(path, "c1", suffix))
    result = repair_and_verify(path, {("io-logs/c1.record.gz", "log-missing")})
    attempt = load_session(path).state.latest("c1")
    assert attempt.io_log_filename is None
    assert "io-logs/c1.record.gz was missing" in attempt.comments
    assert any("c1" in line for line in result.lost)
    resume(path)


def test_missing_io_logs_directory(root, finished_session):
    path = finished_session
    os.rename(os.path.join(path, "io-logs"), os.path.join(root, "elsewhere"))
    expected = {("io-logs", "directory-missing")} | {(f"io-logs/{j}.record.gz", "log-missing") for j in JOBS}
    repair_and_verify(path, expected)
    assert os.path.isdir(os.path.join(path, "io-logs"))
    resume(path)


def test_repair_never_writes_outside_io_logs(root, tmp_path):
    path = journaled_run(root)
    outside = tmp_path / "victim.record.gz"
    outside.write_bytes(b"\x1f\x8b\x08\x00\0\0\0\0\0\x03")  # a cut gzip file outside the session
    writer = SessionWriter.open(path)
    writer.job_finished("evil", Attempt("pass", io_log_filename=str(outside)))
    writer.close()
    result = repairing.repair_session(path)
    assert outside.read_bytes() == b"\x1f\x8b\x08\x00\0\0\0\0\0\x03"
    assert any("outside" in line for line in result.lost)


def test_orphan_log_is_a_note(root, finished_session):
    path = finished_session
    open(_log(path, "ghost"), "wb").close()
    report = checking.check_session(path)
    assert report.healthy
    assert [(f.file, f.kind) for f in report.notes] == [("io-logs/ghost.record.gz", "orphan-log")]


# -- temporaries, interrupted runs ---------------------------------------------------------


def test_stale_temporaries(root, finished_session):
    path = finished_session
    names = {".session.abc123.tmp": b"\x1f\x8b half a snapshot", "io-logs/.c1.stdout.x9.tmp": b"hel"}
    for name, data in names.items():
        with open(os.path.join(path, name), "wb") as f:
            f.write(data)
    result = repair_and_verify(path, {(name, "stale-temporary") for name in names})
    kept = quarantined_files(path)
    for name, data in names.items():
        assert not os.path.exists(os.path.join(path, name))
        assert kept[name] == data
    assert sum("stale temporary" in a for a in result.actions) == 2


def test_interrupted_run(root, interrupted_session):
    path = interrupted_session
    report = checking.check_session(path)
    assert problems(report) == {("lock", "interrupted-run")}
    assert "c2" in report.problems[0].message and "resume or cleanup" in report.problems[0].message
    # The cut log of the running job is expected, and its raw file is ahead of the records.
    assert ("io-logs/c2.record.gz", "log-cut") in {(f.file, f.kind) for f in report.notes}
    result = repair_and_verify(path, {("lock", "interrupted-run")})
    state = load_session(path).state
    assert state.running_jobs == {}
    latest = state.latest("c2")
    assert latest.outcome == OUTCOME_CRASH and latest.comments == settle.STOPPED_WHILE_RUNNING
    assert FLAG_INCOMPLETE in state.metadata.flags
    assert locks.lock_holder(path) is None  # released cleanly
    records = iolog.read_records(os.path.join(path, latest.io_log_filename))
    assert records.complete
    assert b"".join(r.data for r in records.records) == b"started\nafter the last flush\n"
    assert any(a.startswith("lock: interrupted run") for a in result.actions)
    summary = resume(path)
    assert summary.counts == {OUTCOME_PASS: 1, OUTCOME_CRASH: 1}
    assert checking.check_session(path).healthy


def test_cut_log_of_a_settled_interrupted_attempt_is_only_a_note(root, interrupted_session):
    path = interrupted_session
    resume(path)  # settles c2 as crashed, keeps its cut log
    report = checking.check_session(path)
    assert report.healthy, report.problems
    assert ("io-logs/c2.record.gz", "log-cut") in {(f.file, f.kind) for f in report.notes}
    result = repairing.repair_session(path)  # completes it all the same
    assert any(a.startswith("io-logs/c2.record.gz: ") for a in result.actions)
    assert not any(f.kind == "log-cut" for f in checking.check_session(path).notes)


def test_foreign_lock_holder_is_not_judged(root, interrupted_session):
    path = interrupted_session
    with open(os.path.join(path, "lock"), "w") as f:
        f.write(f"4242 not-{socket.gethostname()}\n")
    report = checking.check_session(path)
    assert report.healthy
    assert "foreign-writer" in {f.kind for f in report.notes}


def test_several_faults_at_once(root, interrupted_session):
    path = interrupted_session
    lines = _journal_lines(path)
    _write_journal(path, b"\n".join(lines) + b"\n" + b'{"seq":')
    os.unlink(os.path.join(path, "session"))
    with open(_log(path, "c1", ".stdout"), "ab") as f:
        f.write(b"tampered")
    with open(os.path.join(path, ".session.zz.tmp"), "wb") as f:
        f.write(b"junk")
    expected = {
        ("session", "snapshot-missing"),
        ("journal", "journal-torn"),
        ("io-logs/c1.stdout", "raw-differs"),
        (".session.zz.tmp", "stale-temporary"),
        ("lock", "interrupted-run"),
    }
    repair_and_verify(path, expected)
    state = load_session(path).state
    assert state.latest("c1").outcome == OUTCOME_PASS
    assert state.latest("c2").outcome == OUTCOME_CRASH


def test_repair_is_idempotent(root, interrupted_session):
    path = interrupted_session
    os.unlink(os.path.join(path, "session"))
    repairing.repair_session(path)
    before = session_files(path)
    again = repairing.repair_session(path)
    assert again.actions == []
    assert session_files(path) == before


# -- the journal scanner agrees with the loader ------------------------------------------------


_good = st.builds(lambda seq: json.dumps({"op": "meta", "seq": seq, "set": {}}).encode(), st.integers(1, 5))
_bad = st.sampled_from([b"garbage", b"\0\0\0", b'{"seq": 1}', b"[1,2]", b'{"op":"x","seq":true}'])
_blank = st.sampled_from([b"", b"  ", b"\r"])
#: Lines JSON parsers disagree about: whatever the loader makes of them, the scanner must agree.
_odd = st.sampled_from(
    [b'{"op":"x","seq":1,"t":NaN}', b'{"op":"x","seq":123456789012345678901234567890}', b'{"op":"x","seq":1,"seq":2}',
     b'{"op":"x","seq":1}  ', b'\xef\xbb\xbf{"op":"x","seq":1}', b'{"op":"\xff","seq":1}']
)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(_good, _bad, _blank, _odd), max_size=8), st.booleans())
def test_scan_journal_agrees_with_parse_journal(lines, final_newline):
    data = b"\n".join(lines) + (b"\n" if final_newline and lines else b"")
    scan = salvaging.scan_journal(data)
    try:
        read = parse_journal(data, "journal", after_seq=10**9)
    except PlainboxLikeError as exc:
        assert scan.bad, exc
        assert exc.line == scan.bad[0][0]
        return
    assert not scan.bad
    if read.torn is None:
        assert scan.torn == []
    else:
        line, problem = scan.torn[0]
        assert read.torn == f"line {line}: {problem} (ignored)"
    assert read.lines == len(scan.entries)


# -- Plainbox / Checkbox sessions ----------------------------------------------------------------


def _tree(directory):
    out = {}
    for dirpath, dirs, names in os.walk(directory):
        for name in dirs + names:
            full = os.path.join(dirpath, name)
            st_ = os.stat(full)
            out[full] = (st_.st_mtime_ns, st_.st_size)
    return out


def test_checkbox_session_checks_read_only(tmp_path):
    directory = logged_checkbox_session(str(tmp_path / "pbox.session"))
    before = _tree(directory)
    report = checking.check_session(directory)
    assert report.origin == "plainbox"
    assert report.healthy, report.problems
    assert report.notes == []
    # Damage shows, and still nothing is written.
    with open(os.path.join(directory, "io-logs", "com.canonical.certification__cpu_info.stdout"), "ab") as f:
        f.write(b"x")
    os.unlink(os.path.join(directory, "io-logs", "com.canonical.certification__silent.record.gz"))
    before = _tree(directory)
    report = checking.check_session(directory)
    assert problems(report) == {
        ("io-logs/com.canonical.certification__cpu_info.stdout", "raw-differs"),
        # Not found here: looked for in io-logs/ here, never where Checkbox once wrote it.
        ("io-logs/com.canonical.certification__silent.record.gz", "log-missing"),
    }
    assert _tree(directory) == before
    with pytest.raises(PlainboxLikeError, match="read-only"):
        repairing.repair_session(directory)
    assert _tree(directory) == before
    assert not os.path.exists(os.path.join(directory, "lock"))


@pytest.mark.parametrize("version", range(1, 12))
def test_plainbox_sessions_of_every_version(tmp_path, version):
    directory = str(tmp_path / f"v{version}")
    plainbox_session(directory, version)
    before = _tree(directory)
    report = checking.check_session(directory)
    assert _tree(directory) == before
    assert report.origin == "plainbox"
    if version == 1:
        assert report.healthy  # logs inline: no files to check
    else:
        # The one log that was never copied with the session; raw files are optional there.
        assert problems(report) == {("io-logs/gone.record.gz", "log-missing")}
        assert {f.kind for f in report.notes} == {"raw-missing"}
