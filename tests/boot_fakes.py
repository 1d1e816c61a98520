"""Fake ``systemctl`` and ``crontab`` for the autoresume tests: scripts in a test's directory that record
their arguments (one line per call in ``<name>.calls``) and keep the crontab in a file there, so that no
test reads or changes the machine's systemd or crontab."""

from __future__ import annotations

from pathlib import Path

SYSTEMCTL = """#!/bin/sh
echo "$*" >> "{log}"
case "$*" in *is-enabled*) echo enabled ;; esac
"""
CRONTAB = """#!/bin/sh
echo "$*" >> "{log}"
if [ "$1" = "-l" ]; then
  if [ -f "{table}" ]; then cat "{table}"; else echo "no crontab for $(id -un)" >&2; exit 1; fi
elif [ "$1" = "-" ]; then
  cat > "{table}"
fi
"""


def write_fakes(bin_dir: Path, calls_dir: Path, table: Path) -> None:
    """Write ``systemctl`` and ``crontab`` into *bin_dir*: calls recorded in *calls_dir*, the crontab in *table*."""
    bin_dir.mkdir(exist_ok=True)
    for name, text in (
        ("systemctl", SYSTEMCTL.format(log=calls_dir / "systemctl.calls")),
        ("crontab", CRONTAB.format(log=calls_dir / "crontab.calls", table=table)),
    ):
        path = bin_dir / name
        path.write_text(text)
        path.chmod(0o755)


def calls(calls_dir: Path, name: str) -> list[str]:
    """The arguments of every call of fake *name* so far, one string per call."""
    path = calls_dir / f"{name}.calls"
    return path.read_text().splitlines() if path.exists() else []
