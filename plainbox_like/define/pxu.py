"""Units from records: what the fields of a ``.pxu`` record mean, checked as Checkbox checks them.

:func:`parse_pxu` reads one file's records (:mod:`plainbox_like.define.records`) into units
(:mod:`plainbox_like.define.units`):

* ``unit:`` defaults to ``job``; ``unit: setup job`` is a job too,
  ``unit: test plan`` a test plan, ``unit: template`` a job template and
  ``unit: manifest entry`` a manifest entry (:class:`ManifestEntry`);
  Checkbox's kinds that play no part in a run (:data:`QUIET_UNIT_KINDS`) are
  skipped quietly, any other kind with a warning;
* a job without ``id:`` takes its id from ``name:`` (Plainbox before 0.5);
  ``plugin: local`` jobs (job generators of old Checkbox) are skipped;
* a job's ``siblings`` and ``also-after-suspend`` flags add the jobs Checkbox
  adds, right after it (:meth:`UnitParser.with_siblings`); a unit with
  ``template-engine: jinja2`` that is not a template is rendered with Jinja2.

A record that cannot be used (a line that is no ``key:``, a key given twice,
no id, a bad timeout, a second unit with an id already loaded) is left out
with a warning naming its file and line; the rest loads
(:attr:`UnitSet.dropped` keeps why, so jobs needing it can say so). Untidy
records that Checkbox accepts (an id with spaces ...) load, with a warning.

Whatever is not supported (a unit kind, a plugin, an unknown field, a
template unit kind ...) is named once per load in a warning that gives the file
and line of its first use and how often it occurs.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping

import attrs

from plainbox_like.errors import UnitError
from plainbox_like.define.records import Field, Record, split_records
from plainbox_like.define.rendering import jinja_context, render_jinja
from plainbox_like.define.units import (
    CERTIFICATION_STATUSES,
    OVERRIDABLE_FIELDS,
    IncludePattern,
    JobDefinition,
    ManifestEntry,
    Origin,
    Override,
    Template,
    TestPlan,
    UnitSet,
)

__all__ = ["parse_pxu", "QUIET_UNIT_KINDS"]

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
#: Unit kinds Checkbox knows that play no part in running jobs: skipped without a word.
QUIET_UNIT_KINDS = frozenset({"category", "packaging meta-data", "exporter", "file"})

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
class Notice:
    """One kind of unsupported thing: where it was first met, and how often."""

    message: str
    origin: Origin
    noun: str  # what is counted: "job", "unit", "field" ...
    count: int = 1
    paths: set[str] = attrs.Factory(set)

    def merge(self, other: "Notice") -> None:
        self.count += other.count
        self.paths |= other.paths

    def __str__(self) -> str:
        if self.count == 1:
            return f"{self.origin}: {self.message}"
        files = f" in {len(self.paths)} files" if len(self.paths) > 1 and self.noun != "file" else ""
        return f"{self.origin}: {self.message} ({self.count} {self.noun}s{files}; reported once)"


def merge_notices(into: dict[tuple[str, ...], Notice], notices: Mapping[tuple[str, ...], Notice]) -> None:
    """Add *notices* to *into*, counting a kind already there once more (one warning per kind per load)."""
    for key, notice in notices.items():
        if key in into:
            into[key].merge(notice)
        else:
            into[key] = notice


class UnitParser:
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
        self.notices: dict[tuple[str, ...], Notice] = {}
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
            self.notices[key] = Notice(message, Origin(self.path, line), noun, paths={self.path})
        else:
            notice.count += 1

    def all_warnings(self) -> list[str]:
        """The warnings, then one line per notice."""
        return self.warnings + [str(notice) for notice in self.notices.values()]

    def extras(
        self, record: Record, known: frozenset[str], quiet: frozenset[str], what: str
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
        for record in split_records(text, self.path):
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

    def manifest_entry(self, record: Record) -> ManifestEntry:
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

    def drop(self, record: Record, kind: str, exc: UnitError) -> None:
        """Leave out a unit that cannot be used, with a warning naming its place (and its id, if it has one)."""
        id_field = record.fields.get("id") or (record.fields.get("name") if kind == "job" else None)
        unit_id = id_field.value() if id_field is not None else ""
        what = "job" if kind == "setup job" else kind
        label = f"{what} {self.qualified(unit_id)!r}" if unit_id else what
        message = f"{exc}: {label} left out"
        self.warnings.append(message)
        if unit_id and kind in ("job", "setup job"):
            self.dropped.setdefault(self.qualified(unit_id), message)

    def template(self, record: Record) -> Template | None:
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
        record = Record(line=line)
        for key, value in values.items():
            record.fields[key] = Field(key=key, raw_key=key, line=line, first=value)
        return self.job(record)

    def _id(self, record: Record, what: str) -> str:
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

    def _text(self, record: Record, key: str) -> str | None:
        field = record.fields.get(key)
        if field is None:
            return None
        value = field.value()
        return value if value else None

    def _seconds(self, record: Record, key: str, positive: bool) -> float | None:
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

    def _rendered(self, record: Record) -> Record:
        """*record* with every field rendered by Jinja2 (a unit with ``template-engine: jinja2`` that is
        not a template: Checkbox renders its fields with :func:`jinja_context`)."""
        context = jinja_context(self.checkbox_env)
        out = Record(line=record.line)
        for key, field in record.fields.items():
            try:
                value = render_jinja(field.value(), context)
            except ValueError as exc:
                raise UnitError(self.path, f"field {field.raw_key!r}: {exc}", line=field.line) from None
            out.fields[key] = Field(key=key, raw_key=field.raw_key, line=field.line, first=value)
        return out

    def job(self, record: Record) -> JobDefinition:
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

    def _patterns(self, record: Record, key: str) -> tuple[list[IncludePattern], list[Override]]:
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

    def _apply_lines(self, record: Record, target: str) -> list[Override]:
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

    def test_plan(self, record: Record) -> TestPlan:
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


def parse_with_notices(
    text: str, path: str, namespace: str | None, checkbox_env: Mapping[str, str] | None = None
) -> tuple[UnitSet, dict[tuple[str, ...], Notice]]:
    """The units of one file and its notices, kept apart so that :func:`~plainbox_like.define.loading.load_units`
    reports each kind once for a whole load; ids without a namespace get *namespace*."""
    parser = UnitParser(path, namespace, checkbox_env)
    return parser.parse(text), parser.notices


def parse_pxu(text: str, path: str) -> UnitSet:
    """Parse the text of one ``.pxu`` file; ``path`` is used in origins and messages.

    Never raises for what the text holds: a unit that cannot be used
    (malformed record, no ``id``, an id already defined, a bad timeout) is left
    out with a warning naming its line, and kept in :attr:`UnitSet.dropped`;
    untidy units, unknown fields, unsupported unit kinds and plugins, and bad
    override lines produce warnings, each kind of unsupported thing once.
    """
    parser = UnitParser(path)
    units = parser.parse(text)
    return attrs.evolve(units, warnings=parser.all_warnings())
