"""``plainbox-like export`` and ``import`` on the command line."""

from __future__ import annotations

import functools
import io
import json
import os
import pty
import subprocess
import tarfile
import xml.etree.ElementTree as ET

import pytest

from plainbox_like.cli.main import build_parser
from plainbox_like.store.repository import SessionRepository
from plainbox_like.store.reader import load_session
from cli_helpers import assert_one_line_error, cli, cli_argv, cli_env, run
from archives import MALICIOUS, session_members, tar_bytes
from factories import ALL_BYTES, BINARY, PLAN, plainbox_session, report_session

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


#: The CLI in a child process, its output as bytes (archives).
cli = functools.partial(cli, text=False, timeout=120)


@pytest.fixture
def session(repo):
    return report_session(repo)


def test_commands_are_registered_with_help():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    helps = {c.dest: c.help for c in sub._choices_actions}
    for name in ("export", "import"):
        assert helps[name]
        assert sub.choices[name].description
        for action in sub.choices[name]._actions:
            assert action.help


# -- export ----------------------------------------------------------------------------


def test_export_json_to_stdout(session, root, capfdbinary):
    assert run(root, "export", session.id, "--format", "json") == 0
    out, err = capfdbinary.readouterr()
    doc = json.loads(out)
    assert doc["session"]["id"] == session.id and "logs" not in doc
    assert err == b""


def test_export_defaults_to_json(session, root, capfdbinary):
    assert run(root, "export", session.id[:4]) == 0
    assert json.loads(capfdbinary.readouterr().out)["format"] == "plainbox-like-export"


def test_export_json_with_logs(session, root, capfdbinary):
    assert run(root, "export", session.id, "--format", "json", "--with-logs") == 0
    doc = json.loads(capfdbinary.readouterr().out)
    assert doc["logs"][BINARY][0]["stdout"]["exact"] is False


def test_export_junit(session, root, capfdbinary):
    assert run(root, "export", session.id, "--format", "junit") == 0
    suite = ET.fromstring(capfdbinary.readouterr().out).find("testsuite")
    assert [c.get("name") for c in suite.findall("testcase")] == PLAN


def test_export_html(session, root, capfdbinary):
    assert run(root, "export", session.id, "--format", "html") == 0
    page = capfdbinary.readouterr().out.decode()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")


@pytest.mark.parametrize(
    "name, check",
    [
        ("out.json", lambda data: json.loads(data)["format"] == "plainbox-like-export"),
        ("junit.xml", lambda data: ET.fromstring(data).tag == "testsuites"),
        ("report.html", lambda data: data.startswith(b"<!DOCTYPE html>")),
        ("s.tar.gz", lambda data: data[:2] == b"\x1f\x8b"),
        ("s.tgz", lambda data: data[:2] == b"\x1f\x8b"),
        ("no-suffix", lambda data: json.loads(data)["format"] == "plainbox-like-export"),
    ],
)
def test_export_to_a_file_guesses_the_format(session, root, tmp_path, capfdbinary, name, check):
    target = tmp_path / "out" / name
    target.parent.mkdir()
    assert run(root, "export", session.id, "-o", str(target)) == 0
    assert capfdbinary.readouterr() == (b"", b"")
    assert check(target.read_bytes())
    assert os.listdir(target.parent) == [name]  # no temporary left
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_explicit_format_wins_over_the_file_name(session, root, tmp_path):
    target = tmp_path / "report.xml"
    assert run(root, "export", session.id, "--format", "html", "--output", str(target)) == 0
    assert target.read_bytes().startswith(b"<!DOCTYPE html>")


def test_failed_export_keeps_the_old_file(session, root, tmp_path, monkeypatch, capfd):
    target = tmp_path / "report.html"
    target.write_bytes(b"old report")
    from plainbox_like.exports import htmlreport

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(htmlreport, "render", boom)
    assert run(root, "export", session.id, "-o", str(target)) == 2
    assert_one_line_error(capfd.readouterr().err, "report.html", "No space left on device")
    assert target.read_bytes() == b"old report"
    assert set(os.listdir(tmp_path)) == {"report.html", "repo"}  # no temporary left


@pytest.mark.parametrize(
    "argv, needles",
    [
        (["export", "nosuch"], ["no session matches 'nosuch'"]),
        (["export", "{id}", "--format", "junit", "--with-logs"], ["--with-logs", "json only"]),
        (["export", "{id}", "-o", "/nonexistent/dir/x.json"], ["/nonexistent/dir/x.json", "cannot write"]),
        (["export", "{id}", "-o", "{tmp}"], ["is a directory"]),
        (["export", "{id}", "-o", "{path}/io-logs/x.tar.gz"], ["inside the session"]),
    ],
    ids=["unknown-session", "with-logs-not-json", "missing-directory", "directory", "tar-inside-session"],
)
def test_export_errors(session, root, tmp_path, capfd, argv, needles):
    argv = [a.format(id=session.id, tmp=tmp_path, path=session.path) for a in argv]
    assert run(root, *argv) == 2
    out, err = capfd.readouterr()
    assert out == ""
    assert_one_line_error(err, *needles)
    assert not os.path.exists(os.path.join(session.path, "io-logs", "x.tar.gz"))


def test_export_format_choices(session, root, capfd):
    with pytest.raises(SystemExit) as info:
        run(root, "export", session.id, "--format", "pdf")
    assert info.value.code == 2
    assert "invalid choice" in capfd.readouterr().err


def test_export_tar_refuses_a_terminal(session, root):
    controller, terminal = pty.openpty()
    try:
        result = subprocess.run(
            cli_argv(None, "export", session.id, "--format", "tar"),
            cwd=REPO,
            env=cli_env(root),
            stdout=terminal,
            stderr=subprocess.PIPE,
            timeout=60,
        )
    finally:
        os.close(terminal)
        os.close(controller)
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "terminal", "-o FILE")


def test_export_tar_to_a_pipe(session, root):
    result = cli(root, "export", session.id, "--format", "tar")
    assert result.returncode == 0, result.stderr
    with tarfile.open(fileobj=io.BytesIO(result.stdout), mode="r:gz") as tar:
        assert tar.getnames()[0] == f"{session.id}.session"


# -- import ----------------------------------------------------------------------------


def test_export_import_round_trip(session, root, tmp_path, capfd):
    archive = tmp_path / "s.tar.gz"
    assert run(root, "export", session.id, "-o", str(archive)) == 0
    capfd.readouterr()
    other = str(tmp_path / "other")
    assert run(other, "import", str(archive)) == 0
    out, err = capfd.readouterr()
    new_id = out.strip()
    assert err == ""
    assert new_id and new_id != session.id and "\n" not in new_id
    imported = load_session(os.path.join(other, "sessions", new_id + ".session"))
    assert imported.state == load_session(session.path).state
    # The imported session works with the other commands.
    assert cli(other, "log", new_id, BINARY, "--stream", "stdout").stdout == ALL_BYTES
    assert run(other, "show", new_id) == 0
    assert new_id in capfd.readouterr().out


def test_import_twice_gives_two_sessions(session, root, tmp_path, capfd):
    archive = tmp_path / "s.tar.gz"
    assert run(root, "export", session.id, "-o", str(archive)) == 0
    assert run(root, "import", str(archive)) == 0
    assert run(root, "import", str(archive)) == 0
    ids = capfd.readouterr().out.split()
    assert len(set(ids)) == 2 and session.id not in ids
    assert len(SessionRepository(root).session_paths()) == 3


def test_pipe_export_into_import(session, root, tmp_path):
    exported = cli(root, "export", session.id, "--format", "tar")
    assert exported.returncode == 0
    other = str(tmp_path / "other")
    imported = cli(other, "import", "-", input=exported.stdout)
    assert imported.returncode == 0, imported.stderr
    new_id = imported.stdout.decode().strip()
    assert load_session(os.path.join(other, "sessions", new_id + ".session")).state == load_session(session.path).state


def test_checkbox_session_export_and_import(tmp_path, root, capfd):
    directory = tmp_path / "checkbox-ng" / "sessions" / "session_title-2016-02-03T04.05.06.session"
    plainbox_session(directory, 11)
    for fmt in ("json", "junit", "html"):
        assert run(root, "export", str(directory), "--format", fmt) == 0
    capfd.readouterr()
    archive = tmp_path / "cb.tgz"
    assert run(root, "export", str(directory), "-o", str(archive)) == 0
    assert run(root, "import", str(archive)) == 0
    out, err = capfd.readouterr()
    new_id = out.strip()
    assert "Checkbox/Plainbox session" in err and "not resumed" in err
    imported = load_session(os.path.join(root, "sessions", new_id + ".session"))
    assert imported.origin == "plainbox"
    assert imported.state == load_session(str(directory)).state
    assert run(root, "log", new_id, "com.canonical.certification::local") == 0
    assert capfd.readouterr().out == "hi\n"


@pytest.mark.parametrize("name", ["absolute-path", "dotdot", "symlink-relative-escape", "char-device"])
def test_import_rejects_malicious_archives(tmp_path, root, capfd, name):
    archive = tmp_path / "evil.tar.gz"
    archive.write_bytes(tar_bytes(*session_members(), *MALICIOUS[name]))
    assert run(root, "import", str(archive)) == 2
    out, err = capfd.readouterr()
    assert out == ""
    assert_one_line_error(err, str(archive), "refusing to import")
    assert not os.path.exists(root)


@pytest.mark.parametrize(
    "make, needles",
    [
        (lambda p: p.write_bytes(b"garbage"), ["not a readable tar archive"]),
        (lambda p: None, ["cannot read", "No such file"]),
        (lambda p: p.mkdir(), ["cannot read"]),
    ],
    ids=["garbage", "missing", "directory"],
)
def test_import_errors(tmp_path, root, capfd, make, needles):
    archive = tmp_path / "x.tar.gz"
    make(archive)
    assert run(root, "import", str(archive)) == 2
    out, err = capfd.readouterr()
    assert out == ""
    assert_one_line_error(err, *needles)
    assert not os.path.exists(root)


def test_import_refuses_a_terminal(root):
    controller, terminal = pty.openpty()
    try:
        result = subprocess.run(
            cli_argv(None, "import", "-"),
            cwd=REPO,
            env=cli_env(root),
            stdin=terminal,
            capture_output=True,
            timeout=60,
        )
    finally:
        os.close(terminal)
        os.close(controller)
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "terminal")


def test_help_does_not_touch_the_repository(tmp_path):
    for command in ("export", "import"):
        result = cli(str(tmp_path / "repo"), command, "--help")
        assert result.returncode == 0
        assert result.stdout.startswith(b"usage: plainbox-like")
    assert not (tmp_path / "repo").exists()
