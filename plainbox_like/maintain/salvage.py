"""What can still be read of a damaged session, and its state rebuilt from it (for ``check`` and ``repair``).

A lost or corrupt snapshot is rebuilt from the newest usable earlier snapshot
(``session.bak``, or a complete snapshot temporary a killed writer left), from
what can still be read of the damaged snapshot (:func:`salvage_snapshot`: every
top-level field read completely), and from the journal lines newer than that
(:func:`scan_journal` classifies every line); :func:`rebuild_state` says what
could not be recovered. Nothing here writes: ``check`` previews a rebuild,
``repair`` writes it.
"""

from __future__ import annotations

import json
import os
import zlib
from typing import Any, Iterator, get_origin, get_type_hints

import attrs

from plainbox_like.errors import CorruptSession
from plainbox_like.store import codec, confine
from plainbox_like.store.journal import parse_change
from plainbox_like.store.limits import max_state_size
from plainbox_like.store.model import SessionState
from plainbox_like.store.names import BACKUP_FILE, IO_LOGS, JOURNAL_FILE, LOCK_FILE, STATE_FILE

#: Comment of a running job whose result may have been lost with a damaged snapshot.
RESULT_LOST = "no result was recorded: the session state was damaged and rebuilt by repair"
#: Files every session of ours has from its creation on.
_OUR_MARKERS = (JOURNAL_FILE, LOCK_FILE)
#: Top-level fields of the state document, in the (sorted) order the codec writes them.
#: (Derived from the model: its dicts and attrs objects are JSON objects, its lists JSON arrays.)
_STATE_HINTS = {name: hint for name, hint in get_type_hints(SessionState).items() if name in attrs.fields_dict(SessionState)}
_DICT_FIELDS = frozenset(name for name, hint in _STATE_HINTS.items() if get_origin(hint) is dict or attrs.has(hint))
_LIST_FIELDS = frozenset(name for name, hint in _STATE_HINTS.items() if get_origin(hint) is list)


# -- reading ------------------------------------------------------------------------


def _read_bytes(session_dir: str, name: str) -> bytes | None:
    """The content of the session's file *name*, ``None`` if it does not exist.

    OSError if it is not a regular file (a FIFO must not hang check) or leads outside the session.
    """
    try:
        with os.fdopen(confine.open_session_file(session_dir, name), "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def _stale_temporaries(path: str) -> list[str]:
    """Names (relative to *path*) of snapshot and repair temporaries: ``.session.*.tmp``, ``io-logs/.*.tmp``."""
    found = []
    prefix = "." + STATE_FILE + "."
    try:
        names = os.listdir(path)
    except OSError:
        names = []
    found += [n for n in names if n.startswith(prefix) and n.endswith(".tmp")]
    try:
        log_names = os.listdir(os.path.join(path, IO_LOGS))
    except OSError:
        log_names = []
    found += [f"{IO_LOGS}/{n}" for n in log_names if n.startswith(".") and n.endswith(".tmp")]
    return sorted(found)


# -- the journal, line by line --------------------------------------------------------


@attrs.define
class JournalScan:
    """Every line of a journal, classified as :func:`~plainbox_like.store.journal.parse_journal` does."""

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
    state_path = os.path.join(path, STATE_FILE)
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
        return _read_bytes(path, STATE_FILE), None
    except OSError as exc:
        return b"", CorruptSession(state_path, f"cannot read: {exc.strerror}")


def _rebuild_once(path: str) -> Rebuild:
    rb = Rebuild(path=path)
    state_path = os.path.join(path, STATE_FILE)
    rb.snapshot_data, read_error = _read_snapshot(path, state_path)
    loaded, rb.snapshot_error = _decode(rb.snapshot_data, state_path)
    rb.snapshot_error = read_error or rb.snapshot_error
    if loaded is not None:
        rb.origin, rb.source_version = loaded.origin, loaded.source_version
    # Earlier complete snapshots: session.bak, and temporaries a killed writer left behind.
    backup_path = os.path.join(path, BACKUP_FILE)
    candidates: list[tuple[str, codec.Loaded]] = []
    try:
        backup_data = _read_bytes(path, BACKUP_FILE)
    except OSError as exc:
        backup_data, rb.backup_error = b"", CorruptSession(backup_path, f"cannot read: {exc.strerror}")
    rb.backup_exists = backup_data is not None
    backup, error = _decode(backup_data, backup_path)
    rb.backup_error = rb.backup_error or error
    if backup is not None:
        candidates.append((BACKUP_FILE, backup))
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
        journal_data = _read_bytes(path, JOURNAL_FILE)
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
