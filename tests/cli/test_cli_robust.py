"""Faults and hostile input that once gave a traceback or a hang: each is a one-line error now.

A repository that is no directory or cannot be written, ``replay --speed`` too small, an index side
file that is not a file, a ``repair`` that cannot open the lock or runs out of disk, ``import`` from a
FIFO nobody writes, NUL in an argument; and management commands that wait for one another.
"""

from __future__ import annotations

import errno
import functools
import os
import shutil
import subprocess
import time

import pytest

from plainbox_like.maintain import manage
from plainbox_like.read import replay
from plainbox_like.store import locks, reader
from plainbox_like.store.writer import acquire_lock
from plainbox_like.cli.main import main
from plainbox_like.store.iolog import IORecord
from cli_helpers import assert_one_line_error, cli_argv, cli_env, run
from factories import written_session

#: Drops the capability that lets root ignore file permissions, so root meets them as a user would.
NO_DAC_OVERRIDE = [
    "setpriv",
    "--bounding-set=-dac_override,-dac_read_search",
    "--inh-caps=-dac_override,-dac_read_search",
]


def _cli(root: str | None, *args: str, as_user: bool = False, timeout: float = 60) -> subprocess.CompletedProcess:
    """``plainbox-like [--repository ROOT] ARGS`` in a subprocess; *as_user*: without root's file access."""
    prefix = []
    if as_user and os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("needs setpriv to drop root's file access")
        prefix = NO_DAC_OVERRIDE
    return subprocess.run([*prefix, *cli_argv(root, *args)], env=cli_env(), capture_output=True, text=True, timeout=timeout)


#: A complete session with one job ``a`` that printed ``hello`` (a record per line of *output*).
session = functools.partial(written_session, title="t", outcomes={"a": "pass"}, output=[b"hello\n"])


# -- the repository ------------------------------------------------------------------


def _not_a_directory(tmp_path, kind: str) -> str:
    path = tmp_path / "here"
    if kind == "file":
        path.write_text("root:x:0:0::/root:/bin/sh\n")
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "dangling-symlink":
        path.symlink_to(tmp_path / "nowhere")
    else:  # under a file
        (tmp_path / "file").write_text("x")
        path = tmp_path / "file" / "below"
    return str(path)


@pytest.mark.parametrize("kind", ["file", "fifo", "dangling-symlink", "under-a-file"])
@pytest.mark.parametrize("command", [["run", "-c", "true"], ["list"], ["show", "x"], ["gc"], ["index"]])
def test_a_repository_that_is_not_a_directory_is_a_one_line_error(tmp_path, capsys, kind, command):
    root = _not_a_directory(tmp_path, kind)
    before = sorted(os.listdir(tmp_path))
    assert run(root, *command) == 2
    assert_one_line_error(capsys.readouterr().err, root)
    assert sorted(os.listdir(tmp_path)) == before  # nothing made beside it


def test_the_repository_variable_is_named_when_it_is_wrong(tmp_path, capsys, monkeypatch):
    root = _not_a_directory(tmp_path, "file")
    monkeypatch.setenv("PLAINBOX_LIKE_REPOSITORY", root)
    assert main(["list"]) == 2
    assert_one_line_error(capsys.readouterr().err, root, "$PLAINBOX_LIKE_REPOSITORY")


def test_a_repository_in_a_directory_that_cannot_be_written(tmp_path):
    parent = tmp_path / "read-only"
    parent.mkdir(mode=0o500)
    root = str(parent / "repo")
    done = _cli(root, "run", "-c", "true", as_user=True)
    assert done.returncode == 2, done.stderr
    assert_one_line_error(done.stderr, root, "Permission denied")
    assert os.listdir(parent) == []


# -- replay ----------------------------------------------------------------------------


def test_replay_speed_too_small_is_a_usage_error_naming_the_option(repo, root, capsys):
    sid = session(repo).id
    with pytest.raises(SystemExit) as stopped:
        run(root, "replay", "--speed", "1e-300", sid, "a")
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "argument --speed: must be at least 0.001" in err
    assert run(root, "replay", "--speed", "0.001", sid, "a") == 0  # the slowest allowed plays


def test_replay_never_sleeps_longer_than_any_platform_takes():
    slept = []
    records = [IORecord(1e300, "stdout", b"a"), IORecord(float("inf"), "stdout", b"b")]
    replay.play(records, lambda _data: None, slept.append)
    assert slept == [replay.MAX_PAUSE, replay.MAX_PAUSE]
    assert replay.MAX_PAUSE <= 2**31 - 1  # a 32-bit time_t holds it


# -- the index ---------------------------------------------------------------------------


@pytest.mark.parametrize("side", ["-shm", "-wal"])
@pytest.mark.parametrize("command", [["index"], ["watch", "--once"]])
def test_an_index_side_file_that_is_no_file_is_a_one_line_error(repo, root, capsys, side, command):
    session(repo, title="first")
    assert run(root, "index") == 0
    os.mkdir(os.path.join(root, "index.sqlite3" + side))
    session(repo, title="second")  # something to write into the index
    capsys.readouterr()
    assert run(root, *command) == 2
    assert_one_line_error(capsys.readouterr().err, os.path.join(root, "index.sqlite3" + side), "not a regular file")
    assert run(root, "list") == 0  # list still answers, from the sessions themselves
    out, err = capsys.readouterr()
    assert "first" in out and "second" in out
    assert "index.sqlite3" + side in err


# -- repair ------------------------------------------------------------------------------


def test_repair_when_the_lock_is_a_directory(repo, root, capsys):
    sid = session(repo).id
    lock = os.path.join(repo.sessions_dir, sid + ".session", "lock")
    os.unlink(lock)
    os.mkdir(lock)
    assert run(root, "repair", sid) == 2
    assert_one_line_error(capsys.readouterr().err, lock, "Is a directory")


def test_repair_when_the_lock_cannot_be_opened(repo, root):
    sid = session(repo).id
    path = os.path.join(repo.sessions_dir, sid + ".session")
    os.chmod(os.path.join(path, "lock"), 0o400)
    os.unlink(os.path.join(path, "io-logs", "a.stdout"))  # something to repair
    done = _cli(root, "repair", sid, as_user=True)
    assert done.returncode == 2, done.stderr
    assert_one_line_error(done.stderr, os.path.join(path, "lock"), "Permission denied")
    assert not os.path.exists(os.path.join(path, "io-logs", "a.stdout"))  # nothing done
    assert not os.path.exists(os.path.join(path, "quarantine"))


def _full_disk_for_new_logs(monkeypatch, logs: str, room: int) -> None:
    """Writes into new temporary files under *logs* fail with ENOSPC once *room* bytes went in."""
    real_write = os.write
    written = {"bytes": 0}

    def write(fd, data):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            target = ""
        if target.startswith(logs) and target.endswith(".tmp"):
            if written["bytes"] + len(data) > room:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            written["bytes"] += len(data)
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)


def test_repair_on_a_full_disk_leaves_no_temporary_file_and_names_the_file(repo, root, capsys, monkeypatch):
    sid = session(repo, output=[b"line %d\n" % n for n in range(100_000)]).id
    path = os.path.join(repo.sessions_dir, sid + ".session")
    logs = os.path.join(path, "io-logs")
    stdout = os.path.join(logs, "a.stdout")
    os.unlink(stdout)  # repair rebuilds it from the record file
    _full_disk_for_new_logs(monkeypatch, logs, room=100_000)
    assert run(root, "repair", sid) == 1
    assert_one_line_error(capsys.readouterr().err, stdout, "No space left on device", "repair again")
    assert sorted(os.listdir(logs)) == ["a.record.gz", "a.stderr"]  # no .a.stdout.*.tmp left behind
    assert locks.lock_holder(path) is None  # the lock is let go
    monkeypatch.undo()  # room again: the repair completes
    assert run(root, "repair", sid) == 0
    assert os.path.getsize(stdout) == sum(len(b"line %d\n" % n) for n in range(100_000))


def test_repair_on_a_real_full_disk(tmp_path):
    """The same on a small tmpfs that is really full (as root, where mounting works)."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a small tmpfs")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4M", "tmpfs", str(mount_point)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        root = str(mount_point / "repo")
        made = _cli(root, "run", "-c", "for i in $(seq 30000); do echo line $i; echo err $i >&2; done")
        assert made.returncode == 0, made.stderr
        (sid,) = [name[: -len(".session")] for name in os.listdir(os.path.join(root, "sessions"))]
        logs = os.path.join(root, "sessions", sid + ".session", "io-logs")
        os.unlink(os.path.join(logs, "c1.stdout"))
        free = os.statvfs(mount_point).f_bavail * os.statvfs(mount_point).f_frsize
        with open(mount_point / "filler", "wb") as f:  # leave less room than the rebuilt file needs
            f.write(b"\0" * max(0, free - 100_000))
        done = _cli(root, "repair", sid)
        assert done.returncode == 1, done.stderr
        assert_one_line_error(done.stderr, os.path.join(logs, "c1.stdout"), "No space left on device")
        assert not [name for name in os.listdir(logs) if name.endswith(".tmp")]
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


# -- import, arguments ------------------------------------------------------------------------


def test_import_from_a_fifo_nobody_writes_does_not_hang(tmp_path):
    fifo = tmp_path / "archive.tar.gz"
    os.mkfifo(fifo)
    done = _cli(str(tmp_path / "repo"), "import", str(fifo), timeout=20)
    assert done.returncode == 2, done.stderr
    assert_one_line_error(done.stderr, str(fifo))
    assert not os.path.exists(tmp_path / "repo" / "sessions") or not os.listdir(tmp_path / "repo" / "sessions")


def test_a_nul_character_in_an_argument_is_a_one_line_error(root, capsys):
    assert main(["--repository", root, "list", "--title", "a\0b"]) == 2
    assert_one_line_error(capsys.readouterr().err, "NUL")


# -- management commands wait for one another ------------------------------------------------


def test_ten_concurrent_tags_of_one_session_all_succeed(repo, root):
    sid = session(repo).id
    procs = [
        subprocess.Popen(
            cli_argv(None, "tag", sid, f"t{n}"),
            env=cli_env(root),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(10)
    ]
    results = [(proc.wait(timeout=60), proc.stderr.read()) for proc in procs]
    for proc in procs:
        proc.stdout.close()
        proc.stderr.close()
    assert [code for code, _err in results] == [0] * 10, results
    tags = reader.load_session(os.path.join(repo.sessions_dir, sid + ".session")).state.metadata.tags
    assert sorted(tags) == sorted(f"t{n}" for n in range(10))


def test_a_management_command_that_gives_up_names_the_real_holder(repo, root, capsys, monkeypatch):
    sid = session(repo).id
    path = os.path.join(repo.sessions_dir, sid + ".session")
    monkeypatch.setattr(manage, "MAINTENANCE_WAIT", 0.2)
    fd = acquire_lock(path, "rename")  # as a rename that takes its time would
    try:
        started = time.monotonic()
        assert run(root, "tag", sid, "x") == 2
        assert time.monotonic() - started >= 0.2  # it waited
    finally:
        os.ftruncate(fd, 0)
        os.close(fd)
    assert_one_line_error(capsys.readouterr().err, f"pid {os.getpid()}", "plainbox-like rename", "try again")


def test_a_run_holding_the_lock_is_not_waited_for(repo, root, capsys):
    sid = session(repo).id
    path = os.path.join(repo.sessions_dir, sid + ".session")
    fd = acquire_lock(path)  # as a run does
    try:
        started = time.monotonic()
        assert run(root, "tag", sid, "x") == 2
        assert time.monotonic() - started < manage.MAINTENANCE_WAIT / 2
    finally:
        os.ftruncate(fd, 0)
        os.close(fd)
    assert_one_line_error(capsys.readouterr().err, "being run by pid", "after the run ends")
