"""Starting and resuming a batch: the units and plan of a run, its session opened, then run.

A new run loads the units its configuration names, selects and orders the
jobs and journals that plan in a new session; a resume reopens an interrupted
session, settles the jobs it left running and works out what is left. Either
way the result is a :class:`Prepared` session that :func:`run_prepared` hands
to :class:`plainbox_like.run.batch.BatchRunner`. Templates are instantiated
here too, because both a run and a resume make jobs from resource records.
"""

from __future__ import annotations

import os
import time
from typing import Callable

import attrs

from plainbox_like.define import manifest
from plainbox_like.define import plan as planning
from plainbox_like.define.providers import Provider, find_providers
from plainbox_like.define.resource import RequirementProgram, ResourceExpressionError, namespace_of, parse_records, resolve_resource
from plainbox_like.define.loading import load_units
from plainbox_like.define.metadata import RunMetadata
from plainbox_like.define.selection import bootstrap_jobs, mandatory_jobs, select_jobs
from plainbox_like.define.units import JobDefinition, ManifestEntry, UnitSet
from plainbox_like.errors import PlainboxLikeError, RunAborted, SchedulerLost
from plainbox_like.run import control, jobenv, manual
from plainbox_like.run.batch import (
    APP_ID,
    INTERRUPTED,
    STOPPED_BY_REQUEST,
    BatchRunner,
    job_environment,
)
from plainbox_like.run.report import Reporter, RunSummary
from plainbox_like.run.executors import find_shell
from plainbox_like.run.settle import FLAG_NORETURN, JOB_ENV, SESSION_ENV, STOPPED_WHILE_RUNNING, settle_interrupted
from plainbox_like.store.model import (
    FAILED_OUTCOMES,
    FLAG_INCOMPLETE,
    OUTCOME_CRASH,
    OUTCOME_SKIP,
    OUTCOME_SKIPPED_DEPENDENCY,
    OUTCOME_SKIPPED_RESOURCE,
    SessionState,
)
from plainbox_like.store.runconfig import RunConfig
from plainbox_like.store.locks import held_flocks, writer_alive
from plainbox_like.store.repository import SessionRepository
from plainbox_like.store.writer import SessionWriter

def run_providers(config: RunConfig) -> list[Provider]:
    """The providers of the run (read again from their definitions); one that is gone is left out."""
    return find_providers(config.providers, search=False)[0] if config.providers else []


def load_run_units(config: RunConfig) -> UnitSet:
    """The units of the run, with Checkbox's ``manifest`` resource job when manifest entries or jobs need it."""
    providers = run_providers(config)
    units = load_units(
        config.sources, config.commands, namespace=config.namespace, providers=providers, checkbox_env=config.environment
    )
    if manifest.MANIFEST_JOB_ID in units.by_id or not (
        units.manifest_entries or manifest.needs_manifest(units.jobs)
    ):
        return units
    index = jobenv.ProviderIndex(providers)

    def provider_of(entry: ManifestEntry) -> tuple[str, str] | None:
        found = index.of_path(entry.origin.path) if entry.origin is not None else None
        return (found.namespace, found.name) if found is not None else None

    job = manifest.manifest_job(units.manifest_entries, config.manifest, provider_of)
    return attrs.evolve(units, jobs=[*units.jobs, job])


def _record_filter(program: RequirementProgram) -> Callable[[dict[str, str]], bool]:
    """Whether a template's filter accepts one record (every resource it names stands for that record)."""

    def accept(record: dict[str, str]) -> bool:
        try:
            return program.first_false({name: [record] for name in program.resources}) is None
        except ResourceExpressionError:
            return False

    return accept


@attrs.define
class TemplateExpander:
    """Makes the jobs of templates from the records of their resource jobs."""

    units: UnitSet
    config: RunConfig
    warnings: list[str] = attrs.Factory(list)
    #: Every job made so far, in the order made: as in Checkbox, they join the job list after the loaded ones.
    made: dict[str, JobDefinition] = attrs.Factory(dict)

    def instantiate(self, resource_id: str, records: list[dict[str, str]]) -> list[JobDefinition]:
        """Every job the templates over *resource_id* make from *records* (no selection)."""
        from plainbox_like.define.templates import instantiate_template  # only for template units

        made: list[JobDefinition] = []
        for template in self.units.templates:
            if not template.supported:
                continue
            if resolve_resource(template.resource, self.units.by_id, namespace_of(template.id)) != resource_id:
                continue
            accept = None
            if template.filter:
                try:
                    accept = _record_filter(RequirementProgram.parse(template.filter))
                except ResourceExpressionError as exc:
                    self.warnings.append(f"template {template.id!r}: invalid template-filter: {exc}")
                    continue
            jobs, warnings = instantiate_template(template, records, accept, checkbox_env=self.config.environment)
            self.warnings.extend(warnings)
            for job in jobs:
                if job.id in self.units.by_id:
                    self.warnings.append(f"template {template.id!r} makes job {job.id!r}, which is already defined")
                else:
                    made.append(job)
        return made

    def instantiate_all(self, resources: dict[str, list[dict[str, str]]]) -> list[JobDefinition]:
        """The jobs made from every stored resource (resuming a session)."""
        return [job for resource_id, records in resources.items() for job in self.instantiate(resource_id, records)]

    def expand(self, resource_id: str, records: list[dict[str, str]], planned: dict[str, JobDefinition]) -> list[JobDefinition]:
        """The new jobs to add to a run after *resource_id* passed: made, selected as the run selects, not planned yet."""
        made = self.instantiate(resource_id, records)
        for job in made:
            self.made.setdefault(job.id, job)
        config = self.config
        if made and (config.test_plan or config.include or config.exclude):
            # Select among every job, so that the new jobs' dependencies come along; what is planned already
            # is dropped below.
            made = self._selected()
        return [job for job in made if job.id not in planned]

    def _selected(self) -> list[JobDefinition]:
        """The run's selection among the loaded jobs and every job made so far (after them, as Checkbox lists them)."""
        config = self.config
        return select_jobs(
            UnitSet(jobs=[*self.units.jobs, *self.made.values()], test_plans=self.units.test_plans),
            config.test_plan,
            config.include,
            config.exclude,
        )

    def run_order(self) -> tuple[str, ...]:
        """The run's order with the jobs made so far where Checkbox puts them.

        Checkbox selects the test plan again once its bootstrap jobs ran, over
        its job list with the made jobs at the end, and orders that selection:
        so a made job comes where the plan's pattern that matches it is, not
        after everything planned. Raises :class:`PlanError` for a cycle.
        """
        return planning.build_plan(self._selected(), self.units.dropped).order



@attrs.define
class Prepared:
    """A session open for writing with the plan to run in it."""

    writer: SessionWriter
    plan: planning.Plan
    finished: dict[str, str]
    parallel: int
    notes: list[str] = attrs.Factory(list)
    expander: TemplateExpander | None = None
    config: RunConfig | None = None
    manifest_entries: tuple[ManifestEntry, ...] = ()


def plan_jobs(units: UnitSet, config: RunConfig) -> planning.Plan:
    """Select and order the jobs *config* asks for."""
    selected = select_jobs(units, config.test_plan, config.include, config.exclude)
    return planning.build_plan(selected, units.dropped)


def start_session(
    repo: SessionRepository,
    config: RunConfig,
    *,
    title: str | None = None,
    units: UnitSet | None = None,
    plan: planning.Plan | None = None,
) -> Prepared:
    """Create a session for a new batch and journal its plan.

    The app_blob holds the run configuration and the jobs' effective category
    and certification status (:class:`plainbox_like.define.metadata.RunMetadata`); the
    plan's mandatory jobs go to ``mandatory_job_list``.
    """
    units = units if units is not None else load_run_units(config)
    plan = plan if plan is not None else plan_jobs(units, config)
    parent_session = os.environ.get(SESSION_ENV)
    parent_job = os.environ.get(JOB_ENV) if parent_session else None
    metadata = RunMetadata.compute(units, config.test_plan, (plan.jobs[job_id] for job_id in plan.order))
    writer = repo.create(
        title=title,
        durability=config.durability,
        app_id=APP_ID,
        app_blob=metadata.to_app_blob(config.to_blob()),
        parent_session=parent_session,
        parent_job=parent_job,
    )
    mandatory = [job_id for job_id in mandatory_jobs(units, config.test_plan) if job_id in plan.jobs]
    writer.set_plan(
        {job_id: plan.jobs[job_id].checksum for job_id in plan.order}, plan.order, mandatory_job_list=mandatory
    )
    expander = TemplateExpander(units, config) if units.templates else None
    return Prepared(
        writer=writer,
        plan=plan,
        finished={},
        parallel=config.parallel,
        expander=expander,
        config=config,
        manifest_entries=units.manifest_entries,
    )


def bootstrapped_order(units: UnitSet, config: RunConfig, plan: planning.Plan, say: Callable[[str], None]) -> list[str]:
    """The run order after the test plan's bootstrap jobs ran (``run --dry-run --bootstrap``).

    The bootstrap resource jobs are run here, outside any session (their
    ``$PLAINBOX_SESSION_SHARE`` is a temporary directory, removed after); they
    come first, then the rest of the plan with the jobs their templates make
    where Checkbox puts them (:meth:`TemplateExpander.run_order`). Problems are told to
    *say* and leave the order as planned.
    """
    import tempfile

    if not config.test_plan:
        raise PlainboxLikeError("--bootstrap needs --test-plan")
    expander = TemplateExpander(units, config)
    planned = dict(plan.jobs)
    order = list(plan.order)
    shell = find_shell()
    providers = jobenv.ProviderIndex(run_providers(config))
    providers.learn(plan.jobs[job_id] for job_id in plan.order)
    bootstrap = bootstrap_jobs(units, config.test_plan)
    with tempfile.TemporaryDirectory(prefix="plainbox-like-bootstrap-") as share:
        for job_id in bootstrap:
            job = units.by_id[job_id]
            if job.plugin != "resource" or not job.command:
                continue
            provider = providers.of_job(job)
            bin_dirs = providers.bin_dirs(provider.namespace) if provider is not None else ()
            env = jobenv.job_env(dict(os.environ), job, provider, bin_dirs, config.environment)
            env = job_environment(env, job, "dry-run", share)
            import subprocess  # only for a dry run's bootstrap

            cwd = jobenv.make_cwd(job)
            try:
                done = subprocess.run(
                    [shell, "-c", job.command], env=env, cwd=cwd, capture_output=True, timeout=job.timeout, check=False
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                say(f"bootstrap job {job_id} did not finish: {exc}")
                continue
            finally:
                jobenv.collect_leftovers(cwd, job)
            if done.returncode != 0:  # as in Checkbox, what it printed still counts
                say(f"bootstrap job {job_id} failed (exit status {done.returncode})")
            new = expander.expand(job_id, parse_records(done.stdout.decode("utf-8", errors="replace")), planned)
            if new:
                try:
                    planning.build_plan(new)
                    placed = expander.run_order()
                except PlainboxLikeError as exc:
                    say(f"jobs made from resource {job_id} not added: {exc}")
                    continue
                planned.update((j.id, j) for j in new)
                # the bootstrap jobs (and whatever they needed) ran first; the rest as Checkbox places them
                head = order[: max(order.index(j) for j in bootstrap if j in order) + 1]
                order = head + [j for j in placed if j not in head and j in planned]
    for warning in expander.warnings:
        say(warning)
    return order


def most_recent_incomplete(repo: SessionRepository) -> str:
    """The newest session that is incomplete and has no live runner."""
    from plainbox_like.store.reader import load_session  # (not at start-up: a new run reads no state)

    best: tuple[float, str] | None = None
    held = held_flocks()
    for path in repo.session_paths():
        try:
            state = load_session(path).state
        except PlainboxLikeError:
            continue
        if FLAG_INCOMPLETE in state.metadata.flags and not writer_alive(path, held):
            created = state.metadata.created or 0.0
            if best is None or created > best[0]:
                best = (created, path)
    if best is None:
        raise PlainboxLikeError(f"no incomplete session to resume in {repo.sessions_dir}")
    return best[1]


#: ``resume --dask none``: run on this machine, whatever the session was run with.
NO_DASK = "none"


def resume_session(
    repo: SessionRepository,
    ref: str | None = None,
    *,
    rerun_failed: bool = False,
    rerun_interrupted: bool = False,
    rerun_bootstrap: bool = False,
    ignore_changed: bool = False,
    parallel: int | None = None,
    say: Callable[[str], None] = lambda _msg: None,
    dask: str | None = None,
    retries: int | None = None,
) -> Prepared:
    """Open an interrupted session and work out what is left to run.

    *dask* and *retries* replace the session's own for this run (:data:`NO_DASK`: on this machine).
    """
    from plainbox_like.store.reader import load_session  # (not at start-up: a new run reads no state)

    path = repo.resolve(ref) if ref else most_recent_incomplete(repo)
    loaded = load_session(path)
    config = RunConfig.from_blob(loaded.state.metadata.app_blob)
    if dask is not None:
        config.dask = None if dask == NO_DASK else dask
    if retries is not None:
        config.retries = retries
    writer = SessionWriter.open(path, durability=config.durability)
    try:
        state = writer.state
        units = load_run_units(config)
        expander = TemplateExpander(units, config) if units.templates else None
        made = expander.instantiate_all(state.resources) if expander is not None else []
        plan = _resume_plan(units, state, ignore_changed, made)
        if ignore_changed:
            writer.set_plan({job_id: plan.jobs[job_id].checksum for job_id in plan.order}, plan.order)
        noreturn = frozenset(j for j, job in plan.jobs.items() if FLAG_NORETURN in job.flags)
        person = frozenset(j for j, job in plan.jobs.items() if manual.is_manual(job))
        interrupted = settle_interrupted(writer, noreturn, say, ask_again=person)
        rerun = set(interrupted) if rerun_interrupted else set()
        if rerun_interrupted:
            # Jobs stopped by Ctrl-C or SIGTERM were running when the session stopped, too, and so were
            # those an earlier resume, cleanup or repair found left running by a dead runner.
            rerun |= {
                j for j in plan.order
                if (a := state.latest(j))
                and a.outcome == OUTCOME_CRASH
                and a.comments in (INTERRUPTED, STOPPED_BY_REQUEST, STOPPED_WHILE_RUNNING)
            }
        if rerun_failed:
            rerun |= {j for j in plan.order if (a := state.latest(j)) and a.outcome in FAILED_OUTCOMES}
        if rerun_bootstrap:
            if not config.test_plan:
                raise PlainboxLikeError("--rerun-bootstrap: the session was not started with a test plan")
            rerun |= set(bootstrap_jobs(units, config.test_plan)) & set(plan.order)
        finished = {}
        for job_id in plan.order:
            latest = state.latest(job_id)
            if latest is None or job_id in rerun:
                continue
            if rerun and latest.outcome in (OUTCOME_SKIPPED_DEPENDENCY, OUTCOME_SKIPPED_RESOURCE):
                continue  # its dependency (or resource) may pass this time
            finished[job_id] = latest.outcome
        if FLAG_INCOMPLETE not in state.metadata.flags or state.metadata.finished is not None:
            flags = sorted(set(state.metadata.flags) | {FLAG_INCOMPLETE})
            writer.update_metadata(flags=flags, finished=None)
    except BaseException:
        writer.close()
        raise
    return Prepared(
        writer=writer,
        plan=plan,
        finished=finished,
        parallel=parallel or config.parallel,
        expander=expander,
        config=config,
        manifest_entries=units.manifest_entries,
    )


def _resume_plan(
    units: UnitSet, state: SessionState, ignore_changed: bool, made: list[JobDefinition] = ()
) -> planning.Plan:
    known = {job.id: job for job in units.jobs}
    for job in made:  # instantiated from templates with the stored resource records
        known.setdefault(job.id, job)
    changed = []
    for job_id in state.desired_job_list:
        job = known.get(job_id)
        if job is None:
            changed.append(f"{job_id} (no longer defined)")
        elif state.jobs.get(job_id) != job.checksum:
            changed.append(job_id)
    if changed and not ignore_changed:
        listed = ", ".join(changed[:10]) + (f" and {len(changed) - 10} more" if len(changed) > 10 else "")
        raise PlainboxLikeError(
            f"job definitions changed since the session started: {listed}; use --ignore-changed to resume anyway"
        )
    return planning.build_plan([known[j] for j in state.desired_job_list if j in known], units.dropped)


def _release(writer: SessionWriter) -> None:
    """Close *writer* with a final snapshot if it can be written, else leave its journal as it is."""
    try:
        writer.close()
    except OSError:
        writer.abandon()



#: Outcomes an interactive run offers to run again at its end (Checkbox's re-run screen).
RERUN_OFFERED = FAILED_OUTCOMES | {OUTCOME_SKIP}


def run_prepared(
    prepared: Prepared, reporter: Reporter | None = None, desk: manual.ManualDesk | None = None
) -> RunSummary:
    """Run what is left of a prepared session and close it.

    *desk* answers the jobs that need a person (none: they are skipped). When it
    asks in a terminal, it offers once, at the end, to run again the jobs that
    failed, crashed or were skipped.
    """
    writer = prepared.writer
    runner = _runner(prepared, prepared.finished, reporter, desk)
    control.clear_request(writer.path)  # a request left for an earlier run is not for this one
    control.clear_answer(writer.path)  # and so is an answer
    try:
        interrupted = runner.run()
        if not interrupted and desk is not None:
            again = _offered_rerun(runner, desk)
            if again is not None:
                runner = _runner(prepared, again, reporter, desk)
                interrupted = runner.run()
        if not interrupted:
            flags = [f for f in writer.state.metadata.flags if f != FLAG_INCOMPLETE]
            writer.update_metadata(flags=flags, finished=time.time())
        writer.close()
    except (OSError, RunAborted) as exc:
        _release(writer)
        detail = f"cannot write its files ({exc.strerror or exc})" if isinstance(exc, OSError) else str(exc)
        when = " (once there is room again, if the disk is full)" if not isinstance(exc, SchedulerLost) else ""
        raise RunAborted(
            f"session {writer.id}: {detail}; the run stopped, and so did its running jobs. "
            f"To continue{when}: plainbox-like resume {writer.id}"
        ) from None
    except BaseException:
        _release(writer)
        raise
    counts = {}
    for job_id in runner.scheduler.order:
        latest = writer.state.latest(job_id)
        if latest is not None:
            counts[latest.outcome] = counts.get(latest.outcome, 0) + 1
    return RunSummary(writer.id, writer.path, counts, interrupted, runner.stopped_by)


def _runner(
    prepared: Prepared, finished: dict[str, str], reporter: Reporter | None, desk: manual.ManualDesk | None
) -> BatchRunner:
    return BatchRunner(
        prepared.writer,
        prepared.plan,
        finished=finished,
        parallel=prepared.parallel,
        reporter=reporter,
        expander=prepared.expander,
        warnings=prepared.notes,
        launcher_env=prepared.config.environment if prepared.config is not None else None,
        providers=jobenv.ProviderIndex(run_providers(prepared.config)) if prepared.config is not None else None,
        manifest_entries=prepared.manifest_entries,
        manifest_answers=prepared.config.manifest if prepared.config is not None else None,
        manual=desk,
        dask=prepared.config.dask if prepared.config is not None else None,
        retries=prepared.config.retries if prepared.config is not None else 0,
    )


def _offered_rerun(runner: BatchRunner, desk: manual.ManualDesk) -> dict[str, str] | None:
    """The outcomes to keep if the person takes the offer to run again what did not pass, else None."""
    state = runner.writer.state
    latest = {job_id: state.latest(job_id) for job_id in runner.scheduler.order}
    candidates = [(j, a.outcome) for j, a in latest.items() if a is not None and a.outcome in RERUN_OFFERED]
    if not desk.offer_rerun(candidates):
        return None
    again = {j for j, _outcome in candidates}
    skipped = (OUTCOME_SKIPPED_DEPENDENCY, OUTCOME_SKIPPED_RESOURCE)  # their dependency may pass this time
    return {j: a.outcome for j, a in latest.items() if a is not None and j not in again and a.outcome not in skipped}
