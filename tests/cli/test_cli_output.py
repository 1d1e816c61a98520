"""Messages, shared options and the other CLI helpers live in one place (cli/output.py, cli/options.py).

The source checks guard the rule for code added later: a command module that writes the
``plainbox-like: `` prefix by hand, or declares ``--json`` or the SESSION argument itself, fails here.
"""

from __future__ import annotations

import pathlib
import re

import pytest

from plainbox_like.cli import options, output

CLI = pathlib.Path(output.__file__).parent
COMMAND_MODULES = sorted(p for p in CLI.glob("*.py") if p.name not in ("output.py", "options.py"))


@pytest.mark.parametrize("kind, helper", [(None, output.say), ("note", output.note), ("notice", output.notice),
                                          ("warning", output.warn), ("error", output.error)])
def test_every_message_has_the_one_prefix(capsys, kind, helper):
    helper("a message")
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == ("plainbox-like: " + (f"{kind}: " if kind else "") + "a message\n")


@pytest.mark.parametrize("path", COMMAND_MODULES, ids=lambda p: p.name)
def test_no_command_module_writes_the_prefix_by_hand(path):
    assert re.findall(r"""["']plainbox-like: """, path.read_text()) == []


@pytest.mark.parametrize("path", COMMAND_MODULES, ids=lambda p: p.name)
def test_no_command_module_declares_a_shared_argument_itself(path):
    source = path.read_text()
    shared = (r'add_argument\(\s*"--json"', r'add_argument\(\s*"session"', r'"--providers"', r'"--manifest"',
              r'"--durability"')  # (delete's --force is its own: not the -j one)
    for declared in shared:
        assert re.findall(declared, source) == [], declared


def test_a_positive_int_is_at_least_one():
    import argparse

    assert options.positive_int("3") == 3
    for bad in ("0", "-1", "x"):
        with pytest.raises(argparse.ArgumentTypeError):
            options.positive_int(bad)


def test_a_table_pads_every_column_but_the_last():
    assert output.format_table(["ID", "TITLE"], [["a", "one"], ["bbb", "two  "]]) == [
        "ID   TITLE", "a    one", "bbb  two",
    ]
