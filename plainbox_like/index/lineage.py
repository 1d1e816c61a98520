"""Lineage: the sessions started from within a job of another session, read from the index."""

from __future__ import annotations

from plainbox_like.index.access import fresh_index, repository_exists
from plainbox_like.index.listing import ListFilter
from plainbox_like.index.records import _FrozenFields


class Child(_FrozenFields):
    """A session started from within a job of another session (``id``, ``path``, ``status``,
    ``title``, ``parent_job``, ``created``)."""

    __slots__ = ("id", "path", "status", "title", "parent_job", "created")
    _defaults = {"title": None, "parent_job": None, "created": None}


def find_children(root: str, session_id: str) -> list[Child]:
    """The sessions of the repository at *root* whose ``metadata.parent_session`` is *session_id*,
    oldest first.

    Read from the index (reconciled first unless a watcher keeps it fresh),
    like ``list --parent``; corrupt sessions are left out: their parent is unknown.
    """
    if not repository_exists(root):
        return []
    with fresh_index(root) as index:
        listed = index.list(ListFilter(parent=session_id))
        parent_jobs = index.parent_jobs(session_id)
    children = [
        Child(
            id=item.summary.id,
            path=item.summary.path,
            status=item.summary.status,
            title=item.summary.title,
            parent_job=parent_jobs.get(item.summary.id),
            created=item.summary.created,
        )
        for item in listed
        if item.summary is not None and item.summary.parent_session == session_id
    ]
    children.sort(key=lambda c: (c.created if c.created is not None else 0.0, c.id))
    return children
