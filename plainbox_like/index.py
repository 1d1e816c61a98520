"""The SQLite index of every session: derived data, kept fresh by stat-only reconciles and the watcher.

``index.sqlite3`` lives beside ``sessions/`` in the repository root. It holds,
per session, what ``list`` shows (with the ``list --json`` document rendered
at index time), the stamps ``(mtime_ns, size, inode)`` of the directory, its
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
Sessions are read outside write transactions, with :func:`storage.load_session`
(snapshot + journal, read-only, retried when a writer replaces the snapshot).

A session's *status* is stored as it was when the session was read; rows
stored as ``running`` or ``paused`` are checked again when read (is the writer
named in the lock file alive? is a directory without state still young?), so
a writer that died shows ``incomplete`` without waiting for a re-read.
"""

from __future__ import annotations

import collections
import contextlib
import datetime
import errno
import fcntl
import hashlib
import json
import math
import os
import re
import sqlite3
import stat
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence

from plainbox_like.errors import PlainboxLikeError
from plainbox_like.paths import SESSION_SUFFIX, session_id_of

if TYPE_CHECKING:
    from plainbox_like.model import SessionState
    from plainbox_like.summary import SessionSummary

# Reading the index must start fast (``list`` is a short-lived process): the
# modules that decode sessions (storage, codec, cattrs, the attrs model) are
# imported only when a session is read. These mirror their constants (a test
# checks that they agree).
STATE_FILE = "session"  # storage.STATE_FILE
JOURNAL_FILE = "journal"  # storage.JOURNAL_FILE
FAILED_OUTCOMES = ("crash", "fail")  # model.FAILED_OUTCOMES
STATUS_RUNNING, STATUS_PAUSED, STATUS_INCOMPLETE, STATUS_COMPLETE, STATUS_CORRUPT = STATUSES = (
    "running", "paused", "incomplete", "complete", "corrupt",
)  # summary.STATUSES  # fmt: skip
#: Statuses that hold only while the writer lives: rows stored with them are checked when read.
LIVE_STATUSES = (STATUS_RUNNING, STATUS_PAUSED)
TIME_FIELDS = ("created", "updated", "finished")  # summary.TIME_FIELDS

INDEX_FILE = "index.sqlite3"
#: Held (flock) while a corrupt index file is replaced, so that two processes do not both do it.
REPLACE_LOCK_FILE = "index.sqlite3.replace-lock"
#: Current schema version; bump it on any change to :data:`SCHEMA` and add a migration (or let it rebuild).
SCHEMA_VERSION = 2
#: ``MIGRATIONS[n](connection)`` upgrades schema *n* to *n + 1* inside a write transaction.
#: An older index without a path of migrations to the current version is rebuilt.
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {}
#: How long a writer waits for another one (seconds); a full rebuild holds the write lock that long at most.
BUSY_TIMEOUT = 120.0
#: Reading this many sessions or more uses a process pool (when more than one worker is allowed).
POOL_THRESHOLD = 200

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
    indexed REAL NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX sessions_by_time ON sessions (sort_time DESC, id DESC);
CREATE INDEX sessions_by_parent ON sessions (parent_session);
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
CREATE INDEX jobs_by_text ON jobs (tid, outcome);
CREATE VIRTUAL TABLE search USING fts5 (title, job_id, summary, command, tokenize = 'trigram');
CREATE VIEW job_results AS
    SELECT s.id AS session, t.job_id AS job_id, j.attempt, j.outcome, j.return_code,
           j.duration, j.started, j.running, t.summary, t.command
    FROM jobs j JOIN sessions s ON s.sid = j.sid JOIN job_texts t ON t.tid = j.tid;
"""

#: Columns of ``sessions`` a :class:`SessionRecord` fills, in ``SessionRecord.row`` order.
SESSION_COLUMNS = (
    "id", "path", "title", "app_id", "origin", "flags", "incomplete", "status", "reason",
    "state_missing", "created", "updated", "finished", "sort_time", "counts", "total", "done",
    "running_job", "runner_pid", "runner_host", "tags", "parent_session", "parent_job",
    "stamps", "indexed", "doc",
)  # fmt: skip
_COL = {name: i for i, name in enumerate(SESSION_COLUMNS)}

#: Columns read back to make a :class:`SessionSummary` (plus what live status needs).
_READ_COLUMNS = (
    "sid", "id", "path", "status", "reason", "title", "created", "updated", "finished", "counts",
    "total", "running_job", "runner_pid", "runner_host", "tags", "flags", "parent_session",
    "app_id", "origin", "incomplete", "state_missing", "stamps", "doc",
)  # fmt: skip


class IndexUnusable(PlainboxLikeError):
    """The index file cannot be used (newer schema, read-only, ...); the message says why."""


# -- stamps ------------------------------------------------------------------------


def _stamp(st: os.stat_result) -> str:
    return f"{st.st_mtime_ns}:{st.st_size}:{st.st_ino}"


def file_stamp(path: str) -> str:
    """``mtime_ns:size:inode`` of *path*; ``-`` if it does not exist."""
    try:
        return _stamp(os.stat(path))
    except FileNotFoundError:
        return "-"
    except OSError as exc:
        return f"error{exc.errno}"


def session_stamps(path: str) -> str | None:
    """The stamps of a session directory: ``DIR|SESSION|JOURNAL``, each ``mtime_ns:size:inode``
    (``-`` for a missing file); None if *path* is not a directory (any more). Stat only."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode):
        return None
    return f"{_stamp(st)}|{file_stamp(path + '/' + STATE_FILE)}|{file_stamp(path + '/' + JOURNAL_FILE)}"


def _stamp_mtime(stamps: str | None) -> float | None:
    """The modification time of the directory, from its stamps."""
    try:
        return int(stamps.split(":", 1)[0]) / 1e9  # type: ignore[union-attr]
    except (AttributeError, ValueError):
        return None


def _has_state(stamps: str) -> bool:
    return stamps.split("|")[1] != "-"


def scan_sessions(sessions_dir: str) -> dict[str, tuple[str, str]]:
    """Every session directory under *sessions_dir*: id -> (path, stamps). Stat only."""
    found: dict[str, tuple[str, str]] = {}
    try:
        entries = os.scandir(sessions_dir)
    except (FileNotFoundError, NotADirectoryError):
        return found
    suffix = SESSION_SUFFIX
    cut = -len(suffix)
    stat_ = os.stat
    state_name = "/" + STATE_FILE
    journal_name = "/" + JOURNAL_FILE
    with entries:
        for entry in entries:
            name = entry.name
            if not name.endswith(suffix) or name.startswith("."):
                continue
            try:
                if not entry.is_dir(follow_symlinks=False):
                    continue
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            path = entry.path
            try:
                f = stat_(path + state_name)
                session = f"{f.st_mtime_ns}:{f.st_size}:{f.st_ino}"
            except FileNotFoundError:
                session = "-"
            except OSError as exc:
                session = f"error{exc.errno}"
            try:
                f = stat_(path + journal_name)
                journal = f"{f.st_mtime_ns}:{f.st_size}:{f.st_ino}"
            except FileNotFoundError:
                journal = "-"
            except OSError as exc:
                journal = f"error{exc.errno}"
            found[name[:cut]] = (path, f"{st.st_mtime_ns}:{st.st_size}:{st.st_ino}|{session}|{journal}")
    return found


# -- job definitions ---------------------------------------------------------------------


class DefinitionCache:
    """Job summaries and commands of the unit files sessions were run from, parsed once per version.

    Keyed by the run configuration's sources and commands and the stamps of
    the source files (every ``.pxu`` file of a source directory), so thousands
    of sessions run from the same files cost one parse. Stamps of a source are
    re-checked at most every *stamp_ttl* seconds.
    """

    def __init__(self, max_entries: int = 64, stamp_ttl: float = 2.0, clock: Callable[[], float] = time.monotonic):
        self.max_entries = max_entries
        self.stamp_ttl = stamp_ttl
        self._clock = clock
        self._configs: collections.OrderedDict[str, Any] = collections.OrderedDict()
        self._entries: collections.OrderedDict[tuple, dict[str, tuple]] = collections.OrderedDict()
        self._stamps: dict[str, tuple[float, Any]] = {}
        #: How many times unit files were parsed (for tests and benchmarks).
        self.parses = 0

    def _config(self, blob: str | None) -> Any:
        if not blob:
            return None
        if blob in self._configs:
            self._configs.move_to_end(blob)
            return self._configs[blob]
        from plainbox_like.session import RunConfig  # the runner machinery is only needed here

        try:
            config = RunConfig.from_blob(blob)
            config.sources = [str(s) for s in config.sources]
            config.commands = [str(c) for c in config.commands]
        except Exception:  # noqa: BLE001 - Plainbox's own blobs, or damage: index ids only
            config = None
        self._configs[blob] = config
        if len(self._configs) > self.max_entries * 4:
            self._configs.popitem(last=False)
        return config

    def _source_stamp(self, path: str) -> Any:
        now = self._clock()
        cached = self._stamps.get(path)
        if cached is not None and now - cached[0] < self.stamp_ttl:
            return cached[1]
        if os.path.isdir(path):
            files = []
            for root, dirs, names in os.walk(path):
                dirs.sort()
                for name in sorted(names):
                    if name.endswith(".pxu"):
                        full = os.path.join(root, name)
                        files.append((full, file_stamp(full)))
            value: Any = tuple(files)
        else:
            value = file_stamp(path)
        self._stamps[path] = (now, value)
        return value

    def definitions(self, blob: str | None) -> dict[str, tuple]:
        """``job id -> (checksum, tid, key, job id, summary, command)`` for the session whose ``app_blob`` is *blob*.

        Never raises: missing or unreadable files give what the other files
        define (possibly nothing).
        """
        config = self._config(blob)
        if config is None:
            return {}
        key = (
            tuple(config.sources),
            tuple(config.commands),
            tuple(self._source_stamp(source) for source in config.sources),
        )
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
            return entry
        entry = self._load(config.sources, config.commands)
        self._entries[key] = entry
        if len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return entry

    def _load(self, sources: list[str], commands: list[str]) -> dict[str, tuple]:
        from plainbox_like.units import load_units

        self.parses += 1
        jobs: list[Any] = []
        try:
            jobs = list(load_units(sources, commands).jobs)
        except Exception:  # noqa: BLE001 - a file is missing or broken: take what each part defines
            for part in [[source] for source in sources] + ([[]] if commands else []):
                try:
                    jobs.extend(load_units(part, commands if not part else ()).jobs)
                except Exception:  # noqa: BLE001
                    continue
        # Only a definition whose checksum matches the session's is what ran;
        # the checksum covers the id too, so renumbered command-list jobs do not match.
        return {job.id: (job.checksum, *text_identity(job.id, job.summary, job.command)) for job in jobs}


# -- reading one session -------------------------------------------------------------------


@dataclass
class SessionRecord:
    """What the index stores about one session: a ``sessions`` row, its job rows and their texts."""

    id: str
    path: str
    #: :func:`session_stamps` before the session was read.
    stamps: str
    sid: int
    row: tuple
    #: ``jobs`` rows: ``(sid, position, tid, attempt, outcome, return_code, duration, started, running)``
    jobs: list[tuple]
    #: ``(tid, key, job_id, summary, command)`` of the texts the jobs use (those not sent before, from a worker).
    texts: list[tuple]

    @property
    def title(self) -> str | None:
        return self.row[_COL["title"]]


def stable_id(text: str) -> int:
    """A positive 63-bit number derived from *text* (the same in every process)."""
    value = int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big")
    return (value & 0x7FFF_FFFF_FFFF_FFFF) or 1


def text_identity(job_id: str, job_summary: str | None, command: str | None) -> tuple[int, str, str, str | None, str | None]:
    """``(tid, key, job_id, summary, command)`` of a job text; *tid* is derived from *key*."""
    key = _dumps([job_id, job_summary, command])
    return (stable_id(key), key, job_id, job_summary, command)


def iso_time(epoch: float | None) -> str | None:
    """UTC ISO 8601 with offset (as ``list --json`` shows times)."""
    if epoch is None:
        return None
    return datetime.datetime.fromtimestamp(epoch, tz=datetime.timezone.utc).isoformat()


def summary_document(s: SessionSummary) -> dict[str, Any]:
    """A summary as ``list --json`` shows it: plain values, times as ISO 8601 UTC strings."""
    data = s.as_dict()
    for key in TIME_FIELDS:
        data[key] = iso_time(data[key])
    return data


_encode_string = json.encoder.encode_basestring  # the C version when available, as json.dumps uses


def _scalar(value: Any) -> str | None:
    kind = type(value)
    if kind is str:
        return _encode_string(value)
    if value is None:
        return "null"
    if kind is int:
        return int.__repr__(value)
    if kind is float and math.isfinite(value):
        return float.__repr__(value)
    return None


def render_document(s: SessionSummary) -> str:
    """:func:`summary_document` as ``json.dumps(..., indent=2, sort_keys=True, ensure_ascii=False)`` does it.

    Written out directly for the flat shape of a summary (about ten times
    faster than the pure-Python indenting encoder); anything unusual is left
    to :func:`json.dumps`.
    """
    doc = summary_document(s)
    lines = []
    for key in sorted(doc):
        value = doc[key]
        text = _scalar(value)
        if text is None:
            if type(value) is list and all(type(v) is str for v in value):
                text = "[\n" + ",\n".join("    " + _encode_string(v) for v in value) + "\n  ]" if value else "[]"
            elif type(value) is dict and all(type(k) is str and type(v) is int for k, v in value.items()):
                text = (
                    "{\n" + ",\n".join(f"    {_encode_string(k)}: {int.__repr__(value[k])}" for k in sorted(value)) + "\n  }"
                    if value
                    else "{}"
                )
            else:
                return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False)
        lines.append(f"  {_encode_string(key)}: {text}")
    if not lines:
        return "{}"
    return "{\n" + ",\n".join(lines) + "\n}"


def nested_document(s: SessionSummary) -> str:
    """:func:`render_document` indented as an element of the ``list --json`` list."""
    return "  " + render_document(s).replace("\n", "\n  ")


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


#: Texts of jobs without a matching definition, by job id (a cache; bounded).
_id_texts: dict[str, tuple] = {}


def _id_text(job_id: str) -> tuple:
    text = _id_texts.get(job_id)
    if text is None:
        if len(_id_texts) > 100_000:
            _id_texts.clear()
        text = _id_texts[job_id] = text_identity(job_id, None, None)
    return text


def _job_rows(sid: int, state: SessionState, defs: dict[str, tuple], sent: set[int] | None) -> tuple[list[tuple], list[tuple]]:
    """The ``jobs`` rows of a session and the texts they use (those not in *sent*, which is updated)."""
    rows = []
    texts = []
    results = state.results
    running_jobs = state.running_jobs
    order = dict.fromkeys(state.desired_job_list)
    order.update(dict.fromkeys(results))
    if running_jobs:
        order.update(dict.fromkeys(running_jobs))
    checksums = state.jobs
    get_definition = defs.get
    get_results = results.get
    get_checksum = checksums.get
    append = rows.append
    for position, job_id in enumerate(order):
        definition = get_definition(job_id)
        text = definition[1:] if definition is not None and definition[0] == get_checksum(job_id) else _id_text(job_id)
        tid = text[0]
        if sent is None:
            texts.append(text)  # job ids are unique in a session: so are their texts
        elif tid not in sent:
            sent.add(tid)
            texts.append(text)
        attempts = get_results(job_id)
        running = running_jobs.get(job_id) if running_jobs else None
        if attempts:
            latest = attempts[-1]
            if running is None:
                append((sid, position, tid, latest.attempt, latest.outcome, latest.return_code,
                        latest.execution_duration, latest.started, 0))  # fmt: skip
            else:
                append((sid, position, tid, running.attempt, latest.outcome, latest.return_code,
                        latest.execution_duration, running.started, 1))  # fmt: skip
        elif running is not None:
            append((sid, position, tid, running.attempt, None, None, None, running.started, 1))
        else:
            append((sid, position, tid, None, None, None, None, None, 0))
    return rows, texts


def make_record(
    s: SessionSummary,
    stamps: str,
    jobs: list[tuple] = (),  # type: ignore[assignment]
    texts: list[tuple] = (),  # type: ignore[assignment]
    *,
    sid: int | None = None,
    incomplete: bool,
    state_missing: bool,
    parent_job: str | None = None,
) -> SessionRecord:
    """The record of a session summarized as *s*."""
    sort_time = s.created if s.created is not None else (_stamp_mtime(stamps) or 0.0)
    values = {
        "id": s.id,
        "path": s.path,
        "title": s.title,
        "app_id": s.app_id,
        "origin": s.origin,
        "flags": _dumps(list(s.flags)),
        "incomplete": int(incomplete),
        "status": s.status,
        "reason": s.reason,
        "state_missing": int(state_missing),
        "created": s.created,
        "updated": s.updated,
        "finished": s.finished,
        "sort_time": sort_time,
        "counts": _dumps(s.counts),
        "total": s.total,
        "done": s.done,
        "running_job": s.running_job,
        "runner_pid": s.runner_pid,
        "runner_host": s.runner_host,
        "tags": _dumps(list(s.tags)),
        "parent_session": s.parent_session,
        "parent_job": parent_job,
        "stamps": stamps,
        "indexed": time.time(),
        "doc": nested_document(s),
    }
    return SessionRecord(
        s.id, s.path, stamps, stable_id(s.id) if sid is None else sid,
        tuple(values[c] for c in SESSION_COLUMNS), list(jobs), list(texts),
    )  # fmt: skip


def read_session(
    path: str, definitions: DefinitionCache | None = None, now: float | None = None, sent: set[int] | None = None
) -> SessionRecord | None:
    """Read the session at *path* for the index; None if the directory is gone.

    Never raises for a bad session: it becomes a ``corrupt`` record with the
    reason, as :func:`summary.summarize` reports it. The stamps are taken
    before reading, so a change made while reading shows as a difference at
    the next reconcile (the session is read again), never as a stale entry.
    Texts whose tid is in *sent* are left out of the record (and new ones added to it).
    """
    from plainbox_like import storage, summary
    from plainbox_like.summary import SessionSummary

    path = os.path.abspath(path)
    stamps = session_stamps(path)
    if stamps is None:
        return None
    session_id = session_id_of(path)
    try:
        if not _has_state(stamps) and summary.being_created(path, now):
            holder = storage.lock_holder(path)
            pid, host = holder if holder else (None, None)
            s = SessionSummary(id=session_id, path=path, status=summary.STATUS_RUNNING, runner_pid=pid, runner_host=host)
            return make_record(s, stamps, incomplete=True, state_missing=True)
        loaded = storage.load_session(path)
        s = summary.summarize_loaded(loaded)
        defs = definitions.definitions(loaded.state.metadata.app_blob) if definitions is not None else {}
        sid = stable_id(session_id)
        jobs, texts = _job_rows(sid, loaded.state, defs, sent)
        return make_record(
            s,
            stamps,
            jobs,
            texts,
            sid=sid,
            incomplete="incomplete" in loaded.state.metadata.flags,
            state_missing=False,
            parent_job=loaded.state.metadata.parent_job,
        )
    except Exception as exc:  # noqa: BLE001 - every problem is reported in the record
        if not os.path.isdir(path):
            return None
        s = SessionSummary(id=session_id, path=path, status=summary.STATUS_CORRUPT, reason=summary.one_line(exc))
        return make_record(s, stamps, incomplete=False, state_missing=not _has_state(stamps))


_worker_definitions: DefinitionCache | None = None
#: Texts this worker has sent to the parent in the current pool (sent once each).
_worker_sent: set[int] = set()


def _start_worker() -> None:
    global _worker_definitions
    _worker_definitions = DefinitionCache()
    _worker_sent.clear()


def _read_in_worker(path: str) -> tuple[str, SessionRecord | None]:
    return path, read_session(path, _worker_definitions, sent=_worker_sent)


def default_workers() -> int:
    """Worker processes for reading many sessions: the CPUs this process may use, at most 8."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(8, cpus))


def read_sessions(
    paths: Sequence[str], definitions: DefinitionCache, workers: int | None = None
) -> Iterator[tuple[str, SessionRecord | None]]:
    """``(path, record)`` for each of *paths*, in any order; a process pool reads many at once."""
    workers = default_workers() if workers is None else max(1, workers)
    if workers == 1 or len(paths) < POOL_THRESHOLD:
        for path in paths:
            yield path, read_session(path, definitions)
        return
    import multiprocessing

    # fork is cheapest; with other threads running (the watcher's observer) it is not safe.
    method = "fork" if threading.active_count() == 1 else "forkserver"
    context = multiprocessing.get_context(method)
    chunk = max(1, min(64, len(paths) // (workers * 8) or 1))
    with context.Pool(workers, initializer=_start_worker) as pool:
        yield from pool.imap_unordered(_read_in_worker, paths, chunksize=chunk)


# -- filters and results -------------------------------------------------------------------


@dataclass
class ListFilter:
    """What ``list`` selects. Empty fields select everything."""

    statuses: Sequence[str] = ()
    #: Every one of these tags.
    tags: Sequence[str] = ()
    #: Sessions created at or after this epoch time (directory mtime for sessions without one).
    since: float | None = None
    #: Case-insensitive substring of the title.
    title: str | None = None
    #: Id of the parent session (or a unique prefix of an indexed session id).
    parent: str | None = None
    #: A job id (shell wildcards allowed) whose latest outcome is fail or crash.
    failed_job: str | None = None
    limit: int | None = None
    #: Only these session ids (used by ``search``).
    ids: Sequence[str] | None = None


@dataclass(frozen=True)
class Listed:
    """One session as the index shows it, with its status checked live."""

    #: None when listed with ``documents_only`` (and the status needed no correction).
    summary: SessionSummary | None
    #: The ``list --json`` element for it (indented JSON, as printed inside the list).
    document: str


@dataclass(frozen=True)
class JobMatch:
    """A job of a session that matched a search."""

    id: str
    outcome: str | None
    attempt: int | None
    return_code: int | None
    duration: float | None
    running: bool
    summary: str | None
    command: str | None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class SearchHit:
    """A session that matched a search: whether its title matched, and which of its jobs did."""

    listed: Listed
    title_matched: bool
    jobs: tuple[JobMatch, ...]


@dataclass
class ReconcileStats:
    """What a reconcile (or rebuild) did."""

    sessions: int = 0
    read: int = 0
    added: int = 0
    updated: int = 0
    removed: int = 0
    seconds: float = 0.0

    @property
    def changed(self) -> int:
        return self.added + self.updated + self.removed


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _is_corruption(exc: BaseException) -> bool:
    """Whether *exc* says the index file is damaged (not merely busy or read-only)."""
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    if getattr(exc, "sqlite_errorname", "") in ("SQLITE_CORRUPT", "SQLITE_NOTADB"):
        return True
    text = str(exc)
    return "malformed" in text or "not a database" in text


# -- the index -------------------------------------------------------------------------------


class SessionIndex:
    """``index.sqlite3`` of one repository root.

    Open it with :meth:`open`; readers call :meth:`reconcile` first unless a
    watcher keeps it fresh (:func:`fresh_index` does both), then
    :meth:`list` / :meth:`search`. Writers: :meth:`reconcile`,
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
        #: Replace an index made by a newer program (``index --rebuild``) instead of refusing it.
        self.replace_newer = replace_newer
        self.sessions_dir = os.path.join(self.root, "sessions")
        self.path = ":memory:" if memory else os.path.join(self.root, INDEX_FILE)
        self.memory = memory
        self.notice = notice or (lambda _msg: None)
        self.busy_timeout = busy_timeout
        self.workers = workers
        self.definitions = DefinitionCache()
        self.conn: sqlite3.Connection | None = None
        self._inode: int | None = None
        #: tid -> key of the job texts known to be in the index (valid while nobody else writes).
        self._texts: dict[int, str] = {}
        #: tid -> tid actually used, for texts whose derived tid was taken by another text.
        self._tid_remap: dict[int, int] = {}
        self._data_version: int | None = None
        #: Sessions read from disk by this object (for tests and benchmarks).
        self.sessions_read = 0
        #: Whether opening found no index file (or a replaced one) and created it.
        self.created = False

    # -- opening

    @classmethod
    def open(cls, root: str, **kwargs: Any) -> "SessionIndex":
        """Open (creating, migrating or rebuilding as needed) the index of *root*."""
        index = cls(root, **kwargs)
        index._open()
        return index

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def __enter__(self) -> "SessionIndex":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _connect(self) -> sqlite3.Connection:
        if not self.memory:
            os.makedirs(self.root, mode=0o700, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
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
                self._retry_locked(lambda: conn.execute("PRAGMA journal_mode = WAL").fetchone())
            conn.execute("PRAGMA synchronous = NORMAL")
        except BaseException:
            conn.close()
            raise
        self._forget_texts()
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

    def _open(self) -> None:
        try:
            self.conn = self._connect()
            self._check_schema()
        except BaseException as exc:
            if self.conn is not None:
                self.conn.close()
                self.conn = None
            if not isinstance(exc, sqlite3.DatabaseError):
                if isinstance(exc, OSError):
                    raise IndexUnusable(f"{self.path}: {exc.strerror or exc}") from None
                raise
            if _is_corruption(exc):
                self._replace_corrupt(exc)
                return
            if isinstance(exc, sqlite3.OperationalError) and not self.memory:
                raise IndexUnusable(f"{self.path}: {exc}") from None
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
            raise IndexUnusable(
                f"{self.path} has schema version {version}, newer than this program's {SCHEMA_VERSION}"
            )
        with self._write():
            version = self._schema_version()  # another process may have done it meanwhile
            if version == SCHEMA_VERSION:
                return
            if version is None:
                if self.conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                    self.notice(f"{self.path} has no schema version: rebuilding it")
                    self._drop_all()
                self.created = True
                self._create_schema()
                return
            if version < SCHEMA_VERSION and all(step in MIGRATIONS for step in range(version, SCHEMA_VERSION)):
                for step in range(version, SCHEMA_VERSION):
                    MIGRATIONS[step](self.conn)
                    self.conn.execute("UPDATE schema_version SET version = ?", (step + 1,))
                return
            self.notice(f"{self.path} has schema version {version}, this program uses {SCHEMA_VERSION}: rebuilding it")
            with self._bulk():
                self._drop_all()
                self._create_schema()
                self.conn.execute("DROP INDEX jobs_by_text")
                self._populate({}, ReconcileStats())
                self.conn.execute("CREATE INDEX jobs_by_text ON jobs (tid, outcome)")

    def _drop_all(self) -> None:
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
        self._forget_texts()

    def _create_schema(self) -> None:
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
        lock_fd = os.open(os.path.join(self.root, REPLACE_LOCK_FILE), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
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
            for suffix in ("", "-wal", "-shm", "-journal"):
                try:
                    os.unlink(self.path + suffix)
                except FileNotFoundError:
                    pass
            self.conn = self._connect()
            self._check_schema()
            self.created = True
        finally:
            os.close(lock_fd)

    def _reopen_if_replaced(self) -> None:
        """A long-lived writer (the watcher) follows a replaced index file."""
        if self.memory:
            return
        try:
            inode = os.stat(self.path).st_ino
        except FileNotFoundError:
            inode = None
        if inode != self._inode:
            self.close()
            self._open()

    def _guard(self, action: Callable[[], Any]) -> Any:
        """Run *action*; if the index turns out to be corrupt, replace it and run it once more."""
        try:
            return action()
        except sqlite3.DatabaseError as exc:
            if not _is_corruption(exc) or self.memory:
                raise
            self.close()
            self._replace_corrupt(exc)
            return action()

    # -- writing

    class _Transaction:
        def __init__(self, index: "SessionIndex") -> None:
            self.index = index

        def __enter__(self) -> sqlite3.Connection:
            conn = self.index.conn
            assert conn is not None
            conn.execute("BEGIN IMMEDIATE")
            version = conn.execute("PRAGMA data_version").fetchone()[0]
            if version != self.index._data_version:
                self.index._forget_texts()  # another connection wrote: our cache of text ids may be stale
            return conn

        def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
            conn = self.index.conn
            assert conn is not None
            if exc_type is None:
                conn.execute("COMMIT")
                self.index._data_version = conn.execute("PRAGMA data_version").fetchone()[0]
            else:
                self.index._forget_texts()
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass

    def _write(self) -> "SessionIndex._Transaction":
        return SessionIndex._Transaction(self)

    def _ensure_texts(self, record: SessionRecord) -> dict[int, int]:
        """Store the record's job texts that the index lacks; returns the tid remappings (for hash
        collisions, which practically never happen)."""
        conn = self.conn
        assert conn is not None
        known = self._texts
        remap = self._tid_remap
        for tid, key, job_id, job_summary, command in record.texts:
            if known.get(tid) == key:
                continue
            row = conn.execute("SELECT key FROM job_texts WHERE tid = ?", (tid,)).fetchone()
            if row is not None and row[0] == key:
                known[tid] = key
                continue
            if row is not None:  # another text has this tid: use the one stored for this key, or a new tid
                found = conn.execute("SELECT tid FROM job_texts WHERE key = ?", (key,)).fetchone()
                new_tid = found[0] if found else self._free_id("job_texts", "tid")
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

    def _forget_texts(self) -> None:
        self._texts = {}
        self._tid_remap = {}

    def _free_id(self, table: str, column: str) -> int:
        assert self.conn is not None
        while True:
            candidate = stable_id(os.urandom(16).hex())
            if not self.conn.execute(f"SELECT 1 FROM {table} WHERE {column} = ?", (candidate,)).fetchone():
                return candidate

    def _store(self, record: SessionRecord, current_sid: int | None, job_batch: list[tuple]) -> int:
        """Write one session's rows (inside a write transaction); *current_sid* is its row if it has one."""
        conn = self.conn
        assert conn is not None
        remap = self._ensure_texts(record)
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
                conn.execute(self._insert_session_sql, (sid, *record.row))
            except sqlite3.IntegrityError:
                # Either the id is there after all (another writer), or its sid belongs to another id.
                row = conn.execute("SELECT sid FROM sessions WHERE id = ?", (record.id,)).fetchone()
                if row is not None:
                    return self._store(record, row[0], job_batch)
                sid = self._free_id("sessions", "sid")
                conn.execute(self._insert_session_sql, (sid, *record.row))
        if record.title:
            conn.execute("INSERT INTO search (rowid, title) VALUES (?, ?)", (sid, record.title))
        if sid == record.sid and not remap:
            job_batch.extend(record.jobs)
        else:
            job_batch.extend((sid, r[1], remap.get(r[2], r[2]), *r[3:]) for r in record.jobs)
        return sid

    _insert_session_sql = (
        f"INSERT INTO sessions (sid, {', '.join(SESSION_COLUMNS)}) VALUES (?{', ?' * len(SESSION_COLUMNS)})"
    )

    def _flush_jobs(self, job_batch: list[tuple]) -> None:
        if job_batch:
            assert self.conn is not None
            job_batch.sort()  # in primary key order: far fewer pages touched per batch
            self.conn.executemany("INSERT INTO jobs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", job_batch)
            job_batch.clear()

    def _remove_sids(self, sids: Iterable[int]) -> int:
        assert self.conn is not None
        count = 0
        for sid in sids:
            self.conn.execute("DELETE FROM jobs WHERE sid = ?", (sid,))
            self.conn.execute("DELETE FROM search WHERE rowid = ?", (sid,))
            self.conn.execute("DELETE FROM sessions WHERE sid = ?", (sid,))
            count += 1
        return count

    def collect_garbage(self) -> int:
        """Forget job texts no session uses any more; returns how many."""
        with self._write() as conn:
            unused = [
                row[0]
                for row in conn.execute(
                    "SELECT tid FROM job_texts t WHERE NOT EXISTS (SELECT 1 FROM jobs j WHERE j.tid = t.tid)"
                )
            ]
            for tid in unused:
                conn.execute("DELETE FROM search WHERE rowid = ?", (-tid,))
                conn.execute("DELETE FROM job_texts WHERE tid = ?", (tid,))
            self._forget_texts()
        return len(unused)

    def _populate(self, wanted: dict[str, tuple[str, str]] | None, stats: ReconcileStats) -> None:
        """Read every session into an empty index (inside a write transaction)."""
        if wanted is None or not wanted:
            wanted = scan_sessions(self.sessions_dir)
        stats.sessions = len(wanted)
        paths = [path for path, _ in wanted.values()]
        job_batch: list[tuple] = []
        for _path, record in read_sessions(paths, self.definitions, self.workers):
            self.sessions_read += 1
            stats.read += 1
            if record is None:
                stats.sessions -= 1
                continue
            self._store(record, None, job_batch)
            stats.added += 1
            if len(job_batch) >= 50_000:
                self._flush_jobs(job_batch)
        self._flush_jobs(job_batch)

    @contextlib.contextmanager
    def _bulk(self) -> Iterator[None]:
        """A large page cache while many rows are written (the default 2 MB thrashes on a million jobs)."""
        assert self.conn is not None
        previous = self.conn.execute("PRAGMA cache_size").fetchone()[0]
        self.conn.execute("PRAGMA cache_size = -262144")
        try:
            yield
        finally:
            if self.conn is not None:
                self.conn.execute(f"PRAGMA cache_size = {int(previous)}")

    def rebuild(self) -> ReconcileStats:
        """Recreate the index from the session directories, in one transaction (readers see the old one until then)."""
        started = time.perf_counter()
        stats = ReconcileStats()
        self._reopen_if_replaced()

        def action() -> None:
            with self._bulk(), self._write() as conn:
                self._drop_all()
                self._create_schema()
                conn.execute("DROP INDEX jobs_by_text")  # faster to build once at the end
                self._populate(None, stats)
                conn.execute("CREATE INDEX jobs_by_text ON jobs (tid, outcome)")

        self._guard(action)
        stats.seconds = time.perf_counter() - started
        return stats

    def stored_stamps(self) -> dict[str, tuple[int, str]]:
        """id -> (sid, stamps) of every indexed session."""
        assert self.conn is not None
        return {row[0]: (row[1], row[2]) for row in self.conn.execute("SELECT id, sid, stamps FROM sessions")}

    def reconcile(self) -> ReconcileStats:
        """Stat-only comparison of every session directory with the index; re-read only what differs.

        New and changed sessions are read and upserted, vanished ones removed.
        """
        started = time.perf_counter()
        stats = ReconcileStats()
        self._reopen_if_replaced()

        def action() -> None:
            on_disk = scan_sessions(self.sessions_dir)
            stored = dict(self.conn.execute("SELECT id, stamps FROM sessions").fetchall())
            stats.sessions = len(on_disk)
            get = stored.get
            changed = [path for key, (path, stamps) in on_disk.items() if get(key) != stamps]
            gone = [key for key in stored if key not in on_disk]
            if changed or gone:
                self._apply(changed, gone, stats, full=not stored)

        self._guard(action)
        stats.seconds = time.perf_counter() - started
        return stats

    def refresh(self, paths: Iterable[str], force: bool = False) -> ReconcileStats:
        """Re-read the sessions at *paths* whose stamps differ from the index (all with *force*).

        A path that is no longer a session directory is removed from the index.
        """
        started = time.perf_counter()
        stats = ReconcileStats()
        self._reopen_if_replaced()

        def action() -> None:
            assert self.conn is not None
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
            stats.sessions = len(to_read)
            if to_read or gone:
                self._apply(to_read, gone, stats, full=False, force=force)

        self._guard(action)
        stats.seconds = time.perf_counter() - started
        return stats

    def _apply(
        self, to_read: list[str], gone_ids: list[str], stats: ReconcileStats, full: bool, force: bool = False
    ) -> None:
        """Read *to_read* (outside the write lock) and write the result and the removals in one transaction."""
        records: list[SessionRecord] = []
        for path, record in read_sessions(to_read, self.definitions, self.workers):
            self.sessions_read += 1
            stats.read += 1
            if record is None:
                gone_ids.append(session_id_of(path))
            else:
                records.append(record)
        bulk = self._bulk() if len(records) > 1000 else contextlib.nullcontext()
        with bulk, self._write() as conn:
            existing = {
                row[0]: row[1:]
                for row in conn.execute("SELECT id, sid, stamps FROM sessions")
            } if (full or len(records) + len(gone_ids) > 64) else None
            job_batch: list[tuple] = []
            for record in records:
                if existing is not None:
                    current = existing.get(record.id)
                else:
                    current = conn.execute(
                        "SELECT sid, stamps FROM sessions WHERE id = ?", (record.id,)
                    ).fetchone()
                if not force and current is not None and current[1] == record.stamps:
                    self._ensure_texts(record)  # later records of the same worker may use them
                    continue  # another writer stored this very version meanwhile
                self._store(record, current[0] if current is not None else None, job_batch)
                if len(job_batch) >= 50_000:
                    self._flush_jobs(job_batch)
                if current is None:
                    stats.added += 1
                else:
                    stats.updated += 1
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

    # -- the watcher's heartbeat

    def set_info(self, key: str, value: Any) -> None:
        with self._write() as conn:
            conn.execute("INSERT OR REPLACE INTO info (key, value) VALUES (?, ?)", (key, _dumps(value)))

    def get_info(self, key: str) -> Any:
        assert self.conn is not None
        row = self._guard(lambda: self.conn.execute("SELECT value FROM info WHERE key = ?", (key,)).fetchone())
        return json.loads(row[0]) if row else None

    # -- reading

    def count(self) -> int:
        assert self.conn is not None
        return self._guard(lambda: self.conn.execute("SELECT count(*) FROM sessions").fetchone()[0])

    def ids(self) -> set[str]:
        assert self.conn is not None
        return self._guard(lambda: {row[0] for row in self.conn.execute("SELECT id FROM sessions")})

    def parent_jobs(self, session_id: str) -> dict[str, str | None]:
        """Child session id -> the job of *session_id* that started it."""
        return self._guard(
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

    def _query(self, flt: ListFilter, columns: Sequence[str] = _READ_COLUMNS) -> tuple[str, list[Any]]:
        where: list[str] = []
        params: list[Any] = []
        if flt.statuses:
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
            ids = list(flt.ids)
            where.append("id IN (SELECT value FROM json_each(?))")
            params.append(json.dumps(ids))
        sql = f"SELECT {', '.join(columns)} FROM sessions"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY sort_time DESC, id DESC"
        return sql, params

    def list(self, flt: ListFilter | None = None, *, documents_only: bool = False) -> list[Listed]:
        """The sessions *flt* selects, newest first, with live status.

        With *documents_only*, :attr:`Listed.summary` is None unless the
        status had to be corrected (faster: ``list --json`` only needs the documents).
        """
        flt = flt or ListFilter()
        return self._guard(lambda: self._list_rows(flt, documents_only))

    def _list_rows(self, flt: ListFilter, documents_only: bool = False) -> list[Listed]:
        assert self.conn is not None
        wanted = set(flt.statuses)
        now = time.time()
        out: list[Listed] = []
        if documents_only:
            # The fast path of ``list --json``: the stored documents, except where a status must be checked.
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

        def action() -> list[SearchHit]:
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

        return self._guard(action)

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


def _writer_alive(path: str) -> bool:
    from plainbox_like import locks  # light: readers need not import the state machinery

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
            from plainbox_like import summary

            mtime = _stamp_mtime(stamps)
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
    from plainbox_like.summary import SessionSummary

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


# -- the watcher's lock, as readers see it ---------------------------------------------------------------

WATCH_LOCK_FILE = "watch.lock"
#: The watcher records this in ``info`` at every reconcile.
HEARTBEAT_KEY = "watcher"


def watch_lock_holder(root: str) -> tuple[int, str] | None:
    """The pid and host of the watcher holding *root*'s watch lock, or None if no watcher holds it."""
    path = os.path.join(root, WATCH_LOCK_FILE)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                return None
            try:
                pid, host = os.pread(fd, 200, 0).decode("utf-8", "replace").split(None, 1)
                return int(pid), host.strip()
            except ValueError:
                return (0, "?")
        return None  # we got the lock: nobody holds it (closing the fd releases it)
    finally:
        os.close(fd)


def watcher_keeps_fresh(index: SessionIndex, now: float | None = None) -> bool:
    """Whether a live watcher holds the lock and has reconciled this very index file recently."""
    holder = watch_lock_holder(index.root)
    if holder is None:
        return False
    beat = index.get_info(HEARTBEAT_KEY)
    if not isinstance(beat, dict):
        return False
    now = time.time() if now is None else now
    interval = float(beat.get("interval") or 60.0)
    return now - float(beat.get("time") or 0.0) < 2 * interval + 30.0


def open_index(root: str, notice: Callable[[str], None] | None = None, workers: int | None = None) -> SessionIndex:
    """Open the index of *root*; if the file cannot be used, a temporary in-memory one (with a notice)."""
    try:
        return SessionIndex.open(root, notice=notice, workers=workers)
    except IndexUnusable as exc:
        if notice:
            notice(f"cannot use the index ({exc}): reading every session instead")
        index = SessionIndex.open(root, notice=notice, memory=True, workers=workers)
        return index


def fresh_index(root: str, notice: Callable[[str], None] | None = None, workers: int | None = None) -> SessionIndex:
    """The index of *root*, reconciled first unless a watcher keeps it fresh.

    If the index cannot be written (a read-only file or file system, a writer
    holding it beyond the busy timeout), a temporary in-memory one is used,
    with a notice: the answer is still complete and fresh, only slower.
    """
    index = open_index(root, notice, workers)
    try:
        if index.memory or not watcher_keeps_fresh(index):
            index.reconcile()
    except sqlite3.OperationalError as exc:
        index.close()
        if notice:
            notice(f"cannot update the index {index.path} ({exc}): reading every session instead")
        index = SessionIndex.open(root, notice=notice, memory=True, workers=workers)
        try:
            index.reconcile()
        except BaseException:
            index.close()
            raise
    except BaseException:
        index.close()
        raise
    return index


def repository_root(override: str | None = None) -> str:
    """The repository root, as :class:`storage.SessionRepository` finds it (without importing storage)."""
    from plainbox_like.paths import default_repository

    return os.path.abspath(override) if override else default_repository()


def repository_exists(root: str) -> bool:
    """Whether *root* has a sessions directory or an index (else there is nothing to list)."""
    return os.path.isdir(os.path.join(root, "sessions")) or os.path.exists(os.path.join(root, INDEX_FILE))

