"""Which jobs to run, in what order, and which may start now.

Two relations between jobs come from their definitions:

* ``depends: X`` -- X must run first *and pass*; otherwise this job is skipped
  (outcome ``skipped-dependency``). Selecting a job pulls in its ``depends``
  targets, transitively.
* ``after: X`` -- if X is part of the run, it must finish first (any
  outcome). ``after`` never pulls X in and never causes a skip.
* ``requires: X.field == "v"`` -- X is a resource job: selecting this job
  pulls X in and X must finish first; whether the expression holds is decided
  when the job is about to run (see :mod:`plainbox_like.define.resource`).

:func:`select_jobs` picks jobs, :func:`build_plan` orders them (this order is
what a dry run shows), and :class:`Scheduler` hands them out one at a time,
several in flight with ``-j N``. :class:`RunMetadata` is what a test plan says
about its jobs besides selecting them: their effective category and
certification status (:func:`plan_overrides`).
"""

from __future__ import annotations

import base64
import functools
import heapq
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from types import MappingProxyType

import attrs

from plainbox_like.errors import PlanError
from plainbox_like.define.resource import (
    RequirementProgram,
    ResourceExpressionError,
    bare_name_index,
    namespace_of,
    resolve_resource,
)
from plainbox_like.define.units import JobDefinition, Override, TestPlan, UnitSet, as_tuple

__all__ = [
    "DEFAULT_CERTIFICATION_STATUS",
    "PASS_OUTCOMES",
    "PERSON_PLUGINS",
    "SKIPPED_DEPENDENCY",
    "Decision",
    "JobMetadata",
    "Plan",
    "RunMetadata",
    "Scheduler",
    "bootstrap_jobs",
    "build_plan",
    "mandatory_jobs",
    "needs_person",
    "own_metadata",
    "plan_overrides",
    "select_jobs",
]

#: Outcomes that satisfy a ``depends`` relation.
PASS_OUTCOMES = frozenset({"pass"})
#: Outcome of a job skipped because a ``depends`` target did not pass or is unknown.
SKIPPED_DEPENDENCY = "skipped-dependency"
#: The outcome a ``salvages`` target must have for its salvage job to run (as in Checkbox).
SALVAGED_OUTCOME = "fail"
#: Plugins whose jobs need a person at the machine (``qml`` jobs show a UI too).
PERSON_PLUGINS = frozenset(
    {"manual", "user-interact", "user-verify", "user-interact-verify", "qml"}
)

_REGEX_SPECIAL = frozenset(".^$*+?{}[]\\|()")


@functools.lru_cache(maxsize=4096)
def _parse_requires(text: str) -> tuple[RequirementProgram | None, str | None]:
    try:
        return RequirementProgram.parse(text), None
    except ResourceExpressionError as exc:
        return None, str(exc)


def requirement_program(job: JobDefinition) -> tuple[RequirementProgram | None, str | None]:
    """The job's parsed ``requires:`` (None if it has none) and the error if it is invalid."""
    if not job.requires:
        return None, None
    return _parse_requires(job.requires)


def job_imports(job: JobDefinition) -> dict[str, str]:
    """The job's ``imports:`` lines (``from NS import ID [as ALIAS]``) as ``{alias: NS::ID}``; others are ignored."""
    text = job.extra.get("imports")
    if not text:
        return {}
    found: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) in (4, 6) and parts[0] == "from" and parts[2] == "import" and (len(parts) == 4 or parts[4] == "as"):
            found[parts[-1]] = f"{parts[1]}::{parts[3]}"
    return found


def resource_id(
    job: JobDefinition, name: str, known: Mapping[str, object], by_bare: Mapping[str, Sequence[str]] | None = None
) -> str | None:
    """The id among *known* of the resource job *name* (as written in the job's ``requires``) stands for, or None.

    An ``imports:`` alias names its job, as in Checkbox; otherwise :func:`resolve_resource`.
    """
    imported = job_imports(job).get(name) if "imports" in job.extra else None
    if imported is not None:
        return imported if imported in known else None
    return resolve_resource(name, known, namespace_of(job.id), by_bare)


def resource_jobs(
    job: JobDefinition, known: Mapping[str, object], by_bare: Mapping[str, Sequence[str]] | None = None
) -> list[str]:
    """Ids among *known* of the resource jobs the job's ``requires:`` names (implicit ordering).

    *by_bare* (``resource.bare_name_index(known)``) saves scanning *known* for names it lacks.
    """
    program, _error = requirement_program(job)
    if program is None:
        return []
    found = (resource_id(job, name, known, by_bare) for name in program.resources)
    return [job_id for job_id in dict.fromkeys(found) if job_id is not None and job_id != job.id]


def _pulled(
    job: JobDefinition, known: Mapping[str, object], by_bare: Mapping[str, Sequence[str]] | None = None
) -> tuple[str, ...]:
    """What selecting *job* pulls in: its ``depends`` and the resource jobs it requires."""
    if not job.requires:
        return job.depends
    return tuple(dict.fromkeys(job.depends + tuple(resource_jobs(job, known, by_bare))))


def _bare_index_if_needed(jobs: Iterable[JobDefinition], ids: Iterable[str]) -> dict[str, list[str]] | None:
    """:func:`bare_name_index` of *ids* when some job has ``requires`` (else nothing needs it)."""
    return bare_name_index(ids) if any(job.requires for job in jobs) else None


def needs_person(job: JobDefinition) -> bool:
    """Whether the job needs someone to interact with it; a batch runner skips such jobs."""
    return job.plugin in PERSON_PLUGINS


# --------------------------------------------------------------------------- selection


def _literal_prefix(pattern: str) -> str:
    """Text that every string *pattern* fully matches starts with ('' when that is not clear)."""
    if "|" in pattern:
        return ""
    prefix: list[str] = []
    for char in pattern[1:] if pattern.startswith("^") else pattern:
        if char in _REGEX_SPECIAL:
            if char in "*?{" and prefix:
                prefix.pop()  # the character before may be absent
            break
        prefix.append(char)
    return "".join(prefix)


class _Matcher:
    """Full-match (``^(?:pattern)$``) a pattern against job ids, fast for literal ids and literal prefixes."""

    def __init__(self, pattern: str, what: str) -> None:
        self.pattern = pattern
        self.literal = not (_REGEX_SPECIAL & set(pattern))
        self.prefix = "" if self.literal else _literal_prefix(pattern)
        try:
            self.regex = _compile(pattern)
        except re.error as exc:
            raise PlanError(f"{what}: invalid regular expression {pattern!r}: {exc}") from None

    def matches(self, job_id: str) -> bool:
        """Whether the pattern matches the whole id, or the id without its ``namespace::``."""
        if self._matches(job_id):
            return True
        return "::" in job_id and self._matches(job_id.split("::", 1)[1])

    def _matches(self, job_id: str) -> bool:
        if self.literal:
            return job_id == self.pattern
        return self.regex.fullmatch(job_id) is not None

    def select(self, units: UnitSet) -> Iterable[JobDefinition]:
        """Matching jobs in file order."""
        if self.literal:
            yield from units.jobs_named(self.pattern)
            return
        matches = self.matches
        for job in units.jobs_with_prefix(self.prefix) if self.prefix else units.jobs:
            if matches(job.id):
                yield job

    def select_plans(self, units: UnitSet) -> list[TestPlan]:
        """Matching test plans in file order."""
        if self.literal:
            return units.plans_named(self.pattern)
        return [plan for plan in units.test_plans if self.matches(plan.id)]


@functools.lru_cache(maxsize=4096)
def _compile(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _plan_label(plan: TestPlan) -> str:
    return f"test plan {plan.id!r}" + (f" ({plan.origin})" if plan.origin else "")


def select_jobs(
    units: UnitSet,
    test_plan: str | None,
    include: Sequence[str],
    exclude: Sequence[str],
) -> list[JobDefinition]:
    """Choose the jobs of a run; the result feeds :func:`build_plan`.

    All patterns are regular expressions matched against the *whole* job id
    (``^(?:pattern)$``), like Plainbox: ``-i disk`` selects only the job
    ``disk``; use ``-i 'disk/.*'`` for a family.

    * With no test plan, no ``include`` and no ``exclude``: every job, in file order.
    * Otherwise the selection is the union of the test plan (its
      ``bootstrap_include`` and ``mandatory_include`` jobs, then its ``include``
      jobs minus its ``exclude`` patterns, each together with those of the
      test plans its ``nested_part`` names, recursively; see
      :func:`_plan_selection`) and the jobs matching ``include``
      (``-i``); with neither, every job. Order: pattern by pattern in the
      order written, each pattern's matches in file order; a job is listed
      where first matched.
    * ``exclude`` (``-x``) then removes jobs that were chosen by an include
      pattern. Bootstrap and mandatory jobs cannot be excluded, as in Plainbox.
    * Finally the ``depends`` targets (and resource jobs named by ``requires``)
      of every chosen job are pulled in,
      transitively, even when an exclude pattern matches them (a job cannot
      pass without them); each is placed just before the first job needing it.
      ``after`` targets are not pulled in. Unknown ids are left for
      :func:`build_plan` to report.

    Raises :class:`PlanError` for an unknown test plan, an invalid regex, a
    ``nested_part`` naming no test plan, and a cycle of nested parts.
    """
    if test_plan is None and not include and not exclude:
        return list(units.jobs)
    cli_include = [_Matcher(p, "-i/--include") for p in include]
    cli_exclude = [_Matcher(p, "-x/--exclude") for p in exclude]

    chosen: dict[str, JobDefinition] = {}  # insertion-ordered
    protected: set[str] = set()  # bootstrap and mandatory jobs

    if test_plan is not None:
        try:
            plan = units.test_plan(test_plan)
        except KeyError:
            raise PlanError(f"unknown test plan {test_plan!r} ({_known_plans(units, test_plan)})") from None
        for job_id, (job, is_protected) in _plan_selection(units, plan).items():
            chosen.setdefault(job_id, job)
            if is_protected:
                protected.add(job_id)
    for matcher in cli_include:
        for job in matcher.select(units):
            chosen.setdefault(job.id, job)
    if test_plan is None and not include:
        chosen = {job.id: job for job in units.jobs}
    if cli_exclude:
        chosen = {
            job_id: job
            for job_id, job in chosen.items()
            if job_id in protected or not any(m.matches(job_id) for m in cli_exclude)
        }
    return _with_dependencies(units, list(chosen.values()))


#: Up to this many test plans, an unknown one's error lists them all; beyond, the closest few.
LISTED_PLANS = 20


def _known_plans(units: UnitSet, wanted: str) -> str:
    """What an unknown test plan's error says about the known ones: all of them, or (a real provider has
    hundreds) how many there are and the ids closest to *wanted*."""
    import difflib

    ids = sorted(plan.id for plan in units.test_plans)
    if len(ids) <= LISTED_PLANS:
        return "known test plans: " + (", ".join(ids) or "none")
    bare = {plan_id.split("::", 1)[-1]: plan_id for plan_id in ids}
    close = difflib.get_close_matches(wanted.split("::", 1)[-1], list(bare), n=5, cutoff=0.5)
    similar = f"; similar: {', '.join(bare[name] for name in close)}" if close else ""
    return f"{len(ids)} known test plans, listed by 'plainbox-like plans'{similar}"


def _nested_plans(units: UnitSet, plan: TestPlan, stack: tuple[str, ...]) -> list[TestPlan]:
    """The test plans *plan*'s ``nested_part`` names (ids or patterns over test plan ids), in order."""
    found: dict[str, TestPlan] = {}
    for pattern in plan.nested_part:
        matches = units.cached(
            ("nested_part", pattern),
            lambda: _Matcher(pattern, _plan_label(plan) + " nested_part").select_plans(units),  # noqa: B023
        )
        if not matches:
            known = ", ".join(sorted(p.id for p in units.test_plans)) or "none"
            raise PlanError(f"{_plan_label(plan)}: nested_part {pattern!r} names no test plan (known: {known})")
        for part in matches:
            if part.id in stack:
                cycle = stack[stack.index(part.id) :] + (part.id,)
                places = []
                for plan_id in cycle:
                    origin = units.test_plan(plan_id).origin
                    places.append(f"{plan_id} ({origin})" if origin else plan_id)
                raise PlanError("test plan cycle through nested_part: " + " -> ".join(places))
            found.setdefault(part.id, part)
    return list(found.values())


def _plan_selection(units: UnitSet, plan: TestPlan) -> dict[str, tuple[JobDefinition, bool]]:
    """The jobs a test plan selects, its nested parts included, with whether each is protected.

    Order: the setup jobs of the plan and of its nested parts (depth first, in the order
    the parts are named), then their bootstrap jobs, then their mandatory jobs, then their
    included jobs. A plan's
    ``exclude`` patterns apply to its own ``include`` patterns and to those of its nested
    parts; bootstrap and mandatory jobs are never excluded.
    """
    tree: list[tuple[TestPlan, tuple[str, ...]]] = []  # (plan, excludes that apply to it)
    seen: set[tuple[str, tuple[str, ...]]] = set()

    # depth first, parts in the order named; iterative, so a chain of any length cannot overflow the stack
    todo: list[tuple[TestPlan, tuple[str, ...], tuple[str, ...]]] = [(plan, (), ())]
    while todo:
        node, stack, excludes = todo.pop()
        excludes = excludes + node.exclude
        if (node.id, excludes) in seen:
            continue  # a part reached again the same way adds nothing (and its cycles were checked)
        seen.add((node.id, excludes))
        tree.append((node, excludes))
        inner = stack + (node.id,)
        todo.extend((part, inner, excludes) for part in reversed(_nested_plans(units, node, inner)))
    out: dict[str, tuple[JobDefinition, bool]] = {}
    for field in ("setup_include", "bootstrap_include", "mandatory_include"):
        for node, _excludes in tree:
            label = _plan_label(node)
            for pattern in getattr(node, field):
                for job in _Matcher(pattern, label).select(units):
                    out.setdefault(job.id, (job, True))
    for node, excludes in tree:
        label = _plan_label(node)
        excluders = [_Matcher(p, label) for p in excludes]
        for item in node.include:
            for job in _Matcher(item.pattern, label).select(units):
                if not any(m.matches(job.id) for m in excluders):
                    out.setdefault(job.id, (job, False))
    return out


def _plan_tree(units: UnitSet, test_plan: str) -> list[TestPlan]:
    """The test plan and its nested parts, depth first in the order the parts are named, each once."""
    tree: list[TestPlan] = []
    seen: set[str] = set()

    todo: list[tuple[TestPlan, tuple[str, ...]]] = [(units.test_plan(test_plan), ())]
    while todo:  # iterative depth first walk, as in _plan_selection
        node, stack = todo.pop()
        if node.id in seen:
            continue
        seen.add(node.id)
        tree.append(node)
        inner = stack + (node.id,)
        todo.extend((part, inner) for part in reversed(_nested_plans(units, node, inner)))
    return tree


def _included(units: UnitSet, test_plan: str, field: str) -> list[str]:
    ids: dict[str, None] = {}
    for node in _plan_tree(units, test_plan):
        for pattern in getattr(node, field):
            ids.update((job.id, None) for job in _Matcher(pattern, _plan_label(node)).select(units))
    return list(ids)


def bootstrap_jobs(units: UnitSet, test_plan: str) -> list[str]:
    """Ids of the jobs the test plan (with its nested parts) bootstraps, in order."""
    return _included(units, test_plan, "bootstrap_include")


def mandatory_jobs(units: UnitSet, test_plan: str | None) -> list[str]:
    """Ids of the jobs the test plan (with its nested parts) makes mandatory, in order; none without a plan."""
    return _included(units, test_plan, "mandatory_include") if test_plan is not None else []


def _with_dependencies(units: UnitSet, chosen: list[JobDefinition]) -> list[JobDefinition]:
    """Add the transitive ``depends`` targets of ``chosen``, each before its first user."""
    by_id = units.by_id
    by_bare = _bare_index_if_needed(chosen, by_id)
    chosen_ids = {job.id for job in chosen}
    placed: set[str] = set()
    out: list[JobDefinition] = []

    def wanted(dep: str) -> bool:
        return dep not in chosen_ids and dep not in placed and dep in by_id

    for root in chosen:
        if not any(wanted(dep) for dep in _pulled(root, by_id, by_bare)):
            out.append(root)  # fast path: nothing to pull in
            continue
        # iterative depth-first walk; parallel lists keep a 100,000-deep chain cheap
        stack_jobs = [root]
        stack_next = [0]
        on_stack = {root.id}
        while stack_jobs:
            job = stack_jobs[-1]
            deps = _pulled(job, by_id, by_bare)
            k = stack_next[-1]
            while k < len(deps) and (deps[k] in on_stack or not wanted(deps[k])):
                k += 1
            if k < len(deps):
                stack_next[-1] = k + 1
                target = by_id[deps[k]]
                on_stack.add(target.id)
                stack_jobs.append(target)
                stack_next.append(0)
            else:
                stack_jobs.pop()
                stack_next.pop()
                on_stack.discard(job.id)
                placed.add(job.id)
                out.append(job)
    return out


# --------------------------------------------------------------------------- metadata

#: A job's certification status when neither it nor a test plan gives one (as in Plainbox).
DEFAULT_CERTIFICATION_STATUS = "unspecified"
#: Key of :class:`RunMetadata` in a session's ``metadata.app_blob`` (the run configuration).
APP_BLOB_KEY = "job_metadata"


def _qualified(unit_id: str, namespace: str | None) -> str:
    return unit_id if namespace is None or "::" in unit_id else f"{namespace}::{unit_id}"


@attrs.frozen
class JobMetadata:
    """A job's effective category and certification status in a run."""

    category_id: str | None = None
    certification_status: str = DEFAULT_CERTIFICATION_STATUS

    def to_json(self) -> dict[str, str | None]:
        return {"category_id": self.category_id, "certification_status": self.certification_status}


def own_metadata(job: JobDefinition) -> JobMetadata:
    """What the job unit itself says (``category_id`` gets the job's namespace if it has none)."""
    category = job.extra.get("category_id") or None
    status = job.extra.get("certification_status") or DEFAULT_CERTIFICATION_STATUS
    return JobMetadata(category and _qualified(category, namespace_of(job.id)), status)


def plan_overrides(units: UnitSet, test_plan: str) -> list[Override]:
    """Every override of the test plan and its nested parts, in the order they apply: a later one wins.

    As in Plainbox: the ``key=value`` overrides of the include fields come
    first, then ``category_overrides``, then ``certification_status_overrides``,
    each for the plan and then its nested parts (a part named twice counts
    once); they are grouped by pattern
    (written with the plan's namespace and anchored, ``^ns::pattern$``) and
    the groups are applied in the sorted order of those patterns. Category
    values get the namespace of the plan that names them if they have none.
    Raises ``KeyError`` for an unknown test plan and :class:`PlanError` for a
    bad ``nested_part``.
    """
    tree = _plan_tree(units, test_plan)
    groups: dict[str, list[Override]] = {}
    for kind in ("include_overrides", "category_overrides", "certification_status_overrides"):
        for node in tree:
            namespace = namespace_of(node.id)
            for override in getattr(node, kind):
                if override.field == "category_id":
                    override = attrs.evolve(override, value=_qualified(override.value, namespace))
                key = "^" + _qualified(override.pattern, namespace) + "$"
                groups.setdefault(key, []).append(override)
    return [override for _key, group in sorted(groups.items()) for override in group]


@attrs.frozen
class RunMetadata:
    """The effective metadata of a run's jobs, as kept in its session.

    ``jobs`` holds every job whose metadata is not the default (the planned
    ones, and those made from templates once they join the run, see
    :meth:`with_jobs`); ``overrides`` (those of :func:`plan_overrides`) give
    the metadata of any other job, which starts from the default.
    """

    jobs: dict[str, JobMetadata] = attrs.field(factory=dict)
    overrides: tuple[Override, ...] = attrs.field(default=(), converter=as_tuple)

    @classmethod
    def compute(cls, units: UnitSet, test_plan: str | None, jobs: Iterable[JobDefinition]) -> "RunMetadata":
        """Own metadata of *jobs*, then the test plan's overrides applied to them in order."""
        overrides = plan_overrides(units, test_plan) if test_plan is not None else []
        jobs = list(jobs)
        values = {job.id: own_metadata(job) for job in jobs}
        if overrides:
            selected = UnitSet(jobs=jobs)  # its indexes find the jobs a pattern matches quickly
            for override in overrides:
                for job in _Matcher(override.pattern, "override").select(selected):
                    values[job.id] = attrs.evolve(values[job.id], **{override.field: override.value})
        default = JobMetadata()
        return cls({job_id: meta for job_id, meta in values.items() if meta != default}, overrides)

    def of(self, job_id: str) -> JobMetadata:
        """The metadata of *job_id*: as computed, else the default with the overrides applied."""
        found = self.jobs.get(job_id)
        return found if found is not None else self._overridden(job_id, JobMetadata())

    def with_jobs(self, jobs: Iterable[JobDefinition]) -> "RunMetadata":
        """This, and the metadata of *jobs* joining the run (made from templates): their own, then the overrides."""
        values = dict(self.jobs)
        for job in jobs:
            meta = self._overridden(job.id, own_metadata(job))
            if meta != JobMetadata():
                values[job.id] = meta
        return RunMetadata(values, self.overrides)

    def _overridden(self, job_id: str, meta: JobMetadata) -> JobMetadata:
        for override in self.overrides:
            try:
                matches = _Matcher(override.pattern, "override").matches(job_id)
            except PlanError:
                continue
            if matches:
                meta = attrs.evolve(meta, **{override.field: override.value})
        return meta

    def to_json(self) -> dict[str, object]:
        """``{"jobs": {id: {...}}, "overrides": [...]}``; a job not listed has the default metadata."""
        return {
            "jobs": {job_id: meta.to_json() for job_id, meta in self.jobs.items()},
            "overrides": [
                {"pattern": o.pattern, "field": o.field, "value": o.value} for o in self.overrides
            ],
        }

    def to_app_blob(self, blob: str) -> str:
        """*blob* (a run configuration: base64 of a JSON object) with this metadata under :data:`APP_BLOB_KEY`."""
        data = json.loads(base64.standard_b64decode(blob))
        data[APP_BLOB_KEY] = self.to_json()
        return base64.standard_b64encode(json.dumps(data, sort_keys=True).encode()).decode()

    @classmethod
    def from_app_blob(cls, blob: str | None) -> "RunMetadata | None":
        """The metadata kept in a session's ``app_blob``; None if it has none (older or Plainbox sessions)."""
        if not blob:
            return None
        try:
            data = json.loads(base64.standard_b64decode(blob))
            return cls.from_json(data[APP_BLOB_KEY]) if isinstance(data, dict) and APP_BLOB_KEY in data else None
        except (ValueError, TypeError):  # binascii.Error and JSON errors are ValueErrors
            return None

    @classmethod
    def from_json(cls, data: object) -> "RunMetadata":
        """The inverse of :meth:`to_json`; ``ValueError`` if *data* does not have its shape."""
        try:
            jobs = {
                str(job_id): JobMetadata(meta.get("category_id"), meta.get("certification_status") or DEFAULT_CERTIFICATION_STATUS)
                for job_id, meta in data["jobs"].items()
            }
            overrides = [
                Override(str(o["pattern"]), str(o["field"]), str(o["value"])) for o in data.get("overrides", [])
            ]
        except (AttributeError, KeyError, TypeError) as exc:
            raise ValueError(f"job metadata has an unexpected shape: {exc!r}") from None
        return cls(jobs, overrides)


# --------------------------------------------------------------------------- ordering


@attrs.frozen
class Plan:
    """Jobs in a valid run order.

    ``order`` lists every job id once; each comes after all of its known
    ``depends`` and ``after`` targets. ``unknown_deps`` maps a job id to the
    ``depends`` targets that are not among the jobs; such a job will be skipped.
    ``left_out`` says, for those targets that were left out when loading, why.
    """

    order: tuple[str, ...]
    jobs: dict[str, JobDefinition] = attrs.field(hash=False)
    unknown_deps: dict[str, tuple[str, ...]] = attrs.field(factory=dict, hash=False)
    left_out: dict[str, str] = attrs.field(factory=dict, hash=False)

    def __len__(self) -> int:
        return len(self.order)


def _predecessors(
    job: JobDefinition,
    known: Mapping[str, object],
    by_bare: Mapping[str, Sequence[str]] | None = None,
    before_of: Mapping[str, Sequence[str]] | None = None,
) -> list[str]:
    """Known ``depends``, ``after`` and required resource targets of a job, and the jobs that must
    run ``before`` it (*before_of*, from :func:`_before_index`), without repeats."""
    depends, after = job.depends, job.after
    earlier = before_of.get(job.id, ()) if before_of else ()
    if not after and len(depends) <= 1 and not job.requires and not earlier and not job.salvages:  # kept cheap
        return [depends[0]] if depends and depends[0] in known else []
    extra = tuple(resource_jobs(job, known, by_bare)) if job.requires else ()
    return [dep for dep in dict.fromkeys(depends + after + extra + job.salvages + tuple(earlier)) if dep in known]


def _before_index(jobs: Iterable[JobDefinition], known: Mapping[str, object]) -> dict[str, list[str]]:
    """For each known job that others must run ``before``, those others (in the order given)."""
    index: dict[str, list[str]] = {}
    for job in jobs:
        for target in job.before:
            if target in known and target != job.id:
                index.setdefault(target, []).append(job.id)
    return index


def _place(job: JobDefinition) -> str:
    """``id (file:line)``, or the id alone for a job without origin."""
    return f"{job.id} ({job.origin})" if job.origin else job.id


def build_plan(jobs: Sequence[JobDefinition], left_out: Mapping[str, str] | None = None) -> Plan:
    """Order jobs so that every ``depends``/``after``/resource target runs first (and every job runs
    before its ``before`` targets), as Checkbox orders them.

    Checkbox's dependency solver walks the jobs in their listed order, depth
    first: a job comes right after its targets (its ``depends``, then the
    resource jobs of its ``requires``, then its ``after`` targets, each placed
    the same way), unless they are placed already. So a list without relations
    keeps its order, and a target listed later moves up to just before the
    first job that needs it. Iterative, O(N + E).

    *left_out* (:attr:`UnitSet.dropped`) says why jobs that could not be loaded
    are missing; jobs depending on them are skipped saying so.

    Raises :class:`PlanError` for duplicate ids and for a cycle, naming one
    cycle with the place of each job, as ``dependency cycle: a (f.pxu:1) -> b
    (f.pxu:4) -> a (f.pxu:1)`` (``a -> b``: a runs after b).
    """
    index: dict[str, int] = {}
    for position, job in enumerate(jobs):
        if index.setdefault(job.id, position) != position:
            raise PlanError(f"job id {job.id!r} is listed twice")
    count = len(jobs)
    unknown: dict[str, tuple[str, ...]] = {}
    by_bare = _bare_index_if_needed(jobs, index)
    before_of = _before_index(jobs, index)
    for job in jobs:
        for dep in job.depends:
            if dep not in index:
                unknown[job.id] = tuple(dict.fromkeys(d for d in job.depends if d not in index))
                break
    groups = _group_members(jobs)
    group_of = {position: name for name, members in groups.items() for position in members}
    WHITE, GRAY, BLACK = 0, 1, 2
    color = [WHITE] * count

    def preds(position: int) -> Iterator[int]:
        job = jobs[position]
        own = [index[d] for d in _predecessors(job, index, by_bare, before_of)]
        name = group_of.get(position)
        if name is None:
            return iter(own)
        # As Checkbox orders a group: whatever any member needs from outside comes before the first member.
        inside = set(groups[name])
        outside = [
            index[d] for m in groups[name] for d in _predecessors(jobs[m], index, by_bare, before_of)
            if index[d] not in inside
        ]  # fmt: skip
        return iter(dict.fromkeys(own + outside))

    order: list[str] = []
    for root in range(count):
        if color[root] != WHITE:
            continue
        job = jobs[root]
        if (
            not job.depends and not job.after and not job.requires and not job.salvages
            and job.id not in before_of and root not in group_of
        ):  # fmt: skip
            color[root] = BLACK  # the common case, kept cheap for big plans
            order.append(job.id)
            continue
        # parallel stacks: the job, and its predecessors still to visit
        stack = [root]
        pending = [preds(root)]
        color[root] = GRAY
        while stack:
            for pred in pending[-1]:
                if color[pred] == WHITE:
                    color[pred] = GRAY
                    stack.append(pred)
                    pending.append(preds(pred))
                    break
                if color[pred] == GRAY:
                    cycle = stack[stack.index(pred):] + [pred]
                    raise PlanError("dependency cycle: " + " -> ".join(_place(jobs[p]) for p in cycle))
            else:
                done = stack.pop()
                pending.pop()
                color[done] = BLACK
                order.append(jobs[done].id)
                name = group_of.get(done)
                if name is not None:  # the rest of its group comes next, one member at a time
                    rest = next((m for m in groups[name] if color[m] == WHITE), None)
                    if rest is not None:
                        color[rest] = GRAY
                        stack.append(rest)
                        pending.append(preds(rest))
    left = {job_id: left_out[job_id] for deps in unknown.values() for job_id in deps if left_out and job_id in left_out}
    return Plan(order=tuple(order), jobs={job.id: job for job in jobs}, unknown_deps=unknown, left_out=left)


def _group_members(jobs: Sequence[JobDefinition]) -> dict[str, list[int]]:
    """Positions of the jobs of each ``group`` that has two or more jobs of the run, in the order given."""
    groups: dict[str, list[int]] = {}
    for position, job in enumerate(jobs):
        name = job.extra.get("group") if job.extra else None
        if name:
            groups.setdefault(name, []).append(position)
    return {name: members for name, members in groups.items() if len(members) > 1}


# --------------------------------------------------------------------------- scheduling


@attrs.frozen
class Decision:
    """What to do with one job now.

    ``action`` is ``"run"`` (start it, then call :meth:`Scheduler.finish`) or
    ``"skip"`` (record ``outcome`` and ``skip_reason``; the scheduler already
    counts it as finished).
    """

    job_id: str
    action: str
    outcome: str | None = None
    skip_reason: str | None = None


class Scheduler:
    """Hands out the jobs of a :class:`Plan` as soon as they may start.

    A job may start when all its known ``depends`` and ``after`` targets have
    finished. If one of its ``depends`` targets did not pass (including being
    skipped) or is unknown, it is handed out as a ``skip`` decision instead.
    At most ``max_running`` jobs are handed out to run and not yet finished;
    skip decisions need no slot and come first. Among jobs that may start, the
    earliest in ``plan.order`` goes first, so with ``max_running=1`` and every
    job passing, the jobs come in exactly ``plan.order``.

    ``finished`` gives outcomes of jobs already done (resuming a session): they
    are not handed out again and count for their dependents. Ids not in the
    plan are ignored.

    Typical loop::

        sched = Scheduler(plan, finished=previous, max_running=jobs)
        while not sched.done():
            decision = sched.next_decision()
            if decision is None:
                job_id, outcome = wait_for_a_running_job()
                sched.finish(job_id, outcome)
            elif decision.action == "skip":
                record(decision)
            else:
                start(decision.job_id)

    Each job costs O(log N) plus its relations, overall O(N log N + E).
    """

    def __init__(
        self,
        plan: Plan,
        finished: Mapping[str, str] | None = None,
        max_running: int = 1,
    ) -> None:
        if max_running < 1:
            raise ValueError("max_running must be at least 1")
        self.plan = plan
        self.max_running = max_running
        order = plan.order
        self._ids = list(order)
        position = {job_id: i for i, job_id in enumerate(order)}
        self._position = position
        count = len(order)
        finished = finished or {}
        self._outcomes: dict[str, str] = {
            job_id: outcome for job_id, outcome in finished.items() if job_id in position
        }
        self._outcomes_view = MappingProxyType(self._outcomes)
        self._waiting = [0] * count
        # dependents as linked lists in flat int arrays, as in build_plan
        self._first_edge = [-1] * count
        self._next_edge: list[int] = []
        self._edge_target: list[int] = []
        self._running: set[str] = set()
        # heaps of (rank, position[, reason]): the rank orders them (see extend), the position names the job
        self._rank = list(range(count))
        self._ready_run: list[tuple[int, int]] = []
        self._ready_skip: list[tuple[int, int, str]] = []
        self._left = 0
        outcomes = self._outcomes
        waiting = self._waiting
        first_edge, next_edge, edge_target = self._first_edge, self._next_edge, self._edge_target
        jobs = plan.jobs
        by_bare = _bare_index_if_needed(jobs.values(), position)
        before_of = _before_index(jobs.values(), position)
        for i, job_id in enumerate(order):
            if job_id in outcomes:
                continue
            self._left += 1
            job = jobs[job_id]
            if not job.depends and not job.after and not job.requires and not job.salvages and job_id not in before_of:
                continue
            for pred in _predecessors(job, position, by_bare, before_of):
                if pred not in outcomes:
                    waiting[i] += 1
                    p = position[pred]
                    next_edge.append(first_edge[p])
                    first_edge[p] = len(edge_target)
                    edge_target.append(i)
        for i, job_id in enumerate(order):
            if not waiting[i] and job_id not in outcomes:
                self._make_ready(i)

    def extend(self, jobs: Sequence[JobDefinition], order: Sequence[str] | None = None) -> None:
        """Add jobs to a running schedule (jobs instantiated from templates).

        Ids already planned are ignored. The new jobs are ordered among
        themselves by :func:`build_plan` (a cycle raises :class:`PlanError` and
        adds nothing) and wait for their known predecessors that have not
        finished yet; ``plan.jobs`` and ``plan.unknown_deps`` are updated.

        *order* (the run's whole order with the new jobs placed, as Checkbox
        places them after bootstrapping) decides which ready job goes first
        from now on; jobs it does not list go before those it lists, in the
        order they had. Without it the new jobs come after the planned ones.
        """
        new = [job for job in dict((job.id, job) for job in jobs).values() if job.id not in self._position]
        if not new:
            return
        ordered = build_plan(new)
        jobs_by_id = self.plan.jobs
        position = self._position
        start = len(self._ids)
        for job_id in ordered.order:
            position[job_id] = len(self._ids)
            self._ids.append(job_id)
            jobs_by_id[job_id] = ordered.jobs[job_id]
            self._waiting.append(0)
            self._first_edge.append(-1)
            self._rank.append(len(self._rank))
        self._left += len(ordered.order)
        by_bare = _bare_index_if_needed(new, position)
        before_of = _before_index(new, {job.id: None for job in new})  # jobs already planned may have started
        for i in range(start, len(self._ids)):
            job = jobs_by_id[self._ids[i]]
            missing = tuple(dict.fromkeys(d for d in job.depends if d not in position))
            if missing:
                self.plan.unknown_deps[job.id] = missing
            for pred in _predecessors(job, position, by_bare, before_of):
                if pred not in self._outcomes:
                    self._waiting[i] += 1
                    p = position[pred]
                    self._next_edge.append(self._first_edge[p])
                    self._first_edge[p] = len(self._edge_target)
                    self._edge_target.append(i)
        # ``before`` targets planned earlier that have not started wait for the new job too (as when
        # Checkbox bootstraps first): a target already handed over to the ready heaps stays there,
        # and is passed over while it waits (see next_decision)
        for i in range(start, len(self._ids)):
            for target in jobs_by_id[self._ids[i]].before:
                t = position.get(target)
                if t is None or t >= start or target in self._outcomes or target in self._running:
                    continue
                self._waiting[t] += 1
                self._next_edge.append(self._first_edge[i])
                self._first_edge[i] = len(self._edge_target)
                self._edge_target.append(t)
        if order is not None:
            self._rerank(order)
        for i in range(start, len(self._ids)):
            if not self._waiting[i]:
                self._make_ready(i)

    def _rerank(self, order: Sequence[str]) -> None:
        """Rank the jobs by *order* (those it lacks first, as they were) and reorder the ready heaps."""
        placed = {job_id: k for k, job_id in enumerate(order)}
        first = -len(self._ids)
        self._rank = [placed.get(job_id, first + i) for i, job_id in enumerate(self._ids)]
        rank = self._rank
        self._ready_run = [(rank[i], i) for _old, i in self._ready_run]
        self._ready_skip = [(rank[i], i, reason) for _old, i, reason in self._ready_skip]
        heapq.heapify(self._ready_run)
        heapq.heapify(self._ready_skip)

    @property
    def order(self) -> tuple[str, ...]:
        """Every job id of the schedule: the plan's order, then jobs added by :meth:`extend`."""
        return tuple(self._ids)

    @property
    def run_order(self) -> tuple[str, ...]:
        """Every job id in the order the schedule prefers them (:attr:`order` unless :meth:`extend` placed jobs)."""
        return tuple(job_id for _rank, job_id in sorted(zip(self._rank, self._ids)))

    def _make_ready(self, i: int) -> None:
        job_id = self._ids[i]
        if job_id in self.plan.unknown_deps:
            missing = self.plan.unknown_deps[job_id][0]
            why = self.plan.left_out.get(missing)
            reason = f"dependency {missing} could not be loaded ({why})" if why else f"unknown dependency {missing}"
            heapq.heappush(self._ready_skip, (self._rank[i], i, reason))
            return
        job = self.plan.jobs[job_id]
        failed = [
            f"{dep} (outcome {outcome})"
            for dep in dict.fromkeys(job.depends)
            if (outcome := self._outcomes.get(dep)) not in PASS_OUTCOMES
        ]
        if len(failed) == 1:
            dep, outcome = failed[0].split(" (", 1)
            heapq.heappush(self._ready_skip, (self._rank[i], i, f"dependency {dep} did not pass ({outcome}"))
            return
        if failed:
            heapq.heappush(self._ready_skip, (self._rank[i], i, f"dependencies did not pass: {', '.join(failed)}"))
            return
        for dep in job.salvages:
            outcome = self._outcomes.get(dep)
            if outcome != SALVAGED_OUTCOME:
                why = f"outcome {outcome}" if dep in self._position else "not part of the run"
                heapq.heappush(self._ready_skip, (self._rank[i], i, f"salvages {dep}, which did not fail ({why})"))
                return
        heapq.heappush(self._ready_run, (self._rank[i], i))

    def _record(self, job_id: str, outcome: str) -> None:
        self._outcomes[job_id] = outcome
        self._left -= 1
        waiting, next_edge, edge_target = self._waiting, self._next_edge, self._edge_target
        edge = self._first_edge[self._position[job_id]]
        while edge >= 0:
            child = edge_target[edge]
            waiting[child] -= 1
            if not waiting[child]:
                self._make_ready(child)
            edge = next_edge[edge]

    def next_decision(self) -> Decision | None:
        """The next job to skip or start, or None if none may start now.

        None means: wait for a running job to finish (or, if :meth:`done`,
        that everything is finished).
        """
        # Entries made stale by a job added since (extend: made to wait again), or earlier copies, go first.
        skips, runs, ids = self._ready_skip, self._ready_run, self._ids
        while skips and (self._waiting[skips[0][1]] or ids[skips[0][1]] in self._outcomes):
            heapq.heappop(skips)
        while runs and (
            self._waiting[runs[0][1]] or ids[runs[0][1]] in self._outcomes or ids[runs[0][1]] in self._running
        ):
            heapq.heappop(runs)
        # Skips need no slot. One job at a time, they come in plan order with the runs (as in Checkbox): a
        # skip waits for the jobs before it to finish.
        skip_first = False
        if skips:
            first = skips[0][0]
            skip_first = self.max_running > 1 or (
                (not runs or first < runs[0][0])
                and not any(self._rank[self._position[job]] < first for job in self._running)
            )
        if skip_first:
            _rank, i, reason = heapq.heappop(skips)
            job_id = ids[i]
            self._record(job_id, SKIPPED_DEPENDENCY)
            return Decision(job_id, "skip", SKIPPED_DEPENDENCY, reason)
        if runs and len(self._running) < self.max_running:
            job_id = ids[heapq.heappop(runs)[1]]
            self._running.add(job_id)
            return Decision(job_id, "run")
        return None

    def finish(self, job_id: str, outcome: str) -> None:
        """Report that a job handed out to run has finished with ``outcome``."""
        if job_id not in self._running:
            raise ValueError(f"job {job_id!r} is not running")
        self._running.remove(job_id)
        self._record(job_id, outcome)

    def done(self) -> bool:
        """True when every job of the plan has an outcome."""
        return self._left == 0

    @property
    def running(self) -> frozenset[str]:
        """Jobs handed out to run and not finished yet."""
        return frozenset(self._running)

    @property
    def remaining(self) -> int:
        """Number of jobs without an outcome (running ones included)."""
        return self._left

    @property
    def outcomes(self) -> Mapping[str, str]:
        """Read-only view of the outcome of every finished job (given and reported)."""
        return self._outcomes_view
