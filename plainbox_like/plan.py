"""Which jobs to run, in what order, and which may start now.

Two relations between jobs come from their definitions:

* ``depends: X`` -- X must run first *and pass*; otherwise this job is skipped
  (outcome ``skipped-dependency``). Selecting a job pulls in its ``depends``
  targets, transitively.
* ``after: X`` -- if X is part of the run, it must finish first (any
  outcome). ``after`` never pulls X in and never causes a skip.
* ``requires: X.field == "v"`` -- X is a resource job: selecting this job
  pulls X in and X must finish first; whether the expression holds is decided
  when the job is about to run (see :mod:`plainbox_like.resource`).

:func:`select_jobs` picks jobs, :func:`build_plan` orders them (this order is
what a dry run shows), and :class:`Scheduler` hands them out one at a time,
several in flight with ``-j N``.
"""

from __future__ import annotations

import functools
import heapq
import re
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType

import attrs

from plainbox_like.errors import PlanError
from plainbox_like.resource import RequirementProgram, ResourceExpressionError, namespace_of, resolve_resource
from plainbox_like.units import JobDefinition, TestPlan, UnitSet

__all__ = [
    "PASS_OUTCOMES",
    "PERSON_PLUGINS",
    "SKIPPED_DEPENDENCY",
    "Decision",
    "Plan",
    "Scheduler",
    "build_plan",
    "needs_person",
    "select_jobs",
]

#: Outcomes that satisfy a ``depends`` relation.
PASS_OUTCOMES = frozenset({"pass"})
#: Outcome of a job skipped because a ``depends`` target did not pass or is unknown.
SKIPPED_DEPENDENCY = "skipped-dependency"
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


def resource_jobs(job: JobDefinition, known: Mapping[str, object]) -> list[str]:
    """Ids among *known* of the resource jobs the job's ``requires:`` names (implicit ordering)."""
    program, _error = requirement_program(job)
    if program is None:
        return []
    namespace = namespace_of(job.id)
    found = (resolve_resource(name, known, namespace) for name in program.resources)
    return [job_id for job_id in dict.fromkeys(found) if job_id is not None and job_id != job.id]


def _pulled(job: JobDefinition, known: Mapping[str, object]) -> tuple[str, ...]:
    """What selecting *job* pulls in: its ``depends`` and the resource jobs it requires."""
    if not job.requires:
        return job.depends
    return tuple(dict.fromkeys(job.depends + tuple(resource_jobs(job, known))))


def needs_person(job: JobDefinition) -> bool:
    """Whether the job needs someone to interact with it; a batch runner skips such jobs."""
    return job.plugin in PERSON_PLUGINS


# --------------------------------------------------------------------------- selection


class _Matcher:
    """Full-match (``^(?:pattern)$``) a pattern against job ids, fast for literal ids."""

    def __init__(self, pattern: str, what: str) -> None:
        self.pattern = pattern
        self.literal = not (_REGEX_SPECIAL & set(pattern))
        try:
            self.regex = re.compile(pattern)
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
        for job in units.jobs:
            if matches(job.id):
                yield job


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
            known = ", ".join(sorted(p.id for p in units.test_plans)) or "none"
            message = f"unknown test plan {test_plan!r} (known test plans: {known})"
            raise PlanError(message) from None
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


def _nested_plans(units: UnitSet, plan: TestPlan, stack: tuple[str, ...]) -> list[TestPlan]:
    """The test plans *plan*'s ``nested_part`` names (ids or patterns over test plan ids), in order."""
    found: dict[str, TestPlan] = {}
    for pattern in plan.nested_part:
        matcher = _Matcher(pattern, _plan_label(plan) + " nested_part")
        matches = [p for p in units.test_plans if matcher.matches(p.id)]
        if not matches:
            known = ", ".join(sorted(p.id for p in units.test_plans)) or "none"
            raise PlanError(f"{_plan_label(plan)}: nested_part {pattern!r} names no test plan (known: {known})")
        for part in matches:
            if part.id in stack:
                cycle = stack[stack.index(part.id) :] + (part.id,)
                raise PlanError("test plan cycle through nested_part: " + " -> ".join(cycle))
            found.setdefault(part.id, part)
    return list(found.values())


def _plan_selection(units: UnitSet, plan: TestPlan) -> dict[str, tuple[JobDefinition, bool]]:
    """The jobs a test plan selects, its nested parts included, with whether each is protected.

    Order: the bootstrap jobs of the plan and of its nested parts (depth first, in the order
    the parts are named), then their mandatory jobs, then their included jobs. A plan's
    ``exclude`` patterns apply to its own ``include`` patterns and to those of its nested
    parts; bootstrap and mandatory jobs are never excluded.
    """
    tree: list[tuple[TestPlan, tuple[str, ...]]] = []  # (plan, excludes that apply to it)

    def walk(node: TestPlan, stack: tuple[str, ...], excludes: tuple[str, ...]) -> None:
        excludes = excludes + node.exclude
        tree.append((node, excludes))
        for part in _nested_plans(units, node, stack + (node.id,)):
            walk(part, stack + (node.id,), excludes)

    walk(plan, (), ())
    out: dict[str, tuple[JobDefinition, bool]] = {}
    for field in ("bootstrap_include", "mandatory_include"):
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


def bootstrap_jobs(units: UnitSet, test_plan: str) -> list[str]:
    """Ids of the jobs the test plan (with its nested parts) bootstraps, in order."""
    ids: dict[str, None] = {}

    def walk(node: TestPlan, stack: tuple[str, ...]) -> None:
        for pattern in node.bootstrap_include:
            ids.update((job.id, None) for job in _Matcher(pattern, _plan_label(node)).select(units))
        for part in _nested_plans(units, node, stack + (node.id,)):
            walk(part, stack + (node.id,))

    walk(units.test_plan(test_plan), ())
    return list(ids)


def _with_dependencies(units: UnitSet, chosen: list[JobDefinition]) -> list[JobDefinition]:
    """Add the transitive ``depends`` targets of ``chosen``, each before its first user."""
    by_id = units.by_id
    chosen_ids = {job.id for job in chosen}
    placed: set[str] = set()
    out: list[JobDefinition] = []

    def wanted(dep: str) -> bool:
        return dep not in chosen_ids and dep not in placed and dep in by_id

    for root in chosen:
        if not any(wanted(dep) for dep in _pulled(root, by_id)):
            out.append(root)  # fast path: nothing to pull in
            continue
        # iterative depth-first walk; parallel lists keep a 100,000-deep chain cheap
        stack_jobs = [root]
        stack_next = [0]
        on_stack = {root.id}
        while stack_jobs:
            job = stack_jobs[-1]
            deps = _pulled(job, by_id)
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


# --------------------------------------------------------------------------- ordering


@attrs.frozen
class Plan:
    """Jobs in a valid run order.

    ``order`` lists every job id once; each comes after all of its known
    ``depends`` and ``after`` targets. ``unknown_deps`` maps a job id to the
    ``depends`` targets that are not among the jobs; such a job will be skipped.
    """

    order: tuple[str, ...]
    jobs: dict[str, JobDefinition] = attrs.field(hash=False)
    unknown_deps: dict[str, tuple[str, ...]] = attrs.field(factory=dict, hash=False)

    def __len__(self) -> int:
        return len(self.order)


def _predecessors(job: JobDefinition, known: Mapping[str, object]) -> list[str]:
    """Known ``depends``, ``after`` and required resource targets of a job, without repeats."""
    depends, after = job.depends, job.after
    if not after and len(depends) <= 1 and not job.requires:  # the common cases, kept cheap for big plans
        return [depends[0]] if depends and depends[0] in known else []
    extra = tuple(resource_jobs(job, known)) if job.requires else ()
    return [dep for dep in dict.fromkeys(depends + after + extra) if dep in known]


def build_plan(jobs: Sequence[JobDefinition]) -> Plan:
    """Order jobs so that every ``depends``/``after`` target runs first.

    The order is stable: among the jobs that could come next, the one earliest
    in ``jobs`` is taken (Kahn's algorithm with a heap, O(N log N + E)). So a
    list without relations keeps its order.

    Raises :class:`PlanError` for duplicate ids and for a cycle, naming one
    cycle as ``dependency cycle: a -> b -> a`` (``a -> b``: a runs after b).
    """
    index: dict[str, int] = {}
    for position, job in enumerate(jobs):
        if index.setdefault(job.id, position) != position:
            raise PlanError(f"job id {job.id!r} is listed twice")
    count = len(jobs)
    waiting = [0] * count
    # dependents as linked lists in flat int arrays (few container objects for 100,000 jobs)
    first_edge = [-1] * count
    next_edge: list[int] = []
    edge_target: list[int] = []
    unknown: dict[str, tuple[str, ...]] = {}
    for position, job in enumerate(jobs):
        if not job.depends and not job.after and not job.requires:
            continue
        for dep in _predecessors(job, index):
            pred = index[dep]
            next_edge.append(first_edge[pred])
            first_edge[pred] = len(edge_target)
            edge_target.append(position)
            waiting[position] += 1
        for dep in job.depends:
            if dep not in index:
                unknown[job.id] = tuple(dict.fromkeys(d for d in job.depends if d not in index))
                break

    ready = [position for position in range(count) if not waiting[position]]  # sorted: a heap
    order: list[str] = []
    pop, push = heapq.heappop, heapq.heappush
    while ready:
        position = pop(ready)
        order.append(jobs[position].id)
        edge = first_edge[position]
        while edge >= 0:
            child = edge_target[edge]
            waiting[child] -= 1
            if not waiting[child]:
                push(ready, child)
            edge = next_edge[edge]
    if len(order) < count:
        raise PlanError("dependency cycle: " + " -> ".join(_find_cycle(jobs, index, waiting)))
    return Plan(order=tuple(order), jobs={job.id: job for job in jobs}, unknown_deps=unknown)


def _find_cycle(
    jobs: Sequence[JobDefinition], index: Mapping[str, int], waiting: list[int]
) -> list[str]:
    """One cycle among the jobs Kahn's algorithm could not place.

    Every such job still waits for some other such job, so following the first
    waiting predecessor from the earliest stuck job must revisit a job.
    """
    node = min(position for position, left in enumerate(waiting) if left > 0)
    path: list[int] = []
    seen: dict[int, int] = {}
    while node not in seen:
        seen[node] = len(path)
        path.append(node)
        node = next(
            index[dep] for dep in _predecessors(jobs[node], index) if waiting[index[dep]] > 0
        )
    cycle = path[seen[node] :] + [node]
    return [jobs[position].id for position in cycle]


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
        self._ready_run: list[int] = []
        self._ready_skip: list[tuple[int, str]] = []
        self._left = 0
        outcomes = self._outcomes
        waiting = self._waiting
        first_edge, next_edge, edge_target = self._first_edge, self._next_edge, self._edge_target
        jobs = plan.jobs
        for i, job_id in enumerate(order):
            if job_id in outcomes:
                continue
            self._left += 1
            job = jobs[job_id]
            if not job.depends and not job.after and not job.requires:
                continue
            for pred in _predecessors(job, position):
                if pred not in outcomes:
                    waiting[i] += 1
                    p = position[pred]
                    next_edge.append(first_edge[p])
                    first_edge[p] = len(edge_target)
                    edge_target.append(i)
        for i, job_id in enumerate(order):
            if not waiting[i] and job_id not in outcomes:
                self._make_ready(i)

    def extend(self, jobs: Sequence[JobDefinition]) -> None:
        """Add jobs to a running schedule (jobs instantiated from templates).

        Ids already planned are ignored. The new jobs are ordered among
        themselves by :func:`build_plan` (a cycle raises :class:`PlanError` and
        adds nothing) and wait for their known predecessors that have not
        finished yet; ``plan.jobs`` and ``plan.unknown_deps`` are updated.
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
        self._left += len(ordered.order)
        for i in range(start, len(self._ids)):
            job = jobs_by_id[self._ids[i]]
            missing = tuple(dict.fromkeys(d for d in job.depends if d not in position))
            if missing:
                self.plan.unknown_deps[job.id] = missing
            for pred in _predecessors(job, position):
                if pred not in self._outcomes:
                    self._waiting[i] += 1
                    p = position[pred]
                    self._next_edge.append(self._first_edge[p])
                    self._first_edge[p] = len(self._edge_target)
                    self._edge_target.append(i)
        for i in range(start, len(self._ids)):
            if not self._waiting[i]:
                self._make_ready(i)

    @property
    def order(self) -> tuple[str, ...]:
        """Every job id of the schedule: the plan's order, then jobs added by :meth:`extend`."""
        return tuple(self._ids)

    def _make_ready(self, i: int) -> None:
        job_id = self._ids[i]
        if job_id in self.plan.unknown_deps:
            missing = self.plan.unknown_deps[job_id][0]
            heapq.heappush(self._ready_skip, (i, f"unknown dependency {missing}"))
            return
        for dep in self.plan.jobs[job_id].depends:
            outcome = self._outcomes.get(dep)
            if outcome not in PASS_OUTCOMES:
                reason = f"dependency {dep} did not pass (outcome {outcome})"
                heapq.heappush(self._ready_skip, (i, reason))
                return
        heapq.heappush(self._ready_run, i)

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
        if self._ready_skip:
            i, reason = heapq.heappop(self._ready_skip)
            job_id = self._ids[i]
            self._record(job_id, SKIPPED_DEPENDENCY)
            return Decision(job_id, "skip", SKIPPED_DEPENDENCY, reason)
        if self._ready_run and len(self._running) < self.max_running:
            job_id = self._ids[heapq.heappop(self._ready_run)]
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
