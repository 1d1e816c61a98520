"""``run`` and ``resume``: execute a batch into a session."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

from plainbox_like.run import batch, manual
from plainbox_like.store.runconfig import RunConfig
from plainbox_like.run import prepare
from plainbox_like.run.report import RunSummary
from plainbox_like.cli import options, output
from plainbox_like.cli.options import repository
from plainbox_like.cli.output import format_duration, print_json
from plainbox_like.errors import PlainboxLikeError
from plainbox_like.define.manifest import read_manifest_file
from plainbox_like.store.model import FAILED_OUTCOMES, Attempt
from plainbox_like.text import clean

if TYPE_CHECKING:
    from plainbox_like.define.launcher import Launcher
    from plainbox_like.define.units import TestPlan, UnitSet


class LineReporter:
    """One line per finished job, for logs and pipes."""

    def __init__(self, total: int, done: int = 0, stream: TextIO | None = None) -> None:
        self.total = total
        self.done = done
        self.stream = stream if stream is not None else sys.stdout  # the stdout of now, not of import time
        self.width = len(str(total))

    def started(self, job_id: str, attempt: int) -> None:
        pass

    def added(self, count: int) -> None:
        """Jobs made from templates joined the run."""
        self.total += count
        self.width = len(str(self.total))

    def finished(self, job_id: str, result: Attempt) -> None:
        self.done += 1
        detail = "; ".join(filter(None, (result.skip_reason or result.comments, leftover_note(result)))) or None
        line = (
            f"[{self.done:>{self.width}}/{self.total}] {result.outcome:<18} "
            f"{format_duration(result.execution_duration):>8}  {clean(job_id)}"
        )
        self.stream.write(line + (f"  ({clean(detail)})" if detail else "") + "\n")
        self.stream.flush()

    def close(self) -> None:
        pass


def leftover_note(result: Attempt) -> str | None:
    """``left 2 processes running, stopped`` for a job that left processes behind, else None."""
    left = result.leftover_processes
    if left is None:
        return None
    plural = "" if left.count == 1 else "es"
    return f"left {left.count} process{plural} running, {'kept' if left.kept else 'stopped'}"


class ProgressReporter:
    """A progress bar on a terminal: job n of N, current job, elapsed, pass/fail counts."""

    def __init__(self, total: int, done: int = 0, stream: TextIO = sys.stderr) -> None:
        from tqdm import tqdm  # only needed on a terminal

        # No monitor thread: a parallel run forks its workers, which must not happen in a threaded process.
        tqdm.monitor_interval = 0
        self.bar = tqdm(total=total, initial=done, file=stream, unit="job", dynamic_ncols=True, leave=True)
        self.counts: dict[str, int] = {}
        self.current: list[str] = []

    def _refresh(self) -> None:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items()))
        current = self.current[-1] if self.current else ""
        self.bar.set_description_str(current[-40:], refresh=False)
        self.bar.set_postfix_str(counts, refresh=True)

    def started(self, job_id: str, attempt: int) -> None:
        self.current.append(clean(job_id))
        self._refresh()

    def added(self, count: int) -> None:
        """Jobs made from templates joined the run."""
        self.bar.total += count
        self._refresh()

    def finished(self, job_id: str, result: Attempt) -> None:
        job_id = clean(job_id)
        if job_id in self.current:
            self.current.remove(job_id)
        self.counts[result.outcome] = self.counts.get(result.outcome, 0) + 1
        if result.outcome in FAILED_OUTCOMES:
            detail = f" ({clean(result.comments)})" if result.comments else ""
            self.bar.write(f"{result.outcome}: {job_id}{detail}")
        self.bar.update(1)
        self._refresh()

    def close(self) -> None:
        self.bar.close()

    def say(self, message: str) -> None:
        """A message for the user, above the bar."""
        self.bar.write(f"{output.PREFIX}{message}", file=sys.stderr)


class RestartNotes:
    """A reporter that also says, before a noreturn job runs, that the machine will restart and how the run
    will continue, and when it waits for the restart (everything else goes to *inner*)."""

    def __init__(self, inner: Any, session_id: str, args: argparse.Namespace) -> None:
        self.inner = inner
        self.session_id = session_id
        self.args = args

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    # Called for every job: passed on directly, not looked up through __getattr__ each time.
    def started(self, job_id: str, attempt: int) -> None:
        self.inner.started(job_id, attempt)

    def finished(self, job_id: str, result: Attempt) -> None:
        self.inner.finished(job_id, result)

    def _say(self, message: str) -> None:
        getattr(self.inner, "say", output.say)(message)

    def restart_expected(self, job_id: str) -> None:
        from plainbox_like.maintain import autoresume

        repo = repository(self.args)
        head = f"job {clean(job_id)} is expected to restart the machine (flag noreturn): after the restart, "
        if autoresume.enabled_for(repo.root, autoresume.Boot.detect()):
            self._say(head + f"session {self.session_id} continues by itself (autoresume is enabled for {clean(repo.root)})")
        else:
            where = f"--repository {shlex.quote(clean(repo.root))} " if self.args.repository else ""
            self._say(
                head + f"continue session {self.session_id} with: plainbox-like {where}resume {self.session_id} "
                f"(or have it continue by itself: run 'plainbox-like {where}autoresume enable' now)"
            )

    def restart_awaited(self, job_id: str) -> None:
        self._say(
            f"job {clean(job_id)} ended: waiting for the machine to restart "
            "(Ctrl-C stops waiting, and the job is recorded as interrupted)"
        )


def _reporter(total: int, done: int, session_id: str, args: argparse.Namespace, desk: manual.ManualDesk | None = None):
    asking = desk is not None and desk.mode == manual.MODE_ASK  # a progress bar would cut into the prompts
    if sys.stderr.isatty() and sys.stdout.isatty() and not asking:
        return RestartNotes(ProgressReporter(total, done), session_id, args)
    return RestartNotes(LineReporter(total, done), session_id, args)


def _warn_templates(prepared: prepare.Prepared) -> None:
    for warning in prepared.notes:
        output.warn(clean(warning))
    if prepared.expander is not None:
        for warning in prepared.expander.warnings:
            output.warn(clean(warning))


def _finish(summary: RunSummary, started: float) -> int:
    counts = ", ".join(f"{n} {outcome}" for outcome, n in sorted(summary.counts.items())) or "no jobs"
    elapsed = format_duration(time.monotonic() - started)
    if summary.interrupted:
        how = "Stopped by request" if summary.stopped_by == "request" else "Interrupted"
        print(
            f"{how} after {elapsed}: {counts}. Session {summary.session_id} is kept; "
            f"continue it with: plainbox-like resume {summary.session_id}",
            file=sys.stderr,
        )
    else:
        print(f"Session {summary.session_id}: {counts} in {elapsed}", file=sys.stderr)
    return summary.exit_code


def _find_providers(args: argparse.Namespace, search: bool) -> list[str]:
    """The providers of ``--providers`` and, with *search*, of ``PROVIDERPATH`` or the standard places,
    as :attr:`RunConfig.providers` keeps them; warnings go to stderr."""
    from plainbox_like.define.providers import find_providers, provider_refs

    if not args.providers and not search:
        return []
    for directory in args.providers:
        if not os.path.isdir(directory):
            raise PlainboxLikeError(f"--providers {directory}: not a directory")
    found, warnings = find_providers(args.providers, search=search)
    for warning in warnings:
        output.warn(warning)
    return provider_refs(found)


def _no_providers_found(what: str = "nothing to run: give job files, -c COMMAND") -> PlainboxLikeError:
    from plainbox_like.define.providers import provider_search_path

    where = (
        f"PROVIDERPATH={os.environ['PROVIDERPATH']}" if "PROVIDERPATH" in os.environ
        else "PROVIDERPATH (unset) or " + ", ".join(provider_search_path())
    )  # fmt: skip
    return PlainboxLikeError(f"{what} or --providers DIR (no provider found in {where})")


def _check_dask(args: argparse.Namespace, run: bool) -> None:
    """``--dask``: a valid value, and Dask installed (one-line errors before anything is started)."""
    dask = getattr(args, "dask", None)
    if dask is None or dask == prepare.NO_DASK:
        if run and getattr(args, "retries", None):
            raise PlainboxLikeError("--retries only goes with --dask (it retries the jobs of a lost worker)")
        return
    from plainbox_like.run.dask_executor import check_address, require_dask

    check_address(args.dask)
    require_dask()


def cmd_run(args: argparse.Namespace) -> int:
    batch.check_parallel(args.jobs, args.force)
    _check_dask(args, run=True)
    if args.json and not args.dry_run:
        raise PlainboxLikeError("--json only goes with --dry-run")
    launcher = _read_launcher(args)
    answers = read_manifest_file(args.manifest) if args.manifest else {}
    providers = _find_providers(args, search=not args.files and not args.command_lines)
    if not args.files and not args.command_lines and not providers:
        raise _no_providers_found()
    config = RunConfig(
        sources=[_absolute(p) for p in args.files],
        commands=list(args.command_lines),
        test_plan=args.test_plan or (launcher.test_plan if launcher else None),
        include=list(args.include) + (launcher.include if launcher else []),
        exclude=list(args.exclude) + (launcher.exclude if launcher else []),
        parallel=args.jobs,
        durability=args.durability,
        namespace=args.namespace,
        providers=providers,
        environment=dict(launcher.environment) if launcher else {},
        manifest={**answers, **(launcher.manifest if launcher else {})},
        dask=getattr(args, "dask", None),
        retries=getattr(args, "retries", None) or 0,
    )
    if launcher and not (config.test_plan or config.include):
        raise PlainboxLikeError(f"--launcher {launcher.path}: no test plan to run (no [test plan] unit, no --test-plan)")
    units = prepare.load_run_units(config)
    for warning in units.warnings:
        output.warn(clean(warning))
    plan = prepare.plan_jobs(units, config)
    if args.bootstrap and not args.dry_run:
        raise PlainboxLikeError("--bootstrap only goes with --dry-run")
    if args.dry_run:
        order = list(plan.order)
        if args.bootstrap:
            order = prepare.bootstrapped_order(
                units, config, plan, lambda msg: output.warn(clean(msg))
            )
        if args.json:
            print_json(order)
        else:
            for job_id in order:
                print(clean(job_id))
        return 0
    desk = _desk(args, plan)  # a bad --answers file stops the run before a session is made
    started = time.monotonic()
    title = args.title or (launcher.title if launcher else None)
    prepared = prepare.start_session(repository(args), config, title=title, units=units, plan=plan)
    del units  # the plan holds the jobs; the units' own indexes are not kept through a long run
    print(f"Session {prepared.writer.id} in {clean(prepared.writer.path)}", file=sys.stderr)
    summary = prepare.run_prepared(prepared, _reporter(len(plan.order), 0, prepared.writer.id, args, desk), desk)
    _warn_templates(prepared)
    return _finish(summary, started)


def _desk(args: argparse.Namespace, plan) -> manual.ManualDesk:
    """How the jobs that need a person are answered: ``--answers`` first, then ``--manual``."""
    answers = manual.read_answers(args.answers, plan.jobs) if args.answers else {}
    return manual.ManualDesk(args.manual or manual.default_mode(), answers)


def add_manual_options(parser: argparse.ArgumentParser) -> None:
    """``--manual`` and ``--answers`` (run, launcher, resume)."""
    parser.add_argument(
        "--manual", choices=manual.MODES, metavar="MODE",
        help="how jobs that need a person (plugins manual, user-interact, user-verify, user-interact-verify) "
        "are answered: ask (in this terminal; the default when stdin is a terminal), wait (for plainbox-like "
        "answer from another terminal), skip (not run: 'needs a person'; the default otherwise)",
    )
    parser.add_argument(
        "--answers", metavar="FILE",
        help="answers given ahead: one 'JOB_ID: ANSWER [comment]' a line ('#' starts a comment line), ANSWER "
        "pass, fail, skip (fail and skip need a comment) or run (the command's exit status decides); ids with or "
        "without their namespace; jobs not in the file are answered as --manual says",
    )


def _read_launcher(args: argparse.Namespace) -> Launcher | None:
    """The launcher of ``--launcher`` (its notes told once), or None."""
    if not args.launcher:
        return None
    from plainbox_like.define.launcher import read_launcher  # (with configparser: only for --launcher)

    launcher = read_launcher(args.launcher)
    for note in launcher.notes:
        output.note(note)
    return launcher


def cmd_resume(args: argparse.Namespace) -> int:
    if args.jobs is not None:
        batch.check_parallel(args.jobs, args.force)
    _check_dask(args, run=False)
    if args.autoresume:
        return _autoresume(args)
    return _resume(args, args.session)


def _autoresume(args: argparse.Namespace) -> int:
    """``resume --autoresume``: continue, in order of creation, every session a noreturn job ended."""
    from plainbox_like.maintain import autoresume

    if args.session:
        raise PlainboxLikeError("resume --autoresume: give no SESSION (it resumes every session a noreturn job ended)")
    repo = repository(args)
    sessions = autoresume.boot_sessions(repo)
    for item in sessions:
        if item.noreturn_job is None:
            output.say(f"session {item.id}: left alone: {item.why_not}")
    todo = [item for item in sessions if item.noreturn_job is not None]
    if not todo:
        output.say(f"no session of {clean(repo.root)} stopped on a noreturn job: nothing to resume")
        return 0
    code = 0
    for item in todo:
        output.say(f"session {item.id} stopped while job {clean(item.noreturn_job)} (noreturn) ran: continuing it")
        try:
            result = _resume(args, item.path)
        except PlainboxLikeError as exc:
            output.error(f"session {item.id}: {exc}")
            code = max(code, exc.exit_code)
            continue
        if result == 130:  # stopped (the machine going down again, Ctrl-C): the rest waits for the next time
            return result
        code = max(code, result)
    return code


def _resume(args: argparse.Namespace, ref: str | None) -> int:
    started = time.monotonic()
    prepared = prepare.resume_session(
        repository(args),
        ref,
        rerun_failed=args.rerun_failed,
        rerun_interrupted=args.rerun_interrupted,
        rerun_bootstrap=args.rerun_bootstrap,
        ignore_changed=args.ignore_changed,
        parallel=args.jobs,
        say=lambda msg: output.say(clean(msg)),
        dask=args.dask,
        retries=args.retries,
    )
    try:
        desk = _desk(args, prepared.plan)
    except BaseException:
        prepared.writer.close()
        raise
    left = len(prepared.plan.order) - len(prepared.finished)
    print(f"Resuming session {prepared.writer.id}: {left} of {len(prepared.plan.order)} jobs to run", file=sys.stderr)
    reporter = _reporter(len(prepared.plan.order), len(prepared.finished), prepared.writer.id, args, desk)
    summary = prepare.run_prepared(prepared, reporter, desk)
    _warn_templates(prepared)
    return _finish(summary, started)


def _plan_json(units: UnitSet, plan: TestPlan) -> dict[str, Any]:
    """Everything about one test plan; ``overrides`` are those that apply, nested parts included, in order."""
    from plainbox_like.define.metadata import plan_overrides

    try:
        overrides = [o.to_json() for o in plan_overrides(units, plan.id)]
    except PlainboxLikeError as exc:
        output.warn(f"test plan {clean(plan.id)}: {clean(exc)}")
        overrides = None
    return {
        "id": plan.id,
        "name": plan.name,
        "origin": str(plan.origin) if plan.origin else None,
        "include": [{"pattern": item.pattern, "overrides": dict(item.overrides)} for item in plan.include],
        "exclude": list(plan.exclude),
        "mandatory_include": list(plan.mandatory_include),
        "bootstrap_include": list(plan.bootstrap_include),
        "nested_part": list(plan.nested_part),
        "setup_include": list(plan.setup_include),
        "include_overrides": [o.to_json() for o in plan.include_overrides],
        "category_overrides": [o.to_json() for o in plan.category_overrides],
        "certification_status_overrides": [o.to_json() for o in plan.certification_status_overrides],
        "overrides": overrides,
        "extra": dict(plan.extra),
    }


def cmd_plans(args: argparse.Namespace) -> int:
    refs = _find_providers(args, search=not args.files)
    if not args.files and not refs:
        raise _no_providers_found("no test plans to list: give unit files")
    config = RunConfig(sources=[_absolute(p) for p in args.files], providers=refs)
    units = prepare.load_run_units(config)
    for warning in units.warnings:
        output.warn(clean(warning))
    plans = sorted(units.test_plans, key=lambda p: p.id)
    if args.json:
        print_json([_plan_json(units, plan) for plan in plans])
        return 0
    width = max((len(clean(plan.id)) for plan in plans), default=0)
    for plan in plans:
        print(f"{clean(plan.id):<{width}}  {clean(plan.name or '')}".rstrip())
    if not plans:
        output.say("no test plans found")
    return 0


def _absolute(path: str) -> str:
    return os.path.abspath(path)


def _namespace(text: str) -> str:
    import re

    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", text):
        raise argparse.ArgumentTypeError(f"not a namespace (letters, digits, '.', '-', '_'): {text!r}")
    return text


LAUNCHER_HELP = (
    "a Checkbox launcher file: its [test plan] unit, [test selection] exclude/match, [manifest], [environment] "
    "and [launcher] session_title apply (options given here win); what does not apply is named in a note"
)


def _add_dask(parser: argparse.ArgumentParser, help: str, retries_default: str) -> None:
    parser.add_argument("--dask", metavar="ADDR", help=help)
    parser.add_argument("--retries", type=options.positive_int, metavar="N",
                        help=f"with --dask: run a job whose worker was lost up to N more times, each a new "
                             f"attempt (default: {retries_default})")


def register(subparsers: argparse._SubParsersAction) -> None:
    run = subparsers.add_parser(
        "run",
        help="run a batch of jobs into a new session",
        description="Run jobs from Plainbox .pxu unit files, plain command lists (one shell command per line) "
        "and -c options into a new session. Exit status: 0 if every job passed or was skipped by design, "
        "1 if any failed or crashed, 2 on bad input, 130 if interrupted (the session can be resumed).",
    )
    run.add_argument("files", nargs="*", metavar="FILE", help="unit files (.pxu), directories of them, or command lists")
    run.add_argument("-c", "--command", dest="command_lines", action="append", default=[], metavar="CMD",
                     help="a shell command to run as a job (repeatable)")
    run.add_argument("--test-plan", metavar="ID", help="run the jobs this test plan includes")
    options.add_providers(run)
    run.add_argument("--namespace", metavar="NS", type=_namespace,
                     help="give the jobs and test plans of unit files ids NS::id (default: the namespace of "
                     "the provider the files belong to, from its .provider file or manage.py, if any)")
    run.add_argument("-i", "--include", action="append", default=[], metavar="REGEX",
                     help="select jobs whose whole id matches REGEX (repeatable; added to the --test-plan jobs; "
                     "jobs they depend on are added too)")
    run.add_argument("-x", "--exclude", action="append", default=[], metavar="REGEX",
                     help="leave out jobs whose whole id matches REGEX (repeatable; jobs that selected jobs "
                     "depend on, and a test plan's mandatory jobs, still run)")
    options.add_parallel(run, "run up to N independent jobs at once (default 1; at most as many workers as "
                         f"jobs; more than {batch.MAX_PARALLEL} needs --force)", default=1)
    _add_dask(run, "run the jobs on a Dask cluster: ADDR is its scheduler (tcp://HOST:8786), or local:W "
              "(local:WxT) starts W worker processes (T threads each) on this machine for the run; -j is the "
              "number of jobs in flight. Needs the dask extra: pip install 'plainbox-like[dask]'", "0")
    run.add_argument("--title", help="a title for the session")
    options.add_durability(run, "fsync: every result survives a power cut (default); "
                           "flush: results survive a killed process, not a power cut (faster)")
    run.add_argument("--dry-run", action="store_true", help="print the jobs in the order they would run, run nothing")
    options.add_json(run, "only with --dry-run: print the plan as a JSON list of job ids")
    run.add_argument("--bootstrap", action="store_true",
                     help="only with --dry-run and --test-plan: run the test plan's bootstrap resource jobs (outside "
                     "any session) and list the jobs their templates add too")
    options.add_manifest(run)
    run.add_argument("--launcher", metavar="FILE", help=LAUNCHER_HELP)
    add_manual_options(run)
    run.set_defaults(func=cmd_run)

    launcher = subparsers.add_parser(
        "launcher",
        help="run what a Checkbox launcher file asks for (run --launcher FILE)",
        description="Run the test plan a Checkbox launcher file names, with its test selection, manifest and "
        "environment, into a new session: the same as run --launcher FILE. Exit status as for run.",
    )
    launcher.add_argument("launcher", metavar="FILE", help="a Checkbox launcher file")
    launcher.add_argument("files", nargs="*", metavar="UNITS",
                          help="unit files or directories (none: the providers found, see --providers)")
    options.add_providers(launcher)
    options.add_manifest(launcher)
    options.add_parallel(launcher, f"run up to N independent jobs at once (default 1; more than {batch.MAX_PARALLEL} "
                         "needs --force)", default=1)
    launcher.add_argument("--title", help="a title for the session (default: the launcher's session_title)")
    options.add_durability(launcher, "as for run: fsync (default) or flush")
    launcher.add_argument("--dry-run", action="store_true", help="print the jobs in the order they would run")
    add_manual_options(launcher)
    options.add_json(launcher, "only with --dry-run: print a JSON list of job ids")
    launcher.set_defaults(
        func=cmd_run, command_lines=[], test_plan=None, include=[], exclude=[], namespace=None, bootstrap=False
    )

    plans = subparsers.add_parser(
        "plans",
        help="list the test plans of unit files",
        description="List the test plans (unit: test plan) defined in Plainbox .pxu unit files or directories "
        "of them: one line per test plan with its id and name, sorted by id.",
    )
    plans.add_argument("files", nargs="*", metavar="FILE",
                       help="unit files (.pxu) or directories of them (none: the providers found, see --providers)")
    options.add_providers(plans)
    options.add_json(plans, "print every test plan with all its fields as a JSON list, including its category "
                     "and certification status overrides and the order they apply in")
    plans.set_defaults(func=cmd_plans)

    resume = subparsers.add_parser(
        "resume",
        help="continue an interrupted session",
        description="Continue a session where it stopped. A job that was running when the session stopped "
        "is recorded as crash (a job with the noreturn flag: pass, or the outcome it left in "
        "$PLAINBOX_SESSION_SHARE/__result, as after a restart; a job that needs a person is asked again). "
        "Changed job definitions stop a "
        "resume unless --ignore-changed is given. Exit status as for run.",
    )
    options.add_session(resume, "session id, unique id prefix or path (default: the most recent incomplete session)",
                        nargs="?")
    resume.add_argument("--rerun-failed", action="store_true",
                        help="run again every job whose latest attempt failed or crashed")
    resume.add_argument("--rerun-interrupted", action="store_true",
                        help="run again the jobs that were running when the session stopped")
    resume.add_argument("--rerun-bootstrap", action="store_true",
                        help="run the bootstrap jobs of the session's test plan again (and the jobs they skipped), "
                        "making template jobs from their new records")
    resume.add_argument("--ignore-changed", action="store_true",
                        help="resume even if job definitions changed since the session started")
    options.add_parallel(resume, "run up to N independent jobs at once (default: as the session was started; "
                         f"more than {batch.MAX_PARALLEL} needs --force)")
    _add_dask(resume, "run the rest on this Dask cluster (default: the one the session was run with; "
              "'none': on this machine); first kills what the session's jobs left running on its workers",
              "as the session was run")
    resume.add_argument("--autoresume", action="store_true",
                        help="resume, in order of creation, every session of the repository that stopped while a "
                        "noreturn job ran (a reboot), that job recorded as after a restart, and leave the others "
                        "alone; what 'autoresume enable' runs at boot")
    add_manual_options(resume)
    resume.set_defaults(func=cmd_resume)
