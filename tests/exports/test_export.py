"""The export formats (json, junit, html, tar) and import, at the library level."""

from __future__ import annotations

import base64
import fcntl
import gzip
import html.parser
import io
import json
import os
import stat
import tarfile
import threading
import xml.etree.ElementTree as ET

import attrs
import pytest

from plainbox_like.store import codec
from plainbox_like.store import writer as writing
from plainbox_like.store.writer import SessionWriter
from plainbox_like import exports
from plainbox_like.exports import common, tarball
from plainbox_like.store.repository import SessionRepository
from plainbox_like.store.reader import load_session
from archives import MALICIOUS, dir_member, file_member, hardlink_member, session_members, symlink_member, tar_bytes
from factories import (
    ALL_BYTES,
    BINARY,
    CPU,
    DISK,
    FLAKY,
    GPU,
    GPU_DEP,
    HOSTILE,
    NEVER,
    PLAN,
    WIFI,
    plainbox_session,
    record_attempt,
    report_session,
)


@pytest.fixture
def loaded(repo):
    writer = report_session(repo)
    return load_session(writer.path)


@pytest.fixture(params=[1, 11], ids=["plainbox-v1", "plainbox-v11"])
def plainbox(tmp_path, request):
    directory = tmp_path / "checkbox" / "session_title-2016-02-03T04.05.06.session"
    plainbox_session(directory, request.param)
    return load_session(str(directory))


def export_bytes(loaded, fmt, **options) -> bytes:
    out = io.BytesIO()
    exports.write(loaded, fmt, out, **options)
    return out.getvalue()


# -- shared helpers ------------------------------------------------------------------


def test_job_views(loaded):
    views = common.job_views(loaded)
    assert [v.id for v in views] == PLAN
    assert [v.status for v in views] == [
        "pass", "fail", "crash", "skipped-dependency", "skip", "pass", "pass", "not-run"
    ]
    flaky = views[PLAN.index(FLAKY)]
    assert [ref.attempt for ref in flaky.attempts] == [1, 2]
    assert flaky.duration == 3.0
    assert views[PLAN.index(CPU)].namespace == "com.example"
    assert views[PLAN.index(FLAKY)].namespace is None
    assert common.status_counts(views) == {
        "pass": 3, "fail": 1, "crash": 1, "skip": 1, "skipped-dependency": 1, "not-run": 1
    }


def test_interrupted_and_running_jobs(repo):
    writer = repo.create(title="interrupted")
    writer.set_plan({"a": "1", "b": "2"}, ["a", "b"])
    record_attempt(writer, "a", [("stdout", b"first\n")], outcome="fail", return_code=1)
    log, name = writer.new_log("a", 2)
    writer.job_started("a", 2, name)
    log.write("stdout", b"partial output\n")
    log.flush()
    live = common.job_views(load_session(writer.path))
    assert live[0].status == common.RUNNING
    writer.abandon()  # the writer dies: the attempt stays without a result
    views = common.job_views(load_session(writer.path))
    assert views[0].status == common.INTERRUPTED
    assert "attempt 2 was started but has no result" in views[0].note
    assert views[0].duration is None and views[0].return_code is None


def test_printable():
    assert common.printable("a\x00b\x1b[31mc\x1b[0m\r\nd\re\x7f") == "a\u2400bc\nd\ne\u2421"
    assert common.printable("tab\tnew\nline") == "tab\tnew\nline"
    assert common.printable("lone \ud800 surrogate \uffff") == "lone \ufffd surrogate \ufffd"


def test_cap_segments_keeps_head_and_tail():
    segments = [("stdout", b"a" * 50), ("stderr", b"b" * 50), ("stdout", b"c" * 50)]
    head, tail, omitted = common.cap_segments(segments, 60)
    assert head == [("stdout", b"a" * 30)]
    assert tail == [("stdout", b"c" * 30)]
    assert omitted == 90
    assert common.cap_segments(segments, 150) == (segments, [], 0)


# -- json ----------------------------------------------------------------------------


def test_json_document(loaded):
    doc = json.loads(export_bytes(loaded, "json"))
    assert doc["format"] == "plainbox-like-export" and doc["version"] == 1
    assert doc["session"] == {
        "id": loaded.id,
        "path": loaded.path,
        "origin": "plainbox-like",
        "source_version": codec.VERSION,
        "status": "complete",
        "journal_problem": None,
    }
    assert doc["state"] == json.loads(json.dumps(codec.state_document(loaded.state)))
    assert codec.load_document(doc["state"], "x").state == loaded.state
    assert "logs" not in doc
    # a session written without ``run`` stored no job metadata: every job is listed, values unknown
    assert doc["jobs"] == {job: {"category_id": None, "certification_status": None} for job in PLAN}


METADATA_UNITS = """\
id: res
plugin: resource
command: printf 'name: x\\n\\nname: y\\n'

id: a
category_id: disks
command: true

id: b
certification_status: blocker
command: true

unit: template
template-resource: res
id: t-{name}
category_id: own-t
command: true

unit: template
template-resource: res
id: u-{name}
category_id: own-u
command: true

unit: test plan
id: tp
bootstrap_include: res
mandatory_include: a
include:
  b certification-status=non-blocker
  t-.*
  u-.*
category_overrides:
  apply made to t-.*
"""


def test_json_export_gives_each_job_its_effective_metadata_across_resume(tmp_path):
    from plainbox_like.store.runconfig import RunConfig
    from plainbox_like.run import prepare
    from plainbox_like.define.metadata import RunMetadata

    path = tmp_path / "units.pxu"
    path.write_text(METADATA_UNITS)
    repo = SessionRepository(str(tmp_path / "repo"))
    config = RunConfig(sources=[str(path)], test_plan="tp")
    summary = prepare.run_prepared(prepare.start_session(repo, config))
    assert summary.counts == {"pass": 7}
    loaded = load_session(summary.path)
    assert loaded.state.mandatory_job_list == ["a"]
    assert RunConfig.from_blob(loaded.state.metadata.app_blob) == config
    stored = RunMetadata.from_app_blob(loaded.state.metadata.app_blob)
    assert set(stored.jobs) == {"a", "b", "t-x", "t-y", "u-x", "u-y"}  # default metadata is not stored
    expected = {
        "res": {"category_id": None, "certification_status": "unspecified"},
        "a": {"category_id": "disks", "certification_status": "unspecified"},
        "b": {"category_id": None, "certification_status": "non-blocker"},
        "t-x": {"category_id": "made", "certification_status": "unspecified"},  # the plan's override wins
        "t-y": {"category_id": "made", "certification_status": "unspecified"},
        "u-x": {"category_id": "own-u", "certification_status": "unspecified"},  # the template's own
        "u-y": {"category_id": "own-u", "certification_status": "unspecified"},
    }
    assert json.loads(export_bytes(loaded, "json"))["jobs"] == expected
    # a resume (with everything done already) keeps both
    prepare.run_prepared(prepare.resume_session(repo, summary.session_id))
    again = load_session(summary.path)
    assert again.state.mandatory_job_list == ["a"]
    assert json.loads(export_bytes(again, "json"))["jobs"] == expected
    assert RunMetadata.from_app_blob(again.state.metadata.app_blob) == stored


def test_json_with_logs(loaded):
    doc = json.loads(export_bytes(loaded, "json", with_logs=True))
    logs = doc["logs"]
    assert NEVER not in logs
    assert set(logs) == set(PLAN) - {NEVER}
    binary = logs[BINARY][0]
    assert binary["source"] == "record" and binary["complete"] and binary["problem"] is None
    out = binary["stdout"]
    assert out["exact"] is False
    assert base64.b64decode(out["base64"]) == ALL_BYTES
    assert out["text"] == ALL_BYTES.decode("utf-8", "replace")
    assert out["bytes"] == len(ALL_BYTES)
    err = binary["stderr"]
    assert err == {"bytes": len(HOSTILE), "exact": True, "text": HOSTILE.decode()}
    disk = logs[DISK][0]
    assert disk["stdout"]["text"] == "checking /dev/sda\nreallocated sectors: 120\n"
    assert disk["stderr"]["text"] == "SMART overall-health: FAILED\nreplace the disk\n"
    assert [(e["attempt"], e["stdout"]["text"]) for e in logs[FLAKY]] == [(1, "try 1\n"), (2, "try 2\n")]
    assert logs[WIFI] == [] or logs[WIFI][0]["source"] == "none"


def test_json_of_a_session_being_written(repo):
    writer = report_session(repo, close=False)
    try:
        doc = json.loads(export_bytes(load_session(writer.path), "json", with_logs=True))
        assert doc["session"]["status"] == "running"
        assert doc["state"]["session"]["results"][FLAKY][-1]["attempt"] == 2
    finally:
        writer.close()


def test_json_plainbox(plainbox):
    doc = json.loads(export_bytes(plainbox, "json", with_logs=True))
    assert doc["session"]["origin"] == "plainbox"
    assert all(meta == {"category_id": None, "certification_status": None} for meta in doc["jobs"].values())
    assert doc["session"]["source_version"] == plainbox.source_version
    local = doc["logs"]["com.canonical.certification::local"][0]
    gone = doc["logs"]["com.canonical.certification::gone"][0]
    if plainbox.source_version == 1:
        assert local["source"] == "inline"
        assert local["stdout"]["text"] == "hello\n"
        assert base64.b64decode(local["stderr"]["base64"]) == b"\x00\xffwarn"
        assert gone["source"] == "inline"
    else:
        assert local["source"] == "record" and local["stdout"]["text"] == "hi\n"
        assert gone["source"] == "missing" and "missing" in gone["problem"]
        assert gone["complete"] is False


# -- junit ---------------------------------------------------------------------------


def _junit(loaded, **options):
    data = export_bytes(loaded, "junit", **options)
    assert data.startswith(b"<?xml version='1.0' encoding='utf-8'?>")
    return ET.fromstring(data)  # expat: rejects anything that is not well-formed XML 1.0


def _cases(root):
    (suite,) = root.findall("testsuite")
    return {case.get("name"): case for case in suite.findall("testcase")}


def test_junit_counts_and_order(loaded):
    root = _junit(loaded)
    assert root.tag == "testsuites"
    (suite,) = root.findall("testsuite")
    for element in (root, suite):
        assert element.get("name") == "Nightly <hardware> checks & more"
        assert (element.get("tests"), element.get("failures"), element.get("errors"), element.get("skipped")) == (
            "8", "1", "1", "3"
        )
        assert float(element.get("time")) == pytest.approx(12.5)
    assert suite.get("timestamp") and "T" in suite.get("timestamp")
    props = {p.get("name"): p.get("value") for p in suite.find("properties")}
    assert props["plainbox-like.session.id"] == loaded.id
    assert props["plainbox-like.session.origin"] == "plainbox-like"
    assert [c.get("name") for c in suite.findall("testcase")] == PLAN
    cases = _cases(root)
    assert cases[CPU].get("classname") == "com.example"
    assert cases[FLAKY].get("classname") == "plainbox-like"
    assert cases[CPU].get("time") == "1.250"
    assert cases[FLAKY].get("time") == "3.000"  # the latest attempt
    assert cases[NEVER].get("time") == "0.000"


def test_junit_outcomes(loaded):
    cases = _cases(_junit(loaded))
    assert list(cases[CPU]) and cases[CPU].find("failure") is None and cases[CPU].find("skipped") is None
    failure = cases[DISK].find("failure")
    assert "return code 3" in failure.get("message") and "SMART status is FAILING" in failure.get("message")
    assert failure.get("type") == "fail"
    error = cases[GPU].find("error")
    assert error.get("type") == "crash" and "SIGSEGV" in error.get("message")
    assert cases[GPU_DEP].find("skipped").get("message") == f"dependency {GPU} did not pass (outcome crash)"
    assert cases[WIFI].find("skipped").get("message") == "no wireless device"
    assert cases[NEVER].find("skipped").get("message") == "not run"
    assert cases[NEVER].find("system-out") is None
    assert cases[FLAKY].find("failure") is None


def test_junit_output(loaded):
    cases = _cases(_junit(loaded))
    assert cases[DISK].find("system-out").text == "checking /dev/sda\nreallocated sectors: 120\n"
    assert cases[DISK].find("system-err").text == "SMART overall-health: FAILED\nreplace the disk\n"
    assert cases[GPU].find("system-out").text == "red and bold\n"  # terminal colours removed
    out = cases[BINARY].find("system-out").text
    assert "\u2400" in out and "\x00" not in out and "\x1b" not in out
    assert cases[BINARY].find("system-err").text == HOSTILE.decode()
    assert cases[FLAKY].find("system-out").text == "try 2\n"


def test_junit_caps_output(loaded):
    cases = _cases(_junit(loaded, output_limit=64))
    out = cases[BINARY].find("system-out").text
    assert f"{len(ALL_BYTES) - 64} bytes omitted" in out
    assert "plainbox-like log --attempt 1" in out
    assert len(out) < 400


def test_junit_interrupted_job_is_an_error(repo):
    writer = repo.create()
    writer.set_plan({"a": "1"}, ["a"])
    log, name = writer.new_log("a", 1)
    writer.job_started("a", 1, name)
    log.write("stdout", b"so far\n")
    log.flush()
    writer.abandon()
    cases = _cases(_junit(load_session(writer.path)))
    assert "interrupted" in cases["a"].find("error").get("message")
    assert cases["a"].find("system-out").text.endswith("so far\n")


def test_junit_plainbox(plainbox):
    root = _junit(plainbox)
    (suite,) = root.findall("testsuite")
    assert suite.get("name") == f"session v{plainbox.source_version}"
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors"), suite.get("skipped")) == ("5", "0", "1", "1")
    cases = _cases(root)
    cpu = cases["com.canonical.certification::cpu_info"]
    assert cpu.get("classname") == "com.canonical.certification"
    assert cpu.find("system-out").text == ("hello\n" if plainbox.source_version == 1 else "hi\n")
    gone = cases["com.canonical.certification::gone"]
    assert gone.find("error") is not None
    if plainbox.source_version != 1:
        assert "missing" in gone.find("system-out").text
    assert cases["com.canonical.certification::never"].find("skipped").get("message") == "skipped by user"


# -- html ----------------------------------------------------------------------------

VOID = {"meta", "br", "img", "hr", "link", "input", "wbr"}


class _Checker(html.parser.HTMLParser):
    """Records tags, text and attributes; fails on unbalanced tags."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.text, self.tags, self.attrs = [], [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs.append((tag, dict(attrs)))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def _html(loaded, **options):
    page = export_bytes(loaded, "html", **options).decode("utf-8")
    checker = _Checker()
    checker.feed(page)
    checker.close()
    assert checker.stack == []
    return page, checker


def test_html_structure(loaded):
    page, checker = _html(loaded)
    assert page.startswith("<!DOCTYPE html>")
    text = "".join(checker.text)
    for job in PLAN:
        assert job in text
    assert "Nightly <hardware> checks & more" in text
    assert "Nightly &lt;hardware&gt; checks &amp; more" in page
    assert loaded.id in text
    # Every job that ran has its output section, linked from the table.
    details = [a for t, a in checker.attrs if t == "details" and "job" in a.get("class", "")]
    assert len(details) == len(PLAN) - 3  # not the jobs that never ran or were skipped
    links = {a["href"] for t, a in checker.attrs if t == "a"}
    assert {f"#{d['id']}" for d in details} == links
    # Failures are open, passes closed.
    opened = {d["id"] for d in details if "open" in d}
    assert opened == {f"job-{PLAN.index(DISK) + 1}", f"job-{PLAN.index(GPU) + 1}"}
    # Counts with their colours.
    assert '<div class="stat o-fail"><div class="n">1</div><div class="l">fail</div>' in page
    assert '<div class="stat o-not-run"><div class="n">1</div>' in page


def test_html_escapes_everything_and_loads_nothing(loaded):
    page, checker = _html(loaded)
    assert "script" not in checker.tags and "img" not in checker.tags
    assert HOSTILE.decode().strip() in "".join(checker.text)
    assert not [(t, a) for t, a in checker.attrs if "src" in a or t in ("link", "script", "iframe", "object")]
    assert {a["href"][0] for t, a in checker.attrs if "href" in a} == {"#"}  # only links within the page
    for needle in ("http://", "https://", "url(", "@import", "<link", "<script"):
        assert needle not in page.lower()
    assert "default-src 'none'" in page


def test_html_marks_stderr(loaded):
    page, checker = _html(loaded)
    assert '<span class="err" title="stderr">SMART overall-health: FAILED\n</span>' in page
    assert "checking /dev/sda\n" in page
    assert "\x00" not in page and "\x1b" not in page
    assert "\u2400" in page  # the NUL bytes, visible


def test_html_caps_output(loaded):
    page, _ = _html(loaded, output_limit=100)
    assert f"{len(ALL_BYTES) + len(HOSTILE) - 100} bytes omitted here" in page
    page, _ = _html(loaded, total_output_limit=10)
    assert "the report reached its size limit" in page


def test_html_earlier_attempts(loaded):
    page, _ = _html(loaded)
    assert "Attempt 1: fail" in page and "try 1" in page and "try 2" in page
    assert page.index("try 2") < page.index("try 1")  # latest first


def test_html_plainbox(plainbox):
    page, checker = _html(plainbox)
    text = "".join(checker.text)
    assert "com.canonical.certification::cpu_info" in text
    assert "Checkbox/Plainbox state version" in text
    if plainbox.source_version != 1:
        assert "missing" in text


def test_html_empty_session(repo):
    writer = repo.create()
    writer.close()
    page, checker = _html(load_session(writer.path))
    assert "This session has no jobs." in "".join(checker.text)


# -- tar and import ------------------------------------------------------------------


def _tar_members(data: bytes):
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return tar.getmembers()


def _tree(path):
    """Relative path -> file bytes (None for directories), without the lock."""
    out = {}
    for directory, dirs, files in os.walk(path):
        for name in dirs:
            out[os.path.relpath(os.path.join(directory, name), path)] = None
        for name in files:
            full = os.path.join(directory, name)
            with open(full, "rb") as f:
                out[os.path.relpath(full, path)] = f.read()
    out.pop("lock", None)
    return out


def test_tar_layout(loaded):
    data = export_bytes(loaded, "tar")
    assert data[:2] == b"\x1f\x8b"
    members = _tar_members(data)
    top = f"{loaded.id}.session"
    assert members[0].name == top and members[0].isdir()
    assert [m.name for m in members[1:3]] == [f"{top}/session", f"{top}/journal"]
    names = {m.name for m in members}
    assert all(n == top or n.startswith(top + "/") for n in names)
    assert f"{top}/lock" not in names
    assert f"{top}/io-logs/{BINARY}.record.gz" in names
    for m in members:
        assert m.uid == 0 and m.gid == 0 and m.uname == "" and m.gname == ""
        assert stat.S_IMODE(m.mode) == (0o700 if m.isdir() else 0o600)


def test_tar_round_trip(loaded, tmp_path):
    data = export_bytes(loaded, "tar")
    other = SessionRepository(str(tmp_path / "elsewhere"))
    imported = tarball.import_archive(io.BytesIO(data), other.sessions_dir, "x.tar.gz")
    assert imported.id != loaded.id
    assert os.path.dirname(imported.path) == other.sessions_dir
    assert imported.state == loaded.state
    assert imported.origin == "plainbox-like"
    assert _tree(imported.path) == _tree(loaded.path)
    for directory, dirs, files in os.walk(imported.path):
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
        for name in files:
            assert stat.S_IMODE(os.stat(os.path.join(directory, name)).st_mode) == 0o600
    assert os.listdir(other.sessions_dir) == [os.path.basename(imported.path)]
    # The same archive again, into the same repository: another new id.
    again = tarball.import_archive(io.BytesIO(data), other.sessions_dir, "x.tar.gz")
    assert again.id not in (imported.id, loaded.id)
    # And the output is identical.
    assert export_bytes(again, "json", with_logs=True).replace(again.id.encode(), b"ID").replace(
        again.path.encode(), b"PATH"
    ) == export_bytes(imported, "json", with_logs=True).replace(imported.id.encode(), b"ID").replace(
        imported.path.encode(), b"PATH"
    )


def test_tar_round_trip_plainbox(plainbox, tmp_path):
    data = export_bytes(plainbox, "tar")
    names = [m.name for m in _tar_members(data)]
    assert names[:2] == [f"{plainbox.id}.session", f"{plainbox.id}.session/session"]
    imported = tarball.import_archive(io.BytesIO(data), str(tmp_path / "r" / "sessions"), "cb")
    assert imported.origin == "plainbox" and imported.source_version == plainbox.source_version
    assert imported.state == plainbox.state
    assert imported.inline_io_logs == plainbox.inline_io_logs
    assert _tree(imported.path) == _tree(plainbox.path)


def test_tar_of_a_session_being_written(repo, tmp_path):
    writer = report_session(repo, close=False)
    try:
        assert os.path.getsize(os.path.join(writer.path, "journal")) > 0
        data = export_bytes(load_session(writer.path), "tar")
        imported = tarball.import_archive(io.BytesIO(data), str(tmp_path / "other"), "x")
        assert imported.state == writer.state
    finally:
        writer.close()


def test_tar_is_consistent_while_snapshots_happen(repo, tmp_path, monkeypatch):
    """A writer snapshotting (and truncating its journal) all the time never yields an archive that does not
    load, and each archive holds exactly a state the writer had (never a snapshot and a journal that disagree)."""
    monkeypatch.setattr(writing, "MIN_JOURNAL_BYTES", 200)
    writer = repo.create(durability="flush")
    first = attrs.evolve(writer.state)
    first_document = codec.state_document(first)
    metadata = {first.journal_seq: attrs.evolve(first.metadata)}  # journal seq -> the writer's metadata then
    stop = threading.Event()

    def churn():
        n = 0
        while not stop.is_set():
            n += 1
            writer.update_metadata(durable=False, title=f"title {n}")
            metadata[writer.state.journal_seq] = attrs.evolve(writer.state.metadata)

    thread = threading.Thread(target=churn)
    thread.start()
    imported = []
    try:
        for i in range(40):
            data = export_bytes(load_session(writer.path), "tar")
            imported.append(tarball.import_archive(io.BytesIO(data), str(tmp_path / f"r{i}"), "x").state)
    finally:
        stop.set()
        thread.join()
        writer.close()
    assert writer.snapshots > 1  # the journal was truncated meanwhile
    for state in imported:  # the state the writer had at that point of its journal, nothing else
        assert state.metadata == metadata[state.journal_seq]
        unchanged = attrs.evolve(state, metadata=metadata[first.journal_seq], journal_seq=first.journal_seq)
        assert codec.state_document(unchanged) == first_document
    assert len({state.journal_seq for state in imported}) > 1  # taken while the session changed


def test_tar_leaves_out_links_and_special_files(repo, tmp_path):
    writer = repo.create()
    writer.close()
    share = os.path.join(writer.path, "session-share")
    os.symlink("/etc/passwd", os.path.join(share, "escape"))
    os.mkfifo(os.path.join(share, "fifo"))
    with open(os.path.join(share, "result.txt"), "w") as f:
        f.write("kept")
    warnings = []
    out = io.BytesIO()
    tarball.write(load_session(writer.path), out, warn=warnings.append)
    names = {m.name.split("/", 1)[-1] for m in _tar_members(out.getvalue())}
    assert "session-share/result.txt" in names
    assert "session-share/escape" not in names and "session-share/fifo" not in names
    assert len(warnings) == 2 and any("symbolic link" in w for w in warnings)


def _plainbox_archive(tmp_path, version=11, root_layout=False):
    directory = tmp_path / "src" / "checkbox.session"
    plainbox_session(directory, version)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        if root_layout:
            tar.add(str(directory), arcname=".")
        else:
            tar.add(str(directory), arcname="checkbox.session")
    return out.getvalue()


@pytest.mark.parametrize("version", [1, 6, 11])
@pytest.mark.parametrize("root_layout", [False, True], ids=["top-folder", "root"])
def test_import_checkbox_archive(tmp_path, version, root_layout):
    data = _plainbox_archive(tmp_path, version, root_layout)
    sessions = str(tmp_path / "repo" / "sessions")
    imported = tarball.import_archive(io.BytesIO(data), sessions, "cb.tar.gz")
    assert imported.origin == "plainbox"
    assert imported.source_version == version
    cpu = "com.canonical.certification::cpu_info"
    ref = [r for r in common.job_views(imported) if r.id == cpu][0].attempts[-1]
    output = common.read_attempt(imported, ref)
    assert output.stream("stdout") == (b"hello\n" if version == 1 else b"hi\n")
    assert not os.path.exists(os.path.join(imported.path, "lock"))
    # Read-only afterwards, as any Checkbox session.
    with pytest.raises(Exception, match="Plainbox"):
        SessionWriter.open(imported.path)


def _assert_nothing_left(sessions_dir):
    assert not os.path.exists(sessions_dir) or os.listdir(sessions_dir) == []


@pytest.mark.parametrize("name", sorted(MALICIOUS))
def test_import_rejects_malicious_archives(tmp_path, name):
    data = tar_bytes(*session_members(), *MALICIOUS[name])
    sessions = str(tmp_path / "repo" / "sessions")
    with pytest.raises(tarball.UnsafeArchive) as info:
        tarball.import_archive(io.BytesIO(data), sessions, "evil.tar.gz")
    message = str(info.value)
    assert "\n" not in message and message.startswith("evil.tar.gz: refusing to import")
    _assert_nothing_left(sessions)
    assert not (tmp_path / "repo").exists()  # not even the repository was left behind
    for leftover in ("plainbox-like-evil-abs", "plainbox-like-evil-dotdot", "plainbox-like-evil-top"):
        assert not os.path.exists(os.path.join("/tmp", leftover))
    assert not list(tmp_path.glob("**/plainbox-like-evil-*"))


def test_check_member_allows_links_inside():
    dest = "/nonexistent/dest"
    assert tarball.check_member(symlink_member("x.session/a", "io-logs/b"), dest) is None
    assert tarball.check_member(symlink_member("x.session/io-logs/a", "../session"), dest) is None
    assert tarball.check_member(hardlink_member("x.session/a", "x.session/session"), dest) is None


def test_import_keeps_internal_links(tmp_path):
    # Links are kept inside session-share/ only (test_confine.py has those refused elsewhere).
    data = tar_bytes(*session_members("ok.session"), (symlink_member("ok.session/session-share/alias", "../session"), None))
    imported = tarball.import_archive(io.BytesIO(data), str(tmp_path / "s"), "ok")
    assert os.readlink(os.path.join(imported.path, "session-share", "alias")) == "../session"


@pytest.mark.parametrize(
    "data, needle",
    [
        (b"this is not an archive at all", "not a readable tar archive"),
        (b"", "not a readable tar archive"),
        (gzip.compress(b"x" * 1000), "not a readable tar archive"),
        (tar_bytes((dir_member("empty.session"), None)), "no session in the archive"),
        (tar_bytes((file_member("a/session"), b"x"), (file_member("b/session"), b"x")), "no session in the archive"),
        (tar_bytes((dir_member("bad.session"), None), (file_member("bad.session/session"), b"not gzip")), "does not load"),
    ],
    ids=["garbage", "empty", "gzip-not-tar", "no-session", "two-sessions", "corrupt-session"],
)
def test_import_rejects_bad_archives(tmp_path, data, needle):
    sessions = str(tmp_path / "repo" / "sessions")
    with pytest.raises(tarball.BadArchive, match=needle) as info:
        tarball.import_archive(io.BytesIO(data), sessions, "bad.tar")
    assert "\n" not in str(info.value)
    _assert_nothing_left(sessions)


def test_import_cut_archive(loaded, tmp_path):
    data = export_bytes(loaded, "tar")
    sessions = str(tmp_path / "other" / "sessions")
    with pytest.raises(tarball.BadArchive):
        tarball.import_archive(io.BytesIO(data[: len(data) // 2]), sessions, "cut.tar.gz")
    _assert_nothing_left(sessions)


def test_import_into_an_existing_repository_leaves_it_alone_on_error(repo, tmp_path):
    writer = report_session(repo)
    before = sorted(os.listdir(repo.sessions_dir))
    with pytest.raises(tarball.UnsafeArchive):
        tarball.import_archive(io.BytesIO(tar_bytes(*MALICIOUS["dotdot"])), repo.sessions_dir, "e")
    assert sorted(os.listdir(repo.sessions_dir)) == before == [os.path.basename(writer.path)]


def test_format_for_filename():
    assert exports.format_for_filename("r.JSON") == "json"
    assert exports.format_for_filename("junit.xml") == "junit"
    assert exports.format_for_filename("report.htm") == "html"
    assert exports.format_for_filename("s.tar.gz") == "tar"
    assert exports.format_for_filename("s.tgz") == "tar"
    assert exports.format_for_filename("s.tar") is None
    with pytest.raises(ValueError):
        exports.write(None, "pdf", io.BytesIO())


@pytest.fixture
def without_data_filter(monkeypatch):
    """Extraction as on a Python without tarfile's extraction filters: our own checks only."""
    monkeypatch.setattr(tarball, "_HAS_DATA_FILTER", False)


@pytest.mark.parametrize("name", sorted(MALICIOUS))
def test_own_checks_reject_malicious_archives(tmp_path, without_data_filter, name):
    data = tar_bytes(*session_members(), *MALICIOUS[name])
    sessions = str(tmp_path / "repo" / "sessions")
    with pytest.raises(tarball.UnsafeArchive):
        tarball.import_archive(io.BytesIO(data), sessions, "evil.tar.gz")
    assert not (tmp_path / "repo").exists()
    assert not list(tmp_path.glob("**/plainbox-like-evil-*"))


def test_round_trip_without_the_data_filter(loaded, tmp_path, without_data_filter):
    data = export_bytes(loaded, "tar")
    imported = tarball.import_archive(io.BytesIO(data), str(tmp_path / "other"), "x")
    assert imported.state == loaded.state
    assert _tree(imported.path) == _tree(loaded.path)
    for directory, dirs, files in os.walk(imported.path):
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
        assert os.stat(directory).st_uid == os.getuid()


def test_a_file_that_shrinks_while_archived_is_padded_and_reported(tmp_path):
    path = tmp_path / "log"
    path.write_bytes(b"0123456789")
    calls = []
    fd = os.open(path, os.O_RDONLY)
    try:
        reader = tarball._Exactly(fd, 25, lambda: calls.append(1))
        assert reader.read(8) + reader.read(100) + reader.read(5) == b"0123456789" + bytes(15)
    finally:
        os.close(fd)
    assert calls == [1]


def test_import_stages_in_a_hidden_locked_directory(loaded, tmp_path, monkeypatch):
    sessions = tmp_path / "other" / "sessions"
    seen = {}
    extract = tarball._extract_all

    def spy(source, dest, name, *limits):
        extract(source, dest, name, *limits)
        staging = os.path.dirname(dest)
        seen["entries"] = os.listdir(sessions)
        seen["mode"] = stat.S_IMODE(os.stat(staging).st_mode)
        fd = os.open(os.path.join(staging, "lock"), os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
        # Listing the repository now shows no session.
        assert SessionRepository(str(tmp_path / "other")).session_paths() == []

    monkeypatch.setattr(tarball, "_extract_all", spy)
    imported = tarball.import_archive(io.BytesIO(export_bytes(loaded, "tar")), str(sessions), "x")
    (entry,) = seen["entries"]
    assert entry.startswith(".importing-") and seen["mode"] == 0o700
    assert os.listdir(sessions) == [os.path.basename(imported.path)]
