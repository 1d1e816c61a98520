"""Jobs that need a person: --answers, --manual ask (a fake terminal and a real pseudo-terminal), --manual wait
with ``plainbox-like answer``, and what resume does with questions left open."""

from __future__ import annotations

import fcntl
import io
import json
import os
import re
import select
import signal
import subprocess
import termios
import time

import pytest

from plainbox_like.run import manual, prepare
from plainbox_like.run.control import ANSWER_FILE
from plainbox_like.store.names import FLAG_WAITING
from plainbox_like.store.runconfig import RunConfig
from plainbox_like.store.reader import load_session
from plainbox_like.store.repository import SessionRepository
from cli_helpers import assert_one_line_error, cli, cli_argv, cli_env, run
from factories import only_session, wait_until
from shared_checkbox import PROVIDERS, needs_providers

NS = "com.canonical.certification::"

JOBS = """\
id: first
plugin: shell
command: echo first

id: look
plugin: manual
_summary: Look at the light
_purpose: Check that the light is on.
_steps:
 1. Look at it.
_verification: Is it on?

id: verify
plugin: user-verify
_summary: Check the greeting
command: echo hello-from-verify; echo "run $(cat $PLAINBOX_SESSION_SHARE/count 2>/dev/null)"; echo x >> $PLAINBOX_SESSION_SHARE/count
_verification: Did it greet?

id: interact
plugin: user-interact
_summary: Plug it in
command: exit 3

id: last
plugin: shell
command: echo last
"""


def _units(tmp_path) -> str:
    path = tmp_path / "jobs.pxu"
    path.write_text(JOBS)
    return str(path)


def _answers(tmp_path, text: str) -> str:
    path = tmp_path / "answers.txt"
    path.write_text(text)
    return str(path)


def _cli_env() -> dict[str, str]:
    return cli_env(NO_COLOR="1")


# -- --answers ------------------------------------------------------------------------------------


@needs_providers
def test_tutorial_base_with_answers_records_what_the_person_said(tmp_path, capsys):
    answers = _answers(
        tmp_path,
        "# the tutorial's jobs that need a person\n"
        "tutorial/manual: fail no light\n"
        "tutorial/user-interact: run\n"
        "\n"
        "com.canonical.certification::tutorial/user-interact-verify: skip no camera\n",
    )
    root = str(tmp_path / "repo")
    tutorial = os.path.join(PROVIDERS, "tutorial")
    code = run(root, "run", "--providers", tutorial, "--test-plan", NS + "tutorial-base", "--answers", answers)
    assert code == 1  # tutorial/failing fails, as before
    state = load_session(only_session(root)).state
    got = {job.removeprefix(NS): state.latest(job) for job in state.results}
    assert {job: (a.outcome, a.comments) for job, a in got.items() if "/" in job and job.startswith("tutorial/") and
            job.split("/")[1] in ("manual", "user-interact", "user-interact-verify")} == {
        "tutorial/manual": ("fail", "no light"),
        "tutorial/user-interact": ("pass", None),
        "tutorial/user-interact-verify": ("skip", "no camera"),
    }
    # user-interact ran its command (true): its outcome is its exit status, its output logged.
    interact = got["tutorial/user-interact"]
    assert interact.return_code == 0 and interact.io_log_filename is not None
    assert interact.answered.answer == "run" and interact.answered.via == "answers-file"
    assert got["tutorial/manual"].answered.answer == "fail" and got["tutorial/manual"].return_code is None
    # The skipped one did not run its command.
    assert got["tutorial/user-interact-verify"].io_log_filename is None
    # Every other job as before (Checkbox's reference run, README of ../shared/checkbox).
    others = {job: a.outcome for job, a in got.items() if a.answered is None}
    assert others == {
        "tutorial_resources": "pass",
        "tutorial/passing": "pass",
        "tutorial/failing": "fail",
        "tutorial/crashing": "crash",
        "tutorial/environment_variable": "pass",
        "tutorial/has_resource": "pass",
        "tutorial/no_resource": "skipped-resource",
        "tutorial/passing_dependency": "pass",
        "tutorial/failing_dependency": "skipped-dependency",
    }
    assert all(len(attempts) == 1 for attempts in state.results.values())


@pytest.mark.parametrize(
    "line, needles",
    [
        ("nosuch: pass", ["line 2", "unknown job 'nosuch'"]),
        ("look: maybe", ["line 2", "unknown answer 'maybe'"]),
        ("look: fail", ["line 2", "fail needs a comment"]),
        ("interact: skip   ", ["line 2", "skip needs a comment"]),
        ("look: run", ["line 2", "has no command"]),
        ("first: pass", ["line 2", "does not need a person"]),
        ("look pass", ["line 2", "not JOB_ID: ANSWER"]),
        ("look: pass\nlook: pass", ["line 3", "answered twice"]),
    ],
)
def test_a_bad_answers_file_is_a_one_line_error_naming_the_line_and_makes_no_session(tmp_path, capsys, line, needles):
    answers = _answers(tmp_path, "# answers\n" + line + "\n")
    root = str(tmp_path / "repo")
    assert run(root, "run", _units(tmp_path), "--answers", answers, "--manual", "skip") == 2
    assert_one_line_error(capsys.readouterr().err, f"--answers {answers}", *needles)
    assert not os.path.isdir(os.path.join(root, "sessions")) or SessionRepository(root).session_paths() == []


def test_answers_cover_some_jobs_the_others_follow_manual(tmp_path, capsys):
    answers = _answers(tmp_path, "look: pass it is on\nverify: fail wrong greeting\n")
    root = str(tmp_path / "repo")
    assert run(root, "run", _units(tmp_path), "--answers", answers, "--manual", "skip") == 1
    state = load_session(only_session(root)).state
    look, verify, interact = (state.latest(j) for j in ("look", "verify", "interact"))
    assert (look.outcome, look.comments, look.return_code) == ("pass", "it is on", None)
    # A pass or fail for a job with a command: the command runs, the answer decides.
    assert (verify.outcome, verify.comments, verify.return_code) == ("fail", "wrong greeting", 0)
    assert interact.outcome == "skip" and interact.skip_reason == "needs a person (plugin user-interact)"
    assert interact.answered is None
    assert (state.latest("first").outcome, state.latest("last").outcome) == ("pass", "pass")
    assert look.answered.user and look.answered.host and look.answered.time >= look.started


def test_run_answer_takes_the_exit_status_and_rerun_failed_asks_again(tmp_path, capsys):
    root = str(tmp_path / "repo")
    units = _units(tmp_path)
    answers = _answers(tmp_path, "look: pass\nverify: pass\ninteract: run\n")
    assert run(root, "run", units, "--answers", answers) == 1
    path = only_session(root)
    state = load_session(path).state
    assert (state.latest("interact").outcome, state.latest("interact").return_code) == ("fail", 3)
    # resume --rerun-failed works on it as on any job: asked again (here answered by a new file).
    again = _answers(tmp_path, "interact: skip not plugged\n")
    assert run(root, "resume", os.path.basename(path).removesuffix(".session"), "--rerun-failed", "--answers", again) == 0
    attempts = load_session(path).state.results["interact"]
    assert [(a.attempt, a.outcome, a.comments) for a in attempts] == [(1, "fail", None), (2, "skip", "not plugged")]
    assert [len(load_session(path).state.results[j]) for j in ("look", "verify", "first", "last")] == [1, 1, 1, 1]


# -- --manual ask with a terminal the test gives ------------------------------------------------


def _run_with_terminal(tmp_path, typed: str, answers: dict | None = None):
    repo = SessionRepository(str(tmp_path / "repo"))
    prepared = prepare.start_session(repo, RunConfig(sources=[_units(tmp_path)]))
    out = io.StringIO()
    terminal = manual.Terminal(io.StringIO(typed), out, color=False)
    desk = manual.ManualDesk(manual.MODE_ASK, answers or {}, terminal)
    summary = prepare.run_prepared(prepared, desk=desk)
    return summary, load_session(summary.path).state, out.getvalue()


def test_ask_shows_the_job_runs_again_on_request_and_needs_a_comment_for_fail(tmp_path):
    typed = "\n".join([
        "x",            # look: not a key: asked again
        "p",            # look: pass
        "",             # optional comment
        "r",            # verify ran first; run it again
        "f",            # fail
        "",             # a comment is required: asked again
        "greeting twice",
        "s",            # interact: skip instead of running
        "not today",
        "n",            # the offer to run again what did not pass: no
    ]) + "\n"
    summary, state, shown = _run_with_terminal(tmp_path, typed)
    assert summary.exit_code == 1
    look, verify, interact = (state.latest(j) for j in ("look", "verify", "interact"))
    assert (look.outcome, look.comments, look.answered.via) == ("pass", None, "terminal")
    assert (verify.outcome, verify.comments, verify.return_code) == ("fail", "greeting twice", 0)
    assert (interact.outcome, interact.comments, interact.io_log_filename) == ("skip", "not today", None)
    # What the person saw: the job, its sections, the keys, the command's output of each run.
    assert "== Look at the light ==" in shown and "Purpose:" in shown and "  1. Look at it." in shown
    assert "Verification:" in shown and "Is it on?" in shown
    assert "[p] pass  [f] fail  [s] skip" in shown and "[r] run again" in shown
    assert "Please type one of" in shown and "A comment is required" in shown
    assert "hello-from-verify" in shown and "run x" in shown  # the second run's output
    assert "\033[" not in shown  # no colours off a terminal
    # The command ran twice; one attempt is recorded, with the second run's log, and nothing else is left.
    assert [a.attempt for a in state.results["verify"]] == [1]
    logs = sorted(os.listdir(os.path.join(summary.path, "io-logs")))
    assert [name for name in logs if name.startswith("verify")] == [
        os.path.basename(verify.io_log_filename).replace(".record.gz", suffix) for suffix in (".record.gz", ".stderr", ".stdout")
    ]
    assert state.running_jobs == {}
    assert "These jobs did not pass:" in shown and "Run them again?" in shown


def test_ask_offers_once_to_run_again_what_did_not_pass(tmp_path):
    typed = "\n".join(["f", "dark", "p", "", "", "y", "p", "", "p", "", "\n"]) + "\n"
    # look fail; verify pass; interact Enter (runs, exit 3: fail); offer: yes -> look and interact asked again
    summary, state, shown = _run_with_terminal(tmp_path, typed)
    assert [a.outcome for a in state.results["look"]] == ["fail", "pass"]
    assert [a.outcome for a in state.results["interact"]] == ["fail", "fail"]
    assert [a.outcome for a in state.results["verify"]] == ["pass"]
    assert shown.count("Run them again?") == 1  # once, not after the re-run


def test_ask_when_the_input_ends_stops_as_ctrl_c_does_and_leaves_the_question_open(tmp_path):
    summary, state, shown = _run_with_terminal(tmp_path, "p\n\n")  # look answered; verify's question: no input
    assert summary.interrupted and summary.exit_code == 130
    assert [a.outcome for a in state.results["look"]] == ["pass"]
    assert "verify" not in state.results and state.running_jobs == {}  # its command's run is forgotten
    assert not [name for name in os.listdir(os.path.join(summary.path, "io-logs")) if name.startswith("verify")]
    assert "no more input to answer from" in shown


def test_colours_only_on_a_terminal(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert not manual.Terminal(io.StringIO(), io.StringIO()).color
    master, slave = os.openpty()
    try:
        with os.fdopen(slave, "w", closefd=False) as tty:
            assert manual.Terminal(io.StringIO(), tty).color
            assert manual.Terminal(io.StringIO(), tty).style("x", "1") == "\033[1mx\033[0m"
            monkeypatch.setenv("NO_COLOR", "1")
            assert not manual.Terminal(io.StringIO(), tty).color
    finally:
        os.close(master)
        os.close(slave)


def test_a_job_that_needs_a_person_runs_alone_with_j(tmp_path):
    units = tmp_path / "alone.pxu"
    units.write_text(
        "id: before\ncommand: sleep 0.3\n\n"
        "id: look\nplugin: manual\n\n"
        "id: after\ncommand: true\n\n"
        "id: other\ncommand: true\n"
    )
    root = str(tmp_path / "repo")
    assert run(root, "run", str(units), "-j", "3", "--answers", _answers(tmp_path, "look: pass\n")) == 0
    state = load_session(only_session(root)).state
    before, look, after, other = (state.latest(j) for j in ("before", "look", "after", "other"))
    # It waited for the job started before it, and no job started until it was answered.
    assert look.answered.time >= before.started + before.execution_duration
    assert min(after.started, other.started) >= look.answered.time


# -- --manual ask through a real pseudo-terminal -----------------------------------------------


class Pty:
    """A command on a pseudo-terminal of its own (its controlling terminal: Ctrl-C there is SIGINT)."""

    def __init__(self, argv: list[str], cwd: str) -> None:
        master, slave = os.openpty()
        attrs = termios.tcgetattr(slave)
        attrs[3] &= ~termios.ECHO  # what is typed is not echoed back into the output
        termios.tcsetattr(slave, termios.TCSANOW, attrs)

        def controlling() -> None:
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.proc = subprocess.Popen(
            argv, stdin=slave, stdout=slave, stderr=slave, cwd=cwd, env=_cli_env(), preexec_fn=controlling, close_fds=True
        )
        os.close(slave)
        self.master = master
        self.seen = ""

    def expect(self, pattern: str, timeout: float = 30.0) -> str:
        """Read until *pattern* (a regex) appears in what came since the last match; return that part."""
        deadline = time.monotonic() + timeout
        while True:
            match = re.search(pattern, self.seen)
            if match:
                got, self.seen = self.seen[: match.end()], self.seen[match.end():]
                return got
            left = deadline - time.monotonic()
            assert left > 0, f"no {pattern!r} in {self.seen!r}"
            ready, _, _ = select.select([self.master], [], [], min(left, 0.5))
            if ready:
                try:
                    data = os.read(self.master, 4096)
                except OSError:  # the other end is closed
                    data = b""
                if not data:
                    assert re.search(pattern, self.seen), f"ended without {pattern!r}: {self.seen!r}"
                self.seen += data.decode("utf-8", "replace")

    def send(self, text: str) -> None:
        os.write(self.master, text.encode())

    def wait(self) -> int:
        try:
            while True:  # drain, so the child never blocks on a full terminal
                ready, _, _ = select.select([self.master], [], [], 0.2)
                if ready:
                    data = os.read(self.master, 4096)
                    if not data:
                        break
                    self.seen += data.decode("utf-8", "replace")
                elif self.proc.poll() is not None:
                    break
        except OSError:
            pass
        code = self.proc.wait(timeout=30)
        os.close(self.master)
        return code


def test_ask_in_a_pseudo_terminal_ctrl_c_stops_and_resume_asks_the_same_job_again(tmp_path):
    root = str(tmp_path / "repo")
    term = Pty(cli_argv(root, "run", _units(tmp_path)), str(tmp_path))  # stdin is a terminal: ask is the default
    term.expect(r"Look at the light")
    term.expect(r"\[p\] pass  \[f\] fail  \[s\] skip: ")
    term.send("p\n")
    term.expect(r"Comment \(optional, Enter for none\): ")
    term.send("\n")
    term.expect(r"hello-from-verify")  # user-verify ran first: its output is shown
    term.expect(r"\[r\] run again: ")
    term.send("r\n")  # run it again
    term.expect(r"run x")
    term.expect(r"\[r\] run again: ")
    term.send("f\n")
    term.expect(r"Comment \(required\): ")
    term.send("greeting twice\n")
    term.expect(r"Plug it in")
    term.expect(r"Ready\?.*: ")
    term.send("\x03")  # Ctrl-C at the prompt
    assert term.wait() == 130, term.seen
    path = only_session(root)
    state = load_session(path).state
    assert [(a.outcome, a.comments) for a in state.results["look"]] == [("pass", None)]
    assert [(a.outcome, a.comments) for a in state.results["verify"]] == [("fail", "greeting twice")]
    assert "interact" not in state.results and state.running_jobs == {}  # no answer given
    assert FLAG_WAITING not in state.metadata.flags
    # resume asks that same job again, and only it.
    term = Pty(cli_argv(root, "resume", os.path.basename(path).removesuffix(".session")), str(tmp_path))
    term.expect(r"Plug it in")
    term.expect(r"Ready\?.*: ")
    term.send("s\n")
    term.expect(r"Comment \(required\): ")
    term.send("cable missing\n")
    term.expect(r"Run them again\?.*: ")
    term.send("n\n")
    assert term.wait() == 1
    assert "Look at the light" not in term.seen and "Check the greeting" not in term.seen
    state = load_session(path).state
    assert [(a.outcome, a.comments) for a in state.results["interact"]] == [("skip", "cable missing")]
    assert {job: len(attempts) for job, attempts in state.results.items()} == dict.fromkeys(
        ["first", "look", "verify", "interact", "last"], 1
    )


# -- --manual wait and plainbox-like answer ----------------------------------------------------


def _waiting_for(path: str, ran_after: float | None = None) -> str | None:
    """The job the session waits for an answer on, or None; with *ran_after*, only a job whose command was
    started after that time (a question asked again on resume, not the dead runner's flag)."""
    try:
        state = load_session(path).state
    except Exception:  # noqa: BLE001 - being created
        return None
    job = state.metadata.running_job_name
    if FLAG_WAITING not in state.metadata.flags:
        return None
    if ran_after is not None and not (job in state.running_jobs and state.running_jobs[job].started > ran_after):
        return None
    return job


def _sessions(root: str) -> list[str]:
    return SessionRepository(root).session_paths() if os.path.isdir(os.path.join(root, "sessions")) else []


def test_wait_answer_from_another_process_then_kill_and_resume_records_every_job_once(tmp_path):
    root = str(tmp_path / "repo")
    units = _units(tmp_path)
    runner = subprocess.Popen(
        cli_argv(root, "run", units, "--manual", "wait"),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_cli_env(),
    )
    try:
        wait_until(lambda: _sessions(root), what="the session")
        path = _sessions(root)[0]
        sid = os.path.basename(path).removesuffix(".session")
        wait_until(lambda: _waiting_for(path) == "look", what="the question of look")
        # list and show say so, naming the job.
        listed = cli(root, "list", check=True).stdout
        assert "waiting for a person: job look" in listed
        assert "Status:   running (waiting for a person: job look)" in cli(root, "show", sid, check=True).stdout
        # Answering another job, or without the comment fail needs: one-line errors; nothing is answered.
        wrong = cli(root, "answer", sid, "verify", "pass")
        assert wrong.returncode == 2
        assert_one_line_error(wrong.stderr, "job verify is not waiting", "waits for look")
        bad = cli(root, "answer", sid, "look", "fail")
        assert bad.returncode == 2
        assert_one_line_error(bad.stderr, "fail needs a comment")
        assert _waiting_for(path) == "look"
        # The answer is seen within half a second (the runner looks every 0.2 s), from the moment it is left.
        answered = cli(root, "answer", sid, "look", "fail", "--comment", "too dark")
        assert answered.returncode == 0, answered.stderr
        left = time.monotonic()
        wait_until(lambda: not os.path.exists(os.path.join(path, ANSWER_FILE)), what="the answer taken")
        taken = time.monotonic() - left
        assert taken < 1.5, taken  # 0.5 s by design; generous on a loaded machine
        wait_until(lambda: _waiting_for(path) == "verify", what="the question of verify")
        # verify ran its command before its question; the runner is killed while it waits.
        runner.send_signal(signal.SIGKILL)
        runner.wait(timeout=30)
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
    state = load_session(path).state
    killed_at, killed_seq = time.time(), state.journal_seq
    assert [(a.outcome, a.comments, a.answered.via) for a in state.results["look"]] == [("fail", "too dark", "answer-command")]
    assert "verify" in state.running_jobs and "verify" not in state.results
    # The dead runner's flag is its own: a writer that opens the session drops it in its first change.
    from plainbox_like.store.writer import SessionWriter

    with SessionWriter.open(path) as reopened:
        assert FLAG_WAITING not in reopened.state.metadata.flags
        assert reopened.state.journal_seq == killed_seq + 1
    state = load_session(path).state
    # A session that is not running waits for nothing.
    dead = cli(root, "answer", sid, "verify", "pass")
    assert dead.returncode == 2
    assert_one_line_error(dead.stderr, f"session {sid} is not waiting for an answer")
    resumed = subprocess.Popen(
        cli_argv(root, "resume", sid, "--manual", "wait"),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_cli_env(),
    )
    try:
        wait_until(lambda: _waiting_for(path, killed_at) == "verify", what="verify asked again")
        assert cli(root, "answer", sid, "verify", "pass").returncode == 0
        wait_until(lambda: _waiting_for(path) == "interact", what="the question of interact")
        assert cli(root, "answer", sid, "interact", "run").returncode == 0
        out, err = resumed.communicate(timeout=60)
    finally:
        if resumed.poll() is None:
            resumed.kill()
            resumed.wait()
    assert resumed.returncode == 1, err  # look failed, interact exits 3
    state = load_session(path).state
    assert {job: [a.outcome for a in attempts] for job, attempts in state.results.items()} == {
        "first": ["pass"], "look": ["fail"], "verify": ["pass"], "interact": ["fail"], "last": ["pass"],
    }
    assert state.latest("verify").return_code == 0 and state.latest("interact").return_code == 3
    assert state.running_jobs == {} and FLAG_WAITING not in state.metadata.flags
    assert cli(root, "check", sid).returncode == 0  # no orphan log of the killed run's question
    shown = json.loads(cli(root, "show", sid, "--json", check=True).stdout)
    verify = next(job for job in shown["jobs"] if job["id"] == "verify")
    assert verify["attempts"][0]["answered"]["via"] == "answer-command"


def test_rerun_interrupted_asks_again_a_job_that_cleanup_recorded_as_crash(tmp_path):
    root = str(tmp_path / "repo")
    units = _units(tmp_path)
    answers = _answers(tmp_path, "look: pass\n")
    runner = subprocess.Popen(
        cli_argv(root, "run", units, "--manual", "wait", "--answers", answers),
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_cli_env(),
    )
    try:
        wait_until(lambda: _sessions(root), what="the session")
        path = _sessions(root)[0]
        wait_until(lambda: _waiting_for(path) == "verify", what="the question of verify")
        runner.send_signal(signal.SIGKILL)
        runner.wait(timeout=30)
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
    sid = os.path.basename(path).removesuffix(".session")
    assert cli(root, "cleanup").returncode == 0  # the dead runner's job: crash, as any job's
    assert load_session(path).state.latest("verify").outcome == "crash"
    again = _answers(tmp_path, "verify: pass looks right\ninteract: skip later\n")
    assert run(root, "resume", sid, "--rerun-interrupted", "--answers", again, "--manual", "skip") == 0
    state = load_session(path).state
    assert [(a.outcome, a.comments) for a in state.results["verify"]] == [
        ("crash", "the session stopped while this job ran"), ("pass", "looks right")
    ]
    assert [a.outcome for a in state.results["look"]] == ["pass"]  # answered once, never asked again
