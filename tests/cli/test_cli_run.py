"""``plainbox-like run``: dry runs, selection, exit codes, output lines, the demo, bounded memory.

Everything runs the real command line in a subprocess, with the session
repository in ``tmp_path`` (``--repository`` and ``PLAINBOX_LIKE_REPOSITORY``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from plainbox_like.store.iolog import RecordReader
from plainbox_like.store.model import FLAG_INCOMPLETE
from plainbox_like.store.repository import SessionRepository
from plainbox_like.store.reader import load_session
from cli_helpers import cli_argv, cli_env
from factories import only_session

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JOBS = os.path.join(HERE, "data", "jobs")
ROOT = os.path.dirname(HERE)
DEMO = os.path.join(ROOT, "examples", "demo.pxu")
SCRIPT = os.path.join(os.path.dirname(sys.executable), "plainbox-like")
LINE = re.compile(r"^\[\s*(\d+)/(\d+)\] (\S+)\s+(\S+)\s+(\S+)(?:  \((.*)\))?$")


def argv(repo, *args, module=True):
    if module or not os.path.exists(SCRIPT):
        return cli_argv(repo, *args)
    return [SCRIPT, "--repository", str(repo), *args]


def run(repo, *args, module=False, timeout=90, **extra_env):
    return subprocess.run(
        argv(repo, *args, module=module),
        env=cli_env(repo, **extra_env),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def sessions(repo):
    return SessionRepository(str(repo)).session_paths()


def one_line_error(result):
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("plainbox-like: error: "), result.stderr
    return lines[0]


# -- dry runs and selection --------------------------------------------------------


def test_dry_run_json_prints_plan_and_creates_no_session(tmp_path):
    repo = tmp_path / "repo"
    result = run(repo, "run", "--dry-run", "--json", os.path.join(JOBS, "selection.pxu"))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == ["disk/detect", "disk/read", "disk/write", "net/ping", "net/dns"]
    assert sessions(repo) == []


def test_dry_run_text_lists_ids(tmp_path):
    result = run(tmp_path, "run", "--dry-run", "-c", "true", "-c", "false")
    assert result.returncode == 0
    assert result.stdout.splitlines() == ["c1", "c2"]
    assert sessions(tmp_path) == []


@pytest.mark.parametrize(
    "options, expected",
    [
        (["-i", "disk/read"], ["disk/detect", "disk/read"]),  # depends pulled in
        (["-i", "net/dns"], ["net/dns"]),  # after does not pull in
        (["-i", "net/.*"], ["net/ping", "net/dns"]),
        (["-i", "net"], []),  # whole-id match
        (["-x", "net/.*"], ["disk/detect", "disk/read", "disk/write"]),
        (["-x", "disk/detect"], ["disk/detect", "disk/read", "disk/write", "net/ping", "net/dns"]),
        (["-i", "disk/.*", "-x", "disk/write"], ["disk/detect", "disk/read"]),
        (["--test-plan", "disks"], ["disk/detect", "disk/read", "disk/write"]),
        (["--test-plan", "disks", "-i", "net/ping"], ["disk/detect", "disk/read", "disk/write", "net/ping"]),
    ],
)
def test_selection(tmp_path, options, expected):
    result = run(tmp_path, "run", "--dry-run", "--json", *options, os.path.join(JOBS, "selection.pxu"))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == expected


def test_selection_runs_only_the_selected_jobs(tmp_path):
    result = run(tmp_path, "run", "--test-plan", "disks", os.path.join(JOBS, "selection.pxu"))
    assert result.returncode == 0, result.stderr
    loaded = load_session(only_session(tmp_path))
    assert sorted(loaded.state.results) == ["disk/detect", "disk/read", "disk/write"]
    assert loaded.state.desired_job_list == ["disk/detect", "disk/read", "disk/write"]


# -- exit codes and errors -------------------------------------------------------


def test_exit_zero_when_everything_passes_or_is_skipped_by_design(tmp_path):
    assert run(tmp_path / "a", "run", "-c", "true", "-c", "echo hi").returncode == 0
    plugins = run(tmp_path / "b", "run", os.path.join(JOBS, "plugins.pxu"), MARKER_DIR=str(tmp_path))
    assert plugins.returncode == 0, plugins.stderr


@pytest.mark.parametrize("command", ["exit 1", "kill -SEGV $$"])
def test_exit_one_on_fail_or_crash(tmp_path, command):
    result = run(tmp_path, "run", "-c", "true", "-c", command)
    assert result.returncode == 1, result.stderr
    loaded = load_session(only_session(tmp_path))
    assert FLAG_INCOMPLETE not in loaded.state.metadata.flags


def test_a_job_without_id_is_left_out_with_a_warning_the_others_run(tmp_path):
    result = run(tmp_path, "run", os.path.join(JOBS, "no-id.pxu"))
    assert result.returncode == 0, result.stderr
    assert f"warning: {JOBS}/no-id.pxu:4: job has no 'id' field: job left out" in result.stderr
    assert list(load_session(only_session(tmp_path)).state.results) == ["fine"]


@pytest.mark.parametrize(
    "make_args, needle",
    [
        (lambda t: ["run", str(t / "missing.pxu")], "missing.pxu"),
        (lambda t: ["run", os.path.join(JOBS, "cycle.pxu")], "cycle"),
        (lambda t: ["run", "--test-plan", "nope", os.path.join(JOBS, "selection.pxu")], "nope"),
        (lambda t: ["run", "-i", "(", os.path.join(JOBS, "selection.pxu")], "("),
        (lambda t: ["run"], "nothing to run"),
        (lambda t: ["run", "--dry-run", "--json", os.path.join(JOBS, "cycle.pxu")], "cycle"),
        (lambda t: ["resume", "no-such-session"], "no-such-session"),
        (lambda t: ["run", "--json", "-c", "true"], "--dry-run"),
    ],
    ids=[
        "missing-file", "cycle", "unknown-plan", "bad-regex", "nothing", "dry-run-cycle", "bad-resume",
        "json-without-dry-run",
    ],
)
def test_exit_two_on_bad_input(tmp_path, make_args, needle):
    repo = tmp_path / "repo"
    result = run(repo, *make_args(tmp_path))
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert needle in one_line_error(result)
    assert result.stdout == ""
    assert sessions(repo) == []


def test_cycle_error_names_the_jobs(tmp_path):
    result = run(tmp_path, "run", os.path.join(JOBS, "cycle.pxu"))
    line = one_line_error(result)
    assert "a" in line and "b" in line and "->" in line


# -- output ------------------------------------------------------------------------


def test_one_plain_line_per_job_when_not_a_terminal(tmp_path):
    result = run(tmp_path, "run", os.path.join(JOBS, "outcomes.pxu"))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert len(lines) == 6, result.stdout
    seen = {}
    for number, line in enumerate(lines, start=1):
        match = LINE.match(line)
        assert match, line
        assert int(match.group(1)) == number and int(match.group(2)) == 6
        seen[match.group(5)] = (match.group(3), match.group(6))
    assert seen["ok"] == ("pass", None)
    assert seen["bad"][0] == "fail"
    assert seen["segv"][0] == "crash" and "SEGV" in seen["segv"][1]
    assert seen["needs-bad"][0] == "skipped-dependency" and "bad" in seen["needs-bad"][1]
    assert "\x1b" not in result.stdout and "\r" not in result.stdout
    loaded = load_session(only_session(tmp_path))
    assert loaded.id in result.stderr


def test_python_dash_m_works(tmp_path):
    result = run(tmp_path, "run", "-c", "echo via-module", module=True)
    assert result.returncode == 0, result.stderr
    loaded = load_session(only_session(tmp_path))
    attempt = loaded.state.latest("c1")
    stem = attempt.io_log_filename[: -len(".record.gz")]
    with open(os.path.join(loaded.path, stem + ".stdout"), "rb") as f:
        assert f.read() == b"via-module\n"


def test_environ_field_and_share_dir_from_unit_file(tmp_path):
    units = tmp_path / "env.pxu"
    units.write_text(
        "id: env\n"
        "environ: GREETING=hello TARGET=world\n"
        'command: echo "$GREETING $TARGET $FROM_CALLER $PLAINBOX_LIKE_JOB"; ls -d "$PLAINBOX_SESSION_SHARE"\n'
    )
    result = run(tmp_path / "repo", "run", str(units), FROM_CALLER="caller")
    assert result.returncode == 0, result.stderr
    loaded = load_session(only_session(tmp_path / "repo"))
    stem = loaded.state.latest("env").io_log_filename[: -len(".record.gz")]
    with open(os.path.join(loaded.path, stem + ".stdout")) as f:
        out = f.read().splitlines()
    assert out == ["hello world caller env", os.path.join(loaded.path, "session-share")]


def test_nested_run_records_its_parent(tmp_path):
    result = run(
        tmp_path,
        "run",
        "-c",
        'printf "%s %s" "$PLAINBOX_LIKE_SESSION" "$PLAINBOX_LIKE_JOB"',
        PLAINBOX_LIKE_SESSION="parentsession",
        PLAINBOX_LIKE_JOB="parent/job",
    )
    assert result.returncode == 0, result.stderr
    loaded = load_session(only_session(tmp_path))
    assert loaded.state.metadata.parent_session == "parentsession"
    assert loaded.state.metadata.parent_job == "parent/job"
    stem = loaded.state.latest("c1").io_log_filename[: -len(".record.gz")]
    with open(os.path.join(loaded.path, stem + ".stdout")) as f:
        assert f.read() == f"{loaded.id} c1"


def test_flush_durability(tmp_path):
    result = run(tmp_path, "run", "--durability", "flush", "-c", "echo a", "-c", "exit 4")
    assert result.returncode == 1, result.stderr
    state = load_session(only_session(tmp_path)).state
    assert [state.latest(j).outcome for j in ("c1", "c2")] == ["pass", "fail"]
    assert state.latest("c2").return_code == 4


def test_parallel_option(tmp_path):
    result = run(tmp_path, "run", "-j", "2", "-c", "sleep 1", "-c", "sleep 1")
    assert result.returncode == 0, result.stderr
    state = load_session(only_session(tmp_path)).state
    a, b = state.latest("c1"), state.latest("c2")
    span = max(a.started + a.execution_duration, b.started + b.execution_duration) - min(a.started, b.started)
    assert span < 1.8, span


def test_demo_runs_end_to_end(tmp_path):
    result = run(tmp_path, "run", "--title", "demo", DEMO)
    assert result.returncode == 1, result.stderr  # the demo fails one job on purpose
    assert "Traceback" not in result.stderr
    state = load_session(only_session(tmp_path)).state
    outcomes = {job_id: state.latest(job_id).outcome for job_id in state.desired_job_list}
    assert outcomes == {
        "system/uname": "pass",
        "system/disk-free": "pass",
        "demo/counting": "pass",
        "demo/share": "pass",
        "demo/read-share": "pass",
        "demo/expected-failure": "fail",
        "demo/after-failure": "skipped-dependency",
        "demo/look-at-screen": "skip",
    }
    assert state.metadata.title == "demo"
    assert FLAG_INCOMPLETE not in state.metadata.flags
    loaded = load_session(only_session(tmp_path))
    stem = state.latest("demo/read-share").io_log_filename[: -len(".record.gz")]
    with open(os.path.join(loaded.path, stem + ".stdout")) as f:
        assert f.read() == "from demo/share\n"
    plan = run(tmp_path / "plan", "run", "--dry-run", "--json", "--test-plan", "demo", DEMO)
    assert plan.returncode == 0
    assert sorted(json.loads(plan.stdout)) == sorted(outcomes)


# -- memory ------------------------------------------------------------------------


#: Forks and execs its arguments, waits, and writes "EXIT_CODE MAXRSS_KIB" to the file named first. A small
#: process in between, because a child forked by this one would count this (large) process's own peak:
#: Linux keeps the peak of the memory a process had before it exec'd.
_MEASURE = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(f"{os.waitstatus_to_exitcode(status)} {usage.ru_maxrss}")
"""


def peak_rss_mib(args, env, stdout, stderr, timeout=120):
    """Run *args* and return (exit code, peak RSS in MiB of it and the children it waited for)."""
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        result = os.path.join(scratch, "rusage")
        done = subprocess.run(
            [sys.executable, "-c", _MEASURE, result, *args],
            env=env, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL, timeout=timeout, check=False,
        )
        assert done.returncode == 0 or os.path.exists(result), done
        with open(result) as f:
            code, kib = f.read().split()
    return int(code), int(kib) / 1024.0  # Linux reports KiB


def test_rss_measurement_sees_a_big_process(tmp_path):
    code, peak = peak_rss_mib(
        [sys.executable, "-c", "b = b'x' * (160 << 20); print(len(b))"],
        dict(os.environ), subprocess.DEVNULL, subprocess.DEVNULL,
    )
    assert code == 0
    assert peak > 150, peak  # the method used below would notice a runner that held the output


def test_long_line_without_newline_keeps_runner_memory_bounded(tmp_path):
    size = 128 * 1024 * 1024
    repo = tmp_path / "repo"
    with open(tmp_path / "out", "wb") as out, open(tmp_path / "err", "wb") as err:
        code, peak = peak_rss_mib(
            argv(repo, "run", "-c", f"head -c {size} /dev/zero | tr '\\0' 'x'"), cli_env(repo), out, err
        )
    assert code == 0, (tmp_path / "err").read_text()
    assert peak < 100, f"runner peak RSS {peak:.0f} MiB for a {size >> 20} MiB line"
    loaded = load_session(only_session(repo))
    attempt = loaded.state.latest("c1")
    assert attempt.outcome == "pass"
    stem = os.path.join(loaded.path, attempt.io_log_filename[: -len(".record.gz")])
    assert os.path.getsize(stem + ".stdout") == size
    assert os.path.getsize(stem + ".stderr") == 0  # nothing was written to stderr
    reader = RecordReader(stem + ".record.gz", chunk_size=1 << 12)
    total = largest = count = 0
    for record in reader:
        assert record.stream == "stdout"
        assert record.data.count(b"x") == len(record.data)
        total += len(record.data)
        largest = max(largest, len(record.data))
        count += 1
    assert reader.complete, reader.problem
    assert total == size
    assert count > 1 and largest <= 8 << 20  # chunks as read, not one huge line


# -- plans ---------------------------------------------------------------------------------


def test_plans_lists_test_plans_with_names(tmp_path, capsys):
    from plainbox_like.cli.main import main

    units = tmp_path / "units"
    units.mkdir()
    (units / "a.pxu").write_text(
        "id: j1\ncommand: true\n\n"
        "unit: test plan\nid: zz-plan\n_name: Last plan\ninclude: j1\n\n"
        "unit: test plan\nid: aa-plan\nname: First plan\ninclude:\n j1 certification_status=blocker\n"
        "nested_part: zz-plan\n"
    )
    assert main(["plans", str(units)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines() == ["aa-plan  First plan", "zz-plan  Last plan"]
    assert main(["plans", "--json", str(units / "a.pxu")]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [p["id"] for p in data] == ["aa-plan", "zz-plan"]
    assert data[0]["include"] == [{"pattern": "j1", "overrides": {"certification_status": "blocker"}}]
    assert data[0]["nested_part"] == ["zz-plan"]
    assert data[0]["origin"].endswith("a.pxu:9")


def test_plans_without_test_plans_says_so(tmp_path, capsys):
    from plainbox_like.cli.main import main

    path = tmp_path / "a.pxu"
    path.write_text("id: j1\ncommand: true\n")
    assert main(["plans", str(path)]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "no test plans" in captured.err


def test_progress_bar_starts_no_thread():
    """A parallel run forks its workers after the progress bar is made: no thread may exist then."""
    import io
    import threading

    from plainbox_like.cli.run import ProgressReporter

    before = threading.active_count()
    reporter = ProgressReporter(3, stream=io.StringIO())
    try:
        assert threading.active_count() == before
    finally:
        reporter.close()


def test_a_full_disk_is_a_one_line_error_with_the_way_to_resume(tmp_path, monkeypatch, capsys):
    from plainbox_like.store import iolog
    from tests.cli_helpers import assert_one_line_error, run as run_cli

    real = iolog._write_all

    def no_room_for_big_output(fd, data):
        if len(data) > 4096:
            raise OSError(28, "No space left on device")
        real(fd, data)

    monkeypatch.setattr(iolog, "_write_all", no_room_for_big_output)
    root = str(tmp_path / "repo")
    code = run_cli(root, "run", "-c", "echo small", "-c", "head -c 1000000 /dev/zero", "-c", "echo never")
    captured = capsys.readouterr()
    assert code == 1
    path = only_session(root)
    sid = os.path.basename(path)[: -len(".session")]
    error = [line for line in captured.err.splitlines() if line.startswith("plainbox-like: error:")]
    assert len(error) == 1 and "Traceback" not in captured.err
    assert_one_line_error(error[0], "io-log of job c2", "No space left on device", f"plainbox-like resume {sid}")
    state = load_session(path).state
    assert state.latest("c1").outcome == "pass" and "c3" not in state.results
    assert FLAG_INCOMPLETE in state.metadata.flags
