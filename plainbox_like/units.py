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
* a field is ``key: value``; keys are case-sensitive, start with a letter or
  ``_`` and may contain letters, digits, ``_`` and ``-``;
* a line starting with a space or tab continues the previous field's value;
  the continuation lines of one field lose their common leading whitespace
  (dedent) and are appended after a newline; a continuation line that is a
  lone ``.`` stands for an empty line inside the value; leading and trailing
  empty lines of a value are dropped;
* a ``#`` in column 0 starts a comment line, also in the middle of a value;
* ``_key`` is the translatable form of ``key`` and means the same;
* ``unit:`` defaults to ``job``; ``unit: test plan`` is a test plan; any other
  kind (template, category, manifest entry, exporter, ...) is skipped with a
  warning, so real Checkbox provider files load.

Plain command lists (any text file not recognised as unit records) hold one
shell command per non-empty line; ``#`` lines are comments.
"""

from __future__ import annotations

import ast
import configparser
import hashlib
import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from plainbox_like.errors import UnitError

__all__ = [
    "Origin",
    "JobDefinition",
    "IncludePattern",
    "TestPlan",
    "Template",
    "UnitSet",
    "instantiate_template",
    "parse_pxu",
    "parse_command_list",
    "load_units",
    "provider_namespace",
    "jobs_from_commands",
    "COMMAND_LINE_PATH",
]

#: ``Origin.path`` of jobs made by :func:`jobs_from_commands` (``-c CMD`` options).
COMMAND_LINE_PATH = "<command line>"


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
    have to finish first. ``timeout`` (seconds) is our own field. ``requires``
    is kept as raw text (Plainbox resource expressions, one per line), parsed
    by :mod:`plainbox_like.resource` when the job is planned and run.
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
        }

    @property
    def checksum(self) -> str:
        """SHA-256 (hex) of the canonical JSON of :meth:`checksum_fields`.

        Canonical = sorted keys, compact separators, ASCII only; floats use
        Python's shortest round-trip repr, so the value is stable across runs
        and Python versions.
        """
        text = json.dumps(
            self.checksum_fields(), sort_keys=True, separators=(",", ":"), ensure_ascii=True
        )
        return hashlib.sha256(text.encode("ascii")).hexdigest()


@attrs.frozen
class IncludePattern:
    """One ``include:`` line of a test plan: a regex and its ``key=value`` overrides."""

    pattern: str
    overrides: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=tuple)


@attrs.frozen
class TestPlan:
    """A named selection of jobs (``unit: test plan``).

    Patterns are regular expressions matched against the whole job id
    (``^(?:pattern)$``), as in Plainbox. ``nested_part`` is kept but not used yet.
    """

    __test__ = False  # not a pytest test class despite the name

    id: str
    name: str | None = None
    include: tuple[IncludePattern, ...] = attrs.field(default=(), converter=tuple)
    exclude: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    mandatory_include: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    bootstrap_include: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    nested_part: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    extra: dict[str, str] = attrs.field(factory=dict, hash=False)
    origin: Origin | None = attrs.field(default=None, eq=False)


@attrs.frozen
class Template:
    """A job template (``unit: template``): one job per record of a resource job.

    ``fields`` are the job fields with ``{name}`` placeholders (``{{``/``}}``
    stand for braces), filled from each record of ``resource`` that
    ``filter`` (a resource expression, optional) accepts. ``id`` is the
    ``template-id`` field, else the job id pattern.
    """

    id: str
    resource: str
    filter: str | None = None
    engine: str | None = None
    fields: dict[str, str] = attrs.field(factory=dict, hash=False)
    origin: Origin | None = attrs.field(default=None, eq=False)

    @property
    def supported(self) -> bool:
        """Whether jobs can be made from it (Jinja2 templates cannot)."""
        return self.engine in (None, "default")


@attrs.frozen
class UnitSet:
    """Everything loaded from a set of files: jobs, test plans and templates in file order, plus warnings."""

    jobs: tuple[JobDefinition, ...] = attrs.field(default=(), converter=tuple)
    test_plans: tuple[TestPlan, ...] = attrs.field(default=(), converter=tuple)
    warnings: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    templates: tuple[Template, ...] = attrs.field(default=(), converter=tuple)
    _job_index: dict[str, JobDefinition] = attrs.field(
        init=False, repr=False, eq=False, hash=False
    )
    _plan_index: dict[str, TestPlan] = attrs.field(init=False, repr=False, eq=False, hash=False)

    _bare_index: dict[str, list[JobDefinition]] = attrs.field(
        init=False, repr=False, eq=False, hash=False
    )

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
_UNITS_HINT = re.compile(r"^(?:id|unit)[ \t]*:", re.MULTILINE)


@attrs.define
class _Field:
    key: str  # normalized (no leading "_")
    raw_key: str
    line: int
    first: str
    cont: list[tuple[int, str]] = attrs.field(factory=list)  # (line number, raw line)

    def lines(self) -> list[tuple[int, str]]:
        """The value's lines with their line numbers, after dedent and ``.`` handling."""
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
        return "\n".join(text for _, text in self.lines())


@attrs.define
class _Record:
    line: int
    fields: dict[str, _Field] = attrs.field(factory=dict)


def _records(text: str, path: str) -> list[_Record]:
    """Split RFC 822 style text into records of fields (no interpretation yet)."""
    records: list[_Record] = []
    record: _Record | None = None
    field: _Field | None = None
    for number, line in enumerate(text.split("\n"), start=1):
        if line.endswith("\r"):
            line = line[:-1]
        if line.startswith("#"):
            continue
        if not line.strip():
            record = field = None
            continue
        if line[0] in " \t":
            if field is None:
                raise UnitError(path, "continuation line without a field before it", line=number)
            field.cont.append((number, line))
            continue
        match = _KEY_LINE.fullmatch(line)
        if match is None:
            shown = line if len(line) <= 40 else line[:37] + "..."
            raise UnitError(
                path,
                f"expected 'key: value', an indented continuation, a '#' comment or a blank line,"
                f" got {shown!r}",
                line=number,
            )
        raw_key, rest = match.groups()
        key = raw_key[1:] if raw_key.startswith("_") and len(raw_key) > 1 else raw_key
        if record is None:
            record = _Record(line=number)
            records.append(record)
        previous = record.fields.get(key)
        if previous is not None:
            raise UnitError(
                path,
                f"field {raw_key!r} given twice in one record (first as {previous.raw_key!r}"
                f" at line {previous.line})",
                line=number,
            )
        field = _Field(key=key, raw_key=raw_key, line=number, first=rest.strip())
        record.fields[key] = field
    return records


# --------------------------------------------------------------------------- interpreting records

_JOB_FIELDS = frozenset(
    {
        "unit", "id", "plugin", "command", "summary", "description", "depends", "after",
        "environ", "estimated_duration", "flags", "user", "timeout", "requires",
    }
)  # fmt: skip
# Plainbox job fields that only describe a job (or feed features we do not
# have); they go to ``extra`` without a warning. Anything else, including
# likely typos, goes to ``extra`` with a warning.
_QUIET_JOB_EXTRAS = frozenset(
    {"purpose", "steps", "verification", "category_id", "certification_status", "imports", "name"}
)
_PLAN_FIELDS = frozenset(
    {
        "unit", "id", "name", "include", "exclude", "mandatory_include", "bootstrap_include",
        "nested_part",
    }
)  # fmt: skip
_QUIET_PLAN_EXTRAS = frozenset(
    {"description", "estimated_duration", "certification_status_overrides", "category_overrides",
     "category-overrides"}
)
_LIST_SPLIT = re.compile(r"[\s,]+")
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


class _Parser:
    """Turns the records of one file into units, collecting warnings."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.warnings: list[str] = []
        self._warned_fields: set[str] = set()
        self._skipped: dict[str, tuple[int, int]] = {}  # kind -> (first line, count)

    def warn(self, line: int, message: str) -> None:
        self.warnings.append(f"{self.path}:{line}: {message}")

    def extras(
        self, record: _Record, known: frozenset[str], quiet: frozenset[str], what: str
    ) -> dict[str, str]:
        """Fields not in ``known``; warn once per file about those not in ``quiet`` either."""
        extra: dict[str, str] = {}
        for key, field in record.fields.items():
            if key in known:
                continue
            extra[key] = field.value()
            if key not in quiet and key not in self._warned_fields:
                self._warned_fields.add(key)
                self.warn(
                    field.line,
                    f"unknown field {field.raw_key!r} in {what} kept as extra data"
                    " (reported once per file)",
                )
        return extra

    def _claim(self, seen: dict[str, int], what: str, unit_id: str, line: int) -> None:
        """Note that *unit_id* is defined at *line*; a second definition in the file is an error."""
        if unit_id in seen:
            raise UnitError(
                self.path, f"duplicate {what} id {unit_id!r} (first defined at {self.path}:{seen[unit_id]})", line=line
            )
        seen[unit_id] = line

    def parse(self, text: str) -> UnitSet:
        jobs: list[JobDefinition] = []
        plans: list[TestPlan] = []
        templates: list[Template] = []
        seen_jobs: dict[str, int] = {}
        seen_plans: dict[str, int] = {}
        for record in _records(text, self.path):
            kind_field = record.fields.get("unit")
            kind = " ".join(kind_field.value().split()) if kind_field else "job"
            if kind == "job":
                job = self.job(record)
                self._claim(seen_jobs, "job", job.id, record.line)
                jobs.append(job)
            elif kind == "template":
                template = self.template(record)
                if template is not None:
                    templates.append(template)
            elif kind == "test plan":
                plan = self.test_plan(record)
                self._claim(seen_plans, "test plan", plan.id, record.line)
                plans.append(plan)
            else:
                first, count = self._skipped.get(kind, (record.line, 0))
                self._skipped[kind] = (first, count + 1)
        for kind, (first, count) in self._skipped.items():
            units = "unit" if count == 1 else "units"
            self.warn(first, f"skipped {count} {kind!r} {units} (unit kind not supported)")
        return UnitSet(jobs=jobs, test_plans=plans, warnings=self.warnings, templates=templates)

    def template(self, record: _Record) -> Template | None:
        fields = {key: field.value() for key, field in record.fields.items() if key != "unit"}
        template_id = fields.pop("template-id", None) or fields.get("id")
        if not template_id:
            raise UnitError(self.path, "template has no 'id' field", line=record.line)
        resource = fields.pop("template-resource", None)
        if not resource:
            self.warn(record.line, f"template {template_id!r} has no 'template-resource' field: skipped")
            return None
        unit_kind = fields.pop("template-unit", None)
        if unit_kind not in (None, "job"):
            self.warn(record.line, f"template {template_id!r} makes {unit_kind!r} units, which is not supported: skipped")
            return None
        engine = fields.pop("template-engine", None)
        template = Template(
            id=template_id,
            resource=resource,
            filter=fields.pop("template-filter", None) or None,
            engine=engine,
            fields={k: v for k, v in fields.items() if not k.startswith("template-")},
            origin=Origin(self.path, record.line),
        )
        if not template.supported:
            self.warn(
                record.line,
                f"template {template_id!r} uses template-engine {engine!r}, which is not supported:"
                " no jobs are made from it",
            )
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
            self.warn(field.line, "job uses the legacy 'name' field as its id")
        if field is None:
            raise UnitError(self.path, f"{what} has no 'id' field", line=record.line)
        value = field.value()
        if not value:
            raise UnitError(self.path, f"{what} has an empty 'id'", line=field.line)
        if _LIST_SPLIT.search(value):
            raise UnitError(
                self.path, f"{what} id {value!r} contains whitespace or a comma", line=field.line
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
        if value is None or value < 0 or (positive and value == 0):
            need = "a positive" if positive else "a non-negative"
            raise UnitError(
                self.path,
                f"{field.raw_key} must be {need} number of seconds, got {text!r}",
                line=field.line,
            )
        return value

    def job(self, record: _Record) -> JobDefinition:
        job_id = self._id(record, "job")
        fields = record.fields

        def listed(key: str) -> tuple[str, ...]:
            return _split_list(fields[key].value()) if key in fields else ()

        return JobDefinition(
            id=job_id,
            plugin=self._text(record, "plugin") or "shell",
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
            extra=self.extras(record, _JOB_FIELDS, _QUIET_JOB_EXTRAS, "job"),
            origin=Origin(self.path, record.line),
        )

    def _patterns(self, record: _Record, key: str) -> list[IncludePattern]:
        """Parse a pattern list: one ``pattern [key=value ...]`` per line, ``#`` comments."""
        field = record.fields.get(key)
        if field is None:
            return []
        out: list[IncludePattern] = []
        for number, text in field.lines():
            hash_at = text.find("#")
            while hash_at > 0 and not text[hash_at - 1].isspace():
                hash_at = text.find("#", hash_at + 1)
            if hash_at >= 0:
                text = text[:hash_at]
            tokens = text.split()
            if not tokens:
                continue
            overrides: list[tuple[str, str]] = []
            for token in tokens[1:]:
                name, sep, value = token.partition("=")
                if not sep or not name:
                    raise UnitError(
                        self.path,
                        f"{field.raw_key}: expected 'pattern [key=value ...]',"
                        f" got {token!r} after pattern {tokens[0]!r}",
                        line=number,
                    )
                overrides.append((name, value))
            out.append(IncludePattern(tokens[0], tuple(overrides)))
        return out

    def test_plan(self, record: _Record) -> TestPlan:
        plan_id = self._id(record, "test plan")

        def patterns(key: str) -> tuple[str, ...]:
            return tuple(item.pattern for item in self._patterns(record, key))

        return TestPlan(
            id=plan_id,
            name=self._text(record, "name"),
            include=tuple(self._patterns(record, "include")),
            exclude=patterns("exclude"),
            mandatory_include=patterns("mandatory_include"),
            bootstrap_include=patterns("bootstrap_include"),
            nested_part=patterns("nested_part"),
            extra=self.extras(record, _PLAN_FIELDS, _QUIET_PLAN_EXTRAS, "test plan"),
            origin=Origin(self.path, record.line),
        )


def parse_pxu(text: str, path: str) -> UnitSet:
    """Parse the text of one ``.pxu`` file; ``path`` is used in origins and messages.

    Raises :class:`UnitError` (with the line) for malformed records, jobs or
    test plans without ``id``, duplicate ids, and bad durations. Unknown fields
    and unsupported unit kinds only produce warnings.
    """
    return _Parser(path).parse(text)


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


def _unit_files(directory: str) -> list[str]:
    """Every ``*.pxu`` file under ``directory`` (recursively, not following
    symlinked directories), sorted by their path relative to it."""
    found: list[tuple[tuple[str, ...], str]] = []
    for root, dirs, files in os.walk(directory):
        dirs.sort()
        rel = os.path.relpath(root, directory)
        parts = () if rel == "." else tuple(rel.split(os.sep))
        for name in files:
            if name.endswith(".pxu"):
                found.append((parts + (name,), os.path.join(root, name)))
    found.sort()
    return [path for _, path in found]


_NAMESPACE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def _provider_file_namespace(path: str) -> str | None:
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
    is parsed, never run. *cache* (directory -> namespace) saves looking again
    for files of the same directory.
    """
    directory = os.path.dirname(os.path.abspath(path))
    if cache is not None:
        if directory not in cache:
            cache[directory] = provider_namespace(path, levels)
        return cache[directory]
    for _ in range(levels):
        try:
            names = sorted(os.listdir(directory))
        except OSError:
            names = []
        namespace = None
        for name in names:
            if name.endswith(".provider") and os.path.isfile(os.path.join(directory, name)):
                namespace = _provider_file_namespace(os.path.join(directory, name))
                if namespace:
                    break
        if not namespace and "manage.py" in names:
            namespace = _manage_py_namespace(os.path.join(directory, "manage.py"))
        if namespace and _NAMESPACE.fullmatch(namespace):
            return namespace
        parent = os.path.dirname(directory)
        if parent == directory:
            break
        directory = parent
    return None


def _qualify(units: UnitSet, namespace: str) -> UnitSet:
    """Give the jobs and test plans without a namespace in their id this one."""

    def qualified(unit_id: str) -> str:
        return unit_id if "::" in unit_id else f"{namespace}::{unit_id}"

    return UnitSet(
        jobs=[attrs.evolve(job, id=qualified(job.id)) for job in units.jobs],
        test_plans=[attrs.evolve(plan, id=qualified(plan.id)) for plan in units.test_plans],
        warnings=units.warnings,
        templates=[attrs.evolve(t, id=qualified(t.id)) for t in units.templates],
    )


def _resolve_references(jobs: list[JobDefinition]) -> list[JobDefinition]:
    """Write ``depends``/``after`` targets as the full ids they refer to, with or without namespace.

    A target that is a job id stays; otherwise ``<referrer's namespace>::target``, then for
    ``ns::name`` the bare ``name``, then the only job ``<any namespace>::target``. Targets that
    resolve to nothing stay as written (and are reported as unknown when planned).
    """
    ids = {job.id for job in jobs}
    if not any("::" in job_id for job_id in ids) and not any(
        "::" in dep for job in jobs for dep in job.depends + job.after
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
        if job.depends or job.after:
            namespace = job.id.split("::", 1)[0] if "::" in job.id else None
            depends = tuple(dict.fromkeys(resolve(d, namespace) for d in job.depends))
            after = tuple(dict.fromkeys(resolve(d, namespace) for d in job.after))
            if depends != job.depends or after != job.after:
                job = attrs.evolve(job, depends=depends, after=after)
        out.append(job)
    return out


def load_units(
    paths: Sequence[str | os.PathLike[str]], commands: Sequence[str] = (), namespace: str | None = None
) -> UnitSet:
    """Load jobs and test plans from files and directories, in the order given.

    * a directory contributes every ``*.pxu`` file under it, recursively, sorted
      by relative path;
    * a file ending in ``.pxu``, or whose content looks like unit records, is
      parsed with :func:`parse_pxu`;
    * any other text file is a command list: each command becomes job
      ``cmd-<n>``, where n counts command-list jobs across the whole load
      (1-based, in load order), so the ids are stable for the same inputs;
    * ``commands`` (``-c`` options) are appended as jobs ``c1``, ``c2``, ...
    * jobs and test plans of unit files get a namespace (``ns::id``) unless
      their id has one: *namespace* if given, else the one of the provider
      the file belongs to (:func:`provider_namespace`), else none;
    * ``depends``/``after`` targets are then resolved with or without their
      namespace (see :func:`_resolve_references`).

    Job ids and test plan ids must be unique across everything loaded; a
    duplicate raises :class:`UnitError` naming both places.
    """
    jobs: list[JobDefinition] = []
    plans: list[TestPlan] = []
    templates: list[Template] = []
    warnings: list[str] = []
    job_origin: dict[str, Origin | None] = {}
    plan_origin: dict[str, Origin | None] = {}
    command_jobs = 0
    provider_cache: dict[str, str | None] = {}

    def add(units: UnitSet) -> None:
        for job in units.jobs:
            _check_unique(job_origin, job.id, job.origin, "job")
            jobs.append(job)
        for plan in units.test_plans:
            _check_unique(plan_origin, plan.id, plan.origin, "test plan")
            plans.append(plan)
        templates.extend(units.templates)
        warnings.extend(units.warnings)

    for entry in paths:
        path = os.fspath(entry)
        if os.path.isdir(path):
            files = _unit_files(path)
            if not files:
                warnings.append(f"{path}: directory contains no .pxu files")
            for file in files:
                add(_namespaced(parse_pxu(_read_text(file), file), file, namespace, provider_cache))
            continue
        if os.path.exists(path) and not os.path.isfile(path):
            raise UnitError(path, "not a regular file or directory")
        text = _read_text(path)
        if path.endswith(".pxu") or _looks_like_units(text):
            add(_namespaced(parse_pxu(text, path), path, namespace, provider_cache))
        else:
            listed = parse_command_list(text, path, first_number=command_jobs + 1)
            command_jobs += len(listed)
            add(UnitSet(jobs=listed))
    add(UnitSet(jobs=jobs_from_commands(commands)))
    return UnitSet(jobs=_resolve_references(jobs), test_plans=plans, warnings=warnings, templates=templates)


def _namespaced(units: UnitSet, path: str, namespace: str | None, cache: dict[str, str | None]) -> UnitSet:
    namespace = namespace or provider_namespace(path, cache=cache)
    return _qualify(units, namespace) if namespace else units


def _check_unique(
    seen: dict[str, Origin | None], unit_id: str, origin: Origin | None, what: str
) -> None:
    if unit_id not in seen:
        seen[unit_id] = origin
        return
    first = seen[unit_id]
    where = str(first) if first else "elsewhere"
    path = origin.path if origin else "<unknown>"
    line = origin.line if origin else None
    raise UnitError(path, f"duplicate {what} id {unit_id!r} (first defined at {where})", line=line)


_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_-]*)\}")


def _fill(text: str, record: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "{{":
            return "{"
        if match.group(0) == "}}":
            return "}"
        return record[match.group(1)]  # KeyError: the record lacks the field

    return _PLACEHOLDER.sub(replace, text)


def instantiate_template(
    template: Template, records: Sequence[Mapping[str, str]], accept: Any = None
) -> tuple[list[JobDefinition], list[str]]:
    """The jobs *template* makes from *records*, and warnings.

    *accept* (a callable taking a record, or None for all) applies the
    template's filter. A record lacking a placeholder's field, or giving an id
    already made, makes no job (a warning says why). The jobs' ``extra`` holds
    ``template-id``; their origin is the template's.
    """
    if not template.supported:
        return [], []
    origin = template.origin or Origin("<template>", 0)
    parser = _Parser(origin.path)
    jobs: list[JobDefinition] = []
    seen: set[str] = set()
    namespace = template.id.split("::", 1)[0] if "::" in template.id else None
    for number, record in enumerate(records, start=1):
        if accept is not None and not accept(record):
            continue
        try:
            values = {key: _fill(value, record) for key, value in template.fields.items()}
        except KeyError as exc:
            parser.warn(origin.line, f"template {template.id!r}: record {number} has no field {exc.args[0]!r}")
            continue
        try:
            job = parser.job_from_values(values, origin.line)
        except UnitError as exc:
            parser.warn(origin.line, f"template {template.id!r}: record {number}: {exc}")
            continue
        if namespace and "::" not in job.id:
            job = attrs.evolve(job, id=f"{namespace}::{job.id}")
        if job.id in seen:
            parser.warn(origin.line, f"template {template.id!r}: record {number} makes job {job.id!r} again")
            continue
        seen.add(job.id)
        jobs.append(attrs.evolve(job, extra={**job.extra, "template-id": template.id}, origin=origin))
    return jobs, parser.warnings
