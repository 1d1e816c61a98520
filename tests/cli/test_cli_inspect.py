"""``plainbox-like list`` and ``show``."""

from __future__ import annotations

import datetime
import gzip
import json
import os
import socket
import time


from plainbox_like.store import names
from plainbox_like.cli.main import build_parser
from plainbox_like.store.model import Attempt
from cli_helpers import assert_one_line_error, run
from factories import dead_pid


def parse_iso(text):
    value = datetime.datetime.fromisoformat(text)
    assert value.utcoffset() == datetime.timedelta(0)
    return value.timestamp()


def sample(repo, title="sample", close=True):
    """A session with a plan of four jobs: a passes, b is skipped, c failed then passed, d not run."""
    writer = repo.create(title=title, tags=["smoke", "x86"], parent_session="parent1")
    writer.set_plan({j: "sum-" + j for j in "abcd"}, ["a", "b", "c", "d"])
    log, name = writer.new_log("a", 1)
    writer.job_started("a", 1, name)
    log.write("stdout", b"ok\n")
    log.close()
    writer.job_finished("a", Attempt("pass", return_code=0, execution_duration=1.25, io_log_filename=name))
    writer.job_finished("b", Attempt("skip", skip_reason="needs a GPU"))
    writer.job_finished("c", Attempt("fail", return_code=3, execution_duration=0.5, comments="flaky"))
    writer.job_finished("c", Attempt("pass", return_code=0, execution_duration=0.75, attempt=2))
    writer.job_finished("extra", Attempt("crash", return_code=-9))
    if close:
        writer.close()
    return writer


# -- registration --------------------------------------------------------------


def test_commands_are_registered_with_help():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    helps = {c.dest: c.help for c in sub._choices_actions}
    for name in ("list", "show"):
        assert name in sub.choices
        assert helps[name]
        assert sub.choices[name].description


# -- list --------------------------------------------------------------------------


def test_list_empty_repository(root, capsys):
    assert run(root, "list") == 0
    out, err = capsys.readouterr()
    assert out == ""
    assert err.strip() == f"no sessions in {os.path.join(root, 'sessions')}"


def test_list_empty_repository_json(root, capsys):
    assert run(root, "list", "--json") == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == []
    assert err == ""


def test_list_table(repo, root, capsys):
    now = time.time()
    first = sample(repo, title="first run")
    second = repo.create(title="second run")
    second.update_metadata(created=now + 5, flags=[])
    second.close()
    broken = repo.create(title="broken")
    broken.close()
    with open(os.path.join(broken.path, names.STATE_FILE), "wb") as f:
        f.write(b"not gzip at all")
    then = now - 1000
    os.utime(broken.path, (then, then))  # the oldest

    assert run(root, "list") == 0
    out, err = capsys.readouterr()
    assert err == ""
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "STATUS", "CREATED", "JOBS", "TITLE", "RESULTS"]
    assert [line.split()[0] for line in lines[1:]] == [second.id, first.id, broken.id]
    assert "complete" in lines[1] and "second run" in lines[1]
    assert "incomplete" in lines[2] and "first run" in lines[2]
    assert "4/5" in lines[2]  # the job "extra" has a result outside the plan: planned too
    assert lines[2].endswith("pass 2, crash 1, skip 1")
    assert "corrupt: " in lines[3] and "not a valid gzip file" in lines[3]


def test_list_shows_a_running_session(repo, root, capsys):
    writer = repo.create(title="live")
    try:
        assert run(root, "list") == 0
        assert " running " in capsys.readouterr().out
    finally:
        writer.close()


def test_list_escapes_control_characters_in_titles(repo, root, capsys):
    repo.create(title="two\nlines\x1b[31m").close()
    assert run(root, "list") == 0
    out = capsys.readouterr().out
    assert len(out.splitlines()) == 2
    assert "\x1b" not in out
    assert "two\\nlines" in out


def test_list_json(repo, root, capsys):
    writer = sample(repo)
    broken = os.path.join(repo.sessions_dir, "broken.session")
    os.mkdir(broken)
    then = time.time() - 1000
    os.utime(broken, (then, then))
    assert run(root, "list", "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert [d["status"] for d in data] == ["incomplete", "corrupt"]
    good, bad = data
    assert good["id"] == writer.id
    assert good["title"] == "sample"
    assert good["counts"] == {"pass": 2, "skip": 1, "crash": 1}
    assert good["total"] == 5  # d is planned, "extra" has a result: both count
    assert good["tags"] == ["smoke", "x86"]
    assert good["parent_session"] == "parent1"
    assert good["runner_pid"] == os.getpid()
    assert abs(parse_iso(good["created"]) - time.time()) < 60
    assert good["finished"] is None
    assert bad["id"] == "broken"
    assert "state file is missing" in bad["reason"]
    assert set(good) == set(bad)


# -- show --------------------------------------------------------------------------


def test_show_text(repo, root, capsys):
    writer = sample(repo)
    assert run(root, "show", writer.id[:5]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert "Title:    sample" in out
    assert f"Id:       {writer.id}" in out
    assert "Status:   incomplete" in out
    assert "Tags:     smoke, x86" in out
    assert "Parent:   parent1" in out
    assert f"Runner:   pid {os.getpid()} on {socket.gethostname()}" in out
    table = out.split("\n\n", 1)[1].splitlines()
    assert table[0].split() == ["JOB", "OUTCOME", "DURATION", "RC", "ATTEMPTS", "NOTE"]
    rows = [line.split(None, 5) for line in table[1:]]
    assert [r[0] for r in rows] == ["a", "b", "c", "d", "extra"]
    assert rows[0] == ["a", "pass", "1.25s", "0", "1"]
    assert rows[1] == ["b", "skip", "-", "-", "1", "needs a GPU"]
    assert rows[2] == ["c", "pass", "0.75s", "0", "2"]
    assert rows[3] == ["d", "-", "-", "-", "0"]
    assert rows[4] == ["extra", "crash", "-", "-9", "1"]


def test_show_running_job(repo, root, capsys):
    writer = sample(repo, close=False)
    try:
        writer.job_started("d", 1, None)
        assert run(root, "show", writer.id) == 0
        out = capsys.readouterr().out
        assert "Status:   running (job d is running)" in out
        row = next(line for line in out.splitlines() if line.startswith("d "))
        assert row.split()[1] == "running"
    finally:
        writer.close()


def test_show_interrupted_job(repo, root, capsys):
    writer = sample(repo, close=False)
    writer.job_started("d", 1, None)
    writer.abandon()
    with open(os.path.join(writer.path, names.LOCK_FILE), "w") as f:
        f.write(f"{dead_pid()} {socket.gethostname()}\n")
    assert run(root, "show", writer.id) == 0
    out = capsys.readouterr().out
    assert "Status:   incomplete (job d was running)" in out
    row = next(line for line in out.splitlines() if line.startswith("d "))
    assert row.split()[1] == "interrupted"


def test_show_json(repo, root, capsys):
    writer = sample(repo)
    assert run(root, "show", "--json", writer.id) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["id"] == writer.id
    assert data["status"] == "incomplete"
    assert data["flags"] == ["incomplete"]
    assert data["desired_job_list"] == ["a", "b", "c", "d"]
    parse_iso(data["created"])
    jobs = {j["id"]: j for j in data["jobs"]}
    assert [j["id"] for j in data["jobs"]] == ["a", "b", "c", "d", "extra"]
    assert jobs["c"]["outcome"] == "pass"
    assert [a["outcome"] for a in jobs["c"]["attempts"]] == ["fail", "pass"]
    assert [a["attempt"] for a in jobs["c"]["attempts"]] == [1, 2]
    assert jobs["c"]["attempts"][0]["comments"] == "flaky"
    assert jobs["b"]["skip_reason"] == "needs a GPU"
    assert jobs["a"]["attempts"][0]["io_log_filename"].startswith("io-logs/")
    assert jobs["d"]["outcome"] is None and jobs["d"]["attempts"] == []
    assert jobs["d"]["running"] is None


def test_show_json_running_job(repo, root, capsys):
    writer = repo.create()
    try:
        writer.set_plan({"a": "1"}, ["a"])
        writer.job_started("a", 1, "io-logs/a.record.gz")
        assert run(root, "show", "--json", writer.id) == 0
        job = json.loads(capsys.readouterr().out)["jobs"][0]
        assert job["outcome"] == "running"
        assert job["running"]["attempt"] == 1
        assert job["attempt_count"] == 1
        parse_iso(job["running"]["started"])
    finally:
        writer.close()


def test_show_plainbox_session_by_path(tmp_path, root, capsys):
    path = tmp_path / "checkbox-session"
    path.mkdir()
    doc = {
        "version": 11,
        "session": {
            "jobs": {"x": "c"},
            "results": {"x": [{"outcome": "fail", "return_code": 1, "comments": "bad"}]},
            "desired_job_list": ["x", "y"],
            "metadata": {"title": "Checkbox", "flags": ["incomplete"], "running_job_name": "y"},
        },
    }
    (path / "session").write_bytes(gzip.compress(json.dumps(doc).encode()))
    assert run(root, "show", str(path)) == 0
    out = capsys.readouterr().out
    assert "Origin:   plainbox (state version 11)" in out
    rows = {line.split()[0]: line.split() for line in out.split("\n\n", 1)[1].splitlines()[1:]}
    assert rows["x"][1] == "fail"
    assert rows["y"][1] == "interrupted"


def test_show_unknown_session(root, capsys):
    assert run(root, "show", "nosuch") == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert_one_line_error(err, "nosuch")


def test_show_corrupt_session(repo, root, capsys):
    writer = repo.create()
    writer.close()
    with open(os.path.join(writer.path, names.STATE_FILE), "wb") as f:
        f.write(b"junk")
    assert run(root, "show", writer.id) == 2
    assert_one_line_error(capsys.readouterr().err, "not a valid gzip file")


def test_show_session_being_created(repo, root, capsys):
    os.makedirs(os.path.join(repo.sessions_dir, "fresh.session"))
    assert run(root, "show", "fresh") == 2
    assert_one_line_error(capsys.readouterr().err, "being created")


def test_show_counts_planned_jobs_the_way_checkbox_records_them(root, checkbox_session, capsys):
    """A real Checkbox 1.18.1 session of tutorial-base: its desired_job_list leaves out the bootstrap job
    tutorial_resources, which has a result; every job with a result was planned."""
    assert run(root, "show", "checkbox") == 0
    out = capsys.readouterr().out
    assert "(12 of 12 planned jobs done)" in out
    assert run(root, "list", "--json") == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert (listed["total"], sum(listed["counts"].values())) == (12, 12)
