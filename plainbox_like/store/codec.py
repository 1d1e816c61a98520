"""Encoding the state: one cattrs converter, versioned load with migrations.

Our state file is ``gzip(JSON)`` of ``{"format": "plainbox-like", "version": N,
"session": {...}}``, compact with sorted keys. A document without ``format``
is a real Plainbox/Checkbox session (its versions 1 to 11), read into the same
model for inspection only.
"""

from __future__ import annotations

import codecs
import io
import json
import os
import zlib
from typing import Any, Callable

import attrs
import cattrs
import orjson
from cattrs.cols import is_mutable_sequence, list_structure_factory
from cattrs.gen import make_dict_unstructure_fn, override
from isal import igzip, isal_zlib
from isal.igzip_lib import IsalError

from plainbox_like.errors import CorruptSession, UnsupportedVersion
from plainbox_like.store.limits import MAX_STATE_SIZE_ENV, max_state_size
from plainbox_like.store.model import Attempt, RunningJob, SessionState
from plainbox_like.text import format_size

from plainbox_like.store.names import FORMAT  # noqa: F401 (public here too)
#: Current version of our state format; bump on any change and add a migration.
VERSION = 5
#: Versions of Plainbox's own format we can read.
PLAINBOX_VERSIONS = range(1, 12)

#: States up to this size are inflated in one go; larger ones are measured first.
_GUNZIP_AT_ONCE = 16 << 20
#: Bytes inflated at a time while measuring.
_GUNZIP_CHUNK = 1 << 20

#: ``MIGRATIONS[n]`` turns the ``session`` object of version *n* into version *n + 1*.
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}


def _v1_to_v2(session: dict[str, Any]) -> dict[str, Any]:
    """Version 2 adds ``resources`` (records of resource jobs); version 1 sessions had none."""
    return {**session, "resources": session.get("resources") or {}}


MIGRATIONS[1] = _v1_to_v2


def _v2_to_v3(session: dict[str, Any]) -> dict[str, Any]:
    """Version 3 adds ``leftover_processes`` and ``leftover_files`` to attempts; version 2 did not look for
    either (null and empty: none known)."""
    results = session.get("results")
    if not isinstance(results, dict):
        return session  # the structuring step reports it
    migrated = {
        job_id: [{**a, "leftover_processes": None} if isinstance(a, dict) else a for a in attempts]
        if isinstance(attempts, list) else attempts
        for job_id, attempts in results.items()
    }
    return {**session, "results": migrated}


MIGRATIONS[2] = _v2_to_v3


def _v3_to_v4(session: dict[str, Any]) -> dict[str, Any]:
    """Version 4 adds ``answered`` to attempts (who answered a job that needs a person); version 3 asked
    nobody: the field is left out, which reads as null."""
    return session


MIGRATIONS[3] = _v3_to_v4


def _v4_to_v5_attempt_ran_on(session: dict[str, Any]) -> dict[str, Any]:
    """Version 5 adds ``ran_on`` to attempts (the Dask worker a job ran on, left out when it ran on the
    runner's machine). Every attempt of an older version ran on the runner's machine: a ``ran_on`` there
    is not ours to trust, and is dropped."""
    results = session.get("results")
    if not isinstance(results, dict):
        return session  # the structuring step reports it
    migrated = {
        job_id: [{k: v for k, v in a.items() if k != "ran_on"} if isinstance(a, dict) else a for a in attempts]
        if isinstance(attempts, list) else attempts
        for job_id, attempts in results.items()
    }
    return {**session, "results": migrated}


MIGRATIONS[4] = _v4_to_v5_attempt_ran_on


def _strict(kind: type, name: str) -> Callable[[Any, type], Any]:
    def structure(value: Any, _type: type) -> Any:
        if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
            raise TypeError(f"expected {name}, got {type(value).__name__} {value!r:.40}")
        return value

    return structure


def _structure_float(value: Any, _type: type) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"expected a number, got {type(value).__name__} {value!r:.40}")
    return float(value)


def _strict_list_factory(type_: Any, conv: cattrs.Converter) -> Callable[[Any, type], Any]:
    # cattrs turns any iterable into a list: a string would become a list of characters.
    structure_items = list_structure_factory(type_, conv)

    def structure(value: Any, _type: type) -> Any:
        if not isinstance(value, list):
            raise TypeError(f"expected a list, got {type(value).__name__} {value!r:.40}")
        return structure_items(value, _type)

    return structure


def _strict_tuple_of_str(value: Any, _type: type) -> tuple[str, ...]:
    # Stored as a JSON list (cattrs would take any iterable: a string would become its characters).
    if not isinstance(value, list):
        raise TypeError(f"expected a list, got {type(value).__name__} {value!r:.40}")
    for item in value:
        if not isinstance(item, str):
            raise TypeError(f"expected a string, got {type(item).__name__} {item!r:.40}")
    return tuple(value)


def make_converter() -> cattrs.Converter:
    """The converter for every persisted class: strict about JSON types."""
    conv = cattrs.Converter(forbid_extra_keys=False)
    conv.register_structure_hook(str, _strict(str, "a string"))
    conv.register_structure_hook(int, _strict(int, "an integer"))
    conv.register_structure_hook(bool, _strict(bool, "a boolean"))
    conv.register_structure_hook(float, _structure_float)
    conv.register_structure_hook_factory(is_mutable_sequence, _strict_list_factory)
    conv.register_structure_hook_func(lambda type_: type_ == tuple[str, ...], _strict_tuple_of_str)
    _register_fast_paths(conv)
    # The generated hook for the other attempts: made at the first one (not at import, where it cost a
    # millisecond of every start-up).
    generated: list[Callable[[Attempt], dict[str, Any]]] = []

    def attempt(a: Attempt) -> dict[str, Any]:
        # The usual attempt (every job's result is journaled, every snapshot has them all): its fields as
        # they are, several times faster than the generated hook, which does the rest.
        if a.leftover_processes is None and a.answered is None and a.ran_on is None and not a.leftover_files:
            return {
                "outcome": a.outcome,
                "return_code": a.return_code,
                "execution_duration": a.execution_duration,
                "comments": a.comments,
                "io_log_filename": a.io_log_filename,
                "attempt": a.attempt,
                "started": a.started,
                "skip_reason": a.skip_reason,
                "leftover_processes": None,
            }
        if not generated:
            # An attempt that left no files (or ran on the runner's machine) says nothing about them: states
            # stay as they were before those fields.
            generated.append(make_dict_unstructure_fn(
                Attempt,
                conv,
                leftover_files=override(omit_if_default=True),
                answered=override(omit_if_default=True),
                ran_on=override(omit_if_default=True),
            ))
        return generated[0](a)

    conv.register_unstructure_hook(Attempt, attempt)
    # Only a job flagged noreturn says so: the running jobs of other states stay as they were.
    conv.register_unstructure_hook(
        RunningJob, make_dict_unstructure_fn(RunningJob, conv, noreturn=override(omit_if_default=True))
    )
    return conv


def _register_fast_paths(conv: cattrs.Converter) -> None:
    """Hooks for the bulk of a large state (results, job lists), several times faster than the
    generated ones. Values of the usual JSON types are taken as they are; anything else is
    handed to the generated hook, so what is accepted and every error message stay the same.

    The generated hooks are made at the first value that needs one, by the converter's own factories (those
    ``get_structure_hook`` picks for these types, before the fast hooks are registered): not at import, where
    they cost 2 ms of every start-up, and a run structures nothing."""
    made: dict[str, Callable[[Any, type], Any]] = {}

    def generic_attempt(data: Any, type_: type) -> Attempt:
        if "attempt" not in made:
            made["attempt"] = conv.gen_structure_attrs_fromdict(Attempt)
        return made["attempt"](data, type_)

    def attempt(data: Any, type_: type) -> Attempt:
        if type(data) is dict:
            get = data.get
            outcome, return_code, duration = get("outcome"), get("return_code"), get("execution_duration")
            comments, log, number = get("comments"), get("io_log_filename"), get("attempt", 1)
            started, skip_reason = get("started"), get("skip_reason")
            leftovers = get("leftover_files", ())
            if (
                get("leftover_processes") is None
                and get("answered") is None
                and get("ran_on") is None
                and type(outcome) is str
                and (return_code is None or type(return_code) is int)
                and (duration is None or type(duration) is float or type(duration) is int)
                and (comments is None or type(comments) is str)
                and (log is None or type(log) is str)
                and type(number) is int
                and (started is None or type(started) is float or type(started) is int)
                and (skip_reason is None or type(skip_reason) is str)
                and (leftovers == () or (type(leftovers) is list and all(type(x) is str for x in leftovers)))
            ):
                return Attempt(
                    outcome,
                    return_code,
                    None if duration is None else float(duration),
                    comments,
                    log,
                    number,
                    None if started is None else float(started),
                    skip_reason,
                    leftover_files=tuple(leftovers),  # (): the one empty tuple, no list a job
                )
        return generic_attempt(data, type_)

    conv.register_structure_hook(Attempt, attempt)

    results_type = dict[str, list[Attempt]]

    def results(data: Any, type_: type) -> dict[str, list[Attempt]]:
        if type(data) is dict and all(type(k) is str and type(v) is list for k, v in data.items()):
            return {k: [attempt(a, Attempt) for a in v] for k, v in data.items()}
        if "results" not in made:
            made["results"] = conv.gen_structure_mapping(results_type)
        return made["results"](data, type_)

    conv.register_structure_hook_func(lambda t: t == results_type, results)

    def exact(type_: Any, check: Callable[[Any], bool]) -> None:
        generic = conv.get_structure_hook(type_, cache_result=False)

        def structure(data: Any, t: type) -> Any:
            return data.copy() if check(data) else generic(data, t)

        conv.register_structure_hook_func(lambda t: t == type_, structure)

    exact(list[str], lambda v: type(v) is list and all(type(x) is str for x in v))
    exact(dict[str, str], lambda v: type(v) is dict and all(type(k) is str and type(x) is str for k, x in v.items()))


converter = make_converter()


@attrs.define
class Loaded:
    """A decoded state file and where it came from."""

    state: SessionState
    origin: str = FORMAT  # or "plainbox"
    source_version: int = VERSION
    #: Plainbox v1 kept io-logs inline: ``{(job_id, attempt): [[delay, stream, b64], ...]}``.
    inline_io_logs: dict[tuple[str, int], list[list[Any]]] = attrs.Factory(dict)


def dumps_json(obj: Any) -> bytes:
    """Compact JSON with sorted keys, as UTF-8 (orjson: several times faster than json here)."""
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)


#: Parse JSON text or bytes (orjson; its errors are :class:`json.JSONDecodeError`).
loads_json = orjson.loads


def state_document(state: SessionState) -> dict[str, Any]:
    """The JSON document of *state*."""
    return {"format": FORMAT, "version": VERSION, "session": converter.unstructure(state)}


#: Jobs encoded in one piece by :func:`encode_state`: enough to keep orjson's per-call cost small,
#: few enough that a piece's dicts and text stay a few hundred KiB.
_ENCODE_CHUNK = 500


def encode_state(state: SessionState) -> tuple[bytes, int]:
    """``gzip(JSON)`` of *state*, and the size of the uncompressed JSON.

    The bytes are those of ``dumps_json(state_document(state))``, made piece by
    piece: the per-job maps (``jobs``, ``results``) are encoded a chunk of jobs
    at a time and compressed as they come, so a snapshot of a session of
    100,000 jobs never holds all their dicts and JSON text at once (the runner
    snapshots while it runs, and its peak memory would grow with the session).
    """
    compress = isal_zlib.compressobj(1, isal_zlib.DEFLATED, 31)
    parts: list[bytes] = []
    size = 0

    def put(data: bytes) -> None:
        nonlocal size
        size += len(data)
        parts.append(compress.compress(data))

    rest = converter.unstructure(attrs.evolve(state, jobs={}, results={}))
    put(b'{"format":' + dumps_json(FORMAT) + b',"session":{')
    for number, key in enumerate(sorted(rest)):
        put((b"," if number else b"") + dumps_json(key) + b":")
        if key == "jobs":  # id -> checksum: strings as they are
            _put_map(state.jobs, put, lambda checksum: checksum)
        elif key == "results":
            unstructure_attempt = converter.get_unstructure_hook(Attempt)
            _put_map(state.results, put, lambda attempts: [unstructure_attempt(a) for a in attempts])
        else:
            put(dumps_json(rest[key]))
    put(b'},"version":' + dumps_json(VERSION) + b"}")
    parts.append(compress.flush())
    return b"".join(parts), size


def _put_map(mapping: dict[str, Any], put: Callable[[bytes], None], unstructure: Callable[[Any], Any]) -> None:
    """A JSON object with sorted keys, a chunk of keys at a time (see :func:`encode_state`)."""
    put(b"{")
    keys = sorted(mapping)
    for start in range(0, len(keys), _ENCODE_CHUNK):
        chunk = {key: unstructure(mapping[key]) for key in keys[start: start + _ENCODE_CHUNK]}
        put((b"," if start else b"") + dumps_json(chunk)[1:-1])
    put(b"}")


def structure_attempt(data: Any) -> Attempt:
    """An :class:`Attempt` from its JSON object."""
    return converter.structure(data, Attempt)


def _describe(exc: Exception, path: str = "$.session") -> str:
    if isinstance(exc, cattrs.BaseValidationError):
        messages = cattrs.transform_error(exc, path=path)
        extra = f" (and {len(messages) - 1} more)" if len(messages) > 1 else ""
        return f"wrong field type: {messages[0]}{extra}"
    return f"wrong field type: {exc} @ {path}"


def _too_large(path: str | os.PathLike, limit: int) -> CorruptSession:
    """The error for a state that inflates past *limit*."""
    return CorruptSession(path, f"inflates to more than {format_size(limit)} (the limit; ${MAX_STATE_SIZE_ENV} raises it)")


def gunzip(data: bytes, path: str | os.PathLike, limit: int | None = None) -> bytes:
    """The inflated *data* of a state file, at most *limit* (default :func:`limits.max_state_size`) bytes.

    Memory stays bounded whatever *data* holds: what inflates to more than
    :data:`_GUNZIP_AT_ONCE` is first inflated once only to count its size (keeping
    nothing), and kept on a second pass only if that is within the limit.
    """
    limit = max_state_size() if limit is None else limit
    at_once = min(limit, _GUNZIP_AT_ONCE)
    try:  # the usual case: one gzip member, not large, in one call
        inflate = isal_zlib.decompressobj(31)
        raw = inflate.decompress(data, at_once + 1)
        if len(raw) <= at_once and inflate.eof and not inflate.unused_data:
            return raw
    except (zlib.error, ValueError, IsalError):
        pass  # said below, in the reader's own words
    try:
        with igzip.GzipFile(fileobj=io.BytesIO(data), mode="rb") as reader:
            total = 0
            while chunk := reader.read(min(_GUNZIP_CHUNK, limit + 1 - total)):
                total += len(chunk)
                if total > limit:
                    raise _too_large(path, limit)
        with igzip.GzipFile(fileobj=io.BytesIO(data), mode="rb") as reader:
            raw = reader.read(total)  # in one piece, as a rule: no copies joined
            if len(raw) < total:  # several members
                raw += reader.read()
            return raw
    except CorruptSession:
        raise
    except (OSError, EOFError, zlib.error, ValueError, IsalError) as exc:
        raise CorruptSession(path, f"not a valid gzip file ({exc})") from None


def _utf8_error_at(raw: bytes) -> int | None:
    """Where *raw* stops being UTF-8 (``None``: it is), decoded a slice at a time (no copy of it all)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    view = memoryview(raw)
    for start in range(0, len(view), _GUNZIP_CHUNK):
        piece = view[start:start + _GUNZIP_CHUNK]
        try:
            decoder.decode(piece, final=start + len(piece) >= len(view))
        except UnicodeDecodeError as exc:
            return start + exc.start - len(decoder.getstate()[0])  # what it held back came before
    return None


def decode_document(data: bytes, path: str | os.PathLike) -> dict[str, Any]:
    """Gunzip, decode and parse a state file; each failure names *path* and the problem."""
    if not data:
        raise CorruptSession(path, "empty file")
    raw = gunzip(data, path)
    try:
        doc = loads_json(raw)  # the bytes, not a decoded copy: checked as UTF-8 all the same
    except json.JSONDecodeError as exc:
        bad = _utf8_error_at(raw)
        if bad is not None:
            raise CorruptSession(path, f"not valid UTF-8 at byte {bad}") from None
        raise CorruptSession(path, f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("session"), dict):
        raise CorruptSession(path, 'not a session state (expected {"version": N, "session": {...}})')
    version = doc.get("version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise CorruptSession(path, f"state version must be an integer, got {version!r:.40}")
    return doc


def load_document(doc: dict[str, Any], path: str | os.PathLike) -> Loaded:
    """Turn a decoded state document into the model, migrating older versions."""
    fmt = doc.get("format")
    version = doc["version"]
    if fmt is None:
        return _from_plainbox(doc, path)
    if fmt != FORMAT:
        raise CorruptSession(path, f"unknown state format {fmt!r:.40}")
    if version > VERSION or version < 1:
        raise UnsupportedVersion(
            path, f"state version {version} is not supported (this program reads versions 1 to {VERSION})"
        )
    session = doc["session"]
    for step in range(version, VERSION):
        session = MIGRATIONS[step](session)
    try:
        state = converter.structure(session, SessionState)
    except Exception as exc:  # cattrs raises a variety of validation errors
        raise CorruptSession(path, _describe(exc)) from None
    return Loaded(state=state, source_version=version)


def decode_state(data: bytes, path: str | os.PathLike) -> Loaded:
    """Decode the bytes of a ``session`` file (ours or Plainbox's)."""
    return load_document(decode_document(data, path), path)


# -- Plainbox / Checkbox sessions (read-only) ---------------------------------


def _plainbox_log_name(name: str, session_dir: str) -> str:
    """Make a Plainbox ``io_log_filename`` (absolute, where Checkbox ran it) relative to *session_dir*."""
    if not os.path.isabs(name):
        return name
    real_dir = os.path.realpath(session_dir)
    real = os.path.realpath(name)
    if real.startswith(real_dir + os.sep):
        return os.path.relpath(real, real_dir)
    # The session was moved (or comes from another machine): the file is looked for here, and
    # only here (a path from a state never leads outside its session).
    return os.path.join("io-logs", os.path.basename(name))


class _FieldError(Exception):
    """A wrong field type, already described with where the field is."""


def _structure_at(value: Any, type_: Any, where: str) -> Any:
    try:
        return converter.structure(value, type_)
    except Exception as exc:
        raise _FieldError(_describe(exc, where)) from None


def _from_plainbox(doc: dict[str, Any], path: str | os.PathLike) -> Loaded:
    version = doc["version"]
    if version not in PLAINBOX_VERSIONS:
        raise UnsupportedVersion(path, f"Plainbox state version {version} is not supported (1 to 11 are)")
    session_dir = os.path.dirname(os.path.abspath(path))
    session = doc["session"]
    loaded = Loaded(state=SessionState(), origin="plainbox", source_version=version)
    state = loaded.state
    try:
        jobs = session.get("jobs") or {}
        state.jobs = {str(k): v for k, v in _structure_at(jobs, dict[str, str], "$.session.jobs").items()}
        results = session.get("results") or {}
        if not isinstance(results, dict):
            raise TypeError("results must be an object")
        for job_id, history in results.items():
            if isinstance(history, dict):  # a single result instead of a history list
                history = [history]
            if not isinstance(history, list):
                raise TypeError(f"results[{job_id!r}] must be a list")
            attempts = []
            for number, item in enumerate(history, start=1):
                if not isinstance(item, dict):
                    raise TypeError(f"results[{job_id!r}][{number - 1}] must be an object")
                log_name = item.get("io_log_filename")
                if isinstance(log_name, str):
                    log_name = _plainbox_log_name(log_name, session_dir)
                if isinstance(item.get("io_log"), list):
                    loaded.inline_io_logs[(job_id, number)] = item["io_log"]
                attempts.append(
                    _structure_at(
                        {
                            "outcome": item.get("outcome") or "not-run",
                            "return_code": item.get("return_code"),
                            "execution_duration": item.get("execution_duration"),
                            "comments": item.get("comments"),
                            "io_log_filename": log_name,
                            "attempt": number,
                        },
                        Attempt,
                        f"$.session.results[{job_id!r}][{number - 1}]",
                    )
                )
            state.results[job_id] = attempts
        state.desired_job_list = _structure_at(session.get("desired_job_list") or [], list[str], "$.session.desired_job_list")
        state.mandatory_job_list = _structure_at(session.get("mandatory_job_list") or [], list[str], "$.session.mandatory_job_list")
        meta = session.get("metadata") or {}
        if not isinstance(meta, dict):
            raise TypeError("metadata must be an object")
        state.metadata.title = _structure_at(meta.get("title"), str | None, "$.session.metadata.title")
        state.metadata.flags = _structure_at(meta.get("flags") or [], list[str], "$.session.metadata.flags")
        state.metadata.running_job_name = _structure_at(meta.get("running_job_name"), str | None, "$.session.metadata.running_job_name")
        state.metadata.app_id = _structure_at(meta.get("app_id"), str | None, "$.session.metadata.app_id")
        state.metadata.app_blob = _structure_at(meta.get("app_blob"), str | None, "$.session.metadata.app_blob")
    except _FieldError as exc:
        raise CorruptSession(path, f"Plainbox session v{version}: {exc}") from None
    except Exception as exc:
        raise CorruptSession(path, f"Plainbox session v{version}: {_describe(exc)}") from None
    return loaded
