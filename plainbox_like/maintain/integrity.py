"""Checking and repairing session directories (``plainbox-like check`` and ``repair``).

:func:`check_session` reads a session directory without writing anything and
lists its *problems* (things that stop the session from loading, resuming or
showing its logs faithfully) and *notes* (things worth knowing that need no
repair: a live writer, a log cut by an interruption, an orphan file).

:func:`repair_session` takes the session's lock and fixes what it can:

* a lost or corrupt snapshot is rebuilt from the newest usable earlier
  snapshot (``session.bak``, or a complete snapshot temporary a killed writer
  left), from what can still be read of the damaged snapshot, and from the
  journal lines newer than that; what could not be recovered is said;
* a journal with damaged lines or a torn tail is folded into the new snapshot
  (its good lines) and emptied;
* cut or damaged ``.record.gz`` files are rewritten complete, with every
  readable record (and the bytes the raw files hold beyond them);
* ``.stdout``/``.stderr`` files that are missing or differ from the records
  are rebuilt from the records;
* jobs a dead runner left marked as running are settled as ``resume`` would;
* everything replaced or removed goes to ``quarantine/<timestamp>/`` inside
  the session, under its own relative path: nothing is ever deleted.

Plainbox/Checkbox session directories can be checked but never repaired.
"""

from __future__ import annotations

import base64
import datetime
import errno
import json
import os
import socket
import stat
import tempfile
import time
import zlib
from typing import Any, Callable, Iterator, get_origin, get_type_hints

import attrs

from plainbox_like.store import codec, iolog, storage
from plainbox_like.errors import CorruptSession, OutsideSession, PlainboxLikeError, RepairStopped, SessionNotFound
from plainbox_like.store.limits import max_state_size
from plainbox_like.store.model import FLAG_INCOMPLETE, Attempt, SessionState
from plainbox_like.store.paths import open_regular, session_id_of
from plainbox_like.read.summary import CREATING_GRACE  # a directory without a state this young may be being made

QUARANTINE_DIR = "quarantine"
RECORD_SUFFIX = storage.RECORD_SUFFIX
#: Comment of a running job whose result may have been lost with a damaged snapshot.
RESULT_LOST = "no result was recorded: the session state was damaged and rebuilt by repair"
#: Files every session of ours has from its creation on.
_OUR_MARKERS = (storage.JOURNAL_FILE, storage.LOCK_FILE)
#: Top-level fields of the state document, in the (sorted) order the codec writes them.
#: (Derived from the model: its dicts and attrs objects are JSON objects, its lists JSON arrays.)
_STATE_HINTS = {name: hint for name, hint in get_type_hints(SessionState).items() if name in attrs.fields_dict(SessionState)}
_DICT_FIELDS = frozenset(name for name, hint in _STATE_HINTS.items() if get_origin(hint) is dict or attrs.has(hint))
_LIST_FIELDS = frozenset(name for name, hint in _STATE_HINTS.items() if get_origin(hint) is list)
_CHUNK = 1 << 16
#: Errors of the disk, not of the session: a repair stops with a one-line error naming the file.
_DISK_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS})

PROBLEM = "problem"
NOTE = "note"


# -- findings -----------------------------------------------------------------------


@attrs.frozen
class Finding:
    """One thing found about one file of a session.

    *file* is relative to the session directory (``session``, ``journal``,
    ``io-logs/x.record.gz`` ...), *kind* a stable machine-readable name.
    """

    file: str
    message: str
    kind: str

    def as_dict(self) -> dict[str, str]:
        return {"file": self.file, "kind": self.kind, "message": self.message}


@attrs.define
class SessionCheck:
    """The result of checking one session directory."""

    id: str
    path: str
    origin: str | None = None
    problems: list[Finding] = attrs.Factory(list)
    notes: list[Finding] = attrs.Factory(list)

    @property
    def healthy(self) -> bool:
        return not self.problems

    def problem(self, file: str, message: str, kind: str) -> None:
        self.problems.append(Finding(file, message, kind))

    def note(self, file: str, message: str, kind: str) -> None:
        self.notes.append(Finding(file, message, kind))

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "path": self.path,
            "origin": self.origin,
            "healthy": self.healthy,
            "problems": [f.as_dict() for f in self.problems],
            "notes": [f.as_dict() for f in self.notes],
        }


# -- reading ------------------------------------------------------------------------


def _read_bytes(session_dir: str, name: str) -> bytes | None:
    """The content of the session's file *name*, ``None`` if it does not exist.

    OSError if it is not a regular file (a FIFO must not hang check) or leads outside the session.
    """
    try:
        with os.fdopen(storage.open_session_file(session_dir, name), "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def _stale_temporaries(path: str) -> list[str]:
    """Names (relative to *path*) of snapshot and repair temporaries: ``.session.*.tmp``, ``io-logs/.*.tmp``."""
    found = []
    prefix = "." + storage.STATE_FILE + "."
    try:
        names = os.listdir(path)
    except OSError:
        names = []
    found += [n for n in names if n.startswith(prefix) and n.endswith(".tmp")]
    try:
        log_names = os.listdir(os.path.join(path, storage.IO_LOGS))
    except OSError:
        log_names = []
    found += [f"{storage.IO_LOGS}/{n}" for n in log_names if n.startswith(".") and n.endswith(".tmp")]
    return sorted(found)


# -- the journal, line by line --------------------------------------------------------


parse_change = storage.parse_change


@attrs.define
class JournalScan:
    """Every line of a journal, classified as :func:`storage.parse_journal` does."""

    exists: bool = True
    size: int = 0
    #: ``(line number, change)`` of every good line, in file order.
    entries: list[tuple[int, dict[str, Any]]] = attrs.Factory(list)
    #: ``(line number, problem)`` of damaged lines followed by a good line: the loader fails on the first.
    bad: list[tuple[int, str]] = attrs.Factory(list)
    #: ``(line number, problem)`` of the damaged lines at the end (a torn tail, ignored when loading).
    torn: list[tuple[int, str]] = attrs.Factory(list)
    #: Why the journal cannot be read (not a regular file, a link leading outside), if it cannot.
    unreadable: str | None = None

    @property
    def damaged(self) -> bool:
        return bool(self.bad or self.torn or self.unreadable)


def scan_journal(data: bytes | None) -> JournalScan:
    """Classify every line of journal *data* (``None``: the file is missing)."""
    if data is None:
        return JournalScan(exists=False)
    scan = JournalScan(size=len(data))
    lines = data.split(b"\n")
    last = len(lines) - 1  # the piece after the final newline is incomplete
    pending: list[tuple[int, str]] = []
    for index, raw in enumerate(lines):
        if not raw.strip(b" \t\r"):
            continue
        change = parse_change(raw) if index < last else None
        if change is None:
            pending.append((index + 1, "incomplete last line" if index == last else "not a journal entry"))
            continue
        scan.bad += pending
        pending = []
        scan.entries.append((index + 1, change))
    scan.torn = pending
    return scan


# -- what can be read of a damaged snapshot ---------------------------------------------


@attrs.define
class Salvage:
    """The fields of a damaged snapshot that could still be read, each complete."""

    #: Top-level fields of ``session`` read completely, as JSON values.
    fields: dict[str, Any] = attrs.Factory(dict)
    #: Dict fields cut short: the entries read completely.
    partial: dict[str, dict[str, Any]] = attrs.Factory(dict)

    @property
    def journal_seq(self) -> int | None:
        seq = self.fields.get("journal_seq")
        return seq if isinstance(seq, int) and not isinstance(seq, bool) and seq >= 0 else None

    @property
    def empty(self) -> bool:
        return not self.fields and not any(self.partial.values())


def _inflated_pieces(data: bytes) -> Iterator[bytes]:
    """What a gzip file inflates to, a piece at a time, up to the first damage or its end."""
    decomp = zlib.decompressobj(31)
    for offset in range(0, len(data), 4096):
        chunk = data[offset:offset + 4096]
        while chunk:
            try:
                piece = decomp.decompress(chunk, 1 << 20)
            except zlib.error:
                return
            yield piece
            chunk = decomp.unconsumed_tail
        if decomp.eof:
            return


def _readable_text(data: bytes, start: str = "") -> str:
    """The text a damaged gzip file yields before the damage ("" if it does not begin with *start*).

    At most :func:`limits.max_state_size` bytes are inflated.
    """
    limit = max_state_size()
    prefix = start.encode()
    out: list[bytes] = []
    size = 0
    for piece in _inflated_pieces(data):
        out.append(piece)
        size += len(piece)
        if prefix and size >= len(prefix):
            if not b"".join(out).startswith(prefix):
                return ""
            prefix = b""
        if size > limit:
            break
    raw = b"".join(out)[:limit]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return raw[: exc.start].decode("utf-8")


def salvage_snapshot(data: bytes) -> Salvage | None:
    """The complete fields and entries at the start of a damaged snapshot of ours.

    The codec writes compact JSON with sorted keys, so a snapshot cut short
    (or damaged part-way) still holds its first fields whole; each value
    counts only if what follows it shows it ended there (a number cut in
    the middle would parse as a smaller one). Returns ``None`` when not even
    the start of our document can be read.
    """
    head = '{"format":"' + codec.FORMAT + '","session":{'
    text = _readable_text(data, head)
    if not text.startswith(head):
        return None
    decoder = json.JSONDecoder()
    salvage = Salvage()
    pos = len(head)

    def value_at(at: int) -> tuple[Any, int]:
        value, end = decoder.raw_decode(text, at)
        if end >= len(text) or text[end] not in ",}":
            raise ValueError("cut")
        return value, end

    def key_at(at: int) -> int:
        key, end = decoder.raw_decode(text, at)
        if not isinstance(key, str) or text[end:end + 1] != ":":
            raise ValueError("not a key")
        return key, end + 1

    try:
        while not text.startswith("}", pos):
            if salvage.fields or salvage.partial:
                if text[pos:pos + 1] != ",":
                    break
                pos += 1
            key, pos = key_at(pos)
            if key in _DICT_FIELDS and text.startswith("{", pos):
                entries: dict[str, Any] = {}
                salvage.partial[key] = entries
                pos += 1
                while not text.startswith("}", pos):
                    if entries:
                        if text[pos:pos + 1] != ",":
                            raise ValueError("cut")
                        pos += 1
                    name, pos = key_at(pos)
                    entries[name], pos = value_at(pos)
                pos += 1
                if pos >= len(text) or text[pos] not in ",}":
                    raise ValueError("cut")
                salvage.fields[key] = salvage.partial.pop(key)
            else:
                salvage.fields[key], pos = value_at(pos)
    except (ValueError, IndexError):
        pass
    return salvage


def _valid_fields(salvage: Salvage) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The salvaged fields and entries that fit the model (each checked on its own)."""
    names = {f.name for f in attrs.fields(SessionState)}
    whole: dict[str, Any] = {}
    for key, value in salvage.fields.items():
        if key in names:
            try:
                codec.converter.structure({key: value}, SessionState)
            except Exception:  # noqa: BLE001 - a field of the wrong shape is simply not salvaged
                continue
            whole[key] = value
    partial: dict[str, dict[str, Any]] = {}
    for key, entries in salvage.partial.items():
        if key not in names:
            continue
        good = {}
        for name, value in entries.items():
            try:
                codec.converter.structure({key: {name: value}}, SessionState)
            except Exception:  # noqa: BLE001
                continue
            good[name] = value
        partial[key] = good
    return whole, partial


# -- rebuilding the state ---------------------------------------------------------------


@attrs.define
class Rebuild:
    """The state of a session as well as it can be known, and how it was found."""

    path: str
    state: SessionState | None = None
    #: ``plainbox-like``, ``plainbox``, or ``None`` when nothing tells.
    origin: str | None = None
    source_version: int | None = None
    #: Bytes of the snapshot (``None``: missing).
    snapshot_data: bytes | None = None
    snapshot_error: CorruptSession | None = None
    backup_exists: bool = False
    backup_error: CorruptSession | None = None
    #: Snapshot temporaries left in the session directory (names); those that decode were base candidates.
    temporaries: list[str] = attrs.Factory(list)
    journal: JournalScan = attrs.Factory(JournalScan)
    #: Where the state came from: ``session``, ``session.bak``, a temporary's name, ``salvage``, ``nothing``.
    base: str = "session"
    base_seq: int = 0
    #: Journal changes applied on top of the base.
    applied: int = 0
    #: ``(first, last, line)``: sequence numbers missing before journal line *line*.
    gaps: list[tuple[int, int, int]] = attrs.Factory(list)
    #: ``(line, seq, error)``: journal changes that could not be applied.
    unapplied: list[tuple[int, int, str]] = attrs.Factory(list)
    #: What is known to be lost, in words: journal gaps, and what a damaged snapshot took with it.
    losses: list[str] = attrs.Factory(list)
    #: Where the state was rebuilt from, in words (only when the snapshot is damaged).
    recovered: list[str] = attrs.Factory(list)
    #: Whether the session's initial metadata is lost (neither a snapshot nor the journal has it).
    metadata_lost: bool = False

    @property
    def snapshot_ok(self) -> bool:
        return self.snapshot_data is not None and self.snapshot_error is None

    @property
    def ours(self) -> bool:
        return self.origin == codec.FORMAT

    @property
    def journal_needs_repair(self) -> bool:
        return self.journal.damaged or bool(self.gaps) or bool(self.unapplied)


def _decode(data: bytes | None, path: str) -> tuple[codec.Loaded | None, CorruptSession | None]:
    if data is None:
        return None, None
    try:
        return codec.decode_state(data, path), None
    except CorruptSession as exc:
        return None, exc


def _replaced(path: str, st: os.stat_result | None) -> bool:
    try:
        now = os.stat(path)
    except OSError:
        return st is not None
    return st is None or (now.st_ino, now.st_mtime_ns) != (st.st_ino, st.st_mtime_ns)


def rebuild_state(path: str, attempts: int = 10) -> Rebuild:
    """Read everything that tells the state of the session at *path*; never writes, never raises for damage.

    Like the loader, reads again if a writer replaced the snapshot meanwhile.
    """
    state_path = os.path.join(path, storage.STATE_FILE)
    for _ in range(attempts):
        try:
            st = os.stat(state_path)
        except OSError:
            st = None
        rebuild = _rebuild_once(path)
        if not _replaced(state_path, st):
            return rebuild
    return rebuild


def _read_snapshot(path: str, state_path: str) -> tuple[bytes | None, CorruptSession | None]:
    try:
        return _read_bytes(path, storage.STATE_FILE), None
    except OSError as exc:
        return b"", CorruptSession(state_path, f"cannot read: {exc.strerror}")


def _rebuild_once(path: str) -> Rebuild:
    rb = Rebuild(path=path)
    state_path = os.path.join(path, storage.STATE_FILE)
    rb.snapshot_data, read_error = _read_snapshot(path, state_path)
    loaded, rb.snapshot_error = _decode(rb.snapshot_data, state_path)
    rb.snapshot_error = read_error or rb.snapshot_error
    if loaded is not None:
        rb.origin, rb.source_version = loaded.origin, loaded.source_version
    # Earlier complete snapshots: session.bak, and temporaries a killed writer left behind.
    backup_path = os.path.join(path, storage.BACKUP_FILE)
    candidates: list[tuple[str, codec.Loaded]] = []
    try:
        backup_data = _read_bytes(path, storage.BACKUP_FILE)
    except OSError as exc:
        backup_data, rb.backup_error = b"", CorruptSession(backup_path, f"cannot read: {exc.strerror}")
    rb.backup_exists = backup_data is not None
    backup, error = _decode(backup_data, backup_path)
    rb.backup_error = rb.backup_error or error
    if backup is not None:
        candidates.append((storage.BACKUP_FILE, backup))
    rb.temporaries = [n for n in _stale_temporaries(path) if "/" not in n]
    for name in rb.temporaries:
        try:
            tmp, _ = _decode(_read_bytes(path, name), os.path.join(path, name))
        except OSError:
            tmp = None
        if tmp is not None:
            candidates.append((name, tmp))
    if rb.origin is None:
        if any(os.path.exists(os.path.join(path, m)) for m in _OUR_MARKERS) or any(
            c.origin == codec.FORMAT for _, c in candidates
        ):
            rb.origin = codec.FORMAT
        elif candidates:
            rb.origin = candidates[0][1].origin
    if rb.origin != codec.FORMAT:
        rb.state = loaded.state if loaded is not None else None
        rb.base = "session" if loaded is not None else "nothing"
        return rb
    try:
        journal_data = _read_bytes(path, storage.JOURNAL_FILE)
        unreadable = None
    except OSError as exc:
        journal_data, unreadable = b"", f"cannot read: {exc.strerror}"
    rb.journal = scan_journal(journal_data)
    rb.journal.unreadable = unreadable
    if loaded is not None:
        state, rb.base = loaded.state, "session"
    else:
        state = _choose_base(rb, [c for c in candidates if c[1].origin == codec.FORMAT])
    rb.base_seq = state.journal_seq
    _replay(rb, state)
    if rb.metadata_lost and any(
        c.get("op") == "meta" and isinstance(c.get("set"), dict) and "created" in c["set"]
        for _, c in rb.journal.entries
        if c["seq"] > rb.base_seq
    ):
        rb.metadata_lost = False  # the journal holds the initial metadata too
    _describe_losses(rb, state, snapshot_lost=loaded is None)
    rb.state = state
    return rb


def _choose_base(rb: Rebuild, candidates: list[tuple[str, codec.Loaded]]) -> SessionState:
    """The best starting point without a readable snapshot: older snapshots, merged with what the damaged one still shows."""
    older_name, older = None, None
    if candidates:
        older_name, loaded = max(candidates, key=lambda c: c[1].state.journal_seq)
        older = loaded.state
    salvage = salvage_snapshot(rb.snapshot_data) if rb.snapshot_data else None
    if salvage is not None and not salvage.empty:
        whole, partial = _valid_fields(salvage)
        partial = {k: v for k, v in partial.items() if v}
        seq = whole.get("journal_seq")
        if (whole or partial) and (older is None or (seq is not None and seq > older.journal_seq)):
            state = _merge(whole, partial, older)
            rb.base = "salvage"
            read = sorted(whole) + [f"{len(v)} entries of {k}" for k, v in sorted(partial.items())]
            at = f"journal seq {seq}: " if seq is not None else ""
            rb.recovered.append(f"the readable part of the damaged snapshot ({at}{', '.join(read)})")
            missing = sorted({f.name for f in attrs.fields(SessionState)} - set(whole))
            if missing:
                source = f"{older_name} (journal seq {older.journal_seq})" if older is not None else None
                rb.losses.append(
                    f"the damaged snapshot is unreadable from its field {min(missing)} on: "
                    + ", ".join(f"{m} (partly)" if m in partial else m for m in missing)
                    + (f" are as of {source}" if source else " are lost")
                )
            if "metadata" not in whole and older is None:
                rb.metadata_lost = "metadata" not in partial
            return state
    if older is not None:
        rb.base = older_name
        rb.recovered.append(f"{older_name} (journal seq {older.journal_seq})")
        return older
    rb.base = "nothing"
    rb.metadata_lost = True
    rb.recovered.append("an empty state (no earlier snapshot is usable)")
    return SessionState()


def _merge(whole: dict[str, Any], partial: dict[str, dict[str, Any]], older: SessionState | None) -> SessionState:
    """A state from salvaged fields, completed by an older snapshot where the damage hides them."""
    doc = codec.converter.unstructure(older if older is not None else SessionState())
    for key, value in whole.items():
        doc[key] = value
    for key, entries in partial.items():
        doc[key] = {**(doc.get(key) or {}), **entries}
    if "running_jobs" not in whole and older is not None:
        # A job the older snapshot saw running may have finished since: keep it only if no result says so.
        results = doc.get("results") or {}
        doc["running_jobs"] = {
            job: running
            for job, running in (doc.get("running_jobs") or {}).items()
            if not any(a.get("attempt", 1) >= running.get("attempt", 1) for a in results.get(job, []))
        }
    try:
        return codec.converter.structure(doc, SessionState)
    except Exception:  # noqa: BLE001 - should not happen: every field was checked on its own
        return older if older is not None else SessionState()


def _replay(rb: Rebuild, state: SessionState) -> None:
    """Apply the journal's good lines newer than *state*, noting gaps and changes that do not apply."""
    for line, change in rb.journal.entries:
        seq = change["seq"]
        if seq <= state.journal_seq:
            continue
        if seq != state.journal_seq + 1:
            rb.gaps.append((state.journal_seq + 1, seq - 1, line))
        op, job = change.get("op"), change.get("job")
        had_results = isinstance(job, str) and job in state.results
        try:
            state.apply(change, codec.structure_attempt)
        except Exception as exc:  # noqa: BLE001 - reported, never fatal
            if op == "result" and isinstance(job, str) and not had_results and state.results.get(job) == []:
                del state.results[job]
            rb.unapplied.append((line, seq, " ".join(str(exc).split()) or type(exc).__name__))
            state.journal_seq = seq
            continue
        rb.applied += 1


def _describe_losses(rb: Rebuild, state: SessionState, snapshot_lost: bool) -> None:
    for first, last, line in rb.gaps:
        span = f"{first}" if first == last else f"{first} to {last}"
        where = "only the damaged snapshot had them" if snapshot_lost else "their journal lines are damaged or gone"
        rb.losses.append(f"journal change(s) {span} (before journal line {line}): {where}")
    if not snapshot_lost:
        return
    if rb.applied:
        rb.recovered.append(f"{rb.applied} newer journal change(s)")
    newest = max((c["seq"] for _, c in rb.journal.entries), default=None)
    if rb.base != "salvage" and not rb.gaps and (newest is None or newest <= rb.base_seq):
        rb.losses.append(f"any change after journal seq {rb.base_seq} that only the damaged snapshot had")
    if rb.metadata_lost:
        rb.losses.append("the session's metadata (title, creation time, how it was run: it cannot be resumed)")


# -- io-logs ----------------------------------------------------------------------------


@attrs.define
class LogUse:
    """An attempt whose log is a given file."""

    job_id: str
    attempt: int
    #: The result, ``None`` for a job still marked as running.
    result: Attempt | None


@attrs.define
class RawCompare:
    """How one raw file (``.stdout``/``.stderr``) compares with the records of its stream."""

    path: str
    exists: bool = False
    size: int = 0
    #: Bytes the records hold for this stream.
    expected: int = 0
    #: Offset of the first differing byte.
    differs_at: int | None = None
    #: The file ended before the records' data did (and matched up to there).
    short: bool = False
    #: Why it cannot be read (not a regular file, no permission), if it cannot.
    problem: str | None = None

    @property
    def status(self) -> str:
        """``equal``, ``missing``, ``unreadable``, ``differs``, ``shorter`` or ``longer``."""
        if self.problem is not None:
            return "unreadable"
        if not self.exists:
            return "equal" if self.expected == 0 else "missing"
        if self.differs_at is not None:
            return "differs"
        if self.short or self.size < self.expected:
            return "shorter"
        if self.size > self.expected:
            return "longer"
        return "equal"


@attrs.define
class LogScan:
    """A ``.record.gz`` read through, and its raw files compared with it."""

    record_path: str
    exists: bool = False
    records: int = 0
    complete: bool = False
    problem: str | None = None
    raw: dict[str, RawCompare] = attrs.Factory(dict)

    @property
    def raw_extra(self) -> int:
        """Bytes the raw files hold beyond the records, where they extend them exactly."""
        return sum(r.size - r.expected for r in self.raw.values() if r.status == "longer")


def stem_of(record_path: str) -> str:
    return record_path[: -len(RECORD_SUFFIX)] if record_path.endswith(RECORD_SUFFIX) else record_path


def scan_log(record_path: str, compare_raw: bool = True) -> LogScan:
    """Read *record_path* record by record, comparing each stream's data with its raw file as it goes.

    Memory stays bounded by one record, however large the files.
    """
    scan = LogScan(record_path, exists=os.path.exists(record_path))
    stem = stem_of(record_path)
    handles: dict[str, Any] = {}
    for stream in iolog.STREAMS:
        raw = scan.raw[stream] = RawCompare(f"{stem}.{stream}")
        if compare_raw:
            try:
                handles[stream] = open_regular(raw.path)
                raw.exists = True
            except FileNotFoundError:
                pass
            except OSError as exc:
                raw.exists = True
                raw.problem = f"cannot read: {exc.strerror}"
    try:
        if scan.exists:
            reader = iolog.RecordReader(record_path)
            for record in reader:
                scan.records += 1
                raw = scan.raw[record.stream]
                handle = handles.get(record.stream)
                if handle is not None and raw.differs_at is None and not raw.short:
                    got = handle.read(len(record.data))
                    if got != record.data:
                        same = _common_prefix(got, record.data)
                        if same < len(got):
                            raw.differs_at = raw.expected + same
                        else:
                            raw.short = True
                raw.expected += len(record.data)
            scan.complete, scan.problem = reader.complete, reader.problem
        for stream, handle in handles.items():
            scan.raw[stream].size = os.fstat(handle.fileno()).st_size
    finally:
        for handle in handles.values():
            handle.close()
    return scan


def _common_prefix(a: bytes, b: bytes) -> int:
    n = min(len(a), len(b))
    lo, hi = 0, n
    while lo < hi:  # binary search on slices: fast for large equal prefixes
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def log_uses(state: SessionState) -> dict[str, list[LogUse]]:
    """``io_log_filename`` -> the attempts that name it (results and running jobs)."""
    uses: dict[str, list[LogUse]] = {}
    for job_id, attempts in state.results.items():
        for attempt in attempts:
            if attempt.io_log_filename:
                uses.setdefault(attempt.io_log_filename, []).append(LogUse(job_id, attempt.attempt, attempt))
    for job_id, running in state.running_jobs.items():
        if running.io_log_filename:
            uses.setdefault(running.io_log_filename, []).append(LogUse(job_id, running.attempt, None))
    return uses


def _interrupted_comments() -> frozenset[str]:
    from plainbox_like.run import batch
    from plainbox_like.run import settle

    comments = {
        settle.STOPPED_WHILE_RUNNING,
        batch.INTERRUPTED,
        "noreturn job: the session stopped while it ran, as expected",
        RESULT_LOST,
    }
    stopped = getattr(batch, "STOPPED_BY_REQUEST", None)  # the stop command's, where it exists
    if stopped:
        comments.add(stopped)
    return frozenset(comments)


def _cut_is_expected(uses: list[LogUse], interrupted: frozenset[str]) -> bool:
    """Whether a damaged log belongs to an attempt that was stopped while it ran (a noreturn job's, too)."""
    from plainbox_like.run.settle import NORETURN_PREFIX

    return any(
        u.result is None or u.result.comments in interrupted or (u.result.comments or "").startswith(NORETURN_PREFIX)
        for u in uses
    )


def _describe(uses: list[LogUse]) -> str:
    first = uses[0]
    return f"job {first.job_id!r} attempt {first.attempt}"


def _log_path(session_path: str, name: str) -> str:
    """Where log *name* is; only for names :func:`storage.outside_reason` accepted (relative, inside)."""
    return os.path.join(session_path, name)


def _rel(session_path: str, path: str) -> str:
    try:
        rel = os.path.relpath(path, session_path)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel


# -- checking ---------------------------------------------------------------------------


def _being_created(path: str, rb: Rebuild, live: bool) -> bool:
    """No state file yet, and nothing that only an existing session has: probably being created."""
    if rb.snapshot_data is not None or rb.backup_exists or rb.journal.size:
        return False
    try:
        if os.listdir(os.path.join(path, storage.IO_LOGS)):
            return False
    except OSError:
        pass
    if live:
        return True
    try:
        return time.time() - os.stat(path).st_mtime < CREATING_GRACE
    except OSError:
        return False


def check_session(path: str, held: set | None = None) -> SessionCheck:
    """Check the session directory at *path*; reads only, never raises for a damaged session."""
    path = os.path.abspath(path)
    report = SessionCheck(session_id_of(path), path)
    if not os.path.isdir(path):
        report.problem(".", "not a directory", "not-a-session")
        return report
    live = storage.writer_alive(path, held)
    holder = storage.lock_holder(path)
    rb = rebuild_state(path)
    report.origin = rb.origin
    ours = rb.ours
    if live and holder is not None:
        report.note(
            storage.LOCK_FILE,
            f"being written by pid {holder[0]} on {holder[1]}: what follows may be out of date",
            "being-written",
        )
    # The snapshot.
    if rb.snapshot_data is None:
        if _being_created(path, rb, live):
            report.note(storage.STATE_FILE, "not written yet: the session is being created", "being-created")
            return report
        report.problem(storage.STATE_FILE, "state file is missing", "snapshot-missing")
    elif rb.snapshot_error is not None:
        report.problem(storage.STATE_FILE, rb.snapshot_error.problem, "snapshot-corrupt")
    if rb.origin is None:
        report.note(
            ".",
            "nothing tells whether this is a plainbox-like or a Checkbox/Plainbox session "
            "(no journal, no lock, no readable snapshot)",
            "unknown-origin",
        )
        return report
    for part in storage.symlinked_parts(path):
        kind = "symlinked-directory" if part.is_dir else "symlinked-file"
        report.problem(part.name, f"{part.describe()}: nothing writes through it", kind)
    if ours:
        _check_our_files(report, rb, live, holder)
    if rb.state is not None:
        _check_logs(report, rb, live)
    return report


def _check_our_files(report: SessionCheck, rb: Rebuild, live: bool, holder: tuple[int, str] | None) -> None:
    path = rb.path
    if not rb.snapshot_ok:
        how = " + ".join(rb.recovered)
        lost = "; lost: " + "; ".join(rb.losses) if rb.losses else ""
        report.note(storage.STATE_FILE, f"repair would rebuild it from {how}{lost}", "rebuild-preview")
    if rb.backup_error is not None:
        report.problem(storage.BACKUP_FILE, rb.backup_error.problem, "backup-corrupt")
    # The journal.
    scan = rb.journal
    if scan.unreadable:
        report.problem(storage.JOURNAL_FILE, f"{scan.unreadable} (the session cannot be loaded)", "journal-unreadable")
    elif not scan.exists:
        report.problem(storage.JOURNAL_FILE, "missing (every plainbox-like session has one)", "journal-missing")
    for line, problem in scan.bad:
        report.problem(
            storage.JOURNAL_FILE,
            f"line {line}: {problem}, followed by good lines (the session cannot be loaded)",
            "journal-bad-line",
        )
    if scan.torn:
        line, problem = scan.torn[0]
        more = f" and {len(scan.torn) - 1} more damaged line(s)" if len(scan.torn) > 1 else ""
        message = f"torn tail: line {line}: {problem}{more} (ignored when loading)"
        if live:  # possibly a line being appended at this very moment
            report.note(storage.JOURNAL_FILE, message + "; the writer may be appending it right now", "journal-torn")
        else:
            report.problem(storage.JOURNAL_FILE, message, "journal-torn")
    if rb.snapshot_ok and not scan.bad:
        for first, last, line in rb.gaps:
            report.problem(
                storage.JOURNAL_FILE,
                f"line {line}: sequence gap: expected {first}, found {last + 1} (the session cannot be loaded)",
                "journal-gap",
            )
    for line, seq, error in rb.unapplied:
        report.problem(
            storage.JOURNAL_FILE, f"line {line}: change seq {seq} cannot be applied: {error}", "journal-unapplicable"
        )
    # Temporaries and directories.
    for name in _stale_temporaries(path):
        if live:
            report.note(name, "a temporary file (the writer may be using it right now)", "temporary")
        else:
            report.problem(name, "stale temporary file left by an interrupted write", "stale-temporary")
    for sub in (storage.IO_LOGS, storage.SHARE_DIR):
        if not os.path.isdir(os.path.join(path, sub)):
            report.problem(sub, "directory is missing", "directory-missing")
    # The lock and the runner.
    try:
        os.close(storage.open_session_file(path, storage.LOCK_FILE))
    except FileNotFoundError:
        pass
    except OSError as exc:
        report.problem(storage.LOCK_FILE, f"cannot read: {exc.strerror} (no writer can lock the session)", "lock-unusable")
    state = rb.state
    if live or state is None:
        return
    here = socket.gethostname()
    if holder is not None and holder[1] != here:
        report.note(
            storage.LOCK_FILE,
            f"last written by pid {holder[0]} on host {holder[1]}: this host cannot tell whether it still runs",
            "foreign-writer",
        )
        return
    if state.running_jobs:
        jobs = sorted(state.running_jobs)
        names = ", ".join(jobs[:5]) + (f" and {len(jobs) - 5} more" if len(jobs) > 5 else "")
        who = f"the writer (pid {holder[0]} on {holder[1]})" if holder else "the writer"
        report.problem(
            storage.LOCK_FILE,
            f"interrupted run: {who} is gone while {len(jobs)} job(s) were running ({names}): resume or cleanup",
            "interrupted-run",
        )
    elif holder is not None:
        report.note(
            storage.LOCK_FILE,
            f"the last writer (pid {holder[0]} on {holder[1]}) did not close the session; no job was running",
            "unclean-stop",
        )


def _check_logs(report: SessionCheck, rb: Rebuild, live: bool) -> None:
    path, state = rb.path, rb.state
    ours = rb.ours
    interrupted = _interrupted_comments()
    uses = log_uses(state)
    referenced: set[str] = set()
    seen: set[str] = set()
    for name, users in uses.items():
        outside = storage.log_files_outside(path, name)
        if outside is not None:
            field = storage.log_field(users[0].job_id, users[0].attempt)
            report.problem(outside[0], f"{field} {outside[1]}: refused, nothing is read through it", "path-outside")
            continue
        record_path = os.path.normpath(_log_path(path, name))
        if record_path in seen:
            continue
        seen.add(record_path)
        stem = stem_of(record_path)
        referenced.update({record_path, f"{stem}.stdout", f"{stem}.stderr"})
        running_live = live and any(u.result is None for u in users)
        if running_live:
            continue  # being written right now: cut and behind its raw files by design
        rel = _rel(path, record_path)
        scan = scan_log(record_path)
        if not scan.exists:
            raws = [r for r in scan.raw.values() if r.exists]
            extra = f" (its raw files are there: {', '.join(_rel(path, r.path) for r in raws)})" if raws else ""
            report.problem(rel, f"missing: the log of {_describe(users)}{extra}", "log-missing")
            continue
        expected_cut = _cut_is_expected(users, interrupted)
        if not scan.complete:
            extra = f"; the raw files hold {scan.raw_extra} more byte(s)" if scan.raw_extra else ""
            what = f"{scan.problem} ({scan.records} complete record(s) readable{extra})"
            if expected_cut:
                report.note(rel, f"{what}: expected, {_describe(users)} was stopped while it ran", "log-cut")
            else:
                report.problem(rel, what, "log-damaged")
        for stream, raw in scan.raw.items():
            status = raw.status
            raw_rel = _rel(path, raw.path)
            if status == "equal" or (status == "longer" and not scan.complete):
                continue
            if status == "missing":
                message = f"missing, while the records hold {raw.expected} byte(s) of {stream}"
                if ours:
                    report.problem(raw_rel, message, "raw-missing")
                else:
                    report.note(raw_rel, message, "raw-missing")
                continue
            if status == "unreadable":
                report.problem(raw_rel, raw.problem, "raw-unreadable")
                continue
            if status == "differs":
                message = f"differs from the records from byte {raw.differs_at} on"
            elif status == "shorter":
                message = f"shorter than the records: {raw.size} of {raw.expected} byte(s)"
            else:
                message = f"longer than the records: {raw.size} byte(s), the records hold {raw.expected}"
            report.problem(raw_rel, message, "raw-differs")
    if ours:
        _check_orphans(report, rb, referenced)


def _check_orphans(report: SessionCheck, rb: Rebuild, referenced: set[str]) -> None:
    logs_dir = os.path.join(rb.path, storage.IO_LOGS)
    try:
        names = sorted(os.listdir(logs_dir))
    except OSError:
        return
    stems: dict[str, list[str]] = {}
    for name in names:
        if name.startswith("."):
            continue
        full = os.path.normpath(os.path.join(logs_dir, name))
        if full in referenced:
            continue
        for suffix in (RECORD_SUFFIX, ".stdout", ".stderr"):
            if name.endswith(suffix):
                stems.setdefault(name[: -len(suffix)], []).append(name)
                break
    for stem, files in stems.items():
        report.note(
            f"{storage.IO_LOGS}/{stem}{RECORD_SUFFIX}" if f"{stem}{RECORD_SUFFIX}" in files else f"{storage.IO_LOGS}/{files[0]}",
            "not the log of any attempt (left by a job start that was never recorded, or by lost changes)",
            "orphan-log",
        )


def check_repository(repo: storage.SessionRepository) -> list[SessionCheck]:
    """Check every session of *repo*, in id order."""
    held = storage.held_flocks()
    return [check_session(p, held) for p in sorted(repo.session_paths(), key=session_id_of)]


def looks_like_session(path: str) -> bool:
    """Whether directory *path* has any file a session (ours or Plainbox's) has."""
    return os.path.isdir(path) and any(
        os.path.exists(os.path.join(path, name))
        for name in (storage.STATE_FILE, storage.BACKUP_FILE, storage.JOURNAL_FILE, storage.LOCK_FILE, storage.IO_LOGS)
    )


def resolve(repo: storage.SessionRepository, ref: str) -> str:
    """Like :meth:`SessionRepository.resolve`, but also finds a session directory whose state file is lost."""
    try:
        return repo.resolve(ref)
    except SessionNotFound:
        candidate = os.path.abspath(ref)
        if (os.sep in ref or ref in (".", "..")) and looks_like_session(candidate):
            return candidate
        raise


# -- repairing --------------------------------------------------------------------------


@attrs.define
class RepairResult:
    """What :func:`repair_session` did, and what is still wrong."""

    id: str
    path: str
    actions: list[str] = attrs.Factory(list)
    #: What could not be recovered, in words.
    lost: list[str] = attrs.Factory(list)
    quarantine: str | None = None
    after: SessionCheck | None = None


def take_lock(path: str) -> int:
    """Take the session's write lock as a writer does; raises :class:`SessionLocked`."""
    return storage.acquire_lock(path, "repair")


def release_lock(fd: int, restore: tuple[int, str] | None = None) -> None:
    """Empty the lock file (a clean stop), or put back the *restore* holder it named, and release it."""
    try:
        os.ftruncate(fd, 0)
        if restore is not None:
            os.pwrite(fd, f"{restore[0]} {restore[1]}\n".encode(), 0)
    finally:
        os.close(fd)


def refuse_symlinked_quarantine(session_path: str) -> None:
    """Raise :class:`OutsideSession` if ``quarantine/`` is a symbolic link: a repair never writes through it."""
    root = os.path.join(session_path, QUARANTINE_DIR)
    if os.path.islink(root):
        raise OutsideSession(
            f"session {session_id_of(session_path)} ({session_path}): {QUARANTINE_DIR}/ is a "
            f"symbolic link (to {os.readlink(root)!r:.200}): refusing to write through it"
        )


class _Quarantine:
    """``quarantine/<UTC timestamp>/`` of one repair, created when first needed."""

    def __init__(self, session_path: str, now: float | None = None) -> None:
        self.session_path = session_path
        stamp = datetime.datetime.fromtimestamp(time.time() if now is None else now, datetime.timezone.utc)
        self.stamp = stamp.strftime("%Y%m%dT%H%M%SZ")
        self.path: str | None = None

    def _ensure(self) -> str:
        if self.path is None:
            root = os.path.join(self.session_path, QUARANTINE_DIR)
            refuse_symlinked_quarantine(self.session_path)  # checked first thing too; again, just before use
            os.makedirs(root, mode=0o700, exist_ok=True)
            for n in range(1, 10_000):
                candidate = os.path.join(root, self.stamp if n == 1 else f"{self.stamp}-{n}")
                try:
                    os.mkdir(candidate, 0o700)
                except FileExistsError:
                    continue
                self.path = candidate
                break
            else:  # pragma: no cover
                raise PlainboxLikeError(f"{root}: no free quarantine directory name")
        return self.path

    def target(self, source: str) -> str:
        rel = os.path.relpath(source, self.session_path)
        target = os.path.join(self._ensure(), rel)
        os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
        return target

    def display(self, target: str) -> str:
        return os.path.relpath(target, self.session_path)

    def move(self, source: str) -> str:
        """Move *source* into the quarantine; returns its new name relative to the session."""
        target = self.target(source)
        os.rename(source, target)
        storage.fsync_dir(os.path.dirname(source))
        return self.display(target)

    def keep_copy(self, source: str) -> str:
        """Keep the current content of *source* (a hard link, or a copy) before it is replaced."""
        target = self.target(source)
        try:
            os.link(source, target)
        except OSError:
            _copy_private(source, target)
        return self.display(target)


def _copy_private(source: str, target: str) -> None:
    """Copy *source* to a new file *target* with mode 0600, and fsync it (no part of a copy is left on failure)."""
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with open_regular(source) as src:
            while chunk := src.read(_CHUNK):
                storage._write_all(fd, chunk)
        os.fsync(fd)
    except OSError as exc:
        os.close(fd)
        os.unlink(target)
        raise _named(exc, target) from None
    os.close(fd)


class _AtomicFile:
    """A new file written under a temporary name beside *path*, then renamed over it.

    Whatever fails (a full disk), :meth:`abort` leaves no temporary file, and the error names the file.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        directory = os.path.dirname(path)
        self.fd, self.tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
        self._buffer = bytearray()

    def write(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) >= _CHUNK:
            self._flush()

    def _flush(self) -> None:
        try:
            storage._write_all(self.fd, bytes(self._buffer))
        except OSError as exc:
            raise _named(exc, self.path) from None
        self._buffer.clear()

    def commit(self, quarantine: _Quarantine | None) -> str | None:
        """fsync, keep the old file in *quarantine* (if it exists), rename into place."""
        self._flush()
        try:
            os.fsync(self.fd)
        except OSError as exc:
            raise _named(exc, self.path) from None
        os.close(self.fd)
        self.fd = -1
        kept = None
        if quarantine is not None and os.path.lexists(self.path):
            if stat.S_ISREG(os.lstat(self.path).st_mode):
                kept = quarantine.keep_copy(self.path)
            else:  # a directory (or a link) in its place: out of the way, whole
                kept = quarantine.move(self.path)
        os.replace(self.tmp, self.path)
        storage.fsync_dir(os.path.dirname(self.path))
        return kept

    def abort(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        try:
            os.unlink(self.tmp)
        except OSError:
            pass


def _named(exc: OSError, path: str) -> OSError:
    """*exc* (raised by a write, which names no file) with *path* as its file name."""
    return OSError(exc.errno, exc.strerror, path) if exc.filename is None else exc


def _record_line(stream: str, data: bytes, delay: float) -> bytes:
    """A record line exactly as :class:`iolog.RecordWriter` writes it."""
    return f'[{float(delay)!r},"{stream}","{base64.b64encode(data).decode("ascii")}"]\n'.encode("ascii")


class _GzipOut:
    def __init__(self, out: _AtomicFile) -> None:
        self.out = out
        self.deflate = zlib.compressobj(6, zlib.DEFLATED, 31)

    def write(self, data: bytes) -> None:
        compressed = self.deflate.compress(data)
        if compressed:
            self.out.write(compressed)

    def finish(self) -> None:
        self.out.write(self.deflate.flush(zlib.Z_FINISH))


def _raw_tail(path: str, offset: int) -> Iterator[bytes]:
    with open_regular(path) as f:
        f.seek(offset)
        while True:
            chunk = f.read(_CHUNK)
            if not chunk:
                return
            yield chunk


def _forget_log(state: SessionState, users: list[LogUse], note: str) -> None:
    """The attempts (and running jobs) in *users* lose their log name; finished ones say why in a comment."""
    for use in users:
        target = use.result if use.result is not None else state.running_jobs.get(use.job_id)
        if use.result is not None:
            use.result.comments = f"{use.result.comments}; {note}" if use.result.comments else note
        if target is not None:
            target.io_log_filename = None


class _Repairer:
    def __init__(self, path: str, say: Callable[[str], None]) -> None:
        self.path = path
        self.say = say
        self.result = RepairResult(session_id_of(path), path)
        self.quarantine = _Quarantine(path)
        self.kept: dict[str, str] = {}

    def act(self, message: str) -> None:
        self.result.actions.append(message)
        self.say(message)

    def rel(self, path: str) -> str:
        return _rel(self.path, path)

    def keep(self, name: str) -> str | None:
        """Keep the original of top-level file *name* in quarantine before it is first replaced or emptied.

        Returns where it is kept (``None``: there is no such file, or it is empty). The journal is
        copied, not linked: writers empty it in place.
        """
        if name in self.kept:
            return self.kept[name]
        source = os.path.join(self.path, name)
        try:
            st = os.lstat(source)
            size = os.path.getsize(source)
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode):  # a directory (or a link) in its place: out of the way, whole
            self.kept[name] = self.quarantine.move(source)
            return self.kept[name]
        if name == storage.JOURNAL_FILE and size == 0:
            return None
        if name == storage.JOURNAL_FILE:
            target = self.quarantine.target(source)
            _copy_private(source, target)
            self.kept[name] = self.quarantine.display(target)
        else:
            self.kept[name] = self.quarantine.keep_copy(source)
        return self.kept[name]

    # -- logs

    def inside_logs(self, path: str) -> bool:
        logs = os.path.realpath(os.path.join(self.path, storage.IO_LOGS))
        return os.path.realpath(os.path.dirname(path)) == logs

    def repair_logs(self, state: SessionState) -> None:
        seen: set[str] = set()
        for name, users in log_uses(state).items():
            why = storage.outside_reason(self.path, name)
            if why is not None:
                self.drop_outside(state, name, why, users)
                continue
            record_path = os.path.normpath(_log_path(self.path, name))
            if record_path in seen:
                continue
            seen.add(record_path)
            outside = storage.log_files_outside(self.path, name)
            if outside is not None:
                self.result.lost.append(f"{outside[0]}: {outside[1]}: not read, not repaired")
                continue
            if not self.inside_logs(record_path):
                self.result.lost.append(f"{name}: outside the session's io-logs directory: not repaired")
                continue
            scan = scan_log(record_path)
            if not scan.exists:
                self.missing_record(state, name, record_path, scan, users)
                continue
            if not scan.complete:
                self.rewrite_record(record_path, scan)
                scan = scan_log(record_path)
            stale = [s for s, r in scan.raw.items() if r.status != "equal"]
            if stale:
                self.rebuild_raw(record_path, scan, stale)

    def drop_outside(self, state: SessionState, name: str, why: str, users: list[LogUse]) -> None:
        """A log name that leads outside the session: never read nor written, dropped from the state."""
        note = f"its log name {name!r:.200} led outside the session ({why}) and was dropped by a repair"
        _forget_log(state, users, note)
        self.act(f"{name!r:.200}: {why}: dropped from {_describe(users)} (nothing was read or written there)")
        self.result.lost.append(f"the output of {_describe(users)} (its log name led outside the session)")
        self.state_changed = True

    def missing_record(
        self, state: SessionState, name: str, record_path: str, scan: LogScan, users: list[LogUse]
    ) -> None:
        raws = {s: r for s, r in scan.raw.items() if r.exists}
        if raws:
            out = _AtomicFile(record_path)
            try:
                gz = _GzipOut(out)
                for stream in iolog.STREAMS:
                    if stream in raws:
                        for chunk in _raw_tail(raws[stream].path, 0):
                            gz.write(_record_line(stream, chunk, 0.0))
                gz.finish()
                out.commit(None)
            except BaseException:
                out.abort()
                raise
            self.act(
                f"{self.rel(record_path)}: was missing: rebuilt from "
                f"{', '.join(self.rel(r.path) for r in raws.values())} (timing and the order of stdout and stderr are lost)"
            )
            return
        when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        note = f"log {name} was missing when the session was repaired ({when})"
        _forget_log(state, users, note)
        self.act(f"{name}: missing with its raw files: {_describe(users)} now records that its log was lost")
        self.result.lost.append(f"the output of {_describe(users)} ({name} and its raw files were missing)")
        self.state_changed = True

    def rewrite_record(self, record_path: str, scan: LogScan) -> None:
        """A complete file with every readable record, then the raw files' bytes beyond them."""
        out = _AtomicFile(record_path)
        count = 0
        try:
            gz = _GzipOut(out)
            for record in iolog.RecordReader(record_path):
                gz.write(_record_line(record.stream, record.data, record.delay))
                count += 1
            tail = 0
            for stream, raw in scan.raw.items():
                if raw.status == "longer":
                    for chunk in _raw_tail(raw.path, raw.expected):
                        gz.write(_record_line(stream, chunk, 0.0))
                        tail += len(chunk)
            gz.finish()
            kept = out.commit(self.quarantine)
        except BaseException:
            out.abort()
            raise
        extra = f", plus {tail} byte(s) from the raw files that the records lacked (with no timing)" if tail else ""
        self.act(f"{self.rel(record_path)}: {scan.problem}: rewritten complete with its {count} readable record(s){extra}; the original is in {kept}")

    def rebuild_raw(self, record_path: str, scan: LogScan, streams: list[str]) -> None:
        outs = {s: _AtomicFile(scan.raw[s].path) for s in streams}
        try:
            for record in iolog.RecordReader(record_path):
                out = outs.get(record.stream)
                if out is not None:
                    out.write(record.data)
            for stream, out in list(outs.items()):
                raw = scan.raw[stream]
                kept = out.commit(self.quarantine)
                del outs[stream]
                why = _RAW_STATUS_WORDS[raw.status]
                where = f"; the old one is in {kept}" if kept else ""
                self.act(f"{self.rel(raw.path)}: {why}: rebuilt from {self.rel(record_path)}{where}")
        except BaseException:
            for out in outs.values():
                out.abort()
            raise

    state_changed = False
    lock_released = False


_RAW_STATUS_WORDS = {
    "missing": "was missing",
    "longer": "was longer than the records",
    "shorter": "was shorter than the records",
    "differs": "differed from the records",
    "unreadable": "could not be read (not a regular file, or no permission)",
}


def repair_session(path: str, say: Callable[[str], None] = lambda _m: None) -> RepairResult:
    """Repair the session directory at *path* (see the module's description).

    Raises :class:`SessionLocked` if a writer holds it, and
    :class:`PlainboxLikeError` for a Checkbox/Plainbox session (read-only) or
    a directory that cannot be told to be ours.
    """
    path = os.path.abspath(path)
    if not os.path.isdir(path):
        raise SessionNotFound(f"{path}: no such session directory")
    preview = rebuild_state(path)
    if preview.origin == "plainbox":
        raise PlainboxLikeError(f"{path}: a Plainbox/Checkbox session is read-only: it can be checked, not repaired")
    if preview.origin is None:
        raise PlainboxLikeError(
            f"{path}: cannot tell whether this is a plainbox-like session (no journal, no lock, "
            "no readable snapshot): not repairing it"
        )
    refuse_symlinked_quarantine(path)
    previous_holder = storage.lock_holder(path)
    lock_fd = take_lock(path)
    repairer = _Repairer(path, say)
    try:
        _repair_locked(repairer, lock_fd, previous_holder)
    except BaseException as exc:
        if not repairer.lock_released:
            release_lock(lock_fd, restore=None if repairer.result.actions else previous_holder)
        if isinstance(exc, OSError) and exc.errno in _DISK_ERRORS:
            where = exc.filename or path
            done = f"; {len(repairer.result.actions)} repair(s) done before it stay done" if repairer.result.actions else ""
            raise RepairStopped(
                f"{where}: cannot write: {exc.strerror}: repair stopped{done}, the rest is as it was "
                "(run repair again when there is room)"
            ) from None
        raise
    result = repairer.result
    if result.actions:  # every repair leaves its own account, beside what it kept
        repairer.quarantine._ensure()
    result.quarantine = repairer.quarantine.path
    if result.quarantine is not None:
        log_fd = os.open(os.path.join(result.quarantine, "repair.log"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with open(log_fd, "w", encoding="utf-8") as f:
            f.write("".join(f"{line}\n" for line in result.actions))
            f.write("".join(f"lost: {line}\n" for line in result.lost))
    result.after = check_session(path)
    return result


def _repair_locked(rp: _Repairer, lock_fd: int, previous_holder: tuple[int, str] | None) -> None:
    path = rp.path
    rb = rebuild_state(path)  # again, now that nobody else can write
    if rb.origin != codec.FORMAT or rb.state is None:  # pragma: no cover - checked before locking
        raise PlainboxLikeError(f"{path}: not a plainbox-like session")
    state = rb.state
    rp.result.lost.extend(rb.losses)
    if rb.metadata_lost and not state.metadata.flags:
        state.metadata.flags = [FLAG_INCOMPLETE]
        rp.state_changed = True
        rp.act("metadata: lost with the snapshot: the rebuilt session is marked incomplete")
    # Directories a writer needs.
    for sub in (storage.IO_LOGS, storage.SHARE_DIR):
        directory = os.path.join(path, sub)
        if not os.path.isdir(directory):
            if os.path.lexists(directory):
                rp.act(f"{sub}: not a directory: moved to {rp.quarantine.move(directory)}")
            os.mkdir(directory, 0o700)
            rp.act(f"{sub}: was missing: created (empty)")
    # Temporaries of interrupted writes (snapshot temporaries were read as candidates already).
    for name in _stale_temporaries(path):
        rp.act(f"{name}: stale temporary file: moved to {rp.quarantine.move(os.path.join(path, name))}")
    # Logs (a log lost with its raw files is recorded in the state).
    rp.repair_logs(state)
    # The snapshot and the journal.
    state_path = os.path.join(path, storage.STATE_FILE)
    if rb.backup_error is not None:
        moved = rp.quarantine.move(os.path.join(path, storage.BACKUP_FILE))
        rp.act(f"{storage.BACKUP_FILE}: {rb.backup_error.problem}: moved to {moved}")
    if not rb.snapshot_ok or rb.journal_needs_repair or rp.state_changed:
        kept = rp.keep(storage.STATE_FILE)
        backup = None
        if rb.snapshot_ok:
            # The usual rotation: the old snapshot becomes the backup, the old backup goes to quarantine.
            backup = os.path.join(path, storage.BACKUP_FILE)
            old_backup = rp.keep(storage.BACKUP_FILE)
            if old_backup:
                rp.act(f"{storage.BACKUP_FILE}: replaced by the previous snapshot; the old one is in {old_backup}")
        data, _ = codec.encode_state(state)
        storage.write_atomically(state_path, data, backup=backup)
        if not rb.snapshot_ok:
            problem = "state file is missing" if rb.snapshot_data is None else rb.snapshot_error.problem
            where = f"; the damaged file is in {kept}" if kept else ""
            rp.act(
                f"{storage.STATE_FILE}: {problem}: rebuilt (journal seq {state.journal_seq}) "
                f"from {' + '.join(rb.recovered)}{where}"
            )
        else:
            rp.act(
                f"{storage.STATE_FILE}: new snapshot (journal seq {state.journal_seq}) with the "
                f"{rb.applied} good journal change(s) newer than the old one, which is now {storage.BACKUP_FILE}"
            )
        _reset_journal(rp, rb, os.path.join(path, storage.JOURNAL_FILE))
    elif not rb.journal.exists:
        _reset_journal(rp, rb, os.path.join(path, storage.JOURNAL_FILE))
    # Jobs a dead runner left running: settled as resume and cleanup do.
    foreign = previous_holder is not None and previous_holder[1] != socket.gethostname()
    if state.running_jobs and foreign:
        rp.result.lost.append(
            f"not settled: {len(state.running_jobs)} job(s) marked as running by pid {previous_holder[0]} "
            f"on host {previous_holder[1]}, which this host cannot check"
        )
    if state.running_jobs and not foreign:
        uncertain = bool(rb.gaps) or (not rb.snapshot_ok and bool(rb.losses))
        _settle(rp, state, lock_fd, previous_holder, uncertain)
    else:
        rp.lock_released = True
        # Having done nothing, leave the lock naming whoever it named (a writer that did not finish).
        release_lock(lock_fd, restore=None if rp.result.actions else previous_holder)
    if not rp.result.actions:
        rp.say("nothing to repair")


def _reset_journal(rp: _Repairer, rb: Rebuild, journal_path: str) -> None:
    """Empty the journal now that the new snapshot has its good lines; the old one goes to quarantine."""
    scan = rb.journal
    if not scan.exists:
        if os.path.lexists(journal_path):  # a dangling symbolic link: out of the way, never followed
            rp.act(f"{storage.JOURNAL_FILE}: a link to nothing: moved to {rp.quarantine.move(journal_path)}")
        fd = os.open(journal_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        os.close(fd)
        rp.act(f"{storage.JOURNAL_FILE}: was missing: created (empty)")
        return
    if not scan.size:
        return
    kept = rp.keep(storage.JOURNAL_FILE)
    if os.path.lexists(journal_path):
        os.truncate(journal_path, 0)
    else:  # it was no regular file (a link): moved away whole, never followed
        os.close(os.open(journal_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600))
    what = []
    if scan.bad:
        what.append(f"damaged line(s) {', '.join(str(n) for n, _ in scan.bad)}")
    if scan.torn:
        what.append(f"torn tail from line {scan.torn[0][0]}")
    if rb.unapplied:
        what.append(f"change(s) that cannot be applied at line(s) {', '.join(str(n) for n, _, _ in rb.unapplied)}")
    if rb.gaps:
        what.append("a sequence gap")
    rp.act(
        f"{storage.JOURNAL_FILE}: {'; '.join(what) + ': ' if what else ''}its good lines are in the new snapshot; "
        f"emptied (the old journal is in {kept})"
    )
    for line, seq, error in rb.unapplied:
        rp.result.lost.append(f"journal line {line} (change seq {seq}) could not be applied: {error}")


def _settle(
    rp: _Repairer, state: SessionState, lock_fd: int, holder: tuple[int, str] | None, uncertain: bool
) -> None:
    """Give every job left running a result, through a writer on the lock we hold (it releases it)."""
    from plainbox_like.run import settle

    # The writer's snapshots replace session and session.bak and empty the journal: keep the originals.
    for name in (storage.STATE_FILE, storage.BACKUP_FILE, storage.JOURNAL_FILE):
        rp.keep(name)
    writer = storage.SessionWriter(rp.path, state, lock_fd)
    rp.lock_released = True  # the writer owns the lock from here on, and close() releases it
    try:
        before = sorted(state.running_jobs)
        if uncertain:
            # Their results may have been among the lost changes: do not claim they were cut short.
            leftovers = settle.find_leftovers(writer.id)
            for job_id in before:
                for pgid in sorted(leftovers.get(job_id, ())):
                    rp.act(f"{storage.LOCK_FILE}: killing the leftover processes of job {job_id} (process group {pgid})")
                    settle.kill_group(pgid)
                running = state.running_jobs[job_id]
                writer.job_finished(
                    job_id,
                    Attempt(
                        outcome="crash",
                        comments=RESULT_LOST,
                        io_log_filename=running.io_log_filename,
                        attempt=running.attempt,
                        started=running.started,
                    ),
                )
        else:
            notes: list[str] = []
            noreturn = settle.noreturn_ids(state, notes)
            for note in notes:
                rp.act(f"{storage.LOCK_FILE}: {note}")
            settle.settle_interrupted(writer, noreturn, lambda m: rp.act(f"{storage.LOCK_FILE}: {m}"))
        if state.metadata.running_job_name and state.metadata.running_job_name not in state.running_jobs:
            writer.update_metadata(running_job_name=None)
        if FLAG_INCOMPLETE not in state.metadata.flags or state.metadata.finished is not None:
            writer.update_metadata(flags=sorted(set(state.metadata.flags) | {FLAG_INCOMPLETE}), finished=None)
        settled = ", ".join(f"{j} ({state.latest(j).outcome})" for j in before)
        if uncertain:
            rp.act(
                f"{storage.LOCK_FILE}: job(s) still marked as running once changes were lost, "
                f"recorded as crash with an unknown result: {settled} (resume --rerun-failed runs them again)"
            )
        else:
            who = f"pid {holder[0]} on {holder[1]}" if holder else "its writer"
            rp.act(f"{storage.LOCK_FILE}: interrupted run of {who}: recorded a result for the job(s) left running: {settled}")
    finally:
        writer.close()
