"""Relations between jobs, and the order a run takes: :class:`Plan` and :func:`build_plan`.

Two relations between jobs come from their definitions:

* ``depends: X`` -- X must run first *and pass*; otherwise this job is skipped
  (outcome ``skipped-dependency``). Selecting a job pulls in its ``depends``
  targets, transitively.
* ``after: X`` -- if X is part of the run, it must finish first (any
  outcome). ``after`` never pulls X in and never causes a skip.
* ``requires: X.field == "v"`` -- X is a resource job: selecting this job
  pulls X in and X must finish first; whether the expression holds is decided
  when the job is about to run (see :mod:`plainbox_like.define.resource`).

:func:`plainbox_like.define.selection.select_jobs` picks jobs, :func:`build_plan` orders them
(this order is what a dry run shows), and :class:`plainbox_like.define.scheduler.Scheduler` hands
them out one at a time, several in flight with ``-j N``. What a test plan says about its jobs
besides selecting them is in :mod:`plainbox_like.define.metadata`. The relation helpers here are
shared by all three, so each reads ``depends``/``after``/``requires`` the same way.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Mapping, Sequence

import attrs

from plainbox_like.errors import PlanError
from plainbox_like.define.resource import (
    RequirementProgram,
    ResourceExpressionError,
    bare_name_index,
    namespace_of,
    resolve_resource,
)
from plainbox_like.define.units import JobDefinition

__all__ = [
    "PASS_OUTCOMES",
    "PERSON_PLUGINS",
    "SKIPPED_DEPENDENCY",
    "Plan",
    "build_plan",
    "needs_person",
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


def pulled_in(
    job: JobDefinition, known: Mapping[str, object], by_bare: Mapping[str, Sequence[str]] | None = None
) -> tuple[str, ...]:
    """What selecting *job* pulls in: its ``depends`` and the resource jobs it requires."""
    if not job.requires:
        return job.depends
    return tuple(dict.fromkeys(job.depends + tuple(resource_jobs(job, known, by_bare))))


def bare_index_if_needed(jobs: Iterable[JobDefinition], ids: Iterable[str]) -> dict[str, list[str]] | None:
    """:func:`bare_name_index` of *ids* when some job has ``requires`` (else nothing needs it)."""
    return bare_name_index(ids) if any(job.requires for job in jobs) else None


def needs_person(job: JobDefinition) -> bool:
    """Whether the job needs someone to interact with it; a batch runner skips such jobs."""
    return job.plugin in PERSON_PLUGINS


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


def predecessors(
    job: JobDefinition,
    known: Mapping[str, object],
    by_bare: Mapping[str, Sequence[str]] | None = None,
    before_of: Mapping[str, Sequence[str]] | None = None,
) -> list[str]:
    """Known ``depends``, ``after`` and required resource targets of a job, and the jobs that must
    run ``before`` it (*before_of*, from :func:`before_index`), without repeats."""
    depends, after = job.depends, job.after
    earlier = before_of.get(job.id, ()) if before_of else ()
    if not after and len(depends) <= 1 and not job.requires and not earlier and not job.salvages:  # kept cheap
        return [depends[0]] if depends and depends[0] in known else []
    extra = tuple(resource_jobs(job, known, by_bare)) if job.requires else ()
    return [dep for dep in dict.fromkeys(depends + after + extra + job.salvages + tuple(earlier)) if dep in known]


def before_index(jobs: Iterable[JobDefinition], known: Mapping[str, object]) -> dict[str, list[str]]:
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
    by_bare = bare_index_if_needed(jobs, index)
    before_of = before_index(jobs, index)
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
        own = [index[d] for d in predecessors(job, index, by_bare, before_of)]
        name = group_of.get(position)
        if name is None:
            return iter(own)
        # As Checkbox orders a group: whatever any member needs from outside comes before the first member.
        inside = set(groups[name])
        outside = [
            index[d] for m in groups[name] for d in predecessors(jobs[m], index, by_bare, before_of)
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
