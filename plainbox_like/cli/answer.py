"""``answer``: answer the job that a running session waits for (``run --manual wait``)."""

from __future__ import annotations

import argparse
import getpass
import os
import time

from plainbox_like.cli import options, output
from plainbox_like.cli.options import repository
from plainbox_like.errors import PlainboxLikeError
from plainbox_like.run import control, manual
from plainbox_like.store.names import FLAG_WAITING
from plainbox_like.store.locks import hostname, writer_alive
from plainbox_like.store.reader import LoadedSession, load_session
from plainbox_like.text import clean


def _waiting_job(loaded: LoadedSession) -> str | None:
    """The job the session's runner waits for an answer to, or None."""
    meta = loaded.state.metadata
    if FLAG_WAITING not in meta.flags or not meta.running_job_name:
        return None
    return meta.running_job_name


def cmd_answer(args: argparse.Namespace) -> int:
    path = repository(args).resolve(args.session)
    session = os.path.basename(path).removesuffix(".session")
    loaded = load_session(path)
    waiting = _waiting_job(loaded)
    if waiting is None or not writer_alive(path) and _same_host(path):
        raise PlainboxLikeError(f"session {session} is not waiting for an answer (run it with --manual wait)")
    given = args.job
    if given != waiting and waiting.partition("::")[2] != given:
        raise PlainboxLikeError(f"job {clean(given)} is not waiting for an answer (session {session} waits for {clean(waiting)})")
    answer = args.answer.lower()
    problem = manual.answer_problem(answer, args.comment, None)
    if problem is None and answer == manual.ANSWER_RUN and not _has_command(loaded, waiting):
        problem = f"run: job {waiting} has no command"
    if problem is not None:
        raise PlainboxLikeError(f"answer {clean(args.answer)}: {clean(problem)}")
    request = control.AnswerRequest(
        job=waiting,
        answer=answer,
        comment=args.comment,
        user=getpass.getuser(),
        host=hostname(),
        t=time.time(),
        pid=os.getpid(),
    )
    control.write_answer(path, request)
    output.say(f"answered {answer} to job {clean(waiting)} of session {session}")
    return 0


def _same_host(path: str) -> bool:
    """Whether the session's runner is (or was last) on this machine: only then can its liveness be seen."""
    from plainbox_like.store.locks import lock_holder

    holder = lock_holder(path)
    return holder is None or holder[1] == hostname()


def _has_command(loaded: LoadedSession, job_id: str) -> bool:
    """Whether the waiting job has a command (from the run's definitions, loaded again)."""
    from plainbox_like.run import prepare
    from plainbox_like.store.runconfig import RunConfig

    try:
        units = prepare.load_run_units(RunConfig.from_blob(loaded.state.metadata.app_blob))
    except PlainboxLikeError:
        return True  # the runner checks again
    job = units.by_id.get(job_id)
    return job is None or bool(job.command)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "answer",
        help="answer the job a running session waits for (run --manual wait)",
        description="Answer the job that needs a person which a session run with --manual wait waits for, "
        "from any terminal (or any machine sharing the repository directory). The runner sees the answer "
        "within half a second, journals it with the user, host and time, and goes on. Answering a job that "
        "is not waiting is an error.",
    )
    options.add_session(p, "session id, unique id prefix or path")
    p.add_argument("job", metavar="JOB", help="the waiting job's id, with or without its namespace")
    p.add_argument(
        "answer",
        metavar="ANSWER",
        help="pass, fail or skip (fail and skip need --comment), or run (the job's command runs and its exit "
        "status decides)",
    )
    p.add_argument("--comment", metavar="TEXT", help="why (required for fail and skip)")
    p.set_defaults(func=cmd_answer)
