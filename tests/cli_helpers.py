"""Helpers shared by the command-line tests: the CLI in-process (:func:`run`) or in a child process (:func:`cli`)."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

from plainbox_like.cli.main import main
from plainbox_like.run.settle import JOB_ENV, SESSION_ENV
from plainbox_like.store.paths import REPOSITORY_ENV

#: The tree whose ``plainbox_like`` the child processes run (this checkout, whatever the caller's PYTHONPATH).
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(root: str, *argv: str) -> int:
    """``plainbox-like --repository ROOT ARGV...`` in-process; returns the exit code."""
    return main(["--repository", root, *argv])


def assert_one_line_error(err: bytes | str, *needles: str) -> None:
    """*err* is one ``plainbox-like: error:`` line mentioning every needle, and no traceback."""
    if isinstance(err, bytes):
        err = err.decode()
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("plainbox-like: error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]


def cli_env(repo=None, **extra: str) -> dict[str, str]:
    """The environment of a CLI child: this tree's ``plainbox_like`` first on PYTHONPATH, no parent session
    or job (a suite run from inside a plainbox-like job must not make its sessions children of that job),
    ``PLAINBOX_LIKE_REPOSITORY`` = *repo* when given, and *extra*."""
    env = dict(os.environ)
    env.pop(SESSION_ENV, None)
    env.pop(JOB_ENV, None)
    if repo is not None:
        env[REPOSITORY_ENV] = str(repo)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def cli_argv(repo, *args: str) -> list[str]:
    """The command line of ``plainbox-like [--repository REPO] ARGS`` (no option when *repo* is None)."""
    return [sys.executable, "-m", "plainbox_like", *(["--repository", str(repo)] if repo is not None else []), *args]


def cli(repo, *args: str, env: dict[str, str] | None = None, timeout: float = 90, **kwargs: Any) -> subprocess.CompletedProcess:
    """``plainbox-like --repository REPO ARGS`` in a child process, so a hang is a timeout and not a stuck
    suite: output captured (text unless ``text=False``), stdin empty unless ``input`` is given, the
    environment :func:`cli_env` unless *env*. *kwargs* go to :func:`subprocess.run` (``cwd``, ``input``...)."""
    kwargs.setdefault("text", True)
    if "input" not in kwargs:
        kwargs.setdefault("stdin", subprocess.DEVNULL)
    env = cli_env(repo) if env is None else env
    return subprocess.run(cli_argv(repo, *args), env=env, capture_output=True, timeout=timeout, **kwargs)


def start_cli(repo, *args: str, env: dict[str, str]) -> subprocess.Popen:
    """``plainbox-like --repository REPO ARGS`` started in a child process, its output in text pipes."""
    return subprocess.Popen(
        cli_argv(repo, *args), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def read_pid(path, proc, timeout=30.0):
    """Wait for a job to write its pid to *path*; fail early if the runner died."""

    def ready():
        if proc.poll() is not None:
            raise AssertionError(f"runner exited early ({proc.returncode}): {proc.communicate()}")
        try:
            with open(path) as f:
                return int(f.read())
        except (OSError, ValueError):
            return None

    from factories import wait_until  # (factories imports the run machinery: only when waiting)

    pid = wait_until(ready, timeout=timeout)
    if pid is None:
        proc.kill()
        raise AssertionError(f"job never wrote {path}: {proc.communicate()}")
    return pid
