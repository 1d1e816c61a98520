"""Fixtures shared by the test modules, and the path that lets them import their helpers (``factories``,
``cli_helpers``, ``archives``, ``strategies``) however pytest imports them. A test module never imports
another test module: what two of them share lives in one of those helpers."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import pytest  # noqa: E402

from plainbox_like.store.storage import SessionRepository  # noqa: E402


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
