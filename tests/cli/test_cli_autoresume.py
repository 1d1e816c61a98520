"""``plainbox-like autoresume enable|disable|status`` through the command line, with fake systemctl and crontab.

The fakes are scripts in tmp_path first on PATH that record their arguments;
the unit directory and systemd's runtime directory come from the variables
documented for testing. Nothing touches the machine's systemd, /etc or crontab.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from cli_helpers import cli, cli_env
from boot_fakes import calls, write_fakes

from plainbox_like.maintain import autoresume

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REBOOT = os.path.join(ROOT, "tests", "data", "jobs", "reboot.pxu")


class Machine:
    """A pretend machine in tmp_path: fake commands, a unit directory, systemd running or not."""

    def __init__(self, tmp_path, systemd: bool) -> None:
        self.tmp = tmp_path
        self.repo = str(tmp_path / "repo")
        self.units = tmp_path / "units"
        self.table = tmp_path / "crontab.txt"
        bin_dir = tmp_path / "bin"
        write_fakes(bin_dir, tmp_path, self.table)
        runtime = tmp_path / "run-systemd"
        if systemd:
            runtime.mkdir()
        self.env = cli_env(
            PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            PLAINBOX_LIKE_SYSTEMD_UNIT_DIR=str(self.units),
            PLAINBOX_LIKE_SYSTEMD_RUNTIME=str(runtime),
        )

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return cli(self.repo, *args, env=self.env, timeout=120)

    def calls(self, name: str) -> list[str]:
        return calls(self.tmp, name)


def test_cli_systemd_enable_status_disable(tmp_path):
    machine = Machine(tmp_path, systemd=True)
    name = autoresume.unit_name(machine.repo)
    unit = machine.units / name

    status = machine.cli("autoresume", "status")
    assert status.returncode == 0, status.stderr
    assert status.stdout == ""
    assert status.stderr == f"plainbox-like: {machine.repo}: autoresume not enabled (systemd runs)\n"

    enabled = machine.cli("autoresume", "enable")
    assert enabled.returncode == 0, enabled.stderr
    assert enabled.stderr.splitlines() == [
        f"plainbox-like: wrote the systemd system unit {unit}",
        f"plainbox-like: enabled it: systemctl enable {name}",
        f"plainbox-like: at boot, the sessions of {machine.repo} that a restart ended continue by themselves "
        "(systemd system unit)",
    ]
    text = unit.read_text()
    exec_start = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    assert exec_start == (
        f"ExecStart={os.path.abspath(sys.executable)} -m plainbox_like --repository {machine.repo} resume --autoresume"
    )
    assert machine.calls("systemctl") == ["daemon-reload", f"enable {name}"]
    assert "-" not in machine.calls("crontab")  # status read it; nothing written

    status = machine.cli("autoresume", "status")
    assert status.stdout == f"systemd system unit (enabled): {unit}  for {machine.repo}  [this repository]\n"
    assert status.stderr == f"plainbox-like: {machine.repo}: autoresume enabled (systemd runs)\n"

    disabled = machine.cli("autoresume", "disable")
    assert disabled.returncode == 0, disabled.stderr
    assert disabled.stderr.splitlines() == [
        f"plainbox-like: removed the systemd system unit {unit}",
        f"plainbox-like: disabled it: systemctl disable {name}",
    ]
    assert not unit.exists()
    assert machine.calls("systemctl")[-2:] == [f"disable {name}", "daemon-reload"]
    again = machine.cli("autoresume", "disable")
    assert again.stderr == f"plainbox-like: nothing was installed for {machine.repo}: nothing to remove\n"


def test_cli_cron_enable_status_disable(tmp_path):
    machine = Machine(tmp_path, systemd=False)
    machine.table.write_text("MAILTO=me\n@daily /usr/bin/true\n")
    enabled = machine.cli("autoresume", "enable")
    assert enabled.returncode == 0, enabled.stderr
    lines = machine.table.read_text().splitlines()
    assert lines[:2] == ["MAILTO=me", "@daily /usr/bin/true"]
    ours = lines[2]
    assert ours.startswith(f"@reboot PYTHONPATH={ROOT} {os.path.abspath(sys.executable)} -m plainbox_like ") or (
        ours.startswith(f"@reboot {os.path.abspath(sys.executable)} -m plainbox_like ")
    )
    assert ours.endswith(
        f" --repository {machine.repo} resume --autoresume # plainbox-like autoresume "
        f"{autoresume.repository_hash(machine.repo)}"
    )
    assert enabled.stderr.splitlines()[-1].endswith("continue by themselves (crontab @reboot)")
    assert machine.calls("systemctl") == [] and not machine.units.exists()

    status = machine.cli("autoresume", "status")
    assert status.stdout == f"crontab: {ours}  for {machine.repo}  [this repository]\n"
    assert "autoresume enabled (systemd does not run: enable would use the crontab)" in status.stderr

    disabled = machine.cli("autoresume", "disable")
    assert disabled.stderr == "plainbox-like: removed its line from the crontab\n"
    assert machine.table.read_text() == "MAILTO=me\n@daily /usr/bin/true\n"


@pytest.mark.parametrize("systemd", [True, False])
def test_nothing_is_installed_without_enable(tmp_path, systemd):
    machine = Machine(tmp_path, systemd=systemd)
    done = machine.cli("run", REBOOT)  # says how to continue, which asks what is installed: nothing more
    assert "restart the machine" in done.stderr
    assert not machine.units.exists() and not machine.table.exists()
    assert all(call.startswith(("is-enabled", "-l")) for call in machine.calls("systemctl") + machine.calls("crontab"))


def test_cli_autoresume_needs_an_action(tmp_path):
    machine = Machine(tmp_path, systemd=True)
    done = machine.cli("autoresume", "on")
    assert done.returncode == 2
    assert "invalid choice: 'on'" in done.stderr
