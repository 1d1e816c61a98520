"""The entry point: command dispatch and error reporting."""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys

import pytest

from plainbox_like.cli import main as cli_main
from cli_helpers import cli_argv, cli_env


def registered_commands(module: str) -> set[str]:
    parser = argparse.ArgumentParser()
    subparsers = parser.add_subparsers()
    importlib.import_module(f"plainbox_like.cli.{module}").register(subparsers)
    return set(subparsers.choices)


@pytest.mark.parametrize("module", cli_main.COMMAND_MODULES)
def test_command_map_matches_what_modules_register(module):
    mapped = {cmd for cmd, mod in cli_main.COMMANDS.items() if mod == module}
    assert registered_commands(module) == mapped


def test_command_word_skips_global_options():
    assert cli_main._command_word(["--repository", "run", "list"]) == "list"
    assert cli_main._command_word(["--repository=x", "show", "a"]) == "show"
    assert cli_main._command_word(["--help"]) is None
    assert cli_main._command_word([]) is None


def test_running_a_command_imports_only_its_module():
    code = (
        "import sys\n"
        "from plainbox_like.cli.main import main\n"
        "main(['run', '--dry-run', '-c', 'true'])\n"
        "print(sorted(m for m in sys.modules if m.startswith('plainbox_like.cli.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == (
        "['plainbox_like.cli.main', 'plainbox_like.cli.options', 'plainbox_like.cli.output', 'plainbox_like.cli.run']"
    )


def test_unknown_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        cli_main.main(["no-such-command"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_version_imports_no_command_module():
    # `--version` answers at once: no command module (and none of the state machinery) is loaded.
    code = (
        "import sys\n"
        "from plainbox_like.cli.main import main\n"
        "try:\n"
        "    main(['--version'])\n"
        "except SystemExit as exc:\n"
        "    assert exc.code in (0, None), exc.code\n"
        "print(sorted(m for m in sys.modules if m.startswith('plainbox_like.') and m not in\n"
        "      ('plainbox_like.cli', 'plainbox_like.cli.main', 'plainbox_like.errors', 'plainbox_like.store', 'plainbox_like.store.paths',\n"
        "      'plainbox_like.store.names')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "plainbox-like " in done.stdout
    assert done.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("code", ["ENOSPC", "EROFS", "EIO"])
def test_a_full_or_failing_disk_is_a_one_line_error(tmp_path, monkeypatch, capsys, code):
    import errno
    import os

    from plainbox_like.run import prepare

    number = getattr(errno, code)

    def fail(*_args, **_kwargs):
        raise OSError(number, os.strerror(number), str(tmp_path / "somewhere"))

    monkeypatch.setattr(prepare, "start_session", fail)
    assert cli_main.main(["--repository", str(tmp_path), "run", "-c", "true"]) == 2
    err = capsys.readouterr().err
    assert err == f"plainbox-like: error: {tmp_path / 'somewhere'}: {os.strerror(number)}\n"


def test_other_os_errors_are_not_hidden(tmp_path, monkeypatch):
    import errno

    from plainbox_like.run import prepare

    def fail(*_args, **_kwargs):
        raise OSError(errno.EBADF, "Bad file descriptor")  # a bug here, not the machine: keep the traceback

    monkeypatch.setattr(prepare, "start_session", fail)
    with pytest.raises(OSError):
        cli_main.main(["--repository", str(tmp_path), "run", "-c", "true"])


def test_output_into_a_closed_pipe_is_not_an_error(tmp_path):
    proc = subprocess.Popen(
        cli_argv(tmp_path, "run", "--dry-run", *[arg for n in range(2000) for arg in ("-c", f"echo {n}")]),
        env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    proc.stdout.close()  # like `| head` that has read enough
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert b"Traceback" not in err and b"BrokenPipe" not in err
