"""Every exception user-facing code raises, each with its exit code and a message fit to show a user on one line.

The modules that raised them first keep importing (and so re-exporting) them.
"""

from __future__ import annotations

import os


class PlainboxLikeError(Exception):
    """Base of every error the CLI reports as a one-line message (exit code 2)."""

    exit_code = 2


class RunAborted(PlainboxLikeError):
    """A run stopped for a reason outside its jobs (its files cannot be written, a worker died).

    The jobs it was running were stopped; the session stays incomplete, and
    ``resume`` continues it. Exit code 1, as when a job crashed.
    """

    exit_code = 1


class CannotWrite(PlainboxLikeError):
    """A session cannot be created or opened for writing: its file system is full, read-only or failing."""


class RepositoryUnusable(PlainboxLikeError):
    """The session repository's root is not a directory (a file, a dangling symlink, a name too long)."""


class RepairStopped(PlainboxLikeError):
    """A repair could not write (a full or failing disk): what it finished stays done, the rest is as it was.

    Exit code 1: the session still needs repair, as when problems remain.
    """

    exit_code = 1


class FileProblem(PlainboxLikeError):
    """Something is wrong with one file; the message names the file (and line)."""

    def __init__(self, path: str | os.PathLike, problem: str, line: int | None = None) -> None:
        self.path = os.fspath(path)
        self.problem = problem
        self.line = line
        where = self.path if line is None else f"{self.path}:{line}"
        super().__init__(f"{where}: {problem}")


class CorruptSession(FileProblem):
    """A session file cannot be decoded (gzip, UTF-8, JSON, schema, journal)."""


class UnsupportedVersion(CorruptSession):
    """The state file has a version this program does not know."""


class UnitError(FileProblem):
    """A job or test plan unit file is invalid."""


class PlanError(PlainboxLikeError):
    """The jobs cannot be put in an order (cycle, bad selection)."""


class InvalidSessionId(PlainboxLikeError):
    """A session id that is not a plain name."""


class SessionNotFound(PlainboxLikeError):
    """No session matches the given id, prefix or path."""


class JobNotFound(PlainboxLikeError):
    """A session has no job with that id, or the job has not run yet."""


class AttemptNotFound(PlainboxLikeError):
    """A job has no attempt with that number."""


class LogMissing(PlainboxLikeError):
    """None of an attempt's io-log files exist."""


class LogUnreadable(LogMissing):
    """A file of an attempt's io-log is not a regular file (a FIFO, a device) or cannot be opened."""


class SessionLocked(PlainboxLikeError):
    """Another process holds the session's write lock."""

    def __init__(self, path: str, pid: int | None, host: str | None) -> None:
        self.pid = pid
        self.host = host
        who = f"pid {pid} on host {host}" if pid else "another process"
        super().__init__(f"{path}: session is locked by {who}")


class OutsideSession(PlainboxLikeError):
    """A path taken from a session (a state field, a symbolic link) would lead outside its directory.

    Nothing is read or written through it; the message names the session and what leads out.
    """


def one_line(exc: BaseException) -> str:
    """The message of *exc* on a single line (a foreign exception is named by its type)."""
    text = str(exc) if isinstance(exc, PlainboxLikeError) else f"{type(exc).__name__}: {exc}"
    return " ".join(text.split()) or type(exc).__name__


# -- raised by plainbox_like.maintain.manage -------------------------------------------


class BadDuration(PlainboxLikeError):
    """A duration that is not a number followed by s, m, h, d or w."""


class BadTag(PlainboxLikeError):
    """A tag that is empty or has whitespace, a comma or a control character."""


class SessionBusy(PlainboxLikeError):
    """A process (maybe) writes the session, so it cannot be changed now."""

    def __init__(self, reason: str, advice: str = "") -> None:
        self.reason = reason
        super().__init__(f"{reason}: {advice}" if advice else reason)


class ReadOnlySession(PlainboxLikeError):
    """A Plainbox/Checkbox session: it can be inspected, not changed."""


class NotInRepository(PlainboxLikeError):
    """A session directory outside the repository, which we do not delete."""


class DeletionIncomplete(PlainboxLikeError):
    """The session was hidden (deleted) but some of its files could not be removed."""


# -- raised by plainbox_like.exports.tarball -------------------------------------------


class UnsafeArchive(PlainboxLikeError):
    """An archive member that would write outside the session, or is not a plain file or directory."""


class BadArchive(PlainboxLikeError):
    """An archive that cannot be read, or does not hold a session that loads."""


class ArchiveTooLarge(PlainboxLikeError):
    """An archive that unpacks to more than the import's limits allow."""


# -- raised by plainbox_like.api -------------------------------------------------------


class StopRequested(PlainboxLikeError):
    """``plainbox-like stop`` asked this session to stop; it stays incomplete and can be reopened."""

    exit_code = 130


# -- raised by plainbox_like.define.resource -------------------------------------------


class ResourceExpressionError(PlainboxLikeError):
    """A ``requires:`` expression that is not valid or not allowed."""


# -- raised by plainbox_like.run.executors ---------------------------------------------


class LogError(RunAborted):
    """A job's io-log could not be created or written: its output would be lost, so the job was stopped."""


# -- raised by plainbox_like.run.workers -----------------------------------------------


class WorkerDied(RunAborted):
    """A worker process ended without being told to."""


# -- raised by plainbox_like.maintain.autoresume ---------------------------------------


class AutoresumeError(PlainboxLikeError):
    """What starts runs at boot could not be installed, removed or read (a command failed)."""

    exit_code = 1
