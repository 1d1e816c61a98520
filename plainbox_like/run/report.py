"""What a run tells while it goes (a :class:`Reporter`) and what it did (a :class:`RunSummary`)."""

from __future__ import annotations

from typing import Protocol

import attrs

from plainbox_like.store.model import FAILED_OUTCOMES, Attempt


class Reporter(Protocol):
    """Told about progress; everything it hears is already durable.

    Optional methods, called when a reporter has them: ``added(count)`` (jobs
    made from templates joined the run), ``restart_expected(job_id)`` (a
    noreturn job is about to start: the machine will restart) and
    ``restart_awaited(job_id)`` (it ended; the run waits for the restart).
    """

    def started(self, job_id: str, attempt: int) -> None: ...

    def finished(self, job_id: str, result: Attempt) -> None: ...

    def close(self) -> None: ...


class NullReporter:
    """Says nothing."""

    def started(self, job_id: str, attempt: int) -> None:
        pass

    def finished(self, job_id: str, result: Attempt) -> None:
        pass

    def close(self) -> None:
        pass


@attrs.define
class RunSummary:
    """What a run did."""

    session_id: str
    path: str
    counts: dict[str, int]
    interrupted: bool = False
    #: "signal" or "request" when the run ended early.
    stopped_by: str | None = None

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        return 1 if any(self.counts.get(o) for o in FAILED_OUTCOMES) else 0
