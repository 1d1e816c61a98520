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
Sessions are read outside write transactions, with :func:`storage.load_session`
(snapshot + journal, read-only, retried when a writer replaces the snapshot);
bulk reads (a rebuild, hundreds of new sessions) decode the snapshot directly
when it is a plain current-version one with nothing to replay, and fall back
to :func:`storage.load_session` for anything else (the result is the same).

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
  directory had not changed for :data:`RACY_SECONDS`. Nothing then changes
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
"""

from __future__ import annotations

import collections
import contextlib
import errno
import fcntl
import itertools
import operator
import os
import re
import sqlite3
import stat
import time

from plainbox_like.errors import PlainboxLikeError
from plainbox_like.store.paths import SESSION_SUFFIX, session_id_of

# Reading the index must start fast (``list`` is a short-lived process): the
# modules that decode sessions (storage, codec, cattrs, the attrs model), and
# even typing, json, hashlib, datetime and dataclasses, are imported only where
# they are needed. The constants below mirror the library's (a test checks that
# they agree).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Sequence
    from typing import Any

    from plainbox_like.read.summary import SessionSummary

STATE_FILE = "session"  # storage.STATE_FILE
JOURNAL_FILE = "journal"  # storage.JOURNAL_FILE
FAILED_OUTCOMES = ("crash", "fail")  # model.FAILED_OUTCOMES
FLAG_INCOMPLETE = "incomplete"  # model.FLAG_INCOMPLETE
FLAG_PAUSED = "paused"  # model.FLAG_PAUSED
FORMAT = "plainbox-like"  # codec.FORMAT: the origin of our own sessions
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
SCHEMA_VERSION = 3
#: ``MIGRATIONS[n](connection)`` upgrades schema *n* to *n + 1* inside a write transaction.
#: An older index without a path of migrations to the current version is rebuilt.
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {}
#: How long a writer waits for another one (seconds); a full rebuild holds the write lock that long at most.
BUSY_TIMEOUT = 120.0
#: Page size of a new index file (bytes): a fresh ``list`` reads the documents of every session in
#: order, a quarter as many reads as with the default 4096.
PAGE_SIZE = 16384
#: Reading this many sessions or more uses a process pool (when more than one worker is allowed).
POOL_THRESHOLD = 200
#: A session whose directory changed less than this long (seconds) before it was read is not
#: settled yet: modification times are coarse (a clock tick; a second on some file systems),
#: so a change in the same tick as the one before would leave the directory's time as it was.
RACY_SECONDS = 2.0

#: ``sessions.settled``: checked in full by every reconcile / settled: the quick reconcile
#: stats the directory only / would be settled but was read too soon after its directory changed.
UNSETTLED, SETTLED, SETTLING = 0, 1, 2

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
# ``dir_key``: see :func:`_dir_key`.
#: Indexes a rebuild drops and makes again once every row is in (cheaper than keeping them up to date).
BULK_INDEXES = {
    "jobs_by_text": "CREATE INDEX jobs_by_text ON jobs (tid)",
    "sessions_by_time": "CREATE INDEX sessions_by_time ON sessions (sort_time DESC, id DESC, doc)",
    "sessions_settled": "CREATE INDEX sessions_settled ON sessions (settled, dir_key)",
}

#: Columns of ``sessions`` a :class:`SessionRecord` fills, in ``SessionRecord.row`` order.
SESSION_COLUMNS = (
    "id", "path", "title", "app_id", "origin", "flags", "incomplete", "status", "reason",
    "state_missing", "created", "updated", "finished", "sort_time", "counts", "total", "done",
    "running_job", "runner_pid", "runner_host", "tags", "parent_session", "parent_job",
    "stamps", "settled", "dir_key", "indexed", "doc",
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


#: The files SQLite keeps beside the index (WAL mode, and a rollback journal).
SIDE_FILE_SUFFIXES = ("-wal", "-shm", "-journal")


def refuse_symlinked_index(path: str) -> None:
    """Raise :class:`IndexUnusable` if the index file (or its -wal, -shm, -journal) is a symbolic link.

    The index is never opened through a link: SQLite would create or write
    the link's target, wherever it points (even outside the repository).
    """
    for suffix in ("", *SIDE_FILE_SUFFIXES):
        if os.path.islink(path + suffix):
            raise IndexUnusable(f"{path + suffix}: is a symbolic link: the index is never opened through one")


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
            raise IndexUnusable(f"{path}{suffix}: {exc.strerror or exc}") from None
        if not stat.S_ISREG(mode):
            raise IndexUnusable(f"{path}{suffix}: not a regular file: remove it (the index holds only derived data)")


# -- stamps ------------------------------------------------------------------------


def _stamp(st: os.stat_result) -> str:
    """A file's or directory's stamp: ``mtime_ns:size:inode:ctime_ns``. The change time cannot be
    set back (``cp -a`` and ``touch`` set the modification time, not this), so a file or directory
    replaced by another, even with the same inode number, size and times, has another stamp."""
    return f"{st.st_mtime_ns}:{st.st_size}:{st.st_ino}:{st.st_ctime_ns}"


def file_stamp(path: str, dir_fd: int | None = None) -> str:
    """:func:`_stamp` of *path* (relative to *dir_fd* if given); ``-`` if it does not exist."""
    try:
        return _stamp(os.stat(path, dir_fd=dir_fd))
    except FileNotFoundError:
        return "-"
    except OSError as exc:
        return f"error{exc.errno}"


def session_stamps(path: str) -> str | None:
    """The stamps of a session directory: ``DIR|SESSION|JOURNAL``, each a :func:`_stamp` (``-`` for a
    missing file); None if *path* is not a directory (any more). Stat only."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode):
        return None
    return f"{_stamp(st)}|{file_stamp(path + '/' + STATE_FILE)}|{file_stamp(path + '/' + JOURNAL_FILE)}"


def _dir_key(session_id: str, stamps: str) -> str:
    """``NAME CTIME_NS:INODE`` of a session's directory (NAME: ``ID.session``), from its stamps: what
    the quick reconcile compares for a settled session. Any change to the directory (an entry made,
    removed or renamed; its times set; a directory put in its place) changes its change time or
    its inode."""
    parts = stamps.split("|", 1)[0].split(":")
    if len(parts) != 4:
        return f"{session_id}{SESSION_SUFFIX} -"  # (matches no directory)
    return f"{session_id}{SESSION_SUFFIX} {parts[3]}:{parts[2]}"


def _stamp_ctime(stamps: str) -> float | None:
    """The change time of the directory, from its stamps."""
    try:
        return int(stamps.split("|", 1)[0].split(":")[3]) / 1e9
    except (IndexError, ValueError):
        return None


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
            stamps = f"{_stamp(st)}|{file_stamp(path + state_name)}|{file_stamp(path + journal_name)}"
            found[name[:cut]] = (path, stamps)
    return found


def scan_ids(sessions_dir: str) -> set[str]:
    """The ids of the session directories under *sessions_dir* (no stat beyond the listing)."""
    try:
        entries = os.scandir(sessions_dir)
    except (FileNotFoundError, NotADirectoryError):
        return set()
    suffix = SESSION_SUFFIX
    cut = -len(suffix)
    found = set()
    with entries:
        for entry in entries:
            name = entry.name
            if name.endswith(suffix) and not name.startswith("."):
                try:
                    if entry.is_dir(follow_symlinks=False):
                        found.add(name[:cut])
                except OSError:
                    continue
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
        self._configs: collections.OrderedDict[bytes, Any] = collections.OrderedDict()
        self._entries: collections.OrderedDict[tuple, dict[str, tuple]] = collections.OrderedDict()
        self._stamps: dict[str, tuple[float, Any]] = {}
        #: How many times unit files were parsed (for tests and benchmarks).
        self.parses = 0

    def _config(self, blob: str | None) -> Any:
        if not blob:
            return None
        import hashlib  # only sessions with a run configuration get here

        # Keyed by a digest: a blob holds per-job metadata and can be hundreds of KiB.
        key = hashlib.blake2b(blob.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        if key in self._configs:
            self._configs.move_to_end(key)
            return self._configs[key]
        from plainbox_like.run.batch import RunConfig  # the runner machinery is only needed here

        try:
            config = RunConfig.from_blob(blob)
            config.sources = [str(s) for s in config.sources]
            config.commands = [str(c) for c in config.commands]
        except Exception:  # noqa: BLE001 - Plainbox's own blobs, or damage: index ids only
            config = None
        self._configs[key] = config
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
        """``job id -> (checksum, (tid, key, job id, summary, command))`` for the session whose ``app_blob`` is *blob*.

        Never raises: missing or unreadable files give what the other files
        define (possibly nothing).
        """
        config = self._config(blob)
        if config is None:
            return {}
        providers = [str(p) for p in getattr(config, "providers", None) or []]
        key = (
            tuple(config.sources),
            tuple(config.commands),
            tuple(self._source_stamp(source) for source in config.sources),
            tuple(providers),
        )
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
            return entry
        entry = self._load(config.sources, config.commands, providers)
        self._entries[key] = entry
        if len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return entry

    def _load(self, sources: list[str], commands: list[str], providers: list[str] = ()) -> dict[str, tuple]:
        from plainbox_like.define.providers import find_providers
        from plainbox_like.define.units import load_units

        self.parses += 1
        jobs: list[Any] = []
        try:
            found = find_providers(providers, search=False)[0] if providers else []
            jobs = list(load_units(sources, commands, providers=found).jobs)
        except Exception:  # noqa: BLE001 - a file is missing or broken: take what each part defines
            for part in [[source] for source in sources] + ([[]] if commands else []):
                try:
                    jobs.extend(load_units(part, commands if not part else ()).jobs)
                except Exception:  # noqa: BLE001
                    continue
        # Only a definition whose checksum matches the session's is what ran;
        # the checksum covers the id too, so renumbered command-list jobs do not match.
        return {job.id: (job.checksum, text_identity(job.id, job.summary, job.command)) for job in jobs}


# -- reading one session -------------------------------------------------------------------


class _Fields:
    """A small record class: positional or keyword construction from ``__slots__``, equality, repr
    (what :func:`dataclasses.dataclass` would give, without importing it at start-up)."""

    __slots__: tuple[str, ...] = ()
    _defaults: dict[str, Any] = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        names = self.__slots__
        if len(args) > len(names):
            raise TypeError(f"{type(self).__name__}() takes at most {len(names)} arguments")
        values = dict(zip(names, args))
        for name, value in kwargs.items():
            if name not in names or name in values:
                raise TypeError(f"{type(self).__name__}() got an unexpected or repeated argument {name!r}")
            values[name] = value
        for name in names:
            if name in values:
                value = values[name]
            elif name in self._defaults:
                value = self._defaults[name]
            else:
                raise TypeError(f"{type(self).__name__}() missing argument {name!r}")
            object.__setattr__(self, name, value)

    def _values(self) -> tuple:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._values() == other._values()  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{n}={getattr(self, n)!r}' for n in self.__slots__)})"


class _FrozenFields(_Fields):
    __slots__ = ()

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"cannot assign to field {name!r}")

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(self._values())

    def __reduce__(self) -> tuple:
        return (type(self), self._values())


class SessionRecord(_Fields):
    """What the index stores about one session: a ``sessions`` row, its job rows and their texts.

    Fields: ``id``, ``path``, ``stamps`` (:func:`session_stamps` before the session was read),
    ``sid``, ``row`` (in :data:`SESSION_COLUMNS` order), ``jobs`` (``jobs`` rows:
    ``(sid, position, tid, attempt, outcome, return_code, duration, started, running)``) and
    ``texts`` (``(tid, key, job_id, summary, command)`` of the texts the jobs use; from a worker,
    those it did not send before).
    """

    __slots__ = ("id", "path", "stamps", "sid", "row", "jobs", "texts")

    @property
    def title(self) -> str | None:
        return self.row[_COL["title"]]

    def __getstate__(self) -> tuple:
        return self._values()

    def __setstate__(self, state: tuple) -> None:
        for name, value in zip(self.__slots__, state):
            object.__setattr__(self, name, value)


def stable_id(text: str) -> int:
    """A positive 63-bit number derived from *text* (the same in every process)."""
    import hashlib

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
    import datetime

    return datetime.datetime.fromtimestamp(epoch, tz=datetime.timezone.utc).isoformat()


def summary_document(s: SessionSummary) -> dict[str, Any]:
    """A summary as ``list --json`` shows it: plain values, times as ISO 8601 UTC strings."""
    data = s.as_dict()
    for key in TIME_FIELDS:
        data[key] = iso_time(data[key])
    return data


def _scalar(value: Any, encode: Callable[[str], str]) -> str | None:
    kind = type(value)
    if kind is str:
        return encode(value)
    if value is None:
        return "null"
    if kind is int:
        return int.__repr__(value)
    if kind is float and value - value == 0.0:  # finite
        return float.__repr__(value)
    return None


def render_document(s: SessionSummary) -> str:
    """:func:`summary_document` as ``json.dumps(..., indent=2, sort_keys=True, ensure_ascii=False)`` does it."""
    return _render(summary_document(s))


def _render(doc: dict[str, Any]) -> str:
    """*doc* as ``json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False)`` writes it.

    Written out directly for the flat shape of a summary (about ten times
    faster than the pure-Python indenting encoder); anything unusual is left
    to :func:`json.dumps`.
    """
    import json

    encode = json.encoder.encode_basestring  # the C version when available, as json.dumps uses
    lines = []
    for key in sorted(doc):
        value = doc[key]
        text = _scalar(value, encode)
        if text is None:
            if type(value) is list and all(type(v) is str for v in value):
                text = "[\n" + ",\n".join("    " + encode(v) for v in value) + "\n  ]" if value else "[]"
            elif type(value) is dict and all(type(k) is str and type(v) is int for k, v in value.items()):
                text = (
                    "{\n" + ",\n".join(f"    {encode(k)}: {int.__repr__(value[k])}" for k in sorted(value)) + "\n  }"
                    if value
                    else "{}"
                )
            else:
                return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False)
        lines.append(f"  {encode(key)}: {text}")
    if not lines:
        return "{}"
    return "{\n" + ",\n".join(lines) + "\n}"


def nested_document(s: SessionSummary) -> str:
    """:func:`render_document` indented as an element of the ``list --json`` list."""
    return "  " + render_document(s).replace("\n", "\n  ")


_compact_encoder: Any = None


def _dumps(obj: Any) -> str:
    """Compact JSON with sorted keys (``json.dumps`` would make a new encoder at every call)."""
    global _compact_encoder
    if _compact_encoder is None:
        import json

        _compact_encoder = json.JSONEncoder(separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return _compact_encoder.encode(obj)


def _json_strings(values: list[Any]) -> str:
    """:func:`_dumps` of a list (shorter work for a list of strings)."""
    if type(values) is list and {*map(type, values)} <= _STR:
        return "[" + ",".join(map(_encode_string(), values)) + "]"
    return _dumps(values)


def _json_counts(counts: dict[str, Any]) -> str:
    """:func:`_dumps` of a dict (shorter work for strings to integers)."""
    if type(counts) is dict and {*map(type, counts.values())} <= _INT:
        encode = _encode_string()
        return "{" + ",".join(f"{encode(k)}:{int.__repr__(counts[k])}" for k in sorted(counts)) + "}"
    return _dumps(counts)


def _encode_string() -> Callable[[str], str]:
    """JSON's string encoder (the C one when there is one), as ``json.dumps(..., ensure_ascii=False)`` uses it."""
    import json

    return json.encoder.encode_basestring


_STR = {str}
_INT = {int}

#: Texts of jobs without a matching definition, by job id (a cache; bounded).
_id_texts: dict[str, tuple] = {}


def _id_text(job_id: str) -> tuple:
    text = _id_texts.get(job_id)
    if text is None:
        if len(_id_texts) > 100_000:
            _id_texts.clear()
        text = _id_texts[job_id] = text_identity(job_id, None, None)
    return text


def _job_rows(sid: int, state: Any, defs: dict[str, tuple], sent: set[int] | None) -> tuple[list[tuple], list[tuple]]:
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
        text = definition[1] if definition is not None and definition[0] == get_checksum(job_id) else _id_text(job_id)
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


def _settled(status: str, origin: str | None, holder: tuple[int, str] | None, stamps: str, checked: float) -> int:
    """:data:`SETTLED`, :data:`SETTLING` or :data:`UNSETTLED` for a session read as described
    (*holder*: the lock file's, *checked*: when *stamps* were taken)."""
    if status not in (STATUS_COMPLETE, STATUS_INCOMPLETE) or origin != FORMAT:
        return UNSETTLED
    if holder is not None:
        from plainbox_like.store.locks import hostname

        if holder[1] != hostname():  # a writer there may be alive: we cannot tell from here
            return UNSETTLED
    changed = _stamp_ctime(stamps)
    if changed is None:
        return UNSETTLED
    return SETTLED if checked - changed > RACY_SECONDS else SETTLING


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
    settled: int = UNSETTLED,
) -> SessionRecord:
    """The record of a session summarized as *s*."""
    return _make_record(
        s.as_dict(), stamps, jobs, texts, sid=sid, incomplete=incomplete, state_missing=state_missing,
        parent_job=parent_job, settled=settled,
    )  # fmt: skip


def _make_record(
    fields: dict[str, Any],
    stamps: str,
    jobs: Any,
    texts: Any,
    *,
    sid: int | None,
    incomplete: bool,
    state_missing: bool,
    parent_job: str | None,
    settled: int,
) -> SessionRecord:
    """The record of a session whose summary (``SessionSummary.as_dict()``) is *fields*."""
    created = fields["created"]
    sort_time = created if created is not None else (_stamp_mtime(stamps) or 0.0)
    doc = dict(fields)
    for key in TIME_FIELDS:
        doc[key] = iso_time(doc[key])
    counts = fields["counts"]
    row = (
        fields["id"],
        fields["path"],
        fields["title"],
        fields["app_id"],
        fields["origin"],
        _json_strings(fields["flags"]),
        int(incomplete),
        fields["status"],
        fields["reason"],
        int(state_missing),
        created,
        fields["updated"],
        fields["finished"],
        sort_time,
        _json_counts(counts),
        fields["total"],
        sum(counts.values()),
        fields["running_job"],
        fields["runner_pid"],
        fields["runner_host"],
        _json_strings(fields["tags"]),
        fields["parent_session"],
        parent_job,
        stamps,
        settled,
        _dir_key(fields["id"], stamps),
        time.time(),
        "  " + _render(doc).replace("\n", "\n  "),
    )
    return SessionRecord(
        fields["id"], fields["path"], stamps, stable_id(fields["id"]) if sid is None else sid, row, list(jobs), list(texts)
    )


def read_session(
    path: str,
    definitions: DefinitionCache | None = None,
    now: float | None = None,
    sent: set[int] | None = None,
    *,
    fast: bool = False,
    sid: int | None = None,
) -> SessionRecord | None:
    """Read the session at *path* for the index; None if the directory is gone.

    Never raises for a bad session: it becomes a ``corrupt`` record with the
    reason, as :func:`summary.summarize` reports it. The stamps are taken
    before reading, so a change made while reading shows as a difference at
    the next reconcile (the session is read again), never as a stale entry.
    Texts whose tid is in *sent* are left out of the record (and new ones added to it).
    With *fast*, a plain snapshot with nothing to replay is decoded directly (see :func:`_read_plain`).
    The record's sid is *sid*, or else the session id's :func:`stable_id`.
    """
    path = os.path.abspath(path)
    checked = time.time()
    stamps = session_stamps(path)
    if stamps is None:
        return None
    if fast and _has_state(stamps):
        record = _read_plain(path, stamps, checked, definitions, sent, sid)
        if record is not None:
            return record
    from plainbox_like.store import locks, storage
    from plainbox_like.read import summary
    from plainbox_like.read.summary import SessionSummary

    session_id = session_id_of(path)
    try:
        if not _has_state(stamps) and summary.being_created(path, now):
            holder = storage.lock_holder(path)
            pid, host = holder if holder else (None, None)
            s = SessionSummary(id=session_id, path=path, status=summary.STATUS_RUNNING, runner_pid=pid, runner_host=host)
            return make_record(s, stamps, sid=sid, incomplete=True, state_missing=True)
        loaded = storage.load_session(path)
        s = summary.summarize_loaded(loaded)
        defs = definitions.definitions(loaded.state.metadata.app_blob) if definitions is not None else {}
        if sid is None:
            sid = stable_id(session_id)
        jobs, texts = _job_rows(sid, loaded.state, defs, sent)
        return make_record(
            s,
            stamps,
            jobs,
            texts,
            sid=sid,
            incomplete=FLAG_INCOMPLETE in loaded.state.metadata.flags,
            state_missing=False,
            parent_job=loaded.state.metadata.parent_job,
            settled=_settled(s.status, s.origin, locks.lock_holder(path), stamps, checked),
        )
    except Exception as exc:  # noqa: BLE001 - every problem is reported in the record
        if not os.path.isdir(path):
            return None
        s = SessionSummary(id=session_id, path=path, status=summary.STATUS_CORRUPT, reason=summary.one_line(exc))
        return make_record(s, stamps, sid=sid, incomplete=False, state_missing=not _has_state(stamps))


# -- reading a plain snapshot directly ------------------------------------------------------
#
# What :func:`storage.load_session` and :func:`summary.summarize_loaded` make of a session, computed
# from the decoded JSON without building the model (most of the cost of reading thousands of
# sessions). Only for a snapshot of the current version that the codec's converter accepts as it is,
# with no journal change to replay: every field is checked against the types the converter accepts,
# and anything else (an older version, a Plainbox session, a journal to replay, a value of another
# type, damage) goes the ordinary way, so the record is the same either way (a test compares them).

_NONE = type(None)
#: Types the converter accepts for each field of an attempt (``outcome`` is required).
_ATTEMPT_TYPES: dict[str, tuple[type, ...]] = {
    "outcome": (str,),
    "return_code": (_NONE, int),
    "execution_duration": (_NONE, float, int),
    "comments": (_NONE, str),
    "io_log_filename": (_NONE, str),
    "attempt": (int,),
    "started": (_NONE, float, int),
    "skip_reason": (_NONE, str),
    "leftover_processes": (_NONE,),  # an object: the ordinary way checks it
}
#: Attempt fields a writer leaves out when empty (lists of strings).
_OPTIONAL_ATTEMPT_LISTS = ("leftover_files",)
_METADATA_TYPES: dict[str, tuple[type, ...]] = {
    "title": (_NONE, str),
    "flags": (list,),
    "running_job_name": (_NONE, str),
    "app_id": (_NONE, str),
    "app_blob": (_NONE, str),
    "created": (_NONE, float, int),
    "updated": (_NONE, float, int),
    "finished": (_NONE, float, int),
    "tags": (list,),
    "parent_session": (_NONE, str),
    "parent_job": (_NONE, str),
    "runner": (_NONE, dict),
}
_LIST = {list}
_DICT = {dict}
#: The ``jobs`` columns ``attempt`` to ``started`` from an attempt object (in that order).
_latest_fields = operator.itemgetter("attempt", "outcome", "return_code", "execution_duration", "started")
_all_attempt_fields = operator.itemgetter(*_ATTEMPT_TYPES)
#: Value types (in :data:`_ATTEMPT_TYPES` order) of attempts with every field that the converter takes.
_good_signatures: set[tuple[type, ...]] = set()
#: Attempt shapes ``(keys, value types)`` already checked: whether the converter accepts them.
_attempt_shapes: dict[tuple, bool] = {}
_plain_modules: Any = None


def _attempt_shape_ok(shape: tuple) -> bool:
    keys, types = shape
    ok = "outcome" in keys and all(t in _ATTEMPT_TYPES.get(k, (t,)) for k, t in zip(keys, types))
    if len(_attempt_shapes) < 10_000:
        _attempt_shapes[shape] = ok
    return ok


def _str_list(value: Any) -> bool:
    return type(value) is list and {*map(type, value)} <= _STR


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _planned_count(desired: Iterable[str], results: Iterable[str]) -> int:
    from plainbox_like.store.model import planned_count  # the codec has imported it by the time a session is read

    return planned_count(desired, results)


def _plain_state(session: dict[str, Any]) -> tuple | None:
    """The parts of a snapshot's ``session`` object the index needs, if the converter takes it as it is."""
    get = session.get
    jobs = get("jobs", {})
    results = get("results", {})
    desired = get("desired_job_list", [])
    meta = get("metadata", {})
    running = get("running_jobs", {})
    seq = get("journal_seq", 0)
    resources = get("resources", {})
    if not (
        type(jobs) is dict
        and type(results) is dict
        and type(meta) is dict
        and type(running) is dict
        and type(seq) is int
        and type(resources) is dict
        and _str_list(desired)
        and _str_list(get("mandatory_job_list", []))
        and {*map(type, jobs.values())} <= _STR
    ):
        return None
    for key, value in meta.items():
        allowed = _METADATA_TYPES.get(key)
        if allowed is not None and type(value) not in allowed:
            return None
    if not (_str_list(meta.get("flags", [])) and _str_list(meta.get("tags", []))):
        return None
    runner = meta.get("runner")
    if runner is not None and not (type(runner.get("pid")) is int and type(runner.get("host")) is str):
        return None
    for job in running.values():
        if not (
            type(job) is dict
            and type(job.get("attempt")) is int
            and type(job.get("started")) in (float, int)
            and type(job.get("io_log_filename")) in (_NONE, str)
        ):
            return None
    for records in resources.values():
        if type(records) is not list or not all(type(r) is dict and {*map(type, r.values())} <= _STR for r in records):
            return None
    if not {*map(type, results.values())} <= _LIST:
        return None
    attempts = list(itertools.chain.from_iterable(results.values()))
    if not {*map(type, attempts)} <= _DICT:
        return None
    if not _attempts_ok(attempts):
        return None
    return jobs, results, desired, meta, running, seq


def _attempts_ok(attempts: list[dict[str, Any]]) -> bool:
    """Whether the converter takes every one of these attempt objects as it is."""
    if {*map(len, attempts)} - {len(_ATTEMPT_TYPES)}:  # some have optional fields (or lack some): check those
        for attempt in attempts:
            if len(attempt) != len(_ATTEMPT_TYPES):
                for key in _OPTIONAL_ATTEMPT_LISTS:
                    if key in attempt and not _str_list(attempt[key]):
                        return False
    try:
        # Each attempt's value types in the order of _ATTEMPT_TYPES, all in C (a KeyError: a field left out).
        signatures = {*map(tuple, map(map, itertools.repeat(type), map(_all_attempt_fields, attempts)))}
    except KeyError:
        signatures = None
    if signatures is not None and signatures <= _good_signatures:
        return True
    if signatures is not None and len(signatures) < 64:
        for signature in signatures - _good_signatures:
            if not all(t in allowed for t, allowed in zip(signature, _ATTEMPT_TYPES.values())):
                return False
            _good_signatures.add(signature)
        return True
    shapes = _attempt_shapes  # fields left out (others' writers), or many kinds: one by one
    for attempt in attempts:
        shape = (tuple(attempt), tuple(map(type, attempt.values())))
        ok = shapes.get(shape)
        if ok is None:
            ok = _attempt_shape_ok(shape)
        if not ok:
            return False
    return True


def _read_plain(
    path: str,
    stamps: str,
    checked: float,
    definitions: DefinitionCache | None,
    sent: set[int] | None,
    sid: int | None = None,
) -> SessionRecord | None:
    """The record of the session at *path* read from its snapshot directly, or None to read it the ordinary way."""
    global _plain_modules
    if _plain_modules is None:
        import orjson

        from plainbox_like.store import codec, locks, storage

        # (If the codec's format name ever differs from the one mirrored here, nothing is read directly.)
        ok = codec.FORMAT == FORMAT
        _plain_modules = (
            (orjson.loads, codec.gunzip, codec.VERSION, storage.parse_journal, locks, storage.open_session_file) if ok else ()
        )
    if not _plain_modules:
        return None
    loads, decompress, version, parse_journal, locks, open_session_file = _plain_modules
    state_path = path + "/" + STATE_FILE
    journal_path = path + "/" + JOURNAL_FILE
    try:
        fd = open_session_file(path, STATE_FILE)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        doc = loads(decompress(_read_all(fd, st.st_size), state_path))  # bounded: a gzip bomb is no state
        if type(doc) is not dict or doc.get("format") != FORMAT:
            return None
        number = doc.get("version")
        session = doc.get("session")
        if type(number) is not int or number != version or type(session) is not dict:
            return None
        plain = _plain_state(session)
        if plain is None:
            return None
        jobs, results, desired, meta, running, seq = plain
        try:
            journal_fd = open_session_file(path, JOURNAL_FILE)
        except FileNotFoundError:
            journal = b""
        else:
            try:
                journal = _read_all(journal_fd, os.fstat(journal_fd).st_size)
            finally:
                os.close(journal_fd)
        if journal.strip(b" \t\r\n") and parse_journal(journal, journal_path, seq).changes:
            return None  # changes to replay: the model does that
        now = os.stat(state_path)
        if (now.st_ino, now.st_mtime_ns) != (st.st_ino, st.st_mtime_ns):
            return None  # replaced while we read
    except Exception:  # noqa: BLE001 - whatever it is, the ordinary way reports it
        return None
    finally:
        os.close(fd)

    flags = meta.get("flags", [])
    holder = locks.lock_holder(path)
    if holder is not None and holder[1] == locks.hostname() and locks.pid_alive(holder[0]) and locks.writer_alive(path):
        status = STATUS_PAUSED if FLAG_PAUSED in flags else STATUS_RUNNING
    else:
        status = STATUS_INCOMPLETE if FLAG_INCOMPLETE in flags else STATUS_COMPLETE
    runner = meta.get("runner")
    if status == STATUS_RUNNING and holder is not None:
        pid, host = holder
    elif runner is not None:
        pid, host = runner["pid"], runner["host"]
    else:
        pid = host = None
    name = meta.get("running_job_name")
    if name and (name in running or not results.get(name)):
        running_job = name
    else:
        running_job = max(running, key=lambda job: (float(running[job]["started"]), job), default=None)
    counts: dict[str, int] = {}
    for attempts in results.values():
        if attempts:
            outcome = attempts[-1]["outcome"]
            counts[outcome] = counts.get(outcome, 0) + 1
    session_id = session_id_of(path)
    fields = {
        "id": session_id,
        "path": path,
        "status": status,
        "reason": None,
        "title": meta.get("title"),
        "created": _float(meta.get("created")),
        "updated": _float(meta.get("updated")),
        "finished": _float(meta.get("finished")),
        "counts": counts,
        "total": _planned_count(desired, results),
        "running_job": running_job,
        "runner_pid": pid,
        "runner_host": host,
        "tags": list(meta.get("tags", [])),
        "flags": list(flags),
        "parent_session": meta.get("parent_session"),
        "app_id": meta.get("app_id"),
        "origin": FORMAT,
    }
    if sid is None:
        sid = stable_id(session_id)
    defs = definitions.definitions(meta.get("app_blob")) if definitions is not None else {}
    rows, texts = _plain_job_rows(sid, jobs, results, desired, running, defs, sent)
    return _make_record(
        fields, stamps, rows, texts, sid=sid, incomplete=FLAG_INCOMPLETE in flags, state_missing=False,
        parent_job=meta.get("parent_job"), settled=_settled(status, FORMAT, holder, stamps, checked),
    )  # fmt: skip


def _read_all(fd: int, size: int) -> bytes:
    """Everything in the file open at *fd*, whose size was *size* (one read, unless it grew).
    (An empty file is not read: what was appended since is as if appended after the read.)"""
    if size == 0:
        return b""
    data = os.read(fd, size + 1)
    if len(data) <= size:
        return data
    chunks = [data]
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _plain_job_rows(
    sid: int,
    checksums: dict[str, str],
    results: dict[str, list[dict[str, Any]]],
    desired: list[str],
    running_jobs: dict[str, dict[str, Any]],
    defs: dict[str, tuple],
    sent: set[int] | None,
) -> tuple[list[tuple], list[tuple]]:
    """:func:`_job_rows` of a plain snapshot's objects.

    (Durations and start times are passed as the snapshot has them: the columns' REAL affinity
    stores an integer as the float the model would have made of it.)
    """
    # Plan order, then jobs with results, then running ones; each with its attempts (or None).
    order: dict[str, Any] = dict.fromkeys(desired)
    order.update(results)
    for job_id in running_jobs:
        if job_id not in order:
            order[job_id] = None
    ids = list(order)
    texts = [
        definition[1] if definition is not None and definition[0] == checksum else _id_text(job_id)
        for job_id, definition, checksum in zip(ids, map(defs.get, ids), map(checksums.get, ids))
    ]
    tids = list(map(_first, texts))
    rows = _finished_rows(sid, tids, order.values()) if not running_jobs else None
    if rows is None:
        rows = []
        append = rows.append
        latest_fields = _latest_fields
        get_running = running_jobs.get
        for position, job_id, attempts, tid in zip(itertools.count(), ids, order.values(), tids):
            running = get_running(job_id) if running_jobs else None
            if running is None:
                if attempts:
                    try:
                        append((sid, position, tid, *latest_fields(attempts[-1]), 0))
                    except KeyError:  # our writer writes every field; others may leave out optional ones
                        latest = attempts[-1]
                        get = latest.get
                        append((sid, position, tid, get("attempt", 1), latest["outcome"], get("return_code"),
                                get("execution_duration"), get("started"), 0))  # fmt: skip
                else:
                    append((sid, position, tid, None, None, None, None, None, 0))
            elif attempts:
                latest = attempts[-1]
                get = latest.get
                append((sid, position, tid, running["attempt"], latest["outcome"], get("return_code"),
                        get("execution_duration"), running["started"], 1))  # fmt: skip
            else:
                append((sid, position, tid, running["attempt"], None, None, None, running["started"], 1))
    if sent is not None:  # only the texts not sent before (job ids are unique in a session: so are their texts)
        new = set(tids).difference(sent)
        texts = [text for text in texts if text[0] in new] if new else []
        sent.update(new)
    return rows, texts


def _finished_rows(sid: int, tids: list[int], attempts_of_jobs: Iterable[Any]) -> list[tuple] | None:
    """The rows of jobs that all have attempts with every field and none running (the usual case),
    built column by column in C; None for anything else (the caller goes job by job)."""
    if not tids or not all(attempts_of_jobs):
        return None
    try:
        columns = list(zip(*map(_latest_fields, map(_last, attempts_of_jobs))))
    except KeyError:  # an attempt without an optional field
        return None
    return list(zip(itertools.repeat(sid), itertools.count(), tids, *columns, itertools.repeat(0)))


_first = operator.itemgetter(0)
_last = operator.itemgetter(-1)


# -- reading many ---------------------------------------------------------------------------

_worker_definitions: DefinitionCache | None = None
#: Texts this worker has sent to the parent in the current pool (sent once each).
_worker_sent: set[int] = set()
_worker_fast = False


def _start_worker(fast: bool = False) -> None:
    global _worker_definitions, _worker_fast
    _worker_definitions = DefinitionCache()
    _worker_sent.clear()
    _worker_fast = fast
    _no_cycle_collection()


def _no_cycle_collection() -> None:
    """Reading sessions makes millions of small objects and no reference cycles: the cyclic garbage
    collector would only walk them over and over (a reader process lives as long as its pool)."""
    import gc

    gc.disable()


def _read_in_worker(item: tuple[int | None, str]) -> tuple[str, SessionRecord | None]:
    sid, path = item
    return path, read_session(path, _worker_definitions, sent=_worker_sent, fast=_worker_fast, sid=sid)


def default_workers() -> int:
    """Worker processes for reading many sessions: the CPUs this process may use, at most 8."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(8, cpus))


def read_sessions(
    paths: Sequence[str], definitions: DefinitionCache, workers: int | None = None, *, fast: bool | None = None
) -> Iterator[tuple[str, SessionRecord | None]]:
    """``(path, record)`` for each of *paths*, in any order; a process pool reads many at once.

    *fast* (see :func:`read_session`) defaults to whether there are :data:`POOL_THRESHOLD` paths or more.
    """
    with reading_sessions(paths, definitions, workers, fast=fast) as results:
        yield from results


@contextlib.contextmanager
def reading_sessions(
    paths: Sequence[str],
    definitions: DefinitionCache,
    workers: int | None = None,
    *,
    fast: bool | None = None,
    numbered: bool = False,
) -> Iterator[Iterator[tuple[str, SessionRecord | None]]]:
    """:func:`read_sessions`, with the process pool started (and reading) on entering.

    If *numbered*, the n-th path's record gets sid n (from 1) instead of its stable id: for an
    empty index, where rows in ascending key order are much cheaper to insert than rows keyed by hash.
    """
    if fast is None:
        fast = len(paths) >= POOL_THRESHOLD
    workers = default_workers() if workers is None else max(1, workers)
    items = enumerate(paths, 1) if numbered else zip(itertools.repeat(None), paths)
    if workers == 1 or len(paths) < POOL_THRESHOLD:
        yield ((path, read_session(path, definitions, fast=fast, sid=sid)) for sid, path in items)
        return
    import multiprocessing
    import threading

    # fork is cheapest; with other threads running (the watcher's observer) it is not safe.
    method = "fork" if threading.active_count() == 1 else "forkserver"
    context = multiprocessing.get_context(method)
    chunk = max(1, min(64, len(paths) // (workers * 8) or 1))
    with context.Pool(workers, initializer=_start_worker, initargs=(fast,)) as pool:
        yield pool.imap_unordered(_read_in_worker, items, chunksize=chunk)


# -- filters and results -------------------------------------------------------------------


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


class JobMatch(_FrozenFields):
    """A job of a session that matched a search."""

    __slots__ = ("id", "outcome", "attempt", "return_code", "duration", "running", "summary", "command")

    def as_dict(self) -> dict[str, Any]:
        return dict(zip(self.__slots__, self._values()))


class SearchHit(_FrozenFields):
    """A session that matched a search: whether its title matched, and which of its jobs did."""

    __slots__ = ("listed", "title_matched", "jobs")


class ReconcileStats(_Fields):
    """What a reconcile (or rebuild) did: ``sessions`` seen, ``read``, ``added``, ``updated``,
    ``removed``, and ``seconds`` taken."""

    __slots__ = ("sessions", "read", "added", "updated", "removed", "seconds")
    _defaults = {"sessions": 0, "read": 0, "added": 0, "updated": 0, "removed": 0, "seconds": 0.0}

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
            st = stat_(name, dir_fd=fd, follow_symlinks=False)
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
                self._refill(ReconcileStats())

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

    def _store(self, record: SessionRecord, current_sid: int | None, job_batch: _JobBatch) -> int:
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
            job_batch.add(record.jobs)
        else:
            job_batch.add([(sid, r[1], remap.get(r[2], r[2]), *r[3:]) for r in record.jobs])
        return sid

    _insert_session_head = f"INSERT INTO sessions (sid, {', '.join(SESSION_COLUMNS)})"
    _insert_session_sql = f"{_insert_session_head} VALUES (?{', ?' * len(SESSION_COLUMNS)})"

    def _store_new(self, records: list[SessionRecord], job_batch: _JobBatch) -> None:
        """:meth:`_store` for sessions the index does not have yet, many rows per statement."""
        conn = self.conn
        assert conn is not None
        if not records:
            return
        plain = True
        for record in records:
            if self._ensure_texts(record):
                plain = False  # a text needed another tid: the one-by-one way applies it
        if plain:
            conn.execute("SAVEPOINT store_new")
            try:
                _insert_rows(
                    conn, self._insert_session_head, len(SESSION_COLUMNS) + 1, len(records),
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
            assert self.conn is not None
            _insert_rows(self.conn, "INSERT INTO jobs", 9, job_batch.rows, job_batch.sorted_rows())
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

    def _populate(self, results: Iterable[tuple[str, SessionRecord | None]], stats: ReconcileStats) -> None:
        """Store every record of *results* in an empty index (inside a write transaction)."""
        job_batch = _JobBatch()
        new: list[SessionRecord] = []
        for _path, record in results:
            self.sessions_read += 1
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

    def _refill(self, stats: ReconcileStats) -> None:
        """Drop everything and read every session again (inside a write transaction)."""
        import gc

        collecting = gc.isenabled()
        gc.disable()  # a million rows of plain values, no cycles: see _no_cycle_collection
        try:
            self._refill_now(stats)
        finally:
            if collecting:
                gc.enable()

    def _refill_now(self, stats: ReconcileStats) -> None:
        assert self.conn is not None
        paths = [os.path.join(self.sessions_dir, name + SESSION_SUFFIX) for name in sorted(scan_ids(self.sessions_dir))]
        stats.sessions = len(paths)
        # The workers read while the old tables are dropped.
        with reading_sessions(paths, self.definitions, self.workers, fast=True, numbered=True) as results:
            self._drop_all()
            self._create_schema()
            for name in BULK_INDEXES:  # cheaper to make once every row is in
                self.conn.execute(f"DROP INDEX {name}")
            self._populate(results, stats)
        for sql in BULK_INDEXES.values():
            self.conn.execute(sql)

    @contextlib.contextmanager
    def _bulk(self, durable: bool = True) -> Iterator[None]:
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

    def rebuild(self) -> ReconcileStats:
        """Recreate the index from the session directories, in one transaction (readers see the old one until then)."""
        started = time.perf_counter()
        stats = ReconcileStats()
        self._reopen_if_replaced()

        def action() -> None:
            with self._bulk(durable=False), self._write():
                self._refill(stats)

        self._guard(action)
        stats.seconds = time.perf_counter() - started
        return stats

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
        stats = ReconcileStats()
        self._reopen_if_replaced()

        def action() -> None:
            assert self.conn is not None
            now = time.time()
            changed, gone, settling, count, empty = self._compare(full, now)
            stats.sessions = count
            stale = self._stale_live(now, set(changed))
            if changed or gone or stale:
                self._apply(changed + stale, gone, stats, full=empty, force=set(stale))
            if settling:
                self._settle(settling)

        self._guard(action)
        stats.seconds = time.perf_counter() - started
        return stats

    def _compare(self, full: bool, now: float) -> tuple[list[str], list[str], list[tuple[str, str]], int, bool]:
        """``(paths to read, ids gone, (id, stamps) to settle, sessions on disk, whether the index is empty)``."""
        conn = self.conn
        assert conn is not None
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
            fd = os.open(self.sessions_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            fd = -1
        if fd >= 0:
            prefix = self.sessions_dir + "/"
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
                    if not name.endswith(suffix) or name.startswith("."):
                        continue
                    try:
                        st = stat_(name, dir_fd=fd, follow_symlinks=False)
                    except OSError:
                        continue
                    if st.st_mode & 0o170000 != directory_mode:
                        continue
                    seen += 1
                    key = name[:cut]
                    session = file_stamp(name + "/" + STATE_FILE, fd)
                    journal = file_stamp(name + "/" + JOURNAL_FILE, fd)
                    stamps = f"{_stamp(st)}|{session}|{journal}"
                    stored = get(key)
                    if stored is None or not stored.startswith(stamps + " "):
                        changed.append(prefix + name)
                    elif stored.endswith(settling_mark) and now - st.st_ctime_ns / 1e9 > RACY_SECONDS:
                        settling.append((key, stamps))  # unchanged since, and now long enough ago
            finally:
                os.close(fd)
        gone: list[str] = []
        if changed or seen != total:
            # Unless the directories seen, less the new ones, are as many as the indexed sessions
            # (then every indexed one was seen), look for those that are gone.
            settled_ids = {key.rsplit(" ", 1)[0][: -len(SESSION_SUFFIX)] for key in settled} if changed else set()
            cut = len(self.sessions_dir) + 1
            new = 0
            for path in changed:
                key = path[cut : -len(SESSION_SUFFIX)]
                if key not in others and key not in settled_ids:
                    new += 1
            if seen - new != total:
                on_disk = scan_ids(self.sessions_dir)
                gone = [row[0] for row in conn.execute("SELECT id FROM sessions") if row[0] not in on_disk]
        return changed, gone, settling, seen, not total

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

    def _settle(self, settling: list[tuple[str, str]]) -> None:
        """Mark these sessions settled (if their stamps are still those that were checked)."""
        with self._write() as conn:
            conn.executemany(
                f"UPDATE sessions SET settled = {SETTLED} WHERE id = ? AND stamps = ? AND settled = {SETTLING}",
                settling,
            )

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
                self._apply(to_read, gone, stats, full=False, force=set(to_read) if force else set())

        self._guard(action)
        stats.seconds = time.perf_counter() - started
        return stats

    def _apply(
        self, to_read: list[str], gone_ids: list[str], stats: ReconcileStats, full: bool, force: set[str] = frozenset()
    ) -> None:
        """Read *to_read* (outside the write lock) and write the result and the removals in one transaction.

        A record whose stamps are those stored is not written again (another writer stored this
        very version meanwhile), unless its path is in *force*.
        """
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
                    self._ensure_texts(record)  # later records of the same worker may use them
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

    # -- the watcher's heartbeat

    def set_info(self, key: str, value: Any) -> None:
        with self._write() as conn:
            conn.execute("INSERT OR REPLACE INTO info (key, value) VALUES (?, ?)", (key, _dumps(value)))

    def get_info(self, key: str) -> Any:
        import json

        assert self.conn is not None
        row = self._guard(lambda: self.conn.execute("SELECT value FROM info WHERE key = ?", (key,)).fetchone())
        return json.loads(row[0]) if row else None

    def _heartbeat(self) -> tuple[Any, Any] | None:
        """``(interval, time)`` of the watcher's last heartbeat, if there is one (no JSON decoder needed)."""
        assert self.conn is not None
        return self._guard(
            lambda: self.conn.execute(
                "SELECT json_extract(value, '$.interval'), json_extract(value, '$.time') FROM info"
                " WHERE key = ? AND json_valid(value) AND json_type(value) = 'object'",
                (HEARTBEAT_KEY,),
            ).fetchone()
        )

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
        return self._guard(lambda: self._list_rows(flt, documents_only))

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
        return self._guard(lambda: self._json_parts(flt))

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
        import json

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
    beat = index._heartbeat()
    if beat is None:
        return False
    interval, when = beat
    try:
        interval = float(interval or 60.0)
        when = float(when or 0.0)
    except (TypeError, ValueError):
        return False
    now = time.time() if now is None else now
    return now - when < 2 * interval + 30.0


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
    """The index of *root*, reconciled first (the quick way) unless a watcher keeps it fresh.

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
    from plainbox_like.store.paths import check_repository_root, default_repository, repository_given_as

    root = os.path.abspath(override) if override else default_repository()
    return check_repository_root(root, repository_given_as(override))


def repository_exists(root: str) -> bool:
    """Whether *root* has a sessions directory or an index (else there is nothing to list)."""
    return os.path.isdir(os.path.join(root, "sessions")) or os.path.exists(os.path.join(root, INDEX_FILE))
