"""The index file: connection, pragmas, schema and migrations, replacing a corrupt file, transactions.

:class:`Database` owns the SQLite connection of one ``index.sqlite3``; the
session index holds one and asks it for write transactions. What to do when
the file turns out corrupt (replace it, under a lock, and run the work once
more) is one decorator, :func:`guarded`, around the index's operations.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import re
import sqlite3
import stat
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import Any, TypeVar

    from plainbox_like.errors import PlainboxLikeError

    _T = TypeVar("_T")

INDEX_FILE = "index.sqlite3"
#: Held (flock) while a corrupt index file is replaced, so that two processes do not both do it.
REPLACE_LOCK_FILE = "index.sqlite3.replace-lock"
#: Current schema version; bump it on any change to :data:`SCHEMA` and add a migration (or let it rebuild).
SCHEMA_VERSION = 3
#: ``MIGRATIONS[n](connection)`` upgrades schema *n* to *n + 1* inside a write transaction.
#: An older index without a path of migrations to the current version is rebuilt.
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {}
#: How long a writer waits for another one (seconds); a full rebuild holds the write lock that long at most.
BUSY_TIMEOUT = 120.0
#: Page size of a new index file (bytes): a fresh ``list`` reads the documents of every session in
#: order, a quarter as many reads as with the default 4096.
PAGE_SIZE = 16384

SCHEMA = """
CREATE TABLE schema_version (version INTEGER NOT NULL);
CREATE TABLE info (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE sessions (
    sid INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    path TEXT NOT NULL,
    title TEXT,
    app_id TEXT,
    origin TEXT,
    flags TEXT NOT NULL,
    incomplete INTEGER NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    state_missing INTEGER NOT NULL,
    created REAL,
    updated REAL,
    finished REAL,
    sort_time REAL NOT NULL,
    counts TEXT NOT NULL,
    total INTEGER NOT NULL,
    done INTEGER NOT NULL,
    running_job TEXT,
    runner_pid INTEGER,
    runner_host TEXT,
    tags TEXT NOT NULL,
    parent_session TEXT,
    parent_job TEXT,
    stamps TEXT NOT NULL,
    settled INTEGER NOT NULL,
    dir_key TEXT NOT NULL,
    indexed REAL NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX sessions_by_time ON sessions (sort_time DESC, id DESC, doc);
CREATE INDEX sessions_by_parent ON sessions (parent_session);
CREATE INDEX sessions_live ON sessions (status) WHERE status IN ('running', 'paused');
CREATE INDEX sessions_settled ON sessions (settled, dir_key);
CREATE TABLE job_texts (
    tid INTEGER PRIMARY KEY,
    job_id TEXT NOT NULL,
    summary TEXT,
    command TEXT,
    key TEXT NOT NULL UNIQUE
);
CREATE INDEX job_texts_by_job ON job_texts (job_id);
CREATE TABLE jobs (
    sid INTEGER NOT NULL,
    position INTEGER NOT NULL,
    tid INTEGER NOT NULL,
    attempt INTEGER,
    outcome TEXT,
    return_code INTEGER,
    duration REAL,
    started REAL,
    running INTEGER NOT NULL,
    PRIMARY KEY (sid, position)
) WITHOUT ROWID;
CREATE INDEX jobs_by_text ON jobs (tid);
CREATE VIRTUAL TABLE search USING fts5 (title, job_id, summary, command, tokenize = 'trigram');
CREATE VIEW job_results AS
    SELECT s.id AS session, t.job_id AS job_id, j.attempt, j.outcome, j.return_code,
           j.duration, j.started, j.running, t.summary, t.command
    FROM jobs j JOIN sessions s ON s.sid = j.sid JOIN job_texts t ON t.tid = j.tid;
"""
# sessions_by_time holds the documents too: ``list --json`` reads them, in order, from it alone.
# sessions_settled: the quick reconcile reads the directory stamps of settled sessions from it alone;
# ``dir_key``: see :meth:`.stamps.Stamps.dir_key`.
#: Indexes a rebuild drops and makes again once every row is in (cheaper than keeping them up to date).
BULK_INDEXES = {
    "jobs_by_text": "CREATE INDEX jobs_by_text ON jobs (tid)",
    "sessions_by_time": "CREATE INDEX sessions_by_time ON sessions (sort_time DESC, id DESC, doc)",
    "sessions_settled": "CREATE INDEX sessions_settled ON sessions (settled, dir_key)",
}


def _unusable(message: str) -> PlainboxLikeError:
    """An :class:`~plainbox_like.index.query.IndexUnusable` with *message* (declared with the index's public names)."""
    from plainbox_like.index.query import IndexUnusable

    return IndexUnusable(message)


#: The files SQLite keeps beside the index (WAL mode, and a rollback journal).
SIDE_FILE_SUFFIXES = ("-wal", "-shm", "-journal")


def refuse_symlinked_index(path: str) -> None:
    """Raise :class:`IndexUnusable` if the index file (or its -wal, -shm, -journal) is a symbolic link.

    The index is never opened through a link: SQLite would create or write
    the link's target, wherever it points (even outside the repository).
    """
    for suffix in ("", *SIDE_FILE_SUFFIXES):
        if os.path.islink(path + suffix):
            raise _unusable(f"{path + suffix}: is a symbolic link: the index is never opened through one")


def check_side_files(path: str) -> None:
    """Raise :class:`IndexUnusable` naming the first of the index's side files that is not a regular file.

    SQLite would only say "attempt to write a readonly database" (or fail later, mid-update).
    """
    for suffix in SIDE_FILE_SUFFIXES:
        try:
            mode = os.lstat(path + suffix).st_mode
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise _unusable(f"{path}{suffix}: {exc.strerror or exc}") from None
        if not stat.S_ISREG(mode):
            raise _unusable(f"{path}{suffix}: not a regular file: remove it (the index holds only derived data)")


def _is_corruption(exc: BaseException) -> bool:
    """Whether *exc* says the index file is damaged (not merely busy or read-only)."""
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    if getattr(exc, "sqlite_errorname", "") in ("SQLITE_CORRUPT", "SQLITE_NOTADB"):
        return True
    text = str(exc)
    return "malformed" in text or "not a database" in text


class Database:
    """The connection to one index file (or an in-memory one), opened, checked and migrated.

    *on_reset* is called whenever what a caller caches about the rows may be
    stale (a new connection, another connection wrote, a transaction rolled
    back, the tables dropped); *refill* fills the tables again from the
    sessions (inside a write transaction) when the schema has no migration.
    """

    def __init__(
        self,
        root: str,
        path: str,
        *,
        memory: bool,
        notice: Callable[[str], None],
        busy_timeout: float,
        replace_newer: bool,
        on_reset: Callable[[], None],
        refill: Callable[[], None],
    ) -> None:
        self.root = root
        self.path = path
        self.memory = memory
        self.notice = notice
        self.busy_timeout = busy_timeout
        #: Replace an index made by a newer program (``index --rebuild``) instead of refusing it.
        self.replace_newer = replace_newer
        self.on_reset = on_reset
        self.refill = refill
        self.conn: sqlite3.Connection | None = None
        self._inode: int | None = None
        self._data_version: int | None = None
        #: Whether opening found no index file (or a replaced one) and created it.
        self.created = False

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def _connect(self) -> sqlite3.Connection:
        if not self.memory:
            os.makedirs(self.root, mode=0o700, exist_ok=True)
            refuse_symlinked_index(self.path)
            check_side_files(self.path)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
            try:
                self._inode = os.fstat(fd).st_ino
                fresh = os.fstat(fd).st_size == 0
            finally:
                os.close(fd)
        else:
            fresh = True
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            if fresh:
                # Before anything is written: big pages, fewer reads (list reads a few megabytes in order).
                conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
                self._retry_locked(lambda: conn.execute("PRAGMA journal_mode = WAL").fetchone())
            conn.execute("PRAGMA synchronous = NORMAL")
        except BaseException:
            conn.close()
            raise
        self.on_reset()
        self._data_version = None
        return conn

    def _retry_locked(self, action: Callable[[], Any]) -> Any:
        deadline = time.monotonic() + self.busy_timeout
        while True:
            try:
                return action()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def open(self) -> None:
        """Connect, then create, migrate or rebuild the schema as needed (a corrupt file is replaced)."""
        try:
            self.conn = self._connect()
            self._check_schema()
        except BaseException as exc:
            if self.conn is not None:
                self.conn.close()
                self.conn = None
            if not isinstance(exc, sqlite3.DatabaseError):
                if isinstance(exc, OSError):
                    raise _unusable(f"{self.path}: {exc.strerror or exc}") from None
                raise
            if _is_corruption(exc):
                self._replace_corrupt(exc)
                return
            if isinstance(exc, sqlite3.OperationalError) and not self.memory:
                raise _unusable(f"{self.path}: {exc}") from None
            raise

    def _schema_version(self) -> int | None:
        assert self.conn is not None
        try:
            row = self.conn.execute("SELECT version FROM schema_version").fetchone()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return None
            raise
        return row[0] if row else None

    def _check_schema(self) -> None:
        assert self.conn is not None
        version = self._schema_version()
        if version == SCHEMA_VERSION:
            mode = self.conn.execute("PRAGMA journal_mode").fetchone()[0]
            if mode != "wal" and not self.memory:
                self._retry_locked(lambda: self.conn.execute("PRAGMA journal_mode = WAL").fetchone())
            return
        if version is not None and version > SCHEMA_VERSION and not self.replace_newer:
            raise _unusable(f"{self.path} has schema version {version}, newer than this program's {SCHEMA_VERSION}")
        with self.write():
            version = self._schema_version()  # another process may have done it meanwhile
            if version == SCHEMA_VERSION:
                return
            if version is None:
                if self.conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                    self.notice(f"{self.path} has no schema version: rebuilding it")
                    self.drop_all()
                self.created = True
                self.create_schema()
                return
            if version < SCHEMA_VERSION and all(step in MIGRATIONS for step in range(version, SCHEMA_VERSION)):
                for step in range(version, SCHEMA_VERSION):
                    MIGRATIONS[step](self.conn)
                    self.conn.execute("UPDATE schema_version SET version = ?", (step + 1,))
                return
            self.notice(f"{self.path} has schema version {version}, this program uses {SCHEMA_VERSION}: rebuilding it")
            with self.bulk():
                self.refill()

    def drop_all(self) -> None:
        """Drop every table and view (inside a write transaction)."""
        assert self.conn is not None
        objects = self.conn.execute(
            "SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' AND type IN ('table', 'view')"
        ).fetchall()
        for kind, name in objects:
            if kind == "view":
                self.conn.execute(f'DROP VIEW IF EXISTS "{name}"')
        for kind, name in objects:
            if kind == "table" and not re.fullmatch(r"search_(data|idx|content|docsize|config)", name):
                self.conn.execute(f'DROP TABLE IF EXISTS "{name}"')
        self.on_reset()

    def create_schema(self) -> None:
        """Create the tables of :data:`SCHEMA` (inside a write transaction)."""
        assert self.conn is not None
        for statement in SCHEMA.split(";"):
            if statement.strip():
                self.conn.execute(statement)
        self.conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
        self.conn.execute("INSERT INTO info (key, value) VALUES ('created', ?)", (str(time.time()),))

    def _replace_corrupt(self, exc: BaseException) -> None:
        """Replace a corrupt index file by a new one (one process at a time), with a notice."""
        if self.memory:
            raise exc
        lock_fd = os.open(
            os.path.join(self.root, REPLACE_LOCK_FILE), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600
        )
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            # Someone else may have replaced it while we waited.
            try:
                self.conn = self._connect()
                self._check_schema()
                return
            except sqlite3.DatabaseError as again:
                if self.conn is not None:
                    self.conn.close()
                    self.conn = None
                if not _is_corruption(again):
                    raise
            self.notice(f"{self.path} is corrupt ({' '.join(str(exc).split())}): rebuilding it")
            for suffix in ("", *SIDE_FILE_SUFFIXES):
                try:
                    os.unlink(self.path + suffix)
                except FileNotFoundError:
                    pass
            self.conn = self._connect()
            self._check_schema()
            self.created = True
        finally:
            os.close(lock_fd)

    def reopen_if_replaced(self) -> None:
        """A long-lived writer (the watcher) follows a replaced index file."""
        if self.memory:
            return
        try:
            inode = os.stat(self.path).st_ino
        except FileNotFoundError:
            inode = None
        if inode != self._inode:
            self.close()
            self.open()

    def guard(self, action: Callable[[], _T]) -> _T:
        """Run *action*; if the index turns out to be corrupt, replace it and run it once more."""
        try:
            return action()
        except sqlite3.DatabaseError as exc:
            if not _is_corruption(exc) or self.memory:
                raise
            self.close()
            self._replace_corrupt(exc)
            return action()

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (``BEGIN IMMEDIATE``: one writer at a time), committed unless it raises."""
        conn = self.conn
        assert conn is not None
        conn.execute("BEGIN IMMEDIATE")
        version = conn.execute("PRAGMA data_version").fetchone()[0]
        if version != self._data_version:
            self.on_reset()  # another connection wrote: what the caller caches may be stale
        try:
            yield conn
        except BaseException:
            self.on_reset()
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise
        conn.execute("COMMIT")
        self._data_version = conn.execute("PRAGMA data_version").fetchone()[0]

    @contextlib.contextmanager
    def bulk(self, durable: bool = True) -> Iterator[None]:
        """A large page cache while many rows are written (the default 2 MB thrashes on a million jobs);
        unless *durable*, no syncs either (for a rebuild: the index is derived, a crash means another rebuild)."""
        assert self.conn is not None
        previous = self.conn.execute("PRAGMA cache_size").fetchone()[0]
        self.conn.execute("PRAGMA cache_size = -262144")
        if not durable:
            self.conn.execute("PRAGMA synchronous = OFF")
        try:
            yield
        finally:
            if self.conn is not None:
                self.conn.execute(f"PRAGMA cache_size = {int(previous)}")
                if not durable:
                    self.conn.execute("PRAGMA synchronous = NORMAL")


def guarded(method: Callable[..., _T]) -> Callable[..., _T]:
    """Wrap a method of an object holding a :class:`Database` as ``db`` in :meth:`Database.guard`: if
    the index turns out to be corrupt, the file is replaced and the method runs once more, from the
    start (so it must be safe to repeat: a transaction that was rolled back, or a read)."""

    @functools.wraps(method)
    def run_guarded(self: Any, *args: Any, **kwargs: Any) -> _T:
        return self.db.guard(lambda: method(self, *args, **kwargs))

    return run_guarded
