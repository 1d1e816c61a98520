#!/usr/bin/env python3
"""Measure: time and peak memory of commands facing a gzip bomb and a huge job log.

Builds, in a temporary directory, a repository of a few small sessions, the
same plus one session whose ``session`` file is a gzip bomb (zeros gzipped,
1.5 GB by default), and a session whose job printed 300 MB. Then runs each
command in a fresh interpreter (as ``python -m plainbox_like``) and prints
the median wall time and the peak RSS of that process (from ``wait4``):

* ``list`` (index rebuilt each time) without and with the bomb, and ``check``
  of the bomb;
* ``log``, ``export --format html``, ``--format junit`` and ``--with-logs`` of
  the big job (output thrown away).

    python scripts/measure_limits.py                       # the figures of issue 14
    python scripts/measure_limits.py --bomb 1G --log 32M --repeats 1     # a quick run
    git archive b7b15f0 plainbox_like | tar -x -C /tmp/old       # the code before the limits...
    python scripts/measure_limits.py --baseline /tmp/old         # ...measured in the same run

A bomb smaller than the limit (512 MiB) is no bomb: it is inflated and read.

Progress goes to stderr, results to stdout; the temporary directory is removed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

try:
    import plainbox_like  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from isal import isal_zlib

from plainbox_like.store.model import Attempt
from plainbox_like.store.repository import SessionRepository
from plainbox_like.text import format_size, parse_size

LINE = b"y" * 79 + b"\n"


def small_sessions(root: str, count: int) -> None:
    repo = SessionRepository(root)
    for n in range(count):
        writer = repo.create(title=f"small {n}")
        log, name = writer.new_log("job", 1)
        writer.job_started("job", 1, name)
        log.write("stdout", b"hello\n")
        log.close()
        writer.job_finished("job", Attempt(outcome="pass", return_code=0, io_log_filename=name))
        writer.close()


def big_log_session(root: str, size: int) -> str:
    """A session whose job ``big`` printed *size* bytes of 80-byte lines; returns its path."""
    writer = SessionRepository(root).create(title="big log")
    log, name = writer.new_log("big", 1)
    writer.job_started("big", 1, name)
    chunk = LINE * ((64 << 10) // len(LINE))
    for _ in range(size // len(chunk)):
        log.write("stdout", chunk)
    log.close()
    writer.job_finished("big", Attempt(outcome="pass", return_code=0, io_log_filename=name))
    writer.close()
    return writer.path


def write_bomb(path: str, size: int) -> None:
    deflate = isal_zlib.compressobj(3, isal_zlib.DEFLATED, 31)
    zeros = bytes(1 << 24)
    with open(path, "wb") as f:
        for _ in range(size // len(zeros)):
            f.write(deflate.compress(zeros))
        f.write(deflate.flush())


HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def measure(args: list[str], before=None, code: str = HERE) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of ``python -m plainbox_like ARGS`` run from the tree
    at *code*, its output thrown away."""
    if before is not None:
        before()
    env = {**os.environ, "PYTHONPATH": code}
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "plainbox_like", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=code,  # ``-m`` looks in the current directory first
    )
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    return elapsed, usage.ru_maxrss * 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bomb", type=parse_size, default=parse_size("1.5G"), help="what the bomb inflates to")
    parser.add_argument("--log", type=parse_size, default=300 * 10**6, help="bytes the big job printed")
    parser.add_argument("--sessions", type=int, default=10, help="small sessions beside the bomb")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline", metavar="DIR", help="also run the plainbox_like package found in DIR")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="measure-limits-")
    try:
        print("building the sessions...", file=sys.stderr)
        plain = os.path.join(work, "plain")
        small_sessions(plain, args.sessions)
        bombed = os.path.join(work, "bombed")
        shutil.copytree(plain, bombed, symlinks=True)
        bomb_session = SessionRepository(bombed).create(title="bomb")
        bomb_session.close()
        write_bomb(os.path.join(bomb_session.path, "session"), args.bomb)
        big = big_log_session(os.path.join(work, "big"), args.log)

        def cold(root: str):
            def remove_index() -> None:
                for name in os.listdir(root):
                    if name.startswith("index.sqlite3"):
                        os.remove(os.path.join(root, name))

            return remove_index

        bomb_id = os.path.basename(bomb_session.path)[: -len(".session")]
        runs = [
            (f"list, {args.sessions} sessions (cold index)", ["--repository", plain, "list"], cold(plain)),
            (f"list, the same + a {format_size(args.bomb)} bomb", ["--repository", bombed, "list"], cold(bombed)),
            ("check of the bomb", ["--repository", bombed, "check", bomb_id], None),
            (f"log of a {format_size(args.log)} job", ["log", big, "big"], None),
            ("export --format html", ["export", "--format", "html", big], None),
            ("export --format junit", ["export", "--format", "junit", big], None),
            ("export --with-logs", ["export", "--with-logs", big], None),
        ]
        trees = [("", HERE)] + ([("baseline ", args.baseline)] if args.baseline else [])
        print(f"{'command':<48} {'median s':>9} {'peak RSS':>10}")
        for label, argv, before in runs:
            for name, code in trees:
                results = [measure(argv, before, code) for _ in range(args.repeats)]
                seconds = statistics.median(r[0] for r in results)
                rss = max(r[1] for r in results)
                print(f"{name + label:<48} {seconds:>9.2f} {rss / 2**20:>7.0f} MB", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
