"""The state codec: round trip, file layout, errors, migrations, and Plainbox sessions."""

from __future__ import annotations

import gzip
import json
import re
import os

import attrs
import pytest
from cattrs.errors import ClassValidationError
from cattrs.gen import make_dict_unstructure_fn, override
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import strategies
from plainbox_like.store import codec, iolog
from plainbox_like.errors import CorruptSession, PlainboxLikeError, UnsupportedVersion
from plainbox_like.store.model import (
    Answered, Attempt, LeftoverProcess, LeftoverProcesses, Placement, SessionMetadata, SessionState,
)
from plainbox_like.store.writer import SessionWriter
from plainbox_like.store.reader import load_session
from factories import APP_BLOB, INLINE_LOG, plainbox_session

PATH = "/some/where/x.session/session"


def _gz(obj) -> bytes:
    return gzip.compress(json.dumps(obj).encode("utf-8"))


def _ours(session: dict, version: int | None = None) -> bytes:
    return _gz({"format": "plainbox-like", "version": codec.VERSION if version is None else version, "session": session})


# -- round trip and layout ----------------------------------------------------------


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(strategies.session_states)
def test_round_trip(state):
    data, raw_size = codec.encode_state(state)
    loaded = codec.decode_state(data, PATH)
    assert loaded.state == state
    assert loaded.origin == codec.FORMAT
    assert loaded.source_version == codec.VERSION
    # Standard tools read it: plain gzip, plain json.
    raw = gzip.decompress(data)
    assert len(raw) == raw_size
    doc = json.loads(raw.decode("utf-8"))
    assert set(doc) == {"format", "version", "session"}
    assert doc["format"] == "plainbox-like"
    assert doc["version"] == codec.VERSION
    # Compact, sorted keys, no escaping of non-ASCII text.
    assert_compact_sorted(raw.decode("utf-8"))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(state=strategies.session_states)
def test_a_state_encoded_piece_by_piece_is_the_one_piece_document(state, monkeypatch):
    """The snapshot encodes its per-job maps a few jobs at a time; the text is still exactly the document's."""
    monkeypatch.setattr(codec, "_ENCODE_CHUNK", 2)
    data, raw_size = codec.encode_state(state)
    whole = codec.dumps_json(codec.state_document(state))
    assert gzip.decompress(data) == whole
    assert raw_size == len(whole)


@settings(max_examples=200, deadline=None)
@given(
    attempt=strategies.attempts,
    leftover_files=st.lists(strategies.texts, max_size=2).map(tuple),
    extra=st.sampled_from(["none", "processes", "answered", "ran_on"]),
)
def test_the_fast_attempt_hook_unstructures_as_the_generated_one(attempt, leftover_files, extra):
    attempt.leftover_files = leftover_files
    if extra == "processes":
        attempt.leftover_processes = LeftoverProcesses(count=1, processes=[LeftoverProcess(pid=7, command="sleep 9")])
    elif extra == "answered":
        attempt.answered = Answered(answer="pass", user="someone", host="h", time=1.5, via="terminal")
    elif extra == "ran_on":
        attempt.ran_on = Placement(address="tcp://h:1", host="h")
    generated = make_dict_unstructure_fn(
        Attempt,
        codec.converter,
        leftover_files=override(omit_if_default=True),
        answered=override(omit_if_default=True),
        ran_on=override(omit_if_default=True),
    )
    assert codec.converter.unstructure(attempt) == generated(attempt)
    assert list(codec.converter.unstructure(attempt)) == list(generated(attempt))  # the same key order too


def test_the_fast_attempt_hooks_know_every_field_of_an_attempt():
    """The fast (un)structure paths of the codec name Attempt's fields one by one: a new field must be added
    there (or to their conditions), not silently dropped from every result."""
    assert {field.name for field in attrs.fields(Attempt)} == {
        "outcome", "return_code", "execution_duration", "comments", "io_log_filename", "attempt", "started",
        "skip_reason", "leftover_processes", "leftover_files", "answered", "ran_on",
    }


def test_the_generated_hooks_made_on_first_need_are_those_the_converter_picks():
    """The fast structure hooks hand what they do not take to generated hooks made at the first need (not at
    import), by the factories that the converter's dispatch picks for those types: the same hooks."""
    import cattrs

    conv = cattrs.Converter(forbid_extra_keys=False)
    for type_, factory in ((Attempt, conv.gen_structure_attrs_fromdict), (dict[str, list[Attempt]], conv.gen_structure_mapping)):
        picked, made = conv.get_structure_hook(type_, cache_result=False), factory(type_)
        assert (picked.__code__.co_code, picked.__code__.co_names) == (made.__code__.co_code, made.__code__.co_names)
    # And they are used: an attempt or a results map the fast hooks do not take goes through them.
    bad = {"results": {"j": [{"outcome": "pass", "leftover_processes": {"count": "2"}}]}}
    _check_error(_ours(bad), CorruptSession, "wrong field type", "count")
    ok = {"results": {"j": [{"outcome": "pass", "leftover_processes": {"count": 2, "kept": False, "processes": []}}]}}
    state = codec.decode_state(_ours(ok), PATH).state
    assert state.results["j"][0].leftover_processes == LeftoverProcesses(count=2, kept=False, processes=[])


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')


def assert_compact_sorted(text: str) -> None:
    """No whitespace between tokens, and every object's keys in sorted order."""
    assert not re.search(r"\s", _STRING.sub('""', text))

    def check_order(pairs):
        keys = [k for k, _ in pairs]
        assert keys == sorted(keys)
        return dict(pairs)

    json.loads(text, object_pairs_hook=check_order)
    # Only control characters are escaped; other text stays as UTF-8.
    assert all(int(code, 16) < 0x20 for code in re.findall(r"\\u([0-9a-fA-F]{4})", text))


def test_document_field_names_follow_plainbox():
    state = SessionState(
        jobs={"ns::a": "c0ffee"},
        results={"ns::a": [Attempt("pass", return_code=0, execution_duration=1, comments="ok", io_log_filename="io-logs/ns__a.record.gz")]},
        desired_job_list=["ns::a"],
        metadata=SessionMetadata(title="T", flags=["incomplete"], app_id="app"),
    )
    doc = json.loads(gzip.decompress(codec.encode_state(state)[0]))
    session = doc["session"]
    assert session["jobs"] == {"ns::a": "c0ffee"}
    result = session["results"]["ns::a"][0]
    assert result["outcome"] == "pass"
    assert result["return_code"] == 0
    assert result["io_log_filename"] == "io-logs/ns__a.record.gz"
    assert session["desired_job_list"] == ["ns::a"]
    assert session["metadata"]["title"] == "T"
    assert session["metadata"]["flags"] == ["incomplete"]
    assert session["metadata"]["app_id"] == "app"


# -- errors ---------------------------------------------------------------------------


def _check_error(data: bytes, kind: type, *words: str):
    with pytest.raises(kind) as info:
        codec.decode_state(data, PATH)
    err = info.value
    assert type(err) is kind
    assert err.path == PATH
    assert str(err).startswith(PATH + ": ")
    for word in words:
        assert word in str(err)
    return err


def test_empty_file():
    _check_error(b"", CorruptSession, "empty")


@pytest.mark.parametrize(
    "data",
    [b"not gzip at all", b"\x1f\x8b", gzip.compress(b'{"version": 1}')[:-5], b"\x1f\x8b\x08\x00" + b"\xff" * 30],
    ids=["garbage", "header-only", "cut", "bad-deflate"],
)
def test_bad_gzip(data):
    _check_error(data, CorruptSession, "gzip")


def test_bad_utf8():
    _check_error(gzip.compress(b'{"version": 1, "session": {"x": "\xff\xfe"}}'), CorruptSession, "UTF-8")


@pytest.mark.parametrize("text", [b"{", b'{"version": 1, "session": {}', b"nope", b"", b"{}{}"])
def test_bad_json(text):
    _check_error(gzip.compress(text), CorruptSession, "JSON")


@pytest.mark.parametrize(
    "doc",
    [[], "session", None, 3, {}, {"version": 1}, {"version": 1, "session": []}, {"version": 1, "session": "x"}],
)
def test_json_that_is_not_a_state(doc):
    _check_error(_gz(doc), CorruptSession, "not a session state")


@pytest.mark.parametrize("version", ["1", 1.0, True, None])
def test_version_must_be_an_integer(version):
    _check_error(_gz({"format": "plainbox-like", "version": version, "session": {}}), CorruptSession, "version")
    _check_error(_gz({"version": version, "session": {}}), CorruptSession, "version")


def test_missing_version():
    _check_error(_gz({"format": "plainbox-like", "session": {}}), CorruptSession, "version")


@pytest.mark.parametrize("version", [codec.VERSION + 1, 99, 0, -1])
def test_unsupported_versions_of_our_format(version):
    _check_error(_ours({}, version), UnsupportedVersion, f"version {version}")


def test_unknown_format():
    err = _check_error(_gz({"format": "something-else", "version": 1, "session": {}}), CorruptSession, "something-else")
    assert not isinstance(err, UnsupportedVersion)


@pytest.mark.parametrize(
    "session, field",
    [
        ({"results": {"j": [{"outcome": "pass", "return_code": "5"}]}}, "return_code"),
        ({"results": {"j": [{"outcome": 3}]}}, "outcome"),
        ({"results": {"j": [{"outcome": "pass", "execution_duration": True}]}}, "execution_duration"),
        ({"results": {"j": [{"outcome": "pass", "attempt": 1.5}]}}, "attempt"),
        ({"results": {"j": {"outcome": "pass"}}}, "results"),
        ({"jobs": {"a": 1}}, "jobs"),
        ({"jobs": ["a"]}, "jobs"),
        ({"metadata": {"title": 5}}, "title"),
        ({"metadata": {"flags": "incomplete"}}, "flags"),
        ({"metadata": {"tags": [1]}}, "tags"),
        ({"desired_job_list": "abc"}, "desired_job_list"),
        ({"metadata": {"runner": {"pid": "1", "host": "h"}}}, "pid"),
        ({"running_jobs": {"x": {"attempt": 1}}}, "started"),
        ({"journal_seq": True}, "journal_seq"),
        ({"journal_seq": None}, "journal_seq"),
    ],
)
def test_wrong_field_types_name_the_field(session, field):
    _check_error(_ours(session), CorruptSession, "wrong field type", field)


def test_errors_through_load_session_name_the_state_file(tmp_path):
    session_dir = tmp_path / "x.session"
    session_dir.mkdir()
    (session_dir / "session").write_bytes(_ours({"results": {"j": [{"outcome": 3}]}}))
    with pytest.raises(CorruptSession) as info:
        load_session(str(session_dir))
    assert info.value.path == str(session_dir / "session")
    (session_dir / "session").write_bytes(b"")
    with pytest.raises(CorruptSession, match="empty"):
        load_session(str(session_dir))


# -- migrations -----------------------------------------------------------------------


def test_migration_from_an_older_version(monkeypatch, tmp_path):
    current = codec.VERSION
    old_state = SessionState(metadata=SessionMetadata(title="old", tags=["a"]), journal_seq=3)
    old_data, _ = codec.encode_state(old_state)
    assert json.loads(gzip.decompress(old_data))["version"] == current

    seen = []

    def step(session):
        seen.append(json.loads(json.dumps(session)))
        session = dict(session)
        session["metadata"] = {**session["metadata"], "title": session["metadata"]["title"] + " (migrated)"}
        session["metadata"]["tags"] = [*session["metadata"]["tags"], "next"]
        return session

    monkeypatch.setattr(codec, "VERSION", current + 1)
    monkeypatch.setitem(codec.MIGRATIONS, current, step)

    loaded = codec.decode_state(old_data, PATH)
    assert loaded.source_version == current
    assert loaded.origin == codec.FORMAT
    assert loaded.state.metadata.title == "old (migrated)"
    assert loaded.state.metadata.tags == ["a", "next"]
    assert loaded.state.journal_seq == 3
    assert len(seen) == 1 and seen[0]["metadata"]["title"] == "old"

    # Writing now produces the new version, which loads without migrating.
    new_data, _ = codec.encode_state(loaded.state)
    assert json.loads(gzip.decompress(new_data))["version"] == current + 1
    again = codec.decode_state(new_data, PATH)
    assert again.source_version == current + 1
    assert again.state == loaded.state
    assert len(seen) == 1

    # The version after that is still from the future.
    with pytest.raises(UnsupportedVersion, match=f"version {current + 2}"):
        codec.decode_state(_ours({}, current + 2), PATH)

    # A session directory on disk migrates the same way.
    session_dir = tmp_path / "old.session"
    session_dir.mkdir()
    (session_dir / "session").write_bytes(old_data)
    on_disk = load_session(str(session_dir))
    assert on_disk.source_version == current
    assert on_disk.state.metadata.title == "old (migrated)"


def test_version_1_sessions_migrate_to_version_2_with_no_resources():
    v1 = {"jobs": {"a": "x"}, "results": {"a": [{"outcome": "pass"}]}, "desired_job_list": ["a"],
          "metadata": {"title": "t"}, "journal_seq": 2}
    loaded = codec.decode_state(_ours(v1, 1), PATH)
    assert loaded.source_version == 1
    assert loaded.state.resources == {}
    assert loaded.state.results["a"][0].outcome == "pass"
    assert codec.MIGRATIONS[1](dict(v1))["resources"] == {}


def test_resources_round_trip_and_are_type_checked():
    state = SessionState(resources={"cpu": [{"count": "4", "arch": "amd64"}, {}]})
    data, _ = codec.encode_state(state)
    assert codec.decode_state(data, PATH).state.resources == state.resources
    _check_error(_ours({"resources": {"cpu": [{"count": 4}]}}), CorruptSession, "wrong field type", "resources")



def test_version_2_sessions_migrate_to_version_3_with_no_leftover_processes_known():
    v2 = {"jobs": {"a": "x"}, "results": {"a": [{"outcome": "pass", "return_code": 0}, {"outcome": "fail"}]},
          "desired_job_list": ["a"], "metadata": {"title": "t"}, "journal_seq": 2, "resources": {}}
    assert codec.VERSION >= 3
    migrated = codec.MIGRATIONS[2](json.loads(json.dumps(v2)))
    assert [a["leftover_processes"] for a in migrated["results"]["a"]] == [None, None]
    assert v2["results"]["a"][0] == {"outcome": "pass", "return_code": 0}  # the input is not changed
    loaded = codec.decode_state(_ours(v2, 2), PATH)
    assert loaded.source_version == 2
    assert [a.leftover_processes for a in loaded.state.results["a"]] == [None, None]
    assert [a.outcome for a in loaded.state.results["a"]] == ["pass", "fail"]
    # Damage is still reported by the structuring step, not by the migration.
    _check_error(_ours({"results": {"a": "nope"}}, 2), CorruptSession, "wrong field type")
    _check_error(_ours({"results": []}, 2), CorruptSession, "wrong field type")
    # Version 1 goes through both steps.
    v1 = {k: v for k, v in v2.items() if k != "resources"}
    assert codec.decode_state(_ours(v1, 1), PATH).state.results["a"][0].leftover_processes is None


def test_leftover_processes_round_trip_and_are_type_checked(tmp_path):
    left = LeftoverProcesses(count=12, kept=True, processes=[LeftoverProcess(pid=41, command="sleep 600")])
    state = SessionState(results={"a": [Attempt("pass", 0, 1.5, leftover_processes=left)], "b": [Attempt("pass")]})
    data, _ = codec.encode_state(state)
    doc = json.loads(gzip.decompress(data))
    assert doc["version"] == codec.VERSION
    assert doc["session"]["results"]["a"][0]["leftover_processes"] == {
        "count": 12, "kept": True, "processes": [{"command": "sleep 600", "pid": 41}]
    }
    assert doc["session"]["results"]["b"][0]["leftover_processes"] is None
    assert codec.decode_state(data, PATH).state == state
    # A journal result line (no version of its own) with and without the field.
    assert codec.structure_attempt({"outcome": "pass"}).leftover_processes is None
    assert codec.structure_attempt(
        {"outcome": "pass", "leftover_processes": {"count": 1, "processes": [{"pid": 3, "command": "x"}]}}
    ).leftover_processes == LeftoverProcesses(1, False, [LeftoverProcess(3, "x")])
    for bad in ({"count": "1"}, {"count": 1, "kept": "yes"}, {"count": 1, "processes": [{"pid": "3", "command": "x"}]},
                {"count": 1, "processes": "x"}, "many"):
        _check_error(_ours({"results": {"a": [{"outcome": "pass", "leftover_processes": bad}]}}),
                     CorruptSession, "wrong field type", "leftover_processes")


def test_who_answered_round_trips_and_version_3_reads_with_nobody():
    """Version 4 keeps who answered a job that needs a person; attempts without it (older) read as None."""
    answered = Answered(answer="fail", user="ann", host="lab1", time=1700000000.5, via="answer-command")
    state = SessionState(results={"a": [Attempt("fail", comments="no light", answered=answered)], "b": [Attempt("pass")]})
    data, _ = codec.encode_state(state)
    doc = json.loads(gzip.decompress(data))
    assert doc["version"] == codec.VERSION
    assert doc["session"]["results"]["a"][0]["answered"] == {
        "answer": "fail", "host": "lab1", "time": 1700000000.5, "user": "ann", "via": "answer-command"
    }
    assert "answered" not in doc["session"]["results"]["b"][0]  # left out when nobody answered
    assert codec.decode_state(data, PATH).state == state
    v3 = {"results": {"a": [{"outcome": "pass", "leftover_processes": None}]}, "journal_seq": 1}
    loaded = codec.decode_state(_ours(v3, 3), PATH)
    assert loaded.source_version == 3 and loaded.state.results["a"][0].answered is None
    for bad in ({"answer": "pass"}, {"answer": 1, "user": "u", "host": "h", "time": 1.0, "via": "terminal"}, "ann"):
        _check_error(_ours({"results": {"a": [{"outcome": "pass", "answered": bad}]}}),
                     CorruptSession, "wrong field type", "answered")


# -- Plainbox / Checkbox sessions (read-only) -----------------------------------------

def _snapshot_tree(directory):
    out = {}
    for root, dirs, files in os.walk(directory):
        for name in dirs + files:
            path = os.path.join(root, name)
            st = os.stat(path)
            out[path] = (st.st_mtime_ns, st.st_size)
    return out


@pytest.mark.parametrize("version", range(1, 12))
def test_plainbox_sessions_load(tmp_path, version):
    directory = tmp_path / f"pbox-v{version}"
    plainbox_session(directory, version)
    before = _snapshot_tree(directory)
    loaded = load_session(str(directory))
    assert _snapshot_tree(directory) == before  # read-only
    assert loaded.origin == "plainbox"
    assert loaded.source_version == version
    assert loaded.journal_torn is None
    state = loaded.state
    cpu, local, inside, gone, never = (
        "com.canonical.certification::" + name for name in ("cpu_info", "local", "inside", "gone", "never")
    )
    assert state.jobs[cpu] == "a" * 64
    assert state.desired_job_list == [cpu, local, inside, gone, never]
    assert state.mandatory_job_list == ([cpu] if version >= 5 else [])
    assert [a.attempt for a in state.results[cpu]] == [1, 2]
    assert [a.outcome for a in state.results[cpu]] == ["fail", "pass"]
    assert state.results[cpu][0].return_code == 1
    assert state.results[cpu][1].execution_duration == 1.5
    assert state.results[gone][0].outcome == "crash"
    assert state.results[gone][0].return_code is None
    assert state.results[never][0].outcome == "not-run"
    assert state.results[never][0].comments == "skipped by user"
    meta = state.metadata
    assert meta.title == f"session v{version}"
    assert meta.flags == ["incomplete"]
    assert meta.running_job_name == never
    assert meta.app_blob == (APP_BLOB if version >= 2 else None)
    assert meta.app_id == ("com.canonical.certification:checkbox" if version >= 3 else None)
    if version == 1:
        assert all(a.io_log_filename is None for attempts in state.results.values() for a in attempts)
        assert loaded.inline_io_logs[(cpu, 1)] == INLINE_LOG
        assert loaded.inline_io_logs[(cpu, 2)] == INLINE_LOG
        records = iolog.records_from_json(loaded.inline_io_logs[(local, 1)])
        assert [(r.delay, r.stream, r.data) for r in records] == [(0.0, "stdout", b"hello\n"), (0.25, "stderr", b"\x00\xffwarn")]
    else:
        assert loaded.inline_io_logs == {}
        # The old absolute name is rewritten to the file that is really here.
        assert state.results[cpu][0].io_log_filename == "io-logs/com.canonical.certification__cpu_info.record.gz"
        assert state.results[cpu][1].io_log_filename == "io-logs/com.canonical.certification__cpu_info.record.gz"
        assert state.results[local][0].io_log_filename == "io-logs/local.record.gz"
        assert state.results[inside][0].io_log_filename == "io-logs/inside.record.gz"
        # Nothing to point at here: still looked for here, never outside the session.
        assert state.results[gone][0].io_log_filename == "io-logs/gone.record.gz"
        for job in (cpu, local, inside):
            name = state.results[job][0].io_log_filename
            assert not os.path.isabs(name)
            records = iolog.read_records(os.path.join(str(directory), name))
            assert records.complete and records.records[0].data == b"hi\n"


@pytest.mark.parametrize("version", [0, 12, 99, -1])
def test_plainbox_versions_out_of_range(tmp_path, version):
    directory = tmp_path / "pbox"
    plainbox_session(directory, 11)
    data = _gz({"version": version, "session": {"jobs": {}, "results": {}}})
    (directory / "session").write_bytes(data)
    with pytest.raises(UnsupportedVersion) as info:
        load_session(str(directory))
    assert info.value.path == str(directory / "session")
    assert f"version {version}" in str(info.value)


@pytest.mark.parametrize(
    "session, field",
    [
        ({"results": {"j": [{"outcome": "pass", "return_code": "5"}]}}, "return_code"),
        ({"results": {"j": [{"outcome": 3}]}}, "outcome"),
        ({"results": {"j": [{"outcome": "pass", "execution_duration": True}]}}, "execution_duration"),
        ({"results": {"j": "pass"}}, "results"),
        ({"metadata": {"title": 5}}, "title"),
        ({"metadata": {"flags": "incomplete"}}, "flags"),
        ({"jobs": {"a": 1}}, "jobs"),
    ],
)
def test_plainbox_wrong_field_types(session, field):
    with pytest.raises(CorruptSession) as info:
        codec.decode_state(_gz({"version": 6, "session": session}), PATH)
    assert info.value.path == PATH
    assert "Plainbox session v6" in str(info.value)
    assert field in str(info.value)


def test_plainbox_session_cannot_be_opened_for_writing(tmp_path):
    directory = tmp_path / "pbox"
    plainbox_session(directory, 11)
    with pytest.raises(PlainboxLikeError, match="Plainbox"):
        SessionWriter.open(str(directory))
    assert load_session(str(directory)).origin == "plainbox"


def test_leftover_files_are_a_tuple():
    # Most attempts leave nothing: they share the one empty tuple instead of an empty list each (memory).
    assert Attempt(outcome="pass").leftover_files == () and type(Attempt(outcome="pass").leftover_files) is tuple
    loaded = codec.converter.structure({"outcome": "pass", "leftover_files": ["x", "y"]}, Attempt)
    assert loaded.leftover_files == ("x", "y")
    assert codec.converter.unstructure(loaded)["leftover_files"] == ["x", "y"]
    for bad in ("xy", [1]):  # a string is not taken for a list of its characters
        with pytest.raises(ClassValidationError) as raised:
            codec.converter.structure({"outcome": "pass", "leftover_files": bad}, Attempt)
        assert isinstance(raised.value.exceptions[0], TypeError)
