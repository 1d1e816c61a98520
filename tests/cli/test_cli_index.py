"""``list`` through the index (filters, unchanged output), ``index`` and ``search`` on the command line."""

from __future__ import annotations

import datetime
import functools
import io
import json
import os
import time

import pytest

from plainbox_like.index import query as indexing
from plainbox_like.index.access import repository_root
from plainbox_like.index.listing import json_list
from plainbox_like.read import summary
from plainbox_like.cli import output
from plainbox_like.cli.inspect import parse_since, summary_json
from plainbox_like.cli.main import build_parser
from plainbox_like.store.repository import SessionRepository
from cli_helpers import cli, run
from factories import written_session


#: The sessions listed here: build and test/unit planned, complete without a finish time, written without fsync.
session = functools.partial(written_session, plan=("build", "test/unit"), finished=False, durability="flush")


@pytest.fixture
def sessions(repo):
    now = time.time()
    return {
        "old": session(repo, "old nightly", outcomes=[("build", "pass")], created=now - 10 * 86400),
        "gpu": session(repo, "gpu nightly", outcomes=[("build", "pass"), ("test/unit", "fail")], tags=["gpu"]),
        "child": session(repo, "child run", outcomes=[("build", "crash")], complete=False, parent_session="PARENT1"),
    }


def old_list_json(repo) -> str:
    """What ``list --json`` printed before the index: every session read from disk."""
    out = io.StringIO()
    data = [summary_json(s) for s in summary.list_sessions(repo)]
    json.dump(data, out, indent=2, sort_keys=True, ensure_ascii=False)
    return out.getvalue() + "\n"


def test_new_commands_are_registered_with_help():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    helps = {c.dest: c.help for c in sub._choices_actions}
    for name in ("watch", "index", "search"):
        assert helps[name] and sub.choices[name].description
        for action in sub.choices[name]._actions:
            assert action.help, (name, action.dest)
    listing = sub.choices["list"]
    options = {o for a in listing._actions for o in a.option_strings}
    assert {"--status", "--tag", "--since", "--title", "--parent", "--failed-job", "--limit", "--json"} <= options


def test_list_json_is_unchanged(repo, root, sessions, capsys):
    broken = os.path.join(repo.sessions_dir, "broken.session")
    os.mkdir(broken)
    then = time.time() - 1000
    os.utime(broken, (then, then))
    expected = old_list_json(repo)
    assert run(root, "list", "--json") == 0
    assert capsys.readouterr().out == expected
    assert run(root, "list", "--json") == 0  # warm: the same from the index alone
    out, err = capsys.readouterr()
    assert out == expected and err == ""
    assert os.path.exists(os.path.join(root, indexing.INDEX_FILE))


def test_list_is_never_stale_without_a_watcher(repo, root, sessions, capsys):
    assert run(root, "list", "--json") == 0
    capsys.readouterr()
    fresh = session(repo, "added after the index was built")
    assert run(root, "list", "--json", "--limit", "1") == 0
    assert [d["id"] for d in json.loads(capsys.readouterr().out)] == [fresh.id]


def other_process(root, *argv):
    """``plainbox-like ARGV...`` run by another process."""
    cli(root, *argv, check=True)


@pytest.mark.parametrize("mode", ["settled", "settled, scan shared with a forked process", "just read"])
def test_list_without_a_watcher_follows_what_other_processes_do(repo, root, sessions, capsys, monkeypatch, mode):
    settle = mode != "just read"
    if settle:  # finished sessions settle as soon as they are read: checked by their directory alone
        monkeypatch.setattr("plainbox_like.index.stamps.RACY_SECONDS", -1.0)
    if "forked" in mode:
        monkeypatch.setattr("plainbox_like.index.reconcile.SPLIT_SCAN", 2)

    def listed():
        assert run(root, "list", "--json") == 0
        return {d["id"]: d for d in json.loads(capsys.readouterr().out)}

    assert set(listed()) == {w.id for w in sessions.values()}
    if settle:
        with indexing.SessionIndex.open(root) as index:
            assert {row[0] for row in index.conn.execute("SELECT settled FROM sessions")} == {indexing.SETTLED}
    gpu, old, child = (sessions[name].id for name in ("gpu", "old", "child"))
    other_process(root, "tag", gpu, "rerun")  # a finished session changed elsewhere
    other_process(root, "rename", child, "renamed elsewhere")
    other_process(root, "delete", old)  # one deleted
    other_process(root, "run", "--title", "made elsewhere", "-c", "true")  # one made
    after = listed()
    assert after[gpu]["tags"] == ["gpu", "rerun"]
    assert after[child]["title"] == "renamed elsewhere" and after[child]["status"] == "incomplete"
    assert old not in after
    made = [d for d in after.values() if d["title"] == "made elsewhere"]
    assert len(made) == 1 and made[0]["status"] == "complete"
    assert capsys.readouterr().out == ""
    assert run(root, "list", "--json") == 0
    assert capsys.readouterr().out == old_list_json(repo)  # exactly what reading every session shows


def test_list_filters(root, sessions, capsys):
    def ids(*argv):
        assert run(root, "list", "--json", *argv) == 0
        return [d["id"] for d in json.loads(capsys.readouterr().out)]

    s = {name: w.id for name, w in sessions.items()}
    assert ids() == [s["child"], s["gpu"], s["old"]]
    assert ids("--status", "incomplete") == [s["child"]]
    assert ids("--status", "incomplete", "--status", "complete") == [s["child"], s["gpu"], s["old"]]
    assert ids("--tag", "gpu") == [s["gpu"]]
    assert ids("--since", "2d") == [s["child"], s["gpu"]]
    day = (datetime.date.today() - datetime.timedelta(days=2)).isoformat()
    assert ids("--since", day) == [s["child"], s["gpu"]]
    assert ids("--title", "NIGHTLY") == [s["gpu"], s["old"]]
    assert ids("--parent", "PARENT1") == [s["child"]]
    assert ids("--failed-job", "test/unit") == [s["gpu"]]
    assert ids("--failed-job", "b*") == [s["child"]]
    assert ids("--limit", "1") == [s["child"]]
    assert ids("--title", "nightly", "--limit", "1") == [s["gpu"]]


def test_list_table_with_filters_and_no_match(root, sessions, capsys):
    assert run(root, "list", "--tag", "gpu") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["ID", "STATUS", "CREATED", "JOBS", "TITLE", "RESULTS"]
    assert len(out) == 2 and "gpu nightly" in out[1] and out[1].endswith("pass 1, fail 1")
    assert run(root, "list", "--tag", "nosuch") == 0
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("no matching sessions in ")


@pytest.mark.parametrize("bad", ["yesterday", "2026-13-01", "7x", ""])
def test_bad_since_is_a_usage_error(root, bad, capsys):
    with pytest.raises(SystemExit) as caught:
        run(root, "list", "--since", bad)
    assert caught.value.code == 2
    assert "--since" in capsys.readouterr().err


def test_parse_since_forms():
    now = time.time()
    assert abs(parse_since("90m") - (now - 5400)) < 5
    assert abs(parse_since("2w") - (now - 14 * 86400)) < 5
    assert parse_since("2026-11-21T14:00:00+00:00") == datetime.datetime(2026, 11, 21, 14, tzinfo=datetime.timezone.utc).timestamp()
    assert parse_since("2026-11-21 14:00") == datetime.datetime(2026, 11, 21, 14).timestamp()


def test_corrupt_index_notice_is_one_line(repo, root, sessions, capsys):
    assert run(root, "list", "--json") == 0
    expected = capsys.readouterr().out
    path = os.path.join(root, indexing.INDEX_FILE)
    for suffix in ("-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.unlink(path + suffix)
    with open(path, "wb") as f:
        f.write(b"\0garbage" * 1000)
    assert run(root, "list", "--json") == 0
    out, err = capsys.readouterr()
    assert out == expected
    assert len(err.splitlines()) == 1 and err.startswith("plainbox-like: notice: ") and "rebuilding" in err


def test_index_command(root, sessions, capsys):
    assert run(root, "index") == 0
    out = capsys.readouterr().out
    assert "3 sessions (3 new, 0 changed, 0 removed)" in out
    assert run(root, "index", "--rebuild", "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["rebuilt"] and data["sessions"] == 3 and data["jobs"] == 6 and data["read"] == 3
    assert run(root, "index", "--rebuild") == 0
    assert capsys.readouterr().out.startswith("rebuilt ")


def test_search_command(root, sessions, capsys):
    s = {name: w.id for name, w in sessions.items()}
    assert run(root, "search", "nightly") == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == [s["gpu"], s["old"]]
    assert run(root, "search", "test/unit", "gpu") == 0  # a job id and a title word
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(s["gpu"]) and lines[1].split() == ["test/unit", "fail"]
    assert run(root, "search", "--json", "unit") == 0
    data = json.loads(capsys.readouterr().out)
    assert [d["id"] for d in data] == [s["child"], s["gpu"], s["old"]]
    assert data[1]["title_matched"] is False
    assert data[1]["jobs"][0]["id"] == "test/unit" and data[1]["jobs"][0]["outcome"] == "fail"
    assert run(root, "search", "no-such-thing") == 1
    out, err = capsys.readouterr()
    assert out == "" and "no session matches" in err


def test_commands_on_a_missing_repository_create_nothing(tmp_path, capsys):
    root = str(tmp_path / "nothing-here")
    assert run(root, "list", "--json") == 0
    assert json.loads(capsys.readouterr().out) == []
    assert run(root, "search", "x") == 1
    assert not os.path.exists(root)


@pytest.mark.parametrize("override", [None, "relative/repo"])
def test_repository_root_is_the_repositorys(override, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PLAINBOX_LIKE_REPOSITORY", str(tmp_path / "from-env"))
    assert repository_root(override) == SessionRepository(override).root


def test_print_json_equivalence_for_an_empty_list(capsys):
    output.print_json([])
    assert capsys.readouterr().out == json_list([])
