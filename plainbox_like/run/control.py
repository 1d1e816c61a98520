"""Requests to a running session from another process: stop, stop now, pause, continue.

A request is the file ``control`` in the session directory, a small JSON
object replaced atomically, so a request made while the runner is busy is not
lost. The runner looks at it at its checkpoints (at least every 0.2 s) and
removes it once it has acted on it; ``pause`` stays until ``continue``.
"""

from __future__ import annotations

import json
import os
import time

import attrs

from plainbox_like.errors import PlainboxLikeError
from plainbox_like.store.confine import open_session_file, refuse_symlinked
from plainbox_like.store.locks import hostname, lock_holder, writer_alive
from plainbox_like.store.writer import write_atomically

CONTROL_FILE = "control"
STOP = "stop"
STOP_NOW = "stop-now"
PAUSE = "pause"
CONTINUE = "continue"
ACTIONS = (STOP, STOP_NOW, PAUSE, CONTINUE)
#: How often a runner looks at the control file.
CHECK_INTERVAL = 0.2


@attrs.frozen
class Request:
    """One request: what, when, and from which process."""

    action: str
    t: float
    pid: int
    host: str


def write_request(session_path: str, action: str) -> Request:
    """Leave *action* for the session's runner; it must be running on this host."""
    if action not in ACTIONS:
        raise PlainboxLikeError(f"unknown request {action!r} (use one of {', '.join(ACTIONS)})")
    refuse_symlinked(session_path)
    holder = lock_holder(session_path)
    here = hostname()
    if holder is not None and holder[1] != here:
        raise PlainboxLikeError(
            f"{session_path}: the session's runner is on host {holder[1]} (pid {holder[0]}); "
            f"requests work only on the same machine ({here})"
        )
    if not writer_alive(session_path):
        raise PlainboxLikeError(f"{session_path}: the session is not running (nothing to {action})")
    request = Request(action, time.time(), os.getpid(), here)
    data = json.dumps(attrs.asdict(request), sort_keys=True).encode() + b"\n"
    write_atomically(os.path.join(session_path, CONTROL_FILE), data)
    return request


def read_request(session_path: str) -> Request | None:
    """The pending request, if any (an unreadable file counts as none)."""
    try:
        with os.fdopen(open_session_file(session_path, CONTROL_FILE), "rb") as f:
            data = json.loads(f.read())
        request = Request(**data)
    except (OSError, ValueError, TypeError):
        return None
    return request if request.action in ACTIONS else None


#: The file an answer to a job that waits for a person is left in (``plainbox-like answer``).
ANSWER_FILE = "answer"


@attrs.frozen
class AnswerRequest:
    """An answer to the job a running session waits for: what, with which comment, from whom."""

    job: str
    answer: str
    comment: str | None
    user: str
    host: str
    t: float
    pid: int


def write_answer(session_path: str, request: AnswerRequest) -> None:
    """Leave *request* for the session's runner (replacing any earlier answer not taken yet)."""
    refuse_symlinked(session_path)
    data = json.dumps(attrs.asdict(request), sort_keys=True).encode() + b"\n"
    write_atomically(os.path.join(session_path, ANSWER_FILE), data)


def read_answer(session_path: str) -> AnswerRequest | None:
    """The answer left for the runner, if any (an unreadable or malformed file counts as none)."""
    try:
        with os.fdopen(open_session_file(session_path, ANSWER_FILE), "rb") as f:
            request = AnswerRequest(**json.loads(f.read()))
    except (OSError, ValueError, TypeError):
        return None
    fields = (request.job, request.answer, request.user, request.host)
    if not all(isinstance(value, str) for value in fields) or not isinstance(request.comment, (str, type(None))):
        return None
    return request


def clear_answer(session_path: str) -> None:
    """Remove the answer file (taken, or left for an earlier run)."""
    try:
        os.unlink(os.path.join(session_path, ANSWER_FILE))
    except FileNotFoundError:
        pass


def clear_request(session_path: str) -> None:
    """Remove the pending request."""
    try:
        os.unlink(os.path.join(session_path, CONTROL_FILE))
    except FileNotFoundError:
        pass


class ControlWatcher:
    """Cheap polling of the control file: a stat at most every :data:`CHECK_INTERVAL` seconds."""

    def __init__(self, session_path: str, clock=time.monotonic) -> None:
        self.path = session_path
        self._file = os.path.join(session_path, CONTROL_FILE)
        self._clock = clock
        self._next = 0.0
        self._stamp: tuple[int, int] | None = None
        self._request: Request | None = None

    def poll(self, force: bool = False) -> Request | None:
        """The current request (re-read only when the file changed)."""
        now = self._clock()
        if not force and now < self._next:
            return self._request
        self._next = now + CHECK_INTERVAL
        try:
            st = os.stat(self._file)
        except FileNotFoundError:
            self._stamp = self._request = None
            return None
        stamp = (st.st_ino, st.st_mtime_ns)
        if stamp != self._stamp:
            self._stamp = stamp
            self._request = read_request(self.path)
        return self._request

    def done(self) -> None:
        """The current request has been acted on: remove it."""
        clear_request(self.path)
        self._stamp = self._request = None
