"""``export --format json``: the state document, where it came from, and optionally every log.

The document::

    {
      "format": "plainbox-like-export", "version": 1,
      "session": {"id", "path", "origin", "source_version", "status", "journal_problem"},
      "state": {"format": "plainbox-like", "version": N, "session": {...}},   # as in the state file
      "jobs": {"<job id>": {"category_id": "ns::cat" | null, "certification_status": "blocker"}},
      "logs": {                                                           # only with_logs=True
        "<job id>": [
          {"attempt": 1, "running": false, "source": "record", "complete": true, "problem": null,
           "stdout": {"bytes": 6, "exact": true, "text": "hello\\n"},
           "stderr": {"bytes": 2, "exact": false, "text": "\\ufffd\\ufffd", "base64": "//4="}}
        ]
      }
    }

``jobs`` gives every job the session knows its effective category and
certification status: the job unit's own, with the test plan's overrides
applied, as the run stored them (see ``plainbox_like.define.metadata.RunMetadata``).
Both are null when the session stored none (a Plainbox session, or one
started before this was kept).

Each stream's ``text`` is its bytes decoded as UTF-8, undecodable bytes
replaced by U+FFFD. ``exact`` says whether that decoding was lossless (the
bytes are valid UTF-8, so ``text`` encoded as UTF-8 gives them back); when it
is not, ``base64`` holds the bytes themselves, so nothing is ever lost.
``source`` is ``record`` (the timed ``.record.gz``), ``raw`` (the
``.stdout``/``.stderr`` files), ``inline`` (a Plainbox v1 state), ``none``
(the attempt kept no log) or ``missing`` (its files are gone); ``problem``
says what was wrong with the log, ``complete`` whether nothing was.
"""

from __future__ import annotations

import base64
import codecs
import json
import secrets
from typing import Any, BinaryIO, Iterator

from plainbox_like.store import codec
from plainbox_like.read import replay
from plainbox_like.exports import common
from plainbox_like.store.iolog import STREAMS
from plainbox_like.store.reader import LoadedSession

FORMAT = "plainbox-like-export"
VERSION = 1


def stream_json(data: bytes) -> dict[str, Any]:
    """One stream's output as ``{"bytes", "exact", "text"[, "base64"]}``."""
    exact = common.is_utf8(data)
    entry: dict[str, Any] = {"bytes": len(data), "exact": exact, "text": common.decode(data)}
    if not exact:
        entry["base64"] = base64.b64encode(data).decode("ascii")
    return entry


def logs_json(loaded: LoadedSession, views: list[common.JobView]) -> dict[str, list[dict[str, Any]]]:
    """Job id -> the output of each of its attempts."""
    logs: dict[str, list[dict[str, Any]]] = {}
    for view in views:
        entries = []
        for ref in view.attempts:
            output = common.read_attempt(loaded, ref)
            entry: dict[str, Any] = {
                "attempt": ref.attempt,
                "running": ref.running,
                "source": output.source,
                "complete": output.problem is None,
                "problem": output.problem,
            }
            for stream in STREAMS:
                entry[stream] = stream_json(output.stream(stream))
            entries.append(entry)
        if entries:
            logs[view.id] = entries
    return logs


def jobs_json(loaded: LoadedSession) -> dict[str, dict[str, str | None]]:
    """Job id -> its effective ``category_id`` and ``certification_status`` (null if not stored)."""
    from plainbox_like.define.metadata import RunMetadata  # the planning code, only for this

    metadata = RunMetadata.from_app_blob(loaded.state.metadata.app_blob)
    unknown = {"category_id": None, "certification_status": None}
    return {
        job_id: metadata.of(job_id).to_json() if metadata is not None else dict(unknown)
        for job_id in replay.known_jobs(loaded)
    }


def document(loaded: LoadedSession, with_logs: bool = False) -> dict[str, Any]:
    """The export document of *loaded*."""
    doc: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "session": {
            "id": loaded.id,
            "path": loaded.path,
            "origin": loaded.origin,
            "source_version": loaded.source_version,
            "status": common.session_status(loaded),
            "journal_problem": loaded.journal_torn,
        },
        "state": codec.state_document(loaded.state),
        "jobs": jobs_json(loaded),
    }
    if with_logs:
        doc["logs"] = logs_json(loaded, common.job_views(loaded, doc["session"]["status"]))
    return doc


def _encode(text: str) -> bytes:
    # A lone surrogate (JSON can carry one in a job id) cannot be UTF-8: written as
    # its \uXXXX escape, which is what it was in the state file.
    return text.encode("utf-8", errors="backslashreplace")


def _dumps(value: Any, level: int) -> str:
    """*value* as :func:`json.dumps` with ``indent=2`` writes it *level* levels deep in a document."""
    text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)
    return text.replace("\n", "\n" + "  " * level)  # JSON strings hold no raw newline


def write(loaded: LoadedSession, out: BinaryIO, with_logs: bool = False) -> None:
    """Write the document as indented JSON (UTF-8, sorted keys) with a final newline.

    The same text as ``json.dumps(document(loaded, with_logs), indent=2,
    sort_keys=True)``, but the logs are written as they are read: memory
    stays the same however much output the jobs wrote.
    """
    doc = document(loaded)
    if not with_logs:
        out.write(_encode(json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False)) + b"\n")
        return
    marker = f"plainbox-like-logs-{secrets.token_hex(16)}"
    doc["logs"] = marker
    before, after = _dumps(doc, 0).split(json.dumps(marker))
    out.write(_encode(before))
    _write_logs(loaded, common.job_views(loaded, doc["session"]["status"]), out)
    out.write(_encode(after) + b"\n")


def _write_logs(loaded: LoadedSession, views: list[common.JobView], out: BinaryIO) -> None:
    """``logs`` as :func:`logs_json` makes it, at level 1 of the document, written as it is read."""
    views = sorted((v for v in views if v.attempts), key=lambda v: v.id)
    if not views:
        out.write(b"{}")
        return
    out.write(b"{")
    for i, view in enumerate(views):
        out.write(_encode(f"{',' if i else ''}\n    {json.dumps(view.id, ensure_ascii=False)}: ["))
        for j, ref in enumerate(view.attempts):
            out.write(b",\n      {" if j else b"\n      {")
            _write_attempt(loaded, ref, out)
            out.write(b"\n      }")
        out.write(b"\n    ]")
    out.write(b"\n  }")


def _write_attempt(loaded: LoadedSession, ref: replay.AttemptRef, out: BinaryIO) -> None:
    # A first pass measures each stream (size, UTF-8 or not) and finds any problem; a pass per
    # stream and form then writes it, no further than the first pass went (a running job's log grows).
    read = common.read_attempt_capped(loaded, ref, 0)  # keeps nothing: sizes, UTF-8 or not, problem
    fields: dict[str, Any] = {
        "attempt": ref.attempt,
        "complete": read.problem is None,
        "problem": read.problem,
        "running": ref.running,
        "source": read.source,
    }
    for key, value in fields.items():
        out.write(_encode(f"\n        {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)},"))
    for k, stream in enumerate(sorted(STREAMS)):
        size, exact = read.sizes[stream], read.utf8[stream]
        out.write(_encode(f"\n        {json.dumps(stream)}: {{"))
        if not exact:
            out.write(b'\n          "base64": "')
            carry = b""
            for data in _stream_bytes(loaded, ref, stream, size):
                data = carry + data
                cut = len(data) - len(data) % 3
                out.write(base64.b64encode(data[:cut]))
                carry = data[cut:]
            out.write(base64.b64encode(carry) + b'",')
        out.write(_encode(f'\n          "bytes": {size},\n          "exact": {json.dumps(exact)},\n          "text": "'))
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        for data in _stream_bytes(loaded, ref, stream, size):
            out.write(_encode(json.dumps(decoder.decode(data), ensure_ascii=False)[1:-1]))
        out.write(_encode(json.dumps(decoder.decode(b"", final=True), ensure_ascii=False)[1:-1]))
        out.write(b'"\n        }' + (b"," if k + 1 < len(STREAMS) else b""))


def _stream_bytes(loaded: LoadedSession, ref: replay.AttemptRef, stream: str, size: int) -> Iterator[bytes]:
    """The first *size* bytes of *stream* of *ref*, a record at a time."""
    if not size:
        return
    for record in replay.OutputReader(loaded, ref):
        if record.stream == stream:
            data = record.data[:size]
            size -= len(data)
            yield data
            if not size:
                return
