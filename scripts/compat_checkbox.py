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
whether the jobs that ran under both ran in the same order (informational:
Checkbox's own order changes from run to run where a job has several
dependencies, as it walks them in Python set order).
Checkbox's ``not-supported`` and our ``skipped-resource`` /
``skipped-dependency`` count as the same; nothing else does. Exit status 0 if
no row differs, 1 otherwise, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
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


def checkbox_run_order(session_dir: str, jobs: list[str]) -> list[str]:
    """The jobs of a Checkbox session that ran, in the order they ended (their io-log records' times)."""
    slug = {re.sub(r"[^A-Za-z0-9_.-]", "_", job): job for job in jobs}
    logs = os.path.join(session_dir, "io-logs")
    ended = []
    for name in os.listdir(logs) if os.path.isdir(logs) else ():
        if name.endswith(".record.gz") and name[: -len(".record.gz")] in slug:
            ended.append((os.stat(os.path.join(logs, name)).st_mtime_ns, slug[name[: -len(".record.gz")]]))
    return [job for _when, job in sorted(ended)]


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
    from plainbox_like.store.storage import load_session

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
    # The order of the jobs that ran under both (Checkbox's, from when their io-logs were written).
    their_run_order = checkbox_run_order(session, list(theirs))
    both = set(their_run_order) & set(our_run_order)
    a_order = [job for job in their_run_order if job in both]
    b_order = [job for job in our_run_order if job in both]
    if a_order == b_order:
        print(f"# order of the {len(both)} jobs that ran under both: same")
    else:
        at = next(i for i, (x, y) in enumerate(zip(a_order, b_order)) if x != y)
        print(
            f"# order of the {len(both)} jobs that ran under both: differs at {at + 1}: Checkbox {a_order[at]}, "
            f"ours {b_order[at]} (informational: Checkbox walks a job's dependencies in Python set order, which "
            "changes from run to run when a job has several)"
        )
    return 1 if different else 0


if __name__ == "__main__":
    sys.exit(main())
