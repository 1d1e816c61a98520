"""Which jobs a run gets: a test plan's includes (nested parts too), ``-i``/``-x`` patterns, dependencies.

:func:`select_jobs` matches patterns against whole job ids as Plainbox does and pulls in what the
chosen jobs depend on; :func:`bootstrap_jobs` and :func:`mandatory_jobs` name the jobs a test plan
runs first or always. The result feeds :func:`plainbox_like.define.plan.build_plan`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence

from plainbox_like.errors import PlanError
from plainbox_like.define.plan import bare_index_if_needed, pulled_in
from plainbox_like.define.units import JobDefinition, TestPlan, UnitSet

__all__ = ["bootstrap_jobs", "mandatory_jobs", "select_jobs"]

_REGEX_SPECIAL = frozenset(".^$*+?{}[]\\|()")


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


class Matcher:
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
    cli_include = [Matcher(p, "-i/--include") for p in include]
    cli_exclude = [Matcher(p, "-x/--exclude") for p in exclude]

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
            lambda: Matcher(pattern, _plan_label(plan) + " nested_part").select_plans(units),  # noqa: B023
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
                for job in Matcher(pattern, label).select(units):
                    out.setdefault(job.id, (job, True))
    for node, excludes in tree:
        label = _plan_label(node)
        excluders = [Matcher(p, label) for p in excludes]
        for item in node.include:
            for job in Matcher(item.pattern, label).select(units):
                if not any(m.matches(job.id) for m in excluders):
                    out.setdefault(job.id, (job, False))
    return out


def plan_tree(units: UnitSet, test_plan: str) -> list[TestPlan]:
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
    for node in plan_tree(units, test_plan):
        for pattern in getattr(node, field):
            ids.update((job.id, None) for job in Matcher(pattern, _plan_label(node)).select(units))
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
    by_bare = bare_index_if_needed(chosen, by_id)
    chosen_ids = {job.id for job in chosen}
    placed: set[str] = set()
    out: list[JobDefinition] = []

    def wanted(dep: str) -> bool:
        return dep not in chosen_ids and dep not in placed and dep in by_id

    for root in chosen:
        if not any(wanted(dep) for dep in pulled_in(root, by_id, by_bare)):
            out.append(root)  # fast path: nothing to pull in
            continue
        # iterative depth-first walk; parallel lists keep a 100,000-deep chain cheap
        stack_jobs = [root]
        stack_next = [0]
        on_stack = {root.id}
        while stack_jobs:
            job = stack_jobs[-1]
            deps = pulled_in(job, by_id, by_bare)
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
