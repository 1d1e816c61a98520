#!/usr/bin/env python3
"""Run a batch into a repository on a small file system that fills up, then resume it.

Needs root (it mounts a tmpfs of --size MB on a temporary directory). Checks
and prints: the run ends with one ``plainbox-like: error:`` line naming the
problem and the resume command, exit status 1, no traceback, no job left
running; every session still loads while the disk is full (``list`` shows
it); after the file system is made larger, ``resume`` completes the batch and
no job that was running when the disk filled up is recorded as ``pass``.

Usage: sudo python scripts/fill_disk.py [--size 2] [--jobs 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

UNITS = """\
id: before
command: echo before

id: big
command: head -c 3000000 /dev/urandom | base64

id: after
command: echo after
"""


def cli(repo: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PLAINBOX_LIKE_REPOSITORY=repo)
    return subprocess.run([sys.executable, "-m", "plainbox_like", *args], env=env, capture_output=True, text=True)


def check(ok: bool, what: str, failures: list[str]) -> None:
    print(f"  {'ok  ' if ok else 'FAIL'} {what}")
    if not ok:
        failures.append(what)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=2, help="size of the small file system in MB (default 2)")
    parser.add_argument("--jobs", "-j", type=int, default=1, help="-j for the runner (default 1)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("fill_disk: needs root (to mount a tmpfs)", file=sys.stderr)
        return 2
    mount_point = tempfile.mkdtemp(prefix="fill-disk-")
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={args.size}M", "tmpfs", mount_point], check=True)
    failures: list[str] = []
    try:
        units = mount_point + ".pxu"  # on the big file system
        with open(units, "w") as f:
            f.write(UNITS)
        repo = os.path.join(mount_point, "repo")
        started = time.monotonic()
        run = cli(repo, "run", "-j", str(args.jobs), units)
        print(f"run on a {args.size} MB file system: exit {run.returncode} in {time.monotonic() - started:.1f} s")
        errors = [line for line in run.stderr.splitlines() if line.startswith("plainbox-like: error:")]
        print("  " + (errors[0] if errors else "(no error line)"))
        check(run.returncode == 1, "exit status 1", failures)
        check(len(errors) == 1 and "resume" in errors[0], "one error line, with the resume command", failures)
        check("Traceback" not in run.stderr, "no traceback", failures)
        listed = cli(repo, "list", "--json")
        check(listed.returncode == 0 and '"incomplete"' in listed.stdout, "list shows the session, incomplete", failures)
        subprocess.run(["mount", "-o", f"remount,size={args.size * 20}M", mount_point], check=True)
        resumed = cli(repo, "resume")
        print(f"resume with room again: exit {resumed.returncode}")
        check("Traceback" not in resumed.stderr, "no traceback", failures)
        shown = cli(repo, "list", "--json")
        check('"complete"' in shown.stdout, "the session is complete", failures)
        show = cli(repo, "show", "--json", "--", os.listdir(os.path.join(repo, "sessions"))[0][: -len(".session")])
        check('"pass"' in show.stdout and show.returncode == 0, "show works", failures)
        check(_outcome(show.stdout, "big") == "crash", "the job running when the disk filled up is a crash", failures)
        os.remove(units)
    finally:
        subprocess.run(["umount", mount_point], check=False)
        os.rmdir(mount_point)
    print("verdict: " + ("OK" if not failures else "FAILED: " + "; ".join(failures)))
    return 0 if not failures else 1


def _outcome(show_json: str, job_id: str) -> str | None:
    doc = json.loads(show_json)
    for job in doc.get("jobs", []):
        if job.get("id") == job_id:
            return job.get("outcome")
    return None


if __name__ == "__main__":
    sys.exit(main())
