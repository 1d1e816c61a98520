"""A job's temporary working directory: made before it starts, removed when it ends, leftovers listed.

The executor that spawns a job (in a worker process with ``-j N``) makes and
removes the directory, so the runner that journals and schedules pays for
neither: a directory's creation and removal are file-system operations that
cost as much as the rest of a short job's handling. :mod:`plainbox_like.run.jobenv`
decides which job gets one and names it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import stat
import tempfile

import attrs

#: Most leftover paths kept for one attempt (a job that unpacks a tree leaves thousands).
MAX_LEFTOVERS = 100
#: The mode of a directory tempfile.mkdtemp makes.
PRIVATE = 0o700


@attrs.frozen
class TempCwd:
    """The fresh working directory a job gets: ``<prefix><random>`` in the temporary root of the moment."""

    prefix: str
    #: List what the job left there (False: the job has ``has-leftovers``, they are removed unlisted).
    list_leftovers: bool = True
    #: Permissions to give it after creation (another user writes there too), None to keep 0700.
    mode: int | None = None


def temp_root() -> str:
    """``$TMPDIR`` as it is now (tests and callers may change it), else the system's temporary directory."""
    root = os.environ.get("TMPDIR")
    return root if root and os.path.isdir(root) and os.access(root, os.W_OK | os.X_OK) else tempfile.gettempdir()


def make(spec: TempCwd, spare: str | None = None) -> str:
    """Create the directory *spec* describes; raises OSError if it cannot be made.

    *spare*: an empty directory an ended job had, taken instead when it can be (see :func:`reuse`); else it
    is removed.
    """
    if spare is not None:
        reused = reuse(spare, spec)
        if reused is not None:
            return reused
        remove(spare, list_leftovers=False)
    path = tempfile.mkdtemp(prefix=spec.prefix, dir=temp_root())
    if spec.mode is not None:
        try:
            os.chmod(path, spec.mode)
        except BaseException:
            os.rmdir(path)
            raise
    return path


def reuse(spare: str, spec: TempCwd) -> str | None:
    """*spare* renamed to a fresh name of *spec*; None if it cannot be.

    *spare* is the directory of a job that ended leaving it empty and no process behind (none to write
    there since), found empty at its end.

    A rename changes one directory entry, where making a directory and removing it allocates and frees an
    inode and a block: 60-420 µs a job here (ext4 without a journal, mounted with ``discard``; the range is
    from quiet to busy), and, there, freed inodes make creating files slower for minutes (ext4 without a
    journal passes over recently freed inodes). Only for a directory of the default mode in today's
    temporary root. The prefix names the session, job and attempt, so no other directory can have the new
    name but a stale one of this very attempt.
    """
    root = os.path.dirname(spare)
    if spec.mode is not None or root != temp_root():
        return None
    try:
        st = os.lstat(spare)
    except OSError:
        return None
    # As tempfile.mkdtemp made it: the job may have changed its mode.
    if not stat.S_ISDIR(st.st_mode) or stat.S_IMODE(st.st_mode) != PRIVATE or st.st_uid != os.getuid():
        return None
    path = os.path.join(root, spec.prefix + secrets.token_hex(4))
    try:
        os.rename(spare, path)
    except OSError:
        return None
    return path


def is_empty(path: str) -> bool:
    """Whether the directory *path* holds nothing (a look much cheaper than its removal)."""
    try:
        with os.scandir(path) as entries:
            return next(entries, None) is None
    except OSError:
        return False


def remove(path: str, list_leftovers: bool = True) -> list[str]:
    """Remove *path*; the paths (relative, sorted) the job left in it if *list_leftovers*.

    As in Checkbox, every directory below *path* and every file counts. At
    most :data:`MAX_LEFTOVERS` are listed, then ``... and N more``.
    """
    try:
        os.rmdir(path)  # the usual case: the job left nothing
        return []
    except OSError:
        pass
    found: list[str] = []
    if list_leftovers:
        for dirpath, _dirnames, filenames in os.walk(path):
            if dirpath != path:
                found.append(os.path.relpath(dirpath, path))
            found.extend(os.path.relpath(os.path.join(dirpath, name), path) for name in filenames)
    shutil.rmtree(path, ignore_errors=True)
    found.sort()
    if len(found) > MAX_LEFTOVERS:
        found = found[:MAX_LEFTOVERS] + [f"... and {len(found) - MAX_LEFTOVERS} more"]
    return found
