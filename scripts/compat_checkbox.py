#!/usr/bin/env python3
"""Run one test plan with the real Checkbox and with plainbox-like on the same providers; compare outcomes.

    compat_checkbox.py PLAN PROVIDER_DIR... [--include REGEX] [--cbx-home DIR] [--jobpy PYTHON]

Checkbox runs through ``../shared/checkbox/checkbox-run.sh`` (checkbox-ng
1.18.1 from PyPI, a silent launcher; see the README beside it), everything
under ``--cbx-home`` (default ``$CBX_HOME``; give a directory that is kept, so
the Checkbox install is reused). ``--jobpy`` (default ``$CBX_JOBPY``) is the
python3 both give the jobs first on ``PATH``: the providers' scripts import
``checkbox_support``. plainbox-like runs the same plan on the same,
unmodified provider directories into a session repository of its own.

``--include REGEX`` runs the jobs whose id matches instead of an existing
plan: a small extra provider holding one test plan (``include: REGEX``) is
written under the Checkbox home and given to both. ``--checkbox-session DIR``
compares with a Checkbox session made before instead of running Checkbox.

Prints one row per job (Checkbox's outcome, ours, same?), a summary line, and
the order verdicts (``same`` or ``differs at position N``): our ``run --dry-run
--bootstrap`` against Checkbox's bootstrapped list (the bootstrap jobs it ran,
then the rest of ``list-bootstrapped``'s list, made by Checkbox's own python),
and the order our run started jobs in against that list. Checkbox 1.18.1 walks
a job's dependencies in Python set order, which changes from process to
process where a job has several; so the reference walks them in the order
written (depends, requires' resources, after), one of the orders Checkbox
gives, and a second line compares with Checkbox's unchanged walk of this
process (informational). ``--order-only`` compares the order alone.
Checkbox's ``not-supported`` and our ``skipped-resource`` /
``skipped-dependency`` count as the same; nothing else does. Exit status 0 if
no row differs and the order is the same, 1 otherwise, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
#: ``<repo>/../shared/checkbox`` as CI lays it out, or ``../../shared`` from a worktree under ``<project>/wt/``.
CHECKBOX_RUN = next(
    (
        path
        for path in (
            os.path.join(REPO, "..", "shared", "checkbox", "checkbox-run.sh"),
            os.path.join(REPO, "..", "..", "shared", "checkbox", "checkbox-run.sh"),
        )
        if os.path.isfile(path)
    ),
    os.path.join(REPO, "..", "shared", "checkbox", "checkbox-run.sh"),
)
#: Our outcomes that Checkbox calls not-supported.
NOT_SUPPORTED_EQUIVALENTS = frozenset({"skipped-resource", "skipped-dependency"})
PLAN_PROVIDER_MANAGE = """\
from plainbox.provider_manager import setup, N_
setup(name="compat-plan", namespace="{ns}", version="1.0", description=N_("compat_checkbox.py plan"))
"""


def same(checkbox: str | None, ours: str | None) -> bool:
    """Whether two outcomes count as the same."""
    if checkbox == ours:
        return checkbox is not None
    return checkbox == "not-supported" and ours in NOT_SUPPORTED_EQUIVALENTS


def plan_provider(home: str, regex: str, namespace: str) -> tuple[str, str]:
    """A provider directory with one test plan including *regex*, and the plan's id."""
    base = tempfile.mkdtemp(prefix="compat-plan.", dir=home)
    os.makedirs(os.path.join(base, "units"))
    with open(os.path.join(base, "manage.py"), "w", encoding="utf-8") as handle:
        handle.write(PLAN_PROVIDER_MANAGE.format(ns=namespace))
    with open(os.path.join(base, "units", "plan.pxu"), "w", encoding="utf-8") as handle:
        handle.write(f"unit: test plan\nid: compat-include\n_name: Jobs matching {regex}\ninclude:\n {regex}\n")
    return base, f"{namespace}::compat-include"


def checkbox_outcomes(session_dir: str) -> dict[str, str]:
    """The latest outcome of each job of a Checkbox session directory."""
    with gzip.open(os.path.join(session_dir, "session"), "rt", encoding="utf-8") as handle:
        results = json.load(handle)["session"]["results"]
    return {job: attempts[-1]["outcome"] for job, attempts in results.items() if attempts}


#: Run with Checkbox's own python: bootstraps a test plan as ``checkbox-cli list-bootstrapped`` does and prints
#: the bootstrap jobs it ran (``B id``), then its run list (``R id``). With ``declared`` as second argument, each
#: job's dependencies are walked in the order written (depends, then the resources of requires, then after)
#: instead of Checkbox 1.18.1's set order, which changes from process to process (string hashes are salted).
CHECKBOX_ORDER_HELPER = """\
import itertools, os, re, sys
from plainbox.impl.session.storage import WellKnownDirsHelper
WellKnownDirsHelper.base_of_everything = os.path.join(os.environ["XDG_CACHE_HOME"], "checkbox-ng")
from plainbox.impl import ctrl
from plainbox.impl.session.assistant import SessionAssistant

plan, walk = sys.argv[1], sys.argv[2]

def written(job, text):
    ids = (job.qualify_id(word) for word in re.split(r"[\\s,]+", text or "") if word)
    return list(dict.fromkeys(ids))

def declared(self, job):
    try:
        program = job.get_resource_program()
        resources = [r for e in program.expression_list for r in e.resource_id_list] if program else []
    except Exception:
        resources = []
    deps = itertools.chain(
        (("direct", d) for d in written(job, job.depends)),
        (("resource", r) for r in dict.fromkeys(resources)),
        (("ordering", a) for a in written(job, job.after)),
    )
    return list(dict.fromkeys(deps))

if walk == "declared":
    ctrl.CheckBoxSessionStateController.get_dependency_set = declared
sa = SessionAssistant("com.canonical:checkbox-cli", "0.99", "0.99", ["restartable"])
sa.start_new_session("compat-order")
sa.select_test_plan(plan)
ran = sa.get_bootstrap_todo_list()
sa.bootstrap()
for job_id in ran:
    print("B", job_id)
for job_id in sa.get_static_todo_list():
    print("R", job_id)
"""


def checkbox_order(plan: str, providers: list[str], home: str, jobpy: str | None, walk: str) -> list[str]:
    """Checkbox's run order for *plan* once bootstrapped: the bootstrap jobs it ran, then the rest of its run list.

    Needs the Checkbox that ``checkbox-run.sh`` installed under *home*. *walk*
    is ``declared`` or ``set`` (see :data:`CHECKBOX_ORDER_HELPER`).
    """
    python = os.path.join(home, "venv", "bin", "python3")
    if not os.access(python, os.X_OK):
        raise SystemExit(f"compat_checkbox: no Checkbox under {home} (run checkbox-run.sh once to install it)")
    run = tempfile.mkdtemp(prefix="compat-order.", dir=home)
    path_dir = os.path.join(run, "providerpath")
    os.makedirs(path_dir)
    for provider in providers:
        subprocess.run(
            [python, "manage.py", "develop", "-d", path_dir], cwd=provider, env=dict(os.environ, HOME=home),
            capture_output=True, check=True,
        )
    helper = os.path.join(run, "order.py")
    with open(helper, "w", encoding="utf-8") as handle:
        handle.write(CHECKBOX_ORDER_HELPER)
    env = dict(
        os.environ, HOME=os.path.join(run, "home"), XDG_CACHE_HOME=os.path.join(run, "cache"),
        XDG_CONFIG_HOME=os.path.join(run, "config"), PROVIDERPATH=path_dir, LANG="C.UTF-8",
    )
    extra = jobs_bin(home, jobpy)
    if extra:
        env["PATH"] = extra + os.pathsep + env.get("PATH", "")
    cwd = os.path.join(run, "cwd")
    os.makedirs(cwd)
    done = subprocess.run([python, helper, plan, walk], env=env, cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"compat_checkbox: Checkbox's bootstrap failed ({done.returncode}): {done.stderr[-800:]}")
    ran = [line[2:] for line in done.stdout.splitlines() if line.startswith("B ")]
    rest = [line[2:] for line in done.stdout.splitlines() if line.startswith("R ")]
    return ran + [job for job in rest if job not in ran]


def our_bootstrapped_order(plan: str, providers: list[str], home: str, jobpy: str | None) -> list[str]:
    """What ``plainbox-like run --dry-run --bootstrap --test-plan PLAN`` lists."""
    env = dict(os.environ, LANG="C.UTF-8", PYTHONPATH=REPO)
    extra = jobs_bin(home, jobpy)
    if extra:
        env["PATH"] = extra + os.pathsep + env.get("PATH", "")
    repository = tempfile.mkdtemp(prefix="compat-dry.", dir=home)
    done = subprocess.run(
        [sys.executable, "-m", "plainbox_like", "--repository", repository, "run", "--dry-run", "--bootstrap",
         "--test-plan", plan, *providers],
        env=env, cwd=repository, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"compat_checkbox: plainbox-like run --dry-run failed ({done.returncode}): {done.stderr[-800:]}")
    return [line.strip() for line in done.stdout.splitlines() if line.strip()]


def order_verdict(theirs: list[str], ours: list[str]) -> str:
    """``same``, or where two orders first differ (and which jobs only one of them has)."""
    if theirs == ours:
        return "same"
    at = next((i for i, (a, b) in enumerate(zip(theirs, ours)) if a != b), min(len(theirs), len(ours)))
    what = f"differs at position {at + 1}: Checkbox {theirs[at] if at < len(theirs) else '(end)'}, ours " + (
        ours[at] if at < len(ours) else "(end)"
    )
    only_theirs, only_ours = set(theirs) - set(ours), set(ours) - set(theirs)
    if only_theirs or only_ours:
        what += f"; only Checkbox: {sorted(only_theirs) or '-'}, only ours: {sorted(only_ours) or '-'}"
    return what


def run_checkbox(plan: str, providers: list[str], home: str, jobpy: str | None) -> str:
    env = dict(os.environ, CBX_HOME=home)
    if jobpy:
        env["CBX_JOBPY"] = jobpy
    done = subprocess.run(
        ["bash", CHECKBOX_RUN, plan, *providers], env=env, capture_output=True, text=True, check=False
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines or not os.path.isdir(lines[-1]):
        raise SystemExit(f"compat_checkbox: checkbox-run.sh failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return lines[-1]


def jobs_bin(home: str, jobpy: str | None) -> str | None:
    """A directory with a ``python3`` that runs *jobpy* (as checkbox-run.sh makes one), or None."""
    if not jobpy:
        return None
    directory = tempfile.mkdtemp(prefix="compat-bin.", dir=home)
    wrapper = os.path.join(directory, "python3")
    with open(wrapper, "w", encoding="utf-8") as handle:
        handle.write(f'#!/bin/sh\nexec "{jobpy}" "$@"\n')
    os.chmod(wrapper, 0o755)
    tools = os.path.dirname(jobpy)
    for name in sorted(os.listdir(tools)):
        if name.startswith("checkbox-support-"):
            os.symlink(os.path.join(tools, name), os.path.join(directory, name))
    return directory


def run_ours(
    plan: str, providers: list[str], home: str, jobpy: str | None
) -> tuple[dict[str, str], list[str], list[str]]:
    sys.path.insert(0, REPO)
    from plainbox_like.store.reader import load_session

    repository = tempfile.mkdtemp(prefix="compat-ours.", dir=home)
    env = dict(os.environ, LANG="C.UTF-8", PYTHONPATH=REPO)
    extra = jobs_bin(home, jobpy)
    if extra:
        env["PATH"] = extra + os.pathsep + env.get("PATH", "")
    cwd = tempfile.mkdtemp(prefix="compat-cwd.", dir=home)
    done = subprocess.run(
        [sys.executable, "-m", "plainbox_like", "--repository", repository, "run", "--test-plan", plan, *providers],
        env=env, cwd=cwd, capture_output=True, text=True, check=False,
    )
    sessions = [name for name in os.listdir(os.path.join(repository, "sessions"))] if os.path.isdir(
        os.path.join(repository, "sessions")
    ) else []
    if len(sessions) != 1:
        raise SystemExit(f"compat_checkbox: plainbox-like made no session ({done.returncode}): {done.stderr[-800:]}")
    for line in done.stderr.splitlines():
        if "warning" in line:
            print(f"# ours: {line}", file=sys.stderr)
    state = load_session(os.path.join(repository, "sessions", sessions[0])).state
    ran = sorted((a.started, job) for job in state.results if (a := state.latest(job)).started is not None)
    return {job: state.latest(job).outcome for job in state.results}, list(state.desired_job_list), [j for _, j in ran]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("plan", help="test plan id (ignored with --include)")
    parser.add_argument("providers", nargs="+", help="provider directories")
    parser.add_argument("--include", metavar="REGEX", help="run the jobs matching REGEX instead of a plan")
    parser.add_argument("--namespace", default="com.canonical.certification", help="namespace of the --include plan")
    parser.add_argument("--cbx-home", default=os.environ.get("CBX_HOME"), help="Checkbox's home (default $CBX_HOME)")
    parser.add_argument("--jobpy", default=os.environ.get("CBX_JOBPY"), help="python3 for the jobs ($CBX_JOBPY)")
    parser.add_argument("--checkbox-session", metavar="DIR", help="compare with this Checkbox session")
    parser.add_argument("--only-different", action="store_true", help="print only the rows that differ")
    parser.add_argument(
        "--order-only", action="store_true", help="compare only the bootstrapped order (no job runs), fast"
    )
    args = parser.parse_args(argv)
    if not args.cbx_home:
        parser.error("give --cbx-home or set CBX_HOME (a directory that is kept, so Checkbox is installed once)")
    home = os.path.abspath(args.cbx_home)
    os.makedirs(home, exist_ok=True)
    providers = [os.path.abspath(p) for p in args.providers]
    plan = args.plan
    if args.include:
        extra, plan = plan_provider(home, args.include, args.namespace)
        providers.append(extra)
    if args.order_only:
        return 0 if report_order(plan, providers, home, args.jobpy, None) else 1
    session = args.checkbox_session or run_checkbox(plan, providers, home, args.jobpy)
    theirs = checkbox_outcomes(session)
    ours, order, our_run_order = run_ours(plan, providers, home, args.jobpy)
    rows = [job for job in order if job in ours or job in theirs]
    rows += sorted((set(ours) | set(theirs)) - set(rows))
    width = max((len(job) for job in rows), default=10)
    different = 0
    print(f"# Checkbox session: {session}")
    print(f"{'job':<{width}}  {'checkbox':<14}  {'ours':<18}  same?")
    for job in rows:
        a, b = theirs.get(job), ours.get(job)
        ok = same(a, b)
        different += not ok
        if not (args.only_different and ok):
            print(f"{job:<{width}}  {a or '-':<14}  {b or '-':<18}  {'yes' if ok else 'NO'}")
    print(f"# {plan}: {len(rows)} jobs, {len(rows) - different} same, {different} different")
    same_order = report_order(plan, providers, home, args.jobpy, our_run_order)
    return 1 if different or not same_order else 0


def report_order(plan: str, providers: list[str], home: str, jobpy: str | None, our_run_order: list[str] | None) -> bool:
    """Print the order verdicts; whether ours is Checkbox's (dependencies walked in the order written)."""
    declared = checkbox_order(plan, providers, home, jobpy, "declared")
    hashed = checkbox_order(plan, providers, home, jobpy, "set")
    dry = our_bootstrapped_order(plan, providers, home, jobpy)
    verdict = order_verdict(declared, dry)
    print(f"# order: run --dry-run --bootstrap ({len(dry)} jobs) vs Checkbox's bootstrapped list ({len(declared)} jobs,"
          f" each job's dependencies walked in the order written): {verdict}")
    own = order_verdict(hashed, dry)
    print(f"# order vs Checkbox's own walk in this process (set order, changes from run to run): {own}")
    if our_run_order is not None:
        ran = [job for job in declared if job in set(our_run_order)]
        print(f"# order of the {len(our_run_order)} jobs our run started vs the same jobs in Checkbox's list: "
              f"{order_verdict(ran, list(our_run_order))}")
    return verdict == "same"


if __name__ == "__main__":
    sys.exit(main())
