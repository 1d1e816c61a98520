"""Where the real Checkbox providers of ``../shared/checkbox`` are, for the tests that load them.

``<repo root>/../shared/checkbox`` (as CI lays it out); from a git worktree under
``<project>/wt/<branch>`` it is ``../../shared/checkbox``. ``CHECKBOX_SHARED``
names it explicitly. Tests skip, saying why, where it is absent.
"""

from __future__ import annotations

import os

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _find() -> str | None:
    candidates = [os.environ.get("CHECKBOX_SHARED", "")]
    candidates += [os.path.join(REPO_ROOT, "..", "shared", "checkbox"), os.path.join(REPO_ROOT, "..", "..", "shared", "checkbox")]
    for candidate in candidates:
        if candidate and os.path.isdir(os.path.join(candidate, "providers")):
            return os.path.normpath(candidate)
    return None


#: The shared Checkbox directory (with ``providers/``), or None.
CHECKBOX_DIR = _find()
#: ``CHECKBOX_DIR/providers`` or None.
PROVIDERS = os.path.join(CHECKBOX_DIR, "providers") if CHECKBOX_DIR else None
#: Marks a test that needs the real providers.
needs_providers = pytest.mark.skipif(
    PROVIDERS is None, reason="../shared/checkbox/providers (Checkbox's real providers) is absent"
)
