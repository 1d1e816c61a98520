#!/usr/bin/env python3
"""Benchmark the job runner against baselines measured in the same run.

Prints, for this machine, now:
1. 1,000 jobs running `true`: `plainbox-like run` wall time (fsync, flush, -j 2)
   against a bare Python loop of subprocess.run(["bash", "-c", "true"]);
   medians of N interleaved repeats, as ratios. For -j 2, the same baseline
   loop split in two halves run side by side shows what two workers can get
   from this machine at best (its "ceiling"). The fsync variants have a floor of
   their own, measured too: the baseline loop that also appends a line to a
   journal file and fdatasyncs it before each job, which is the one durable
   write per job that fsync durability requires (a job's start, with the
   previous job's result, durable before the job runs); alone and as two
   halves side by side. A ratio below its floor is out of reach on this disk.
   Floors with each job's files add what the on-disk contract asks of any
   runner per job, whatever the durability: its three log files, created and
   kept, and a fresh, empty temporary working directory of its own name (as
   Checkbox gives each job; the previous job's, renamed, the least it takes);
   baseline+sync+files alone (for fsync), and two half-loops
   side by side with and without the journal (for -j 2, fsync and flush).
   -j 2 flush has a floor with a coordinator too, since issue 19 asks for one
   process that journals and hands jobs out to executors (to feed a cluster):
   one Python process writing a journal line for each job's start and result
   and handing each job over a pipe to one of two forked workers, which run
   them as the floor with files does.
   Each variant's CPU per job (user + system, of all its processes: the wait4
   figures of the command, which include every descendant waited for) is
   printed beside its time; for -j 2, that CPU over this machine's cores is the
   least wall time that run could take with every core busy throughout.
2. 200, 1,000 and 5,000 jobs: the marginal cost per job of jobs 1,000-5,000
   against jobs 200-1,000 (constant cost per job means a ratio near 1).
3. A job printing `seq 1 16000000` (~130 MB) against `seq ... | gzip -1 > file`,
   and the runner's peak RSS, also for a job writing 128 MB on one line.

4. cpu: the coordinator's own CPU time per job (getrusage(RUSAGE_SELF) of the process
   that runs the command line: the jobs and the -j N workers are its children, not
   counted), for 1,000 `true` jobs at -j 1, 2 and 8, less a one-job run; and the
   journal's fdatasyncs per job with -j N (group commit: counted by the workers).
   Beside it, the same way, the -j N workers' own CPU per job (each worker's
   RUSAGE_SELF, written as it ends) and the jobs' (the rest of the children's).
5. sleep: 1,000 jobs of `sleep 0.01` at -j 4 and -j 8 against the ideal (total sleep / N)
   and against N bare loops side by side; the run's start-up (a one-job run) is taken off.
   Floor: one loop alone gives one slot's time per job at best (`bash -c` and its sleep,
   uncontended, its start-up taken off); -j N takes at least count / N times that.
6. print: 1,000 jobs from a .pxu file printing to both streams (`echo hello N; echo err N >&2`,
   every 100th exits 1, one prints 10 MiB) against a bare subprocess.run loop of the same commands.
   Floor for fsync: the same loop also making durable what fsync requires of any runner per job
   (its output in its three log files, fdatasynced together, and one journal line, fdatasynced).
7. queue (only with --only queue: minutes): 100,000 queued `true` jobs, -j 2, flush: the
   coordinator's peak RSS, and the time per job of jobs 50,000-100,000 against jobs 1,000-10,000
   (from when each progress line is printed).

0. Context: what creating a file and a durable journal append cost in this file system,
   measured first (every job pays for one of each with fsync durability), and what creating a
   job's three log files costs when they are kept, one job after another, as in a run.

Every command measured finds the package's modules compiled, as an installed package has
them (pip compiles them at install): the bench compiles them first into a bytecode cache
in its own temporary directory (PYTHONPYCACHEPREFIX), which every run then reads, whatever
PYTHONDONTWRITEBYTECODE says. Otherwise each run would compile ~130 modules again (about
60 ms here), a cost no installed copy pays.

Every timed run starts after os.sync(): the files an earlier run left to write
back would otherwise be committed by the next run's first fdatasync calls,
charging one variant for another's writes. Section 1 also prints the start-up
cost (one job against one subprocess.run), which is in every ratio.

Each goal of issue 19 is printed as: figure, baseline, ratio, goal, ok/MISSED. A goal
that the least work of any runner may already miss here is followed by a FLOOR line: what
the goal's own comparison gives for that work (measured in the same run, never assumed),
and the run against it; where that ratio is above the goal, a line says the goal is out
of reach on this machine. The floors' loops spawn their jobs as the runner does (posix_spawn,
cheaper than the baselines' subprocess.run), so that no runner beats a floor by spawning faster.

Usage: python scripts/bench_runner.py [--repeats 5] [--quick] [--dir DIR] [--only SECTION ...]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import NamedTuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchenv import compiled_env  # noqa: E402 - a script beside this one

BASELINE = """
import subprocess, sys
for _ in range(int(sys.argv[1])):
    subprocess.run(["bash", "-c", "true"], capture_output=True)
"""
#: The baseline plus one durable journal append per job (sys.argv[2]: the journal file).
BASELINE_SYNC = """
import os, subprocess, sys
fd = os.open(sys.argv[2], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
for n in range(int(sys.argv[1])):
    os.write(fd, b'{"op":"start","job":"job-%d","attempt":1,"seq":%d}\\n' % (n, n))
    os.fdatasync(fd)
    subprocess.run(["bash", "-c", "true"], capture_output=True)
"""
#: Runs the command line in this process, then writes to sys.argv[1] what this process alone cost (its
#: children, the jobs and any -j N workers, are not counted), what its children cost, and the fdatasyncs of the
#: journal's group commit. Each -j N worker writes its own CPU and its jobs' to sys.argv[1] + ".worker-PID".
DRIVER = """
import json, os, resource, sys
def cpu(who):
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime
from plainbox_like.run import workers
serve = workers._serve
def measured_serve(*args, **kwargs):
    try:
        return serve(*args, **kwargs)
    finally:
        with open(f"{sys.argv[1]}.worker-{os.getpid()}", "w") as f:
            json.dump({"cpu_s": cpu(resource.RUSAGE_SELF), "jobs_cpu_s": cpu(resource.RUSAGE_CHILDREN)}, f)
workers._serve = measured_serve
syncs = []
try:
    from plainbox_like.store import journalsync
except ImportError:  # a tree from before group commit: its syncs are not counted
    syncs = None
else:
    close = journalsync.JournalSync.close
    def counting_close(self):
        syncs.append(self.syncs)
        close(self)
    journalsync.JournalSync.close = counting_close
from plainbox_like.cli.main import main
code = main(sys.argv[2:])
usage = resource.getrusage(resource.RUSAGE_SELF)
with open(sys.argv[1], "w") as f:
    json.dump({"code": code, "cpu_s": usage.ru_utime + usage.ru_stime, "maxrss_kb": usage.ru_maxrss,
               "children_cpu_s": cpu(resource.RUSAGE_CHILDREN),
               "journal_syncs": None if syncs is None else sum(syncs)}, f)
sys.exit(code)
"""
#: The bare loop of section 6: the same commands, from a JSON list (sys.argv[1]).
BASELINE_COMMANDS = """
import json, subprocess, sys
for command in json.load(open(sys.argv[1])):
    subprocess.run(["bash", "-c", command], capture_output=True)
"""
#: How the floors run a job: `bash -c COMMAND` spawned as the runner spawns its jobs (posix_spawn in a process group
#: of its own, stdin from /dev/null, stdout and stderr on pipes read to their end, then reaped), which costs less
#: than subprocess.run: a runner must not beat a floor by spawning its jobs differently from it.
LEAN_SPAWN = """\
import os, select, shutil
BASH = shutil.which("bash")
def run_job(command, cwd=None, meanwhile=None):
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    back = None
    if cwd is not None:  # posix_spawn cannot change directory: go there and back, as the runner does
        back = os.open(".", os.O_RDONLY)
        os.chdir(cwd)
    try:
        pid = os.posix_spawn(BASH, [BASH, "-c", command], os.environ, setpgroup=0, file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, out_w, 1), (os.POSIX_SPAWN_DUP2, err_w, 2)])
    finally:
        if back is not None:
            os.fchdir(back)
            os.close(back)
    os.close(out_w)
    os.close(err_w)
    if meanwhile is not None:  # what the runner does while the job's shell starts
        meanwhile()
    chunks = {out_r: [], err_r: []}
    poller = select.poll()
    for fd in chunks:
        poller.register(fd, select.POLLIN)
    left = len(chunks)
    while left:
        for fd, _ in poller.poll():
            data = os.read(fd, 1 << 16)
            if data:
                chunks[fd].append(data)
            else:
                poller.unregister(fd)
                os.close(fd)
                left -= 1
    os.waitpid(pid, 0)
    return b"".join(chunks[out_r]), b"".join(chunks[err_r])
"""
#: The floors' prelude: LEAN_SPAWN, and a directory of the loop's own for its jobs' log files, made in sys.argv[-1]
#: (kept: the next repeat creates its files among them, as a run does in its repository).
FLOOR_PRELUDE = LEAN_SPAWN + """\
import sys, tempfile
logs = tempfile.mkdtemp(prefix="io-logs-", dir=sys.argv[-1])
def open_logs(n):
    return [os.open(os.path.join(logs, "job-%d%s" % (n, suffix)), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            for suffix in (".record.gz", ".stdout", ".stderr")]
def create_logs(n):
    for fd in open_logs(n):
        os.close(fd)
def next_cwd(done, n):
    # Job n's fresh, empty working directory: the first one made, each next one the previous job's (done) renamed.
    if done is None:
        return tempfile.mkdtemp(prefix="cwd-", dir=sys.argv[-1])
    cwd = os.path.join(sys.argv[-1], "cwd-%d-%s" % (n, os.urandom(4).hex()))
    os.rename(done, cwd)
    return cwd
"""
#: Section 1's floors with files: sys.argv[1] `true` jobs, each with the on-disk contract's minimum whatever the
#: durability: its three log files, created (O_EXCL) and kept, and a fresh, empty temporary working directory of its
#: own name to run in (as Checkbox gives every job): the first one made, each next one the previous job's, left
#: empty, renamed (the least it takes: the runner does it too), the last one removed; with a journal (sys.argv[2],
#: "-" for none) one durable line before each job, as BASELINE_SYNC. The log files are created while the job's shell
#: starts, as the runner does: a floor must not do in turn what a runner may overlap.
FILES_LOOP = FLOOR_PRELUDE + """\
count, journal = int(sys.argv[1]), sys.argv[2]
journal = os.open(journal, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600) if journal != "-" else None
done = None
for n in range(count):
    if journal is not None:
        os.write(journal, b'{"op":"start","job":"job-%d","attempt":1,"seq":%d}\\n' % (n, n))
        os.fdatasync(journal)
    cwd = next_cwd(done, n)
    run_job("true", cwd, lambda: create_logs(n))
    done = cwd
if done is not None:
    os.rmdir(done)
"""
#: Section 1's floor for -j 2 with a coordinator, as issue 19 asks of the runner (one process that journals and hands
#: jobs out to executors, so that it can feed a cluster): this process writes a journal line for each job's start and
#: result (not synced: flush durability) and hands each job to one of two forked workers over a pipe (its number, four
#: bytes each way); a worker runs its jobs as FILES_LOOP does (the previous job's directory renamed, the three log
#: files created while the shell starts). The least such a runner does per job, in Python as the runner is.
COORDINATED_LOOP = FLOOR_PRELUDE + """\
import select, struct
count = int(sys.argv[1])
journal = os.open(os.path.join(logs, "journal"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
def serve(commands, events):
    done = None
    while True:
        data = os.read(commands, 64)
        if not data:
            break
        for (n,) in struct.iter_unpack("<I", data):
            cwd = next_cwd(done, n)
            run_job("true", cwd, lambda: create_logs(n))
            done = cwd
            os.write(events, struct.pack("<I", n))
    if done is not None:
        os.rmdir(done)
workers = {}
for _ in range(2):
    commands_r, commands_w = os.pipe()
    events_r, events_w = os.pipe()
    if os.fork() == 0:
        os.close(commands_w)
        os.close(events_r)
        serve(commands_r, events_w)
        os._exit(0)
    os.close(commands_r)
    os.close(events_w)
    workers[events_r] = commands_w
given = 0
def hand_out(commands):
    global given
    if given < count:
        os.write(journal, b'{"op":"start","job":"job-%d","attempt":1,"seq":%d}\\n' % (given, given))
        os.write(commands, struct.pack("<I", given))
        given += 1
poller = select.epoll()
for events_r, commands_w in workers.items():
    poller.register(events_r, select.EPOLLIN)
    hand_out(commands_w)
finished = 0
while finished < count:
    for fd, _ in poller.poll():
        for (n,) in struct.iter_unpack("<I", os.read(fd, 64)):
            finished += 1
            os.write(journal, b'{"op":"result","job":"job-%d","outcome":"pass"}\\n' % n)
            hand_out(workers[fd])
for commands_w in workers.values():
    os.close(commands_w)
for _ in workers:
    os.wait()
"""
#: Section 6's floor: BASELINE_COMMANDS plus the durable writes fsync durability requires of any runner per job:
#: its output in its three log files, opened while the job's shell starts (the record is the output compressed by
#: isal at its fastest, as a .record.gz is: writing 10 MiB again would cost more than a runner must), made durable
#: together (as the runner does: the disk takes the three requests at once), then one journal line made durable.
DURABLE_WRITES = """\
    for fd, data in zip(fds, (isal_zlib.compress(out + err, 0), out, err)):
        os.write(fd, data)
    list(pool.map(os.fdatasync, fds))
    for fd in fds:
        os.close(fd)
    os.write(journal, b'{"op":"result","job":"job-%d","attempt":1,"seq":%d}\\n' % (n, n))
    os.fdatasync(journal)
"""


def durable_writes_loop() -> str:
    """Section 6's floor: the commands of a JSON list (sys.argv[1]) run in turn, each with :data:`DURABLE_WRITES`."""
    setup = ("import json\nfrom isal import isal_zlib\nfrom concurrent.futures import ThreadPoolExecutor\n"
             "pool = ThreadPoolExecutor(3)\n"
             'journal = os.open(os.path.join(logs, "journal"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)\n')
    loop = ("for n, command in enumerate(json.load(open(sys.argv[1]))):\n    fds = []\n"
            "    out, err = run_job(command, meanwhile=lambda: fds.extend(open_logs(n)))\n")
    return FLOOR_PRELUDE + setup + loop + DURABLE_WRITES


def side_by_side(loop: str, count: int, *args: str) -> list[str]:
    """Two bare loops of half of *count* jobs each, side by side, no coordination (*args* given to both); it
    fails if either does."""
    first, second = ('"$0" -c "$1" %d "${@:2}" &' % n for n in (count // 2, count - count // 2))
    return ["bash", "-c", f"{first} first=$!; {second} wait $! && wait $first", sys.executable, loop, *args]


def goal_line(name: str, figure: float, baseline: float, goal: float, unit: str = "s", what: str = "ratio") -> str:
    """``name: figure (baseline B): ratio R, goal <= G ok`` -- one goal of issue 19."""
    ratio = figure / baseline if baseline else float("inf")
    verdict = "ok" if ratio <= goal else "MISSED"
    return f"   GOAL {name}: {figure:.3f} {unit} against {baseline:.3f} {unit}: {what} {ratio:.2f}, goal <= {goal}  {verdict}"


def usable_cores() -> int:
    """The cores this process (and what it runs) may use."""
    return len(os.sched_getaffinity(0))


def cpu_bound_line(name: str, run: dict, ceiling: dict, count: int) -> str:
    """What the CPU that *run* used says of its wall time: with every core busy all along, its CPU over this
    machine's cores; and that against the ceiling (the run's own bound, not a floor for any runner)."""
    cores = usable_cores()
    bound = run["cpu_ms_per_job"] * count / 1000 / cores
    return (f"   CPU {name}: {run['cpu_ms_per_job']:.3f} ms a job over all its processes, the ceiling's loops "
            f"{ceiling['cpu_ms_per_job']:.3f}: on {cores} cores it takes {bound:.3f} s at least, "
            f"{bound / ceiling['median_s']:.2f} times the ceiling; its wall time is {run['median_s'] / bound:.2f} "
            f"times that bound")


def floor_line(name: str, what: str, floor: float, baseline: float, goal: float, run: float) -> str:
    """``FLOOR name: what F against B: ratio R, goal <= G``: what a goal's own comparison gives for the least
    work any runner must do (measured now), and the run against it; then, if that ratio is above the goal, a
    line saying so: no runner meets that goal on this machine."""
    ratio = floor / baseline if baseline else float("inf")
    line = (f"   FLOOR {name}: {what}, {floor:.3f} s against {baseline:.3f} s: ratio {ratio:.2f}, goal <= {goal}; "
            f"the run is {run / floor:.2f} times the floor")
    if ratio > goal:
        line += (f"\n   the goal for {name} (<= {goal}) is below its floor here ({ratio:.2f}): "
                 "out of reach on this machine")
    return line


class Timed(NamedTuple):
    wall: float  # seconds
    code: int  # exit code
    peak_kb: int  # peak RSS of it and its descendants, KiB
    cpu: float  # seconds of CPU (user + system) of it and every descendant it and they waited for


def timed(argv: list[str], env: dict[str, str] | None = None) -> Timed:
    """Run *argv* and wait for it: its wall time, exit code, peak RSS and CPU (with its descendants')."""
    os.sync()  # start from a clean page cache: no writeback left over from the previous run
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    return Timed(wall, os.waitstatus_to_exitcode(status), usage.ru_maxrss, usage.ru_utime + usage.ru_stime)


#: Compiles every module of the package that the running interpreter's path finds (into its byte-code cache).
COMPILE_PACKAGE = """
import compileall, os, plainbox_like
raise SystemExit(not compileall.compile_dir(os.path.dirname(plainbox_like.__file__), quiet=1))
"""


def bench_env(tmp: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of every measured command (*base*, default ours): the repository and a byte-code
    cache in *tmp*, filled now.

    The cache gets the package's modules and those of its dependencies that a run imports (by a
    warm-up run of two jobs at -j 2), so that no timed run compiles any (see benchenv.compiled_env).
    """
    env = dict(os.environ if base is None else base, PLAINBOX_LIKE_REPOSITORY=os.path.join(tmp, "repo"))
    env = compiled_env(env, os.path.join(tmp, "pycache"))
    for argv in ([sys.executable, "-c", COMPILE_PACKAGE], plainbox_like(["run", job_file(tmp, 2), "-j", "2"])):
        code = timed(argv, env).code
        if code != 0:
            raise SystemExit(f"warm-up: exit code {code} from {' '.join(argv)}")
    return env


def plainbox_like(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "plainbox_like", *args]


def job_file(directory: str, count: int) -> str:
    path = os.path.join(directory, f"true-{count}.txt")
    with open(path, "w") as f:
        f.write("true\n" * count)
    return path


def median_runs(
    variants: dict[str, list[str]], repeats: int, env: dict[str, str], codes: tuple[int, ...] = (0,),
    loops: tuple[str, ...] = (), cpu: dict[str, list[float]] | None = None,
) -> dict[str, list[float]]:
    """Run each variant *repeats* times, interleaved; return all wall times (and put the CPU times of all
    their processes in *cpu*). Variants named in *loops* must exit 0 whatever *codes* allows (a bare loop's
    exit 1 is a traceback)."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, argv in variants.items():
            run = timed(argv, env)
            if run.code not in ((0,) if name in loops else codes):
                raise SystemExit(f"{name}: exit code {run.code} from {' '.join(argv)}")
            times[name].append(run.wall)
            if cpu is not None:
                cpu.setdefault(name, []).append(run.cpu)
    return times


def section_overhead(tmp: str, repeats: int, count: int, env: dict[str, str]) -> dict:
    jobs = job_file(tmp, count)
    variants = {
        "baseline (subprocess.run loop)": [sys.executable, "-c", BASELINE, str(count)],
        "run, fsync": plainbox_like(["run", jobs, "--durability", "fsync"]),
        "run, flush": plainbox_like(["run", jobs, "--durability", "flush"]),
        "run -j 2, fsync": plainbox_like(["run", jobs, "-j", "2"]),
        "run -j 2, flush": plainbox_like(["run", jobs, "-j", "2", "--durability", "flush"]),
        # What two workers can get out of this machine at best: two independent
        # baseline loops of half the jobs each, side by side, no coordination.
        "ceiling: 2 loops side by side": side_by_side(BASELINE, count),
        "floor for fsync: baseline+sync": [
            sys.executable, "-c", BASELINE_SYNC, str(count), os.path.join(tmp, "floor-journal"),
        ],
        "floor for -j 2 fsync: 2 of them": side_by_side(BASELINE_SYNC, count, os.path.join(tmp, "floor-journal-2")),
        # The same with each job's files (FILES_LOOP), which every run makes whatever its durability.
        "floor for fsync with files": [
            sys.executable, "-c", FILES_LOOP, str(count), os.path.join(tmp, "floor-journal-3"), tmp,
        ],
        "ceiling with files": side_by_side(FILES_LOOP, count, "-", tmp),
        "floor for -j 2 fsync with files": side_by_side(FILES_LOOP, count, os.path.join(tmp, "floor-journal-4"), tmp),
        "floor for -j 2 with coordinator": [sys.executable, "-c", COORDINATED_LOOP, str(count), tmp],
    }
    goals = {"run, fsync": 1.3, "run, flush": 1.15, "run -j 2, fsync": 0.75}
    cpu: dict[str, list[float]] = {}
    times = median_runs(variants, repeats, env, cpu=cpu)
    base = statistics.median(times["baseline (subprocess.run loop)"])
    print(f"\n1. {count} jobs running `true`, median of {repeats} interleaved runs; CPU: of all its processes "
          "(user + system), per job")
    print(f"   {'variant':32} {'median s':>9} {'ms/job':>7} {'ratio':>6} {'CPU ms/job':>10}  goal")
    result = {}
    for name, values in times.items():
        med = statistics.median(values)
        ratio = med / base
        cpu_ms = statistics.median(cpu[name]) / count * 1000
        goal = goals.get(name)
        verdict = "" if goal is None else f"<= {goal}  {'ok' if ratio <= goal else 'MISSED'}"
        print(f"   {name:32} {med:9.3f} {med / count * 1000:7.3f} {ratio:6.2f} {cpu_ms:10.3f}  {verdict}")
        result[name] = {"median_s": med, "ratio": ratio, "cpu_ms_per_job": cpu_ms, "all": values}
    with_files = {"run, fsync": "floor for fsync with files", "run -j 2, fsync": "floor for -j 2 fsync with files",
                  "run -j 2, flush": "ceiling with files"}
    for key, what, floors in (
        ("above_floor", "its floor", {"run, fsync": "floor for fsync: baseline+sync",
                                      "run -j 2, fsync": "floor for -j 2 fsync: 2 of them"}),
        ("above_floor_with_files", "its floor with each job's files", with_files),
    ):
        above = {name: result[name]["ratio"] - result[floor]["ratio"] for name, floor in floors.items()}
        print(f"   above {what} (what the runner adds to it): "
              + ", ".join(f"{name} {value:+.2f}" for name, value in above.items()))
        for name, floor in floors.items():
            if name in goals and result[floor]["ratio"] > goals[name]:
                print(f"   the goal for {name} (<= {goals[name]}) is below {what} here ({result[floor]['ratio']:.2f}): "
                      "out of reach on this machine")
        result[key] = above
    # Issue 19's goals for this section: each against its same-run baseline, then against its floors, and for -j 2
    # what its CPU allows.
    ceiling = result["ceiling: 2 loops side by side"]["median_s"]
    coordinated = ("a coordinator journaling each job, two workers running them with their files",
                   "floor for -j 2 with coordinator")
    for name, floors in (
        ("run -j 2, fsync", [("2 of baseline+sync+files", with_files["run -j 2, fsync"])]),
        ("run -j 2, flush", [("ceiling with files", with_files["run -j 2, flush"]), coordinated]),
    ):
        print(goal_line(f"{name} against the ceiling (2 bare half-loops side by side)",
                        result[name]["median_s"], ceiling, 1.2))
        for what, floor in floors:
            print(floor_line(f"{name} against the ceiling", what, result[floor]["median_s"], ceiling, 1.2,
                             result[name]["median_s"]))
        print(cpu_bound_line(name, result[name], result["ceiling: 2 loops side by side"], count))
    print(goal_line("run, fsync against its floor (baseline+sync)", result["run, fsync"]["median_s"],
                    result["floor for fsync: baseline+sync"]["median_s"], 1.05))
    print(floor_line("run, fsync against its floor", "baseline+sync+files",
                     result["floor for fsync with files"]["median_s"],
                     result["floor for fsync: baseline+sync"]["median_s"], 1.05, result["run, fsync"]["median_s"]))
    result["startup"] = section_startup(tmp, repeats, env)
    return result


def section_startup(tmp: str, repeats: int, env: dict[str, str]) -> dict:
    """What one run costs before and after its jobs: one job against the baseline loop of one."""
    variants = {"baseline": [sys.executable, "-c", BASELINE, "1"], "run": plainbox_like(["run", job_file(tmp, 1)])}
    times = median_runs(variants, max(repeats, 7), env)
    base, ours = (statistics.median(times[name]) for name in variants)
    print(f"   start-up (one job): run {ours * 1000:.0f} ms, baseline {base * 1000:.0f} ms: "
          f"{(ours - base) * 1000:.0f} ms more per run")
    return {"baseline_s": base, "run_s": ours}


def filesystem_costs(directory: str, count: int = 300) -> dict:
    """What a job costs the runner in this file system, whatever the runner does: creating one
    file (its io-log) and appending a line + fdatasync (a durable journal entry); medians in µs.
    On a file system that is slow to create files (e.g. ext4 without a journal after many files
    were deleted nearby: it skips recently freed inodes) the first figure can be ten times the
    usual one, and every ratio below pays for it. Its files stay until *directory* goes (the bench's own, at
    its end): freed now, they would slow the creates of the runs measured next."""
    scratch = tempfile.mkdtemp(prefix="fs-costs-", dir=directory)
    creates, syncs, dirs, logs = [], [], [], []
    fd = os.open(os.path.join(scratch, "journal"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for n in range(count):
            started = time.perf_counter()
            os.close(os.open(os.path.join(scratch, f"job-{n}.record.gz"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            creates.append(time.perf_counter() - started)
            started = time.perf_counter()
            os.write(fd, b'{"op": "finished", "job": "x", "outcome": "pass"}\n')
            os.fdatasync(fd)
            syncs.append(time.perf_counter() - started)
            started = time.perf_counter()  # a job's temporary working directory (made and removed by the executor)
            os.rmdir(tempfile.mkdtemp(prefix="cwd-", dir=scratch))
            dirs.append(time.perf_counter() - started)
        # A job's three log files, one job after the other, kept (as a run does): where creating a file is slow to
        # find a free inode (ext4 without a journal skips recently freed ones), this is far above the first figure.
        logs_dir = os.path.join(scratch, "io-logs")
        os.mkdir(logs_dir)
        for n in range(count * 3):
            started = time.perf_counter()
            for suffix in (".record.gz", ".stdout", ".stderr"):
                os.close(os.open(os.path.join(logs_dir, f"job-{n}{suffix}"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            logs.append(time.perf_counter() - started)
    finally:
        os.close(fd)
    figures = {"create_us": statistics.median(creates) * 1e6, "append_fdatasync_us": statistics.median(syncs) * 1e6,
               "mkdir_rmdir_us": statistics.median(dirs) * 1e6, "job_logs_us": statistics.median(logs) * 1e6}
    print(f"\n0. this file system ({directory}): creating a file {figures['create_us']:.0f} µs, "
          f"appending a line + fdatasync {figures['append_fdatasync_us']:.0f} µs, "
          f"making and removing a directory {figures['mkdir_rmdir_us']:.0f} µs (medians of {count}); "
          f"a job's three log files, kept, one job after another: {figures['job_logs_us']:.0f} µs "
          f"(median of {count * 3} jobs; the bare loops create none)")
    return figures


def section_marginal(tmp: str, repeats: int, sizes: tuple[int, int, int], env: dict[str, str]) -> dict:
    variants = {str(n): plainbox_like(["run", job_file(tmp, n)]) for n in sizes}
    times = median_runs(variants, repeats, env)
    med = {int(k): statistics.median(v) for k, v in times.items()}
    small, mid, large = sizes
    early = (med[mid] - med[small]) / (mid - small)
    late = (med[large] - med[mid]) / (large - mid)
    print(f"\n2. marginal cost per job (fsync), median of {repeats} interleaved runs")
    for n in sizes:
        print(f"   {n:6} jobs: {med[n]:8.3f} s")
    print(f"   jobs {small}-{mid}: {early * 1000:.3f} ms/job; jobs {mid}-{large}: {late * 1000:.3f} ms/job")
    ratio = late / early
    print(f"   ratio late/early: {ratio:.2f}  goal <= 1.15  {'ok' if ratio <= 1.15 else 'MISSED'}")
    return {"medians_s": med, "early_ms": early * 1000, "late_ms": late * 1000, "ratio": ratio}


def section_output(tmp: str, repeats: int, lines: int, env: dict[str, str]) -> dict:
    out = os.path.join(tmp, "seq.gz")
    variants = {
        "baseline (seq | gzip -1 > file)": ["bash", "-c", f"seq 1 {lines} | gzip -1 > {out}"],
        "run -c 'seq ...'": plainbox_like(["run", "-c", f"seq 1 {lines}", "--durability", "flush"]),
    }
    walls: dict[str, list[float]] = {k: [] for k in variants}
    rss: dict[str, list[int]] = {k: [] for k in variants}
    for _ in range(repeats):
        for name, argv in variants.items():
            wall, code, peak, _ = timed(argv, env)
            if code != 0:
                raise SystemExit(f"{name}: exit code {code}")
            walls[name].append(wall)
            rss[name].append(peak)
    one_line = plainbox_like(["run", "-c", "head -c 134217728 /dev/zero | tr '\\0' x"])
    _, code, line_rss, _ = timed(one_line, env)
    base = statistics.median(walls["baseline (seq | gzip -1 > file)"])
    ours = statistics.median(walls["run -c 'seq ...'"])
    peak = max(rss["run -c 'seq ...'"]) / 1024
    print(f"\n3. a job printing `seq 1 {lines}` ({_seq_bytes(lines) / 1e6:.0f} MB), median of {repeats}")
    print(goal_line(f"run -c 'seq 1 {lines}' against seq | gzip -1", ours, base, 1.2))
    print(goal_line("runner peak RSS (max over runs)", peak, 100.0, 1.0, "MB", what="figure/goal"))
    print(f"   128 MB on one line: exit {code}, runner peak RSS {line_rss / 1024:.1f} MB  "
          f"{'ok' if line_rss / 1024 <= 100 else 'MISSED'}")
    return {"baseline_s": base, "ours_s": ours, "ratio": ours / base, "peak_rss_mb": peak,
            "one_line_rss_mb": line_rss / 1024}


def driven(tmp: str, args: list[str], env: dict[str, str], codes: tuple[int, ...] = (0,)) -> dict:
    """Run ``plainbox-like ARGS`` through :data:`DRIVER`; its figures plus the wall time, and its children's
    CPU split: ``workers_cpu_s`` (the -j N workers' own) and ``jobs_cpu_s`` (the rest: the jobs)."""
    run_dir = tempfile.mkdtemp(prefix="driven-", dir=tmp)  # kept: files freed now would slow later runs' creates
    out = os.path.join(run_dir, "driver.json")
    wall, code, _, _ = timed([sys.executable, "-c", DRIVER, out, *args], env)
    if code not in codes:
        raise SystemExit(f"exit code {code} from plainbox-like {' '.join(args)}")
    with open(out) as f:
        figures = json.load(f)
    figures["wall_s"] = wall
    workers = 0.0
    for name in os.listdir(run_dir):
        if name.startswith("driver.json.worker-"):
            with open(os.path.join(run_dir, name)) as f:
                workers += json.load(f)["cpu_s"]
    figures["workers_cpu_s"] = workers
    figures["jobs_cpu_s"] = figures["children_cpu_s"] - workers
    return figures


def section_cpu(tmp: str, repeats: int, count: int, env: dict[str, str]) -> dict:
    """The coordinator's own CPU per job (RUSAGE_SELF), less a one-job run; journal fdatasyncs per job; and the
    CPU per job of the -j N workers and of the jobs, beside it."""
    many, one = job_file(tmp, count), job_file(tmp, 1)
    parallels = (1, 2, 8)
    parts = ("cpu_s", "workers_cpu_s", "jobs_cpu_s")  # the coordinator's own, its workers', its jobs'
    cpu: dict[tuple[int, int, str], list[float]] = {}
    syncs: dict[int, list[int]] = {}
    for _ in range(repeats):
        for parallel in parallels:
            for n, path in ((count, many), (1, one)):
                figures = driven(tmp, ["run", path, "-j", str(parallel)], env)
                for part in parts:
                    cpu.setdefault((parallel, n, part), []).append(figures[part])
                if n == count:
                    syncs.setdefault(parallel, []).append(figures["journal_syncs"])
    print(f"\n4. the coordinator's own CPU per job (RUSAGE_SELF, jobs and workers excluded), {count} `true` jobs "
          f"less one job, fsync, median of {repeats}")
    result = {}
    for parallel in parallels:
        whole, alone = (statistics.median(cpu[(parallel, n, "cpu_s")]) for n in (count, 1))
        per_job = {part: (statistics.median(cpu[(parallel, count, part)]) - statistics.median(cpu[(parallel, 1, part)]))
                   / (count - 1) * 1000 for part in parts}
        counted = [value for value in syncs[parallel] if value is not None]
        group = statistics.median(counted) / count if counted else None
        note = ""
        if parallel > 1 and group is not None:
            note = f"; journal fdatasyncs per job (group commit, counted by the workers) {group:.2f}"
        print(f"   -j {parallel}: {whole:.3f} s CPU for {count} jobs, {alone:.3f} s for one{note}")
        print(goal_line(f"coordinator CPU per job at -j {parallel}", per_job["cpu_s"], 0.15, 1.0, "ms",
                        what="figure/goal"))
        print(f"      beside it, per job: the workers' own CPU {per_job['workers_cpu_s']:.3f} ms, "
              f"the jobs' {per_job['jobs_cpu_s']:.3f} ms")
        result[parallel] = {"cpu_ms_per_job": per_job["cpu_s"], "journal_syncs_per_job": group if parallel > 1 else None,
                            "workers_cpu_ms_per_job": per_job["workers_cpu_s"], "jobs_cpu_ms_per_job": per_job["jobs_cpu_s"]}
    return result


def section_sleep(tmp: str, repeats: int, count: int, env: dict[str, str]) -> dict:
    """Jobs that wait (`sleep 0.01`) at -j 4 and -j 8 against the ideal overlap and N bare loops side by side.

    Their floor: one loop alone (:data:`LEAN_SPAWN`, its start-up taken off) gives the time per job of one slot at best,
    `bash -c` and its sleep one after the other, uncontended; -j N can do no better than count / N times it."""
    nap = 0.01
    path = os.path.join(tmp, f"sleep-{count}.txt")
    with open(path, "w") as f:
        f.write(f"sleep {nap}\n" * count)
    loop = BASELINE.replace('"true"', f'"sleep {nap}"')
    lean = LEAN_SPAWN + f"import sys\nfor _ in range(int(sys.argv[1])):\n    run_job('sleep {nap}')\n"  # the floor's loop
    alone = max(100, count // 8)
    variants: dict[str, list[str]] = {
        "start-up: run of one job": plainbox_like(["run", job_file(tmp, 1)]),
        "start-up: bare loop of no job": [sys.executable, "-c", lean, "0"],
        "one bare loop alone": [sys.executable, "-c", lean, str(alone)],
    }
    for parallel in (4, 8):
        variants[f"run -j {parallel}"] = plainbox_like(["run", path, "-j", str(parallel)])
        share = count // parallel
        variants[f"{parallel} bare loops side by side"] = [
            "bash", "-c", " ".join(['"$0" -c "$1" "$2" &'] * parallel) + " wait", sys.executable, loop, str(share),
        ]
    times = median_runs(variants, repeats, env)
    med = {name: statistics.median(values) for name, values in times.items()}
    startup = med["start-up: run of one job"]
    per_job = (med["one bare loop alone"] - med["start-up: bare loop of no job"]) / alone
    print(f"\n5. {count} jobs of `sleep {nap}`, median of {repeats} interleaved runs (start-up {startup:.3f} s taken off)")
    print(f"   one slot at best: {per_job * 1000:.1f} ms a job against {nap * 1000:.0f} ms of sleep "
          f"(one bare loop of {alone} jobs alone, its start-up taken off)")
    result = {"startup_s": startup, "floor_ms_per_job": per_job * 1000}
    for parallel in (4, 8):
        ideal = count * nap / parallel
        ours = med[f"run -j {parallel}"] - startup
        loops = med[f"{parallel} bare loops side by side"]
        floor = count / parallel * per_job
        print(f"   -j {parallel}: run {ours:.3f} s, {parallel} bare loops side by side {loops:.3f} s "
              f"(ratio {ours / loops:.2f}), ideal {ideal:.3f} s")
        print(goal_line(f"run -j {parallel} against the ideal (total sleep / {parallel})", ours, ideal, 1.1))
        slot = f"{count / parallel:g} jobs a slot at {per_job * 1000:.1f} ms"
        print(floor_line(f"run -j {parallel} against the ideal", slot, floor, ideal, 1.1, ours))
        result[parallel] = {"run_s": ours, "loops_s": loops, "ideal_s": ideal, "floor_s": floor}
    return result


def print_jobs(tmp: str, count: int, big: int = 10 << 20) -> tuple[str, str]:
    """A .pxu file of *count* jobs printing to both streams (every 100th fails, one prints *big* bytes) and
    a JSON list of the same commands; returns their paths."""
    commands = []
    for number in range(1, count + 1):
        command = f"echo hello {number}; echo err {number} >&2"
        if number == count // 2:
            command += f"; head -c {big} /dev/zero | tr '\\0' x"
        if number % 100 == 0:
            command += "; exit 1"
        commands.append(command)
    units = os.path.join(tmp, f"print-{count}.pxu")
    with open(units, "w") as f:
        for number, command in enumerate(commands, 1):
            f.write(f"id: print-{number}\nplugin: shell\ncommand: {command}\n\n")
    listed = os.path.join(tmp, f"print-{count}.json")
    with open(listed, "w") as f:
        json.dump(commands, f)
    return units, listed


def section_print(tmp: str, repeats: int, count: int, env: dict[str, str]) -> dict:
    """Jobs that print against a bare loop of the same commands, and against its floor for fsync: the same loop
    making each job's output and a journal line durable (:data:`DURABLE_WRITES`)."""
    units, listed = print_jobs(tmp, count)
    variants = {
        "baseline (subprocess.run loop)": [sys.executable, "-c", BASELINE_COMMANDS, listed],
        "run, fsync": plainbox_like(["run", units]),
        "run, flush": plainbox_like(["run", units, "--durability", "flush"]),
        "floor for fsync: durable writes": [sys.executable, "-c", durable_writes_loop(), listed, tmp],
    }
    loops = ("baseline (subprocess.run loop)", "floor for fsync: durable writes")
    times = median_runs(variants, repeats, env, codes=(0, 1), loops=loops)
    med = {name: statistics.median(values) for name, values in times.items()}
    base = med["baseline (subprocess.run loop)"]
    floor = med["floor for fsync: durable writes"]
    print(f"\n6. {count} jobs printing to both streams (every 100th fails, one prints 10 MiB), "
          f"median of {repeats} interleaved runs")
    for name, value in med.items():
        print(f"   {name:32} {value:9.3f} s {value / count * 1000:7.3f} ms/job {value / base:6.2f}")
    above = (med["run, fsync"] - floor) / base
    print(f"   above its floor (what the runner adds to the durable writes): run, fsync {above:+.2f}")
    print(goal_line("run (fsync) of jobs that print against the bare loop", med["run, fsync"], base, 1.3))
    print(floor_line("run (fsync) of jobs that print against the bare loop", "its durable writes", floor, base, 1.3,
                     med["run, fsync"]))
    result = {name: {"median_s": value, "ratio": value / base} for name, value in med.items()}
    result["above_floor"] = above
    return result


def section_queue(tmp: str, count: int, env: dict[str, str]) -> dict:
    """Many queued jobs: the coordinator's peak RSS, and whether the cost per job stays flat."""
    path = job_file(tmp, count)
    marks = sorted({count // 100, count // 10, count // 2, count})
    out = os.path.join(tmp, "driver.json")
    os.sync()
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, out, "run", path, "-j", "2", "--durability", "flush"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    seen: dict[int, float] = {}
    done = 0
    for line in proc.stdout:
        if line.startswith(b"["):
            done += 1
            if done in marks:
                seen[done] = time.perf_counter() - started
    proc.wait()
    with open(out) as f:
        figures = json.load(f)
    a, b, c, d = marks
    early = (seen[b] - seen[a]) / (b - a)
    late = (seen[d] - seen[c]) / (d - c)
    rss_mb = figures["maxrss_kb"] / 1024
    print(f"\n7. {count} queued `true` jobs, -j 2, flush, one run")
    for mark in marks:
        print(f"   job {mark:7}: {seen[mark]:8.1f} s")
    print(goal_line(f"time per job of jobs {c}-{d} against jobs {a}-{b}", late * 1000, early * 1000, 1.15, "ms"))
    print(goal_line("coordinator peak RSS (RUSAGE_SELF)", rss_mb, 150.0, 1.0, "MB", what="figure/goal"))
    return {"early_ms": early * 1000, "late_ms": late * 1000, "peak_rss_mb": rss_mb, "marks": seen}


def _seq_bytes(lines: int) -> int:
    total, digits, start = 0, 1, 1
    while start <= lines:
        end = min(lines, start * 10 - 1)
        total += (end - start + 1) * (digits + 1)
        start, digits = start * 10, digits + 1
    return total


#: The sections run by default (``queue`` takes minutes: only when asked for).
SECTIONS = ("overhead", "marginal", "output", "cpu", "sleep", "print")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="runs per variant (default 5)")
    parser.add_argument("--quick", action="store_true", help="small sizes, 2 repeats: a smoke run")
    parser.add_argument("--only", choices=[*SECTIONS, "queue"], action="append",
                        help="run only these sections (repeatable)")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON to FILE")
    parser.add_argument("--dir", metavar="DIR",
                        help="make the temporary repository in DIR (default: the system's temporary directory)")
    args = parser.parse_args()
    repeats = 2 if args.quick else args.repeats
    count = 100 if args.quick else 1000
    sizes = (50, 100, 300) if args.quick else (200, 1000, 5000)
    lines = 1_000_000 if args.quick else 16_000_000
    sections = set(args.only or SECTIONS)
    tmp = tempfile.mkdtemp(prefix="bench-runner-", dir=args.dir)
    env = bench_env(tmp)
    print(f"bench_runner: python {sys.version.split()[0]}, {usable_cores()} cores, repository {tmp}/repo")
    figures = {}
    try:
        figures["filesystem"] = filesystem_costs(tmp)
        if "overhead" in sections:
            figures["overhead"] = section_overhead(tmp, repeats, count, env)
        if "marginal" in sections:
            figures["marginal"] = section_marginal(tmp, max(3, repeats - 2) if not args.quick else 2, sizes, env)
        if "output" in sections:
            figures["output"] = section_output(tmp, 3 if not args.quick else 1, lines, env)
        if "cpu" in sections:
            figures["cpu"] = section_cpu(tmp, repeats, count, env)
        if "sleep" in sections:
            figures["sleep"] = section_sleep(tmp, repeats, count, env)
        if "print" in sections:
            figures["print"] = section_print(tmp, repeats, count, env)
        if "queue" in sections:
            figures["queue"] = section_queue(tmp, 2000 if args.quick else 100_000, env)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
