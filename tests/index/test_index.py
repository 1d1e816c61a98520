"""The SQLite index: schema, migrations and repairs, upserts, reconcile, listing, filters and search."""

from __future__ import annotations

import functools
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
import strategies
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plainbox_like.store.names import LOCK_FILE
from plainbox_like.index import access, fastread, listing, schema
from plainbox_like.index import query as indexing
from plainbox_like.run import settle
from plainbox_like.store import names, reader
from plainbox_like.store.writer import SessionWriter, write_atomically
from plainbox_like.read import summary
from plainbox_like.index.listing import ListFilter
from plainbox_like.index.query import SessionIndex
from plainbox_like.store.model import Attempt
from plainbox_like.read.summary import SessionSummary
from factories import CLOSE, OPEN, dead_pid, written_session

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
    monkeypatch.delenv(settle.SESSION_ENV, raising=False)
    monkeypatch.delenv(settle.JOB_ENV, raising=False)


@pytest.fixture
def units(tmp_path):
    path = tmp_path / "jobs.pxu"
    path.write_text(UNITS)
    return str(path)


#: A session planned from the units (as ``plainbox-like run`` starts one); each result took 0.5 s.
unit_session = functools.partial(written_session, title="run", duration=0.5)
#: A session with no units: job ``a`` passed, complete (without a finish time).
plain_session = functools.partial(written_session, title="plain", outcomes={"a": "pass"}, finished=False)


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
    real = reader.load_session

    def counting(path, *args, **kwargs):
        loads.append(os.path.basename(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(reader, "load_session", counting)
    return loads


def table_counts(index):
    return {
        table: index.conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        for table in ("sessions", "jobs", "job_texts", "search")
    }


def test_the_index_uses_the_library_s_names_not_copies():
    from plainbox_like.store import codec, model, names

    assert (indexing.STATE_FILE, indexing.JOURNAL_FILE) == (names.STATE_FILE, names.JOURNAL_FILE)
    assert indexing.FAILED_OUTCOMES is model.FAILED_OUTCOMES is names.FAILED_OUTCOMES
    assert indexing.STATUSES is summary.STATUSES is names.STATUSES
    assert indexing.TIME_FIELDS is summary.TIME_FIELDS is names.TIME_FIELDS
    assert (indexing.FLAG_INCOMPLETE, indexing.FLAG_PAUSED) == (model.FLAG_INCOMPLETE, model.FLAG_PAUSED)
    assert indexing.FORMAT is codec.FORMAT is names.FORMAT


def test_direct_reading_knows_every_field_of_the_model():
    """Reading a snapshot directly checks each field as the converter would: a new field must be added there."""
    import attrs

    from plainbox_like.store import model

    assert {f.name for f in attrs.fields(model.Attempt)} == {
        *fastread._ATTEMPT_TYPES, *fastread._OPTIONAL_ATTEMPT_LISTS, *fastread._OPTIONAL_ATTEMPT_OBJECTS
    }
    none = type(None)
    assert fastread._metadata_types() == (
        {
            "title": (str, none), "flags": (list,), "running_job_name": (str, none), "app_id": (str, none),
            "app_blob": (str, none), "created": (float, int, none), "updated": (float, int, none),
            "finished": (float, int, none), "tags": (list,), "parent_session": (str, none),
            "parent_job": (str, none), "runner": (dict, none),
        },
        ("flags", "tags"),
    )  # fmt: skip
    assert {f.name for f in attrs.fields(model.SessionState)} == {
        "jobs", "results", "desired_job_list", "mandatory_job_list", "metadata", "running_jobs", "journal_seq",
        "resources",
    }  # fmt: skip
    assert {f.name for f in attrs.fields(model.RunningJob)} == {"attempt", "started", "io_log_filename", "noreturn"}
    assert {f.name for f in attrs.fields(model.Runner)} == {"pid", "host"}


# -- schema, creation, repairs --------------------------------------------------------


def test_new_index_has_schema_wal_and_private_file(repo, root, units):
    unit_session(repo, units=units)
    notices = []
    with reconciled(root, notices) as index:
        assert notices == []  # the first build is silent
        assert index.created
        assert index.conn.execute("SELECT version FROM schema_version").fetchone()[0] == indexing.SCHEMA_VERSION
        assert index.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert index.conn.execute("PRAGMA page_size").fetchone()[0] == indexing.PAGE_SIZE
        names = {row[0] for row in index.conn.execute("SELECT name FROM sqlite_master")}
        assert {"sessions", "jobs", "job_texts", "search", "info", "schema_version", "job_results"} <= names
        assert index.count() == 1
    path = os.path.join(root, indexing.INDEX_FILE)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert os.path.dirname(path) == repo.root  # beside sessions/


def test_job_results_view_has_the_job_columns(repo, root, units):
    unit_session(repo, units=units, outcomes={"train/resnet": "fail"})
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
    unit_session(repo, units=units, title="survivor")
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
        unit_session(repo, units=units, title=f"session {n}")
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
    unit_session(repo, units=units, title="kept")
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
    unit_session(repo, units=units)
    reconciled(root).close()
    count_loads.clear()

    def add_column(conn):
        conn.execute("ALTER TABLE sessions ADD COLUMN note TEXT")

    monkeypatch.setattr(schema, "SCHEMA_VERSION", schema.SCHEMA_VERSION + 1)
    monkeypatch.setattr(schema, "MIGRATIONS", {schema.SCHEMA_VERSION - 1: add_column})
    notices = []
    with open_index(root, notices) as index:
        assert index.conn.execute("SELECT version FROM schema_version").fetchone()[0] == schema.SCHEMA_VERSION
        assert "note" in {row[1] for row in index.conn.execute("PRAGMA table_info(sessions)")}
        assert index.count() == 1
    assert notices == [] and count_loads == []


def test_newer_schema_is_left_alone(repo, root, units):
    unit_session(repo, units=units, title="one")
    with reconciled(root) as index:
        index.conn.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(indexing.IndexUnusable, match="newer"):
        SessionIndex.open(root)
    notices = []
    with access.fresh_index(root, notices.append) as index:  # readers fall back to memory
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
    unit_session(repo, units=units, title="still listed")
    reconciled(root).close()
    real = SessionIndex.reconcile

    def readonly(self):
        if not self.memory:
            raise sqlite3.OperationalError("attempt to write a readonly database")
        return real(self)

    monkeypatch.setattr(SessionIndex, "reconcile", readonly)
    notices = []
    with access.fresh_index(root, notices.append) as index:
        assert index.memory and [s.title for s in index.summaries()] == ["still listed"]
    assert len(notices) == 1 and "readonly" in notices[0]


def test_rebuild_recreates_everything(repo, root, units):
    for n in range(3):
        unit_session(repo, units=units, title=f"s{n}", outcomes={"disk/read": "fail"})
    with reconciled(root) as index:
        before = table_counts(index)
        index.conn.execute("DELETE FROM jobs")
        stats = index.rebuild()
        assert stats.added == 3 and stats.read == 3
        assert table_counts(index) == before


# -- upserts, removals, reconcile ----------------------------------------------------------


def test_upsert_is_idempotent(repo, root, units):
    writers = [unit_session(repo, units=units, title=f"s{n}", outcomes={"train/resnet": "pass"}) for n in range(3)]
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
    keep = unit_session(repo, units=units, title="keep")
    gone = unit_session(repo, units=units, title="gone")
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
    writers = [unit_session(repo, units=units, title=f"s{n}", end=CLOSE if n != 0 else OPEN) for n in range(5)]
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
        # (The full reconcile: the quick one need not stat the files of a settled session, see below.)
        stats = index.reconcile(full=True)
        assert stats.updated == 2 and sorted(count_loads) == sorted(
            os.path.basename(w.path) for w in (writers[0], writers[3])
        )
        counts = {s.id: s.counts for s in index.summaries()}
        assert counts[writers[0].id] == {"pass": 1}


def test_a_change_during_reading_is_caught_by_the_next_reconcile(repo, root, units, monkeypatch):
    writer = unit_session(repo, units=units, end=OPEN)
    real = reader.load_session

    def load_then_change(path, *args, **kwargs):
        loaded = real(path, *args, **kwargs)
        if path == writer.path and not writer.state.results:
            writer.job_finished("disk/read", Attempt("fail"))  # lands after the stamps were taken
        return loaded

    monkeypatch.setattr(reader, "load_session", load_then_change)
    with open_index(root) as index:
        index.reconcile()
        assert index.summaries()[0].counts == {}
        assert index.reconcile().updated == 1
        assert index.summaries()[0].counts == {"fail": 1}
    writer.close()


# -- what the index shows ----------------------------------------------------------------


def test_index_shows_what_summarize_shows(repo, root, units):
    unit_session(repo, units=units, title="done", outcomes={"train/resnet": "pass", "eval/resnet": "fail"}, tags=["gpu"])
    unit_session(repo, units=units, title="interrupted", outcomes={"train/resnet": "crash"}, complete=False)
    live = unit_session(repo, units=units, title="live", end=OPEN)
    plain_session(repo)
    bad = repo.create(title="bad")
    bad.close()
    with open(os.path.join(bad.path, names.STATE_FILE), "wb") as f:
        f.write(b"junk")
    make_old(bad.path)
    os.mkdir(os.path.join(repo.sessions_dir, "empty.session"))
    make_old(os.path.join(repo.sessions_dir, "empty.session"))
    journal = repo.create(title="bad journal")
    journal.job_finished("x", Attempt("pass"))
    journal.job_finished("y", Attempt("pass"))
    journal.abandon()
    with open(os.path.join(journal.path, names.JOURNAL_FILE), "r+b") as f:
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
        assert listing.json_list(documents) == expected
        statuses = {d["title"] or d["id"]: d["status"] for d in direct}
        assert statuses["live"] == "running" and statuses["interrupted"] == "incomplete"
        reasons = [d["reason"] for d in direct if d["status"] == "corrupt"]
        assert len(reasons) == 3 and all(reasons)
    finally:
        live.close()


def test_running_status_is_checked_when_read(repo, root, units):
    writer = unit_session(repo, units=units, title="live", complete=False, end=OPEN)
    with reconciled(root) as index:
        assert index.summaries()[0].status == "running"
        writer.abandon()  # the writer dies: nothing in the directory changes...
        with open(os.path.join(writer.path, names.LOCK_FILE), "w") as f:
            f.write(f"{dead_pid()} {socket.gethostname()}\n")
        listed = index.list()[0]  # ...no reconcile: the stored "running" is checked live
        assert listed.summary.status == "incomplete"
        assert json.loads(listed.document)["status"] == "incomplete"
        assert json.loads(index.list(documents_only=True)[0].document)["status"] == "incomplete"
        assert index.list(ListFilter(statuses=["running"])) == []
        assert len(index.list(ListFilter(statuses=["incomplete"]))) == 1


def test_paused_is_a_live_status_too(repo, root, units):
    writer = unit_session(repo, units=units, title="paused", complete=False, end=OPEN)
    writer.update_metadata(flags=["incomplete", "paused"])
    with reconciled(root) as index:
        assert index.summaries()[0].status == "paused"
        assert [s.id for s in index.summaries(ListFilter(statuses=["paused"]))] == [writer.id]
        writer.abandon()
        with open(os.path.join(writer.path, names.LOCK_FILE), "w") as f:
            f.write(f"{dead_pid()} {socket.gethostname()}\n")
        assert index.summaries()[0].status == "incomplete"
        assert index.summaries(ListFilter(statuses=["paused"])) == []


def test_lock_released_after_the_snapshot_is_not_running(repo, root, units):
    writer = unit_session(repo, units=units, title="closing", end=OPEN)
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


@settings(max_examples=200, deadline=None)
@given(strings=st.lists(st.text()), counts=st.dictionaries(st.text(), st.integers()))
def test_compact_json_of_flags_tags_and_counts_is_what_json_dumps_writes(strings, counts):
    def dumps(obj):
        return json.dumps(obj, separators=(",", ":"), sort_keys=True, ensure_ascii=False)

    assert indexing._json_strings(strings) == dumps(strings)
    assert indexing._json_counts(counts) == dumps(counts)


# -- filters -------------------------------------------------------------------------------


@pytest.fixture
def filtered(repo, root, units):
    now = time.time()
    a = unit_session(repo, units=units, title="Nightly 1", outcomes={"train/resnet": "fail"}, tags=["gpu", "x86"])
    b = unit_session(repo, units=units, title="nightly 2", outcomes={"train/resnet": "pass", "disk/read": "crash"}, tags=["x86"])
    c = unit_session(repo, units=units, title="weekly", complete=False, parent_session=a.id, tags=["gpu"])
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
    writer = unit_session(repo, units=units, outcomes={"disk/read": "fail"}, end=OPEN)
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
    unit_session(repo, units=units, title="before the edit")
    with open(units, "w") as f:
        f.write(UNITS.replace("model.fit(epochs=3)", "model.train()"))
    unit_session(repo, units=units, title="after the edit")
    gone = tmp_path / "gone.pxu"
    gone.write_text(UNITS)
    unit_session(repo, units=str(gone), title="file removed")
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
        unit_session(repo, units=units, title=f"s{n}")
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
from plainbox_like.index.query import SessionIndex
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
    writers = [unit_session(repo, units=units, title=f"s{n}", end=OPEN) for n in range(4)]
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


# -- reading snapshots directly (bulk reads) ---------------------------------------------------


def comparable(record):
    """A record without the time it was made."""
    if record is None:
        return None
    row = list(record.row)
    row[indexing._COL["indexed"]] = None
    return (record.id, record.path, record.stamps, record.sid, tuple(row), record.jobs, record.texts)


def both_ways(path, definitions=None):
    """A session read directly (when it can be) and read the ordinary way: the same record."""
    definitions = definitions or indexing.DefinitionCache()
    fast = indexing.read_session(path, definitions, fast=True)
    slow = indexing.read_session(path, definitions, fast=False)
    assert comparable(fast) == comparable(slow)
    return fast


def test_direct_reading_of_generated_sessions_is_the_ordinary_reading(tmp_path, count_loads, monkeypatch):
    # Both readings see the sessions as changed "a moment ago", however slow the machine is between them.
    monkeypatch.setattr("plainbox_like.index.stamps.RACY_SECONDS", 3600.0)
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "scripts"))
    try:
        import make_sessions
    finally:
        sys.path.pop(0)
    root = str(tmp_path / "generated")
    make_sessions.make_sessions(root, 150, seed=7, workers=1)
    sessions_dir = os.path.join(root, "sessions")
    paths = sorted(os.path.join(sessions_dir, name) for name in os.listdir(sessions_dir))
    definitions = indexing.DefinitionCache()
    count_loads.clear()
    fast = [indexing.read_session(path, definitions, fast=True) for path in paths]
    direct = len(paths) - len(count_loads)
    slow = [indexing.read_session(path, definitions, fast=False) for path in paths]
    assert [comparable(r) for r in fast] == [comparable(r) for r in slow]
    statuses = {r.row[indexing._COL["status"]] for r in fast}
    assert {"complete", "incomplete", "corrupt"} <= statuses
    assert direct > len(paths) // 2  # most are plain snapshots: read directly
    assert len(count_loads) > 5  # journals to replay, damage: the ordinary way


def rewrite_snapshot(path, edit):
    """Replace the session's snapshot by *edit* applied to its decoded document."""
    import gzip

    state_path = os.path.join(path, names.STATE_FILE)
    with open(state_path, "rb") as f:
        doc = json.loads(gzip.decompress(f.read()))
    edit(doc)
    with open(state_path + ".tmp", "wb") as f:
        f.write(gzip.compress(json.dumps(doc).encode()))
    os.replace(state_path + ".tmp", state_path)


def test_direct_reading_takes_only_what_the_converter_takes(repo, units):
    writer = unit_session(repo, units=units, outcomes={"train/resnet": "pass", "disk/read": "fail"})

    def results(doc):
        return doc["session"]["results"]

    cases = {
        "numbers as integers": lambda d: results(d)["disk/read"][0].update(execution_duration=3, started=1700000000),
        "only an outcome": lambda d: results(d).__setitem__("eval/resnet", [{"outcome": "skip"}]),
        "unknown fields": lambda d: (d["session"].update(extra=[1]), results(d)["disk/read"][0].update(extra={})),
        "a running job": lambda d: d["session"].update(running_jobs={"eval/resnet": {"attempt": 2, "started": 17.5}}),
        "resources": lambda d: d["session"].update(resources={"r": [{"a": "1"}]}),
        "an older attempt of another type": lambda d: results(d)["disk/read"].insert(0, {"outcome": 5}),
        "a float attempt number": lambda d: results(d)["disk/read"][0].update(attempt=1.0),
        "a boolean return code": lambda d: results(d)["disk/read"][0].update(return_code=True),
        "tags not a list": lambda d: d["session"]["metadata"].update(tags="gpu"),
        "runner without host": lambda d: d["session"]["metadata"].update(runner={"pid": 1}),
        "a running job without start": lambda d: d["session"].update(running_jobs={"x": {"attempt": 1}}),
        "bad resources": lambda d: d["session"].update(resources={"r": [{"a": 1}]}),
        "jobs not strings": lambda d: d["session"]["jobs"].update({"x": None}),
        "older version": lambda d: d.update(version=1),
        "newer version": lambda d: d.update(version=99),
        "no format (Plainbox)": lambda d: d.pop("format"),
    }
    original = os.path.join(writer.path, names.STATE_FILE)
    with open(original, "rb") as f:
        pristine = f.read()
    seen = {}
    for name, edit in cases.items():
        with open(original, "wb") as f:
            f.write(pristine)
        rewrite_snapshot(writer.path, edit)
        record = both_ways(writer.path)
        seen[name] = record.row[indexing._COL["status"]]
    assert seen["numbers as integers"] == seen["only an outcome"] == seen["unknown fields"] == "complete"
    assert seen["an older attempt of another type"] == seen["runner without host"] == "corrupt"
    assert seen["a boolean return code"] == seen["newer version"] == "corrupt"


def test_direct_reading_replays_journals_the_ordinary_way(repo, units, count_loads):
    writer = unit_session(repo, units=units, end=OPEN)
    writer.job_finished("disk/read", Attempt("fail"))
    count_loads.clear()
    record = both_ways(writer.path)
    assert count_loads  # a journal to replay: the model does it
    assert json.loads(record.row[indexing._COL["counts"]]) == {"fail": 1}
    writer.close()
    count_loads.clear()
    both_ways(writer.path)
    assert len(count_loads) == 1  # only the ordinary reading


def test_rebuild_reads_directly_and_stores_what_reading_each_session_stores(repo, root, units, monkeypatch):
    for n in range(6):
        unit_session(repo, units=units, title=f"s{n}", outcomes={"disk/read": "fail"}, complete=n % 2 == 0)
    plain_session(repo)
    with reconciled(root) as index:
        def dump():
            return (
                [
                    row[:-2] + row[-1:]  # all but the time it was indexed
                    for row in index.conn.execute(f"SELECT {', '.join(indexing.SESSION_COLUMNS)} FROM sessions ORDER BY id")
                ],
                # (a rebuild numbers the sessions: compare rows by session id, not by sid)
                index.conn.execute(
                    "SELECT s.id, j.position, j.tid, j.attempt, j.outcome, j.return_code, j.duration, j.started,"
                    " j.running FROM jobs j JOIN sessions s USING (sid) ORDER BY s.id, j.position"
                ).fetchall(),
                index.conn.execute("SELECT * FROM job_texts ORDER BY tid").fetchall(),
                index.conn.execute(
                    "SELECT coalesce((SELECT id FROM sessions WHERE sid = search.rowid), rowid) AS key,"
                    " title, job_id, summary, command FROM search ORDER BY rowid > 0, key"
                ).fetchall(),
            )

        ordinary = dump()
        index.rebuild()
        assert dump() == ordinary
        sids = [row[0] for row in index.conn.execute("SELECT sid FROM sessions ORDER BY id")]
        assert sids == list(range(1, 8))  # numbered in path order: rows go in in key order
        monkeypatch.setattr("plainbox_like.index.fastread.POOL_THRESHOLD", 2)  # through a pool of readers, each sending a text once
        index.workers = 2
        assert index.rebuild().added == 7
        assert dump() == ordinary


# -- the quick reconcile: settled sessions -------------------------------------------------------


def settled_of(index, session_id):
    return index.conn.execute("SELECT settled FROM sessions WHERE id = ?", (session_id,)).fetchone()[0]


@pytest.fixture
def settle_at_once(monkeypatch):
    """Finished sessions settle as soon as they are read (instead of after the clock-granularity window)."""
    monkeypatch.setattr("plainbox_like.index.stamps.RACY_SECONDS", -1.0)


def directory_stamp(path):
    st = os.stat(path)
    return (st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_size)


def append_result(path, job_id, outcome):
    """Journal a result as a writer would (without taking the lock: a writer we cannot see)."""
    seq = reader.load_session(path).state.journal_seq + 1
    line = {"seq": seq, "op": "result", "job": job_id, "result": {"outcome": outcome, "attempt": 1}, "t": time.time()}
    with open(os.path.join(path, names.JOURNAL_FILE), "ab") as f:
        f.write(json.dumps(line).encode() + b"\n")


def test_a_finished_session_is_checked_by_its_directory_alone(repo, root, units, count_loads, settle_at_once):
    writer = unit_session(repo, units=units, title="done long ago")
    make_old(writer.path)
    with open_index(root) as index:
        index.reconcile()
        assert settled_of(index, writer.id) == indexing.SETTLED
        count_loads.clear()
        directory = directory_stamp(writer.path)
        os.utime(os.path.join(writer.path, names.STATE_FILE))  # touched, not changed
        assert directory_stamp(writer.path) == directory
        assert index.reconcile().read == 0 and count_loads == []
        assert index.reconcile(full=True).updated == 1  # the full one compares every file


def test_a_writer_on_a_settled_session_changes_its_directory(repo, root, units, settle_at_once):
    writer = unit_session(repo, units=units, title="done")
    make_old(writer.path)
    with reconciled(root) as index:
        assert settled_of(index, writer.id) == indexing.SETTLED
        again = SessionWriter.open(writer.path, durability="flush")  # resume, tag, repair: all do this first
        again.job_finished("disk/read", Attempt("crash"))
        stats = index.reconcile()
        assert stats.updated == 1
        assert index.summaries()[0].status == "running" and settled_of(index, writer.id) == indexing.UNSETTLED
        again.job_finished("eval/resnet", Attempt("pass"))  # the journal grows, the directory does not change
        assert index.reconcile().updated == 1
        assert index.summaries()[0].counts == {"crash": 1, "pass": 1}
        again.close()
        assert index.reconcile().updated == 1
        assert index.summaries()[0].status == "complete"


def test_a_session_locked_by_another_host_is_never_settled(repo, root, units, settle_at_once):
    writer = unit_session(repo, units=units, title="written elsewhere")
    with open(os.path.join(writer.path, LOCK_FILE), "w") as f:
        f.write("4242 some-other-host\n")
    make_old(writer.path)
    with reconciled(root) as index:
        assert index.summaries()[0].status == "complete"  # we cannot tell that the writer there is alive
        assert settled_of(index, writer.id) == indexing.UNSETTLED
        directory = directory_stamp(writer.path)
        append_result(writer.path, "disk/read", "fail")  # the directory does not change
        assert directory_stamp(writer.path) == directory
        assert index.reconcile().updated == 1
        assert index.summaries()[0].counts == {"fail": 1}


def test_a_session_read_just_after_a_change_is_checked_in_full_until_it_settles(repo, root, units, monkeypatch):
    monkeypatch.setattr("plainbox_like.index.stamps.RACY_SECONDS", 3600.0)  # "a moment ago", however slow the machine is
    writer = unit_session(repo, units=units, title="just finished")
    with reconciled(root) as index:
        assert settled_of(index, writer.id) == indexing.SETTLING  # its directory changed a moment ago
        directory = directory_stamp(writer.path)
        append_result(writer.path, "disk/read", "fail")  # as if a writer came within the same clock tick
        assert directory_stamp(writer.path) == directory
        assert index.reconcile().updated == 1  # still caught: the files are compared
        assert index.summaries()[0].counts == {"fail": 1}
        monkeypatch.setattr("plainbox_like.index.stamps.RACY_SECONDS", 0.05)
        time.sleep(0.1)
        assert index.reconcile().changed == 0  # unchanged, and long enough after: now settled
        assert settled_of(index, writer.id) == indexing.SETTLED


def test_a_directory_replaced_by_another_with_the_same_times_is_caught(repo, root, units, settle_at_once):
    first = unit_session(repo, units=units, title="first")
    second = unit_session(repo, units=units, title="second")
    then = time.time_ns() - 10**12
    for writer in (first, second):
        os.utime(writer.path, ns=(then, then))
    with reconciled(root) as index:
        assert settled_of(index, first.id) == indexing.SETTLED
        shutil.rmtree(first.path)
        shutil.copytree(second.path, first.path)
        os.utime(first.path, ns=(then, then))
        assert index.reconcile().updated == 1
        assert {s.id: s.title for s in index.summaries()}[first.id] == "second"


def test_a_session_stored_as_running_whose_writer_died_is_read_again(repo, root, units):
    writer = unit_session(repo, units=units, title="live", complete=False, end=OPEN)
    with reconciled(root) as index:
        writer.abandon()
        with open(os.path.join(writer.path, names.LOCK_FILE), "w") as f:
            f.write(f"{dead_pid()} {socket.gethostname()}\n")
        stats = index.reconcile()
        assert stats.updated == 1 and stats.read == 1
        assert index.conn.execute("SELECT status FROM sessions").fetchone()[0] == "incomplete"
        assert index.reconcile().changed == 0


def test_sessions_that_appear_and_disappear_without_a_reconcile_between(repo, root, units, settle_at_once):
    kept = unit_session(repo, units=units, title="kept")
    gone = unit_session(repo, units=units, title="gone")
    for writer in (kept, gone):
        make_old(writer.path)
    with reconciled(root) as index:
        shutil.rmtree(gone.path)
        fresh = unit_session(repo, units=units, title="fresh")  # as many sessions as before
        stats = index.reconcile()
        assert (stats.added, stats.removed) == (1, 1)
        assert index.ids() == {kept.id, fresh.id}
        os.rename(fresh.path, os.path.join(repo.sessions_dir, "renamed.session"))
        stats = index.reconcile()
        assert (stats.added, stats.removed) == (1, 1)
        assert index.ids() == {kept.id, "renamed"}


# -- list --json straight from the index ---------------------------------------------------------


def test_json_parts_are_the_listed_documents_in_order(repo, root, units):
    now = time.time()
    for n in range(40):  # created in no particular order
        writer = unit_session(repo, units=units, title=f"s{n}", complete=n % 3 != 0, tags=["x"] if n % 2 else [])
        if n % 5 == 0:
            SessionWriter.open(writer.path, durability="flush").close()
        make_old(writer.path)
        rewrite_snapshot(writer.path, lambda d, n=n: d["session"]["metadata"].update(created=now - (n * 7919 % 40) * 60))
    with reconciled(root) as index:
        for flt in (ListFilter(), ListFilter(limit=7), ListFilter(tags=["x"]), ListFilter(statuses=["incomplete"]),
                    ListFilter(statuses=["incomplete"], limit=3), ListFilter(title="nothing like it")):  # fmt: skip
            expected = listing.json_list([item.document for item in index.list(flt, documents_only=True)])
            assert b"".join(index.json_parts(flt)).decode() == expected


def test_json_parts_check_live_statuses(repo, root, units):
    unit_session(repo, units=units, title="done")
    writer = unit_session(repo, units=units, title="live", complete=False, end=OPEN)
    with reconciled(root) as index:
        writer.abandon()
        with open(os.path.join(writer.path, names.LOCK_FILE), "w") as f:
            f.write(f"{dead_pid()} {socket.gethostname()}\n")
        listed = json.loads(b"".join(index.json_parts()))  # no reconcile: the stored "running" is checked
        assert [d["status"] for d in listed] == ["incomplete", "complete"]
        assert json.loads(b"".join(index.json_parts(ListFilter(statuses=["running"])))) == []
        assert [d["title"] for d in json.loads(b"".join(index.json_parts(ListFilter(statuses=["incomplete"]))))] == ["live"]


def test_the_quick_scan_shared_with_a_forked_process_finds_the_same(repo, root, units, monkeypatch, settle_at_once):
    writers = [unit_session(repo, units=units, title=f"s{n}") for n in range(6)]
    with open(os.path.join(repo.sessions_dir, "not-a-session.txt"), "w") as f:
        f.write("x")
    with reconciled(root) as index:
        text = index.conn.execute("SELECT group_concat(dir_key, '/') FROM sessions WHERE settled = 1").fetchone()[0]
        settled = set(text.split("/"))
        assert len(settled) == 6
        SessionWriter.open(writers[0].path, durability="flush").close()  # changed
        shutil.rmtree(writers[1].path)  # gone
        fresh = unit_session(repo, units=units, title="new")
        fd = os.open(repo.sessions_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            names = sorted(os.listdir(fd))
            here = indexing._scan_settled_here(names, fd, settled)
            split = indexing._scan_settled_split(names, fd, settled)
        finally:
            os.close(fd)
        assert (split[0], sorted(split[1])) == (here[0], sorted(here[1])) == (
            4, sorted([os.path.basename(writers[0].path), os.path.basename(fresh.path), "not-a-session.txt"])
        )
        monkeypatch.setattr("plainbox_like.index.reconcile.SPLIT_SCAN", 2)  # the reconcile itself, sharing its scan
        stats = index.reconcile()
        assert (stats.added, stats.updated, stats.removed) == (1, 1, 1)
        assert index.ids() == {fresh.id, *(w.id for w in writers if w is not writers[1])}


# -- the direct decoder and the ordinary reading agree on every state ---------------------------------


def _write_plain_session(directory, state):
    """A session directory holding *state* as the writer stores it: its snapshot, an empty journal."""
    from plainbox_like.store import codec

    os.makedirs(directory)
    data, _size = codec.encode_state(state)
    write_atomically(os.path.join(directory, names.STATE_FILE), data)
    open(os.path.join(directory, names.JOURNAL_FILE), "wb").close()


def _times_in_range(state):
    """*state* with its session times within years 1970-2096: a time past year 9999 cannot be
    rendered (both readings raise the same error; a separate problem)."""
    import math

    import attrs

    meta = state.metadata
    times = {key: None if getattr(meta, key) is None else math.fmod(abs(getattr(meta, key)), 4e9) for key in
             ("created", "updated", "finished")}  # fmt: skip
    return attrs.evolve(state, metadata=attrs.evolve(meta, **times))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(state=strategies.session_states.map(_times_in_range))
def test_direct_reading_equals_the_ordinary_reading_for_any_state(tmp_path, state):
    import tempfile

    path = os.path.join(tempfile.mkdtemp(dir=tmp_path), "generated.session")
    _write_plain_session(path, state)
    definitions = indexing.DefinitionCache()
    fast = indexing.read_session(path, definitions, fast=True)
    slow = indexing.read_session(path, definitions, fast=False)
    assert comparable(fast) == comparable(slow)


def test_generated_states_are_read_directly(tmp_path, count_loads):
    """The test above compares something: plain generated states take the direct path."""
    path = os.path.join(tmp_path, "plain.session")
    from plainbox_like.store.model import SessionMetadata, SessionState

    state = SessionState(
        jobs={"a": "1"}, results={"a": [Attempt(outcome="pass", attempt=1)]}, desired_job_list=["a", "b"],
        metadata=SessionMetadata(title="plain", flags=["incomplete"], created=1.0),
    )
    _write_plain_session(path, state)
    count_loads.clear()
    indexing.read_session(path, indexing.DefinitionCache(), fast=True)
    assert count_loads == []
