"""A session's own files replaced by what no writer makes: a FIFO, a link leading out of the session.

Every reader opens a session's files as regular files inside the session
(``store.paths.open_regular``, ``store.confine.open_session_file``): never a
hang, never a read from elsewhere; ``check`` reports each as damage.
"""

from __future__ import annotations

import functools
import json
import os
import shutil

import pytest

from cli_helpers import assert_one_line_error, cli, run

#: Seconds any one command may take: a FIFO that blocks a reader makes it run forever.
LIMIT = 20


#: The CLI in a child process, so a hang is a failed test (a timeout), not a stuck suite.
cli = functools.partial(cli, timeout=LIMIT)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A repository holding one complete session whose job printed on both streams."""
    base = tmp_path_factory.mktemp("made")
    repo = str(base / "repo")
    assert run(repo, "run", "-c", "echo out; echo err >&2") == 0
    (name,) = os.listdir(os.path.join(repo, "sessions"))
    return repo, name[: -len(".session")]


@pytest.fixture
def session(made, tmp_path):
    """A fresh copy of the made repository: (repo, session id, session directory)."""
    repo = str(tmp_path / "repo")
    shutil.copytree(made[0], repo, symlinks=True)
    return repo, made[1], os.path.join(repo, "sessions", made[1] + ".session")


def _fifo_in_place(path: str) -> None:
    os.unlink(path)
    os.mkfifo(path)


@pytest.mark.parametrize("suffix", ["record.gz", "stdout", "stderr"])
def test_a_fifo_in_place_of_an_io_log_hangs_no_reader(session, suffix):
    repo, sid, path = session
    log = os.path.join(path, "io-logs", f"c1.{suffix}")
    _fifo_in_place(log)
    for command in ("log", "replay"):
        done = cli(repo, command, sid, "c1")
        assert done.returncode == 2 and done.stdout == ""
        assert_one_line_error(done.stderr, log, "not a regular file")
    checked = cli(repo, "check", "--json", sid)
    assert checked.returncode == 1
    problems = {(p["file"], p["message"]) for s in json.loads(checked.stdout)["sessions"] for p in s["problems"]}
    assert any(f == f"io-logs/c1.{suffix}" and "not a regular file" in m for f, m in problems), problems
    for fmt in ("html", "junit", "json", "tar"):
        out = os.path.join(os.path.dirname(repo), f"out.{fmt}")
        done = cli(repo, "export", sid, "--format", fmt, "-o", out)
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    with open(os.path.join(os.path.dirname(repo), "out.html"), encoding="utf-8") as f:
        assert "not a regular file" in f.read()  # the attempt is shown, without output, with the problem
    with open(os.path.join(os.path.dirname(repo), "out.junit"), encoding="utf-8") as f:
        assert "not a regular file" in f.read()
    out = os.path.join(os.path.dirname(repo), "logs.json")
    assert cli(repo, "export", sid, "--with-logs", "-o", out).returncode == 0
    with open(out, encoding="utf-8") as f:
        (attempt,) = json.load(f)["logs"]["c1"]
    assert attempt["source"] == "missing" and "not a regular file" in attempt["problem"]
    assert attempt["stdout"]["text"] == "" and attempt["stderr"]["text"] == ""
    repaired = cli(repo, "repair", sid)
    assert "Traceback" not in repaired.stderr, repaired.stderr
    assert cli(repo, "check", sid).returncode == 0  # the FIFO was moved to quarantine, the log rebuilt
    assert cli(repo, "log", sid, "c1").stdout == "out\nerr\n"


@pytest.mark.parametrize("name", ["session", "journal"])
def test_a_state_or_journal_linked_outside_the_session_is_not_read(session, tmp_path, name):
    repo, sid, path = session
    outside = str(tmp_path / f"outside-{name}")
    shutil.copy(os.path.join(path, name), outside)  # a readable copy: only the link's place is wrong
    os.unlink(os.path.join(path, name))
    os.symlink(outside, os.path.join(path, name))
    for argv in (["show", sid], ["log", sid, "c1"], ["export", sid, "--format", "json"]):
        done = cli(repo, *argv)
        assert done.returncode != 0, argv
        assert_one_line_error(done.stderr, f"session {sid}", f"{name} is a symbolic link", "leads outside the session")
    checked = cli(repo, "check", "--json", sid)
    assert checked.returncode == 1
    problems = {(p["file"], p["message"]) for s in json.loads(checked.stdout)["sessions"] for p in s["problems"]}
    assert any(f == name and "leads outside the session" in m for f, m in problems), problems
    listed = cli(repo, "list", "--json")
    (row,) = json.loads(listed.stdout)
    assert row["status"] == "corrupt"


@pytest.mark.parametrize("name", ["lock", "journal"])
def test_check_reports_a_fifo_lock_or_journal(session, name):
    repo, sid, path = session
    _fifo_in_place(os.path.join(path, name))
    checked = cli(repo, "check", "--json", sid)
    assert checked.returncode == 1, checked.stdout
    problems = {(p["file"], p["message"]) for s in json.loads(checked.stdout)["sessions"] for p in s["problems"]}
    assert any(f == name and "not a regular file" in m for f, m in problems), problems


def test_a_log_without_its_record_file_and_with_empty_raw_files_is_missing(session):
    from plainbox_like.errors import LogMissing
    from plainbox_like.read import replay
    from plainbox_like.store.reader import load_session

    repo, sid, path = session
    os.unlink(os.path.join(path, "io-logs", "c1.record.gz"))
    os.unlink(os.path.join(path, "io-logs", "c1.stdout"))
    with open(os.path.join(path, "io-logs", "c1.stderr"), "wb"):
        pass  # empty, as for a job that printed nothing on stderr
    loaded = load_session(path)
    with pytest.raises(LogMissing, match="missing"):
        replay.read_output(loaded, replay.select_attempt(loaded, "c1", None))
    done = cli(repo, "log", sid, "c1")
    assert done.returncode == 2
    assert_one_line_error(done.stderr, "c1.record.gz", "missing")


@pytest.mark.parametrize("option", ["--interval", "--poll-interval"])
@pytest.mark.parametrize("value", ["1e-300", "0.05", "0"])
def test_watch_intervals_below_the_minimum_are_usage_errors(tmp_path, option, value, capsys):
    with pytest.raises(SystemExit) as exited:
        run(str(tmp_path / "repo"), "watch", option, value)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}: must be at least 0.1" in err and "Traceback" not in err
    assert not os.path.exists(tmp_path / "repo" / "watch.lock")


def test_a_symlinked_sessions_directory_is_never_written_through(made, tmp_path, capfd):
    repo = str(tmp_path / "repo")
    shutil.copytree(made[0], repo, symlinks=True)
    elsewhere = str(tmp_path / "elsewhere")
    os.rename(os.path.join(repo, "sessions"), elsewhere)
    os.symlink(elsewhere, os.path.join(repo, "sessions"))
    before = sorted(os.listdir(elsewhere))
    archive = str(tmp_path / "archive.tar.gz")
    assert run(made[0], "export", made[1], "--format", "tar", "-o", archive) == 0
    capfd.readouterr()
    for argv in (["run", "-c", "true"], ["import", archive], ["tag", made[1], "x"], ["resume", made[1]]):
        assert run(repo, *argv) == 2, argv
        assert_one_line_error(capfd.readouterr().err, os.path.join(repo, "sessions"), "is a symbolic link")
    assert sorted(os.listdir(elsewhere)) == before
    assert run(repo, "show", made[1]) == 0  # readers still read through it
