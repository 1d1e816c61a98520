"""Session maintenance as a library: delete, edit, gc, cleanup, lineage (``plainbox_like.maintain.manage``)."""

from __future__ import annotations

import fcntl
import functools
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from plainbox_like.run import prepare, settle
from plainbox_like.store import codec, locks, reader
from plainbox_like.store.writer import SessionWriter
from plainbox_like.errors import SessionLocked
from plainbox_like.store.names import BACKUP_FILE, JOURNAL_FILE, LOCK_FILE, STATE_FILE
from plainbox_like.maintain import manage
from plainbox_like.read import summary
from plainbox_like.store.model import FLAG_INCOMPLETE
from plainbox_like.store.repository import SessionRepository
from factories import dead_pid, real_checkbox_session, wait_until, written_session

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DAY = 86400.0
#: The pid recorded as the runner of the sessions made here (no such process needs to exist).
FAKE_RUNNER_PID = 999999


#: A closed, complete session with one passed job and a log, recorded as run by another process.
complete_session = functools.partial(
    written_session, outcomes={"a": "pass"}, output=b"x" * 5000, duration=0.1,
    runner={"pid": FAKE_RUNNER_PID, "host": socket.gethostname()},
)  # fmt: skip
#: A closed session whose run stopped after job a of a and b.
incomplete_session = functools.partial(written_session, title="stopped", plan=("a", "b"), outcomes={"a": "pass"}, complete=False)


def snapshot_state(path, name=STATE_FILE):
    with open(os.path.join(path, name), "rb") as f:
        return codec.decode_state(f.read(), name).state


def process_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            state = next((line for line in f if line.startswith("State:")), "")
    except OSError:
        return True
    return "Z" in state.split(":", 1)[1][:3]  # a zombie waiting for its reaper has stopped


# -- durations and sizes -------------------------------------------------------------


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("30d", 30 * DAY),
        ("12h", 12 * 3600),
        ("90m", 5400),
        ("3600s", 3600),
        ("2w", 14 * DAY),
        (" 1.5H ", 5400),
        ("0s", 0),
    ],
)
def test_parse_duration(text, seconds):
    assert manage.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "30", "d", "5x", "-3d", "1d12h", "3 days", "1e3s"])
def test_parse_duration_rejects(text):
    with pytest.raises(manage.BadDuration, match="bad duration"):
        manage.parse_duration(text)


def test_human_size():
    assert manage.human_size(0) == "0 B"
    assert manage.human_size(1023) == "1023 B"
    assert manage.human_size(1536) == "1.5 KiB"
    assert manage.human_size(5 * 1024**3) == "5.0 GiB"


def test_tree_size_counts_files_without_following_links(tmp_path):
    (tmp_path / "a").write_bytes(b"x" * 100)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b").write_bytes(b"y" * 23)
    big = tmp_path.parent / "big-outside"
    big.write_bytes(b"z" * 100000)
    os.symlink(big, tmp_path / "link")
    assert manage.tree_size(str(tmp_path)) == 123 + os.lstat(tmp_path / "link").st_size


# -- delete ------------------------------------------------------------------------


def test_delete_removes_the_directory_and_reports_its_size(repo):
    writer = complete_session(repo)
    size = manage.tree_size(writer.path)
    [deleted] = manage.delete_sessions(repo, [writer.id[:5]])
    assert deleted.id == writer.id
    assert deleted.size == size > 5000
    assert deleted.title == "done"
    assert deleted.status == summary.STATUS_COMPLETE
    assert deleted.runner_left is None
    assert not os.path.exists(writer.path)
    assert os.listdir(repo.sessions_dir) == []


def test_delete_a_corrupt_session(repo):
    writer = complete_session(repo)
    with open(os.path.join(writer.path, STATE_FILE), "wb") as f:
        f.write(b"garbage")
    [deleted] = manage.delete_sessions(repo, [writer.id])
    assert deleted.status == summary.STATUS_CORRUPT
    assert repo.session_paths() == []


def test_interrupted_deletion_leaves_no_visible_session(repo, monkeypatch):
    kept = complete_session(repo, title="kept")
    victim = complete_session(repo, title="victim")

    def crash_midway(path, *args, **kwargs):
        # Remove part of the files, then fail, as a crash or an I/O error would.
        os.unlink(os.path.join(path, STATE_FILE))
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(manage.shutil, "rmtree", crash_midway)
    with pytest.raises(manage.DeletionIncomplete, match="which gc removes") as info:
        manage.delete_sessions(repo, [victim.id])
    assert victim.id in str(info.value)
    # Nothing that looks like a session is left: not to the repository, the summaries, or the ids.
    assert repo.session_paths() == [kept.path]
    assert [s.id for s in summary.list_sessions(repo)] == [kept.id]
    with pytest.raises(Exception, match="no session matches"):
        repo.resolve(victim.id)
    [leftover] = [n for n in os.listdir(repo.sessions_dir) if n.startswith(".")]
    assert leftover.startswith(manage.DELETING_PREFIX + victim.id)
    # gc removes the leftover, whatever its age.
    monkeypatch.undo()
    report = manage.gc(repo, "30d")
    assert [(i.id, i.leftover) for i in report.removed] == [(victim.id, True)]
    assert sorted(os.listdir(repo.sessions_dir)) == [os.path.basename(kept.path)]


def test_rename_happens_before_removal(repo, monkeypatch):
    """The directory is hidden (and that made durable) before any file is removed."""
    writer = complete_session(repo)
    seen = []

    def spy_rmtree(path, *args, **kwargs):
        seen.append((path, os.path.exists(writer.path), sorted(os.listdir(path))))
        return real_rmtree(path, *args, **kwargs)

    real_rmtree = shutil.rmtree
    monkeypatch.setattr(manage.shutil, "rmtree", spy_rmtree)
    manage.delete_sessions(repo, [writer.id])
    [(path, original_still_there, contents)] = seen
    assert os.path.basename(path).startswith(manage.DELETING_PREFIX)
    assert os.path.dirname(path) == repo.sessions_dir
    assert not original_still_there
    assert STATE_FILE in contents


def test_delete_refuses_a_live_session(repo, running_session):
    writer = running_session  # open in this process: a live runner
    idle = complete_session(repo)
    with pytest.raises(manage.SessionBusy) as info:
        manage.delete_sessions(repo, [idle.id, writer.id])
    message = str(info.value)
    assert f"pid {os.getpid()} on host {socket.gethostname()}" in message
    assert "--force" in message
    # All or nothing: the idle session given first was not deleted either.
    assert os.path.isdir(idle.path) and os.path.isdir(writer.path)
    [deleted] = manage.delete_sessions(repo, [writer.id], force=True)
    assert deleted.runner_left == (os.getpid(), socket.gethostname())
    assert not os.path.exists(writer.path)


def test_delete_refuses_a_session_outside_the_repository(repo, tmp_path):
    other = SessionRepository(str(tmp_path / "other"))
    writer = complete_session(other)
    with pytest.raises(manage.NotInRepository, match="not a session of the repository"):
        manage.delete_sessions(repo, [writer.path])
    assert os.path.isdir(writer.path)


def test_delete_unknown_session_deletes_nothing(repo):
    writer = complete_session(repo)
    with pytest.raises(Exception, match="no session matches 'nosuch'"):
        manage.delete_sessions(repo, [writer.id, "nosuch"])
    assert os.path.isdir(writer.path)


def test_delete_holds_the_lock_against_writers(repo, monkeypatch):
    """While a session is being deleted, nobody can open it for writing."""
    writer = complete_session(repo)
    outcome = []

    def try_open_then_remove(path, *args, **kwargs):
        try:
            SessionWriter.open(path)
        except SessionLocked as exc:
            outcome.append(exc.pid)
        return real_rmtree(path, *args, **kwargs)

    real_rmtree = shutil.rmtree
    monkeypatch.setattr(manage.shutil, "rmtree", try_open_then_remove)
    manage.delete_sessions(repo, [writer.id])
    assert outcome == [os.getpid()]


# -- edits -------------------------------------------------------------------------


def test_rename_keeps_status_flags_runner_and_a_backup(repo):
    writer = complete_session(repo, title="before")
    before = reader.load_session(writer.path).state
    edit = manage.rename_session(repo, writer.id, "after")
    assert edit.changed and edit.title_before == "before" and edit.title == "after"
    loaded = reader.load_session(writer.path)
    meta = loaded.state.metadata
    assert meta.title == "after"
    assert meta.flags == before.metadata.flags == []
    assert meta.finished == before.metadata.finished
    assert meta.runner == before.metadata.runner  # the process that ran the jobs, not the editor
    assert loaded.state.results == before.results
    assert summary.summarize(writer.path).status == summary.STATUS_COMPLETE
    assert not locks.writer_alive(writer.path)
    assert locks.lock_holder(writer.path) is None  # lock file emptied
    # The edit went through the journal (three changes: runner, title, runner back) and a new snapshot.
    assert loaded.state.journal_seq == before.journal_seq + 3
    with open(os.path.join(writer.path, JOURNAL_FILE), "rb") as f:
        assert f.read() == b""
    # session.bak holds the state before the edit.
    backup = snapshot_state(writer.path, BACKUP_FILE)
    assert backup.metadata.title == "before"
    assert backup.results == before.results


def test_an_edit_is_durable_in_the_journal_before_the_snapshot(repo):
    """A crash after the change but before the final snapshot keeps the change (journal replay)."""
    writer = complete_session(repo, title="before")
    editor, _runner = manage.open_for_maintenance(writer.path)
    editor.update_metadata(title="after")
    editor.abandon()  # dies here: no final snapshot
    assert snapshot_state(writer.path).metadata.title == "before"
    assert reader.load_session(writer.path).state.metadata.title == "after"


def test_rename_to_empty_removes_the_title(repo):
    writer = complete_session(repo, title="before")
    assert manage.rename_session(repo, writer.id, "").title is None
    assert reader.load_session(writer.path).state.metadata.title is None


def test_rename_unchanged(repo):
    writer = complete_session(repo, title="same")
    edit = manage.rename_session(repo, writer.id, "same")
    assert not edit.changed
    assert summary.summarize(writer.path).status == summary.STATUS_COMPLETE


def test_rename_incomplete_session_stays_incomplete(repo):
    writer = incomplete_session(repo)
    manage.rename_session(repo, writer.id, "renamed")
    s = summary.summarize(writer.path)
    assert (s.status, s.title, s.flags) == (summary.STATUS_INCOMPLETE, "renamed", (FLAG_INCOMPLETE,))


def test_tag_and_untag(repo):
    writer = complete_session(repo, tags=["nightly"])
    edit = manage.tag_session(repo, writer.id, ["x86", "nightly", "gpu", "x86"])
    assert edit.tags_before == ("nightly",)
    assert edit.tags == ("nightly", "x86", "gpu")
    assert edit.unchanged_tags == ("nightly",)
    edit = manage.tag_session(repo, writer.id, ["gpu"])
    assert not edit.changed and edit.unchanged_tags == ("gpu",)
    edit = manage.untag_session(repo, writer.id, ["nightly", "absent", "gpu"])
    assert edit.changed
    assert edit.tags == ("x86",)
    assert edit.unchanged_tags == ("absent",)
    assert reader.load_session(writer.path).state.metadata.tags == ["x86"]
    edit = manage.untag_session(repo, writer.id, ["absent"])
    assert not edit.changed and edit.unchanged_tags == ("absent",)


@pytest.mark.parametrize("tag", ["", "two words", "a,b", "tab\there", "new\nline"])
def test_bad_tags_are_refused(repo, tag):
    writer = complete_session(repo)
    with pytest.raises(manage.BadTag, match="bad tag"):
        manage.tag_session(repo, writer.id, [tag])
    assert reader.load_session(writer.path).state.metadata.tags == []


def test_edit_of_a_live_session_names_the_runner(repo, running_session):
    writer = running_session
    for edit in (
        lambda: manage.rename_session(repo, writer.id, "x"),
        lambda: manage.tag_session(repo, writer.id, ["x"]),
        lambda: manage.untag_session(repo, writer.id, ["x"]),
    ):
        with pytest.raises(manage.SessionBusy) as info:
            edit()
        message = str(info.value)
        assert f"pid {os.getpid()} on host {socket.gethostname()}" in message
        assert "after the run ends" in message
    assert writer.state.metadata.title == "live"
    writer.close()
    assert reader.load_session(writer.path).state.metadata.title == "live"


def test_edit_of_a_plainbox_session_is_refused(repo, tmp_path):
    path = real_checkbox_session(str(tmp_path / "checkbox"))
    before = sorted(os.listdir(path))
    with pytest.raises(manage.ReadOnlySession, match="Plainbox/Checkbox"):
        manage.rename_session(repo, path, "x")
    with pytest.raises(manage.ReadOnlySession):
        manage.tag_session(repo, path, ["x"])
    assert sorted(os.listdir(path)) == before  # not even a lock file


def test_edit_of_a_session_locked_on_another_host_is_refused(repo):
    writer = complete_session(repo)
    with open(os.path.join(writer.path, LOCK_FILE), "w") as f:
        f.write("4242 some-other-host\n")
    with pytest.raises(manage.SessionBusy, match="pid 4242 on host some-other-host"):
        manage.rename_session(repo, writer.id, "x")


def test_a_command_that_is_letting_go_of_the_lock_is_waited_for(repo):
    """A command that ends empties the lock file before it lets go, while its process still lives: a command
    that read its pid just before must wait for the lock, not take it for a run's (ten queued tags lost one)."""
    path = complete_session(repo).path
    holding = SessionWriter.open(path, command="tag")  # this process holds it, as the ending command did
    try:
        holder = locks.lock_holder(path)
        assert holder is not None and manage._may_soon_be_free(path, holder)  # a command: worth waiting for
        os.truncate(os.path.join(path, LOCK_FILE), 0)  # it ends: the file emptied, the lock not yet released
        assert manage._may_soon_be_free(path, holder)
        with open(os.path.join(path, LOCK_FILE), "w") as f:  # whereas a run that holds it is not waited for
            f.write(f"{holder[0]} {holder[1]}\n")
        assert not manage._may_soon_be_free(path, holder)
    finally:
        holding.close()


# -- gc ----------------------------------------------------------------------------


def test_gc_selects_by_age(repo):
    now = time.time()
    old = complete_session(repo, title="old", created=now - 40 * DAY)
    young = complete_session(repo, title="young", created=now - 5 * DAY)
    old_incomplete = incomplete_session(repo, title="old incomplete", created=now - 60 * DAY)
    sizes = {w.id: manage.tree_size(w.path) for w in (old, old_incomplete)}
    report = manage.gc(repo, "30d", now=now)
    assert sorted(i.id for i in report.removed) == sorted([old.id, old_incomplete.id])
    assert report.freed == sum(sizes.values())
    assert {i.id: i.size for i in report.removed} == sizes
    assert repo.session_paths() == [young.path]
    # With a fake clock far ahead, the young one is old too.
    report = manage.gc(repo, "1w", now=now + 2 * DAY - 1)
    assert report.removed == []
    report = manage.gc(repo, "1w", now=now + 2 * DAY + 1)
    assert [i.id for i in report.removed] == [young.id]


def test_gc_default_age_is_30_days(repo):
    now = time.time()
    complete_session(repo, created=now - 29 * DAY)
    complete_session(repo, created=now - 31 * DAY)
    report = manage.gc(repo, now=now)
    assert len(report.removed) == 1 and report.older_than == 30 * DAY


def test_gc_keep_incomplete(repo):
    now = time.time()
    old = complete_session(repo, created=now - 40 * DAY)
    stopped = incomplete_session(repo, created=now - 40 * DAY)
    report = manage.gc(repo, "30d", keep_incomplete=True, now=now)
    assert [i.id for i in report.removed] == [old.id]
    assert [(i.id, i.reason) for i in report.kept] == [(stopped.id, "incomplete (--keep-incomplete)")]
    assert repo.session_paths() == [stopped.path]


def test_gc_dry_run_removes_nothing(repo):
    now = time.time()
    old = complete_session(repo, created=now - 40 * DAY)
    report = manage.gc(repo, "30d", dry_run=True, now=now)
    assert [i.id for i in report.removed] == [old.id]
    assert report.freed == manage.tree_size(old.path) > 0
    assert report.dry_run
    assert repo.session_paths() == [old.path]


def test_gc_never_removes_a_live_session(repo):
    now = time.time()
    live = repo.create(title="live")
    try:
        live.update_metadata(created=now - 400 * DAY)
        report = manage.gc(repo, "1d", now=now)
        assert report.removed == []
        [kept] = report.kept
        assert kept.id == live.id and f"pid {os.getpid()}" in kept.reason
        assert os.path.isdir(live.path)
    finally:
        live.close()


def test_gc_keeps_a_session_locked_on_another_host(repo):
    now = time.time()
    writer = complete_session(repo, created=now - 40 * DAY)
    with open(os.path.join(writer.path, LOCK_FILE), "w") as f:
        f.write("4242 some-other-host\n")
    report = manage.gc(repo, "30d", now=now)
    assert report.removed == [] and "some-other-host" in report.kept[0].reason


def test_gc_ages_corrupt_sessions_by_directory_mtime(repo):
    now = time.time()
    old = complete_session(repo, created=now)  # claims to be new, but cannot be read
    with open(os.path.join(old.path, STATE_FILE), "wb") as f:
        f.write(b"not gzip")
    os.utime(old.path, (now - 50 * DAY, now - 50 * DAY))
    recent = complete_session(repo, created=now - 90 * DAY)  # readable: its own created counts
    with open(os.path.join(recent.path, STATE_FILE), "wb") as f:
        f.write(b"not gzip either")
    report = manage.gc(repo, "30d", now=now)
    assert [(i.id, i.status) for i in report.removed] == [(old.id, summary.STATUS_CORRUPT)]
    assert repo.session_paths() == [recent.path]


def test_gc_skips_a_session_being_created(repo):
    os.makedirs(repo.sessions_dir)
    fresh = os.path.join(repo.sessions_dir, "fresh.session")
    os.mkdir(fresh)
    report = manage.gc(repo, "0s", now=time.time() + DAY)
    assert report.removed == [] and report.kept[0].reason == "session fresh is being created"


def test_gc_removes_leftovers_of_interrupted_imports_but_not_running_ones(repo):
    os.makedirs(repo.sessions_dir, exist_ok=True)
    now = time.time()

    def staging(name, age, locked=False):
        path = os.path.join(repo.sessions_dir, ".importing-" + name)
        os.mkdir(path)
        with open(os.path.join(path, "lock"), "w"):
            pass
        os.utime(path, (now - age, now - age))
        if locked:  # as import_archive holds it while it runs
            fd = os.open(os.path.join(path, "lock"), os.O_RDWR)
            fcntl.flock(fd, fcntl.LOCK_EX)
            return fd
        return None

    staging("dead", age=3600)
    held = staging("running", age=3600, locked=True)
    staging("fresh", age=1)  # may not be locked yet
    try:
        report = manage.gc(repo, "30d", now=now)
    finally:
        os.close(held)
    assert [(i.id, i.status, i.leftover) for i in report.removed] == [(".importing-dead", "importing", True)]
    assert sorted(n for n in os.listdir(repo.sessions_dir)) == [".importing-fresh", ".importing-running"]


def test_gc_rejects_bad_durations(repo):
    with pytest.raises(manage.BadDuration):
        manage.gc(repo, "soon")


# -- cleanup -----------------------------------------------------------------------

# Opens a session like a runner, starts a job (with a process that outlives the
# runner, in its own process group and with the job's environment), then waits.
KILLED_RUNNER = r"""
import os, subprocess, sys, time
from plainbox_like.run import batch, prepare
from plainbox_like.store.runconfig import RunConfig
from plainbox_like.store.repository import SessionRepository

repo = SessionRepository(sys.argv[1])
config = RunConfig(commands=["sleep 1000", "true"])
units = prepare.load_run_units(config)
writer = repo.create(title="killed", app_id=batch.APP_ID, app_blob=config.to_blob())
writer.set_plan({job.id: job.checksum for job in units.jobs}, ["c1", "c2"])
log, name = writer.new_log("c1", 1)
writer.job_started("c1", 1, name)
env = dict(os.environ, PLAINBOX_LIKE_SESSION=writer.id, PLAINBOX_LIKE_JOB="c1")
job = subprocess.Popen(["sleep", "1000"], env=env, start_new_session=True)
print(writer.id, job.pid, flush=True)
time.sleep(1000)
"""


def killed_runner(repo):
    """A session whose runner was SIGKILLed while job c1 ran; returns (session id, job pid, runner pid)."""
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_RUNNER, repo.root], stdout=subprocess.PIPE, env=env
    )
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready, "the runner did not start"
        sid, job_pid = proc.stdout.readline().split()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    return sid.decode(), int(job_pid), proc.pid


def test_cleanup_settles_a_session_whose_runner_was_killed(repo):
    done = complete_session(repo)
    done_state = reader.load_session(done.path).state
    sid, job_pid, runner_pid = killed_runner(repo)
    path = repo.resolve(sid)
    try:
        assert not locks.writer_alive(path)
        assert locks.lock_holder(path)[0] == runner_pid
        assert summary.summarize(path).running_job == "c1"

        report = manage.cleanup(repo)

        [cleaned] = report.cleaned
        assert cleaned.id == sid and cleaned.title == "killed"
        assert cleaned.jobs == (("c1", "crash"),)
        assert cleaned.stale_lock == (runner_pid, socket.gethostname())
        assert any("killing the leftover processes of job c1" in note for note in cleaned.notes)
        wait_until(lambda: process_gone(job_pid), timeout=10, what=f"the job's process {job_pid} to end")
        state = reader.load_session(path).state
        assert state.running_jobs == {}
        assert state.metadata.running_job_name is None
        assert FLAG_INCOMPLETE in state.metadata.flags
        assert state.metadata.runner.pid == runner_pid  # still names the runner that died
        [attempt] = state.results["c1"]
        assert attempt.outcome == "crash"
        assert attempt.comments == settle.STOPPED_WHILE_RUNNING
        assert attempt.io_log_filename and attempt.started
        assert locks.lock_holder(path) is None
        assert summary.summarize(path).status == summary.STATUS_INCOMPLETE
        # The complete session was not touched.
        assert reader.load_session(done.path).state == done_state
        # Nothing more to do the second time.
        assert manage.cleanup(repo).cleaned == []
        # Ready for resume: c1 keeps its crash, c2 is left to run.
        prepared = prepare.resume_session(repo, sid)
        try:
            assert prepared.finished == {"c1": "crash"}
        finally:
            prepared.writer.close()
    finally:
        try:
            os.kill(job_pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_cleanup_dry_run_changes_nothing(repo):
    writer = repo.create(title="dead")
    writer.set_plan({"a": "x"}, ["a"])
    writer.job_started("a", 1, None)
    writer.abandon()  # the runner "died": lock released, pid still in the lock file
    with open(os.path.join(writer.path, LOCK_FILE), "w") as f:
        f.write(f"{dead_pid()} {socket.gethostname()}\n")
    before = sorted(os.listdir(writer.path)), reader.load_session(writer.path).state
    report = manage.cleanup(repo, dry_run=True)
    [item] = report.cleaned
    assert item.jobs == (("a", "crash"),)
    assert any("could not be loaded" in note for note in item.notes)  # no app_blob: no definitions
    assert (sorted(os.listdir(writer.path)), reader.load_session(writer.path).state) == before


def test_cleanup_leaves_a_live_session_alone(repo, running_session):
    writer = running_session  # job a is running
    assert manage.cleanup(repo).cleaned == []
    assert list(reader.load_session(writer.path).state.running_jobs) == ["a"]
    with pytest.raises(manage.SessionBusy):
        manage.cleanup_session(writer.path)


def test_cleanup_of_a_finished_session_with_a_stale_lock_keeps_it_complete(repo):
    writer = complete_session(repo)
    pid = dead_pid()
    with open(os.path.join(writer.path, LOCK_FILE), "w") as f:
        f.write(f"{pid} {socket.gethostname()}\n")
    [item] = manage.cleanup(repo).cleaned
    assert item.jobs == () and not item.flagged and item.stale_lock == (pid, socket.gethostname())
    assert summary.summarize(writer.path).status == summary.STATUS_COMPLETE
    assert locks.lock_holder(writer.path) is None


def test_cleanup_sets_the_incomplete_flag(repo):
    writer = repo.create(title="odd")
    writer.set_plan({"a": "x"}, ["a"])
    writer.job_started("a", 1, None)
    writer.update_metadata(flags=[], finished=time.time())  # marked complete with a job still running
    writer.abandon()
    [item] = manage.cleanup(repo).cleaned
    assert item.flagged
    meta = reader.load_session(writer.path).state.metadata
    assert meta.flags == [FLAG_INCOMPLETE] and meta.finished is None


def test_cleanup_skips_plainbox_and_foreign_sessions(repo):
    real_checkbox_session(os.path.join(repo.sessions_dir, "pb.session"))
    foreign = repo.create(title="elsewhere")
    foreign.job_started("a", 1, None)
    foreign.abandon()
    with open(os.path.join(foreign.path, LOCK_FILE), "w") as f:
        f.write("4242 some-other-host\n")
    report = manage.cleanup(repo)
    assert report.cleaned == []
    assert [sid for sid, _ in report.skipped] == [foreign.id]
    assert "some-other-host" in report.skipped[0][1]
