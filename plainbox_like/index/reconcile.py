"""Reconciling the index with the session directories: compare stamps, read what differs, write it.

One reconcile (or rebuild, or refresh) is one :class:`_Reconciler`, a private
object built for that run (as attrs builds a class with a ``_ClassBuilder``):
it holds the index's database, the run's statistics and the job-text ids
already stored, and does the steps in order: compare (stat only), read
(outside the write lock, a process pool for many), store (one transaction,
many rows per statement), settle. :class:`JobTexts` caches the ids of the
job texts the index holds between runs.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sqlite3
import stat

from plainbox_like.index import stamps as stamping
from plainbox_like.index.fastread import read_sessions, reading_sessions
from plainbox_like.index.records import SESSION_COLUMNS, SessionRecord, _Fields, stable_id
from plainbox_like.index.schema import BULK_INDEXES
from plainbox_like.index.stamps import SETTLED, SETTLING, UNSETTLED, _stamp, file_stamp, join_stamps, scan_ids
from plainbox_like.store.names import JOURNAL_FILE, SESSION_SUFFIX, STATE_FILE, is_session_name
from plainbox_like.store.paths import session_id_of

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence
    from typing import Any

    from plainbox_like.index.query import SessionIndex
    from plainbox_like.index.schema import Database


class ReconcileStats(_Fields):
    """What a reconcile (or rebuild) did: ``sessions`` seen, ``read``, ``added``, ``updated``,
    ``removed``, and ``seconds`` taken."""

    __slots__ = ("sessions", "read", "added", "updated", "removed", "seconds")
    _defaults = {"sessions": 0, "read": 0, "added": 0, "updated": 0, "removed": 0, "seconds": 0.0}

    @property
    def changed(self) -> int:
        return self.added + self.updated + self.removed


#: From this many directory entries on, the quick reconcile shares its stats with a forked process
#: (a process with threads never forks).
SPLIT_SCAN = 2000


def _scan_settled(names: list[str], fd: int, settled: set[str]) -> tuple[int, list[str]]:
    """How many of the entries *names* (of the directory open at *fd*) are settled session directories
    as they were indexed (a ``NAME CTIME_NS:INODE`` in *settled*), and the other names."""
    if len(names) >= SPLIT_SCAN and _may_fork():
        return _scan_settled_split(names, fd, settled)
    return _scan_settled_here(names, fd, settled)


def _scan_settled_here(names: list[str], fd: int, settled: set[str]) -> tuple[int, list[str]]:
    stat_ = os.stat
    directory_mode = stat.S_IFDIR
    same = 0
    others = []
    for name in names:
        try:
            st = stat_(name, dir_fd=fd)
        except OSError:
            others.append(name)
            continue
        if f"{name} {st.st_ctime_ns}:{st.st_ino}" in settled and st.st_mode & 0o170000 == directory_mode:
            same += 1
        else:
            others.append(name)
    return same, others


def _may_fork() -> bool:
    import sys

    threading = sys.modules.get("threading")
    return hasattr(os, "fork") and (threading is None or threading.active_count() == 1)


def _scan_settled_split(names: list[str], fd: int, settled: set[str]) -> tuple[int, list[str]]:
    """:func:`_scan_settled_here`, half of it in a forked process (the stats are most of a quick
    reconcile; a second CPU halves them). Should the child fail, its half is done here."""
    import marshal

    half = len(names) // 2
    read_end, write_end = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        os.close(read_end)
        os.close(write_end)
        return _scan_settled_here(names, fd, settled)
    if pid == 0:  # the child: its half, the answer down the pipe, and gone (no cleanup of the parent's state)
        try:
            os.close(read_end)
            view = memoryview(marshal.dumps(_scan_settled_here(names[half:], fd, settled)))
            while view:
                view = view[os.write(write_end, view) :]
            os._exit(0)
        finally:
            os._exit(1)
    os.close(write_end)
    chunks = []
    try:
        same, others = _scan_settled_here(names[:half], fd, settled)
        while True:
            chunk = os.read(read_end, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(read_end)
        status = os.waitpid(pid, 0)[1]
    try:
        more = marshal.loads(b"".join(chunks)) if status == 0 else None
    except (EOFError, ValueError, TypeError):
        more = None
    if not (type(more) is tuple and len(more) == 2):
        more = _scan_settled_here(names[half:], fd, settled)
    return same + more[0], others + list(more[1])


#: Parameters per INSERT statement when many rows are written at once (SQLite allows 999 at least).
PARAMETERS_PER_INSERT = 900


def _insert_rows(conn: sqlite3.Connection, head: str, width: int, count: int, rows: Iterable[Sequence[Any]]) -> None:
    """``HEAD VALUES (...), (...), ...`` for the *count* *rows* of *width* values each: many rows per
    statement, which costs much less per row than a statement per row."""
    per = max(1, PARAMETERS_PER_INSERT // width)
    full, rest = divmod(count, per)
    values = itertools.chain.from_iterable(rows)
    one = "(" + ", ".join("?" * width) + ")"
    if full:
        statement = f"{head} VALUES {', '.join([one] * per)}"
        conn.executemany(statement, itertools.islice(zip(*[values] * (width * per)), full))
    if rest:
        conn.execute(f"{head} VALUES {', '.join([one] * rest)}", tuple(values))


class _JobBatch:
    """``jobs`` rows waiting to be inserted: one list per session (rows of one sid, in position order)."""

    __slots__ = ("runs", "rows")

    def __init__(self) -> None:
        self.runs: list[list[tuple]] = []
        self.rows = 0

    def add(self, rows: list[tuple]) -> None:
        if rows:
            self.runs.append(rows)
            self.rows += len(rows)

    def sorted_rows(self) -> Iterator[tuple]:
        """Every row in primary key order (far fewer pages touched per batch), without sorting the rows."""
        self.runs.sort(key=_first_sid)
        return itertools.chain.from_iterable(self.runs)

    def clear(self) -> None:
        self.runs = []
        self.rows = 0


def _first_sid(rows: list[tuple]) -> int:
    return rows[0][0]


def _free_id(conn: sqlite3.Connection, table: str, column: str) -> int:
    """A random id not used in *table*'s *column*."""
    while True:
        candidate = stable_id(os.urandom(16).hex())
        if not conn.execute(f"SELECT 1 FROM {table} WHERE {column} = ?", (candidate,)).fetchone():
            return candidate


class JobTexts:
    """The job texts known to be in the index (valid while nobody else writes; forgotten otherwise)."""

    __slots__ = ("known", "remap")

    def __init__(self) -> None:
        #: tid -> key of the job texts known to be in the index.
        self.known: dict[int, str] = {}
        #: tid -> tid actually used, for texts whose derived tid was taken by another text.
        self.remap: dict[int, int] = {}

    def forget(self) -> None:
        self.known = {}
        self.remap = {}

    def ensure(self, conn: sqlite3.Connection, record: SessionRecord) -> dict[int, int]:
        """Store the record's job texts that the index lacks; returns the tid remappings (for hash
        collisions, which practically never happen)."""
        known = self.known
        remap = self.remap
        for tid, key, job_id, job_summary, command in record.texts:
            if known.get(tid) == key:
                continue
            row = conn.execute("SELECT key FROM job_texts WHERE tid = ?", (tid,)).fetchone()
            if row is not None and row[0] == key:
                known[tid] = key
                continue
            if row is not None:  # another text has this tid: use the one stored for this key, or a new tid
                found = conn.execute("SELECT tid FROM job_texts WHERE key = ?", (key,)).fetchone()
                new_tid = found[0] if found else _free_id(conn, "job_texts", "tid")
                remap[tid] = new_tid
                if found:
                    continue
                tid = new_tid
            conn.execute(
                "INSERT INTO job_texts (tid, job_id, summary, command, key) VALUES (?, ?, ?, ?, ?)",
                (tid, job_id, job_summary, command, key),
            )
            conn.execute(
                "INSERT INTO search (rowid, job_id, summary, command) VALUES (?, ?, ?, ?)",
                (-tid, job_id, job_summary, command),
            )
            known[tid] = key
        return remap


_INSERT_SESSION_HEAD = f"INSERT INTO sessions (sid, {', '.join(SESSION_COLUMNS)})"
_INSERT_SESSION_SQL = f"{_INSERT_SESSION_HEAD} VALUES (?{', ?' * len(SESSION_COLUMNS)})"


class _Reconciler:
    """One reconcile, rebuild or refresh of *index*; its statistics in :attr:`stats`."""

    __slots__ = ("index", "db", "texts", "stats")

    def __init__(self, index: SessionIndex, stats: ReconcileStats | None = None) -> None:
        self.index = index
        self.db: Database = index.db
        self.texts: JobTexts = index.texts
        self.stats = ReconcileStats() if stats is None else stats

    @property
    def conn(self) -> sqlite3.Connection:
        conn = self.db.conn
        assert conn is not None
        return conn

    # -- comparing (stat only)

    def compare(self, full: bool, now: float) -> tuple[list[str], list[str], list[tuple[str, str]], int, bool]:
        """``(paths to read, ids gone, (id, stamps) to settle, sessions on disk, whether the index is empty)``."""
        conn = self.conn
        sessions_dir = self.index.sessions_dir
        total = conn.execute("SELECT count(*) FROM sessions").fetchone()[0]
        if full:
            settled: set[str] = set()
            others = dict(conn.execute("SELECT id, stamps || ' ' || settled FROM sessions"))
        else:
            # One string from the index (sessions_settled covers it), one set: no object per row.
            # (A session id never contains "/".)
            text = conn.execute(f"SELECT group_concat(dir_key, '/') FROM sessions WHERE settled = {SETTLED}").fetchone()[0]
            settled = set(text.split("/")) if text else set()
            others = dict(
                conn.execute(f"SELECT id, stamps || ' ' || settled FROM sessions WHERE settled IN ({UNSETTLED}, {SETTLING})")
            )
        get = others.get
        changed: list[str] = []
        settling: list[tuple[str, str]] = []
        seen = 0
        try:
            fd = os.open(sessions_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            fd = -1
        if fd >= 0:
            prefix = sessions_dir + "/"
            suffix = SESSION_SUFFIX
            cut = -len(suffix)
            stat_ = os.stat
            settling_mark = f" {SETTLING}"
            directory_mode = stat.S_IFDIR
            try:
                names = os.listdir(fd)
                if settled:
                    # The bulk of it: settled sessions whose directory is as it was (one lstat each).
                    seen, names = _scan_settled(names, fd, settled)
                for name in names:
                    if not is_session_name(name):
                        continue
                    try:
                        st = stat_(name, dir_fd=fd)
                    except OSError:
                        continue
                    if st.st_mode & 0o170000 != directory_mode:
                        continue
                    seen += 1
                    key = name[:cut]
                    session = file_stamp(name + "/" + STATE_FILE, fd)
                    journal = file_stamp(name + "/" + JOURNAL_FILE, fd)
                    stamps = join_stamps(_stamp(st), session, journal)
                    stored = get(key)
                    if stored is None or not stored.startswith(stamps + " "):
                        changed.append(prefix + name)
                    elif stored.endswith(settling_mark) and now - st.st_ctime_ns / 1e9 > stamping.RACY_SECONDS:
                        settling.append((key, stamps))  # unchanged since, and now long enough ago
            finally:
                os.close(fd)
        gone: list[str] = []
        if changed or seen != total:
            # Unless the directories seen, less the new ones, are as many as the indexed sessions
            # (then every indexed one was seen), look for those that are gone.
            settled_ids = {key.rsplit(" ", 1)[0][: -len(SESSION_SUFFIX)] for key in settled} if changed else set()
            cut = len(sessions_dir) + 1
            new = 0
            for path in changed:
                key = path[cut : -len(SESSION_SUFFIX)]
                if key not in others and key not in settled_ids:
                    new += 1
            if seen - new != total:
                on_disk = scan_ids(sessions_dir)
                gone = [row[0] for row in conn.execute("SELECT id FROM sessions") if row[0] not in on_disk]
        return changed, gone, settling, seen, not total

    def settle(self, settling: list[tuple[str, str]]) -> None:
        """Mark these sessions settled (if their stamps are still those that were checked)."""
        with self.db.write() as conn:
            conn.executemany(
                f"UPDATE sessions SET settled = {SETTLED} WHERE id = ? AND stamps = ? AND settled = {SETTLING}",
                settling,
            )

    # -- reading and storing

    def apply(self, to_read: list[str], gone_ids: list[str], full: bool, force: set[str] = frozenset()) -> None:
        """Read *to_read* (outside the write lock) and write the result and the removals in one transaction.

        A record whose stamps are those stored is not written again (another writer stored this
        very version meanwhile), unless its path is in *force*.
        """
        stats = self.stats
        records: list[SessionRecord] = []
        for path, record in read_sessions(to_read, self.index.definitions, self.index.workers):
            self.index.sessions_read += 1
            stats.read += 1
            if record is None:
                gone_ids.append(session_id_of(path))
            else:
                records.append(record)
        bulk = self.db.bulk() if len(records) > 1000 else contextlib.nullcontext()
        with bulk, self.db.write() as conn:
            existing = {
                row[0]: row[1:]
                for row in conn.execute("SELECT id, sid, stamps FROM sessions")
            } if (full or len(records) + len(gone_ids) > 64) else None
            job_batch = _JobBatch()
            new: list[SessionRecord] = []
            for record in records:
                if existing is not None:
                    current = existing.get(record.id)
                else:
                    current = conn.execute(
                        "SELECT sid, stamps FROM sessions WHERE id = ?", (record.id,)
                    ).fetchone()
                if current is not None and current[1] == record.stamps and record.path not in force:
                    self.texts.ensure(conn, record)  # later records of the same worker may use them
                    continue  # another writer stored this very version meanwhile
                if current is None:
                    new.append(record)
                    stats.added += 1
                else:
                    self._store(record, current[0], job_batch)
                    stats.updated += 1
                self._store_if_full(new, job_batch)
            self._store_new(new, job_batch)
            sids = []
            for session_id in dict.fromkeys(gone_ids):
                if existing is not None:
                    row = existing.get(session_id)
                else:
                    row = conn.execute("SELECT sid FROM sessions WHERE id = ?", (session_id,)).fetchone()
                if row is not None:
                    sids.append(row[0])
            self._flush_jobs(job_batch)
            stats.removed += self._remove_sids(sids)
        if stats.removed or stats.updated > 16:
            self.collect_garbage()

    def refill(self) -> None:
        """Drop everything and read every session again (inside a write transaction)."""
        import gc

        collecting = gc.isenabled()
        gc.disable()  # a million rows of plain values, no cycles: see fastread._no_cycle_collection
        try:
            self._refill_now()
        finally:
            if collecting:
                gc.enable()

    def _refill_now(self) -> None:
        conn = self.conn
        sessions_dir = self.index.sessions_dir
        paths = [os.path.join(sessions_dir, name + SESSION_SUFFIX) for name in sorted(scan_ids(sessions_dir))]
        self.stats.sessions = len(paths)
        # The workers read while the old tables are dropped.
        with reading_sessions(paths, self.index.definitions, self.index.workers, fast=True, numbered=True) as results:
            self.db.drop_all()
            self.db.create_schema()
            for name in BULK_INDEXES:  # cheaper to make once every row is in
                conn.execute(f"DROP INDEX {name}")
            self._populate(results)
        for sql in BULK_INDEXES.values():
            conn.execute(sql)

    def _populate(self, results: Iterable[tuple[str, SessionRecord | None]]) -> None:
        """Store every record of *results* in an empty index (inside a write transaction)."""
        stats = self.stats
        job_batch = _JobBatch()
        new: list[SessionRecord] = []
        for _path, record in results:
            self.index.sessions_read += 1
            stats.read += 1
            if record is None:
                stats.sessions -= 1
                continue
            new.append(record)
            stats.added += 1
            self._store_if_full(new, job_batch)
        self._store_new(new, job_batch)
        self._flush_jobs(job_batch)

    def _store_if_full(self, new: list[SessionRecord], job_batch: _JobBatch) -> None:
        """Write the waiting new sessions and job rows once there are enough for big statements."""
        if len(new) >= 500:
            self._store_new(new, job_batch)
            new.clear()
        if job_batch.rows >= 50_000:
            self._flush_jobs(job_batch)

    def _store(self, record: SessionRecord, current_sid: int | None, job_batch: _JobBatch) -> int:
        """Write one session's rows (inside a write transaction); *current_sid* is its row if it has one."""
        conn = self.conn
        remap = self.texts.ensure(conn, record)
        sid = record.sid
        if current_sid is not None:
            sid = current_sid
            conn.execute("DELETE FROM jobs WHERE sid = ?", (sid,))
            conn.execute("DELETE FROM search WHERE rowid = ?", (sid,))
            conn.execute(
                f"UPDATE sessions SET {', '.join(c + ' = ?' for c in SESSION_COLUMNS)} WHERE sid = ?", (*record.row, sid)
            )
        else:
            try:
                conn.execute(_INSERT_SESSION_SQL, (sid, *record.row))
            except sqlite3.IntegrityError:
                # Either the id is there after all (another writer), or its sid belongs to another id.
                row = conn.execute("SELECT sid FROM sessions WHERE id = ?", (record.id,)).fetchone()
                if row is not None:
                    return self._store(record, row[0], job_batch)
                sid = _free_id(conn, "sessions", "sid")
                conn.execute(_INSERT_SESSION_SQL, (sid, *record.row))
        if record.title:
            conn.execute("INSERT INTO search (rowid, title) VALUES (?, ?)", (sid, record.title))
        if sid == record.sid and not remap:
            job_batch.add(record.jobs)
        else:
            job_batch.add([(sid, r[1], remap.get(r[2], r[2]), *r[3:]) for r in record.jobs])
        return sid

    def _store_new(self, records: list[SessionRecord], job_batch: _JobBatch) -> None:
        """:meth:`_store` for sessions the index does not have yet, many rows per statement."""
        conn = self.conn
        if not records:
            return
        plain = True
        for record in records:
            if self.texts.ensure(conn, record):
                plain = False  # a text needed another tid: the one-by-one way applies it
        if plain:
            conn.execute("SAVEPOINT store_new")
            try:
                _insert_rows(
                    conn, _INSERT_SESSION_HEAD, len(SESSION_COLUMNS) + 1, len(records),
                    [(r.sid, *r.row) for r in records],
                )  # fmt: skip
            except sqlite3.IntegrityError:
                plain = False  # an id or a sid is taken: the one-by-one way sorts it out
                conn.execute("ROLLBACK TO store_new")
            conn.execute("RELEASE store_new")
        if not plain:
            for record in records:
                self._store(record, None, job_batch)
            return
        titles = [(r.sid, r.title) for r in records if r.title]
        _insert_rows(conn, "INSERT INTO search (rowid, title)", 2, len(titles), titles)
        for record in records:
            job_batch.add(record.jobs)

    def _flush_jobs(self, job_batch: _JobBatch) -> None:
        if job_batch.runs:
            _insert_rows(self.conn, "INSERT INTO jobs", 9, job_batch.rows, job_batch.sorted_rows())
            job_batch.clear()

    def _remove_sids(self, sids: Iterable[int]) -> int:
        conn = self.conn
        count = 0
        for sid in sids:
            conn.execute("DELETE FROM jobs WHERE sid = ?", (sid,))
            conn.execute("DELETE FROM search WHERE rowid = ?", (sid,))
            conn.execute("DELETE FROM sessions WHERE sid = ?", (sid,))
            count += 1
        return count

    def collect_garbage(self) -> int:
        """Forget job texts no session uses any more; returns how many."""
        with self.db.write() as conn:
            unused = [
                row[0]
                for row in conn.execute(
                    "SELECT tid FROM job_texts t WHERE NOT EXISTS (SELECT 1 FROM jobs j WHERE j.tid = t.tid)"
                )
            ]
            for tid in unused:
                conn.execute("DELETE FROM search WHERE rowid = ?", (-tid,))
                conn.execute("DELETE FROM job_texts WHERE tid = ?", (tid,))
            self.texts.forget()
        return len(unused)
