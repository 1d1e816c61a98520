"""The SQLite index: schema, migrations and repairs, upserts, reconcile, listing, filters and search."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plainbox_like import index as indexing
from plainbox_like import session as batch
from plainbox_like import storage, summary
from plainbox_like.index import ListFilter, SessionIndex
from plainbox_like.model import Attempt
from plainbox_like.summary import SessionSummary

UNITS = textwrap.dedent(
    """\
    id: train/resnet
    _summary: Train the resnet model
    command: python3 -c 'import train; model = train.build(); model.fit(epochs=3)'

    id: eval/resnet
    _summary: Evaluate the trained model
    command: python3 evaluate.py --split val

    id: disk/read
    _summary: Read from the disk
    command: dd if=/dev/zero of=/dev/null count=1
    """
)
ALL_JOBS = ("train/resnet", "eval/resnet", "disk/read")


# -- helpers -----------------------------------------------------------------------


@pytest.fixture(autouse=True)
def no_parent_session(monkeypatch):
    monkeypatch.delenv(batch.SESSION_ENV, raising=False)
    monkeypatch.delenv(batch.JOB_ENV, raising=False)


@pytest.fixture
def units(tmp_path):
    path = tmp_path / "jobs.pxu"
    path.write_text(UNITS)
    return str(path)


def make_session(repo, units, *, title="run", outcomes=None, tags=(), parent=None, complete=True, close=True):
    """A session run from *units* (as ``plainbox-like run`` starts one), with the given latest outcomes."""
    config = batch.RunConfig(sources=[units], durability="flush")
    writer = batch.start_session(repo, config, title=title).writer
    for job_id, outcome in (outcomes or {}).items():
        writer.job_finished(job_id, Attempt(outcome, return_code=0 if outcome == "pass" else 1, execution_duration=0.5))
    fields = {}
    if tags:
        fields["tags"] = list(tags)
    if parent:
        fields["parent_session"] = parent
    if complete:
        fields["flags"] = []
        fields["finished"] = time.time()
    if fields:
        writer.update_metadata(**fields)
    if close:
        writer.close()
    return writer


def plain_session(repo, title="plain", created=None):
    writer = repo.create(title=title)
    writer.set_plan({"a": "sum-a"}, ["a"])
    writer.job_finished("a", Attempt("pass", return_code=0))
    writer.update_metadata(flags=[], **({"created": created} if created is not None else {}))
    writer.close()
    return writer


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def make_old(path, seconds=1000):
    then = time.time() - seconds
    os.utime(path, (then, then))


def open_index(root, notices=None, **kwargs):
    return SessionIndex.open(root, notice=(notices.append if notices is not None else None), workers=1, **kwargs)


def reconciled(root, notices=None):
    index = open_index(root, notices)
    index.reconcile()
    return index


@pytest.fixture
def count_loads(monkeypatch):
    loads = []
    real = storage.load_session

    def counting(path, *args, **kwargs):
        loads.append(os.path.basename(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(storage, "load_session", counting)
    return loads


def table_counts(index):
    return {
        table: index.conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        for table in ("sessions", "jobs", "job_texts", "search")
    }


def test_mirrored_constants_agree_with_the_library():
    from plainbox_like import model

    assert (indexing.STATE_FILE, indexing.JOURNAL_FILE) == (storage.STATE_FILE, storage.JOURNAL_FILE)
    assert set(indexing.FAILED_OUTCOMES) == set(model.FAILED_OUTCOMES)
    assert indexing.STATUSES == summary.STATUSES
    assert indexing.TIME_FIELDS == summary.TIME_FIELDS


# -- schema, creation, repairs --------------------------------------------------------


def test_new_index_has_schema_wal_and_private_file(repo, root, units):
    make_session(repo, units)
    notices = []
    with reconciled(root, notices) as index:
        assert notices == []  # the first build is silent
        assert index.created
        assert index.conn.execute("SELECT version FROM schema_version").fetchone()[0] == indexing.SCHEMA_VERSION
        assert index.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        names = {row[0] for row in index.conn.execute("SELECT name FROM sqlite_master")}
        assert {"sessions", "jobs", "job_texts", "search", "info", "schema_version", "job_results"} <= names
        assert index.count() == 1
    path = os.path.join(root, indexing.INDEX_FILE)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert os.path.dirname(path) == repo.root  # beside sessions/


def test_job_results_view_has_the_job_columns(repo, root, units):
    make_session(repo, units, outcomes={"train/resnet": "fail"})
    with reconciled(root) as index:
        rows = index.conn.execute(
            "SELECT session, job_id, attempt, outcome, return_code, duration, summary, command FROM job_results"
            " ORDER BY job_id"
        ).fetchall()
    assert [r[1] for r in rows] == sorted(ALL_JOBS)
    train = rows[-1]
    assert train[2:6] == (1, "fail", 1, 0.5)
    assert train[6] == "Train the resnet model" and "model.fit" in train[7]


def test_corrupt_index_is_rebuilt_with_a_notice(repo, root, units):
    make_session(repo, units, title="survivor")
    reconciled(root).close()
    path = os.path.join(root, indexing.INDEX_FILE)
    for suffix in ("-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.unlink(path + suffix)
    with open(path, "wb") as f:
        f.write(b"this is not a database at all" * 100)
    notices = []
    with reconciled(root, notices) as index:
        assert [s.title for s in index.summaries()] == ["survivor"]
    assert len(notices) == 1 and "\n" not in notices[0]
    assert "corrupt" in notices[0] and "rebuilding" in notices[0]


def test_damaged_pages_are_detected_and_rebuilt(repo, root, units):
    for n in range(30):
        make_session(repo, units, title=f"session {n}")
    with reconciled(root) as index:
        index.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    path = os.path.join(root, indexing.INDEX_FILE)
    size = os.path.getsize(path)
    with open(path, "r+b") as f:  # keep the header, wreck the rest
        f.seek(100)
        f.write(os.urandom(size - 100))
    notices = []
    with reconciled(root, notices) as index:
        assert index.count() == 30
    assert len(notices) == 1 and "rebuilding" in notices[0]


def test_older_schema_is_rebuilt_with_a_notice(repo, root, units):
    make_session(repo, units, title="kept")
    with reconciled(root) as index:
        index.conn.execute("UPDATE schema_version SET version = 0")
        index.conn.execute("DELETE FROM sessions")  # what an old program left: must not survive
    notices = []
    with open_index(root, notices) as index:
        assert index.conn.execute("SELECT version FROM schema_version").fetchone()[0] == indexing.SCHEMA_VERSION
        assert [s.title for s in index.summaries()] == ["kept"]  # rebuilt while opening
    assert len(notices) == 1
    assert "schema version 0" in notices[0] and "rebuilding" in notices[0]


def test_migrations_upgrade_without_a_rebuild(repo, root, units, monkeypatch, count_loads):
    make_session(repo, units)
    reconciled(root).close()
    count_loads.clear()

    def add_column(conn):
        conn.execute("ALTER TABLE sessions ADD COLUMN note TEXT")

    monkeypatch.setattr(indexing, "SCHEMA_VERSION", indexing.SCHEMA_VERSION + 1)
    monkeypatch.setattr(indexing, "MIGRATIONS", {indexing.SCHEMA_VERSION - 1: add_column})
    notices = []
    with open_index(root, notices) as index:
        assert index.conn.execute("SELECT version FROM schema_version").fetchone()[0] == indexing.SCHEMA_VERSION
        assert "note" in {row[1] for row in index.conn.execute("PRAGMA table_info(sessions)")}
        assert index.count() == 1
    assert notices == [] and count_loads == []


def test_newer_schema_is_left_alone(repo, root, units):
    make_session(repo, units, title="one")
    with reconciled(root) as index:
        index.conn.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(indexing.IndexUnusable, match="newer"):
        SessionIndex.open(root)
    notices = []
    with indexing.fresh_index(root, notices.append) as index:  # readers fall back to memory
        assert index.memory
        assert [s.title for s in index.summaries()] == ["one"]
    assert len(notices) == 1 and "newer" in notices[0]
    with sqlite3.connect(os.path.join(root, indexing.INDEX_FILE)) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchone()[0] == 99
    with SessionIndex.open(root, replace_newer=True, notice=notices.append) as index:  # index --rebuild
        assert index.conn.execute("SELECT version FROM schema_version").fetchone()[0] == indexing.SCHEMA_VERSION
        index.rebuild()
        assert [s.title for s in index.summaries()] == ["one"]


def test_an_index_that_cannot_be_written_falls_back_to_memory(repo, root, units, monkeypatch):
    make_session(repo, units, title="still listed")
    reconciled(root).close()
    real = SessionIndex.reconcile

    def readonly(self):
        if not self.memory:
            raise sqlite3.OperationalError("attempt to write a readonly database")
        return real(self)

    monkeypatch.setattr(SessionIndex, "reconcile", readonly)
    notices = []
    with indexing.fresh_index(root, notices.append) as index:
        assert index.memory and [s.title for s in index.summaries()] == ["still listed"]
    assert len(notices) == 1 and "readonly" in notices[0]


def test_rebuild_recreates_everything(repo, root, units):
    for n in range(3):
        make_session(repo, units, title=f"s{n}", outcomes={"disk/read": "fail"})
    with reconciled(root) as index:
        before = table_counts(index)
        index.conn.execute("DELETE FROM jobs")
        stats = index.rebuild()
        assert stats.added == 3 and stats.read == 3
        assert table_counts(index) == before


# -- upserts, removals, reconcile ----------------------------------------------------------


def test_upsert_is_idempotent(repo, root, units):
    writers = [make_session(repo, units, title=f"s{n}", outcomes={"train/resnet": "pass"}) for n in range(3)]
    with reconciled(root) as index:
        before = table_counts(index)
        listed = [s.as_dict() for s in index.summaries()]
        for _ in range(3):
            stats = index.refresh([w.path for w in writers], force=True)
            assert stats.updated == 3
        assert table_counts(index) == before
        assert [s.as_dict() for s in index.summaries()] == listed
        assert before == {"sessions": 3, "jobs": 9, "job_texts": 3, "search": 6}


def test_vanished_sessions_are_removed(repo, root, units):
    keep = make_session(repo, units, title="keep")
    gone = make_session(repo, units, title="gone")
    other = plain_session(repo, title="only user of job a")
    with reconciled(root) as index:
        assert index.count() == 3
        shutil.rmtree(gone.path)
        shutil.rmtree(other.path)
        stats = index.reconcile()
        assert stats.removed == 2 and stats.read == 0
        assert index.ids() == {keep.id}
        counts = table_counts(index)
        assert counts == {"sessions": 1, "jobs": 3, "job_texts": 3, "search": 4}  # job a's text collected
        assert index.search("gone") == []


def test_reconcile_rereads_only_changed_sessions(repo, root, units, count_loads):
    writers = [make_session(repo, units, title=f"s{n}", close=(n != 0)) for n in range(5)]
    with open_index(root) as index:
        assert index.reconcile().read == 5
        assert len(count_loads) == 5
        count_loads.clear()
        stats = index.reconcile()
        assert (stats.read, stats.changed) == (0, 0) and count_loads == []  # stat only
        writers[0].job_finished("disk/read", Attempt("pass"))  # journal grows
        stats = index.reconcile()
        assert stats.updated == 1 and count_loads == [os.path.basename(writers[0].path)]
        count_loads.clear()
        writers[0].close()  # new snapshot, empty journal
        os.utime(os.path.join(writers[3].path, "session"))  # only touched
        stats = index.reconcile()
        assert stats.updated == 2 and sorted(count_loads) == sorted(
            os.path.basename(w.path) for w in (writers[0], writers[3])
        )
        counts = {s.id: s.counts for s in index.summaries()}
        assert counts[writers[0].id] == {"pass": 1}


def test_a_change_during_reading_is_caught_by_the_next_reconcile(repo, root, units, monkeypatch):
    writer = make_session(repo, units, close=False)
    real = storage.load_session

    def load_then_change(path, *args, **kwargs):
        loaded = real(path, *args, **kwargs)
        if path == writer.path and not writer.state.results:
            writer.job_finished("disk/read", Attempt("fail"))  # lands after the stamps were taken
        return loaded

    monkeypatch.setattr(storage, "load_session", load_then_change)
    with open_index(root) as index:
        index.reconcile()
        assert index.summaries()[0].counts == {}
        assert index.reconcile().updated == 1
        assert index.summaries()[0].counts == {"fail": 1}
    writer.close()


# -- what the index shows ----------------------------------------------------------------


def test_index_shows_what_summarize_shows(repo, root, units):
    make_session(repo, units, title="done", outcomes={"train/resnet": "pass", "eval/resnet": "fail"}, tags=["gpu"])
    make_session(repo, units, title="interrupted", outcomes={"train/resnet": "crash"}, complete=False)
    live = make_session(repo, units, title="live", close=False)
    plain_session(repo)
    bad = repo.create(title="bad")
    bad.close()
    with open(os.path.join(bad.path, storage.STATE_FILE), "wb") as f:
        f.write(b"junk")
    make_old(bad.path)
    os.mkdir(os.path.join(repo.sessions_dir, "empty.session"))
    make_old(os.path.join(repo.sessions_dir, "empty.session"))
    journal = repo.create(title="bad journal")
    journal.job_finished("x", Attempt("pass"))
    journal.job_finished("y", Attempt("pass"))
    journal.abandon()
    with open(os.path.join(journal.path, storage.JOURNAL_FILE), "r+b") as f:
        f.write(b"{garbage")
    try:
        direct = [s.as_dict() for s in summary.list_sessions(repo)]
        with reconciled(root) as index:
            assert [s.as_dict() for s in index.summaries()] == direct
            documents = [item.document for item in index.list(documents_only=True)]
        expected = json.dumps(
            [indexing.summary_document(SessionSummary(**{**d, "tags": tuple(d["tags"]), "flags": tuple(d["flags"])}))
             for d in direct],
            indent=2, sort_keys=True, ensure_ascii=False,
        ) + "\n"  # fmt: skip
        assert indexing.json_list(documents) == expected
        statuses = {d["title"] or d["id"]: d["status"] for d in direct}
        assert statuses["live"] == "running" and statuses["interrupted"] == "incomplete"
        reasons = [d["reason"] for d in direct if d["status"] == "corrupt"]
        assert len(reasons) == 3 and all(reasons)
    finally:
        live.close()


def test_running_status_is_checked_when_read(repo, root, units):
    writer = make_session(repo, units, title="live", complete=False, close=False)
    with reconciled(root) as index:
        assert index.summaries()[0].status == "running"
        writer.abandon()  # the writer dies: nothing in the directory changes...
        with open(os.path.join(writer.path, storage.LOCK_FILE), "w") as f:
            f.write(f"{dead_pid()} {socket.gethostname()}\n")
        listed = index.list()[0]  # ...no reconcile: the stored "running" is checked live
        assert listed.summary.status == "incomplete"
        assert json.loads(listed.document)["status"] == "incomplete"
        assert json.loads(index.list(documents_only=True)[0].document)["status"] == "incomplete"
        assert index.list(ListFilter(statuses=["running"])) == []
        assert len(index.list(ListFilter(statuses=["incomplete"]))) == 1


def test_paused_is_a_live_status_too(repo, root, units):
    writer = make_session(repo, units, title="paused", complete=False, close=False)
    writer.update_metadata(flags=["incomplete", "paused"])
    with reconciled(root) as index:
        assert index.summaries()[0].status == "paused"
        assert [s.id for s in index.summaries(ListFilter(statuses=["paused"]))] == [writer.id]
        writer.abandon()
        with open(os.path.join(writer.path, storage.LOCK_FILE), "w") as f:
            f.write(f"{dead_pid()} {socket.gethostname()}\n")
        assert index.summaries()[0].status == "incomplete"
        assert index.summaries(ListFilter(statuses=["paused"])) == []


def test_lock_released_after_the_snapshot_is_not_running(repo, root, units):
    writer = make_session(repo, units, title="closing", close=False)
    with reconciled(root) as index:
        writer.snapshot()
        index.reconcile()  # read between the last snapshot and the lock release
        os.ftruncate(writer._lock_fd, 0)
        assert index.summaries()[0].status == "complete"
    writer.abandon()


def test_directory_being_created_turns_corrupt_after_the_grace(repo, root, monkeypatch):
    os.makedirs(os.path.join(repo.sessions_dir, "fresh.session"))
    with reconciled(root) as index:
        assert index.summaries()[0].status == "running"
        monkeypatch.setattr(summary, "CREATING_GRACE", 0.0)
        s = index.summaries()[0]
        assert s.status == "corrupt" and s.reason.endswith("session: state file is missing")
        assert index.summaries(ListFilter(statuses=["corrupt"]))[0].id == "fresh"


@settings(max_examples=200, deadline=None)
@given(
    title=st.none() | st.text(),
    counts=st.dictionaries(st.text(), st.integers(min_value=0, max_value=10**6), max_size=4),
    tags=st.lists(st.text(), max_size=3),
    created=st.none() | st.floats(min_value=0, max_value=4e9),
    pid=st.none() | st.integers(min_value=1, max_value=2**22),
    reason=st.none() | st.text(),
)
def test_rendered_document_is_what_json_dumps_writes(title, counts, tags, created, pid, reason):
    s = SessionSummary(
        id="x", path="/p/x.session", status="complete", reason=reason, title=title, created=created,
        counts=counts, total=len(counts), tags=tuple(tags), flags=("incomplete",), runner_pid=pid,
    )  # fmt: skip
    expected = json.dumps(indexing.summary_document(s), indent=2, sort_keys=True, ensure_ascii=False)
    assert indexing.render_document(s) == expected


# -- filters -------------------------------------------------------------------------------


@pytest.fixture
def filtered(repo, root, units):
    now = time.time()
    a = make_session(repo, units, title="Nightly 1", outcomes={"train/resnet": "fail"}, tags=["gpu", "x86"])
    b = make_session(repo, units, title="nightly 2", outcomes={"train/resnet": "pass", "disk/read": "crash"}, tags=["x86"])
    c = make_session(repo, units, title="weekly", complete=False, parent=a.id, tags=["gpu"])
    old = plain_session(repo, title="ancient", created=now - 30 * 86400)
    index = reconciled(root)
    yield index, {"a": a.id, "b": b.id, "c": c.id, "old": old.id}
    index.close()


def _ids(index, **kwargs):
    return [s.id for s in index.summaries(ListFilter(**kwargs))]


def test_filters(filtered):
    index, ids = filtered
    everything = _ids(index)
    assert everything == [ids["c"], ids["b"], ids["a"], ids["old"]]  # newest first
    assert _ids(index, statuses=["incomplete"]) == [ids["c"]]
    assert _ids(index, statuses=["complete", "incomplete"]) == [ids["c"], ids["b"], ids["a"], ids["old"]]
    assert _ids(index, tags=["gpu"]) == [ids["c"], ids["a"]]
    assert _ids(index, tags=["gpu", "x86"]) == [ids["a"]]
    assert _ids(index, since=time.time() - 86400) == [ids["c"], ids["b"], ids["a"]]
    assert _ids(index, title="NIGHTLY") == [ids["b"], ids["a"]]
    assert _ids(index, title="%") == []  # LIKE wildcards are literal
    assert _ids(index, parent=ids["a"]) == [ids["c"]]
    assert _ids(index, parent=ids["a"][:6]) == [ids["c"]]  # a unique prefix
    assert _ids(index, failed_job="train/resnet") == [ids["a"]]
    assert _ids(index, failed_job="disk/read") == [ids["b"]]  # crash counts as failed
    assert _ids(index, failed_job="*/re*") == [ids["b"], ids["a"]]
    assert _ids(index, failed_job="eval/resnet") == []
    assert _ids(index, limit=2) == [ids["c"], ids["b"]]
    assert _ids(index, tags=["x86"], title="nightly", limit=1) == [ids["b"]]


def test_latest_attempt_decides_failed_job(repo, root, units):
    writer = make_session(repo, units, outcomes={"disk/read": "fail"}, close=False)
    writer.job_finished("disk/read", Attempt("pass", attempt=2))
    writer.close()
    with reconciled(root) as index:
        assert _ids(index, failed_job="disk/read") == []


# -- search ----------------------------------------------------------------------------------


def test_search_titles_job_ids_summaries_and_commands(filtered):
    index, ids = filtered
    hits = index.search("model.fit")  # a command
    assert [h.listed.summary.id for h in hits] == [ids["c"], ids["b"], ids["a"]]
    assert all(not h.title_matched for h in hits)
    assert [j.id for j in hits[0].jobs] == ["train/resnet"]
    assert "model.fit" in hits[0].jobs[0].command
    assert hits[1].jobs[0].outcome == "pass" and hits[2].jobs[0].outcome == "fail"
    nightly = index.search("nightly")  # a title
    assert [h.listed.summary.id for h in nightly] == [ids["b"], ids["a"]]
    assert all(h.title_matched and h.jobs == () for h in nightly)
    assert [h.listed.summary.id for h in index.search("EVALUATE the")] == [ids["c"], ids["b"], ids["a"]]  # summary
    assert {j.id for j in index.search("disk/read")[0].jobs} == {"disk/read"}  # job id
    both = index.search("nightly model.fit")  # one word in the title, one in a job
    assert [h.listed.summary.id for h in both] == [ids["b"], ids["a"]]
    assert both[0].title_matched and [j.id for j in both[0].jobs] == ["train/resnet"]
    assert [h.listed.summary.id for h in index.search("ly")] == [ids["c"], ids["b"], ids["a"]]  # short: a scan
    assert index.search("nothing-like-this") == []
    assert len(index.search("model.fit", limit=1)) == 1
    assert index.search("  ") == []


def test_changed_or_missing_definitions_index_ids_only(repo, root, units, tmp_path):
    make_session(repo, units, title="before the edit")
    with open(units, "w") as f:
        f.write(UNITS.replace("model.fit(epochs=3)", "model.train()"))
    make_session(repo, units, title="after the edit")
    gone = tmp_path / "gone.pxu"
    gone.write_text(UNITS)
    make_session(repo, str(gone), title="file removed")
    gone.unlink()
    with reconciled(root) as index:
        assert [h.listed.summary.title for h in index.search("model.fit")] == []  # the edit changed the checksum
        assert [h.listed.summary.title for h in index.search("model.train")] == ["after the edit"]
        titles = {h.listed.summary.title for h in index.search("train/resnet")}  # ids are always there
        assert titles == {"before the edit", "after the edit", "file removed"}
        # eval/resnet did not change: its definition still matches in both
        assert {h.listed.summary.title for h in index.search("Evaluate")} == {"before the edit", "after the edit"}


def test_definitions_are_parsed_once_per_file_version(repo, root, units):
    for n in range(6):
        make_session(repo, units, title=f"s{n}")
    with open_index(root) as index:
        index.reconcile()
        assert index.definitions.parses == 1
        index.refresh(index_paths(repo), force=True)
        assert index.definitions.parses == 1
        index.definitions.stamp_ttl = 0.0
        with open(units, "a") as f:
            f.write("\n# edited\n")
        index.refresh(index_paths(repo), force=True)
        assert index.definitions.parses == 2


def index_paths(repo):
    return repo.session_paths()


# -- concurrency ---------------------------------------------------------------------------

READER = """
import sys, time
from plainbox_like.index import SessionIndex
root, seconds = sys.argv[1], float(sys.argv[2])
errors = reads = 0
deadline = time.monotonic() + seconds
index = SessionIndex.open(root, busy_timeout=5.0)
while time.monotonic() < deadline:
    try:
        index.list()
        index.search("model.fit")
        reads += 1
    except Exception as exc:
        errors += 1
        print("ERROR", type(exc).__name__, exc, file=sys.stderr)
print(reads, errors)
"""


def test_readers_are_never_locked_out_by_writers(repo, root, units):
    writers = [make_session(repo, units, title=f"s{n}", close=False) for n in range(4)]
    reconciled(root).close()
    readers = [
        subprocess.Popen([sys.executable, "-c", READER, root, "3"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    writes = 0
    with open_index(root) as index:
        deadline = time.monotonic() + 3.0
        n = 0
        while time.monotonic() < deadline:
            writer = writers[n % len(writers)]
            writer.job_finished(ALL_JOBS[n % 3], Attempt("pass", attempt=n + 1))
            index.refresh([writer.path])
            if n % 10 == 0:
                index.rebuild()
            writes += 1
            n += 1
    for writer in writers:
        writer.close()
    for proc in readers:
        out, err = proc.communicate(timeout=30)
        reads, errors = map(int, out.split())
        assert errors == 0, err
        assert "locked" not in err
        assert reads > 0
    assert writes > 10
