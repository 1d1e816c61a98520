"""Tests of selection, ordering, cycles, the scheduler and run metadata (define.selection, plan, scheduler, metadata)."""

from __future__ import annotations

import base64
import json
import random
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plainbox_like.errors import PlanError
from plainbox_like.define.metadata import DEFAULT_CERTIFICATION_STATUS, JobMetadata, RunMetadata, plan_overrides
from plainbox_like.define.plan import SKIPPED_DEPENDENCY, Plan, build_plan, needs_person
from plainbox_like.define.scheduler import Decision, Scheduler
from plainbox_like.define.selection import mandatory_jobs, select_jobs
from plainbox_like.define.loading import load_units
from plainbox_like.define.units import IncludePattern, JobDefinition, Override, TestPlan, UnitSet

PROVIDER = Path(__file__).parent.parent / "data" / "units" / "provider"


def job(job_id: str, depends: str = "", after: str = "", plugin: str = "shell") -> JobDefinition:
    return JobDefinition(id=job_id, depends=depends.split(), after=after.split(), plugin=plugin)


def ids(jobs: list[JobDefinition]) -> list[str]:
    return [j.id for j in jobs]


# --------------------------------------------------------------------------- build_plan


def test_order_without_relations_is_input_order() -> None:
    jobs = [job(name) for name in "zyxabc"]
    assert build_plan(jobs).order == tuple("zyxabc")


def test_depends_and_after_both_order() -> None:
    jobs = [job("a", depends="c"), job("b", after="a"), job("c"), job("d")]
    plan = build_plan(jobs)
    # c must precede a, a must precede b; otherwise earliest in input first
    assert plan.order == ("c", "a", "b", "d")
    assert plan.unknown_deps == {}
    assert plan.jobs["a"] is jobs[0]
    assert len(plan) == 4


def test_stable_choice_among_ready_jobs() -> None:
    # e depends on nothing but comes last; it must not jump ahead of b..d
    jobs = [job("a"), job("b", depends="a"), job("c"), job("d", after="b"), job("e")]
    assert build_plan(jobs).order == ("a", "b", "c", "d", "e")
    # as Checkbox's solver does: a target listed later moves up to just before the first job needing it
    jobs = [job("a", depends="e"), job("b"), job("c"), job("d"), job("e")]
    assert build_plan(jobs).order == ("e", "a", "b", "c", "d")
    jobs = [job("a"), job("b", depends="d", after="c"), job("c", depends="e"), job("d"), job("e")]
    assert build_plan(jobs).order == ("a", "d", "e", "c", "b")


def test_unknown_depends_recorded_unknown_after_ignored() -> None:
    plan = build_plan([job("a", depends="ghost x ghost2", after="phantom"), job("x")])
    assert plan.order == ("x", "a")
    assert plan.unknown_deps == {"a": ("ghost", "ghost2")}


@pytest.mark.parametrize(
    ("jobs", "message"),
    [
        ([job("a", depends="b"), job("b", depends="c"), job("c", depends="a")],
         "dependency cycle: a -> b -> c -> a"),
        ([job("a", after="a")], "dependency cycle: a -> a"),
        ([job("x", depends="a"), job("a", after="b"), job("b", depends="a"), job("y")],
         "dependency cycle: a -> b -> a"),
        ([job("ok"), job("p", after="q"), job("q", depends="p")], "dependency cycle: p -> q -> p"),
    ],
)  # fmt: skip
def test_cycles_are_reported(jobs: list[JobDefinition], message: str) -> None:
    with pytest.raises(PlanError) as info:
        build_plan(jobs)
    assert str(info.value) == message


def test_cycle_not_through_first_stuck_job() -> None:
    jobs = [job("x", depends="a"), job("a", after="b"), job("b", depends="a")]
    with pytest.raises(PlanError, match=r"^dependency cycle: a -> b -> a$"):
        build_plan(jobs)


def test_duplicate_ids_rejected() -> None:
    with pytest.raises(PlanError, match="'a' is listed twice"):
        build_plan([job("a"), job("a")])


@st.composite
def dags(draw: st.DrawFn) -> list[JobDefinition]:
    """Random DAGs: the job of rank r may depend on / come after jobs of lower rank.

    Input order is a random permutation of the ranks, so relations point both
    forwards and backwards in the input. Some depends are unknown ids.
    """
    count = draw(st.integers(min_value=0, max_value=20))
    by_rank = draw(st.permutations(range(count)))  # by_rank[r] = input position
    relations: list[tuple[list[str], list[str]]] = [([], []) for _ in range(count)]
    for rank in range(1, count):
        lower = st.integers(min_value=0, max_value=rank - 1).map(lambda r: f"j{by_rank[r]}")
        depends, after = relations[by_rank[rank]]
        depends.extend(draw(st.lists(lower, max_size=3)))
        after.extend(draw(st.lists(lower, max_size=2)))
    ghosts = draw(st.lists(st.integers(min_value=0, max_value=max(count - 1, 0)), max_size=2))
    for position in ghosts:
        if count:
            relations[position][0].append(f"ghost{position % 2}")
    return [
        JobDefinition(id=f"j{i}", depends=depends, after=after + ["nobody"])
        for i, (depends, after) in enumerate(relations)
    ]


def _reference_order(jobs: list[JobDefinition]) -> list[str]:
    """Slow, obviously correct: Checkbox's depth-first walk, each job right after its relations."""
    by_id = {j.id: j for j in jobs}
    placed: list[str] = []

    def visit(j: JobDefinition) -> None:
        if j.id in placed:
            return
        for dep in dict.fromkeys(j.depends + j.after):
            if dep in by_id:
                visit(by_id[dep])
        placed.append(j.id)

    for j in jobs:
        visit(j)
    return placed


@given(dags())
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_topological_order_properties(jobs: list[JobDefinition]) -> None:
    plan = build_plan(jobs)
    assert sorted(plan.order) == sorted(j.id for j in jobs)
    position = {job_id: i for i, job_id in enumerate(plan.order)}
    for j in jobs:
        for dep in j.depends + j.after:
            if dep in position:
                assert position[dep] < position[j.id]
    assert list(plan.order) == _reference_order(jobs)
    assert plan.unknown_deps == {
        j.id: tuple(dict.fromkeys(d for d in j.depends if d.startswith("ghost")))
        for j in jobs
        if any(d.startswith("ghost") for d in j.depends)
    }


@given(dags(), st.data())
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_added_back_edge_is_a_cycle(jobs: list[JobDefinition], data: st.DataObject) -> None:
    if len(jobs) < 2:
        return
    order = build_plan(jobs).order
    first, last = order[0], order[-1]
    # make the first job wait for the last one: closes a cycle only if last depends on first
    changed = [
        JobDefinition(
            id=j.id, depends=j.depends, after=j.after + ((last,) if j.id == first else ())
        )
        for j in jobs
    ]
    try:
        build_plan(changed)
    except PlanError as error:
        names = str(error).removeprefix("dependency cycle: ").split(" -> ")
        assert names[0] == names[-1] and len(names) >= 2
        by_id = {j.id: j for j in changed}
        for here, there in zip(names, names[1:]):
            assert there in by_id[here].depends + by_id[here].after


# --------------------------------------------------------------------------- select_jobs


def units_of(*jobs: JobDefinition, plans: tuple[TestPlan, ...] = ()) -> UnitSet:
    return UnitSet(jobs=jobs, test_plans=plans)


def test_no_selector_selects_everything_in_file_order() -> None:
    units = units_of(job("b"), job("a", depends="b"), job("c"))
    assert ids(select_jobs(units, None, [], [])) == ["b", "a", "c"]


def test_include_is_anchored_full_match() -> None:
    units = units_of(job("disk"), job("disk/read"), job("usb/disk"), job("net"))
    assert ids(select_jobs(units, None, ["disk"], [])) == ["disk"]
    assert ids(select_jobs(units, None, ["disk.*"], [])) == ["disk", "disk/read"]
    assert ids(select_jobs(units, None, [".*disk.*"], [])) == ["disk", "disk/read", "usb/disk"]
    assert ids(select_jobs(units, None, ["net", "disk/.*"], [])) == ["net", "disk/read"]


def test_exclude_alone_filters_everything() -> None:
    units = units_of(job("a1"), job("b"), job("a2"))
    assert ids(select_jobs(units, None, [], ["a.*"])) == ["b"]
    assert ids(select_jobs(units, None, [], ["a"])) == ["a1", "b", "a2"]


def test_depends_are_pulled_in_even_if_excluded_after_is_not() -> None:
    units = units_of(
        job("setup"),
        job("base", depends="setup"),
        job("other"),
        job("t1", depends="base", after="other"),
        job("t2", depends="ghost"),
    )
    chosen = select_jobs(units, None, ["t.*"], ["base", "setup"])
    # pulled-in dependencies come just before the job that needs them
    assert ids(chosen) == ["setup", "base", "t1", "t2"]
    plan = build_plan(chosen)
    assert plan.order == ("setup", "base", "t1", "t2")
    assert plan.unknown_deps == {"t2": ("ghost",)}


def test_selected_dependency_keeps_its_own_place() -> None:
    units = units_of(job("x", depends="y"), job("y"), job("z", depends="w"), job("w"))
    assert ids(select_jobs(units, None, ["x", "y", "z"], [])) == ["x", "y", "w", "z"]


def test_dependency_cycle_in_selection_does_not_hang() -> None:
    units = units_of(job("a", depends="b"), job("b", depends="a"))
    chosen = select_jobs(units, None, ["a"], [])
    assert ids(chosen) == ["b", "a"]
    with pytest.raises(PlanError, match="cycle"):
        build_plan(chosen)


def test_test_plan_selection_from_provider() -> None:
    units = load_units([PROVIDER])
    chosen = select_jobs(units, "smoke", [], [])
    assert ids(chosen) == [
        "info/cpuinfo",  # bootstrap
        "info/environment",  # mandatory
        "storage/detect",
        "storage/read-speed",
        "storage/write-speed",
    ]
    assert build_plan(chosen).order == tuple(ids(chosen))
    everything = select_jobs(units, "full", [], [])
    assert ids(everything) == list(units.job_ids)


def test_test_plan_union_with_include_and_cli_exclude() -> None:
    plan = TestPlan(
        id="tp",
        include=(IncludePattern("a.*"), IncludePattern("b")),
        exclude=("a2",),
        mandatory_include=("m",),
        bootstrap_include=("boot",),
    )
    units = units_of(
        job("a1"), job("a2"), job("a3"), job("b"), job("c"), job("m"), job("boot"), plans=(plan,)
    )
    assert ids(select_jobs(units, "tp", [], [])) == ["boot", "m", "a1", "a3", "b"]
    # -i adds to the plan; plan excludes do not apply to -i matches
    assert ids(select_jobs(units, "tp", ["c", "a2"], [])) == ["boot", "m", "a1", "a3", "b", "c", "a2"]
    # -x removes included jobs but never bootstrap/mandatory ones
    assert ids(select_jobs(units, "tp", [], ["a1", "m", "boot"])) == ["boot", "m", "a3", "b"]


def test_unknown_test_plan_lists_known() -> None:
    units = units_of(job("a"), plans=(TestPlan(id="zeta"), TestPlan(id="alpha")))
    expected = r"^unknown test plan 'nope' \(known test plans: alpha, zeta\)$"
    with pytest.raises(PlanError, match=expected):
        select_jobs(units, "nope", [], [])
    with pytest.raises(PlanError, match=r"known test plans: none"):
        select_jobs(units_of(job("a")), "nope", [], [])


def test_invalid_regex_is_a_plan_error() -> None:
    units = units_of(job("a"), plans=(TestPlan(id="tp", include=(IncludePattern("(oops"),)),))
    with pytest.raises(PlanError, match=r"^-i/--include: invalid regular expression '\[a'"):
        select_jobs(units, None, ["[a"], [])
    with pytest.raises(PlanError, match=r"^-x/--exclude: invalid"):
        select_jobs(units, None, [], ["*"])
    with pytest.raises(PlanError, match=r"^test plan 'tp': invalid regular expression '\(oops'"):
        select_jobs(units, "tp", [], [])


# --------------------------------------------------------------------------- scheduler


def diamond() -> Plan:
    return build_plan(
        [job("a"), job("b", depends="a"), job("c", depends="a"), job("d", depends="b c")]
    )


def run_all(sched: Scheduler, outcomes: dict[str, str] | None = None) -> list[Decision]:
    """Drive a scheduler to the end, finishing running jobs oldest first."""
    outcomes = outcomes or {}
    decisions: list[Decision] = []
    started: list[str] = []
    while not sched.done():
        decision = sched.next_decision()
        if decision is None:
            finished = started.pop(0)
            sched.finish(finished, outcomes.get(finished, "pass"))
            continue
        decisions.append(decision)
        if decision.action == "run":
            started.append(decision.job_id)
    return decisions


def test_scheduler_one_at_a_time_follows_plan_order() -> None:
    plan = diamond()
    sched = Scheduler(plan)
    assert sched.next_decision() == Decision("a", "run")
    assert sched.next_decision() is None  # one slot, taken
    assert sched.running == {"a"}
    sched.finish("a", "pass")
    assert sched.next_decision() == Decision("b", "run")
    assert sched.next_decision() is None
    sched.finish("b", "pass")
    assert sched.next_decision() == Decision("c", "run")
    sched.finish("c", "pass")
    assert sched.next_decision() == Decision("d", "run")
    assert not sched.done()
    sched.finish("d", "pass")
    assert sched.done() and sched.next_decision() is None
    assert dict(sched.outcomes) == {"a": "pass", "b": "pass", "c": "pass", "d": "pass"}


def test_scheduler_two_at_a_time_on_diamond() -> None:
    sched = Scheduler(diamond(), max_running=2)
    assert sched.next_decision() == Decision("a", "run")
    assert sched.next_decision() is None  # b and c wait for a
    sched.finish("a", "pass")
    assert sched.next_decision() == Decision("b", "run")
    assert sched.next_decision() == Decision("c", "run")
    assert sched.running == {"b", "c"}
    assert sched.next_decision() is None
    sched.finish("c", "pass")
    assert sched.next_decision() is None  # d still waits for b
    sched.finish("b", "fail")
    assert sched.next_decision() == Decision(
        "d", "skip", SKIPPED_DEPENDENCY, "dependency b did not pass (outcome fail)"
    )
    assert sched.done()
    assert sched.outcomes["d"] == SKIPPED_DEPENDENCY


def test_skip_propagates_through_skipped_dependencies() -> None:
    decisions = run_all(Scheduler(diamond(), max_running=3), {"a": "crash"})
    assert decisions == [
        Decision("a", "run"),
        Decision("b", "skip", SKIPPED_DEPENDENCY, "dependency a did not pass (outcome crash)"),
        Decision("c", "skip", SKIPPED_DEPENDENCY, "dependency a did not pass (outcome crash)"),
        Decision(
            "d",
            "skip",
            SKIPPED_DEPENDENCY,
            f"dependencies did not pass: b (outcome {SKIPPED_DEPENDENCY}), c (outcome {SKIPPED_DEPENDENCY})",
        ),
    ]


def test_after_only_waits_and_never_skips() -> None:
    plan = build_plan([job("a"), job("b", after="a")])
    decisions = run_all(Scheduler(plan, max_running=2), {"a": "fail"})
    assert decisions == [Decision("a", "run"), Decision("b", "run")]


def test_unknown_dependency_is_skipped_in_order() -> None:
    plan = build_plan([job("a"), job("b", depends="ghost", after="a"), job("c", depends="b")])
    sched = Scheduler(plan)
    assert sched.next_decision() == Decision("a", "run")
    assert sched.next_decision() is None  # b is after a, so its skip waits too
    sched.finish("a", "pass")
    assert sched.next_decision() == Decision(
        "b", "skip", SKIPPED_DEPENDENCY, "unknown dependency ghost"
    )
    assert sched.next_decision() == Decision(
        "c", "skip", SKIPPED_DEPENDENCY, f"dependency b did not pass (outcome {SKIPPED_DEPENDENCY})"
    )
    assert sched.done()


def test_skip_decisions_do_not_need_a_slot() -> None:
    plan = build_plan([job("a"), job("b", depends="a"), job("long"), job("c")])
    sched = Scheduler(plan, max_running=2)
    assert sched.next_decision() == Decision("a", "run")
    assert sched.next_decision() == Decision("long", "run")
    sched.finish("a", "fail")
    assert sched.next_decision() == Decision(
        "b", "skip", SKIPPED_DEPENDENCY, "dependency a did not pass (outcome fail)"
    )
    assert sched.next_decision() == Decision("c", "run")


def test_resume_with_prior_outcomes() -> None:
    sched = Scheduler(diamond(), finished={"a": "pass", "b": "pass", "elsewhere": "fail"})
    assert sched.remaining == 2
    assert run_all(sched) == [Decision("c", "run"), Decision("d", "run")]
    assert dict(sched.outcomes) == {"a": "pass", "b": "pass", "c": "pass", "d": "pass"}

    sched = Scheduler(diamond(), finished={"a": "pass", "c": "fail"}, max_running=2)
    assert sched.next_decision() == Decision("b", "run")
    sched.finish("b", "pass")
    assert sched.next_decision() == Decision(
        "d", "skip", SKIPPED_DEPENDENCY, "dependency c did not pass (outcome fail)"
    )
    assert sched.done()


def test_resume_when_everything_is_finished() -> None:
    sched = Scheduler(diamond(), finished=dict.fromkeys("abcd", "pass"))
    assert sched.done() and sched.next_decision() is None and sched.remaining == 0


def test_empty_plan_is_done() -> None:
    sched = Scheduler(build_plan([]))
    assert sched.done() and sched.next_decision() is None


def test_scheduler_misuse() -> None:
    sched = Scheduler(diamond())
    with pytest.raises(ValueError, match="'b' is not running"):
        sched.finish("b", "pass")
    with pytest.raises(ValueError):
        Scheduler(diamond(), max_running=0)


@given(dags(), st.integers(min_value=1, max_value=4), st.randoms(use_true_random=False), st.data())
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_scheduler_properties(
    jobs: list[JobDefinition], width: int, rnd: random.Random, data: st.DataObject
) -> None:
    plan = build_plan(jobs)
    by_id = plan.jobs
    prior = data.draw(
        st.dictionaries(
            st.sampled_from(plan.order), st.sampled_from(["pass", "fail"]), max_size=len(jobs) // 2
        )
        if jobs
        else st.just({})
    )
    outcome_of = {j.id: rnd.choice(["pass", "pass", "fail"]) for j in jobs}
    sched = Scheduler(plan, finished=prior, max_running=width)
    decided: dict[str, str] = dict(prior)
    running: list[str] = []
    while not sched.done():
        decision = sched.next_decision()
        if decision is None:
            assert running, "scheduler stalled"
            finished = running.pop(rnd.randrange(len(running)))
            sched.finish(finished, outcome_of[finished])
            decided[finished] = outcome_of[finished]
            continue
        job_id = decision.job_id
        assert job_id not in decided and job_id not in running
        relations = [d for d in by_id[job_id].depends + by_id[job_id].after if d in by_id]
        assert all(d in decided for d in relations), "started before its relations finished"
        should_skip = job_id in plan.unknown_deps or any(
            decided[d] != "pass" for d in by_id[job_id].depends if d in by_id
        )
        assert (decision.action == "skip") == should_skip
        if decision.action == "skip":
            decided[job_id] = SKIPPED_DEPENDENCY
        else:
            running.append(job_id)
            assert len(running) <= width
    assert not running
    assert set(decided) == set(plan.order) | set(prior)
    assert dict(sched.outcomes) == {k: v for k, v in decided.items() if k in by_id}


def test_needs_person() -> None:
    for plugin in ("manual", "user-interact", "user-verify", "user-interact-verify"):
        assert needs_person(job("x", plugin=plugin))
    for plugin in ("shell", "resource", "attachment"):
        assert not needs_person(job("x", plugin=plugin))


# --------------------------------------------------------------------------- scale


def test_hundred_thousand_job_chain_is_fast() -> None:
    """No step is quadratic: 100,000 chained jobs take seconds of CPU, not hours (CPU time: a loaded
    machine does not make it fail; scripts/bench_units.py measures the real figures)."""
    count = 100_000
    jobs = [JobDefinition(id="j0")] + [
        JobDefinition(id=f"j{i}", depends=(f"j{i - 1}",)) for i in range(1, count)
    ]
    units = UnitSet(jobs=list(reversed(jobs)))
    start = time.process_time()
    # selecting the last job pulls in the whole chain, depth first
    chosen = select_jobs(units, None, [f"j{count - 1}"], [])
    plan = build_plan(chosen)
    sched = Scheduler(plan, max_running=4)
    planning = time.process_time() - start
    assert len(chosen) == count
    assert plan.order == tuple(f"j{i}" for i in range(count))

    start = time.process_time()
    handed = 0
    while not sched.done():
        decision = sched.next_decision()
        assert decision is not None and decision.action == "run"
        sched.finish(decision.job_id, "pass")
        handed += 1
    scheduling = time.process_time() - start
    assert handed == count
    assert planning < 5.0, f"planning took {planning:.2f} s of CPU"
    assert scheduling < 5.0, f"scheduling took {scheduling:.2f} s of CPU"


def test_hundred_thousand_jobs_with_failures_are_fast() -> None:
    count = 100_000
    # pairs: every odd job depends on (and runs after) the even one before it, which fails
    jobs = [
        JobDefinition(id=f"j{i}", depends=pair, after=pair)
        for i in range(count)
        for pair in [(f"j{i - 1}",) if i % 2 else ()]
    ]
    # CPU time of this process, not wall time: a loaded machine must not fail a test of complexity.
    start = time.process_time()
    plan = build_plan(select_jobs(UnitSet(jobs=jobs), None, ["j.*"], []))
    planning = time.process_time() - start
    start = time.process_time()
    failing = dict.fromkeys((f"j{i}" for i in range(0, count, 2)), "fail")
    decisions = run_all(Scheduler(plan, max_running=8), failing)
    scheduling = time.process_time() - start
    assert sum(d.action == "skip" for d in decisions) == count // 2
    assert planning < 5.0, f"planning took {planning:.2f} s of CPU"
    assert scheduling < 5.0, f"scheduling took {scheduling:.2f} s of CPU"


# --------------------------------------------------------------------------- nested test plans


def test_nested_parts_are_selected_recursively_bootstrap_first() -> None:
    top = TestPlan(
        id="top",
        include=(IncludePattern("a"),),
        exclude=("x.*",),
        nested_part=("mid",),
        bootstrap_include=("boot1",),
    )
    mid = TestPlan(
        id="mid",
        include=(IncludePattern("b"), IncludePattern("x1")),
        nested_part=("leaf-.*",),
        mandatory_include=("m",),
    )
    leaf = TestPlan(id="leaf-1", include=(IncludePattern("c"),), bootstrap_include=("boot2",), exclude=("a",))
    units = units_of(
        job("a"), job("b"), job("c"), job("m"), job("x1"), job("boot1"), job("boot2"),
        plans=(top, mid, leaf),
    )  # fmt: skip
    # the parent's exclude (x.*) reaches into its parts; a part's exclude (a) does not reach its parent
    assert ids(select_jobs(units, "top", [], [])) == ["boot1", "boot2", "m", "a", "b", "c"]
    assert ids(select_jobs(units, "mid", [], [])) == ["boot2", "m", "b", "x1", "c"]


def test_nested_part_cycles_and_unknown_parts_are_reported() -> None:
    units = units_of(
        job("a"),
        plans=(
            TestPlan(id="p1", nested_part=("p2",)),
            TestPlan(id="p2", nested_part=("p3",)),
            TestPlan(id="p3", nested_part=("p1",)),
            TestPlan(id="self", nested_part=("self",)),
            TestPlan(id="lost", nested_part=("nowhere",)),
        ),
    )
    with pytest.raises(PlanError, match=r"test plan cycle through nested_part: p1 -> p2 -> p3 -> p1"):
        select_jobs(units, "p1", [], [])
    with pytest.raises(PlanError, match=r"cycle through nested_part: self -> self"):
        select_jobs(units, "self", [], [])
    with pytest.raises(PlanError, match=r"nested_part 'nowhere' names no test plan"):
        select_jobs(units, "lost", [], [])


def test_a_part_named_twice_is_not_a_cycle() -> None:
    units = units_of(
        job("a"), job("b"),
        plans=(
            TestPlan(id="top", nested_part=("left", "right")),
            TestPlan(id="left", nested_part=("shared",)),
            TestPlan(id="right", nested_part=("shared",)),
            TestPlan(id="shared", include=(IncludePattern("b"),)),
        ),
    )  # fmt: skip
    assert ids(select_jobs(units, "top", [], [])) == ["b"]


def test_plan_overrides_and_metadata_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "plans.pxu"
    path.write_text(
        "unit: test plan\nid: tp\n_name: The plan\ninclude:\n a certification_status=blocker\n"
        "category_overrides: apply cat to a\ncertification_status_overrides: apply non-blocker to a\n"
    )
    units = load_units([str(path)])
    assert units.warnings == ()
    plan = units.test_plan("tp")
    assert plan.name == "The plan"
    assert plan.include == (IncludePattern("a", (("certification_status", "blocker"),)),)
    assert plan.extra == {}
    assert plan.include_overrides == (Override("a", "certification_status", "blocker"),)
    assert plan.category_overrides == (Override("a", "category_id", "cat"),)
    assert plan.certification_status_overrides == (Override("a", "certification_status", "non-blocker"),)
    # the same pattern: include overrides, then category, then certification status overrides
    assert [(o.field, o.value) for o in plan_overrides(units, "tp")] == [
        ("certification_status", "blocker"),
        ("category_id", "cat"),
        ("certification_status", "non-blocker"),
    ]


# --------------------------------------------------------------------------- metadata

PLAINBOX_EXAMPLE = """\
id: job-a
category_id: own

id: job-b
certification_status: blocker

id: job-c

id: job-d
category_id: other::theirs

unit: test plan
id: tp
include:
  job-a certification_status=blocker, category-id=example
  job-b certification_status=non-blocker
  job-c
  job-d
category_overrides:
  apply other-example to job-[bc]
certification_status_overrides:
  apply not-part-of-certification to job-c
"""


def _metadata(tmp_path: Path, text: str, test_plan: str | None = "tp", namespace: str | None = None):
    path = tmp_path / "units.pxu"
    path.write_text(text)
    units = load_units([str(path)], namespace=namespace)
    jobs = select_jobs(units, test_plan, [], [])
    return units, RunMetadata.compute(units, test_plan, jobs)


def test_effective_metadata_as_plainbox_computes_it(tmp_path: Path) -> None:
    units, meta = _metadata(tmp_path, PLAINBOX_EXAMPLE)
    assert meta.of("job-a") == JobMetadata("example", "blocker")
    assert meta.of("job-b") == JobMetadata("other-example", "non-blocker")
    assert meta.of("job-c") == JobMetadata("other-example", "not-part-of-certification")
    assert meta.of("job-d") == JobMetadata("other::theirs", DEFAULT_CERTIFICATION_STATUS)
    # patterns apply in their sorted order: ^job-[bc]$ < ^job-a$ < ^job-b$ < ^job-c$
    assert [o.pattern for o in plan_overrides(units, "tp")] == ["job-[bc]", "job-a", "job-a", "job-b", "job-c"]
    _units, own = _metadata(tmp_path, PLAINBOX_EXAMPLE, test_plan=None)
    assert own.of("job-a") == JobMetadata("own") and own.of("job-b") == JobMetadata(None, "blocker")
    assert "job-c" not in own.jobs  # default metadata is not stored


def test_later_pattern_in_sorted_order_wins(tmp_path: Path) -> None:
    text = (
        "id: job-a\n\nid: job-ab\n\nunit: test plan\nid: tp\ninclude: job-.*\n"
        "category_overrides:\n apply specific to job-a\n apply general to job-.*\n apply wide to job-a.*\n"
    )
    _units, meta = _metadata(tmp_path, text)
    # ^job-.*$ < ^job-a$ < ^job-a.*$: the last one that matches wins, whatever order the lines are in
    assert meta.of("job-a").category_id == "wide"
    assert meta.of("job-ab").category_id == "wide"


def test_metadata_with_namespaces_and_nested_parts(tmp_path: Path) -> None:
    text = (
        "id: a\ncategory_id: mine\n\nid: b\n\nid: c\n\n"
        "unit: test plan\nid: top\ninclude: a\nmandatory_include: b\nnested_part: part\n"
        "category_overrides: apply top-cat to b\n\n"
        "unit: test plan\nid: part\ninclude: c certification-status=blocker category-id=x::part-cat\n"
        "mandatory_include: c\ncertification_status_overrides: apply non-blocker to com.x::a\n"
    )
    units, meta = _metadata(tmp_path, text, test_plan="top", namespace="com.x")
    assert meta.of("com.x::a") == JobMetadata("com.x::mine", "non-blocker")
    assert meta.of("com.x::b") == JobMetadata("com.x::top-cat")
    assert meta.of("com.x::c") == JobMetadata("x::part-cat", "blocker")
    assert mandatory_jobs(units, "top") == ["com.x::b", "com.x::c"]
    assert mandatory_jobs(units, None) == []
    # a job made later (a template) gets the overrides that match it
    assert meta.of("com.x::unplanned") == JobMetadata()
    assert RunMetadata(overrides=[Override("new-.*", "category_id", "n")]).of("com.x::new-1") == JobMetadata("n")


def test_run_metadata_round_trips_through_json_and_app_blob(tmp_path: Path) -> None:
    _units, meta = _metadata(tmp_path, PLAINBOX_EXAMPLE)
    assert RunMetadata.from_json(json.loads(json.dumps(meta.to_json()))) == meta
    blob = base64.standard_b64encode(json.dumps({"sources": ["x"]}).encode()).decode()
    with_meta = meta.to_app_blob(blob)
    assert json.loads(base64.standard_b64decode(with_meta))["sources"] == ["x"]
    assert RunMetadata.from_app_blob(with_meta) == meta
    for other in (None, "", blob, "not base64 !", base64.b64encode(b"[1]").decode(),
                  base64.b64encode(b'{"job_metadata": {"jobs": 3}}').decode()):  # fmt: skip
        assert RunMetadata.from_app_blob(other) is None


def test_patterns_and_plan_ids_match_with_or_without_namespace(tmp_path: Path) -> None:
    path = tmp_path / "units.pxu"
    path.write_text(
        "id: disk/a\ncommand: true\n\nid: disk/b\ncommand: true\n\nid: net\ncommand: true\n\n"
        "unit: test plan\nid: tp\ninclude: disk/.*\nexclude: disk/b\nbootstrap_include: net\n"
    )
    units = load_units([str(path)], namespace="com.x")
    assert ids(select_jobs(units, "tp", [], [])) == ["com.x::net", "com.x::disk/a"]
    assert ids(select_jobs(units, "com.x::tp", [], [])) == ["com.x::net", "com.x::disk/a"]
    assert ids(select_jobs(units, None, ["net", "com.x::disk/b"], [])) == ["com.x::net", "com.x::disk/b"]
    assert ids(select_jobs(units, None, ["disk/.*"], ["com.x::disk/a"])) == ["com.x::disk/b"]


def test_requires_resolves_namespaced_resources(tmp_path: Path) -> None:
    path = tmp_path / "units.pxu"
    path.write_text(
        "id: res\nplugin: resource\ncommand: echo a: 1\n\n"
        "id: user\nrequires: res.a == '1'\ncommand: true\n\n"
        "id: user2\nrequires: com.x::res.a == '1'\ncommand: true\n"
    )
    units = load_units([str(path)], namespace="com.x")
    assert ids(select_jobs(units, None, ["user", "user2"], [])) == ["com.x::res", "com.x::user", "com.x::user2"]


def test_scheduler_extend_adds_jobs_while_running() -> None:
    sched = Scheduler(build_plan([job("a"), job("b")]))
    first = sched.next_decision()
    assert first == Decision("a", "run")
    # new jobs: one waits for the running job a, one depends on an unknown job, one is free
    sched.extend([job("n1", depends="a"), job("n2", depends="ghost"), job("n3"), job("a")])
    assert sched.order == ("a", "b", "n1", "n2", "n3")
    assert sched.remaining == 5
    decisions = []
    while not sched.done():
        decision = sched.next_decision()
        if decision is None:
            sched.finish(sorted(sched.running)[0], "pass")
            continue
        decisions.append(decision)
        if decision.action == "run" and decision.job_id != "a":
            sched.finish(decision.job_id, "pass")
    assert [(d.job_id, d.action) for d in decisions] == [("b", "run"), ("n1", "run"), ("n2", "skip"), ("n3", "run")]
    assert decisions[2].skip_reason == "unknown dependency ghost"


def test_scheduler_extend_refuses_a_cycle() -> None:
    sched = Scheduler(build_plan([job("a")]))
    with pytest.raises(PlanError, match="dependency cycle"):
        sched.extend([job("x", depends="y"), job("y", depends="x")])
    assert sched.order == ("a",)
    assert sched.remaining == 1


def test_scheduler_extend_places_new_jobs_by_the_order_given() -> None:
    # A resource job ran; the jobs made from it go where the run's new order puts them (as Checkbox places
    # template-made jobs), a skip among them too, and jobs the order does not list keep going first.
    sched = Scheduler(build_plan([job("res"), job("x"), job("first"), job("last")]))
    assert sched.next_decision() == Decision("res", "run")
    sched.extend([job("made_1"), job("made_2", depends="gone")], order=["first", "made_1", "made_2", "last"])
    sched.finish("res", "pass")
    got = []
    while not sched.done():
        decision = sched.next_decision()
        got.append((decision.job_id, decision.action))
        if decision.action == "run":
            sched.finish(decision.job_id, "pass")
    assert got == [("x", "run"), ("first", "run"), ("made_1", "run"), ("made_2", "skip"), ("last", "run")]
    assert sched.run_order == ("res", "x", "first", "made_1", "made_2", "last")


def test_scheduler_extend_without_an_order_adds_new_jobs_last() -> None:
    sched = Scheduler(build_plan([job("res"), job("last")]))
    assert sched.next_decision() == Decision("res", "run")
    sched.extend([job("made")])
    sched.finish("res", "pass")
    assert [sched.next_decision().job_id, sched.finish("last", "pass"), sched.next_decision().job_id] == [
        "last", None, "made"
    ]


def test_the_outcomes_of_a_schedule_read_as_a_mapping_of_the_finished_jobs() -> None:
    # Kept by position (memory), they still read as a dict of the finished jobs, given and added ones too.
    sched = Scheduler(build_plan([job("a"), job("b", depends="a"), job("c")]), finished={"c": "fail", "zz": "pass"})
    outcomes = sched.outcomes
    assert dict(outcomes) == {"c": "fail"} and len(outcomes) == 1  # an id the plan lacks is not kept
    assert "a" not in outcomes and outcomes.get("a") is None and outcomes.get("a", "-") == "-"
    with pytest.raises(KeyError):
        outcomes["a"]
    assert sched.next_decision() == Decision("a", "run")
    sched.finish("a", "crash")
    assert sched.next_decision().action == "skip"  # b: its dependency did not pass
    sched.extend([job("d")])
    assert sched.next_decision() == Decision("d", "run")
    sched.finish("d", "pass")
    assert outcomes == {"a": "crash", "b": SKIPPED_DEPENDENCY, "c": "fail", "d": "pass"}
    assert list(outcomes) == ["a", "b", "c", "d"] and outcomes["d"] == "pass" and "zz" not in outcomes
