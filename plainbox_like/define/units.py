"""Job definitions and test plans read from Plainbox ``.pxu`` files and command lists.

A ``.pxu`` file is a sequence of RFC 822 style records, as Plainbox/Checkbox
providers use them::

    # a comment (``#`` in column 0)
    id: disk/read
    plugin: shell
    _summary: Read from the disk
    depends: disk/detect
    command:
      dd if=/dev/sda of=/dev/null count=1
      .
      echo done

Rules implemented by :func:`parse_pxu`:

* records are separated by one or more blank (or whitespace-only) lines;
* a field is ``key: value``; keys are case-sensitive and usually start with a
  letter or ``_`` and contain letters, digits, ``_`` and ``-`` (as in
  Checkbox, whatever comes before the first ``:`` is taken as a key);
* a line starting with a space or tab continues the previous field's value;
  the continuation lines of one field lose their common leading whitespace
  (dedent) and are appended after a newline; a continuation line that is a
  lone ``.`` stands for an empty line inside the value; leading and trailing
  empty lines of a value are dropped;
* a ``#`` in column 0 starts a comment line, also in the middle of a value;
* ``_key`` is the translatable form of ``key`` and means the same; a record
  with both uses ``_key``'s value, as Checkbox does (with a warning);
* ``unit:`` defaults to ``job``; ``unit: setup job`` is a job too,
  ``unit: test plan`` a test plan, ``unit: template`` a job template and
  ``unit: manifest entry`` a manifest entry (:class:`ManifestEntry`);
  Checkbox's kinds that play no part in a run (:data:`QUIET_UNIT_KINDS`) are
  skipped quietly, any other kind with a warning;
* a job without ``id:`` takes its id from ``name:`` (Plainbox before 0.5);
  ``plugin: local`` jobs (job generators of old Checkbox) are skipped;
* a job's ``siblings`` and ``also-after-suspend`` flags add the jobs Checkbox
  adds, right after it (:meth:`_Parser.with_siblings`); a unit with
  ``template-engine: jinja2`` that is not a template is rendered with Jinja2.

A record that cannot be used (a line that is no ``key:``, a key given twice,
no id, a bad timeout, a second unit with an id already loaded) is left out
with a warning naming its file and line; the rest loads
(:attr:`UnitSet.dropped` keeps why, so jobs needing it can say so). Untidy
records that Checkbox accepts (an id with spaces ...) load, with a warning.

Whatever is not supported (a unit kind, a plugin, an unknown field, a
template unit kind ...) is named once per load in a warning that gives the file
and line of its first use and how often it occurs.

Plain command lists (any text file not recognised as unit records) hold one
shell command per non-empty line; ``#`` lines are comments.
"""

from __future__ import annotations

import ast
import bisect
import functools
import hashlib
import itertools
import json
import math
import os
import re
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from plainbox_like.errors import UnitError

if TYPE_CHECKING:
    from plainbox_like.define.providers import Provider

__all__ = [
    "Origin",
    "JobDefinition",
    "IncludePattern",
    "Override",
    "TestPlan",
    "Template",
    "UnitSet",
    "instantiate_template",
    "jinja_context",
    "render_jinja",
    "parse_pxu",
    "parse_command_list",
    "load_units",
    "provider_namespace",
    "jobs_from_commands",
    "COMMAND_LINE_PATH",
    "QUIET_UNIT_KINDS",
    "CERTIFICATION_STATUSES",
    "OVERRIDABLE_FIELDS",
]

#: ``Origin.path`` of jobs made by :func:`jobs_from_commands` (``-c CMD`` options).
COMMAND_LINE_PATH = "<command line>"
#: Plainbox's certification statuses; ``unspecified`` is a job's default.
CERTIFICATION_STATUSES = ("unspecified", "not-part-of-certification", "non-blocker", "blocker")
#: Job fields a test plan may override (``key=value`` after an include pattern uses ``-`` or ``_``).
OVERRIDABLE_FIELDS = frozenset({"category_id", "certification_status"})
#: Plugins Plainbox knows; a job with another plugin loads with a warning (and is skipped when run).
KNOWN_PLUGINS = frozenset(
    {"shell", "resource", "attachment", "local", "manual", "user-interact", "user-verify",
     "user-interact-verify", "qml"}
)  # fmt: skip
#: Plugins whose jobs are not loaded at all: ``local`` jobs printed job definitions
#: (old Checkbox's way to load its job files), which are loaded from the files here.
SKIPPED_PLUGINS = frozenset({"local"})
#: Flags that make Checkbox add a sibling run after a suspend: flag -> (id prefix, the suspend job it follows).
SUSPEND_FLAGS = {
    "also-after-suspend": ("after-suspend", "com.canonical.certification::suspend/suspend_advanced_auto"),
    "also-after-suspend-manual": ("after-suspend-manual", "com.canonical.certification::suspend/suspend_advanced"),
}
#: Template engines: Python ``{field}`` placeholders (the default) and Jinja2, as in Checkbox.
TEMPLATE_ENGINES = (None, "default", "jinja2")
#: Unit kinds Checkbox knows that play no part in running jobs: skipped without a word.
QUIET_UNIT_KINDS = frozenset({"category", "packaging meta-data", "exporter", "file"})


def as_tuple(value: Iterable[Any]) -> tuple[Any, ...]:
    """``tuple(value)`` as an attrs converter (attrs inspects a builtin's signature slowly, at import)."""
    return tuple(value)


def _str_tuple(value: Iterable[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        raise TypeError("expected a sequence of strings, not a string")
    return tuple(value)


def _str_frozenset(value: Iterable[str]) -> frozenset[str]:
    if isinstance(value, str):
        raise TypeError("expected a set of strings, not a string")
    return frozenset(value)


def _opt_float(value: float | int | None) -> float | None:
    return None if value is None else float(value)


@attrs.frozen
class Origin:
    """Where a unit was defined: file path and the 1-based line its record starts on."""

    path: str
    line: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}"


@attrs.frozen
class JobDefinition:
    """One job: what to run and how it relates to other jobs.

    ``depends`` targets must pass before this job runs; ``after`` targets only
    have to finish first. ``before`` targets, if part of the run, wait for this job to finish.
    ``timeout`` (seconds) is our own field. ``requires``
    is kept as raw text (Plainbox resource expressions, one per line), parsed
    by :mod:`plainbox_like.define.resource` when the job is planned and run.
    ``extra`` holds fields this program does not interpret; it takes part in
    equality and in :attr:`checksum` but not in ``hash()``. ``origin`` takes part
    in neither.
    """

    id: str
    plugin: str = "shell"
    command: str | None = None
    summary: str | None = None
    description: str | None = None
    depends: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    after: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    environ: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    estimated_duration: float | None = attrs.field(default=None, converter=_opt_float)
    flags: frozenset[str] = attrs.field(default=frozenset(), converter=_str_frozenset)
    user: str | None = None
    timeout: float | None = attrs.field(default=None, converter=_opt_float)
    requires: str | None = None
    extra: dict[str, str] = attrs.field(factory=dict, hash=False)
    origin: Origin | None = attrs.field(default=None, eq=False)
    #: Jobs this one must run before, if they are part of the run (Checkbox's ``before``).
    before: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    #: Jobs that must fail for this one to run (Checkbox's ``salvages``: a job that repairs what they left).
    salvages: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)

    def checksum_fields(self) -> dict[str, Any]:
        """The fields that define what the job does, as plain JSON-able data.

        Summary, description, estimated duration and origin are left out: they
        describe the job but do not change what runs, so editing them does not
        make an earlier result stale.
        """
        return {
            "id": self.id,
            "plugin": self.plugin,
            "command": self.command,
            "depends": list(self.depends),
            "after": list(self.after),
            "environ": list(self.environ),
            "flags": sorted(self.flags),
            "user": self.user,
            "timeout": self.timeout,
            "requires": self.requires,
            "extra": dict(self.extra),
        } | (
            ({"before": list(self.before)} if self.before else {})
            | ({"salvages": list(self.salvages)} if self.salvages else {})
        )  # absent when empty: older checksums stay

    @property
    def checksum(self) -> str:
        """SHA-256 (hex) of the canonical JSON of :meth:`checksum_fields`.

        Canonical = sorted keys, compact separators, ASCII only; floats use
        Python's shortest round-trip repr, so the value is stable across runs
        and Python versions.
        """
        text = _CANONICAL_JSON.encode(self.checksum_fields())
        return hashlib.sha256(text.encode("ascii")).hexdigest()


#: The encoder of :attr:`JobDefinition.checksum` (made once: a run checksums every job).
_CANONICAL_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True)


@attrs.frozen
class IncludePattern:
    """One ``include:`` line of a test plan: a regex and its ``key=value`` overrides."""

    pattern: str
    overrides: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=as_tuple)


@attrs.frozen
class Override:
    """One test plan override: jobs whose id matches ``pattern`` get ``value`` as their ``field``.

    ``field`` is one of :data:`OVERRIDABLE_FIELDS`; ``origin`` is the line it was written on.
    """

    pattern: str
    field: str
    value: str
    origin: Origin | None = attrs.field(default=None, eq=False)

    def to_json(self) -> dict[str, Any]:
        """``{"pattern", "field", "value", "origin"}`` (origin as ``path:line`` or null)."""
        origin = str(self.origin) if self.origin else None
        return {"pattern": self.pattern, "field": self.field, "value": self.value, "origin": origin}


@attrs.frozen
class TestPlan:
    """A named selection of jobs (``unit: test plan``).

    Patterns are regular expressions matched against the whole job id
    (``^(?:pattern)$``), as in Plainbox. ``include_overrides`` are the valid
    ``key=value`` overrides written after the patterns of ``bootstrap_include``,
    ``mandatory_include`` and ``include`` (in that order);
    ``category_overrides`` and ``certification_status_overrides`` come from the
    ``apply VALUE to PATTERN`` lines of those fields. How they combine is
    :func:`plainbox_like.define.plan.plan_overrides`.
    """

    __test__ = False  # not a pytest test class despite the name

    id: str
    name: str | None = None
    include: tuple[IncludePattern, ...] = attrs.field(default=(), converter=as_tuple)
    exclude: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    mandatory_include: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    bootstrap_include: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    nested_part: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    extra: dict[str, str] = attrs.field(factory=dict, hash=False)
    origin: Origin | None = attrs.field(default=None, eq=False)
    #: Setup jobs (``unit: setup job``) the plan runs first, before its bootstrap jobs.
    setup_include: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    include_overrides: tuple[Override, ...] = attrs.field(default=(), converter=as_tuple)
    category_overrides: tuple[Override, ...] = attrs.field(default=(), converter=as_tuple)
    certification_status_overrides: tuple[Override, ...] = attrs.field(default=(), converter=as_tuple)


@attrs.frozen
class Template:
    """A job template (``unit: template``): one job per record of a resource job.

    ``fields`` are the job fields with ``{name}`` placeholders (``{{``/``}}``
    stand for braces), filled from each record of ``resource`` that
    ``filter`` (a resource expression, optional) accepts; with ``engine``
    ``jinja2`` the fields are Jinja2 templates instead. ``id`` is the
    ``template-id`` field, else the ``id`` field without the characters Checkbox
    drops from it (anything but letters, digits and ``-_.:/\\``).
    """

    id: str
    resource: str
    filter: str | None = None
    engine: str | None = None
    fields: dict[str, str] = attrs.field(factory=dict, hash=False)
    origin: Origin | None = attrs.field(default=None, eq=False)

    @property
    def supported(self) -> bool:
        """Whether jobs can be made from it: the default engine and Jinja2 are known."""
        return self.engine in TEMPLATE_ENGINES


@attrs.frozen
class ManifestEntry:
    """A ``unit: manifest entry``: one fact about the machine a person (or a manifest file) states.

    ``value_type`` is ``bool`` or ``natural``; ``resource_key`` the field of
    the ``manifest`` resource that carries the answer (default: the id
    without namespace).
    """

    id: str
    name: str | None = None
    value_type: str = "bool"
    resource_key: str | None = None
    prompt: str | None = None
    origin: Origin | None = attrs.field(default=None, eq=False)

    @property
    def key(self) -> str:
        """The field of the ``manifest`` resource record that holds this entry's value."""
        return self.resource_key or self.id.split("::", 1)[-1]

    @property
    def default(self) -> str:
        """The value of an entry with no answer, as Checkbox gives it: ``False``, ``0`` or empty."""
        return {"bool": "False", "natural": "0"}.get(self.value_type, "")


@attrs.frozen
class UnitSet:
    """Everything loaded from a set of files: jobs, test plans and templates in file order, plus warnings."""

    jobs: tuple[JobDefinition, ...] = attrs.field(default=(), converter=as_tuple)
    test_plans: tuple[TestPlan, ...] = attrs.field(default=(), converter=as_tuple)
    warnings: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    templates: tuple[Template, ...] = attrs.field(default=(), converter=as_tuple)
    #: Jobs left out because they cannot be used: id -> the warning that says where and why.
    dropped: dict[str, str] = attrs.field(factory=dict, hash=False)
    manifest_entries: tuple[ManifestEntry, ...] = attrs.field(default=(), converter=as_tuple)
    _job_index: dict[str, JobDefinition] = attrs.field(
        init=False, repr=False, eq=False, hash=False
    )
    _plan_index: dict[str, TestPlan] = attrs.field(init=False, repr=False, eq=False, hash=False)

    _bare_index: dict[str, list[JobDefinition]] = attrs.field(
        init=False, repr=False, eq=False, hash=False
    )
    #: (id or id without namespace, position) sorted, made on first use by :meth:`jobs_with_prefix`.
    _sorted_keys: list[tuple[str, int]] | None = attrs.field(
        init=False, default=None, repr=False, eq=False, hash=False
    )
    _memo: dict[Hashable, Any] = attrs.field(init=False, factory=dict, repr=False, eq=False, hash=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_job_index", {job.id: job for job in self.jobs})
        object.__setattr__(self, "_plan_index", {plan.id: plan for plan in self.test_plans})
        bare: dict[str, list[JobDefinition]] = {}
        for job in self.jobs:
            if "::" in job.id:
                bare.setdefault(job.id.split("::", 1)[1], []).append(job)
        object.__setattr__(self, "_bare_index", bare)

    def jobs_named(self, name: str) -> list[JobDefinition]:
        """Jobs whose id is *name*, or, for a name without namespace, ``<any namespace>::name``."""
        job = self._job_index.get(name)
        if job is not None:
            return [job]
        return list(self._bare_index.get(name, ())) if "::" not in name else []

    def job(self, job_id: str) -> JobDefinition:
        """The job with this id; ``KeyError`` if there is none."""
        return self._job_index[job_id]

    def jobs_with_prefix(self, prefix: str) -> list[JobDefinition]:
        """Jobs whose id, or id without its namespace, starts with *prefix*, in file order."""
        keys = self._sorted_keys
        if keys is None:
            keys = [(job.id, n) for n, job in enumerate(self.jobs)]
            keys += [(job.id.split("::", 1)[1], n) for n, job in enumerate(self.jobs) if "::" in job.id]
            keys.sort()
            object.__setattr__(self, "_sorted_keys", keys)
        positions = set()
        for key, position in itertools.islice(keys, bisect.bisect_left(keys, (prefix,)), None):
            if not key.startswith(prefix):
                break
            positions.add(position)
        return [self.jobs[position] for position in sorted(positions)]

    def cached(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """``compute()``, remembered under *key*: the set never changes, so neither does what follows from it."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    def plans_named(self, name: str) -> list[TestPlan]:
        """Test plans whose id is *name*, or, for a name without namespace, ``<any namespace>::name``."""
        plan = self._plan_index.get(name)
        if plan is not None:
            return [plan]
        if "::" in name:
            return []
        return [p for p in self.test_plans if "::" in p.id and p.id.split("::", 1)[1] == name]

    @property
    def by_id(self) -> Mapping[str, JobDefinition]:
        """All jobs by id (do not modify)."""
        return self._job_index

    def has_job(self, job_id: str) -> bool:
        """Whether a job with this id was loaded."""
        return job_id in self._job_index

    def test_plan(self, plan_id: str) -> TestPlan:
        """The test plan with this id (or ``<namespace>::id`` if only one matches); ``KeyError`` if none."""
        plan = self._plan_index.get(plan_id)
        if plan is None and "::" not in plan_id:
            found = [p for p in self.test_plans if p.id.endswith("::" + plan_id)]
            if len(found) == 1:
                plan = found[0]
        if plan is None:
            raise KeyError(plan_id)
        return plan

    @property
    def job_ids(self) -> tuple[str, ...]:
        """Ids of all jobs in file order."""
        return tuple(job.id for job in self.jobs)


# --------------------------------------------------------------------------- reading files


def _read_text(path: str) -> str:
    """Read a whole file as UTF-8 text, turning every problem into a one-line UnitError."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        raise UnitError(path, "no such file or directory") from None
    except PermissionError:
        raise UnitError(path, "cannot read file: permission denied") from None
    except IsADirectoryError:
        raise UnitError(path, "is a directory") from None
    except OSError as exc:
        raise UnitError(path, f"cannot read file: {exc.strerror or exc}") from None
    nul = data.find(b"\0")
    if nul >= 0:
        line = data.count(b"\n", 0, nul) + 1
        raise UnitError(path, "binary file (contains a NUL byte)", line=line)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UnitError(
            path, "not UTF-8 text (binary file?)", line=data.count(b"\n", 0, exc.start) + 1
        ) from None
    if text.startswith("\ufeff"):
        text = text[1:]
    return text


# --------------------------------------------------------------------------- RFC 822 records

_KEY_LINE = re.compile(r"([A-Za-z_][A-Za-z0-9_-]*)[ \t]*:(.*)")
_UNITS_HINT = re.compile(r"^(?:id|unit|plugin)[ \t]*:", re.MULTILINE)


@attrs.define
class _Field:
    key: str  # normalized (no leading "_")
    raw_key: str
    line: int
    first: str
    cont: list[tuple[int, str]] = attrs.field(factory=list)  # (line number, raw line)

    def lines(self) -> list[tuple[int, str]]:
        """The value's lines with their line numbers, after dedent and ``.`` handling."""
        if not self.cont:  # the common case: a one-line value
            return [(self.line, self.first)] if self.first else []
        body: list[tuple[int, str | None]] = []
        indents: list[str] = []
        for number, raw in self.cont:
            stripped = raw.lstrip(" \t")
            if stripped.rstrip() == ".":
                body.append((number, None))
            else:
                body.append((number, raw))
                indents.append(raw[: len(raw) - len(stripped)])
        common = os.path.commonprefix(indents) if indents else ""
        out: list[tuple[int, str]] = []
        if self.first:
            out.append((self.line, self.first))
        for number, raw in body:
            out.append((number, "" if raw is None else raw[len(common) :]))
        while out and not out[0][1].strip():
            out.pop(0)
        while out and not out[-1][1].strip():
            out.pop()
        return out

    def value(self) -> str:
        if not self.cont:
            return self.first
        return "\n".join(text for _, text in self.lines())


@attrs.define
class _Record:
    line: int
    fields: dict[str, _Field] = attrs.field(factory=dict)
    #: Why the record cannot be used (line, reason): the first problem met; None if it can.
    problem: tuple[int, str] | None = None
    #: Untidy but usable things (line, what), each reported once with its line.
    untidy: list[tuple[int, str]] = attrs.field(factory=list)

    def fail(self, line: int, reason: str) -> None:
        if self.problem is None:
            self.problem = (line, reason)


def _records(text: str, path: str) -> list[_Record]:
    """Split RFC 822 style text into records of fields (no interpretation yet).

    Lines that Checkbox would refuse (no ``key:``, a field given twice, a
    continuation with no field before it) mark their record as unusable
    (:attr:`_Record.problem`) instead of failing the whole file; a record with
    both ``key`` and ``_key`` keeps ``_key``'s value, as Checkbox reads it.
    """
    records: list[_Record] = []
    record: _Record | None = None
    field: _Field | None = None
    if "\r" in text:  # a CR ending a line is not part of it
        text = text.replace("\r\n", "\n")
        text = text[:-1] if text.endswith("\r") else text
    for number, line in enumerate(text.split("\n"), start=1):
        first = line[:1]
        if first == "#":
            continue
        if not first or (first.isspace() and line.isspace()):
            record = field = None
            continue
        if record is None:
            record = _Record(line=number)
            records.append(record)
        if first == " " or first == "\t":
            if field is None:
                record.fail(number, "continuation line without a field before it")
            else:
                field.cont.append((number, line))
            continue
        match = _KEY_LINE.fullmatch(line)
        if match is not None:
            raw_key, rest = match.groups()
        else:
            raw_key, colon, rest = line.partition(":")
            raw_key = raw_key.strip()
            if not colon or not raw_key:
                shown = line if len(line) <= 40 else line[:37] + "..."
                record.fail(
                    number,
                    f"expected 'key: value', an indented continuation, a '#' comment or a blank line, got {shown!r}",
                )
                field = None
                continue
        key = raw_key[1:] if raw_key.startswith("_") and len(raw_key) > 1 else raw_key
        field = _Field(key=key, raw_key=raw_key, line=number, first=rest.strip())
        previous = record.fields.get(key)
        if previous is None:
            record.fields[key] = field
        elif previous.raw_key == raw_key:
            record.fail(number, f"field {raw_key!r} given twice in one record (first at line {previous.line})")
        else:
            used = field if raw_key.startswith("_") else previous
            record.untidy.append(
                (number, f"both {previous.raw_key!r} (line {previous.line}) and {raw_key!r} given: the value of"
                 f" {used.raw_key!r} (line {used.line}) is used, as in Checkbox")
            )
            record.fields[key] = used
    return records


# --------------------------------------------------------------------------- interpreting records

_JOB_FIELDS = frozenset(
    {
        "unit", "id", "plugin", "command", "summary", "description", "depends", "after",
        "environ", "estimated_duration", "flags", "user", "timeout", "requires", "before",
        "salvages",
    }
)  # fmt: skip
# Plainbox job fields that only describe a job (or feed features we do not
# have); they go to ``extra`` without a warning. Anything else, including
# likely typos, goes to ``extra`` with a warning.
_QUIET_JOB_EXTRAS = frozenset(
    {
        "purpose", "steps", "verification", "category_id", "certification_status", "imports", "name",
        "group", "shell", "auto_retry", "requires_manifest", "template-engine", "template-id",
    }
)  # fmt: skip
#: Test plan fields holding ``apply VALUE to PATTERN`` lines (both spellings occur), by the job field they set.
_OVERRIDE_FIELDS = {
    "category_id": ("category_overrides", "category-overrides"),
    "certification_status": ("certification_status_overrides", "certification-status-overrides"),
}
_PLAN_FIELDS = frozenset(
    {
        "unit", "id", "name", "include", "exclude", "mandatory_include", "bootstrap_include",
        "nested_part", "setup_include",
    }
    | {key for keys in _OVERRIDE_FIELDS.values() for key in keys}
)  # fmt: skip
_QUIET_PLAN_EXTRAS = frozenset({"description", "estimated_duration", "icon"})
_LIST_SPLIT = re.compile(r"[\s,]+")
#: Characters that make a pattern more than a literal id.
_REGEX_SPECIALS = frozenset(".^$*+?{}[]\\|()")
_APPLY = re.compile(r"apply\s+(\S+)\s+to\s+(\S+)")
_HMS = re.compile(
    r"(?:(\d+(?:\.\d*)?)\s*h)?[\s:]*(?:(\d+(?:\.\d*)?)\s*m)?[\s:]*(?:(\d+(?:\.\d*)?)\s*s)?"
)


def _split_list(value: str) -> tuple[str, ...]:
    """Split a space and/or comma separated list, dropping empty items and repeats."""
    return tuple(dict.fromkeys(item for item in _LIST_SPLIT.split(value) if item))


def _parse_seconds(text: str) -> float | None:
    """A duration as a float, or like ``1h 30m 5s`` (Checkbox accepts both); None if neither."""
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        match = _HMS.fullmatch(text)
        if not text or match is None or not any(match.groups()):
            return None
        hours, minutes, seconds = (float(group) if group else 0.0 for group in match.groups())
        value = hours * 3600 + minutes * 60 + seconds
    if not math.isfinite(value):
        return None
    return value


def _strip_comment(text: str) -> str:
    """*text* without a ``#`` comment (a ``#`` at the start or after whitespace)."""
    hash_at = text.find("#")
    while hash_at > 0 and not text[hash_at - 1].isspace():
        hash_at = text.find("#", hash_at + 1)
    return text[:hash_at] if hash_at >= 0 else text


_SLUG_DROPS = re.compile(r"[^A-Za-z0-9_.:/\\-]")


def _slug(text: str) -> str:
    """A template's id made from its ``id`` field, as Checkbox makes it (``disk/{name}`` -> ``disk/name``)."""
    return _SLUG_DROPS.sub("", text)


def _shorten(text: str, width: int = 40) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


@attrs.define
class _Notice:
    """One kind of unsupported thing: where it was first met, and how often."""

    message: str
    origin: Origin
    noun: str  # what is counted: "job", "unit", "field" ...
    count: int = 1
    paths: set[str] = attrs.Factory(set)

    def merge(self, other: "_Notice") -> None:
        self.count += other.count
        self.paths |= other.paths

    def __str__(self) -> str:
        if self.count == 1:
            return f"{self.origin}: {self.message}"
        files = f" in {len(self.paths)} files" if len(self.paths) > 1 and self.noun != "file" else ""
        return f"{self.origin}: {self.message} ({self.count} {self.noun}s{files}; reported once)"


def _merge_notices(into: dict[tuple[str, ...], _Notice], notices: Mapping[tuple[str, ...], _Notice]) -> None:
    for key, notice in notices.items():
        if key in into:
            into[key].merge(notice)
        else:
            into[key] = notice


class _Parser:
    """Turns the records of one file into units, collecting warnings.

    ``warnings`` are problems of one place (a bad override line); ``notices``
    are kinds of unsupported things, each kept once with its first place and a
    count, so that :func:`load_units` can report each once for a whole load.
    """

    def __init__(
        self, path: str, namespace: str | None = None, checkbox_env: Mapping[str, str] | None = None
    ) -> None:
        self.path = path
        #: ``__checkbox_env__`` of the Jinja2 units it renders (a launcher's ``[environment]``).
        self.checkbox_env = checkbox_env
        #: Given to the ids of jobs, test plans and templates that have none.
        self.namespace = namespace
        self.warnings: list[str] = []
        self.notices: dict[tuple[str, ...], _Notice] = {}
        #: Ids of jobs left out, with the warning that says why.
        self.dropped: dict[str, str] = {}
        #: True while making siblings: their fields were noted with the job they come from.
        self.quiet = False

    def qualified(self, unit_id: str) -> str:
        """*unit_id* with the parser's namespace, unless it has one (or the parser has none)."""
        return unit_id if self.namespace is None or "::" in unit_id else f"{self.namespace}::{unit_id}"

    def warn(self, line: int, message: str) -> None:
        self.warnings.append(f"{self.path}:{line}: {message}")

    def note(self, key: tuple[str, ...], line: int, message: str, noun: str) -> None:
        """Count one use of the unsupported thing *key*; the first use gives the message and place."""
        if self.quiet:  # a job made from a record already counted (a sibling)
            return
        notice = self.notices.get(key)
        if notice is None:
            self.notices[key] = _Notice(message, Origin(self.path, line), noun, paths={self.path})
        else:
            notice.count += 1

    def all_warnings(self) -> list[str]:
        """The warnings, then one line per notice."""
        return self.warnings + [str(notice) for notice in self.notices.values()]

    def extras(
        self, record: _Record, known: frozenset[str], quiet: frozenset[str], what: str
    ) -> dict[str, str]:
        """Fields not in ``known``; those not in ``quiet`` either are noted as unknown."""
        extra: dict[str, str] = {}
        for key, field in record.fields.items():
            if key in known:
                continue
            extra[key] = field.value()
            if key not in quiet:
                message = f"unknown field {field.raw_key!r} in {what} kept as extra data"
                self.note(("field", what, key), field.line, message, what)
        return extra

    def _claim(self, seen: dict[str, int], what: str, unit_id: str, line: int) -> None:
        """Note that *unit_id* is defined at *line*; a second definition in the file is an error."""
        if unit_id in seen:
            raise UnitError(
                self.path, f"duplicate {what} id {unit_id!r} (first defined at {self.path}:{seen[unit_id]})", line=line
            )
        seen[unit_id] = line

    def parse(self, text: str) -> UnitSet:
        """The units of *text*; warnings stay in :attr:`warnings` and :attr:`notices`.

        A record that cannot be used is left out with a warning naming its line (and kept
        in :attr:`dropped` by id, when it has one, so that jobs needing it can say why).
        """
        jobs: list[JobDefinition] = []
        plans: list[TestPlan] = []
        templates: list[Template] = []
        entries: list[ManifestEntry] = []
        seen_jobs: dict[str, int] = {}
        seen_plans: dict[str, int] = {}
        for record in _records(text, self.path):
            kind_field = record.fields.get("unit")
            kind = " ".join(kind_field.value().split()) if kind_field else "job"
            try:
                if record.problem is not None:
                    raise UnitError(self.path, record.problem[1], line=record.problem[0])
                for line, what in record.untidy:
                    self.warn(line, what)
                if kind in ("job", "setup job"):
                    job = self.job(record)
                    if kind == "setup job":
                        job = attrs.evolve(job, extra={**job.extra, "unit": kind})
                    if job.plugin in SKIPPED_PLUGINS:
                        message = f"plugin {job.plugin!r} is not supported: its jobs are skipped (first: {job.id!r})"
                        self.note(("plugin", job.plugin), record.line, message, "job")
                        continue
                    if "siblings" in record.fields or job.flags & SUSPEND_FLAGS.keys():
                        values = {key: field.value() for key, field in record.fields.items()}
                        made = self.with_siblings(job, values, record.line)
                    else:
                        made = [job]
                    self._claim(seen_jobs, "job", job.id, record.line)
                    for sibling in made[1:]:
                        if sibling.id in seen_jobs:
                            self.warn(record.line, f"sibling {sibling.id!r} of job {job.id!r} is already defined: left out")
                            made.remove(sibling)
                        else:
                            seen_jobs[sibling.id] = record.line
                    jobs.extend(made)
                elif kind == "template":
                    template = self.template(record)
                    if template is not None:
                        templates.append(template)
                elif kind == "test plan":
                    plan = self.test_plan(record)
                    self._claim(seen_plans, "test plan", plan.id, record.line)
                    plans.append(plan)
                elif kind == "manifest entry":
                    entries.append(self.manifest_entry(record))
                elif kind in QUIET_UNIT_KINDS:
                    continue
                else:
                    self.note(("unit", kind), record.line, f"unit kind {kind!r} is not supported: skipped", "unit")
            except UnitError as exc:
                self.drop(record, kind, exc)
        return UnitSet(
            jobs=jobs,
            test_plans=plans,
            warnings=self.warnings,
            templates=templates,
            dropped=self.dropped,
            manifest_entries=entries,
        )

    def manifest_entry(self, record: _Record) -> ManifestEntry:
        fields = {key.lstrip("_"): field.value() for key, field in record.fields.items()}
        entry_id = fields.get("id")
        if not entry_id:
            raise UnitError(self.path, "manifest entry has no 'id' field", line=record.line)
        value_type = fields.get("value-type") or "bool"
        if value_type not in ("bool", "natural"):
            self.warn(record.line, f"manifest entry {entry_id!r}: value-type {value_type!r} is not bool or natural")
        return ManifestEntry(
            id=self.qualified(entry_id),
            name=fields.get("name"),
            value_type=value_type,
            resource_key=fields.get("resource-key"),
            prompt=fields.get("prompt"),
            origin=Origin(self.path, record.line),
        )

    def drop(self, record: _Record, kind: str, exc: UnitError) -> None:
        """Leave out a unit that cannot be used, with a warning naming its place (and its id, if it has one)."""
        id_field = record.fields.get("id") or (record.fields.get("name") if kind == "job" else None)
        unit_id = id_field.value() if id_field is not None else ""
        what = "job" if kind == "setup job" else kind
        label = f"{what} {self.qualified(unit_id)!r}" if unit_id else what
        message = f"{exc}: {label} left out"
        self.warnings.append(message)
        if unit_id and kind in ("job", "setup job"):
            self.dropped.setdefault(self.qualified(unit_id), message)

    def template(self, record: _Record) -> Template | None:
        fields = {key: field.value() for key, field in record.fields.items() if key != "unit"}
        template_id = fields.pop("template-id", None) or _slug(fields.get("id", ""))
        if not template_id:
            raise UnitError(self.path, "template has no 'id' field", line=record.line)
        resource = fields.pop("template-resource", None)
        if not resource:
            self.warn(record.line, f"template {template_id!r} has no 'template-resource' field: skipped")
            return None
        unit_kind = fields.pop("template-unit", None)
        if unit_kind not in (None, "job"):
            message = f"templates of {unit_kind!r} units are not supported: template {template_id!r} skipped"
            self.note(("template-unit", unit_kind), record.line, message, "template")
            return None
        engine = fields.pop("template-engine", None)
        template = Template(
            id=self.qualified(template_id),
            resource=resource,
            filter=fields.pop("template-filter", None) or None,
            engine=engine,
            fields={k: v for k, v in fields.items() if not k.startswith("template-")},
            origin=Origin(self.path, record.line),
        )
        if not template.supported:
            message = (
                f"template-engine {engine!r} is not supported: no jobs are made from template {template_id!r}"
            )
            self.note(("template-engine", str(engine)), record.line, message, "template")
        return template

    def job_from_values(self, values: Mapping[str, str], line: int) -> JobDefinition:
        """A job from already-read field values (an instantiated template)."""
        record = _Record(line=line)
        for key, value in values.items():
            record.fields[key] = _Field(key=key, raw_key=key, line=line, first=value)
        return self.job(record)

    def _id(self, record: _Record, what: str) -> str:
        field = record.fields.get("id")
        if field is None and what == "job" and "name" in record.fields:
            # Plainbox before 0.5 named jobs with ``name:``; accept it.
            field = record.fields["name"]
            self.note(("legacy", "name"), field.line, "job uses the legacy 'name' field as its id", "job")
        if field is None:
            raise UnitError(self.path, f"{what} has no 'id' field", line=record.line)
        value = field.value()
        if not value:
            raise UnitError(self.path, f"{what} has an empty 'id'", line=field.line)
        if _LIST_SPLIT.search(value):
            self.warn(
                field.line,
                f"{what} id {value!r} contains whitespace or a comma: kept as written, as in Checkbox"
                " (no depends/after list can name it)",
            )
        return value

    def _text(self, record: _Record, key: str) -> str | None:
        field = record.fields.get(key)
        if field is None:
            return None
        value = field.value()
        return value if value else None

    def _seconds(self, record: _Record, key: str, positive: bool) -> float | None:
        field = record.fields.get(key)
        if field is None:
            return None
        text = field.value()
        value = _parse_seconds(text)
        if (value is None or value < 0) and key == "estimated_duration":
            self.warn(field.line, f"{field.raw_key}: not a duration, {_shorten(text)!r}: ignored")
            return None
        if value is None or value < 0 or (positive and value == 0):
            need = "a positive" if positive else "a non-negative"
            raise UnitError(
                self.path,
                f"{field.raw_key} must be {need} number of seconds, got {text!r}",
                line=field.line,
            )
        return value

    def _rendered(self, record: _Record) -> _Record:
        """*record* with every field rendered by Jinja2 (a unit with ``template-engine: jinja2`` that is
        not a template: Checkbox renders its fields with :func:`jinja_context`)."""
        context = jinja_context(self.checkbox_env)
        out = _Record(line=record.line)
        for key, field in record.fields.items():
            try:
                value = render_jinja(field.value(), context)
            except ValueError as exc:
                raise UnitError(self.path, f"field {field.raw_key!r}: {exc}", line=field.line) from None
            out.fields[key] = _Field(key=key, raw_key=field.raw_key, line=field.line, first=value)
        return out

    def job(self, record: _Record) -> JobDefinition:
        engine = record.fields.get("template-engine")
        if engine is not None and engine.value() == "jinja2":
            record = self._rendered(record)
        job_id = self.qualified(self._id(record, "job"))
        fields = record.fields

        def listed(key: str) -> tuple[str, ...]:
            return _split_list(fields[key].value()) if key in fields else ()

        known = _JOB_FIELDS if "id" in fields else _JOB_FIELDS | {"name"}  # a legacy name is the id
        plugin = self._text(record, "plugin") or "shell"
        if plugin not in KNOWN_PLUGINS:
            message = f"plugin {plugin!r} is not supported: such jobs are skipped when run"
            self.note(("plugin", plugin), fields["plugin"].line, message, "job")
        return JobDefinition(
            id=job_id,
            plugin=plugin,
            command=self._text(record, "command"),
            summary=self._text(record, "summary"),
            description=self._text(record, "description"),
            depends=listed("depends"),
            after=listed("after"),
            environ=listed("environ"),
            estimated_duration=self._seconds(record, "estimated_duration", positive=False),
            flags=frozenset(listed("flags")),
            user=self._text(record, "user"),
            timeout=self._seconds(record, "timeout", positive=True),
            requires=self._text(record, "requires"),
            extra=self.extras(record, known, _QUIET_JOB_EXTRAS | {"siblings"}, "job"),
            origin=Origin(self.path, record.line),
            before=listed("before"),
            salvages=listed("salvages"),
        )

    def with_siblings(self, job: JobDefinition, values: Mapping[str, str], line: int) -> list[JobDefinition]:
        """*job* followed by the jobs Checkbox adds beside it: its ``siblings`` and ``also-after-suspend*`` flags.

        As in Checkbox, a job whose siblings wait for a suspend job it does not wait for
        itself runs ``before`` that suspend job.
        """
        if not values.get("siblings") and not job.flags & SUSPEND_FLAGS.keys():
            return [job]
        siblings, direct = self._siblings_of(job, dict(values), line)
        own = set(job.depends) | set(job.after)
        suspend_jobs = {suspend_job for _prefix, suspend_job in SUSPEND_FLAGS.values()}
        waits = [
            target for sibling in direct for target in (*sibling.depends, *sibling.after)
            if target in suspend_jobs and target not in own
        ]  # fmt: skip
        if waits:
            job = attrs.evolve(job, before=tuple(dict.fromkeys(job.before + tuple(waits))))
        return [job, *siblings]

    def _siblings_of(
        self, job: JobDefinition, values: dict[str, str], line: int
    ) -> tuple[list[JobDefinition], list[JobDefinition]]:
        """Each sibling of *job* (made from its field *values*), each followed by its own siblings; and the direct ones.

        In Checkbox's order: the ``siblings`` entries (a JSON list of field overrides), then
        ``after-suspend-<id>`` for ``also-after-suspend``, then ``after-suspend-manual-<id>``.
        """
        overrides: list[dict[str, str]] = []
        if values.get("siblings"):
            try:
                listed = json.loads(values["siblings"])
                if not isinstance(listed, list) or not all(isinstance(item, dict) for item in listed):
                    raise ValueError("not a list of objects")
            except ValueError as exc:
                self.warn(line, f"job {job.id!r}: siblings is not a JSON list of objects ({exc}): no siblings made")
                listed = []
            for item in listed:
                overrides.append({
                    (key[1:] if key.startswith("_") and len(key) > 1 else key):
                    " ".join(map(str, value)) if isinstance(value, list) else str(value)
                    for key, value in item.items()
                })  # fmt: skip
        partial_id = values.get("id") or values.get("name") or job.id
        for flag, (prefix, suspend_job) in SUSPEND_FLAGS.items():
            if flag not in job.flags:
                continue
            made = {
                "flags": " ".join(f for f in _split_list(values.get("flags", "")) if f not in SUSPEND_FLAGS),
                "id": f"{prefix}-{partial_id}",
                "summary": f"{values.get('summary') or partial_id} after suspend (S3)",
                "depends": " ".join(filter(None, (values.get("depends", ""), job.id, suspend_job))),
            }
            if values.get("group"):
                made["group"] = f"{prefix}-{values['group']}"
            overrides.append(made)
        out: list[JobDefinition] = []
        direct: list[JobDefinition] = []
        base = {key: value for key, value in values.items() if not key.endswith("siblings")}
        for override in overrides:
            data = {**base, **override}
            quiet, self.quiet = self.quiet, True
            try:
                sibling = self.job_from_values(data, line)
            except UnitError as exc:
                self.warn(line, f"job {job.id!r}: a sibling cannot be made: {exc}")
                continue
            finally:
                self.quiet = quiet
            direct.append(sibling)
            out.extend(self.with_siblings(sibling, data, line))
        return out, direct

    def _override_problem(self, field: str, value: str, pattern: str) -> str | None:
        """Why an override of *field* to *value* for *pattern* cannot be used (None if it can)."""
        if field == "certification_status" and value not in CERTIFICATION_STATUSES:
            return f"unknown certification status {value!r} (known: {', '.join(CERTIFICATION_STATUSES)})"
        if _REGEX_SPECIALS.isdisjoint(pattern):
            return None  # a literal id (most are): nothing to compile
        try:
            re.compile(pattern)
        except re.error as exc:
            return f"invalid regular expression {pattern!r}: {exc}"
        return None

    def _include_overrides(
        self, key: str, pattern: str, tokens: list[str], line: int
    ) -> tuple[list[tuple[str, str]], list[Override]]:
        """The ``key=value`` tokens after an include pattern: as written, and as usable overrides."""
        written: list[tuple[str, str]] = []
        usable: list[Override] = []
        for token in tokens:
            name, sep, value = token.partition("=")
            if not sep or not name or not value:
                self.warn(line, f"{key}: expected 'pattern [key=value ...]', got {token!r} after {pattern!r}: ignored")
                continue
            written.append((name, value))
            field = name.replace("-", "_")
            if field not in OVERRIDABLE_FIELDS:
                message = f"override {name!r} after an include pattern is not supported: ignored"
                self.note(("include override", field), line, message, "override")
                continue
            problem = self._override_problem(field, value, pattern)
            if problem:
                self.warn(line, f"{key}: {problem}: override ignored")
                continue
            usable.append(Override(pattern, field, value, Origin(self.path, line)))
        return written, usable

    def _patterns(self, record: _Record, key: str) -> tuple[list[IncludePattern], list[Override]]:
        """A pattern list: one ``pattern [key=value[,] ...]`` per line, ``#`` comments; and its overrides.

        In ``bootstrap_include`` and ``nested_part`` (word lists in Plainbox),
        further words without ``=`` on a line are more patterns.
        """
        field = record.fields.get(key)
        if field is None:
            return [], []
        words = key in ("setup_include", "bootstrap_include", "nested_part")
        patterns: list[IncludePattern] = []
        overrides: list[Override] = []
        for number, text in field.lines():
            text = _strip_comment(text).strip()
            if text.startswith('"') and '"' in text[1:]:  # a quoted pattern may hold spaces (as in Checkbox)
                end = text.index('"', 1)
                parts = [text[1:end], *([text[end + 1 :]] if text[end + 1 :].strip() else [])]
            else:
                parts = text.split(None, 1)
            if not parts:
                continue
            head = parts[0]
            tokens = [token for token in _LIST_SPLIT.split(parts[1]) if token] if len(parts) > 1 else []
            more: list[str] = []
            if words:
                head, *more = [word for word in head.split(",") if word] or [head]
                more += [token for token in tokens if "=" not in token]
                tokens = [token for token in tokens if "=" in token]
            written, usable = self._include_overrides(field.raw_key, head, tokens, number)
            patterns.append(IncludePattern(head, tuple(written)))
            patterns.extend(IncludePattern(word) for word in more)
            overrides.extend(usable)
        return patterns, overrides

    def _apply_lines(self, record: _Record, target: str) -> list[Override]:
        """The ``apply VALUE to PATTERN`` lines of the test plan field that overrides job field *target*."""
        field = next((record.fields[k] for k in _OVERRIDE_FIELDS[target] if k in record.fields), None)
        if field is None:
            return []
        out: list[Override] = []
        for number, text in field.lines():
            text = _strip_comment(text).strip()
            if not text:
                continue
            match = _APPLY.fullmatch(text)
            if match is None:
                self.warn(number, f"{field.raw_key}: expected 'apply VALUE to PATTERN', got {_shorten(text)!r}: ignored")
                continue
            value, pattern = match.groups()
            problem = self._override_problem(target, value, pattern)
            if problem:
                self.warn(number, f"{field.raw_key}: {problem}: ignored")
                continue
            out.append(Override(pattern, target, value, Origin(self.path, number)))
        return out

    def test_plan(self, record: _Record) -> TestPlan:
        plan_id = self.qualified(self._id(record, "test plan"))
        parsed = {
            key: self._patterns(record, key)
            for key in ("setup_include", "bootstrap_include", "mandatory_include", "include", "exclude", "nested_part")
        }

        def patterns(key: str) -> tuple[str, ...]:
            return tuple(item.pattern for item in parsed[key][0])

        for key in ("exclude", "nested_part", "setup_include"):
            if parsed[key][1]:
                self.warn(parsed[key][1][0].origin.line, f"{key}: overrides after a pattern have no effect here")
        return TestPlan(
            id=plan_id,
            name=self._text(record, "name"),
            include=tuple(parsed["include"][0]),
            exclude=patterns("exclude"),
            mandatory_include=patterns("mandatory_include"),
            bootstrap_include=patterns("bootstrap_include"),
            nested_part=patterns("nested_part"),
            setup_include=patterns("setup_include"),
            extra=self.extras(record, _PLAN_FIELDS, _QUIET_PLAN_EXTRAS, "test plan"),
            origin=Origin(self.path, record.line),
            include_overrides=[o for key in ("bootstrap_include", "mandatory_include", "include") for o in parsed[key][1]],
            category_overrides=self._apply_lines(record, "category_id"),
            certification_status_overrides=self._apply_lines(record, "certification_status"),
        )


def _parse(
    text: str, path: str, namespace: str | None, checkbox_env: Mapping[str, str] | None = None
) -> tuple[UnitSet, dict[tuple[str, ...], _Notice]]:
    parser = _Parser(path, namespace, checkbox_env)
    return parser.parse(text), parser.notices


def parse_pxu(text: str, path: str) -> UnitSet:
    """Parse the text of one ``.pxu`` file; ``path`` is used in origins and messages.

    Never raises for what the text holds: a unit that cannot be used
    (malformed record, no ``id``, an id already defined, a bad timeout) is left
    out with a warning naming its line, and kept in :attr:`UnitSet.dropped`;
    untidy units, unknown fields, unsupported unit kinds and plugins, and bad
    override lines produce warnings, each kind of unsupported thing once.
    """
    parser = _Parser(path)
    units = parser.parse(text)
    return attrs.evolve(units, warnings=parser.all_warnings())


def parse_command_list(text: str, path: str, first_number: int = 1) -> list[JobDefinition]:
    """Jobs from a plain command list: one shell command per non-empty, non-``#`` line.

    Jobs get ids ``cmd-<n>`` numbered from ``first_number`` and the command as
    summary; their origin is the command's line.
    """
    jobs: list[JobDefinition] = []
    for number, line in enumerate(text.split("\n"), start=1):
        command = line.strip()
        if not command or command.startswith("#"):
            continue
        jobs.append(
            JobDefinition(
                id=f"cmd-{first_number + len(jobs)}",
                command=command,
                summary=command,
                origin=Origin(path, number),
            )
        )
    return jobs


def jobs_from_commands(commands: Sequence[str]) -> list[JobDefinition]:
    """Jobs for ``-c CMD`` options: ids ``c1``, ``c2``, ... in the order given.

    Their origin is ``Origin(COMMAND_LINE_PATH, n)``; an empty command is an error.
    """
    jobs: list[JobDefinition] = []
    for number, command in enumerate(commands, start=1):
        if not command.strip():
            raise UnitError(COMMAND_LINE_PATH, f"command {number} (-c) is empty")
        jobs.append(
            JobDefinition(
                id=f"c{number}",
                command=command,
                summary=command,
                origin=Origin(COMMAND_LINE_PATH, number),
            )
        )
    return jobs


def _looks_like_units(text: str) -> bool:
    """Whether a file without the ``.pxu`` suffix holds unit records.

    True when the first line that is neither blank nor a comment is a
    ``key: value`` line and some line starts with ``id:`` or ``unit:``; shell
    commands practically never look like that.
    """
    for line in text.split("\n"):
        if not line.strip() or line.startswith("#"):
            continue
        if _KEY_LINE.fullmatch(line.rstrip("\r")) is None:
            return False
        return _UNITS_HINT.search(text) is not None
    return False


#: File name endings Checkbox reads units from in a provider's ``units``/``jobs`` directory.
PROVIDER_UNIT_SUFFIXES = (".pxu", ".txt", ".txt.in", ".in")


def _unit_files(directory: str, suffixes: tuple[str, ...] = (".pxu",), warnings: list[str] | None = None) -> list[str]:
    """Every regular file ending in one of *suffixes* under ``directory`` (recursively, not following
    symlinked directories), sorted by their path relative to it.

    Anything else with such a name (a FIFO, a device, a socket, a dangling link) is
    not opened, which could block forever: it is named in *warnings* and skipped.
    """
    found: list[tuple[tuple[str, ...], str]] = []
    for root, dirs, files in os.walk(directory):
        dirs.sort()
        rel = os.path.relpath(root, directory)
        parts = () if rel == "." else tuple(rel.split(os.sep))
        for name in files:
            if name.endswith(suffixes):
                path = os.path.join(root, name)
                if not os.path.isfile(path):
                    if warnings is not None:
                        warnings.append(f"{path}: not a regular file: skipped")
                    continue
                found.append((parts + (name,), path))
    found.sort()
    return [path for _, path in found]


_NAMESPACE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def _provider_file_namespace(path: str) -> str | None:
    import configparser  # only for providers with a .provider file

    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError, OSError):
        return None
    for section in parser.sections():
        namespace = parser.get(section, "namespace", fallback=None)
        name = parser.get(section, "name", fallback=None)
        if namespace:
            return namespace.strip()
        if name and ":" in name:
            return name.split(":", 1)[0].strip()
    return None


def _manage_py_namespace(path: str) -> str | None:
    """``namespace=`` (or the part of ``name=`` before ``:``) of the ``setup(...)`` call, read with ast."""
    try:
        tree = ast.parse(_read_text(path), path)
    except (SyntaxError, ValueError, UnitError):
        return None
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "setup"):
            continue
        values = {
            kw.arg: kw.value.value
            for kw in node.keywords
            if kw.arg and isinstance(kw.value, ast.Constant) and isinstance(kw.value.value, str)
        }
        if values.get("namespace"):
            return values["namespace"]
        if ":" in values.get("name", ""):
            return values["name"].split(":", 1)[0]
    return None


def provider_namespace(path: str, levels: int = 3, cache: dict[str, str | None] | None = None) -> str | None:
    """The namespace of the provider a unit file belongs to, or None.

    Looked for in the file's directory and up to *levels* - 1 parents: a
    ``.provider`` file (INI; its ``namespace`` key, or the part of its ``name``
    key before ``:``), else a ``manage.py`` whose ``setup(...)`` call has a
    ``namespace=`` argument (or ``name="namespace:provider"``). ``manage.py``
    is parsed, never run. *cache* (directory -> what that directory itself
    says) saves looking at a directory again for the other files of a load.
    """
    cache = {} if cache is None else cache
    directory = os.path.dirname(os.path.abspath(path))
    for _ in range(levels):
        if directory not in cache:
            cache[directory] = _directory_namespace(directory)
        if cache[directory]:
            return cache[directory]
        parent = os.path.dirname(directory)
        if parent == directory:
            break
        directory = parent
    return None


def _directory_namespace(directory: str) -> str | None:
    """The namespace a ``.provider`` file or ``manage.py`` in *directory* itself names, or None."""
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return None
    namespace = None
    for name in names:
        if name.endswith(".provider") and os.path.isfile(os.path.join(directory, name)):
            namespace = _provider_file_namespace(os.path.join(directory, name))
            if namespace:
                break
    if not namespace and "manage.py" in names:
        namespace = _manage_py_namespace(os.path.join(directory, "manage.py"))
    return namespace if namespace and _NAMESPACE.fullmatch(namespace) else None


def _resolve_references(jobs: list[JobDefinition], left_out: Iterable[str] = ()) -> list[JobDefinition]:
    """Write ``depends``/``after``/``before`` targets as the full ids they refer to, with or without namespace.

    A target that is a job id stays; otherwise ``<referrer's namespace>::target``, then for
    ``ns::name`` the bare ``name``, then the only job ``<any namespace>::target``. Ids of jobs
    *left_out* count as ids (so a job needing one names it). Targets that resolve to nothing
    stay as written (and are reported as unknown when planned).
    """
    ids = {job.id for job in jobs} | set(left_out)
    if not any("::" in job_id for job_id in ids) and not any(
        "::" in dep for job in jobs for dep in job.depends + job.after + job.before + job.salvages
    ):
        return jobs
    bare: dict[str, list[str]] = {}
    for job_id in ids:
        if "::" in job_id:
            bare.setdefault(job_id.split("::", 1)[1], []).append(job_id)

    def resolve(target: str, namespace: str | None) -> str:
        if target in ids:
            return target
        if namespace and "::" not in target and f"{namespace}::{target}" in ids:
            return f"{namespace}::{target}"
        name = target.split("::", 1)[1] if "::" in target else target
        if name in ids:
            return name
        found = bare.get(name, [])
        return found[0] if len(found) == 1 else target

    out = []
    for job in jobs:
        if job.depends or job.after or job.before or job.salvages:
            namespace = job.id.split("::", 1)[0] if "::" in job.id else None
            depends = tuple(dict.fromkeys(resolve(d, namespace) for d in job.depends))
            after = tuple(dict.fromkeys(resolve(d, namespace) for d in job.after))
            before = tuple(dict.fromkeys(resolve(d, namespace) for d in job.before))
            salvages = tuple(dict.fromkeys(resolve(d, namespace) for d in job.salvages))
            if (depends, after, before, salvages) != (job.depends, job.after, job.before, job.salvages):
                job = attrs.evolve(job, depends=depends, after=after, before=before, salvages=salvages)
        out.append(job)
    return out


def load_units(
    paths: Sequence[str | os.PathLike[str]],
    commands: Sequence[str] = (),
    namespace: str | None = None,
    providers: Sequence[Provider] = (),
    checkbox_env: Mapping[str, str] | None = None,
) -> UnitSet:
    """Load jobs and test plans from providers, files and directories, in the order given.

    * each of *providers* (:func:`plainbox_like.define.providers.find_providers`)
      contributes the unit files (``.pxu``, ``.txt``, ``.txt.in``, ``.in``, as
      Checkbox reads them) of its ``units`` and ``jobs`` directories, in its
      namespace; they come first;
    * a directory that is a provider source tree (a ``manage.py`` whose
      ``setup(...)`` names the provider) is loaded as that provider;
    * any other directory contributes every ``*.pxu`` file under it,
      recursively, sorted by relative path; a file there that is not a regular
      file (a FIFO ...) is skipped with a warning;
    * a file ending in ``.pxu``, or whose content looks like unit records, is
      parsed with :func:`parse_pxu`;
    * any other text file is a command list: each command becomes job
      ``cmd-<n>``, where n counts command-list jobs across the whole load
      (1-based, in load order), so the ids are stable for the same inputs;
    * ``commands`` (``-c`` options) are appended as jobs ``c1``, ``c2``, ...
    * jobs and test plans of unit files get a namespace (``ns::id``) unless
      their id has one: *namespace* if given, else the one of the provider
      the file belongs to (:func:`provider_namespace`), else none;
    * ``depends``/``after``/``before`` targets are then resolved with or without their
      namespace (see :func:`_resolve_references`);
    * units with ``template-engine: jinja2`` that are not templates are rendered with
      :func:`jinja_context`, *checkbox_env* being ``__checkbox_env__``.

    A unit that cannot be used is left out with a warning naming its file and
    line (ids of such jobs are kept in :attr:`UnitSet.dropped`); so is a
    second unit with an id already loaded (the warning names both places). A
    file named in *paths* that cannot be read is an error; one found in a
    directory is skipped with a warning. Warnings about unsupported things come
    last, each kind once for the whole load.
    """
    from plainbox_like.define.providers import read_source_tree

    jobs: list[JobDefinition] = []
    plans: list[TestPlan] = []
    templates: list[Template] = []
    entries: list[ManifestEntry] = []
    warnings: list[str] = []
    dropped: dict[str, str] = {}
    notices: dict[tuple[str, ...], _Notice] = {}
    job_origin: dict[str, Origin | None] = {}
    plan_origin: dict[str, Origin | None] = {}
    command_jobs = 0
    provider_cache: dict[str, str | None] = {}

    def parse(text: str, path: str, file_namespace: str | None = None) -> UnitSet:
        ns = namespace or file_namespace or provider_namespace(path, cache=provider_cache)
        units, found = _parse(text, path, ns, checkbox_env)
        _merge_notices(notices, found)
        return units

    def add(units: UnitSet) -> None:
        for job in units.jobs:
            if _is_new(job_origin, job.id, job.origin, "job", warnings):
                jobs.append(job)
        for plan in units.test_plans:
            if _is_new(plan_origin, plan.id, plan.origin, "test plan", warnings):
                plans.append(plan)
        templates.extend(units.templates)
        entries.extend(units.manifest_entries)
        warnings.extend(units.warnings)
        for job_id, why in units.dropped.items():
            dropped.setdefault(job_id, why)

    def add_tree(directory: str, suffixes: tuple[str, ...], file_namespace: str | None) -> None:
        for file in _unit_files(directory, suffixes, warnings):
            try:
                text = _read_text(file)
            except UnitError as exc:
                warnings.append(f"{exc}: file skipped")
                continue
            add(parse(text, file, file_namespace))

    def add_provider(provider: Provider) -> None:
        for directory in provider.units_dirs:
            add_tree(directory, PROVIDER_UNIT_SUFFIXES, provider.namespace)
            for path in _unit_files(directory, (".yaml", ".yml")):  # newer Checkbox reads these; 1.18 does not
                message = "YAML unit files are not read: skipped"
                _merge_notices(notices, {("yaml",): _Notice(message, Origin(path, 1), "file", paths={path})})

    for provider in providers:
        add_provider(provider)
    for entry in paths:
        path = os.fspath(entry)
        if os.path.isdir(path):
            tree = read_source_tree(path)
            if tree is not None and tree.units_dirs:
                add_provider(tree)
                continue
            before = len(jobs) + len(plans) + len(templates) + len(warnings)
            add_tree(path, (".pxu",), None)
            if before == len(jobs) + len(plans) + len(templates) + len(warnings):
                warnings.append(f"{path}: directory contains no .pxu files")
            continue
        if os.path.exists(path) and not os.path.isfile(path):
            raise UnitError(path, "not a regular file or directory")
        text = _read_text(path)
        if path.endswith(".pxu") or _looks_like_units(text):
            add(parse(text, path))
        else:
            listed = parse_command_list(text, path, first_number=command_jobs + 1)
            command_jobs += len(listed)
            add(UnitSet(jobs=listed))
    add(UnitSet(jobs=jobs_from_commands(commands)))
    warnings.extend(str(notice) for notice in notices.values())
    left_out = {job_id: why for job_id, why in dropped.items() if job_id not in job_origin}
    return UnitSet(
        jobs=_resolve_references(jobs, left_out),
        test_plans=plans,
        warnings=warnings,
        templates=templates,
        dropped=left_out,
        manifest_entries=entries,
    )


def _is_new(
    seen: dict[str, Origin | None], unit_id: str, origin: Origin | None, what: str, warnings: list[str]
) -> bool:
    """Whether *unit_id* is met for the first time; a second one is named in *warnings* (both places) and left out."""
    if unit_id not in seen:
        seen[unit_id] = origin
        return True
    first = seen[unit_id]
    where = str(first) if first else "elsewhere"
    place = str(origin) if origin else "<unknown>"
    warnings.append(f"{place}: duplicate {what} id {unit_id!r} (first defined at {where}): left out")
    return False


_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_-]*)\}")


def _fill(text: str, record: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "{{":
            return "{"
        if match.group(0) == "}}":
            return "}"
        return record[match.group(1)]  # KeyError: the record lacks the field

    return _PLACEHOLDER.sub(replace, text)


def _on_ubuntucore() -> bool:
    """Checkbox's ``__on_ubuntucore__``: running from a snap (``$SNAP``) that is not classic-confined."""
    snap = os.environ.get("SNAP")
    if not snap:
        return False
    try:
        with open(os.path.join(snap, "meta", "snap.yaml"), encoding="utf-8", errors="replace") as handle:
            return not any(line == "confinement: classic\n" for line in handle)
    except OSError:
        return True


def jinja_context(checkbox_env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The variables Checkbox gives every Jinja2 field besides a record's:
    ``__checkbox_env__`` (a launcher's ``[environment]``), ``__system_env__`` (``os.environ``)
    and ``__on_ubuntucore__``."""
    return {
        "__checkbox_env__": dict(checkbox_env or {}),
        "__system_env__": os.environ,
        "__on_ubuntucore__": _on_ubuntucore(),
    }


@functools.lru_cache(maxsize=2048)
def _jinja_template(text: str) -> Any:
    import jinja2  # only for providers that use it

    return jinja2.Template(text)


def render_jinja(text: str, params: Mapping[str, Any]) -> str:
    """*text* rendered as a Jinja2 template with *params*, as Checkbox renders a field;
    ``ValueError`` (one line) if it cannot be."""
    if "{" not in text:
        return text
    import jinja2  # only for units that use it

    try:
        return _jinja_template(text).render(params)
    except jinja2.TemplateError as exc:
        line = f" (line {exc.lineno})" if getattr(exc, "lineno", None) else ""
        raise ValueError(f"Jinja2 {type(exc).__name__}{line}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    except (TypeError, ArithmeticError, LookupError, AttributeError) as exc:
        raise ValueError(f"Jinja2 rendering failed: {type(exc).__name__}: {exc}") from None


def instantiate_template(
    template: Template,
    records: Sequence[Mapping[str, str]],
    accept: Any = None,
    checkbox_env: Mapping[str, str] | None = None,
) -> tuple[list[JobDefinition], list[str]]:
    """The jobs *template* makes from *records*, and warnings.

    *accept* (a callable taking a record, or None for all) applies the
    template's filter. Each field is filled from the record as Checkbox fills
    it: ``{field}`` placeholders (the default engine), or rendered with Jinja2
    (``template-engine: jinja2``) given the record's fields, ``__index__``,
    and :func:`jinja_context` (*checkbox_env* is ``__checkbox_env__``).
    ``__index__`` counts the accepted records from 1, in both engines. Each job
    is followed by its siblings (see ``siblings`` and ``also-after-suspend``).
    A record lacking a placeholder's field, a field that cannot be rendered, or
    an id already made, makes no job (a warning says why). The jobs' ``extra``
    holds ``template-id``; their origin is the template's.
    """
    if not template.supported:
        return [], []
    origin = template.origin or Origin("<template>", 0)
    namespace = template.id.split("::", 1)[0] if "::" in template.id else None
    parser = _Parser(origin.path, namespace, checkbox_env)
    jobs: list[JobDefinition] = []
    seen: set[str] = set()
    jinja = template.engine == "jinja2"
    context = jinja_context(checkbox_env) if jinja else {}
    index = 0
    for number, record in enumerate(records, start=1):
        if accept is not None and not accept(record):
            continue
        index += 1
        try:
            if jinja:
                params = {**record, "__index__": index, **context}
                values = {key: render_jinja(value, params) for key, value in template.fields.items()}
            else:
                params = {**record, "__index__": str(index)}
                values = {key: _fill(value, params) for key, value in template.fields.items()}
        except KeyError as exc:
            parser.warn(origin.line, f"template {template.id!r}: record {number} has no field {exc.args[0]!r}")
            continue
        except ValueError as exc:
            parser.warn(origin.line, f"template {template.id!r}: record {number}: {exc}")
            continue
        try:
            job = parser.job_from_values(values, origin.line)
        except UnitError as exc:
            parser.warn(origin.line, f"template {template.id!r}: record {number}: {exc}")
            continue
        for made in parser.with_siblings(job, values, origin.line):
            if made.id in seen:
                parser.warn(origin.line, f"template {template.id!r}: record {number} makes job {made.id!r} again")
                continue
            seen.add(made.id)
            jobs.append(attrs.evolve(made, extra={**made.extra, "template-id": template.id}, origin=origin))
    return jobs, parser.all_warnings()
