"""The repository: every session directory under one root, found by id, unique id prefix or path.

A thin layer that creates sessions through
:class:`~plainbox_like.store.writer.SessionWriter` and reads them through
:func:`~plainbox_like.store.reader.load_session`.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from plainbox_like.errors import PlainboxLikeError, SessionNotFound
from plainbox_like.store.confine import SESSIONS_DIR
from plainbox_like.store.names import STATE_FILE, is_session_name
from plainbox_like.store.paths import SESSION_SUFFIX, default_repository, session_id_of, validate_session_id
from plainbox_like.store.writer import SessionWriter, _cannot_write

if TYPE_CHECKING:
    from plainbox_like.store.reader import LoadedSession


class SessionRepository:
    """All sessions under one root (``$XDG_CACHE_HOME/plainbox-like`` by default)."""

    def __init__(self, root: str | None = None) -> None:
        self.root = os.path.abspath(root) if root else default_repository()
        self.sessions_dir = os.path.join(self.root, SESSIONS_DIR)

    def create(self, **kwargs: Any) -> SessionWriter:
        """A new session, open for writing (see :meth:`SessionWriter.create`)."""
        try:
            os.makedirs(self.root, mode=0o700, exist_ok=True)
        except OSError as exc:  # a file in the way, no permission, a full disk
            raise _cannot_write(self.root, "cannot create the session repository", exc) from None
        return SessionWriter.create(self.sessions_dir, **kwargs)

    def session_paths(self) -> list[str]:
        """Every session directory, in no particular order."""
        try:
            entries = os.scandir(self.sessions_dir)
        except FileNotFoundError:
            return []
        except OSError as exc:  # not a directory, no permission
            raise PlainboxLikeError(f"{self.sessions_dir}: cannot list the sessions: {exc.strerror or exc}") from None
        with entries:
            return [
                e.path
                for e in entries
                if is_session_name(e.name) and e.is_dir()
            ]

    def resolve(self, ref: str) -> str:
        """The directory of the session named by *ref*: an id, a unique id prefix, or a path."""
        if os.sep in ref or ref in (".", ".."):
            path = os.path.abspath(ref)
            if os.path.isfile(os.path.join(path, STATE_FILE)):
                return path
            raise SessionNotFound(f"{ref}: not a session directory (no 'session' file)")
        validate_session_id(ref)
        exact = os.path.join(self.sessions_dir, ref + SESSION_SUFFIX)
        if os.path.isdir(exact):
            return exact
        matches = sorted(p for p in self.session_paths() if session_id_of(p).startswith(ref))
        if len(matches) == 1:
            return matches[0]
        if not matches:
            if os.path.isfile(os.path.join(ref, STATE_FILE)):
                return os.path.abspath(ref)
            raise SessionNotFound(f"no session matches {ref!r} in {self.sessions_dir}")
        names = ", ".join(session_id_of(p) for p in matches[:5])
        more = ", ..." if len(matches) > 5 else ""
        raise SessionNotFound(f"{ref!r} matches {len(matches)} sessions ({names}{more}): give more of the id")

    def load(self, ref: str) -> LoadedSession:
        """Read a session (id, prefix or path)."""
        from plainbox_like.store.reader import load_session  # (not at start-up: a new run reads no state)

        return load_session(self.resolve(ref))

    def open(self, ref: str, **kwargs: Any) -> SessionWriter:
        """Open a session for writing (id, prefix or path)."""
        return SessionWriter.open(self.resolve(ref), **kwargs)
