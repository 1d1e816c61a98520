"""Session summaries: status detection, counts, ordering, and never raising for a bad session."""

from __future__ import annotations

import gzip
import json
import os
import socket
import time


from plainbox_like.store import reader
from plainbox_like.store.names import JOURNAL_FILE, LOCK_FILE, STATE_FILE
from plainbox_like.read import summary
from plainbox_like.store.model import Attempt
from plainbox_like.read.summary import list_sessions, summarize
from factories import dead_pid


def finish(writer, job_id, outcome, attempt=1, **kwargs):
    writer.job_finished(job_id, Attempt(outcome, attempt=attempt, **kwargs))


def make_age(path: str, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


# -- statuses ------------------------------------------------------------------


def test_open_writer_is_running(repo):
    writer = repo.create(title="live")
    try:
        s = summarize(writer.path)
        assert s.status == "running"
        assert s.reason is None
        assert s.title == "live"
        assert s.runner_pid == os.getpid()
        assert s.runner_host == socket.gethostname()
        assert s.id == writer.id
        assert s.origin == "plainbox-like"
    finally:
        writer.close()


def test_closed_with_incomplete_flag_is_incomplete(repo):
    writer = repo.create(title="stopped")
    writer.set_plan({"a": "1", "b": "2", "c": "3"}, ["a", "b", "c"])
    finish(writer, "a", "pass")
    writer.close()
    s = summarize(writer.path)
    assert s.status == "incomplete"
    assert s.counts == {"pass": 1}
    assert s.total == 3
    assert s.done == 1
    # The last writer is still reported, from the metadata.
    assert s.runner_pid == os.getpid()


def test_complete_session(repo):
    writer = repo.create(title="all done", tags=["nightly"], parent_session="abc", app_id="com.example")
    writer.set_plan({"a": "1", "b": "2", "c": "3"}, ["a", "b", "c"])
    finish(writer, "a", "pass")
    finish(writer, "b", "fail", return_code=1)
    finish(writer, "c", "fail", return_code=2)
    finish(writer, "c", "pass", attempt=2)  # only the latest attempt counts
    writer.update_metadata(flags=[], finished=time.time())
    writer.close()
    s = summarize(writer.path)
    assert s.status == "complete"
    assert s.counts == {"pass": 2, "fail": 1}
    assert s.total == 3
    assert s.tags == ("nightly",)
    assert s.parent_session == "abc"
    assert s.app_id == "com.example"
    assert s.finished is not None and s.created <= s.updated
    assert s.running_job is None


def test_dead_writer_with_running_job_is_incomplete(repo):
    writer = repo.create(title="crashed")
    writer.set_plan({"a": "1"}, ["a"])
    writer.job_started("a", 1, None)
    writer.abandon()  # like a crash: the lock file still names a process
    with open(os.path.join(writer.path, LOCK_FILE), "w") as f:
        f.write(f"{dead_pid()} {socket.gethostname()}\n")
    s = summarize(writer.path)
    assert s.status == "incomplete"
    assert s.running_job == "a"


def test_writer_on_another_host_is_not_running(repo):
    writer = repo.create()
    writer.abandon()
    with open(os.path.join(writer.path, LOCK_FILE), "w") as f:
        f.write(f"{os.getpid()} not-{socket.gethostname()}\n")
    assert summarize(writer.path).status == "incomplete"


def test_running_job_is_reported(repo):
    writer = repo.create()
    try:
        writer.job_started("slow", 1, None)
        assert summarize(writer.path).running_job == "slow"
        finish(writer, "slow", "pass")
        assert summarize(writer.path).running_job is None
    finally:
        writer.close()


# -- corrupt and half-made sessions ----------------------------------------------


def test_bad_gzip_is_corrupt(repo):
    writer = repo.create(title="x")
    writer.close()
    with open(os.path.join(writer.path, STATE_FILE), "wb") as f:
        f.write(b"this is not gzip")
    s = summarize(writer.path)
    assert s.status == "corrupt"
    assert "not a valid gzip file" in s.reason
    assert "\n" not in s.reason
    assert s.title is None


def test_bad_json_is_corrupt(repo):
    writer = repo.create()
    writer.close()
    with open(os.path.join(writer.path, STATE_FILE), "wb") as f:
        f.write(gzip.compress(b'{"version": 1, "sess'))
    s = summarize(writer.path)
    assert s.status == "corrupt"
    assert "invalid JSON" in s.reason


def test_damaged_journal_in_the_middle_is_corrupt(repo):
    writer = repo.create()
    writer.set_plan({"a": "1"}, ["a"])
    writer.abandon()
    with open(os.path.join(writer.path, JOURNAL_FILE), "ab") as f:
        f.write(b"garbage\n")
        f.write(b'{"seq": 99, "op": "meta", "set": {}}\n')
    s = summarize(writer.path)
    assert s.status == "corrupt"
    assert "journal" in s.reason


def test_old_directory_without_state_is_corrupt(repo):
    writer = repo.create()
    writer.close()
    os.unlink(os.path.join(writer.path, STATE_FILE))
    make_age(writer.path, 60)
    s = summarize(writer.path)
    assert s.status == "corrupt"
    assert s.reason.endswith("state file is missing")


def test_young_directory_without_state_is_being_created(repo):
    os.makedirs(repo.sessions_dir)
    path = os.path.join(repo.sessions_dir, "fresh.session")
    os.mkdir(path)
    s = summarize(path)
    assert s.status == "running"
    assert s.title is None
    assert s.reason is None
    # ...until it is too old to be still in the making.
    assert summarize(path, now=time.time() + summary.CREATING_GRACE + 1).status == "corrupt"


def test_missing_directory_does_not_raise(tmp_path):
    s = summarize(str(tmp_path / "nowhere.session"))
    assert s.status == "corrupt"
    assert s.id == "nowhere"
    assert s.reason


def test_unexpected_errors_become_corrupt(repo, monkeypatch):
    writer = repo.create()
    writer.close()

    def boom(path):
        raise RuntimeError("disk on fire\nsecond line")

    monkeypatch.setattr(reader, "load_session", boom)
    s = summarize(writer.path)
    assert s.status == "corrupt"
    assert s.reason == "RuntimeError: disk on fire second line"


# -- Plainbox sessions -------------------------------------------------------------


def test_plainbox_session(tmp_path):
    path = tmp_path / "pbox"
    path.mkdir()
    doc = {
        "version": 6,
        "session": {
            "jobs": {"one": "c1", "two": "c2"},
            "results": {"one": [{"outcome": "pass", "return_code": 0}]},
            "desired_job_list": ["one", "two"],
            "metadata": {"title": "checkbox run", "flags": ["incomplete"], "running_job_name": "two"},
        },
    }
    (path / "session").write_bytes(gzip.compress(json.dumps(doc).encode()))
    s = summarize(str(path))
    assert s.origin == "plainbox"
    assert s.status == "incomplete"
    assert s.title == "checkbox run"
    assert s.counts == {"pass": 1}
    assert s.running_job == "two"


# -- listing -----------------------------------------------------------------------


def test_list_shows_corrupt_and_healthy_newest_first(repo):
    now = time.time()
    old = repo.create(title="old")
    old.update_metadata(created=now - 300)
    old.close()
    new = repo.create(title="new")
    new.update_metadata(created=now - 10, flags=[])
    new.close()
    broken = repo.create(title="broken")
    broken.close()
    with open(os.path.join(broken.path, STATE_FILE), "wb") as f:
        f.write(b"\x1f\x8b garbage")
    make_age(broken.path, 100)  # between the two by directory time

    sessions = list_sessions(repo)
    assert [s.title for s in sessions] == ["new", None, "old"]
    assert [s.status for s in sessions] == ["complete", "corrupt", "incomplete"]
    assert sessions[1].id == broken.id


def test_list_of_empty_repository(repo):
    assert list_sessions(repo) == []


def test_one_load_per_session(repo, monkeypatch):
    for n in range(3):
        repo.create(title=str(n)).close()
    calls = []
    real = reader.load_session

    def counting(path, *args, **kwargs):
        calls.append(path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(reader, "load_session", counting)
    assert len(list_sessions(repo)) == 3
    assert len(calls) == 3


def test_as_dict_is_json_ready(repo):
    writer = repo.create(title="t", tags=["a", "b"])
    writer.close()
    data = summarize(writer.path).as_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["tags"] == ["a", "b"]
    assert data["status"] == "incomplete"
