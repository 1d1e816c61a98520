"""Lineage read from the index: the sessions started from within another session's jobs."""

from __future__ import annotations

import functools
import time

from plainbox_like.store.writer import SessionWriter
from plainbox_like.index import lineage
from plainbox_like.maintain import manage
from plainbox_like.read import summary
from factories import written_session


#: The sessions of a lineage: jobs a and b planned, both passed.
session = functools.partial(written_session, plan=("a", "b"), outcomes={"a": "pass", "b": "pass"})


def test_find_children(repo):
    parent = session(repo, "parent")
    now = time.time()
    first = session(repo, "first", parent_session=parent.id, parent_job="j1", created=now - 10)
    second = session(repo, "second", outcomes={"a": "pass"}, complete=False)
    manage.rename_session(repo, second.id, "second")  # an edit does not change the lineage
    w = SessionWriter.open(second.path)
    w.update_metadata(parent_session=parent.id, parent_job="j2")
    w.close()
    session(repo, "unrelated", parent_session="someone-else")
    third = session(repo, "third", created=now + 10)
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
