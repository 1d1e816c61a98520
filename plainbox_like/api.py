"""Sessions driven from Python code rather than from unit files.

Example::

    from plainbox_like.api import Session, StopRequested

    with Session.create(title="sweep") as session:
        for lr in (0.1, 0.01):
            job_id = f"train-{lr}"
            if session.done(job_id):
                continue                      # finished before an interruption
            session.checkpoint()              # honours plainbox-like stop / pause
            with session.job(job_id) as job:  # start journaled durably here
                job.print(f"training with lr={lr}")
                if not train(lr):
                    job.fail("did not converge")

A job that raises is recorded as ``crash`` (and the exception propagates);
leaving the ``with`` block normally records ``pass`` unless the job said
otherwise. The same session can be reopened later with :meth:`Session.open`.
"""

from __future__ import annotations

import time
import traceback
from typing import Any, Iterator

import attrs

from plainbox_like.run import control
from plainbox_like.errors import StopRequested
from plainbox_like.store.model import (
    FAILED_OUTCOMES,
    FLAG_INCOMPLETE,
    FLAG_PAUSED,
    OUTCOME_CRASH,
    OUTCOME_FAIL,
    OUTCOME_PASS,
    OUTCOME_SKIP,
    Attempt,
    SessionState,
)
from plainbox_like.store.repository import SessionRepository
from plainbox_like.store.writer import SessionWriter

__all__ = ["Session", "JobRecorder", "StopRequested"]


class JobRecorder:
    """One attempt of a job being recorded: its output and its outcome."""

    def __init__(self, session: "Session", job_id: str) -> None:
        writer = session._writer
        self.job_id = job_id
        self.attempt = writer.state.next_attempt(job_id)
        self._session = session
        self._log, self._log_name = writer.new_log(job_id, self.attempt)
        writer.record({"op": "plan", "jobs": {job_id: ""}, "append": True}, durable=False)
        self._started_wall = writer.job_started(job_id, self.attempt, self._log_name)
        self._started = time.monotonic()
        self._log.restart_clock(self._started)
        self.outcome: str | None = None
        self.comments: str | None = None
        self.return_code: int | None = None
        self.skip_reason: str | None = None

    def write(self, stream: str, data: bytes) -> None:
        """Record *data* as written to ``stdout`` or ``stderr`` now."""
        self._log.write(stream, data)

    def print(self, *values: Any, stream: str = "stdout", sep: str = " ", end: str = "\n") -> None:
        """Like :func:`print`, into the job's log."""
        self.write(stream, (sep.join(str(v) for v in values) + end).encode())

    def fail(self, comments: str | None = None, return_code: int | None = None) -> None:
        """Mark the attempt as failed."""
        self.outcome, self.comments, self.return_code = OUTCOME_FAIL, comments, return_code

    def skip(self, reason: str) -> None:
        """Mark the attempt as skipped, with the reason."""
        self.outcome, self.skip_reason = OUTCOME_SKIP, reason

    def finish(self, outcome: str | None = None, comments: str | None = None) -> Attempt:
        """Close the log and journal the result (durably)."""
        writer = self._session._writer
        self._log.close(durable=writer.durability == "fsync")
        result = Attempt(
            outcome=outcome or self.outcome or OUTCOME_PASS,
            return_code=self.return_code,
            execution_duration=time.monotonic() - self._started,
            comments=comments if comments is not None else self.comments,
            io_log_filename=self._log_name,
            attempt=self.attempt,
            started=self._started_wall,
            skip_reason=self.skip_reason,
        )
        writer.job_finished(self.job_id, result)
        return attrs.evolve(result)  # the session keeps the one it was given: changing this one changes nothing there

    def __enter__(self) -> "JobRecorder":
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is None:
            self.finish()
        else:
            text = "".join(traceback.format_exception(exc_type, exc, tb))
            self.write("stderr", text.encode())
            self.finish(OUTCOME_CRASH, f"raised {exc_type.__name__}: {exc}")


class Session:
    """A session written from Python: record jobs, honour stop and pause requests."""

    def __init__(self, writer: SessionWriter) -> None:
        self._writer = writer
        self._control = control.ControlWatcher(writer.path)

    @classmethod
    def create(
        cls,
        title: str | None = None,
        *,
        repository: str | None = None,
        durability: str = "fsync",
        tags: list[str] | None = None,
    ) -> "Session":
        """A new session in *repository* (default: the usual one)."""
        writer = SessionRepository(repository).create(title=title, durability=durability, tags=list(tags or []))
        return cls(writer)

    @classmethod
    def open(cls, ref: str, *, repository: str | None = None, durability: str = "fsync") -> "Session":
        """Continue writing an existing session (id, unique prefix or path)."""
        writer = SessionRepository(repository).open(ref, durability=durability)
        control.clear_request(writer.path)
        if FLAG_INCOMPLETE not in writer.state.metadata.flags:
            writer.update_metadata(flags=[*writer.state.metadata.flags, FLAG_INCOMPLETE], finished=None)
        return cls(writer)

    @property
    def id(self) -> str:
        return self._writer.id

    @property
    def path(self) -> str:
        return self._writer.path

    @property
    def state(self) -> SessionState:
        """The current state (do not modify it)."""
        return self._writer.state

    def done(self, job_id: str) -> bool:
        """Whether *job_id* already has a result that did not fail."""
        latest = self._writer.state.latest(job_id)
        return latest is not None and latest.outcome not in FAILED_OUTCOMES

    def job(self, job_id: str) -> JobRecorder:
        """Start recording an attempt of *job_id* (its start is durable when this returns)."""
        return JobRecorder(self, job_id)

    def record(
        self,
        job_id: str,
        outcome: str = OUTCOME_PASS,
        *,
        stdout: bytes = b"",
        stderr: bytes = b"",
        return_code: int | None = None,
        comments: str | None = None,
        skip_reason: str | None = None,
    ) -> Attempt:
        """Record a whole attempt at once: its output and its outcome."""
        job = JobRecorder(self, job_id)
        if stdout:
            job.write("stdout", stdout)
        if stderr:
            job.write("stderr", stderr)
        job.return_code, job.skip_reason = return_code, skip_reason
        return job.finish(outcome, comments)

    def checkpoint(self, poll: float = control.CHECK_INTERVAL) -> None:
        """Honour requests: raise :class:`StopRequested` on stop, wait while paused."""
        while True:
            request = self._control.poll(force=True)
            action = request.action if request else None
            if action in (control.STOP, control.STOP_NOW):
                self._control.done()
                self._set_paused(False)
                raise StopRequested(f"session {self.id}: stopped by request; reopen it to continue")
            if action != control.PAUSE:
                if action == control.CONTINUE:
                    self._control.done()
                self._set_paused(False)
                return
            self._set_paused(True)
            self._writer.tick()
            time.sleep(poll)

    def _set_paused(self, paused: bool) -> None:
        flags = self._writer.state.metadata.flags
        if paused != (FLAG_PAUSED in flags):
            new = [f for f in flags if f != FLAG_PAUSED] + ([FLAG_PAUSED] if paused else [])
            self._writer.update_metadata(flags=new)

    def close(self, complete: bool = True) -> None:
        """Write the final snapshot; *complete* clears the ``incomplete`` flag."""
        if self._writer.closed:
            return
        if complete:
            flags = [f for f in self._writer.state.metadata.flags if f not in (FLAG_INCOMPLETE, FLAG_PAUSED)]
            self._writer.update_metadata(flags=flags, finished=time.time())
        self._writer.close()

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self.close(complete=exc is None)

    def __iter__(self) -> Iterator[str]:
        """The ids of the jobs recorded so far, in order."""
        return iter(self._writer.state.desired_job_list)
