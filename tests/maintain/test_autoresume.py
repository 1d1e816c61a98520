"""What starts ``resume --autoresume`` at boot: a systemd unit or an @reboot crontab line, with fake commands.

Nothing here touches the machine's systemd, /etc or crontab: the unit
directory is in tmp_path, and ``systemctl`` and ``crontab`` are scripts in
tmp_path that record their arguments (and keep the crontab in a file there).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from boot_fakes import write_fakes

from plainbox_like.errors import AutoresumeError
from plainbox_like.maintain import autoresume
from plainbox_like.maintain.autoresume import Boot

class Fakes:
    def __init__(self, tmp_path) -> None:
        self.bin = tmp_path / "bin"
        self.systemctl_log = tmp_path / "systemctl.calls"
        self.crontab_log = tmp_path / "crontab.calls"
        self.table = tmp_path / "crontab.txt"
        self.units = tmp_path / "units"
        self.repo = str(tmp_path / "my repo")
        write_fakes(self.bin, tmp_path, self.table)

    def boot(self, systemd: bool, system: bool = True) -> Boot:
        user = () if system else ("--user",)
        return Boot(
            systemd=systemd,
            system=system,
            unit_dir=str(self.units),
            systemctl=(str(self.bin / "systemctl"), *user),
            crontab=(str(self.bin / "crontab"),),
        )

    def calls(self, log) -> list[str]:
        return log.read_text().splitlines() if log.exists() else []


@pytest.fixture
def fakes(tmp_path):
    return Fakes(tmp_path)


PROGRAM = ("/opt/venv/bin/plainbox-like",)


def test_enable_writes_and_enables_a_system_unit_and_disable_removes_exactly_it(fakes):
    boot = fakes.boot(systemd=True)
    other = fakes.units / "someone-else.service"
    fakes.units.mkdir()
    other.write_text("[Service]\nExecStart=/bin/true\n")
    name = autoresume.unit_name(fakes.repo)

    done = autoresume.enable(fakes.repo, boot, PROGRAM)
    unit = fakes.units / name
    assert done[0] == f"wrote the systemd system unit {unit}"
    text = unit.read_text()
    assert f'ExecStart=/opt/venv/bin/plainbox-like --repository "{fakes.repo}" resume --autoresume' in text
    assert f"# Repository: {fakes.repo}\n" in text
    assert "WantedBy=multi-user.target" in text
    assert fakes.calls(fakes.systemctl_log) == ["daemon-reload", f"enable {name}"]
    assert fakes.calls(fakes.crontab_log) == []  # systemd runs: no crontab line

    (found,) = autoresume.status(boot)
    assert (found.kind, found.where, found.repository, found.state) == (
        "systemd system unit", str(unit), fakes.repo, "enabled"
    )
    assert autoresume.enabled_for(fakes.repo, boot)
    assert not autoresume.enabled_for(fakes.repo + "-other", boot)

    done = autoresume.disable(fakes.repo, boot)
    assert done[0] == f"removed the systemd system unit {unit}"
    assert not unit.exists() and other.exists()
    assert fakes.calls(fakes.systemctl_log)[-2:] == [f"disable {name}", "daemon-reload"]
    assert autoresume.status(boot) == []
    assert autoresume.disable(fakes.repo, boot) == []  # nothing left to remove


def test_a_user_gets_a_user_unit_enabled_with_systemctl_user(fakes):
    boot = fakes.boot(systemd=True, system=False)
    autoresume.enable(fakes.repo, boot, PROGRAM)
    name = autoresume.unit_name(fakes.repo)
    text = (fakes.units / name).read_text()
    assert "WantedBy=default.target" in text and "network-online" not in text
    assert fakes.calls(fakes.systemctl_log) == ["--user daemon-reload", f"--user enable {name}"]
    assert autoresume.status(boot)[0].kind == "systemd user unit"


def test_detect_chooses_the_unit_directory_by_user_and_finds_systemd_by_its_runtime_directory(tmp_path):
    runtime = tmp_path / "run-systemd"
    env = {"XDG_CONFIG_HOME": str(tmp_path / "config"), autoresume.SYSTEMD_RUNTIME_ENV: str(runtime)}
    user = Boot.detect(env, euid=1000)
    assert (user.systemd, user.system, user.unit_dir) == (False, False, str(tmp_path / "config" / "systemd" / "user"))
    assert user.systemctl == ("systemctl", "--user")
    runtime.mkdir()
    root = Boot.detect(env, euid=0)
    assert (root.systemd, root.system, root.unit_dir, root.systemctl) == (
        True, True, autoresume.SYSTEM_UNIT_DIR, ("systemctl",)
    )
    moved = Boot.detect({**env, autoresume.UNIT_DIR_ENV: str(tmp_path / "units")}, euid=0)
    assert moved.unit_dir == str(tmp_path / "units")


def test_without_systemd_enable_adds_a_marked_reboot_line_and_disable_removes_only_it(fakes):
    boot = fakes.boot(systemd=False)
    mine = ["# m h dom mon dow command", "0 3 * * * /usr/local/bin/backup % nightly", "@reboot /usr/bin/other"]
    fakes.table.write_text("\n".join(mine) + "\n")

    done = autoresume.enable(fakes.repo, boot, PROGRAM)
    lines = fakes.table.read_text().splitlines()
    assert lines[:3] == mine
    line = lines[3]
    assert done == [f"added to the crontab: {line}"]
    assert line == (
        f"@reboot /opt/venv/bin/plainbox-like --repository '{fakes.repo}' resume --autoresume "
        f"# plainbox-like autoresume {autoresume.repository_hash(fakes.repo)}"
    )
    assert fakes.calls(fakes.crontab_log) == ["-l", "-"]
    assert fakes.calls(fakes.systemctl_log) == []
    assert not fakes.units.exists()

    autoresume.enable(fakes.repo, boot, PROGRAM)  # again: still one line
    assert fakes.table.read_text().splitlines() == [*mine, line]
    autoresume.enable(fakes.repo + "2", boot, PROGRAM)  # another repository: a line of its own
    (found, second) = autoresume.status(boot)
    assert (found.kind, found.where, found.repository) == ("crontab", line, fakes.repo)
    assert second.repository == fakes.repo + "2"

    assert autoresume.disable(fakes.repo, boot) == ["removed its line from the crontab"]
    assert fakes.table.read_text().splitlines() == [*mine, second.where]


def test_enable_without_systemd_or_crontab_is_an_error(fakes):
    boot = Boot(systemd=False, system=True, unit_dir=str(fakes.units), crontab=(str(fakes.bin / "no-crontab"),))
    with pytest.raises(AutoresumeError, match="systemd does not run .* and there is no .*no-crontab command"):
        autoresume.enable(fakes.repo, boot, PROGRAM)


def test_a_failing_command_is_a_one_line_error(fakes):
    (fakes.bin / "systemctl").write_text("#!/bin/sh\necho 'Failed to connect to bus' >&2\nexit 1\n")
    with pytest.raises(AutoresumeError) as caught:
        autoresume.enable(fakes.repo, fakes.boot(systemd=True), PROGRAM)
    assert str(caught.value) == f"{fakes.bin / 'systemctl'} daemon-reload failed: Failed to connect to bus"


def test_a_percent_sign_is_escaped_for_cron_and_systemd(fakes):
    root = fakes.repo + "%d"
    assert "--repository '" + fakes.repo + "\\%d'" in autoresume.cron_line(root, PROGRAM)
    assert f'"{fakes.repo}%%d"' in autoresume.unit_text(root, True, PROGRAM)
    with pytest.raises(Exception, match="control characters"):
        autoresume.cron_line(fakes.repo + "\n@reboot evil", PROGRAM)


def test_the_command_names_this_program_absolutely():
    command = autoresume.boot_command("repo")
    assert os.path.isabs(command[0])
    if command[1:3] == ["-m", "plainbox_like"]:
        assert command[0] == os.path.abspath(sys.executable)
    assert command[-4:] == ["--repository", os.path.abspath("repo"), "resume", "--autoresume"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_the_unit_passes_systemd_analyze_verify(tmp_path):
    root = str(tmp_path / "a repo's 100% $HOME; \\")  # quotes, a specifier, a variable, a separator, a backslash
    unit = tmp_path / autoresume.unit_name(root)
    unit.write_text(autoresume.unit_text(root, True))
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    problems = [line for line in done.stderr.splitlines() if unit.name in line]
    assert done.returncode == 0 and not problems, done.stderr


def test_status_lists_the_units_when_the_crontab_cannot_be_read(fakes):
    boot = fakes.boot(systemd=True)
    autoresume.enable(fakes.repo, boot, PROGRAM)
    (fakes.bin / "crontab").write_text("#!/bin/sh\necho 'crontab: permission denied' >&2\nexit 1\n")
    problems: list[str] = []
    assert [item.repository for item in autoresume.status(boot, problems)] == [fakes.repo]
    assert problems == [f"{fakes.bin / 'crontab'} -l failed: crontab: permission denied"]
    assert autoresume.enabled_for(fakes.repo, boot)
    with pytest.raises(AutoresumeError):
        autoresume.status(boot)
