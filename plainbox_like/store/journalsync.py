"""Group commit: the processes that make a session's journal durable share their fdatasyncs.

With ``-j N`` each worker process makes the journal durable just before it
spawns its job, whose start is in it (see :mod:`plainbox_like.run.workers`).
The runner appends the starts it hands out together (with the results that
came before them) in one write; the first worker to sync makes all of them
durable, and the others, finding that done, spawn without a sync of their own.

Progress is counted in *marks*: the number of bytes ever appended to the
journal by its writer (they keep growing across snapshots, which truncate the
file). The highest mark a sync is known to have covered, and the number of
syncs, live in a small memory file shared by every process forked after it
was made; a POSIX lock on that file makes "look, sync, write the mark down"
one step (a process that waited for another's sync then finds its lines
durable), and the kernel releases the lock of a process that dies holding it.
"""

from __future__ import annotations

import fcntl
import os
import struct

#: The shared figures: the highest mark known durable, and how many fdatasyncs were made.
_FIGURES = struct.Struct("<QQ")


class JournalSync:
    """Makes the journal behind *journal_fd* durable up to a mark, once for everything written before it."""

    def __init__(self, journal_fd: int) -> None:
        self.journal_fd = journal_fd
        #: Bytes ever appended to the journal: kept up to date by the writer, in its own process.
        self.appended = 0
        self._fd = os.memfd_create("plainbox-like-journal-sync", os.MFD_CLOEXEC)
        os.pwrite(self._fd, _FIGURES.pack(0, 0), 0)
        self._closed_with: tuple[int, int] | None = None

    @property
    def fds(self) -> tuple[int, int]:
        """The descriptors a forked process must keep open to use this object."""
        return self.journal_fd, self._fd

    def _read(self) -> tuple[int, int]:
        if self._closed_with is not None:
            return self._closed_with
        return _FIGURES.unpack(os.pread(self._fd, _FIGURES.size, 0))

    def sync_to(self, mark: int) -> bool:
        """Make every line appended before *mark* durable; True if this call had to fdatasync for it.

        The fdatasync covers everything written to the journal before it
        began, which holds the lines before *mark* (the caller's writes, or
        ones the writer made before it handed out *mark*).
        """
        fcntl.lockf(self._fd, fcntl.LOCK_EX)
        try:
            durable, syncs = self._read()
            if durable >= mark:
                return False
            os.fdatasync(self.journal_fd)
            os.pwrite(self._fd, _FIGURES.pack(mark, syncs + 1), 0)
            return True
        finally:
            fcntl.lockf(self._fd, fcntl.LOCK_UN)

    @property
    def syncs(self) -> int:
        """How many fdatasyncs of the journal :meth:`sync_to` made, in every process."""
        return self._read()[1]

    def close(self) -> None:
        """Let go of the shared figures (:attr:`syncs` keeps its last value)."""
        if self._closed_with is None:
            self._closed_with = self._read()
            os.close(self._fd)
