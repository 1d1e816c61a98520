"""Jobs that need a person: asking in the terminal, answers given ahead, answers from elsewhere.

Plugins ``manual``, ``user-interact``, ``user-verify`` and ``user-interact-verify``
have Checkbox's meaning: the job's summary and purpose, steps and verification
(or the older description) are shown; ``user-verify`` runs its command first and
then asks; ``user-interact`` and ``user-interact-verify`` run it once the person
is ready (``user-interact``: its exit status decides); the person answers pass,
fail or skip, with a comment (required for fail and skip), and may run the
command again before answering.

Where an answer comes from: ``--answers FILE`` first, then the ``--manual``
mode: ``ask`` (the terminal), ``wait`` (``plainbox-like answer`` from another
process, through the file ``answer`` of the session, as ``stop`` and ``pause``
use ``control``), ``skip`` (not run: "needs a person").

A :class:`ManualDesk` belongs to a :class:`plainbox_like.run.batch.BatchRunner`.
The runner hands it a job that needs a person and then calls :meth:`ManualDesk.step`
only while no other job runs (a barrier: prompts stay readable with ``-j N``).
The desk starts the job's command through the runner, so it is journaled and
logged as any job's, and is told when it ends. Every answer is journaled, with
who gave it and when (:class:`plainbox_like.store.model.Answered`), before the
run moves on. While a question is open nothing is recorded for the job (a
command run for it has only its start in the journal): a run stopped or killed
then leaves the job without a result, and ``resume`` asks it again.
"""

from __future__ import annotations

import getpass
import os
import re
import select
import signal
import sys
import time
from typing import IO, TYPE_CHECKING, Callable, Protocol

import attrs

from plainbox_like.define.units import JobDefinition
from plainbox_like.errors import PlainboxLikeError
from plainbox_like.run import control
from plainbox_like.store.model import (
    OUTCOME_CRASH,
    OUTCOME_FAIL,
    OUTCOME_PASS,
    OUTCOME_SKIP,
    Answered,
    Attempt,
)
from plainbox_like.store.names import FLAG_WAITING
from plainbox_like.store.paths import open_without_waiting
from plainbox_like.store.confine import log_file_names, session_file
from plainbox_like.store.locks import hostname
from plainbox_like.text import clean

if TYPE_CHECKING:
    from plainbox_like.store.writer import SessionWriter

#: Plugins whose jobs a person answers (Checkbox's ``qml`` needs its UI: still skipped).
MANUAL_PLUGINS = frozenset({"manual", "user-interact", "user-verify", "user-interact-verify"})
#: Plugins whose command runs before the person is asked.
RUN_FIRST = frozenset({"user-verify"})
#: Plugins whose command runs once the person is ready.
READY_FIRST = frozenset({"user-interact", "user-interact-verify"})
#: Plugins whose outcome is the command's exit status (the person only says when to run it).
STATUS_DECIDES = frozenset({"user-interact"})

ANSWER_PASS, ANSWER_FAIL, ANSWER_SKIP, ANSWER_RUN = "pass", "fail", "skip", "run"
ANSWERS = (ANSWER_PASS, ANSWER_FAIL, ANSWER_SKIP, ANSWER_RUN)
#: Answers that need a comment (as in Checkbox).
NEED_COMMENT = frozenset({ANSWER_FAIL, ANSWER_SKIP})

MODE_ASK, MODE_WAIT, MODE_SKIP = "ask", "wait", "skip"
MODES = (MODE_ASK, MODE_WAIT, MODE_SKIP)

VIA_TERMINAL, VIA_FILE, VIA_COMMAND = "terminal", "answers-file", "answer-command"
#: The most of a command's output shown in the terminal before the question (each stream).
OUTPUT_SHOWN = 64 << 10


def is_manual(job: JobDefinition) -> bool:
    """Whether a person answers *job* (see :data:`MANUAL_PLUGINS`)."""
    return job.plugin in MANUAL_PLUGINS


def default_mode(stdin: IO | None = None) -> str:
    """``ask`` when stdin is a terminal, else ``skip``."""
    stdin = sys.stdin if stdin is None else stdin
    try:
        return MODE_ASK if stdin is not None and stdin.isatty() else MODE_SKIP
    except (AttributeError, ValueError):
        return MODE_SKIP


# -- answers ----------------------------------------------------------------------------------


@attrs.frozen
class Given:
    """One answer, with who gave it and how."""

    answer: str
    comment: str | None
    user: str
    host: str
    time: float
    via: str

    def answered(self) -> Answered:
        return Answered(answer=self.answer, user=self.user, host=self.host, time=self.time, via=self.via)


def answer_problem(answer: str, comment: str | None, job: JobDefinition | None) -> str | None:
    """What is wrong with *answer* (and *comment*) for *job*, or None: one rule for every way of answering."""
    if answer not in ANSWERS:
        return f"unknown answer {answer!r} (use {', '.join(ANSWERS)})"
    if answer in NEED_COMMENT and not (comment or "").strip():
        return f"{answer} needs a comment (why)"
    if job is not None and answer == ANSWER_RUN and not job.command:
        return f"run: job {job.id} (plugin {job.plugin}) has no command"
    return None


def find_job(jobs: dict[str, JobDefinition], given: str) -> tuple[JobDefinition | None, str | None]:
    """The job a person means by *given*: its id, or its id without the namespace; else why not."""
    job = jobs.get(given)
    if job is not None:
        return job, None
    matches = [j for j in jobs.values() if j.id.partition("::")[2] == given]
    if len(matches) == 1:
        return matches[0], None
    if matches:
        return None, f"{given!r} names several jobs ({', '.join(sorted(j.id for j in matches))}): give the namespace"
    return None, f"unknown job {given!r} (not in the run)"


_LINE = re.compile(r"(\S+):\s+(\S+)(?:\s+(.*?))?\s*")


def read_answers(path: str, jobs: dict[str, JobDefinition]) -> dict[str, Given]:
    """The answers of an ``--answers`` file, by job id: one ``JOB_ID: ANSWER [comment]`` a line.

    Blank lines and lines starting with ``#`` are left out. A line that cannot be
    read, an unknown job or answer, a missing comment, a job answered twice: a
    one-line :class:`PlainboxLikeError` naming the file and line.
    """
    try:  # as a shell would read it (``<(...)`` works), but a FIFO nobody writes into never hangs the run
        with open(open_without_waiting(path, os.O_RDONLY), encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise PlainboxLikeError(f"--answers {clean(path)}: cannot read it ({clean(reason)})") from None
    user, host, now = getpass.getuser(), hostname(), time.time()
    answers: dict[str, Given] = {}
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        where = f"--answers {clean(path)} line {number}"
        match = _LINE.fullmatch(text)
        if match is None:
            raise PlainboxLikeError(f"{where}: not JOB_ID: ANSWER [comment]: {clean(text)[:80]}")
        job, why = find_job(jobs, match.group(1))
        if job is None:
            raise PlainboxLikeError(f"{where}: {clean(why)}")
        if not is_manual(job):
            raise PlainboxLikeError(f"{where}: job {clean(job.id)} (plugin {clean(job.plugin)}) does not need a person")
        answer, comment = match.group(2).lower(), match.group(3) or None
        problem = answer_problem(answer, comment, job)
        if problem is not None:
            raise PlainboxLikeError(f"{where}: {clean(problem)}")
        if job.id in answers:
            raise PlainboxLikeError(f"{where}: job {clean(job.id)} is answered twice")
        answers[job.id] = Given(answer, comment, user, host, now, VIA_FILE)
    return answers


# -- the terminal -----------------------------------------------------------------------------


class Terminal:
    """Where a person is asked: lines read from *stdin*, text written to *stdout*.

    *should_stop* is called while waiting for a line: true ends the wait with
    None (Ctrl-C, a stop request). Colours only when *stdout* is a terminal
    (and ``NO_COLOR`` is not set). Tests give their own streams.
    """

    def __init__(self, stdin: IO | None = None, stdout: IO | None = None, color: bool | None = None) -> None:
        self.stdin = sys.stdin if stdin is None else stdin
        self.stdout = sys.stdout if stdout is None else stdout
        if color is None:
            try:
                color = self.stdout.isatty() and not os.environ.get("NO_COLOR")
            except (AttributeError, ValueError):
                color = False
        self.color = color
        self.should_stop: Callable[[], bool] = lambda: False
        #: True once the input has ended: nobody can answer any more.
        self.ended = False
        self._buffer = b""

    def style(self, text: str, code: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.color else text

    def write(self, text: str = "") -> None:
        self.stdout.write(text + "\n")
        self.stdout.flush()

    def read_line(self, prompt: str) -> str | None:
        """One line typed after *prompt* (without its newline); None if stopped or at end of input."""
        self.stdout.write(prompt)
        self.stdout.flush()
        try:
            fd = self.stdin.fileno()
        except (AttributeError, OSError, ValueError):
            fd = None
        if fd is None:  # a stream without a descriptor (tests)
            if self.should_stop():
                return None
            line = self.stdin.readline()
            if not line:
                self.ended = True
                return None
            return line.rstrip("\r\n")
        while b"\n" not in self._buffer:
            if self.should_stop():
                self.stdout.write("\n")
                return None
            ready, _, _ = select.select([fd], [], [], 0.1)
            if not ready:
                continue
            chunk = os.read(fd, 4096)
            if not chunk:  # end of input
                self.ended = True
                self.stdout.write("\n")
                return None
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode("utf-8", "replace").rstrip("\r")

    def choose(self, prompt: str, keys: dict[str, str]) -> str | None:
        """Ask until one of *keys* (key -> meaning; ``""`` for Enter) is typed; the meaning, or None if stopped."""
        shown = "  ".join(
            f"[{self.style(key or 'Enter', '1')}] {meaning}" for key, meaning in keys.items()
        )
        while True:
            line = self.read_line(f"{prompt}  {shown}: ")
            if line is None:
                return None
            key = line.strip().lower()
            if key in keys:
                return keys[key]
            for k, meaning in keys.items():  # the whole word works too
                if key and key == meaning:
                    return meaning
            self.write(f"Please type one of: {', '.join(k or 'Enter' for k in keys)}")

    def comment(self, required: bool) -> str | None:
        """A comment (``""`` when none and optional); None if stopped."""
        prompt = "Comment (required): " if required else "Comment (optional, Enter for none): "
        while True:
            line = self.read_line(prompt)
            if line is None:
                return None
            if line.strip() or not required:
                return line.strip()
            self.write("A comment is required for this outcome.")


# -- the desk ---------------------------------------------------------------------------------


class Runner(Protocol):
    """What the desk needs of the batch runner."""

    writer: SessionWriter

    def start_for_person(self, job: JobDefinition) -> None: ...

    def record_for_person(self, job_id: str, result: Attempt) -> None: ...

    def stop_requested(self) -> bool: ...

    def request_stop(self, signum: int = ...) -> None: ...


@attrs.define
class _Question:
    job: JobDefinition
    asked: float
    #: ``new``, ``running`` (its command runs), ``ran`` (the command ended), ``waiting`` (for an answer).
    phase: str = "new"
    #: The answer that made the command run (pass/fail/run), if any: decides once it ends.
    given: Given | None = None
    #: The attempt of the command's last run (not recorded: the answer decides its outcome).
    ran: Attempt | None = None
    #: Whether a start of the command is journaled and not finished (abandoned if no answer comes).
    started: bool = False


class ManualDesk:
    """Answers the jobs that need a person, for one run (see the module's docstring)."""

    def __init__(
        self,
        mode: str = MODE_SKIP,
        answers: dict[str, Given] | None = None,
        terminal: Terminal | None = None,
    ) -> None:
        if mode not in MODES:
            raise PlainboxLikeError(f"--manual {mode}: unknown mode (use {', '.join(MODES)})")
        self.mode = mode
        self.answers = dict(answers or {})
        self.terminal = terminal if terminal is not None or mode != MODE_ASK else Terminal()
        self.pending: _Question | None = None
        self._user = getpass.getuser()
        self._host = hostname()

    # -- what the runner asks

    def takes(self, job: JobDefinition) -> bool:
        """Whether this desk answers *job* (else it is skipped: it needs a person)."""
        return is_manual(job) and (self.mode != MODE_SKIP or job.id in self.answers)

    def queue(self, job: JobDefinition) -> None:
        """*job* is next: it runs as soon as no other job does."""
        self.pending = _Question(job=job, asked=time.time())

    @property
    def waiting(self) -> bool:
        """Whether the run waits for an answer from another process (look often)."""
        return self.pending is not None and self.pending.phase == "waiting"

    def owns(self, job_id: str) -> bool:
        return self.pending is not None and self.pending.job.id == job_id

    def step(self, runner: Runner) -> None:
        """Move the open question on (called while no other job runs); returns when it waits or is answered."""
        q = self.pending
        if q is None or q.phase == "running":
            return
        if self.terminal is not None:
            self.terminal.should_stop = runner.stop_requested  # Ctrl-C or a stop request ends a prompt
        self._step(runner, q)
        if self.pending is not None and self.terminal is not None and self.terminal.ended:
            # Nobody can answer any more: stop as Ctrl-C does (the question stays open for resume).
            self._say(q.job, "no more input to answer from: the run stops; resume it to answer")
            runner.request_stop(signal.SIGINT)

    def _step(self, runner: Runner, q: _Question) -> None:
        if q.phase == "new":
            given = self.answers.pop(q.job.id, None)
            if given is not None:
                given = attrs.evolve(given, time=time.time())  # when it was taken for the job
                self._say(q.job, f"answered by --answers: {given.answer}" + (f" ({given.comment})" if given.comment else ""))
                self._apply(runner, q, given)
            elif self.mode == MODE_ASK:
                self._ask_first(runner, q)
            else:
                self._wait_first(runner, q)
        elif q.phase == "ran":
            if q.given is not None:  # the answer came first: it decides now
                self._finish_given(runner, q, q.given)
            elif self.mode == MODE_ASK:
                self._ask_after_run(runner, q)
            else:
                self._set_waiting(runner, q)
        elif q.phase == "waiting":
            self._take_answer(runner, q)

    def command_ended(self, runner: Runner, job_id: str, result: Attempt, stopped: bool) -> bool:
        """The command of the open question ended: True if the desk takes its *result* (not to be recorded).

        A command stopped by an interruption or a stop request leaves the job
        unanswered (asked again on resume).
        """
        q = self.pending
        if q is None or q.job.id != job_id:
            return False
        if stopped:
            self.abandon(runner)
            return True
        q.ran, q.phase = result, "ran"
        return True

    def command_failed(self, job_id: str) -> None:
        """Its command could not start: the runner records that; the question is over."""
        if self.owns(job_id):
            self.pending = None

    def abandon(self, runner: Runner) -> None:
        """The run stops with the question open: forget a journaled start (and its logs), clear the flag."""
        q, self.pending = self.pending, None
        if q is None:
            return
        writer = runner.writer
        if q.started and q.job.id in writer.state.running_jobs:
            running = writer.state.running_jobs[q.job.id]
            writer.record({"op": "abandon", "job": q.job.id})
            remove_logs(writer.path, running.io_log_filename)
        self._clear_waiting(runner)

    # -- asking in the terminal

    def _present(self, job: JobDefinition) -> None:
        t = self.terminal
        t.write()
        t.write(t.style(f"== {clean(job.summary or job.id)} ==", "1;36"))
        t.write(f"Job {clean(job.id)} needs a person (plugin {clean(job.plugin)}).")
        sections = [(name.capitalize(), job.extra.get(name)) for name in ("purpose", "steps", "verification")]
        if not any(text for _name, text in sections) and job.description:
            sections = [("Description", job.description)]
        for name, text in sections:
            if text:
                t.write(t.style(f"{name}:", "1"))
                for line in text.splitlines():
                    t.write(f"  {clean(line)}")

    def _ask_first(self, runner: Runner, q: _Question) -> None:
        job = q.job
        self._present(job)
        if job.plugin in RUN_FIRST and job.command:
            self._run(runner, q)
            return
        if job.plugin in READY_FIRST and job.command:
            choice = self.terminal.choose("Ready?", {"": "run", "s": "skip"})
            if choice is None:
                return
            if choice == "run":
                self._run(runner, q)
                return
            self._verdict(runner, q, ANSWER_SKIP)
            return
        self._ask_outcome(runner, q, can_run=False)

    def _ask_after_run(self, runner: Runner, q: _Question) -> None:
        self._show_output(runner, q)
        if q.job.plugin in STATUS_DECIDES:
            self._finish_given(runner, q, self._given(ANSWER_RUN, None, VIA_TERMINAL))
            return
        self._ask_outcome(runner, q, can_run=True)

    def _ask_outcome(self, runner: Runner, q: _Question, can_run: bool) -> None:
        keys = {"p": ANSWER_PASS, "f": ANSWER_FAIL, "s": ANSWER_SKIP}
        if can_run:
            keys["r"] = "run again"
        suggested = ""
        if q.ran is not None:
            suggested = f" (the command suggests {q.ran.outcome})"
        choice = self.terminal.choose(f"Outcome{suggested}?", keys)
        if choice is None:
            return
        if choice == "run again":
            self._run(runner, q)
            return
        self._verdict(runner, q, choice)

    def _verdict(self, runner: Runner, q: _Question, answer: str) -> None:
        comment = self.terminal.comment(required=answer in NEED_COMMENT)
        if comment is None:
            return
        self._finish_given(runner, q, self._given(answer, comment or None, VIA_TERMINAL))

    def _show_output(self, runner: Runner, q: _Question) -> None:
        t, ran = self.terminal, q.ran
        if ran is None or ran.io_log_filename is None:
            return
        files = log_file_names(ran.io_log_filename)
        for stream in ("stdout", "stderr"):
            try:
                with open(session_file(runner.writer.path, files[stream], "io_log_filename"), "rb") as handle:
                    data = handle.read(OUTPUT_SHOWN + 1)
            except OSError:
                continue
            if not data:
                continue
            t.write(t.style(f"Output ({stream}):", "1"))
            text = data[:OUTPUT_SHOWN].decode("utf-8", "replace")
            for line in text.splitlines():
                t.write(f"  {clean(line)}")
            if len(data) > OUTPUT_SHOWN:
                t.write(f"  ... (more in {ran.io_log_filename})")
        status = "exit status " + (str(ran.return_code) if ran.return_code is not None else "-")
        t.write(f"The command ended: {status}, outcome {ran.outcome}" + (f" ({clean(ran.comments)})" if ran.comments else ""))

    # -- waiting for plainbox-like answer

    def _wait_first(self, runner: Runner, q: _Question) -> None:
        if q.job.plugin in RUN_FIRST and q.job.command:
            self._run(runner, q)
            return
        self._set_waiting(runner, q)

    def _set_waiting(self, runner: Runner, q: _Question) -> None:
        q.phase = "waiting"
        control.clear_answer(runner.writer.path)  # an answer left for an earlier question is not for this one
        meta = runner.writer.state.metadata
        flags = [f for f in meta.flags if f != FLAG_WAITING] + [FLAG_WAITING]
        runner.writer.update_metadata(flags=flags, running_job_name=q.job.id)
        self._say(q.job, "waits for a person: plainbox-like answer "
                  f"{runner.writer.id} {q.job.id} pass|fail|skip" + ("|run" if q.job.command else "") + " [--comment TEXT]")

    def _clear_waiting(self, runner: Runner) -> None:
        meta = runner.writer.state.metadata
        if FLAG_WAITING in meta.flags:
            runner.writer.update_metadata(flags=[f for f in meta.flags if f != FLAG_WAITING], durable=False)

    def _take_answer(self, runner: Runner, q: _Question) -> None:
        request = control.read_answer(runner.writer.path)
        if request is None:
            return
        control.clear_answer(runner.writer.path)
        if request.job != q.job.id or answer_problem(request.answer, request.comment, q.job) is not None:
            return  # not for this job (the answer command checks first): left out
        # When the person answered (the time of the request, if it is not in the future), not when it was seen.
        when = request.t if isinstance(request.t, (int, float)) and q.asked <= request.t <= time.time() else time.time()
        given = Given(request.answer, request.comment, request.user, request.host, float(when), VIA_COMMAND)
        self._say(q.job, f"answered {given.answer} by {clean(given.user)}@{clean(given.host)}")
        self._apply(runner, q, given)

    # -- answers

    def _given(self, answer: str, comment: str | None, via: str) -> Given:
        return Given(answer, comment, self._user, self._host, time.time(), via)

    def _apply(self, runner: Runner, q: _Question, given: Given) -> None:
        """An answer given before the job's command ran (if it has one): run it unless skipped, then decide."""
        if given.answer != ANSWER_SKIP and q.job.command and q.ran is None:
            q.given = given
            self._run(runner, q)
            return
        self._finish_given(runner, q, given)

    def _finish_given(self, runner: Runner, q: _Question, given: Given) -> None:
        ran = q.ran
        if given.answer == ANSWER_RUN:
            outcome = ran.outcome if ran is not None else OUTCOME_CRASH
        else:
            outcome = {ANSWER_PASS: OUTCOME_PASS, ANSWER_FAIL: OUTCOME_FAIL, ANSWER_SKIP: OUTCOME_SKIP}[given.answer]
        comments = given.comment
        if comments is None and given.answer == ANSWER_RUN and ran is not None:
            comments = ran.comments
        if ran is not None:
            result = attrs.evolve(ran, outcome=outcome, comments=comments, answered=given.answered())
        else:
            result = Attempt(
                outcome=outcome,
                comments=comments,
                execution_duration=max(0.0, given.time - q.asked),
                started=q.asked,
                answered=given.answered(),
            )
        self.pending = None
        self._clear_waiting(runner)
        runner.record_for_person(q.job.id, result)

    def _run(self, runner: Runner, q: _Question) -> None:
        """Start the job's command (again: the earlier run is forgotten, its logs removed)."""
        writer = runner.writer
        if q.started and q.ran is not None:
            writer.record({"op": "abandon", "job": q.job.id}, durable=False)
            remove_logs(writer.path, q.ran.io_log_filename)
        q.ran, q.phase, q.started = None, "running", True
        runner.start_for_person(q.job)

    def _say(self, job: JobDefinition, message: str) -> None:
        if self.terminal is not None:
            self.terminal.write(f"{clean(job.id)}: {clean(message)}")
        else:
            sys.stderr.write(f"plainbox-like: {clean(job.id)}: {clean(message)}\n")
            sys.stderr.flush()

    # -- after the run

    def offer_rerun(self, candidates: list[tuple[str, str]]) -> bool:
        """Ask once whether to run again the jobs that failed, crashed or were skipped (job, outcome)."""
        if self.mode != MODE_ASK or self.terminal is None or not candidates:
            return False
        t = self.terminal
        t.write()
        t.write(t.style("These jobs did not pass:", "1"))
        for job_id, outcome in candidates:
            t.write(f"  {outcome:<18} {clean(job_id)}")
        choice = t.choose("Run them again?", {"y": "yes", "": "no", "n": "no"})
        return choice == "yes"


def remove_logs(session_path: str, io_log_filename: str | None) -> None:
    """Remove the log files of an attempt that will not be recorded (its start abandoned)."""
    if not io_log_filename:
        return
    for name in log_file_names(io_log_filename).values():
        try:
            os.unlink(session_file(session_path, name, "io_log_filename"))
        except (OSError, PlainboxLikeError):
            pass
