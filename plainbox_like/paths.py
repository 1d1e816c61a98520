"""Where sessions live, and what counts as a session id."""

from __future__ import annotations

import os

from plainbox_like.errors import InvalidSessionId

#: Environment variable that overrides the repository root.
REPOSITORY_ENV = "PLAINBOX_LIKE_REPOSITORY"
APP_NAME = "plainbox-like"
SESSION_SUFFIX = ".session"
#: Hidden staging directories of ``import`` inside the sessions directory.
IMPORT_STAGING_PREFIX = ".importing-"


def default_repository() -> str:
    """The repository root: ``$PLAINBOX_LIKE_REPOSITORY`` or ``$XDG_CACHE_HOME/plainbox-like``."""
    override = os.environ.get(REPOSITORY_ENV)
    if override:
        return os.path.abspath(override)
    import platformdirs  # only needed without the override: keeps start-up lean

    return os.path.join(platformdirs.user_cache_dir(), APP_NAME)


def validate_session_id(session_id: str) -> str:
    """Return *session_id* if it is a plain name, else raise :class:`InvalidSessionId`."""
    if (
        not isinstance(session_id, str)
        or not session_id
        or session_id in (".", "..")
        or "/" in session_id
        or "\0" in session_id
        or session_id.startswith(".")
    ):
        raise InvalidSessionId(f"invalid session id {session_id!r}: must be a plain name")
    return session_id


def session_id_of(path: str) -> str:
    """The id of the session directory at *path* (its name without ``.session``)."""
    name = os.path.basename(os.path.normpath(path))
    return name[: -len(SESSION_SUFFIX)] if name.endswith(SESSION_SUFFIX) else name
