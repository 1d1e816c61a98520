"""Helpers shared by the command-line tests."""

from __future__ import annotations

from plainbox_like.cli.main import main


def run(root: str, *argv: str) -> int:
    """``plainbox-like --repository ROOT ARGV...`` in-process; returns the exit code."""
    return main(["--repository", root, *argv])


def assert_one_line_error(err: bytes | str, *needles: str) -> None:
    """*err* is one ``plainbox-like: error:`` line mentioning every needle, and no traceback."""
    if isinstance(err, bytes):
        err = err.decode()
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("plainbox-like: error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]
