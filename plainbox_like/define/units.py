"""The units a run is made of: jobs, test plans, templates, manifest entries, and the set a load gives.

These attrs models are what the rest of ``define`` produces and consumes: :mod:`.records` splits a
``.pxu`` file into RFC 822 records, :mod:`.pxu` turns records into these units, :mod:`.loading` reads
files, directories and providers into a :class:`UnitSet`, and :mod:`.templates` makes jobs from a
:class:`Template`. They live apart from the parsers so that code which only needs a job's shape (the
runner, the executors) imports no parser.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import json
from collections.abc import Callable, Hashable, Iterable, Mapping
from types import MappingProxyType
from typing import Any

import attrs

__all__ = [
    "Origin",
    "JobDefinition",
    "IncludePattern",
    "Override",
    "TestPlan",
    "Template",
    "ManifestEntry",
    "UnitSet",
    "CERTIFICATION_STATUSES",
    "OVERRIDABLE_FIELDS",
]

#: Plainbox's certification statuses; ``unspecified`` is a job's default.
CERTIFICATION_STATUSES = ("unspecified", "not-part-of-certification", "non-blocker", "blocker")
#: Job fields a test plan may override (``key=value`` after an include pattern uses ``-`` or ``_``).
OVERRIDABLE_FIELDS = frozenset({"category_id", "certification_status"})
#: Template engines: Python ``{field}`` placeholders (the default) and Jinja2, as in Checkbox.
TEMPLATE_ENGINES = (None, "default", "jinja2")


#: The :attr:`JobDefinition.extra` of a job without extra fields: one shared, read-only mapping, as a run of
#: 100,000 jobs from a command list would otherwise hold 100,000 empty dicts.
NO_EXTRA: Mapping[str, str] = MappingProxyType({})


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


@attrs.frozen(weakref_slot=False)  # one per unit, never weakly referenced
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
    #: Fields of no meaning here, kept as written (read-only; the same empty one for most jobs).
    extra: Mapping[str, str] = attrs.field(default=NO_EXTRA, hash=False)
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
    :func:`plainbox_like.define.metadata.plan_overrides`.
    """

    __test__ = False  # not a pytest test class despite the name

    id: str
    name: str | None = None
    include: tuple[IncludePattern, ...] = attrs.field(default=(), converter=as_tuple)
    exclude: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    mandatory_include: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    bootstrap_include: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    nested_part: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    #: Fields of no meaning here, kept as written (read-only).
    extra: Mapping[str, str] = attrs.field(default=NO_EXTRA, hash=False)
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
