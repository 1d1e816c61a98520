"""Every command and option of the CLI, given hostile values, ends with a result or a one-line error.

The parser is walked as ``test_cli_docs`` walks it, so a command or option added later is tried
without touching this file. Each option (and positional argument) of each command, and the global
``--repository``, gets every hostile value in turn (empty, huge and negative numbers, NUL, newline
and escape characters, an over-long name, paths that are a file, a directory, a FIFO, a dangling
symlink or lie under a file) while the command's other arguments stay valid, against a fresh copy
of a repository holding a few real sessions. A case fails on a traceback (an exception out of
``main``, or "Traceback" on stderr) or on a run of more than :data:`HANG_LIMIT` seconds.

Cases run in-process (a fork per case would take minutes); ``watch`` without ``--once`` and
``log --follow`` of a running job, which run until stopped, run as subprocesses that are stopped
with SIGTERM.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from plainbox_like.cli.main import build_parser, main
from cli_helpers import cli, cli_argv, cli_env
from factories import wait_until

#: A case that runs longer than this (seconds) hangs.
HANG_LIMIT = 20

SID = "<session>"  # the complete session (placeholders, filled in per case)
BROKEN = "<interrupted-session>"  # a session whose runner was killed mid-run
UNITS = "<units>"
ARCHIVE = "<archive>"
OUT = "<output>"
LAUNCHER = "<launcher>"
PLACEHOLDERS = (SID, BROKEN, UNITS, ARCHIVE, OUT, LAUNCHER)

UNITS_TEXT = """\
id: hello
command: echo hello; echo oops >&2

id: fails
command: false

unit: test plan
id: plan
name: Plan
include: hello fails
"""

#: (options, positionals by dest) of a valid call of each command; hostile values replace one at a time.
BASE: dict[str, tuple[list[str], dict[str, list[str]]]] = {
    "run": (["-c", "true"], {}),
    "plans": ([], {"files": [UNITS]}),
    "launcher": ([], {"launcher": [LAUNCHER], "files": [UNITS]}),
    "resume": ([], {"session": [BROKEN]}),
    "list": ([], {}),
    "show": ([], {"session": [SID]}),
    "log": ([], {"session": [SID], "job": ["c1"]}),
    "replay": ([], {"session": [SID], "job": ["c1"]}),
    "watch": (["--once"], {}),
    "index": ([], {}),
    "search": ([], {"text": ["hello"]}),
    "stop": ([], {"session": [SID]}),
    "pause": ([], {"session": [SID]}),
    "continue": ([], {"session": [SID]}),
    "answer": ([], {"session": [SID], "job": ["c1"], "answer": ["pass"]}),
    "delete": ([], {"sessions": [SID]}),
    "rename": ([], {"session": [SID], "title": ["new title"]}),
    "tag": ([], {"session": [SID], "tags": ["x"]}),
    "untag": ([], {"session": [SID], "tags": ["x"]}),
    "gc": ([], {}),
    "cleanup": ([], {}),
    "check": ([], {"sessions": []}),
    "repair": ([], {"session": [BROKEN]}),
    "export": (["-o", OUT], {"session": [SID]}),
    "import": ([], {"archive": [ARCHIVE]}),
    "autoresume": ([], {"action": ["status"]}),
}

#: Hostile words; the path ones are made afresh for each case (see :func:`_hostile_paths`).
WORDS = [
    "",
    "0",
    "-1",
    "99999999999999999999999999",
    "1e-300",
    "1e308",
    "nan",
    "-inf",
    "\0",
    "a\nb",
    "\x1b]0;x\x07\x1b[2J\r",
    "x" * 300,
    ".",
]
PATHS = ["file", "dir", "fifo", "dangling", "under-file"]
HUGE = WORDS[3]
#: Cases left out (none now: ``-j`` above its limit is refused, the last of them).
ELSEWHERE: set[tuple[str, str]] = set()


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


SUBCOMMANDS = _subcommands()


def _arguments(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))]


def _positionals(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in _arguments(parser) if not a.option_strings]


def _cases(command: str) -> list[tuple[str, list[str]]]:
    """(label, argv) of every hostile call of *command* (placeholders not filled in yet)."""
    parser = SUBCOMMANDS[command]
    options, positionals = BASE[command]

    def argv(opts: list[str], pos: dict[str, list[str]], glob: list[str] = ()) -> list[str]:
        words = [*glob, command, *opts]
        tail = [w for a in _positionals(parser) for w in pos.get(a.dest, [])]
        return [*words, "--", *tail] if tail else words

    values = WORDS + [f"<path:{p}>" for p in PATHS]
    cases = [("valid", argv(options, positionals))]
    for value in values:
        cases.append((f"--repository={value!r}", argv(options, positionals, ["--repository", value])))
    for action in _arguments(parser):
        if not action.option_strings:
            for value in values:
                cases.append((f"{action.dest}={value!r}", argv(options, {**positionals, action.dest: [value]})))
            continue
        flag = action.option_strings[-1]
        if action.nargs == 0:
            cases.append((flag, argv([*options, flag], positionals)))
            continue
        for value in values + list(action.choices or ()):
            if flag in options or any(o in options for o in action.option_strings):
                opts = list(options)
                at = next(i for i, o in enumerate(opts) if o in action.option_strings)
                opts[at + 1] = value
            else:
                opts = [*options, flag, value]
            cases.append((f"{flag}={value!r}", argv(opts, positionals)))
    return cases


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A repository with a complete session (pass and fail, with output) and one whose runner was killed."""
    base = tmp_path_factory.mktemp("fuzz-template")
    repo = str(base / "repo")
    units = base / "units.pxu"
    units.write_text(UNITS_TEXT)
    launcher = base / "launcher.conf"
    launcher.write_text("[launcher]\nsession_title = fuzz launcher\n[test plan]\nunit = plan\nforced = yes\n")
    done = cli(repo, "run", "-c", "echo hello; echo oops >&2", "-c", "false", "--title", "fuzz")
    assert done.returncode == 1, done.stderr
    # The runner dies at the second job; run again (resume), the job only says so.
    marker = base / "kill-the-runner"
    marker.touch()
    killed = cli(repo, "run", "-c", "echo first", "-c", f"test -e {marker} && kill -9 $PPID; echo second")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    marker.unlink()
    cli(repo, "run", "--title", "units", str(units))
    listed = cli(repo, "list", "--json")
    by_title = {s["title"]: s for s in json.loads(listed.stdout)}
    sessions = {"complete": by_title["fuzz"]["id"], "incomplete": by_title[None]["id"]}
    assert by_title[None]["status"] == "incomplete"
    archive = str(base / "archive.tar.gz")
    exported = cli(repo, "export", sessions["complete"], "--format", "tar", "-o", archive)
    assert exported.returncode == 0, exported.stderr
    for name in os.listdir(repo):
        if name.startswith("index.sqlite3"):
            os.unlink(os.path.join(repo, name))  # each case starts without an index
    return {"repo": repo, "units": str(units), "launcher": str(launcher), "archive": archive, **sessions}


class Hang(BaseException):
    """Raised in the main thread when a case runs too long (a BaseException: nothing may catch it)."""


def _on_alarm(_signum, _frame):
    raise Hang()


def _hostile_paths(where: str) -> dict[str, str]:
    os.makedirs(where)
    paths = {name: os.path.join(where, name) for name in PATHS}
    with open(paths["file"], "wb") as f:
        f.write(b"\x1f\x8b not what it seems\n")
    os.mkdir(paths["dir"])
    os.mkfifo(paths["fifo"])
    os.symlink(os.path.join(where, "nowhere", "at-all"), paths["dangling"])
    paths["under-file"] = os.path.join(paths["file"], "below")
    return paths


#: Commands that change no session and no hostile path (only the index): their cases share one copy.
SHARING = {"list", "show", "log", "replay", "search", "check", "plans", "index", "watch", "stop", "pause", "continue"}


def _fill(words: list[str], case_dir: str, template: dict) -> tuple[list[str], str]:
    repo = os.path.join(case_dir, "repo")
    if not os.path.exists(case_dir):
        shutil.copytree(template["repo"], repo, symlinks=True)
        _hostile_paths(os.path.join(case_dir, "hostile"))
    paths = {name: os.path.join(case_dir, "hostile", name) for name in PATHS}
    paths["under-file"] = os.path.join(paths["file"], "below")
    fixed = {
        SID: template["complete"],
        BROKEN: template["incomplete"],
        UNITS: template["units"],
        ARCHIVE: template["archive"],
        OUT: os.path.join(case_dir, "out.json"),
        LAUNCHER: template["launcher"],
    }
    filled = []
    for word in words:
        if word in fixed:
            word = fixed[word]
        elif word.startswith("<path:"):
            word = paths[word[len("<path:") : -1]]
        filled.append(word)
    if "--repository" not in filled:
        filled = ["--repository", repo, *filled]
    return filled, repo


def _run_case(argv: list[str], capfd) -> tuple[str | None, float]:
    """Run ``main(argv)`` in-process; returns (what went wrong or None, seconds)."""
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, HANG_LIMIT)
    started = time.monotonic()
    problem = None
    try:
        main(argv)
    except SystemExit:
        pass
    except Hang:
        problem = f"still running after {HANG_LIMIT} s"
    except BaseException as exc:  # noqa: BLE001 - that is what is being looked for
        problem = f"traceback: {type(exc).__name__}: {exc}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    seconds = time.monotonic() - started
    err = capfd.readouterr().err.decode("utf-8", "replace")
    if problem is None and "Traceback" in err:
        problem = "traceback on stderr: " + err.strip().splitlines()[-1]
    return problem, seconds


@pytest.mark.parametrize("command", sorted(SUBCOMMANDS))  # a command missing from BASE fails here
def test_hostile_values_give_no_traceback_and_no_hang(command, template, tmp_path, monkeypatch, capfdbinary):
    # Nothing may reach the real default repository, whatever --repository says.
    monkeypatch.setenv("PLAINBOX_LIKE_REPOSITORY", str(tmp_path / "default-repo"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")  # where relative names (".", "") point: an empty directory
    failures = []
    for number, (label, words) in enumerate(_cases(command)):
        if (command, label) in ELSEWHERE:
            continue
        case_dir = str(tmp_path / ("shared" if command in SHARING else f"case{number}"))
        argv, _repo = _fill(words, case_dir, template)
        problem, _seconds = _run_case(argv, capfdbinary)
        if problem:
            failures.append(f"{command} {label}: {problem}")
        if command not in SHARING:
            shutil.rmtree(case_dir, ignore_errors=True)
    assert not failures, "\n".join(failures)


# -- hostile repositories -----------------------------------------------------------------

#: Files of a repository and of its sessions (``S/``) that a hostile or broken disk may hold
#: as something else, and what each is made.
REPOSITORY_FILES = {
    "index.sqlite3-shm": ["dir", "fifo", "dangling", "garbage"],
    "S/lock": ["dir", "fifo", "dangling", "link", "garbage"],
    "S/session": ["dir", "fifo", "dangling", "link", "garbage"],
    "S/journal": ["dir", "fifo", "dangling", "link"],
    "S/io-logs": ["dangling", "garbage"],
    "S/io-logs/c1.record.gz": ["dir", "fifo", "dangling", "garbage"],
    "S/io-logs/c1.stdout": ["dir", "fifo", "dangling"],
    "S/io-logs/c1.stderr": ["fifo"],
}


VICTIM = b"a file outside the repository\n"


def _replace(path: str, kind: str) -> None:
    """Put a *kind* at *path*; a link ("dangling", "link") points beside the repository, to
    ``outside-*`` (a file holding :data:`VICTIM` for "link"), which nothing may create or change."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)
    if kind == "dir":
        os.mkdir(path)
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind in ("dangling", "link"):
        target = os.path.join(path.split("/repo/")[0], f"outside-{os.path.basename(path)}")
        if kind == "link":
            with open(target, "wb") as f:
                f.write(VICTIM)
        os.symlink(target, path)
    else:
        with open(path, "wb") as f:
            f.write(b"\x1f\x8b\x08\0garbage\0\xff" * 8)


@pytest.mark.parametrize("name", REPOSITORY_FILES)
def test_hostile_repository_files_give_no_traceback_and_no_hang(name, template, tmp_path, monkeypatch, capfdbinary):
    """Every command's valid call, with one file of the repository replaced by a directory, a dangling link, ..."""
    monkeypatch.setenv("PLAINBOX_LIKE_REPOSITORY", str(tmp_path / "default-repo"))
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    failures = []
    for kind in REPOSITORY_FILES[name]:
        for command in sorted(BASE):
            shared = command in SHARING
            case_dir = str(tmp_path / (kind if shared else f"{kind}-{command}"))
            fresh = not os.path.exists(case_dir)
            argv, repo = _fill(_cases(command)[0][1], case_dir, template)
            if fresh:
                if name.startswith("index"):  # a new session after the index was made: it has something to write
                    assert main(["--repository", repo, "index"]) == 0
                    assert main(["--repository", repo, "run", "-c", "true"]) == 0
                    capfdbinary.readouterr()
                if name.startswith("S/"):  # in both sessions: each command works on one of them
                    for sid in (template["complete"], template["incomplete"]):
                        _replace(os.path.join(repo, "sessions", sid + ".session", name[2:]), kind)
                else:
                    _replace(os.path.join(repo, name), kind)
            problem, _seconds = _run_case(argv, capfdbinary)
            if problem:
                failures.append(f"{command} with {name} a {kind}: {problem}")
            for outside in glob.glob(os.path.join(case_dir, "outside-*")):
                with open(outside, "rb") as f:
                    if kind == "dangling" or f.read() != VICTIM:
                        failures.append(f"{command} with {name} a {kind}: wrote {outside}, outside the repository")
            if not shared:
                shutil.rmtree(case_dir, ignore_errors=True)
    assert not failures, "\n".join(failures)


# -- commands that run until stopped ----------------------------------------------------------

WATCH_OPTIONS = [
    ["--interval", "1e-300"],
    ["--interval", "1e308"],
    ["--poll", "--poll-interval", "1e-300"],
    ["--poll", "--poll-interval", "1e308", "--interval", "1e308"],
    ["-j", HUGE],
]


def _wait_for_text(path: str, text: str, proc: subprocess.Popen, limit: float) -> bool:
    """Whether *text* shows in the file at *path* within *limit* seconds, while *proc* still runs."""

    def seen():
        with open(path, encoding="utf-8", errors="replace") as f:
            if text in f.read():
                return True
        return False if proc.poll() is None else "exited"

    return wait_until(seen, timeout=limit, interval=0.05) is True


def test_watch_and_log_follow_stop_cleanly_whatever_their_options(template, tmp_path):
    """``watch`` (hostile options) and ``log --follow`` of a running job, bounded: SIGTERM, or the job's end."""
    repo = str(tmp_path / "repo")
    shutil.copytree(template["repo"], repo, symlinks=True)
    env = cli_env(repo)
    # And one watching a repository whose index cannot be written (a directory in place of its -shm file).
    damaged = str(tmp_path / "damaged")
    shutil.copytree(template["repo"], damaged, symlinks=True)
    assert main(["--repository", damaged, "index"]) == 0
    os.mkdir(os.path.join(damaged, "index.sqlite3-shm"))
    assert main(["--repository", damaged, "run", "-c", "true"]) == 0  # something new to index
    started = []
    for number, options in enumerate([*WATCH_OPTIONS, ["--repository", damaged]]):
        err = str(tmp_path / f"watch{number}.err")
        args = [*options, "watch"] if options[0] == "--repository" else ["watch", *options]
        with open(err, "wb") as f:
            proc = subprocess.Popen(cli_argv(None, *args), env=env, stdout=f, stderr=f)
        started.append((options, proc, err))
    # A running job, followed: log --follow ends when the job does.
    runner = subprocess.Popen(
        cli_argv(None, "run", "-c", "echo start; sleep 2; echo end"),
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    line = runner.stderr.readline()  # "Session ID in PATH"
    assert line.startswith("Session "), line
    sid = line.split()[1]
    follow = subprocess.run(
        cli_argv(None, "log", "--follow", sid, "c1"),
        env=env, capture_output=True, text=True, timeout=HANG_LIMIT,
    )  # fmt: skip
    runner.communicate(timeout=HANG_LIMIT)
    assert follow.returncode == 0 and "Traceback" not in follow.stderr, follow.stderr
    assert follow.stdout == "start\nend\n"
    failures = []
    for options, proc, err in started:
        if not _wait_for_text(err, "watching", proc, HANG_LIMIT) and proc.poll() is None:
            failures.append(f"watch {options}: not watching after {HANG_LIMIT} s")
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=HANG_LIMIT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            failures.append(f"watch {options}: still running {HANG_LIMIT} s after SIGTERM")
        with open(err, encoding="utf-8", errors="replace") as f:
            text = f.read()
        if "Traceback" in text:
            failures.append(f"watch {options}: traceback: {text.strip().splitlines()[-1]}")
    assert not failures, "\n".join(failures)
