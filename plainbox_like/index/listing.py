"""What ``list`` shows from the index: the filter, and each stored row turned into a listed session.

A row stored as ``running`` or ``paused`` is checked again when read (is the
writer named in the lock file alive? is a directory without state still
young?), so a writer that died shows ``incomplete`` without waiting for a
re-read. Kept light, as every reader of the index: the state machinery is
never imported here.
"""

from __future__ import annotations

import os

from plainbox_like.index.records import _Fields, _FrozenFields, nested_document
from plainbox_like.index.stamps import Stamps
from plainbox_like.store.names import (
    STATE_FILE,
    STATUS_COMPLETE,
    STATUS_CORRUPT,
    STATUS_INCOMPLETE,
    STATUS_PAUSED,
    STATUS_RUNNING,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

#: Statuses that hold only while the writer lives: rows stored with them are checked when read.
LIVE_STATUSES = (STATUS_RUNNING, STATUS_PAUSED)

#: Columns read back to make a :class:`SessionSummary` (plus what live status needs).
_READ_COLUMNS = (
    "sid", "id", "path", "status", "reason", "title", "created", "updated", "finished", "counts",
    "total", "running_job", "runner_pid", "runner_host", "tags", "flags", "parent_session",
    "app_id", "origin", "incomplete", "state_missing", "stamps", "doc",
)  # fmt: skip


class ListFilter(_Fields):
    """What ``list`` selects. Empty fields select everything.

    ``statuses``: any of these; ``tags``: every one of these; ``since``: sessions created at or
    after this epoch time (directory mtime for sessions without one); ``title``: a
    case-insensitive substring of the title; ``parent``: the id of the parent session (or a
    unique prefix of an indexed session id); ``failed_job``: a job id (shell wildcards allowed)
    whose latest outcome is fail or crash; ``limit``; ``ids``: only these session ids (used by
    ``search``).
    """

    __slots__ = ("statuses", "tags", "since", "title", "parent", "failed_job", "limit", "ids")
    _defaults = {
        "statuses": (), "tags": (), "since": None, "title": None, "parent": None, "failed_job": None,
        "limit": None, "ids": None,
    }  # fmt: skip


class Listed(_FrozenFields):
    """One session as the index shows it, with its status checked live.

    ``summary``: a :class:`SessionSummary`, or None when listed with ``documents_only`` (and the
    status needed no correction); ``document``: the ``list --json`` element for it (indented
    JSON, as printed inside the list).
    """

    __slots__ = ("summary", "document")


def _writer_alive(path: str) -> bool:
    from plainbox_like.store import locks  # light: readers need not import the state machinery

    return locks.writer_alive(path)


def _listed(row: tuple, now: float, documents_only: bool) -> Listed:
    """A row of :data:`_READ_COLUMNS` as a :class:`Listed`, its stored ``running`` status checked live."""
    (sid, sid_text, path, status, reason, title, created, updated, finished, counts, total, running_job,
     pid, host, tags, flags, parent, app_id, origin, incomplete, state_missing, stamps, doc) = row  # fmt: skip
    del sid
    changed = False
    if status in LIVE_STATUSES and not _writer_alive(path):
        changed = True
        if state_missing:
            from plainbox_like.read import summary

            mtime = Stamps.parse(stamps).modified
            if mtime is not None and now - mtime < summary.CREATING_GRACE:
                changed = False
            else:
                missing = os.path.join(path, STATE_FILE)
                s = summary.SessionSummary(
                    id=sid_text, path=path, status=STATUS_CORRUPT, reason=f"{missing}: state file is missing"
                )
                return Listed(s, nested_document(s))
        else:
            status = STATUS_INCOMPLETE if incomplete else STATUS_COMPLETE
    if documents_only and not changed:
        return Listed(None, doc)
    import json

    from plainbox_like.read.summary import SessionSummary

    s = SessionSummary(
        id=sid_text,
        path=path,
        status=status,
        reason=reason,
        title=title,
        created=created,
        updated=updated,
        finished=finished,
        counts=json.loads(counts),
        total=total,
        running_job=running_job,
        runner_pid=pid,
        runner_host=host,
        tags=tuple(json.loads(tags)),
        flags=tuple(json.loads(flags)),
        parent_session=parent,
        app_id=app_id,
        origin=origin,
    )
    return Listed(s, nested_document(s) if changed else doc)


def json_list(documents: Sequence[str]) -> str:
    """The ``list --json`` text of these :attr:`Listed.document` elements (with the final newline)."""
    if not documents:
        return "[]\n"
    return "[\n" + ",\n".join(documents) + "\n]\n"
