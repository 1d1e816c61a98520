#!/usr/bin/env python3
"""Benchmark: ``import`` of archives with many members stays linear.

Builds session archives (a real session plus N small files in
``session-share/``) of two sizes, imports each a few times with
:func:`plainbox_like.exports.tarball.import_archive`, and prints the median
time per size, the time per member, and the ratio of the large to the small
(10x the members: a ratio near 10 is linear).

    python scripts/bench_import.py                  # 10,000 vs 100,000 members
    python scripts/bench_import.py --sizes 1000 10000 --repeats 3

Progress goes to stderr; results go to stdout. Everything is written in a
temporary directory, removed at the end.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import sys
import tarfile
import tempfile
import time

try:
    import plainbox_like  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from plainbox_like.exports import tarball
from plainbox_like.store.repository import SessionRepository


def make_archive(work: str, members: int) -> bytes:
    """A ``.tar.gz`` of one real session holding *members* small files in ``session-share/``."""
    repo = SessionRepository(os.path.join(work, f"src-{members}"))
    with repo.create(title="bench") as writer:
        path = writer.path
    out = io.BytesIO()
    tarball.write_archive(path, out, "bench")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(out.getvalue()), mode="r:gz") as src, tarfile.open(
        fileobj=buffer, mode="w:gz", compresslevel=1, format=tarfile.PAX_FORMAT
    ) as dst:
        for member in src:
            dst.addfile(member, src.extractfile(member) if member.isreg() else None)
        share = tarfile.TarInfo("bench.session/session-share")
        share.type, share.mode = tarfile.DIRTYPE, 0o700
        dst.addfile(share)
        for n in range(members):
            info = tarfile.TarInfo(f"bench.session/session-share/d{n // 1000}/f{n}")
            if n % 1000 == 0:
                folder = tarfile.TarInfo(os.path.dirname(info.name))
                folder.type, folder.mode = tarfile.DIRTYPE, 0o700
                dst.addfile(folder)
            data = b"x\n"
            info.size, info.mode = len(data), 0o600
            dst.addfile(info, io.BytesIO(data))
    shutil.rmtree(repo.root)
    return buffer.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=(10_000, 100_000), metavar="N")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="bench-import-")
    try:
        archives = {}
        for size in args.sizes:
            print(f"building an archive of {size} files...", file=sys.stderr)
            archives[size] = make_archive(work, size)
        times: dict[int, list[float]] = {size: [] for size in args.sizes}
        for repeat in range(args.repeats):
            for size in args.sizes:  # interleaved: noise hits both sizes alike
                sessions = os.path.join(work, f"dest-{size}-{repeat}", "sessions")
                start = time.perf_counter()
                tarball.import_archive(io.BytesIO(archives[size]), sessions, f"bench-{size}")
                times[size].append(time.perf_counter() - start)
                shutil.rmtree(os.path.dirname(sessions))
                print(f"  {size} files: {times[size][-1]:.2f} s", file=sys.stderr)
        small, large = args.sizes
        for size in args.sizes:
            median = statistics.median(times[size])
            print(f"{size:>8} files: median {median:.2f} s ({median / size * 1e6:.0f} us per file)")
        ratio = statistics.median(times[large]) / statistics.median(times[small])
        print(f"ratio {large}/{small}: {ratio:.1f} (members x{large / small:g}; linear is about {large / small:g})")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
