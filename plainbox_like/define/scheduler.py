"""Which planned job may start now: the :class:`Scheduler` of a run, serial or with ``-j N``.

It hands out the jobs of a :class:`plainbox_like.define.plan.Plan` as their ``depends``/``after``
targets finish, and turns a failed or unknown dependency into a skip decision.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Mapping, Sequence

import attrs

from plainbox_like.define.plan import (
    PASS_OUTCOMES,
    SALVAGED_OUTCOME,
    SKIPPED_DEPENDENCY,
    Plan,
    bare_index_if_needed,
    before_index,
    build_plan,
    predecessors,
)
from plainbox_like.define.units import JobDefinition

__all__ = ["Decision", "Scheduler"]


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


class Outcomes(Mapping[str, str]):
    """The outcome of every finished job of a schedule, kept by position: a list beside the positions the
    schedule has anyway, not a dict of its own (100,000 jobs: about 3 MB less)."""

    def __init__(self, ids: list[str], position: dict[str, int], by_position: list[str | None]) -> None:
        self._ids, self._position, self._by_position = ids, position, by_position

    def __getitem__(self, job_id: str) -> str:
        outcome = self.get(job_id)
        if outcome is None:
            raise KeyError(job_id)
        return outcome

    def get(self, job_id: str, default: str | None = None) -> str | None:  # type: ignore[override]
        i = self._position.get(job_id)
        outcome = None if i is None else self._by_position[i]
        return default if outcome is None else outcome

    def __contains__(self, job_id: object) -> bool:
        i = self._position.get(job_id)  # type: ignore[call-overload]
        return i is not None and self._by_position[i] is not None

    def __iter__(self) -> Iterator[str]:
        return (job_id for job_id, outcome in zip(self._ids, self._by_position) if outcome is not None)

    def __len__(self) -> int:
        return len(self._by_position) - self._by_position.count(None)


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
        numbers = list(range(len(order)))
        position = dict(zip(order, numbers))
        self._position = position
        count = len(order)
        finished = finished or {}
        self._outcome_at: list[str | None] = [None] * count
        for job_id, outcome in finished.items():
            i = position.get(job_id)
            if i is not None:
                self._outcome_at[i] = outcome
        self._outcomes = Outcomes(self._ids, position, self._outcome_at)
        self._waiting = [0] * count
        # dependents as linked lists in flat int arrays, as in build_plan
        self._first_edge = [-1] * count
        self._next_edge: list[int] = []
        self._edge_target: list[int] = []
        self._running: set[str] = set()
        # heaps of (rank, position[, reason]): the rank orders them (see extend), the position names the job
        self._rank = numbers  # the same int objects as the positions: 28 bytes less a job (100,000: 2.8 MB)
        self._ready_run: list[tuple[int, int]] = []
        self._ready_skip: list[tuple[int, int, str]] = []
        self._left = 0
        outcomes, outcome_at = self._outcomes, self._outcome_at
        waiting = self._waiting
        first_edge, next_edge, edge_target = self._first_edge, self._next_edge, self._edge_target
        jobs = plan.jobs
        by_bare = bare_index_if_needed(jobs.values(), position)
        before_of = before_index(jobs.values(), position)
        for i, job_id in enumerate(order):
            if outcome_at[i] is not None:
                continue
            self._left += 1
            job = jobs[job_id]
            if not job.depends and not job.after and not job.requires and not job.salvages and job_id not in before_of:
                continue
            for pred in predecessors(job, position, by_bare, before_of):
                if pred not in outcomes:
                    waiting[i] += 1
                    p = position[pred]
                    next_edge.append(first_edge[p])
                    first_edge[p] = len(edge_target)
                    edge_target.append(i)
        for i, job_id in enumerate(order):
            if not waiting[i] and outcome_at[i] is None:
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
            self._outcome_at.append(None)
            self._rank.append(len(self._rank))
        self._left += len(ordered.order)
        by_bare = bare_index_if_needed(new, position)
        before_of = before_index(new, {job.id: None for job in new})  # jobs already planned may have started
        for i in range(start, len(self._ids)):
            job = jobs_by_id[self._ids[i]]
            missing = tuple(dict.fromkeys(d for d in job.depends if d not in position))
            if missing:
                self.plan.unknown_deps[job.id] = missing
            for pred in predecessors(job, position, by_bare, before_of):
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
        i = self._position[job_id]
        self._outcome_at[i] = outcome
        self._left -= 1
        waiting, next_edge, edge_target = self._waiting, self._next_edge, self._edge_target
        edge = self._first_edge[i]
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
        outcome_at = self._outcome_at
        while skips and (self._waiting[skips[0][1]] or outcome_at[skips[0][1]] is not None):
            heapq.heappop(skips)
        while runs and (
            self._waiting[runs[0][1]] or outcome_at[runs[0][1]] is not None or ids[runs[0][1]] in self._running
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
        return self._outcomes
