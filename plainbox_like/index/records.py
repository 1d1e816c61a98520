"""What a session contributes to the index: its ``sessions`` row, its job rows and job texts.

:func:`make_record` turns a summary (and the session's jobs) into a
:class:`SessionRecord`, the unit a reconcile stores; the documents ``list
--json`` prints are rendered here, once, at index time.
"""

from __future__ import annotations

import collections
import os
import time

from plainbox_like.index import stamps as stamping
from plainbox_like.index.stamps import (
    SETTLED,
    SETTLING,
    UNSETTLED,
    Stamps,
    file_stamp,
)
from plainbox_like.text import iso_time
from plainbox_like.store.names import FORMAT, STATUS_COMPLETE, STATUS_INCOMPLETE, TIME_FIELDS

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from plainbox_like.read.summary import SessionSummary

#: Columns of ``sessions`` a :class:`SessionRecord` fills, in ``SessionRecord.row`` order.
SESSION_COLUMNS = (
    "id", "path", "title", "app_id", "origin", "flags", "incomplete", "status", "reason",
    "state_missing", "created", "updated", "finished", "sort_time", "counts", "total", "done",
    "running_job", "runner_pid", "runner_host", "tags", "parent_session", "parent_job",
    "stamps", "settled", "dir_key", "indexed", "doc",
)  # fmt: skip
_COL = {name: i for i, name in enumerate(SESSION_COLUMNS)}


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
        from plainbox_like.store.runconfig import RunConfig  # the persisted model is only needed here

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
        from plainbox_like.define.loading import load_units

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
    changed = Stamps.parse(stamps).changed
    if changed is None:
        return UNSETTLED
    return SETTLED if checked - changed > stamping.RACY_SECONDS else SETTLING


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
    parsed = Stamps.parse(stamps)
    sort_time = created if created is not None else (parsed.modified or 0.0)
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
        parsed.dir_key(fields["id"]),
        time.time(),
        "  " + _render(doc).replace("\n", "\n  "),
    )
    return SessionRecord(
        fields["id"], fields["path"], stamps, stable_id(fields["id"]) if sid is None else sid, row, list(jobs), list(texts)
    )
