"""``plainbox-like delete``, ``rename``, ``tag``, ``untag``, ``gc``, ``cleanup``, and children in ``show``."""

from __future__ import annotations

import argparse
import functools
import gzip
import json
import os
import shlex
import socket
import time

import pytest

from plainbox_like.maintain import manage
from plainbox_like.store import names, reader
from plainbox_like.cli.main import build_parser
from cli_helpers import assert_one_line_error, cli, cli_argv, run
from factories import dead_pid, written_session

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DAY = 86400.0
COMMANDS = ("delete", "rename", "tag", "untag", "gc", "cleanup")


#: The sessions managed here: job ``a`` passed.
session = functools.partial(written_session, outcomes={"a": "pass"})


def listed(root, capsys):
    capsys.readouterr()
    assert run(root, "list", "--json") == 0
    return {s["id"]: s for s in json.loads(capsys.readouterr().out)}


# -- registration --------------------------------------------------------------


def _subcommands():
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return action, {c.dest: c.help for c in action._choices_actions}


@pytest.mark.parametrize("name", COMMANDS)
def test_commands_have_help_and_description(name):
    action, helps = _subcommands()
    parser = action.choices[name]
    assert helps[name]
    assert parser.description
    for arg in parser._actions:
        if not isinstance(arg, argparse._HelpAction):
            assert arg.help, f"{name} {arg.dest} has no help"


# -- delete --------------------------------------------------------------------


def test_delete(root, repo, capsys):
    one = session(repo, title="one")
    two = session(repo, title="two")
    keep = session(repo, title="keep")
    sizes = {w.id: manage.tree_size(w.path) for w in (one, two)}
    assert run(root, "delete", one.id, two.id[:6]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["deleted", one.id, "complete", manage.human_size(sizes[one.id]).split()[0]]
    assert lines[0].endswith('"one"')
    assert lines[1].startswith(f"deleted {two.id}  complete")
    assert lines[2] == f"2 sessions deleted, {manage.human_size(sum(sizes.values()))} freed"
    assert list(listed(root, capsys)) == [keep.id]


def test_delete_unknown_session(root, repo, capsys):
    writer = session(repo)
    assert run(root, "delete", writer.id, "nosuch") == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert_one_line_error(err, "nosuch")
    assert os.path.isdir(writer.path)


def test_delete_live_session_needs_force(root, running_session, capsys):
    writer = running_session
    assert run(root, "delete", writer.id) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert_one_line_error(err, f"pid {os.getpid()} on host {socket.gethostname()}", "--force")
    assert os.path.isdir(writer.path)

    assert run(root, "delete", "--force", writer.id) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"deleted {writer.id}  running")
    assert f"pid {os.getpid()} on host {socket.gethostname()}" in err and "may still write" in err
    assert not os.path.exists(writer.path)


def test_delete_failure_is_one_line_and_hides_the_session(root, repo, capsys, monkeypatch):
    writer = session(repo)

    def fail(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(manage.shutil, "rmtree", fail)
    assert run(root, "delete", writer.id) == 2
    out, err = capsys.readouterr()
    assert_one_line_error(err, writer.id, "Permission denied", "gc")
    monkeypatch.undo()
    assert listed(root, capsys) == {}
    assert run(root, "gc") == 0
    out = capsys.readouterr().out
    assert out.startswith(f"deleted {writer.id}  leftover of an interrupted deletion")
    assert os.listdir(repo.sessions_dir) == []


# -- rename, tag, untag ----------------------------------------------------------


def test_rename(root, repo, capsys):
    writer = session(repo, title="old")
    assert run(root, "rename", writer.id, "new title") == 0
    out, err = capsys.readouterr()
    assert (out, err) == (f'{writer.id}: title "old" -> "new title"\n', "")
    summary = listed(root, capsys)[writer.id]
    assert summary["title"] == "new title"
    assert summary["status"] == "complete" and summary["flags"] == []
    assert run(root, "show", writer.id) == 0
    out = capsys.readouterr().out
    assert "Status:   complete\n" in out and "Title:    new title\n" in out
    # The state before the edit is kept as session.bak.
    with gzip.open(os.path.join(writer.path, names.BACKUP_FILE)) as f:
        assert json.load(f)["session"]["metadata"]["title"] == "old"
    assert run(root, "rename", writer.id, "") == 0
    assert capsys.readouterr().out == f'{writer.id}: title "new title" -> (no title)\n'


def test_tag_and_untag(root, repo, capsys):
    writer = session(repo, tags=["nightly"])
    assert run(root, "tag", writer.id, "gpu", "nightly", "x86") == 0
    out, err = capsys.readouterr()
    assert out == f"{writer.id}: tags nightly, gpu, x86\n"
    assert err == f"plainbox-like: notice: {writer.id} already has tag 'nightly'\n"
    assert run(root, "untag", writer.id, "nightly", "absent") == 0
    out, err = capsys.readouterr()
    assert out == f"{writer.id}: tags gpu, x86\n"
    assert err == f"plainbox-like: notice: {writer.id} has no tag 'absent'\n"
    summary = listed(root, capsys)[writer.id]
    assert summary["tags"] == ["gpu", "x86"] and summary["status"] == "complete"
    assert run(root, "untag", writer.id, "gpu", "x86") == 0
    assert capsys.readouterr().out == f"{writer.id}: tags (none)\n"


def test_bad_tag(root, repo, capsys):
    writer = session(repo)
    assert run(root, "tag", writer.id, "two words") == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert_one_line_error(err, "bad tag 'two words'")


@pytest.mark.parametrize("argv", [("rename", "x"), ("tag", "x"), ("untag", "x")])
def test_edit_of_a_live_session(root, running_session, capsys, argv):
    assert run(root, argv[0], running_session.id, *argv[1:]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert_one_line_error(err, f"pid {os.getpid()} on host {socket.gethostname()}", "after the run ends")


@pytest.mark.parametrize("argv", [("rename", "x"), ("tag", "x"), ("untag", "x")])
def test_edit_unknown_session(root, capsys, argv):
    assert run(root, argv[0], "nosuch", *argv[1:]) == 2
    assert_one_line_error(capsys.readouterr().err, "nosuch")


def test_edit_of_a_plainbox_session(root, tmp_path, capsys):
    path = tmp_path / "checkbox"
    path.mkdir()
    doc = {"version": 11, "session": {"jobs": {}, "results": {}, "metadata": {"title": "cb", "flags": []}}}
    (path / "session").write_bytes(gzip.compress(json.dumps(doc).encode()))
    assert run(root, "rename", str(path), "x") == 2
    assert_one_line_error(capsys.readouterr().err, "Plainbox/Checkbox", "not changed")


# -- gc ------------------------------------------------------------------------


def test_gc(root, repo, capsys):
    now = time.time()
    old = session(repo, title="old", created=now - 40 * DAY)
    stopped = session(repo, title="stopped", created=now - 50 * DAY, complete=False)
    young = session(repo, title="young", created=now - 2 * DAY)
    sizes = {w.id: manage.tree_size(w.path) for w in (old, stopped)}

    assert run(root, "gc", "--dry-run") == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert sorted(line.split()[2] for line in lines[:-1]) == sorted([old.id, stopped.id])
    assert all(line.startswith("would delete ") for line in lines[:-1])
    total = manage.human_size(sum(sizes.values()))
    assert lines[-1] == f"2 sessions would be deleted, {total} would be freed (dry run)"
    assert len(listed(root, capsys)) == 3

    assert run(root, "gc", "--keep-incomplete") == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].startswith(f"deleted {old.id}  complete  ") and lines[0].endswith('"old"')
    assert lines[-1] == f"1 session deleted, {manage.human_size(sizes[old.id])} freed"
    assert err == f"plainbox-like: notice: kept {stopped.id}: incomplete (--keep-incomplete)\n"

    assert run(root, "gc", "--older-than", "1d") == 0
    out = capsys.readouterr().out
    assert sorted(line.split()[1] for line in out.splitlines()[:-1]) == sorted([stopped.id, young.id])
    assert listed(root, capsys) == {}

    assert run(root, "gc", "--older-than", "12h") == 0
    assert capsys.readouterr().out == "nothing to delete: no session older than 12h\n"


def test_gc_keeps_live_sessions(root, repo, capsys):
    writer = repo.create(title="live")
    try:
        writer.update_metadata(created=time.time() - 100 * DAY)
        assert run(root, "gc") == 0
        out, err = capsys.readouterr()
        assert out == "nothing deleted: the session older than 30d kept\n"
        assert f"kept {writer.id}: session {writer.id} is being run by pid {os.getpid()}" in err
        assert os.path.isdir(writer.path)
    finally:
        writer.close()


@pytest.mark.parametrize("value", ["30", "soon", "-1d", "3 weeks"])
def test_gc_bad_duration(root, repo, capsys, value):
    writer = session(repo, created=time.time() - 100 * DAY)
    assert run(root, "gc", f"--older-than={value}") == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert_one_line_error(err, "bad duration")
    assert os.path.isdir(writer.path)


# -- cleanup -------------------------------------------------------------------


def test_cleanup(root, repo, capsys):
    done = session(repo)
    writer = repo.create(title="died")
    writer.set_plan({"a": "x", "b": "y"}, ["a", "b"])
    writer.job_started("a", 1, None)
    writer.abandon()
    pid = dead_pid()
    with open(os.path.join(writer.path, names.LOCK_FILE), "w") as f:
        f.write(f"{pid} {socket.gethostname()}\n")
    assert run(root, "show", "--json", writer.id) == 0
    assert json.loads(capsys.readouterr().out)["jobs"][0]["outcome"] == "interrupted"

    assert run(root, "cleanup", "--dry-run") == 0
    out, _ = capsys.readouterr()
    assert out.splitlines() == [
        f'{writer.id}  "died": job a would be recorded as crash',
        "1 session would be cleaned up (dry run)",
    ]
    assert run(root, "cleanup") == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0] == f'{writer.id}  "died": job a recorded as crash'
    assert lines[-1] == "1 session cleaned up"
    assert "could not be loaded" in err  # no run configuration: definitions unknown
    sessions = listed(root, capsys)
    assert sessions[writer.id]["status"] == "incomplete" and sessions[done.id]["status"] == "complete"
    assert run(root, "show", "--json", writer.id) == 0
    job = json.loads(capsys.readouterr().out)["jobs"][0]
    assert (job["outcome"], job["comments"]) == ("crash", "the session stopped while this job ran")

    assert run(root, "cleanup") == 0
    assert capsys.readouterr().out == "nothing to clean up\n"


def test_cleanup_leaves_live_sessions_alone(root, repo, capsys):
    writer = repo.create(title="live")
    try:
        writer.job_started("a", 1, None)
        assert run(root, "cleanup") == 0
        assert capsys.readouterr().out == "nothing to clean up\n"
        assert "a" in reader.load_session(writer.path).state.running_jobs
    finally:
        writer.close()


# -- lineage -------------------------------------------------------------------


def test_show_lists_child_sessions(root, capsys):
    inner = shlex.join(cli_argv(root, "run", "--title", "kid", "-c", "true"))
    proc = cli(root, "run", "--title", "mother", "-c", inner, timeout=120)
    assert proc.returncode == 0, proc.stderr
    sessions = listed(root, capsys)
    [mother] = [s for s in sessions.values() if s["title"] == "mother"]
    [kid] = [s for s in sessions.values() if s["title"] == "kid"]
    assert kid["parent_session"] == mother["id"]

    assert run(root, "show", mother["id"]) == 0
    out = capsys.readouterr().out
    section = out.split("\nChild sessions (1, started from its jobs):\n", 1)[1].splitlines()
    assert section[0].split() == ["ID", "STATUS", "JOB", "TITLE"]
    assert section[1].split() == [kid["id"], "complete", "c1", "kid"]

    assert run(root, "show", "--json", mother["id"]) == 0
    [child] = json.loads(capsys.readouterr().out)["children"]
    assert child["id"] == kid["id"]
    assert (child["title"], child["status"], child["parent_job"]) == ("kid", "complete", "c1")
    assert child["created"].endswith("+00:00")

    # The child shows its parent, and has no children of its own.
    assert run(root, "show", "--json", kid["id"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["parent_session"], data["parent_job"], data["children"]) == (mother["id"], "c1", [])
    assert run(root, "show", kid["id"]) == 0
    out = capsys.readouterr().out
    assert f"Parent:   {mother['id']} (job c1)" in out and "Child sessions" not in out
