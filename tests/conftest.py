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
