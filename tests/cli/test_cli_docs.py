"""The command line documents itself, and ``man/plainbox-like.1`` keeps up with it.

Every test walks the parser that ``plainbox_like.cli.main.build_parser()``
builds, so a command or option added later is checked without touching this
file: it needs help text in argparse, and a mention in the man page (each
command has a ``.SS <command>`` subsection of its own that names every option
of the command).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess

import pytest

from plainbox_like.cli.main import build_parser
from cli_helpers import cli, cli_env

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAN_DIR = os.path.join(REPO, "man")
MAN_PAGE = os.path.join(MAN_DIR, "plainbox-like.1")
HELP_OPTIONS = frozenset({"-h", "--help"})


# -- walking the parser ------------------------------------------------------------


def _subparsers_action(parser: argparse.ArgumentParser) -> argparse._SubParsersAction:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(actions) == 1, "the top-level parser should have exactly one set of subcommands"
    return actions[0]


def _commands() -> list[tuple[str, str | None, argparse.ArgumentParser]]:
    """``(name, help, parser)`` of every subcommand, aliases folded into their command.

    argparse only records a command's help (as a pseudo-action in
    ``_choices_actions``) when ``add_parser`` is given ``help=``; a command
    registered without it is returned with help None.
    """
    action = _subparsers_action(build_parser())
    helps = {pseudo.dest: pseudo.help for pseudo in action._choices_actions}
    seen: set[int] = set()
    commands = []
    for name, parser in action.choices.items():
        if id(parser) in seen:
            continue  # an alias of a command already listed
        seen.add(id(parser))
        commands.append((name, helps.get(name), parser))
    return commands


COMMANDS = _commands()
COMMAND_NAMES = [name for name, _help, _parser in COMMANDS]


def _arguments(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The parser's options and positionals, without ``-h/--help`` and subcommand sets."""
    return [
        a
        for a in parser._actions
        if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))
        and a.help is not argparse.SUPPRESS
    ]


def _label(action: argparse.Action) -> str:
    return "/".join(action.option_strings) or str(action.metavar or action.dest)


def _command_arguments() -> list[tuple[str, argparse.Action]]:
    return [(name, action) for name, _help, parser in COMMANDS for action in _arguments(parser)]


def _global_arguments() -> list[argparse.Action]:
    return _arguments(build_parser())


# -- reading the man page ----------------------------------------------------------


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def _roff_to_text(source: str) -> str:
    """The words of roff source, close enough to search: escapes resolved, comments dropped."""
    lines = []
    for line in source.splitlines():
        if line.startswith('.\\"') or line.startswith("'\\\""):
            continue
        lines.append(line)
    text = "\n".join(lines)
    text = re.sub(r"\\f(\[[^\]]*\]|\(..|.)", "", text)  # font changes
    text = re.sub(r"\\s[-+]?\d", "", text)  # size changes
    for escape, plain in (
        (r"\-", "-"),
        (r"\(aq", "'"),
        (r"\(dq", '"'),
        (r"\(ti", "~"),
        (r"\(em", "--"),
        (r"\(en", "-"),
        (r"\(bu", "*"),
        (r"\(lq", '"'),
        (r"\(rq", '"'),
        (r"\&", ""),
        (r"\c", ""),
        (r"\%", ""),
        (r"\ ", " "),
        (r"\~", " "),
        (r"\e", "\\"),
    ):
        text = text.replace(escape, plain)
    return text


def _sections(source: str, macro: str) -> dict[str, str]:
    """Title -> source of each ``.SH`` or ``.SS`` section (up to the next ``.SH`` or ``.SS``)."""
    sections: dict[str, str] = {}
    title: str | None = None
    body: list[str] = []
    for line in source.splitlines():
        match = re.match(r"\.(SH|SS)\s+(.*)$", line)
        if match:
            if title is not None:
                sections.setdefault(title, "\n".join(body))
            title = None
            if match.group(1) == macro:
                title = _roff_to_text(match.group(2)).strip().strip('"')
                body = []
            continue
        if title is not None:
            body.append(line)
    if title is not None:
        sections.setdefault(title, "\n".join(body))
    return sections


def _mentions(text: str, word: str) -> bool:
    """Whether *word* (an option like ``-j`` or a name) occurs in *text* as a whole word.

    ``-c`` is not found inside ``--command``, nor ``--json`` inside ``--json-lines``.
    """
    return re.search(r"(?<![\w-])" + re.escape(word) + r"(?![\w-])", text) is not None


@pytest.fixture(scope="module")
def man_source() -> str:
    assert os.path.isfile(MAN_PAGE), f"{MAN_PAGE} is missing"
    return _read(MAN_PAGE)


@pytest.fixture(scope="module")
def command_sections(man_source: str) -> dict[str, str]:
    return {title: _roff_to_text(body) for title, body in _sections(man_source, "SS").items()}


# -- the parser documents itself ---------------------------------------------------


def test_there_are_commands():
    # Guards the walk itself: if no command were found, every other test would pass vacuously.
    assert {"run", "resume", "list", "show", "log", "replay"} <= set(COMMAND_NAMES)


@pytest.mark.parametrize("name", COMMAND_NAMES)
def test_command_has_help_and_description(name):
    _name, help_text, parser = next(c for c in COMMANDS if c[0] == name)
    assert help_text and help_text.strip(), f"command {name!r}: add_parser() needs help= (shown in --help)"
    assert parser.description and parser.description.strip(), f"command {name!r}: add_parser() needs description="


@pytest.mark.parametrize(
    "name,action", _command_arguments(), ids=[f"{n}:{_label(a)}" for n, a in _command_arguments()]
)
def test_command_argument_has_help(name, action):
    assert action.help and action.help.strip(), f"{name} {_label(action)}: add_argument() needs help="


@pytest.mark.parametrize("action", _global_arguments(), ids=[_label(a) for a in _global_arguments()])
def test_global_argument_has_help(action):
    assert action.help and action.help.strip(), f"{_label(action)}: add_argument() needs help="


def test_top_level_parser_has_description():
    parser = build_parser()
    assert parser.description and parser.description.strip()


# -- the man page keeps up with the parser -----------------------------------------


@pytest.mark.parametrize("name", COMMAND_NAMES)
def test_command_has_man_section(name, command_sections):
    assert name in command_sections, f"{MAN_PAGE}: no '.SS {name}' subsection for command {name!r}"


@pytest.mark.parametrize("name", COMMAND_NAMES)
def test_command_in_man_synopsis(name, man_source):
    synopsis = _roff_to_text(_sections(man_source, "SH").get("SYNOPSIS", ""))
    assert _mentions(synopsis, name), f"{MAN_PAGE}: command {name!r} is missing from SYNOPSIS"


@pytest.mark.parametrize(
    "name,action", _command_arguments(), ids=[f"{n}:{_label(a)}" for n, a in _command_arguments()]
)
def test_command_argument_in_man_section(name, action, command_sections):
    section = command_sections.get(name)
    if section is None:
        pytest.fail(f"{MAN_PAGE}: no '.SS {name}' subsection")
    if action.option_strings:
        # Each spelling: users search the page for the one they saw (-j or --jobs).
        for option in action.option_strings:
            if option in HELP_OPTIONS:
                continue
            assert _mentions(section, option), (
                f"{MAN_PAGE}: option {option} of {name!r} is not named in its '.SS {name}' subsection "
                f"(write it as {option.replace('-', chr(92) + '-')})"
            )
    else:
        metavar = action.metavar or action.dest
        if isinstance(metavar, str) and metavar != argparse.SUPPRESS:
            assert _mentions(section, metavar), (
                f"{MAN_PAGE}: argument {metavar} of {name!r} is not described in its '.SS {name}' subsection"
            )
    for choice in action.choices or ():
        assert _mentions(section, str(choice)), (
            f"{MAN_PAGE}: value {choice!r} of {name} {_label(action)} is not mentioned in '.SS {name}'"
        )


@pytest.mark.parametrize("action", _global_arguments(), ids=[_label(a) for a in _global_arguments()])
def test_global_argument_in_man_page(action, man_source):
    text = _roff_to_text(man_source)
    for option in action.option_strings:
        assert _mentions(text, option), f"{MAN_PAGE}: global option {option} is not documented"


def test_man_page_uses_escaped_hyphens_in_options(man_source):
    """A plain ``-`` may render as a hyphen (U+2010): options would not copy-paste."""
    spellings = {
        option
        for action in _global_arguments() + [a for _n, a in _command_arguments()]
        for option in action.option_strings
    }
    bare = []
    for number, line in enumerate(man_source.splitlines(), start=1):
        if line.startswith('.\\"'):
            continue
        for option in spellings:
            if re.search(r"(?<![\w\\-])" + re.escape(option) + r"(?![\w-])", line):
                bare.append(f"line {number}: {option}")
    assert not bare, f"{MAN_PAGE}: write options with \\- : " + ", ".join(sorted(set(bare)))


# -- the man pages render ----------------------------------------------------------


def _man_pages() -> list[str]:
    if not os.path.isdir(MAN_DIR):
        return []
    return sorted(
        os.path.join(MAN_DIR, name)
        for name in os.listdir(MAN_DIR)
        if re.fullmatch(r".+\.[1-9][a-z]*", name) and os.path.isfile(os.path.join(MAN_DIR, name))
    )


def test_cli_man_page_exists():
    assert MAN_PAGE in _man_pages()


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff is not installed")
@pytest.mark.parametrize("page", _man_pages(), ids=os.path.basename)
def test_man_page_has_no_groff_warnings(page):
    result = subprocess.run(
        ["groff", "-man", "-ww", "-z", page], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and not result.stdout and not result.stderr, result.stdout + result.stderr


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff is not installed")
@pytest.mark.parametrize("page", _man_pages(), ids=os.path.basename)
def test_man_page_fits_80_columns(page):
    """Rendered for a terminal 80 columns wide, as ``MANWIDTH=80 man -l`` does, nothing sticks out."""
    result = subprocess.run(
        ["groff", "-man", "-ww", "-Tutf8", "-rLL=80n", "-rLT=80n", page],
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 0 and not result.stderr, result.stderr.decode(errors="replace")
    text = re.sub(r".\x08", "", result.stdout.decode("utf-8"))  # overstrike (bold, underline)
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)  # SGR, where grotty emits it
    long_lines = [line for line in text.splitlines() if len(line) > 80]
    assert not long_lines, f"{page}: lines longer than 80 columns:\n" + "\n".join(long_lines)


# -- --help works ------------------------------------------------------------------


def _run_cli(*args: str, tmp_path) -> subprocess.CompletedProcess:
    env = cli_env(tmp_path / "repository", COLUMNS="80")
    return cli(None, *args, env=env, cwd=REPO, timeout=60)


def test_top_level_help(tmp_path):
    result = _run_cli("--help", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    for name in COMMAND_NAMES:
        assert _mentions(result.stdout, name), f"--help does not list command {name!r}"


def test_version(tmp_path):
    result = _run_cli("--version", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("plainbox-like ")


@pytest.mark.parametrize("name", COMMAND_NAMES)
def test_command_help(name, tmp_path):
    result = _run_cli(name, "--help", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: plainbox-like"), result.stdout
    assert not (tmp_path / "repository").exists(), f"{name} --help touched the repository"
