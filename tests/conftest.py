"""Lets the test modules import their helpers (``strategies``) however pytest imports them."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# and the test folders (tests/store, ...): a test module imports another's helpers by its name
# (``from test_codec import ...``), whichever folder pytest collects first; the names are unique.
sys.path[1:1] = sorted(
    entry.path
    for entry in os.scandir(os.path.dirname(os.path.abspath(__file__)))
    if entry.is_dir() and any(name.startswith("test_") for name in os.listdir(entry.path))
)

import pytest  # noqa: E402

from plainbox_like.store.repository import SessionRepository  # noqa: E402


@pytest.fixture
def root(tmp_path):
    """A repository root inside the test's temporary directory (never ~/.cache)."""
    return str(tmp_path / "repo")


@pytest.fixture
def repo(root):
    """The :class:`SessionRepository` at :func:`root`."""
    return SessionRepository(root)


@pytest.fixture(autouse=True)
def _jobs_temporary_directory(tmp_path_factory, monkeypatch):
    """Jobs make their working directories under ``$TMPDIR``: one of the test's own, never the shared /tmp."""
    monkeypatch.setenv("TMPDIR", str(tmp_path_factory.mktemp("tmpdir")))


#: The boot integration's commands as every test sees them on PATH: they refuse to do anything, so that no
#: test reads or changes the machine's crontab or systemd (tests that need them put fakes first on PATH).
_REFUSING_COMMAND = '#!/bin/sh\necho "$(basename "$0"): not for tests (put a fake first on PATH)" >&2\nexit 1\n'


@pytest.fixture(scope="session")
def _refusing_boot_commands(tmp_path_factory):
    bin_dir = tmp_path_factory.mktemp("refusing-bin")
    for name in ("systemctl", "crontab"):
        path = bin_dir / name
        path.write_text(_REFUSING_COMMAND)
        path.chmod(0o755)
    return bin_dir


@pytest.fixture(autouse=True)
def _no_real_boot_integration(_refusing_boot_commands, tmp_path_factory, monkeypatch):
    """``autoresume`` (and the message before a noreturn job, which asks it) never sees the real unit directory,
    systemd or crontab: the variables documented for testing point into the test's directory."""
    monkeypatch.setenv("PATH", f"{_refusing_boot_commands}{os.pathsep}{os.environ.get('PATH', '')}")
    place = tmp_path_factory.mktemp("boot")
    monkeypatch.setenv("PLAINBOX_LIKE_SYSTEMD_UNIT_DIR", str(place / "units"))
    monkeypatch.setenv("PLAINBOX_LIKE_SYSTEMD_RUNTIME", str(place / "no-systemd"))
