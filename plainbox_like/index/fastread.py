"""Reading sessions for the index: one (directly when it can, else through the store's reader) or many (a pool).

Bulk reads (a rebuild, hundreds of new sessions) decode the snapshot directly
when it is a plain current-version one with nothing to replay
(:func:`_read_plain`), and fall back to :func:`reader.load_session` for
anything else: the record is the same either way (a test compares them).
"""

from __future__ import annotations

import contextlib
import itertools
import operator
import os
import time

from plainbox_like.index.records import (
    _STR,
    DefinitionCache,
    SessionRecord,
    _id_text,
    _job_rows,
    _make_record,
    _settled,
    make_record,
    stable_id,
)
from plainbox_like.index.stamps import Stamps, session_stamps
from plainbox_like.store.names import (
    FLAG_INCOMPLETE,
    FLAG_PAUSED,
    FORMAT,
    JOURNAL_FILE,
    STATE_FILE,
    STATUS_COMPLETE,
    STATUS_INCOMPLETE,
    STATUS_PAUSED,
    STATUS_RUNNING,
)
from plainbox_like.store.paths import session_id_of

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence
    from typing import Any

#: Reading this many sessions or more uses a process pool (when more than one worker is allowed).
POOL_THRESHOLD = 200


# -- reading one session -------------------------------------------------------------------


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
    has_state = Stamps.parse(stamps).has_state
    if fast and has_state:
        record = _read_plain(path, stamps, checked, definitions, sent, sid)
        if record is not None:
            return record
    from plainbox_like.store import locks, reader
    from plainbox_like.read import summary
    from plainbox_like.read.summary import SessionSummary

    session_id = session_id_of(path)
    try:
        if not has_state and summary.being_created(path, now):
            holder = locks.lock_holder(path)
            pid, host = holder if holder else (None, None)
            s = SessionSummary(id=session_id, path=path, status=summary.STATUS_RUNNING, runner_pid=pid, runner_host=host)
            return make_record(s, stamps, sid=sid, incomplete=True, state_missing=True)
        loaded = reader.load_session(path)
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
        return make_record(s, stamps, sid=sid, incomplete=False, state_missing=not has_state)


# -- reading a plain snapshot directly ------------------------------------------------------
#
# What :func:`reader.load_session` and :func:`summary.summarize_loaded` make of a session, computed
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
#: Attempt fields a writer leaves out when null, holding an object: an attempt with one is read the ordinary way.
_OPTIONAL_ATTEMPT_OBJECTS = ("answered", "ran_on")
#: Types the converter accepts for each field of the metadata, and the fields that are lists of
#: strings: derived from the model (:func:`_metadata_types`) when the first snapshot is read directly.
_METADATA_TYPES: dict[str, tuple[type, ...]] = {}
_METADATA_STR_LISTS: tuple[str, ...] = ()


def _metadata_types() -> tuple[dict[str, tuple[type, ...]], tuple[str, ...]]:
    """``(types, string lists)`` of :class:`model.SessionMetadata`'s fields, from its annotations: a
    field added to the model is checked here without an edit. A type not understood here accepts
    nothing, so a session with a value in that field is read the ordinary way (the same record)."""
    import typing

    from plainbox_like.store import model

    simple = {str: (str,), int: (int,), float: (float, int), _NONE: (_NONE,), model.Runner: (dict,)}
    allowed: dict[str, tuple[type, ...]] = {}
    str_lists = []
    for name, hint in typing.get_type_hints(model.SessionMetadata).items():
        accepted: list[type] = []
        for option in typing.get_args(hint) if isinstance(hint, _union_types()) else (hint,):
            if typing.get_origin(option) is list and typing.get_args(option) == (str,):
                accepted.append(list)
                str_lists.append(name)
            else:
                accepted.extend(simple.get(option, ()))
        allowed[name] = tuple(accepted)
    return allowed, tuple(str_lists)


def _union_types() -> tuple[type, ...]:
    """The classes of ``X | Y`` and ``Optional[X]`` annotations."""
    import types
    import typing

    return (types.UnionType, type(typing.Optional[int]))


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
    if not all(_str_list(meta.get(key, [])) for key in _METADATA_STR_LISTS):
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
            and type(job.get("noreturn", False)) is bool
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
                for key in _OPTIONAL_ATTEMPT_OBJECTS:
                    if attempt.get(key) is not None:
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
    global _plain_modules, _METADATA_TYPES, _METADATA_STR_LISTS
    if _plain_modules is None:
        _METADATA_TYPES, _METADATA_STR_LISTS = _metadata_types()
        import orjson

        from plainbox_like.store import codec, confine, journal, locks

        _plain_modules = (
            orjson.loads, codec.gunzip, codec.VERSION, journal.parse_journal, locks, confine.open_session_file
        )
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
