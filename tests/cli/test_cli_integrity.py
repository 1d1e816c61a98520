"""``plainbox-like check`` and ``repair`` on the command line, including a runner killed with SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest

from plainbox_like.maintain import check as checking
from plainbox_like.maintain import repair as repairing
from plainbox_like.store import iolog
from plainbox_like.store.runconfig import RunConfig
from plainbox_like.run import prepare
from plainbox_like.run import settle
from plainbox_like.cli.main import build_parser
from plainbox_like.store.model import OUTCOME_CRASH, OUTCOME_PASS
from plainbox_like.run.executors import iter_pgid_members
from plainbox_like.store.repository import SessionRepository
from plainbox_like.store.writer import SessionWriter
from plainbox_like.store.reader import load_session
from cli_helpers import cli, cli_argv, cli_env, run
from factories import logged_checkbox_session, quarantined_files, run_session, session_files, wait_until


def sid_of(path):
    return os.path.basename(path)[: -len(".session")]


def one_line_error(err: str, *needles: str) -> None:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("plainbox-like: error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]


# -- registration ----------------------------------------------------------------------


def test_commands_have_help_and_descriptions():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    helps = {pseudo.dest: pseudo.help for pseudo in sub._choices_actions}
    for name in ("check", "repair"):
        assert helps.get(name), name
        command = sub.choices[name]
        assert command.description
        for action in command._actions:
            assert action.help, (name, action.dest)


# -- check ------------------------------------------------------------------------------


def test_check_healthy_repository(root, capsys):
    run_session(root)
    run_session(root)
    assert run(root, "check") == 0
    out, err = capsys.readouterr()
    assert out == ""
    assert "2 session(s) checked: no problems" in err


def test_check_empty_repository(root, capsys):
    assert run(root, "check") == 0
    assert "no sessions" in capsys.readouterr().err


def test_check_reports_one_line_per_problem(root, capsys):
    good, bad = run_session(root), run_session(root)
    os.unlink(os.path.join(bad, "session.bak"))
    with open(os.path.join(bad, "io-logs", "c1.stdout"), "ab") as f:
        f.write(b"!")
    with open(os.path.join(bad, ".session.abcd.tmp"), "wb") as f:
        f.write(b"x")
    assert run(root, "check") == 1
    out, err = capsys.readouterr()
    assert sorted(out.splitlines()) == sorted(
        [
            f"{sid_of(bad)}: .session.abcd.tmp: stale temporary file left by an interrupted write",
            f"{sid_of(bad)}: io-logs/c1.stdout: longer than the records: 7 byte(s), the records hold 6",
        ]
    )
    assert sid_of(good) not in out
    assert "1 of 2 session(s) need repair" in err
    # Only the healthy one, by id prefix and by path.
    assert run(root, "check", sid_of(good)[:6] if sid_of(good)[:6] != sid_of(bad)[:6] else sid_of(good)) == 0
    assert run(root, "check", good) == 0
    # The damaged one by path, also when it has no state file any more.
    assert run(root, "check", bad + "/") == 1
    os.unlink(os.path.join(bad, "session"))
    assert run(root, "check", bad + "/") == 1


def test_check_json(root, capsys):
    good, bad = run_session(root), run_session(root)
    with open(os.path.join(bad, "journal"), "ab") as f:
        f.write(b'{"seq": 7, "op"')
    assert run(root, "check", "--json", good, bad) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["healthy"] is False
    by_id = {s["id"]: s for s in report["sessions"]}
    assert by_id[sid_of(good)]["healthy"] is True and by_id[sid_of(good)]["problems"] == []
    damaged = by_id[sid_of(bad)]
    assert damaged["origin"] == "plainbox-like"
    assert damaged["path"] == bad
    assert [(p["file"], p["kind"]) for p in damaged["problems"]] == [("journal", "journal-torn")]
    assert set(damaged) == {"id", "path", "origin", "healthy", "problems", "notes"}


def test_check_bad_arguments(root, capsys):
    run_session(root)
    assert run(root, "check", "no-such-session") == 2
    one_line_error(capsys.readouterr().err, "no-such-session")
    assert run(root, "check", "/nonexistent/x.session") == 2
    one_line_error(capsys.readouterr().err)
    with pytest.raises(SystemExit) as info:
        run(root, "check", "--no-such-option")
    assert info.value.code == 2


def test_check_checkbox_session_by_path(tmp_path, capsys):
    directory = logged_checkbox_session(str(tmp_path / "cbx.session"))
    assert run(str(tmp_path / "repo"), "check", directory) == 0
    capsys.readouterr()
    assert run(str(tmp_path / "repo"), "repair", directory) == 2
    one_line_error(capsys.readouterr().err, "read-only")


# -- repair -----------------------------------------------------------------------------


def test_repair_says_what_it_did(root, capsys, finished_session):
    path = finished_session
    sid = sid_of(path)
    data = open(os.path.join(path, "session"), "rb").read()
    with open(os.path.join(path, "session"), "wb") as f:
        f.write(data[: len(data) // 2])
    assert run(root, "repair", sid) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines and all(line.startswith(f"{sid}: ") for line in lines)
    assert any(line.startswith(f"{sid}: session: not a valid gzip file") and "rebuilt" in line for line in lines)
    assert "quarantine" in err
    assert quarantined_files(path)["session"] == data[: len(data) // 2]
    assert run(root, "check", sid) == 0
    assert run(root, "repair", sid) == 0
    assert "nothing to repair" in capsys.readouterr().out


def test_repair_locked_session(root, capsys):
    writer = SessionRepository(root).create(title="busy")
    try:
        assert run(root, "repair", writer.id) == 2
        one_line_error(capsys.readouterr().err, "locked", str(os.getpid()))
    finally:
        writer.close()


def test_repair_unknown_session(root, capsys):
    assert run(root, "repair", "nothing-like-it") == 2
    one_line_error(capsys.readouterr().err)


def test_repair_reports_problems_it_cannot_fix(root, capsys, monkeypatch, finished_session):
    path = finished_session
    os.unlink(os.path.join(path, "session"))

    def half_done(path, say):
        result = repairing.RepairResult(sid_of(path), path, actions=["pretend"])
        result.after = checking.check_session(path)
        return result

    monkeypatch.setattr(repairing, "repair_session", half_done)
    assert run(root, "repair", sid_of(path)) == 1
    assert f"{sid_of(path)}: session: still a problem: state file is missing" in capsys.readouterr().out


# -- a runner killed with SIGKILL in the middle of a run ---------------------------------


def test_sigkilled_runner(root):
    proc = subprocess.Popen(
        cli_argv(root, "run", "-c", "echo a", "-c", "sleep 30"),
        env=cli_env(root),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    groups: set[int] = set()
    try:

        def sleeping():
            paths = SessionRepository(root).session_paths()
            if not paths:
                return None
            try:
                state = load_session(paths[0]).state
            except Exception:  # noqa: BLE001 - being created
                return None
            if "c2" not in state.running_jobs:
                return None
            leftovers = settle.find_leftovers(sid_of(paths[0]))
            # Its log too: the runner creates it just after the spawn, and a kill in between leaves none to cut.
            log = os.path.join(paths[0], "io-logs", "c2.record.gz")
            started_log = os.path.exists(log) and os.path.getsize(log) >= 10  # the gzip header
            return (paths[0], leftovers["c2"]) if leftovers.get("c2") and started_log else None

        path, groups = wait_until(sleeping, what="the jobs to sleep")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        for pgid in groups:
            os.killpg(pgid, signal.SIGKILL)
        wait_until(lambda: not any(list(iter_pgid_members(g)) for g in groups), what="the job groups to end")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pgid in groups:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    sid = sid_of(path)

    checked = cli(root, "check")
    assert checked.returncode == 1, checked.stderr
    lines = checked.stdout.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{sid}: lock: interrupted run: the writer (pid {proc.pid} on ")
    assert "(c2): resume or cleanup" in lines[0]
    assert "io-logs/c2.record.gz" in checked.stderr  # its cut log: a note, not a problem

    before = session_files(path)
    repaired = cli(root, "repair", sid)
    assert repaired.returncode == 0, repaired.stderr
    actions = repaired.stdout.splitlines()
    assert any(a.startswith(f"{sid}: lock: interrupted run of pid {proc.pid}") and "c2 (crash)" in a for a in actions)
    assert any(a.startswith(f"{sid}: io-logs/c2.record.gz: file was cut") for a in actions)
    kept = quarantined_files(path)
    after = session_files(path)
    for rel, data in before.items():
        if after.get(rel) != data:
            assert kept.get(rel) == data, rel

    clean = cli(root, "check", sid)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert clean.stdout == ""

    state = load_session(path).state
    assert state.latest("c1").outcome == OUTCOME_PASS
    assert state.latest("c2").outcome == OUTCOME_CRASH
    assert state.latest("c2").comments == settle.STOPPED_WHILE_RUNNING
    assert iolog.read_records(os.path.join(path, state.latest("c2").io_log_filename)).complete

    resumed = cli(root, "resume", sid)
    assert resumed.returncode == 1, resumed.stderr  # c2 crashed: the exit status says so
    assert "error" not in resumed.stderr
    assert "Session " + sid in resumed.stderr
    assert cli(root, "check").returncode == 0


def test_sigkilled_writer_with_a_damaged_snapshot(root):
    """The worst case the writer can meet: killed before its second snapshot, then its only snapshot zeroed."""
    prepared = prepare.start_session(SessionRepository(root), RunConfig(commands=["echo a", "echo b"]))
    writer = prepared.writer
    writer.abandon()  # died right after journaling the plan
    with open(os.path.join(writer.path, "session"), "wb") as f:
        f.write(b"\0" * 64)
    before = session_files(writer.path)
    repaired = cli(root, "repair", writer.id)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert quarantined_files(writer.path)["session"] == before["session"]
    assert cli(root, "check", writer.id).returncode == 0
    # The plan comes back from the journal, which starts at seq 1.
    state = load_session(writer.path).state
    assert state.desired_job_list == ["c1", "c2"]
    resumed = cli(root, "resume", writer.id)
    metadata_lost = any(line.startswith(f"{writer.id}: lost: ") and "metadata" in line for line in repaired.stdout.splitlines())
    assert metadata_lost == (state.metadata.app_blob is None)
    if metadata_lost:
        # How it was run was only in the lost snapshot: said by repair, and resume says why it cannot.
        assert resumed.returncode == 2
        one_line_error(resumed.stderr, "how it was run")
    else:  # the writer journals its initial metadata too
        assert resumed.returncode == 0, resumed.stderr
        assert load_session(writer.path).state.latest("c2").outcome == OUTCOME_PASS


def test_plain_session_dir_without_state_resolves_by_id(root, capsys, finished_session):
    path = finished_session
    os.unlink(os.path.join(path, "session"))
    os.unlink(os.path.join(path, "session.bak"))
    assert run(root, "check", sid_of(path)) == 1
    capsys.readouterr()
    assert run(root, "repair", sid_of(path)) == 0
    out = capsys.readouterr().out
    assert "lost: " in out
    assert run(root, "check", sid_of(path)) == 0
    assert SessionWriter.open(path).close() is None  # writable again
