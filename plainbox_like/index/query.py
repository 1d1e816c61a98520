"""The SQLite index of every session: derived data, kept fresh by stat-only reconciles and the watcher.

``index.sqlite3`` lives beside ``sessions/`` in the repository root. It holds,
per session, what ``list`` shows (with the ``list --json`` document rendered
at index time), the stamps ``(mtime_ns, size, inode, ctime_ns)`` of the directory, its
``session`` and its ``journal`` files as they were when the session was read,
one row per job, and an FTS5 (trigram) table over session titles and the job
ids, summaries and commands the sessions ran.

Everything in it can be rebuilt from the session directories:

* a missing index is built silently (that is the first use);
* a corrupt index, or one with an older schema that no migration in
  :data:`MIGRATIONS` upgrades, is rebuilt with a one-line notice;
* an index made by a newer program is left alone: readers fall back to a
  temporary in-memory index (with a notice), ``index --rebuild`` replaces it.

Concurrency: WAL mode, a busy timeout, and every write transaction starts with
``BEGIN IMMEDIATE``, so there is one writer at a time and readers never wait.
Sessions are read outside write transactions, with :func:`reader.load_session`
(snapshot + journal, read-only, retried when a writer replaces the snapshot);
bulk reads (a rebuild, hundreds of new sessions) decode the snapshot directly
when it is a plain current-version one with nothing to replay, and fall back
to :func:`reader.load_session` for anything else (the result is the same).

A session's *status* is stored as it was when the session was read; rows
stored as ``running`` or ``paused`` are checked again when read (is the writer
named in the lock file alive? is a directory without state still young?), so
a writer that died shows ``incomplete`` without waiting for a re-read (and
the next reconcile re-reads it).

Two reconciles compare the directories with the index, stat only:

* the *full* one (the watcher's, ``index``, ``watch --once``) compares the
  stamps of every session's directory, ``session`` and ``journal``;
* the *quick* one (``list`` and ``search`` without a watcher) does the same
  except for *settled* sessions, whose directory alone is stat'ed. A session
  is settled when, as it was read, it was complete or incomplete, ours, with
  no writer (the lock file names none, or a dead one on this host), and its
  directory had not changed for :data:`stamps.RACY_SECONDS`. Nothing then changes
  such a session without changing its directory: every writer takes the lock
  and writes a new snapshot (a rename in the directory) before it journals
  anything, and so do ``repair`` and the maintenance commands, which go
  through the same writer. A session whose directory had changed just before
  it was read is checked in full until a later check, after that window,
  finds it unchanged (modification times have a granularity; a change within
  the same tick as the last one would otherwise go unnoticed). What the quick
  reconcile does not see is a process other than a session writer editing the
  files of a finished session in place; the watcher (file events) and the
  full reconcile do.

The index is split by concern: :mod:`.schema` (the file: connection, schema,
migrations, a corrupt file replaced, transactions), :mod:`.stamps` (stat only),
:mod:`.records` (what a session contributes), :mod:`.fastread` (reading
sessions, directly or through the store's reader, many at once), :mod:`.reconcile`
(comparing and writing), :mod:`.listing` (what ``list`` shows of a row),
:mod:`.access` (how a reader gets a fresh index), :mod:`.lineage` (child
sessions); this module keeps :class:`SessionIndex` and its queries, and the
public names of the first five.
"""

from __future__ import annotations

import collections
import os
import sqlite3
import time

from plainbox_like.errors import PlainboxLikeError
from plainbox_like.store.paths import SESSION_SUFFIX, session_id_of  # noqa: F401 (public here too)

# Reading the index must start fast (``list`` is a short-lived process): the
# modules that decode sessions (the reader, codec, cattrs, the attrs model), and
# even typing, json, hashlib, datetime and dataclasses, are imported only where
# they are needed. The names of the on-disk contract come from store.names,
# which imports nothing.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence
    from typing import Any

    from plainbox_like.read.summary import SessionSummary

from plainbox_like.store.names import (  # noqa: F401 (public here too); names imports nothing
    FAILED_OUTCOMES,
    FLAG_INCOMPLETE,
    FLAG_PAUSED,
    FORMAT,
    JOURNAL_FILE,
    STATE_FILE,
    STATUS_COMPLETE,
    STATUS_CORRUPT,
    STATUS_INCOMPLETE,
    STATUS_PAUSED,
    STATUS_RUNNING,
    STATUSES,
    TIME_FIELDS,
)
#: The watcher records this in ``info`` at every reconcile.
HEARTBEAT_KEY = "watcher"


class IndexUnusable(PlainboxLikeError):
    """The index file cannot be used (newer schema, read-only, ...); the message says why."""


# The parts of the index, one module per concern; their public names stay importable from here.
from plainbox_like.index.reconcile import (  # noqa: E402, F401
    SPLIT_SCAN,
    JobTexts,
    ReconcileStats,
    _Reconciler,
    _scan_settled_here,
    _scan_settled_split,
)
from plainbox_like.index.schema import (  # noqa: E402, F401
    BULK_INDEXES,
    BUSY_TIMEOUT,
    INDEX_FILE,
    MIGRATIONS,
    PAGE_SIZE,
    REPLACE_LOCK_FILE,
    SCHEMA,
    SCHEMA_VERSION,
    SIDE_FILE_SUFFIXES,
    Database,
    check_side_files,
    guarded,
    refuse_symlinked_index,
)
from plainbox_like.index.fastread import (  # noqa: E402, F401
    POOL_THRESHOLD,
    default_workers,
    read_session,
    read_sessions,
    reading_sessions,
)
from plainbox_like.index.records import (  # noqa: E402, F401
    _COL,
    SESSION_COLUMNS,
    DefinitionCache,
    SessionRecord,
    _dumps,
    _Fields,
    _FrozenFields,
    _json_counts,
    _json_strings,
    make_record,
    nested_document,
    render_document,
    stable_id,
    summary_document,
    text_identity,
)
from plainbox_like.index.stamps import (  # noqa: E402, F401
    SETTLED,
    SETTLING,
    UNSETTLED,
    _stamp,
    Stamps,
    Stat,
    file_stamp,
    scan_ids,
    scan_sessions,
    session_stamps,
)
from plainbox_like.index.listing import (  # noqa: E402
    LIVE_STATUSES,
    _READ_COLUMNS,
    ListFilter,
    Listed,
    _listed,
    json_list,
)


# -- filters and results -------------------------------------------------------------------




class JobMatch(_FrozenFields):
    """A job of a session that matched a search."""

    __slots__ = ("id", "outcome", "attempt", "return_code", "duration", "running", "summary", "command")

    def as_dict(self) -> dict[str, Any]:
        return dict(zip(self.__slots__, self._values()))


class SearchHit(_FrozenFields):
    """A session that matched a search: whether its title matched, and which of its jobs did."""

    __slots__ = ("listed", "title_matched", "jobs")


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# -- the index -------------------------------------------------------------------------------


class SessionIndex:
    """``index.sqlite3`` of one repository root.

    Open it with :meth:`open`; readers call :meth:`reconcile` first unless a
    watcher keeps it fresh (:func:`fresh_index` does both), then
    :meth:`list` / :meth:`list_json` / :meth:`search`. Writers: :meth:`reconcile`,
    :meth:`refresh`, :meth:`rebuild`.
    """

    def __init__(
        self,
        root: str,
        *,
        notice: Callable[[str], None] | None = None,
        memory: bool = False,
        busy_timeout: float = BUSY_TIMEOUT,
        workers: int | None = None,
        replace_newer: bool = False,
    ) -> None:
        self.root = os.path.abspath(root)
        self.sessions_dir = os.path.join(self.root, "sessions")
        self.workers = workers
        self.definitions = DefinitionCache()
        #: The ids of the job texts the index holds (forgotten whenever another writer may have changed them).
        self.texts = JobTexts()
        self.db = Database(
            self.root,
            ":memory:" if memory else os.path.join(self.root, INDEX_FILE),
            memory=memory,
            notice=notice or (lambda _msg: None),
            busy_timeout=busy_timeout,
            replace_newer=replace_newer,
            on_reset=self.texts.forget,
            refill=lambda: _Reconciler(self).refill(),
        )
        #: Sessions read from disk by this object (for tests and benchmarks).
        self.sessions_read = 0

    @property
    def conn(self) -> sqlite3.Connection | None:
        return self.db.conn

    @property
    def path(self) -> str:
        return self.db.path

    @property
    def memory(self) -> bool:
        return self.db.memory

    @property
    def notice(self) -> Callable[[str], None]:
        return self.db.notice

    @property
    def created(self) -> bool:
        """Whether opening found no index file (or a replaced one) and created it."""
        return self.db.created

    # -- opening

    @classmethod
    def open(cls, root: str, **kwargs: Any) -> "SessionIndex":
        """Open (creating, migrating or rebuilding as needed) the index of *root*."""
        index = cls(root, **kwargs)
        index.db.open()
        return index

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "SessionIndex":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing (each a :class:`reconcile._Reconciler` run)

    def rebuild(self) -> ReconcileStats:
        """Recreate the index from the session directories, in one transaction (readers see the old one until then)."""
        started = time.perf_counter()
        self.db.reopen_if_replaced()
        stats = self._rebuild()
        stats.seconds = time.perf_counter() - started
        return stats

    @guarded
    def _rebuild(self) -> ReconcileStats:
        run = _Reconciler(self)
        with self.db.bulk(durable=False), self.db.write():
            run.refill()
        return run.stats

    def stored_stamps(self) -> dict[str, tuple[int, str]]:
        """id -> (sid, stamps) of every indexed session."""
        assert self.conn is not None
        return {row[0]: (row[1], row[2]) for row in self.conn.execute("SELECT id, sid, stamps FROM sessions")}

    def reconcile(self, full: bool = False) -> ReconcileStats:
        """Stat-only comparison of every session directory with the index; re-read only what differs.

        New and changed sessions are read and upserted, vanished ones removed;
        so are sessions stored as running whose writer has gone. Unless *full*,
        settled sessions (see the module's description) are checked by their
        directory's stamp alone.
        """
        started = time.perf_counter()
        self.db.reopen_if_replaced()
        stats = self._reconcile(full)
        stats.seconds = time.perf_counter() - started
        return stats

    @guarded
    def _reconcile(self, full: bool) -> ReconcileStats:
        run = _Reconciler(self)
        now = time.time()
        changed, gone, settling, count, empty = run.compare(full, now)
        run.stats.sessions = count
        stale = self._stale_live(now, set(changed))
        if changed or gone or stale:
            run.apply(changed + stale, gone, full=empty, force=set(stale))
        if settling:
            run.settle(settling)
        return run.stats

    def _stale_live(self, now: float, skip: set[str]) -> list[str]:
        """Paths of sessions stored as running or paused that would not show so now (the writer has gone)."""
        assert self.conn is not None
        stale = []
        for row in self.conn.execute(
            f"SELECT {', '.join(_READ_COLUMNS)} FROM sessions WHERE status IN ('running', 'paused')"
        ).fetchall():
            path = row[2]
            if path in skip:
                continue
            listed = _listed(row, now, True)
            if listed.summary is not None and listed.summary.status != row[3]:
                stale.append(path)
        return stale

    def refresh(self, paths: Iterable[str], force: bool = False) -> ReconcileStats:
        """Re-read the sessions at *paths* whose stamps differ from the index (all with *force*).

        A path that is no longer a session directory is removed from the index.
        """
        started = time.perf_counter()
        self.db.reopen_if_replaced()
        stats = self._refresh(list(paths), force)
        stats.seconds = time.perf_counter() - started
        return stats

    @guarded
    def _refresh(self, paths: list[str], force: bool) -> ReconcileStats:
        assert self.conn is not None
        run = _Reconciler(self)
        to_read, gone = [], []
        for path in dict.fromkeys(os.path.abspath(p) for p in paths):
            sid_ = session_id_of(path)
            stamps = session_stamps(path)
            row = self.conn.execute("SELECT stamps FROM sessions WHERE id = ?", (sid_,)).fetchone()
            if stamps is None:
                if row is not None:
                    gone.append(sid_)
            elif force or row is None or row[0] != stamps:
                to_read.append(path)
        run.stats.sessions = len(to_read)
        if to_read or gone:
            run.apply(to_read, gone, full=False, force=set(to_read) if force else set())
        return run.stats

    def collect_garbage(self) -> int:
        """Forget job texts no session uses any more; returns how many."""
        return _Reconciler(self).collect_garbage()

    # -- the watcher's heartbeat

    def set_info(self, key: str, value: Any) -> None:
        with self.db.write() as conn:
            conn.execute("INSERT OR REPLACE INTO info (key, value) VALUES (?, ?)", (key, _dumps(value)))

    def get_info(self, key: str) -> Any:
        import json

        assert self.conn is not None
        row = self.db.guard(lambda: self.conn.execute("SELECT value FROM info WHERE key = ?", (key,)).fetchone())
        return json.loads(row[0]) if row else None

    def _heartbeat(self) -> tuple[Any, Any] | None:
        """``(interval, time)`` of the watcher's last heartbeat, if there is one (no JSON decoder needed)."""
        assert self.conn is not None
        return self.db.guard(
            lambda: self.conn.execute(
                "SELECT json_extract(value, '$.interval'), json_extract(value, '$.time') FROM info"
                " WHERE key = ? AND json_valid(value) AND json_type(value) = 'object'",
                (HEARTBEAT_KEY,),
            ).fetchone()
        )

    # -- reading

    def count(self) -> int:
        assert self.conn is not None
        return self.db.guard(lambda: self.conn.execute("SELECT count(*) FROM sessions").fetchone()[0])

    def ids(self) -> set[str]:
        assert self.conn is not None
        return self.db.guard(lambda: {row[0] for row in self.conn.execute("SELECT id FROM sessions")})

    def parent_jobs(self, session_id: str) -> dict[str, str | None]:
        """Child session id -> the job of *session_id* that started it."""
        return self.db.guard(
            lambda: dict(
                self.conn.execute("SELECT id, parent_job FROM sessions WHERE parent_session = ?", (session_id,))
            )
        )

    def _resolve_parent(self, ref: str) -> str:
        assert self.conn is not None
        if self.conn.execute("SELECT 1 FROM sessions WHERE id = ?", (ref,)).fetchone():
            return ref
        rows = self.conn.execute(
            "SELECT id FROM sessions WHERE id LIKE ? ESCAPE '\\' LIMIT 2", (_like_escape(ref) + "%",)
        ).fetchall()
        return rows[0][0] if len(rows) == 1 else ref

    def _query(
        self, flt: ListFilter, columns: Sequence[str] = _READ_COLUMNS, *, live_only: bool = False, limit: bool = False
    ) -> tuple[str, list[Any]]:
        """The SQL (and its parameters) selecting *columns* of the sessions *flt* selects, newest first.

        Rows stored with a live status are selected whatever their status
        (it is checked when read); *live_only* selects only those. With *limit*,
        at most ``flt.limit`` rows.
        """
        where: list[str] = []
        params: list[Any] = []
        if live_only:
            where.append("status IN ('running', 'paused')")
        elif flt.statuses:
            wanted = sorted(set(flt.statuses))
            # A stored "running" or "paused" may have turned into anything: it is checked live.
            where.append(f"(status IN ({', '.join('?' * len(wanted))}) OR status IN ('running', 'paused'))")
            params.extend(wanted)
        for tag in flt.tags:
            where.append("EXISTS (SELECT 1 FROM json_each(sessions.tags) WHERE value = ?)")
            params.append(tag)
        if flt.since is not None:
            where.append("sort_time >= ?")
            params.append(flt.since)
        if flt.title:
            where.append("title LIKE ? ESCAPE '\\'")
            params.append("%" + _like_escape(flt.title) + "%")
        if flt.parent:
            where.append("parent_session = ?")
            params.append(self._resolve_parent(flt.parent))
        if flt.failed_job:
            op = "GLOB" if any(c in flt.failed_job for c in "*?[") else "="
            failed = sorted(FAILED_OUTCOMES)
            where.append(
                "sid IN (SELECT j.sid FROM job_texts t JOIN jobs j ON j.tid = t.tid"
                f" WHERE t.job_id {op} ? AND j.outcome IN ({', '.join('?' * len(failed))}))"
            )
            params.append(flt.failed_job)
            params.extend(failed)
        if flt.ids is not None:
            import json

            where.append("id IN (SELECT value FROM json_each(?))")
            params.append(json.dumps(list(flt.ids)))
        sql = f"SELECT {', '.join(columns)} FROM sessions"
        if where:
            sql += " WHERE " + " AND ".join(where)
        if not live_only:
            sql += " ORDER BY sort_time DESC, id DESC"
        if limit and flt.limit is not None:
            sql += " LIMIT ?"
            params.append(flt.limit)
        return sql, params

    def list(self, flt: ListFilter | None = None, *, documents_only: bool = False) -> list[Listed]:
        """The sessions *flt* selects, newest first, with live status.

        With *documents_only*, :attr:`Listed.summary` is None unless the
        status had to be corrected (faster: ``list --json`` only needs the documents).
        """
        flt = flt or ListFilter()
        return self.db.guard(lambda: self._list_rows(flt, documents_only))

    def _list_rows(self, flt: ListFilter, documents_only: bool = False) -> list[Listed]:
        assert self.conn is not None
        wanted = set(flt.statuses)
        now = time.time()
        out: list[Listed] = []
        if documents_only:
            # The stored documents, except where a status must be checked.
            sql, params = self._query(flt, ("status", "doc", "sid"))
            cursor = self.conn.execute(sql, params)
        else:
            sql, params = self._query(flt)
            cursor = self.conn.execute(sql, params)
        try:
            for row in cursor:
                status = row[0] if documents_only else row[3]
                if documents_only and status not in LIVE_STATUSES:
                    listed = Listed(None, row[1])
                else:
                    if documents_only:
                        row = self.conn.execute(
                            f"SELECT {', '.join(_READ_COLUMNS)} FROM sessions WHERE sid = ?", (row[2],)
                        ).fetchone()
                    listed = _listed(row, now, documents_only)
                    if listed.summary is not None:
                        status = listed.summary.status
                if wanted and status not in wanted:
                    continue
                out.append(listed)
                if flt.limit is not None and len(out) >= flt.limit:
                    break
        finally:
            cursor.close()
        return out

    def json_parts(self, flt: ListFilter | None = None) -> list[bytes]:
        """What ``list --json`` prints for the sessions *flt* selects, as UTF-8 pieces to write one
        after the other (with the final newline): the documents :meth:`list` gives with
        *documents_only*, without a Python object per session. (Joining the pieces would copy
        megabytes for nothing.)"""
        flt = flt or ListFilter()
        return self.db.guard(lambda: self._json_parts(flt))

    def _json_parts(self, flt: ListFilter) -> list[bytes]:
        conn = self.conn
        assert conn is not None
        wanted = set(flt.statuses)
        now = time.time()
        conn.execute("BEGIN")  # one snapshot for both queries
        try:
            # The few rows stored with a live status first: are they still what they say?
            corrections: dict[int, str | None] = {}
            sql, params = self._query(flt, live_only=True)
            for row in conn.execute(sql, params).fetchall():
                listed = _listed(row, now, True)
                status = listed.summary.status if listed.summary is not None else row[3]
                if wanted and status not in wanted:
                    corrections[row[0]] = None
                elif listed.summary is not None:
                    corrections[row[0]] = listed.document
            if not corrections:
                # Every stored document stands: let SQLite join them, in order (an ORDER BY in a
                # FROM-clause subquery is kept when the outer query is group_concat()).
                sql, params = self._query(flt, ("doc",), limit=True)
                body = conn.execute(f"SELECT CAST(group_concat(doc, ',\n') AS BLOB) FROM ({sql})", params).fetchone()[0]
                return [b"[\n", body, b"\n]\n"] if body else [b"[]\n"]
            sql, params = self._query(flt, ("sid", "doc"))
            documents = []
            for sid, document in conn.execute(sql, params):
                if sid in corrections:
                    document = corrections[sid]
                    if document is None:
                        continue
                documents.append(document)
                if flt.limit is not None and len(documents) >= flt.limit:
                    break
            return [json_list(documents).encode("utf-8", "surrogateescape")]
        finally:
            conn.execute("COMMIT")

    def summaries(self, flt: ListFilter | None = None) -> list[SessionSummary]:
        """Like :meth:`list`, only the summaries."""
        return [listed.summary for listed in self.list(flt)]

    def search(self, text: str, limit: int | None = None) -> list[SearchHit]:
        """Sessions where every word of *text* is in the title or in one of the jobs
        (id, summary or command; case-insensitive substrings), newest first, with the jobs that matched."""
        words = text.split()
        assert self.conn is not None
        if not words:
            return []
        return self._search(words, limit)

    @guarded
    def _search(self, words: list[str], limit: int | None) -> list[SearchHit]:
        import json

        conn = self.conn
        conn.execute("BEGIN")
        try:
            per_word_sessions: list[set[int]] = []
            title_sids: set[int] = set()
            all_tids: set[int] = set()
            for word in words:
                rowids = self._fts_rowids(word)
                titles = {r for r in rowids if r > 0}
                tids = {-r for r in rowids if r < 0}
                sids = set(titles)
                if tids:
                    sids.update(
                        row[0]
                        for row in conn.execute(
                            "SELECT DISTINCT sid FROM jobs WHERE tid IN (SELECT value FROM json_each(?))",
                            (json.dumps(sorted(tids)),),
                        )
                    )
                per_word_sessions.append(sids)
                title_sids |= titles
                all_tids |= tids
            matched = set.intersection(*per_word_sessions) if per_word_sessions else set()
            if not matched:
                return []
            ids = [
                row[0]
                for row in conn.execute(
                    "SELECT id FROM sessions WHERE sid IN (SELECT value FROM json_each(?))",
                    (json.dumps(sorted(matched)),),
                )
            ]
            listed = self._list_rows(ListFilter(ids=ids, limit=limit)) if ids else []
            sid_of = {
                row[0]: row[1]
                for row in conn.execute(
                    "SELECT id, sid FROM sessions WHERE id IN (SELECT value FROM json_each(?))",
                    (json.dumps([item.summary.id for item in listed]),),
                )
            }
            jobs: dict[int, list[JobMatch]] = collections.defaultdict(list)
            if all_tids and listed:
                for row in conn.execute(
                    "SELECT j.sid, t.job_id, j.outcome, j.attempt, j.return_code, j.duration, j.running,"
                    " t.summary, t.command FROM jobs j JOIN job_texts t ON t.tid = j.tid"
                    " WHERE j.sid IN (SELECT value FROM json_each(?)) AND j.tid IN (SELECT value FROM json_each(?))"
                    " ORDER BY j.sid, j.position",
                    (json.dumps(list(sid_of.values())), json.dumps(sorted(all_tids))),
                ):
                    jobs[row[0]].append(JobMatch(row[1], row[2], row[3], row[4], row[5], bool(row[6]), row[7], row[8]))
            hits = []
            for item in listed:
                sid = sid_of[item.summary.id]
                hits.append(SearchHit(item, sid in title_sids, tuple(jobs.get(sid, ()))))
            return hits
        finally:
            conn.execute("COMMIT")

    def _fts_rowids(self, word: str) -> set[int]:
        assert self.conn is not None
        if len(word) >= 3:
            query = '"' + word.replace('"', '""') + '"'
            return {row[0] for row in self.conn.execute("SELECT rowid FROM search WHERE search MATCH ?", (query,))}
        # The trigram tokenizer cannot match fewer than 3 characters: scan (the table is small).
        pattern = "%" + _like_escape(word) + "%"
        return {
            row[0]
            for row in self.conn.execute(
                "SELECT rowid FROM search WHERE title LIKE ?1 ESCAPE '\\' OR job_id LIKE ?1 ESCAPE '\\'"
                " OR summary LIKE ?1 ESCAPE '\\' OR command LIKE ?1 ESCAPE '\\'",
                (pattern,),
            )
        }
