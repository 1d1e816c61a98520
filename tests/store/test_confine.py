"""Nothing outside a session is read, written or replaced (issue 14, "Never outside the session").

Every hostile path lives in the test's temporary directory: device nodes are made
with mknod there (skipped where that is not allowed), never the machine's /dev.
"""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess

import pytest

from plainbox_like.maintain import check as checking
from plainbox_like.store import confine, model
from plainbox_like.errors import OutsideSession
from plainbox_like.store.names import IO_LOGS, JOURNAL_FILE, LOCK_FILE, SHARE_DIR
from plainbox_like.store.paths import session_id_of
from plainbox_like.store.reader import load_session
from plainbox_like.exports import tarball
from plainbox_like.store.model import Attempt
from plainbox_like.store.repository import SessionRepository
from plainbox_like.store.writer import SessionWriter
from cli_helpers import assert_one_line_error, cli, cli_argv, cli_env, run
from factories import only_session, wait_until
from archives import session_members, symlink_member, tar_bytes

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SECRET = b"TOP-SECRET-OUTSIDE-THE-SESSION"


def _new_session(root: str, capfd, command: str = "echo hello") -> str:
    """A complete session made by ``run -c``; returns its id."""
    assert run(root, "run", "-c", command) == 0
    capfd.readouterr()
    path = only_session(root)
    return session_id_of(path)


def _path(root: str, sid: str) -> str:
    return os.path.join(root, "sessions", sid + ".session")


def _tree(top: str) -> dict[str, tuple]:
    """Every entry under *top* with its type, size and content stamp (links not followed)."""
    out = {}
    for directory, dirs, files in os.walk(top):
        for name in dirs + files:
            full = os.path.join(directory, name)
            st = os.lstat(full)
            out[os.path.relpath(full, top)] = (stat.S_IFMT(st.st_mode), st.st_size, st.st_mtime_ns)
    return out


def _mknod_null(path: str) -> None:
    """A character device with /dev/null's numbers, inside the test's directory."""
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("mknod is not allowed here")


# -- export -o ---------------------------------------------------------------------------


@pytest.mark.parametrize("through_link", [False, True], ids=["device", "link-to-device"])
def test_export_writes_into_a_device_node_never_replaces_it(root, tmp_path, capfd, through_link):
    sid = _new_session(root, capfd)
    device = str(tmp_path / "null")
    _mknod_null(device)
    target = device
    if through_link:
        target = str(tmp_path / "out.json")
        os.symlink(device, target)
    assert run(root, "export", sid, "-o", target) == 0
    assert stat.S_ISCHR(os.lstat(device).st_mode) and os.lstat(device).st_rdev == os.makedev(1, 3)
    assert os.path.islink(target) == through_link
    assert sorted(os.listdir(tmp_path)) == sorted({"repo", "null", os.path.basename(target)})


def test_export_writes_into_a_fifo(root, tmp_path, capfd):
    sid = _new_session(root, capfd)
    fifo = str(tmp_path / "pipe")
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # there before the writer, as a shell pipe
    try:
        proc = subprocess.Popen(cli_argv(None, "export", sid, "-o", fifo), cwd=REPO, env=cli_env(root))
        data = bytearray()

        def drained():
            """Read what the pipe holds; true once the writer has exited and nothing is left."""
            done = proc.poll() is not None
            try:
                chunk = os.read(reader, 1 << 16)
            except BlockingIOError:
                chunk = None
            data.extend(chunk or b"")
            return done and not chunk

        wait_until(drained, timeout=60, interval=0.01)
        assert proc.wait(timeout=60) == 0
    finally:
        os.close(reader)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert json.loads(data)["session"]["id"] == sid


def test_a_fifo_nobody_reads_or_writes_never_hangs_export_or_run(root, tmp_path, capfd):
    sid = _new_session(root, capfd)
    fifo = str(tmp_path / "pipe")
    os.mkfifo(fifo)
    assert run(root, "export", sid, "-o", fifo) == 2
    assert_one_line_error(capfd.readouterr().err, fifo, "a FIFO that nobody reads")
    for option in ("--manifest", "--launcher"):
        assert run(root, "run", "-c", "true", option, fifo) == 2
        assert_one_line_error(capfd.readouterr().err, option, fifo)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_export_follows_a_symlink_and_replaces_its_target(root, tmp_path, capfd):
    sid = _new_session(root, capfd)
    target = tmp_path / "real.json"
    target.write_text("old")
    link = tmp_path / "link.json"
    os.symlink("real.json", link)
    assert run(root, "export", sid, "-o", str(link)) == 0
    assert os.readlink(link) == "real.json"
    assert json.loads(target.read_bytes())["session"]["id"] == sid


@pytest.mark.parametrize("fmt", ["json", "junit", "html", "tar"])
def test_export_into_a_session_directory_is_refused(root, tmp_path, capfd, fmt):
    sid = _new_session(root, capfd)
    other = SessionRepository(root).create(title="other")
    other.close()
    path = _path(root, sid)
    before = _tree(path), _tree(other.path)
    for output in (os.path.join(path, "session"), os.path.join(other.path, "io-logs", "x.out")):
        assert run(root, "export", sid, "--format", fmt, "-o", output) == 2
        assert_one_line_error(capfd.readouterr().err, output, "inside")
    # Through a link outside the repository too: where the name leads is what counts.
    link = str(tmp_path / "innocent")
    os.symlink(os.path.join(path, "session"), link)
    assert run(root, "export", sid, "--format", fmt, "-o", link) == 2
    assert_one_line_error(capfd.readouterr().err, link, "inside")
    assert (_tree(path), _tree(other.path)) == before
    load_session(path)


# -- paths taken from a state ----------------------------------------------------------------


HOSTILE_NAMES = ["io-logs/../../../../secret", "{secret}", "io-logs/escape/secret"]


def _hostile_session(root: str, tmp_path, capfd, name: str, running: str | None = None) -> str:
    """A session whose state names *name* (``{secret}``: the secret's absolute path) as a log."""
    (tmp_path / "secret").write_bytes(SECRET)
    (tmp_path / "secret.stdout").write_bytes(SECRET)
    sid = _new_session(root, capfd)
    path = _path(root, sid)
    os.symlink(str(tmp_path), os.path.join(path, "io-logs", "escape"))
    writer = SessionWriter.open(path)
    writer.job_finished("c1", Attempt("pass", io_log_filename=name.format(secret=tmp_path / "secret"), attempt=2))
    if running is not None:
        writer.update_metadata(flags=["incomplete"])
        writer.job_started("c2", 1, running)
        writer.abandon()  # the runner died: the lock is free
        os.truncate(os.path.join(path, LOCK_FILE), 0)
    else:
        writer.close()
    return sid


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_log_and_exports_never_read_outside(root, tmp_path, capfd, name):
    sid = _hostile_session(root, tmp_path, capfd, name)
    for command in ("log", "replay"):
        assert run(root, command, sid, "c1") == 2
        out, err = capfd.readouterr()
        assert SECRET not in out.encode()
        assert_one_line_error(err, f"session {sid}", "io_log_filename", "'c1'")
    for argv in (["--with-logs"], ["--format", "html"], ["--format", "junit"]):
        assert run(root, "export", sid, *argv) == 0
        out, _ = capfd.readouterr()
        assert out and SECRET.decode() not in out
    report = checking.check_session(_path(root, sid))
    assert ("path-outside", "io_log_filename of job 'c1' attempt 2") in {
        (f.kind, f.message[: len("io_log_filename of job 'c1' attempt 2")]) for f in report.problems
    }


def test_writers_refuse_paths_outside_and_repair_drops_them(root, tmp_path, capfd):
    evil = tmp_path / "evil.record.gz"
    sid = _hostile_session(root, tmp_path, capfd, "io-logs/../../../../secret", running="io-logs/../../../../evil.record.gz")
    path = _path(root, sid)
    for argv in (["resume", sid], ["tag", sid, "t"], ["cleanup"]):
        code = run(root, *argv)
        out, err = capfd.readouterr()
        if argv[0] == "cleanup":  # cleanup goes over every session and says which it left alone
            assert code == 0 and f"session {sid}" in err and "io_log_filename" in err
        else:
            assert code == 2
            assert_one_line_error(err, f"session {sid}", "io_log_filename of job", "refused")
        assert not evil.exists()
    assert run(root, "repair", sid) == 0
    out, _ = capfd.readouterr()
    assert "led outside the session" in out
    assert not evil.exists() and (tmp_path / "secret").read_bytes() == SECRET
    assert checking.check_session(path).healthy
    assert run(root, "resume", sid) == 0
    capfd.readouterr()
    assert not evil.exists()
    assert sorted(os.listdir(tmp_path)) == ["repo", "secret", "secret.stdout"]


def test_import_refuses_a_state_naming_paths_outside(root, tmp_path, capfd):
    sid = _hostile_session(root, tmp_path, capfd, "{secret}")
    out = io.BytesIO()
    tarball.write_archive(_path(root, sid), out, sid)
    sessions = str(tmp_path / "other" / "sessions")
    with pytest.raises(tarball.UnsafeArchive, match="io_log_filename of job 'c1' attempt 2") as info:
        tarball.import_archive(io.BytesIO(out.getvalue()), sessions, "hostile.tar.gz")
    assert "\n" not in str(info.value)
    assert not os.path.exists(sessions) or os.listdir(sessions) == []


# -- symbolic links in and around a session ---------------------------------------------------


@pytest.mark.parametrize(
    "link, target",
    [
        ("evil.session/io-logs", ".."),
        ("evil.session/session-share", "../other"),
        ("evil.session/session-share/up", "../.."),
        ("evil.session/alias", "session"),
    ],
)
def test_import_refuses_links_that_leave_the_session_once_in_place(tmp_path, link, target):
    data = tar_bytes(*session_members(), (symlink_member(link, target), None))
    sessions = str(tmp_path / "repo" / "sessions")
    with pytest.raises(tarball.UnsafeArchive, match="symbolic link") as info:
        tarball.import_archive(io.BytesIO(data), sessions, "evil.tar.gz")
    assert "\n" not in str(info.value)
    assert not os.path.exists(sessions) or os.listdir(sessions) == []


def test_import_keeps_links_inside_session_share(tmp_path):
    members = [*session_members("ok.session"), (symlink_member("ok.session/session-share/latest", "../session"), None)]
    imported = tarball.import_archive(io.BytesIO(tar_bytes(*members)), str(tmp_path / "s"), "ok")
    assert os.readlink(os.path.join(imported.path, "session-share", "latest")) == "../session"


@pytest.mark.parametrize("sub", [IO_LOGS, SHARE_DIR])
def test_symlinked_io_logs_or_share_is_damage_and_never_written_through(root, tmp_path, capfd, sub):
    sid = _new_session(root, capfd)
    path = _path(root, sid)
    elsewhere = tmp_path / "elsewhere"
    os.rename(os.path.join(path, sub), elsewhere)
    os.symlink(str(elsewhere), os.path.join(path, sub))
    before = _tree(str(elsewhere))
    report = checking.check_session(path)
    assert (sub, "symlinked-directory") in {(f.file, f.kind) for f in report.problems}
    for argv in (["resume", sid, "--rerun-failed"], ["tag", sid, "x"]):
        assert run(root, *argv) == 2
        assert_one_line_error(capfd.readouterr().err, f"session {sid}", f"{sub}/ is a symbolic link")
    assert _tree(str(elsewhere)) == before


def test_symlinked_session_directory(root, tmp_path, capfd):
    sid = _new_session(root, capfd)
    path = _path(root, sid)
    target = str(tmp_path / "target.session")
    os.rename(path, target)
    os.symlink(target, path)
    before = _tree(target)
    for argv in (
        ["tag", sid, "x"],
        ["untag", sid, "x"],
        ["rename", sid, "new title"],
        ["resume", sid],
        ["repair", sid],
    ):
        assert run(root, *argv) == 2, argv
        assert_one_line_error(capfd.readouterr().err, f"session {sid}", "the session directory is a symbolic link")
    assert _tree(target) == before
    assert (".", "symlinked-directory") in {(f.file, f.kind) for f in checking.check_session(path).problems}
    assert run(root, "delete", sid) == 0
    capfd.readouterr()
    assert not os.path.lexists(path) and _tree(target) == before
    os.symlink(target, path)
    assert run(root, "gc", "--older-than", "0s") == 0
    capfd.readouterr()
    assert os.listdir(os.path.join(root, "sessions")) == []  # no .deleting-* link left behind
    assert _tree(target) == before


def test_a_symlinked_session_directory_is_listed_and_read_like_the_others(root, tmp_path, capfd):
    """Readers follow the link (the writers refuse it, above): ``list`` and ``search`` show what ``check`` sees."""
    for _ in range(2):
        assert run(root, "run", "-c", "echo hello") == 0
    capfd.readouterr()
    linked, plain = sorted(n[: -len(".session")] for n in os.listdir(os.path.join(root, "sessions")))
    path = _path(root, linked)
    target = str(tmp_path / "moved.session")
    os.rename(path, target)
    os.symlink(target, path)
    for argv in (["list"], ["index", "--rebuild"], ["list"], ["search", "echo"]):
        assert run(root, *argv) == 0, argv
        out = capfd.readouterr().out
        if argv != ["index", "--rebuild"]:
            assert linked in out and plain in out, (argv, out)
    assert run(root, "list", "--json") == 0
    listed = {s["id"]: s for s in json.loads(capfd.readouterr().out)}
    assert listed[linked]["status"] == listed[plain]["status"] == "complete"
    assert run(root, "show", linked) == 0 and linked in capfd.readouterr().out
    assert run(root, "check", linked) == 1  # reported, as every writer refuses it
    assert "the session directory is a symbolic link" in capfd.readouterr().out


# -- the index ----------------------------------------------------------------------------


def test_index_is_never_opened_through_a_symlink(root, tmp_path, capfd):
    sid = _new_session(root, capfd)
    for name in os.listdir(root):
        if name.startswith("index.sqlite3"):
            os.unlink(os.path.join(root, name))
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(str(outside / "stolen.db"), os.path.join(root, "index.sqlite3"))
    assert run(root, "list") == 0
    out, err = capfd.readouterr()
    assert sid in out and "is a symbolic link" in err
    assert run(root, "search", "c1") == 0
    out, err = capfd.readouterr()
    assert sid in out and "is a symbolic link" in err
    for command in ("index", "watch --once"):
        assert run(root, *command.split()) == 2
        assert_one_line_error(capfd.readouterr().err, "index.sqlite3", "is a symbolic link")
    assert os.listdir(outside) == []
    assert os.path.islink(os.path.join(root, "index.sqlite3"))


def test_outside_reason_is_the_one_check(tmp_path):
    session = tmp_path / "s.session"
    (session / "io-logs").mkdir(parents=True)
    (session / "io-logs" / "ok.record.gz").write_bytes(b"")
    os.symlink("ok.record.gz", session / "io-logs" / "alias.record.gz")
    os.symlink(str(tmp_path), session / "io-logs" / "out.record.gz")
    path = str(session)
    # Out through a link and back in again is inside.
    inside = ["io-logs/ok.record.gz", "io-logs/alias.record.gz", "io-logs/missing.record.gz", "session", "io-logs/out.record.gz/s.session/session"]
    for name in inside:
        assert confine.outside_reason(path, name) is None, name
    expected = {
        "/etc/passwd": "an absolute path",
        "io-logs/../../x": "climbs out with '..'",
        "io-logs/out.record.gz": "leads outside the session through a symbolic link",
        "io-logs/out.record.gz/elsewhere": "leads outside the session through a symbolic link",
        "": "not a file name",
        ".": "not a file name",
        "a\0b": "not a file name",
    }
    for name, why in expected.items():
        assert confine.outside_reason(path, name) == why, name
    state = model.SessionState()
    for number, name in enumerate([*inside, *expected], start=1):
        state.results[f"j{number}"] = [Attempt("pass", io_log_filename=name)]
    found = confine.paths_outside(path, state)
    assert len(found) == len(expected)
    assert all(message.startswith("io_log_filename of job 'j") for message in found)
    with pytest.raises(OutsideSession, match=r"session s \(.*\): io_log_filename of job 'j6' attempt 1 '/etc/passwd'.*and 6 more"):
        confine.refuse_paths_outside(path, state)


@pytest.mark.parametrize("name", ["index.sqlite3", "index.sqlite3-wal", "watch.lock"])
def test_watch_never_opens_the_index_or_its_lock_through_a_symlink(root, tmp_path, capfd, name):
    _new_session(root, capfd)
    for existing in os.listdir(root):
        if existing.startswith("index.sqlite3"):
            os.unlink(os.path.join(root, existing))
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(str(outside / "stolen"), os.path.join(root, name))
    proc = cli(None, "watch", "--poll", env=cli_env(root), cwd=REPO, text=False, timeout=60)
    assert proc.returncode == 2
    assert_one_line_error(proc.stderr, name, "is a symbolic link")
    assert os.listdir(outside) == []


def test_gc_removes_a_deleting_link_never_its_target(root, tmp_path, capfd):
    _new_session(root, capfd)
    target = tmp_path / "target"
    target.mkdir()
    (target / "keep").write_bytes(b"x")
    link = os.path.join(root, "sessions", ".deleting-abc.1234")
    os.symlink(str(target), link)
    assert run(root, "gc", "--older-than", "1d") == 0
    capfd.readouterr()
    assert not os.path.lexists(link)
    assert (target / "keep").read_bytes() == b"x"


@pytest.mark.parametrize("name", [LOCK_FILE, JOURNAL_FILE])
def test_lock_or_journal_that_is_a_link_is_never_written_through(root, tmp_path, capfd, name):
    sid = _new_session(root, capfd)
    path = _path(root, sid)
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious\n")
    os.unlink(os.path.join(path, name))
    os.symlink(str(victim), os.path.join(path, name))
    assert ("symlinked-file", name) in {(f.kind, f.file) for f in checking.check_session(path).problems}
    for argv in (["tag", sid, "x"], ["resume", sid], ["repair", sid]):
        assert run(root, *argv) == 2, argv
        assert_one_line_error(capfd.readouterr().err, f"session {sid}", f"{name} is a symbolic link")
    assert run(root, "delete", sid) == 0
    capfd.readouterr()
    assert not os.path.lexists(path)
    assert victim.read_bytes() == b"precious\n"


def test_raw_log_file_that_is_a_link_outside_is_never_read(root, tmp_path, capfd):
    (tmp_path / "secret").write_bytes(SECRET)
    sid = _new_session(root, capfd)
    path = _path(root, sid)
    os.unlink(os.path.join(path, "io-logs", "c1.record.gz"))  # log then falls back to the raw files
    os.unlink(os.path.join(path, "io-logs", "c1.stdout"))
    os.symlink(str(tmp_path / "secret"), os.path.join(path, "io-logs", "c1.stdout"))
    assert run(root, "log", sid, "c1") == 2
    out, err = capfd.readouterr()
    assert SECRET.decode() not in out
    assert_one_line_error(err, f"session {sid}", "io-logs/c1.stdout", "leads outside the session")
    assert ("io-logs/c1.stdout", "path-outside") in {(f.file, f.kind) for f in checking.check_session(path).problems}
    assert run(root, "repair", sid) == 1  # not repaired: it would have to read through the link
    out, err = capfd.readouterr()
    assert "io-logs/c1.stdout: leads outside the session through a symbolic link: not read, not repaired" in out + err
    assert (tmp_path / "secret").read_bytes() == SECRET


def test_repair_never_writes_through_a_symlinked_quarantine(root, tmp_path, capfd):
    sid = _new_session(root, capfd)
    path = _path(root, sid)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(str(elsewhere), os.path.join(path, "quarantine"))
    with open(os.path.join(path, "io-logs", "c1.stdout"), "ab") as f:
        f.write(b"damage")  # something repair keeps a copy of before fixing it
    assert run(root, "repair", sid) == 2
    assert_one_line_error(capfd.readouterr().err, f"session {sid}", "quarantine/ is a symbolic link")
    assert os.listdir(elsewhere) == []
