"""Every exception that user-facing code raises is declared in plainbox_like/errors.py (one place, each with its exit code).

Private control-flow exceptions (a leading underscore) stay where they are used; the index's own
two (``IndexUnusable``, ``WatcherRunning``) move with the index split.
"""

from __future__ import annotations

import ast
import pathlib

import plainbox_like
from plainbox_like import errors

PACKAGE = pathlib.Path(plainbox_like.__file__).parent
#: Declared beside the index until it is split (then they move to errors.py too).
STILL_ELSEWHERE = {"IndexUnusable", "WatcherRunning"}
ERROR_NAMES = {name for name, value in vars(errors).items() if isinstance(value, type) and issubclass(value, Exception)}


def _error_classes_outside_errors() -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "errors.py" and path.parent == PACKAGE:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ClassDef) or node.name.startswith("_") or node.name in STILL_ELSEWHERE:
                continue
            bases = {b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases}
            if bases & ERROR_NAMES:
                found.append(f"{path.relative_to(PACKAGE)}: {node.name}")
    return found


def test_every_user_facing_exception_is_declared_in_errors():
    assert _error_classes_outside_errors() == []


def test_every_error_has_an_exit_code_and_the_old_modules_still_export_theirs():
    from plainbox_like import api
    from plainbox_like.define import resource
    from plainbox_like.exports import tarball
    from plainbox_like.maintain import manage
    from plainbox_like.run import executors, workers

    for module, names in [
        (manage, ["BadDuration", "BadTag", "SessionBusy", "ReadOnlySession", "NotInRepository", "DeletionIncomplete"]),
        (tarball, ["UnsafeArchive", "BadArchive", "ArchiveTooLarge"]),
        (api, ["StopRequested"]),
        (resource, ["ResourceExpressionError"]),
        (executors, ["LogError"]),
        (workers, ["WorkerDied"]),
    ]:
        for name in names:
            cls = getattr(errors, name)
            assert getattr(module, name) is cls
            assert cls.exit_code in (1, 2, 130)
