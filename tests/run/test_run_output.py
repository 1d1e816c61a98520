"""What ``run`` writes for people and on disk: escaped job ids and comments, both raw files of every attempt."""

from __future__ import annotations

import functools
import os

import pytest

from plainbox_like.store.reader import load_session
from cli_helpers import cli
from factories import only_session

#: The CLI in a child process, its output as bytes (escapes are checked byte for byte).
cli = functools.partial(cli, text=False)


def test_run_escapes_control_characters_of_job_ids_comments_and_plan_names(tmp_path):
    units = tmp_path / "hostile.pxu"
    units.write_bytes(
        b"id: a\x1b[31mred\nplugin: shell\ncommand: true\n\n"
        b"id: b\x07bell\nplugin: shell\ncommand: exit 3\n\n"
        b"id: c\x1b]0;title\x07\nplugin: shell\ncommand: true\ndepends: b\x07bell\n\n"
        b"unit: test plan\nid: tp\x1b[2J\nname: clear\x1b[2Jscreen\rx\ninclude: .*\n"
    )
    for args in (["run", str(units)], ["run", "--dry-run", str(units)], ["plans", str(units)]):
        done = cli(tmp_path / "repo", *args)
        out = done.stdout + done.stderr
        assert b"\x1b" not in out and b"\x07" not in out and b"\r" not in out, (args, out)
    done = cli(tmp_path / "repo", "run", str(units))
    assert b"a\\x1b[31mred" in done.stdout
    assert b"b\\x07bell" in done.stdout  # also in the skip reason of the job that depends on it
    plans = cli(tmp_path / "repo", "plans", str(units)).stdout
    assert b"tp\\x1b[2J" in plans and b"clear\\x1b[2Jscreen\\rx" in plans


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_every_attempt_has_both_raw_files_empty_ones_included(tmp_path, jobs):
    done = cli(
        tmp_path / "repo", "run", "-j", jobs,
        "-c", "true", "-c", "echo out", "-c", "echo err >&2", "-c", "exit 4", "-c", "echo both; echo both >&2",
    )
    assert done.returncode == 1, done.stderr
    path = only_session(tmp_path / "repo")
    state = load_session(path).state
    assert len(state.results) == 5
    expected = {
        "true": (b"", b""), "echo out": (b"out\n", b""), "echo err >&2": (b"", b"err\n"),
        "exit 4": (b"", b""), "echo both; echo both >&2": (b"both\n", b"both\n"),
    }
    commands = {}
    for job_id, (attempt,) in state.results.items():
        stem = os.path.join(path, attempt.io_log_filename[: -len(".record.gz")])
        with open(stem + ".stdout", "rb") as out, open(stem + ".stderr", "rb") as err:
            commands[job_id] = (out.read(), err.read())
    assert sorted(commands.values()) == sorted(expected.values())
