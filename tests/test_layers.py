"""The package's layers are a contract: a module that imports a layer above its own fails here.

The order (``cli | api > exports | maintain | index > read > run > define > store >
errors | text``, with ``|`` between siblings that never import each other) is written in
``.importlinter`` at the top of the repository and checked by import-linter (a test
dependency), so CI refuses an upward import as soon as it is written.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONTRACT = os.path.join(REPO, ".importlinter")


def lint_imports(root: str) -> subprocess.CompletedProcess:
    """``lint-imports`` on the package under *root*, with the contract there; no cache written."""
    script = os.path.join(os.path.dirname(sys.executable), "lint-imports")
    command = [script] if os.path.exists(script) else [shutil.which("lint-imports") or "lint-imports"]
    env = dict(os.environ, PYTHONPATH=root)
    return subprocess.run(
        [*command, "--no-cache", "--no-logo", ".importlinter"], cwd=root, env=env, capture_output=True, text=True, timeout=120
    )


def test_no_module_imports_a_layer_above_its_own():
    done = lint_imports(REPO)
    assert done.returncode == 0, done.stdout + done.stderr


def test_an_upward_import_breaks_the_contract(tmp_path):
    # The same package with one upward import added: the store importing the command line.
    shutil.copytree(
        os.path.join(REPO, "plainbox_like"),
        tmp_path / "plainbox_like",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    shutil.copy(CONTRACT, tmp_path / ".importlinter")
    model = tmp_path / "plainbox_like" / "store" / "model.py"
    model.write_text(model.read_text() + "\nfrom plainbox_like.cli import main  # noqa: E402,F401\n")
    done = lint_imports(str(tmp_path))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "plainbox_like.store.model -> plainbox_like.cli.main" in done.stdout


#: The most lines a module may have: past it, a module holds more than one concern (issue 16's rule).
MODULE_LINES_MAX = 800


def test_no_module_is_over_800_lines():
    package = os.path.join(REPO, "plainbox_like")
    long = []
    for folder, _dirs, names in os.walk(package):
        for name in names:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                with open(path, encoding="utf-8") as f:
                    count = sum(1 for _ in f)
                if count > MODULE_LINES_MAX:
                    long.append(f"{os.path.relpath(path, REPO)}: {count} lines")
    assert not long, "split these by concern: " + "; ".join(long)
