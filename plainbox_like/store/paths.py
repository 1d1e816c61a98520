"""Where sessions live, and what counts as a session id."""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from typing import BinaryIO

from plainbox_like.errors import InvalidSessionId, RepositoryUnusable

#: Environment variable that overrides the repository root.
REPOSITORY_ENV = "PLAINBOX_LIKE_REPOSITORY"
APP_NAME = "plainbox-like"
from plainbox_like.store.names import IMPORT_STAGING_PREFIX, SESSION_SUFFIX  # noqa: F401 (public here too)


def default_repository() -> str:
    """The repository root: ``$PLAINBOX_LIKE_REPOSITORY`` or ``$XDG_CACHE_HOME/plainbox-like``."""
    override = os.environ.get(REPOSITORY_ENV)
    if override:
        return os.path.abspath(override)
    import platformdirs  # only needed without the override: keeps start-up lean

    return os.path.join(platformdirs.user_cache_dir(), APP_NAME)


def check_repository_root(root: str, given_as: str = "--repository") -> str:
    """Return *root* if it is a directory or does not exist yet; else raise :class:`RepositoryUnusable`.

    So a repository named by mistake after a file (or a FIFO, a dangling symlink, a path under a
    file, a name too long) is one error naming it, before any command reads or creates anything
    there. *given_as* says where the name came from (the option or the environment variable).
    """
    try:
        st = os.stat(root)
    except FileNotFoundError:
        if os.path.lexists(root):
            raise RepositoryUnusable(f"{root}: a symbolic link to nothing, not a directory ({given_as})") from None
        return root  # created when a session is first written
    except OSError as exc:
        raise RepositoryUnusable(f"{root}: {exc.strerror or exc} ({given_as})") from None
    if not stat.S_ISDIR(st.st_mode):
        raise RepositoryUnusable(f"{root}: not a directory ({given_as})")
    return root


def open_regular_file(path: str) -> int:
    """Open *path* for reading, refusing anything but a regular file (OSError EINVAL naming it).

    Opened without blocking, so a FIFO in a session's place of a file never hangs a reader.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file", path)
    return fd


def open_regular(path: str) -> BinaryIO:
    """:func:`open_regular_file` as a binary file object: how every reader opens a session's files.

    A FIFO, device or directory in place of a state, journal or io-log is an
    :class:`OSError` (EINVAL, "not a regular file", naming it), never a hang.
    """
    return os.fdopen(open_regular_file(path), "rb")


def open_without_waiting(path: str, flags: int) -> int:
    """Open *path* (a file descriptor) as a shell redirection would, except that a FIFO never hangs it.

    Read from, a FIFO nobody writes into reads as empty, while a pipe that is
    being written (``<(...)``) reads as usual; written to, a FIFO nobody reads
    from is an :class:`OSError` (ENXIO, "no reader") instead of a wait forever.
    """
    fd = os.open(path, flags | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    except BaseException:
        os.close(fd)
        raise
    return fd


def repository_given_as(override: str | None) -> str:
    """How the repository root was chosen, for messages: the option, the variable, or the default."""
    if override:
        return "--repository"
    return f"${REPOSITORY_ENV}" if os.environ.get(REPOSITORY_ENV) else "the default repository"


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
