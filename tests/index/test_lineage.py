"""Lineage read from the index: the sessions started from within another session's jobs."""

from __future__ import annotations

import time

from plainbox_like.index import lineage
from plainbox_like.maintain import manage
from plainbox_like.read import summary
from plainbox_like.store.writer import SessionWriter
from plainbox_like.store.model import Attempt


def _session(repo, title, *, complete=True, created=None, **metadata):
    writer = repo.create(title=title, **metadata)
    writer.set_plan({"a": "sum-a", "b": "sum-b"}, ["a", "b"])
    writer.job_finished("a", Attempt("pass", return_code=0))
    if complete:
        writer.job_finished("b", Attempt("pass", return_code=0))
        writer.update_metadata(flags=[], finished=time.time())
    if created is not None:
        writer.update_metadata(created=created)
    writer.close()
    return writer


def test_find_children(repo):
    parent = _session(repo, "parent")
    now = time.time()
    first = _session(repo, "first", parent_session=parent.id, parent_job="j1", created=now - 10)
    second = _session(repo, "second", complete=False)
    manage.rename_session(repo, second.id, "second")  # an edit does not change the lineage
    w = SessionWriter.open(second.path)
    w.update_metadata(parent_session=parent.id, parent_job="j2")
    w.close()
    _session(repo, "unrelated", parent_session="someone-else")
    third = _session(repo, "third", created=now + 10)
    w = SessionWriter.open(third.path)
    w.update_metadata(parent_session=parent.id, parent_job="j3")
    w.abandon()  # the change is in the journal only
    children = lineage.find_children(repo.root, parent.id)
    assert [(c.id, c.title, c.status, c.parent_job) for c in children] == [
        (first.id, "first", summary.STATUS_COMPLETE, "j1"),
        (second.id, "second", summary.STATUS_INCOMPLETE, "j2"),
        (third.id, "third", summary.STATUS_COMPLETE, "j3"),
    ]
    assert lineage.find_children(repo.root, first.id) == []


def test_no_repository_has_no_children(tmp_path):
    assert lineage.find_children(str(tmp_path / "nothing"), "x") == []
