"""``export --format tar`` and ``import``: a session directory as a portable ``.tar.gz``, and back.

Export writes a gzip-compressed tar (POSIX pax format) whose single top-level
directory is ``<id>.session``. Left out: ``lock`` (it belongs to the writer
on this machine), the writer's snapshot temporaries (``.session.*.tmp``),
and anything that is neither a regular file nor a directory (a job may have
left a symbolic link or a FIFO in ``session-share/``; each is reported). File
modes are kept (0600/0700), owners are not (uid/gid 0, no names).

A session may be exported while it is being written: its ``session`` and
``journal`` are read as a consistent pair (if the snapshot is replaced while
we read, we read both again) and put first in the archive; the loader
tolerates a journal whose last line was being written. Log files are
append-only; each is archived as long as it was when its entry was written.

Import extracts an archive into a hidden staging directory
(``sessions/.importing-XXXXXXXX``) after checking every member: no absolute
paths, no ``..``, no links that point outside the session, no device files,
FIFOs or other special files. Python's ``tarfile`` ``data`` filter checks the
same again where it exists (Python 3.12, 3.11.4, 3.10.12 and later). The
session found in it (the archive's single top-level directory, or the
archive's root if ``session`` is there) must load; only then is it renamed
into place as ``sessions/<new id>.session`` (a fresh name from
:func:`tempfile.mkdtemp`, as new sessions get), directories 0700 and files
0600. On any error the staging directory is removed: nothing is left behind.
While an import runs it holds an flock on the staging directory's ``lock``
file, so that a clean-up of staging directories left by a killed import can
tell a live one from a leftover.

Import has limits, checked on each member's header before its data is
extracted: the files may add up to at most :data:`MAX_IMPORT_SIZE` bytes, or
:data:`MAX_IMPORT_RATIO` times the archive's own size when that is known
(whichever is smaller, never less than :data:`MIN_IMPORT_SIZE`), and the
archive may hold at most :data:`MAX_IMPORT_MEMBERS` members. The work done per
member does not grow with the number of members before it.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import stat
import tarfile
import tempfile
import zlib
from typing import BinaryIO, Callable

import attrs

from plainbox_like.store import confine, reader
from plainbox_like.store.writer import fsync_dir
from plainbox_like.store.names import JOURNAL_FILE, LOCK_FILE, SHARE_DIR, STATE_FILE
from plainbox_like.errors import (
    ArchiveTooLarge,
    BadArchive,
    CorruptSession,
    PlainboxLikeError,
    SessionNotFound,
    UnsafeArchive,
)
from plainbox_like.store.paths import IMPORT_STAGING_PREFIX, SESSION_SUFFIX
from plainbox_like.store.reader import LoadedSession
from plainbox_like.text import format_size

STAGING_PREFIX = IMPORT_STAGING_PREFIX
#: Snapshot temporaries of a writer (``writer.write_atomically``), never archived.
_TEMP_PREFIX = "." + STATE_FILE + "."
_TEMP_SUFFIX = ".tmp"
_COPY_CHUNK = 1 << 20
_HAS_DATA_FILTER = hasattr(tarfile, "data_filter")
#: What the data filter raises (nothing to catch where there is no filter).
_FILTER_ERRORS = getattr(tarfile, "FilterError", ())

#: The most an import unpacks by default (``import --max-size`` changes it).
MAX_IMPORT_SIZE = 10 << 30
#: By default an archive of known size unpacks to at most this many times its size...
MAX_IMPORT_RATIO = 100
#: ...but that bound is never below this (a small session may hold much very repetitive output).
MIN_IMPORT_SIZE = 64 << 20
#: The most members an archive may have (``import --max-members`` changes it).
MAX_IMPORT_MEMBERS = 1_000_000


# -- export ------------------------------------------------------------------------


def write(loaded: LoadedSession, out: BinaryIO, warn: Callable[[str], object] | None = None) -> None:
    """Write *loaded*'s directory to *out* as a ``.tar.gz`` (see the module's notes)."""
    write_archive(loaded.path, out, loaded.id, warn)


class _ReadFailed(Exception):
    """A file of the session could not be read (as opposed to the archive not being writable)."""


class _Exactly:
    """Reads exactly *size* bytes from *fd*: zeros if the file shrank meanwhile."""

    def __init__(self, fd: int, size: int, on_short: Callable[[], object] | None) -> None:
        self.fd = fd
        self.left = size
        self.on_short = on_short

    def read(self, n: int = -1) -> bytes:
        n = self.left if n is None or n < 0 else min(n, self.left)
        chunks = []
        while n > 0:
            try:
                data = os.read(self.fd, n)
            except OSError as exc:
                raise _ReadFailed() from exc
            if not data:
                if self.on_short is not None:
                    self.on_short()
                    self.on_short = None  # once per file
                data = bytes(n)
            chunks.append(data)
            n -= len(data)
            self.left -= len(data)
        return b"".join(chunks)


def _info(name: str, st: os.stat_result) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode = stat.S_IMODE(st.st_mode)
    info.mtime = int(st.st_mtime)
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _read_all(fd: int) -> bytes:
    chunks = []
    while True:
        chunk = os.read(fd, _COPY_CHUNK)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def read_state_pair(path: str, attempts: int = 10) -> tuple[tuple[bytes, os.stat_result], tuple[bytes, os.stat_result] | None]:
    """The ``session`` file and the ``journal`` (``None`` if there is none), read consistently.

    A writer that takes a new snapshot meanwhile truncates the journal: if the
    snapshot was replaced while we read, both are read again.
    """
    state_path = os.path.join(path, STATE_FILE)
    for _ in range(attempts):
        try:
            fd = confine.open_session_file(path, STATE_FILE)
        except FileNotFoundError:
            raise CorruptSession(state_path, "state file is missing") from None
        try:
            st = os.fstat(fd)
            state = _read_all(fd)
            try:
                jfd = confine.open_session_file(path, JOURNAL_FILE)
            except FileNotFoundError:
                journal = None
            else:
                try:
                    journal = (_read_all(jfd), os.fstat(jfd))
                finally:
                    os.close(jfd)
            try:
                now = os.stat(state_path)
            except FileNotFoundError:
                continue
            if (now.st_ino, now.st_mtime_ns) == (st.st_ino, st.st_mtime_ns):
                return (state, st), journal
        finally:
            os.close(fd)
    raise CorruptSession(state_path, "state kept changing while being read")


def write_archive(path: str, out: BinaryIO, session_id: str, warn: Callable[[str], object] | None = None) -> None:
    """Write the session directory at *path* to *out* as ``<session_id>.session/...`` in a ``.tar.gz``."""
    warn = warn or (lambda message: None)
    try:
        _write_archive(path, out, session_id, warn)
    except _ReadFailed as failed:
        exc = failed.__cause__
        raise PlainboxLikeError(f"{exc.filename}: cannot read: {exc.strerror or exc}") from None


def _write_archive(path: str, out: BinaryIO, session_id: str, warn: Callable[[str], object]) -> None:
    top = session_id + SESSION_SUFFIX
    try:
        (state, state_st), journal = read_state_pair(path)
    except OSError as exc:
        raise _ReadFailed() from exc
    with tarfile.open(fileobj=out, mode="w|gz", format=tarfile.PAX_FORMAT) as tar:
        root_info = _info(top, os.stat(path))
        root_info.type = tarfile.DIRTYPE
        tar.addfile(root_info)
        for name, pair in ((STATE_FILE, (state, state_st)), (JOURNAL_FILE, journal)):
            if pair is None:
                continue
            data, st = pair
            info = _info(f"{top}/{name}", st)
            info.size = len(data)
            tar.addfile(info, _Bytes(data))
        _add_tree(tar, path, top, "", warn)


class _Bytes:
    def __init__(self, data: bytes) -> None:
        self.view = memoryview(data)

    def read(self, n: int = -1) -> bytes:
        n = len(self.view) if n is None or n < 0 else n
        chunk, self.view = self.view[:n], self.view[n:]
        return bytes(chunk)


def _skipped_at_root(name: str) -> bool:
    return name in (LOCK_FILE, STATE_FILE, JOURNAL_FILE) or (
        name.startswith(_TEMP_PREFIX) and name.endswith(_TEMP_SUFFIX)
    )


def _add_tree(tar: tarfile.TarFile, base: str, top: str, rel: str, warn: Callable[[str], object]) -> None:
    directory = os.path.join(base, rel) if rel else base
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise _ReadFailed() from exc
    for entry in entries:
        name = f"{rel}/{entry.name}" if rel else entry.name
        if not rel and _skipped_at_root(entry.name):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(st.st_mode):
            info = _info(f"{top}/{name}", st)
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
            _add_tree(tar, base, top, name, warn)
        elif stat.S_ISREG(st.st_mode):
            _add_file(tar, entry.path, f"{top}/{name}", warn)
        else:
            kind = "symbolic link" if stat.S_ISLNK(st.st_mode) else "special file"
            warn(f"{entry.path}: {kind} left out of the archive")


def _add_file(tar: tarfile.TarFile, path: str, arcname: str, warn: Callable[[str], object]) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return  # removed since it was listed
    except OSError as exc:
        raise _ReadFailed() from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            warn(f"{path}: special file left out of the archive")
            return
        info = _info(arcname, st)
        info.size = st.st_size
        tar.addfile(info, _Exactly(fd, st.st_size, lambda: warn(f"{path}: file shrank while being archived")))
    finally:
        os.close(fd)


# -- import ------------------------------------------------------------------------


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root + os.sep)


def check_member(member: tarfile.TarInfo, dest: str) -> str | None:
    """Why *member* must not be extracted into *dest* (``None``: it is safe)."""
    name = member.name
    if not name or "\0" in name:
        return "empty or invalid name"
    if name.startswith("/") or os.path.isabs(name):
        return "absolute path"
    parts = name.replace("\\", "/").split("/")
    if ".." in parts:
        return "path with '..'"
    if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
        return "device file, FIFO or other special file"
    real_dest = os.path.realpath(dest)
    target_path = os.path.join(real_dest, name)
    # Writing through a symbolic link extracted before must not lead outside.
    if not _within(os.path.realpath(os.path.dirname(target_path)), real_dest):
        return "path leads outside the archive through a link"
    if member.issym():
        link = member.linkname
        if not link or link.startswith("/") or os.path.isabs(link):
            return f"symbolic link to an absolute path ({link!r})"
        lexical = os.path.normpath(os.path.join(os.path.dirname(name), link))
        resolved = os.path.realpath(os.path.join(os.path.dirname(target_path), link))
        if lexical == ".." or lexical.startswith("../") or not _within(resolved, real_dest):
            return f"symbolic link pointing outside the archive ({link!r})"
    if member.islnk():
        link = member.linkname
        if not link or link.startswith("/") or ".." in link.split("/"):
            return f"hard link pointing outside the archive ({link!r})"
        if not _within(os.path.realpath(os.path.join(real_dest, link)), real_dest):
            return f"hard link pointing outside the archive ({link!r})"
    return None


def _extract(tar: tarfile.TarFile, member: tarfile.TarInfo, dest: str) -> None:
    if _HAS_DATA_FILTER:
        tar.extract(member, dest, filter="data")
    else:  # pragma: no cover - Python without extraction filters
        member.uid, member.gid = os.getuid(), os.getgid()
        member.uname = member.gname = ""
        tar.extract(member, dest, numeric_owner=True)


def _make_private(root: str) -> None:
    """Directories 0700, files 0600 (0700 if their owner could execute them); links untouched."""
    for directory, dirs, files in os.walk(root):
        os.chmod(directory, 0o700)
        for name in files:
            path = os.path.join(directory, name)
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode):
                os.chmod(path, 0o700 if st.st_mode & stat.S_IXUSR else 0o600)


def _check_links(root: str, name: str) -> None:
    """Refuse symbolic links that would lead outside the session once it is in place.

    Checked against the session directory itself (not the staging directory
    around it, which the session leaves): a link is only accepted inside
    ``session-share/`` (jobs make them there), and only if it resolves inside the session.
    """
    real_root = os.path.realpath(root)
    share = os.path.join(root, SHARE_DIR)
    for directory, dirs, files in os.walk(root):
        for entry in dirs + files:
            path = os.path.join(directory, entry)
            if not os.path.islink(path):
                continue
            rel = os.path.relpath(path, root)
            target = os.readlink(path)
            if not _within(path, share) or path == share:
                why = "symbolic link outside session-share/"
            elif not _within(os.path.realpath(path), real_root):
                why = "symbolic link leading outside the session"
            else:
                continue
            raise UnsafeArchive(f"{name}: refusing to import: {rel!r:.200} -> {target!r:.200}: {why}")


def _session_root(content: str) -> str | None:
    if os.path.isfile(os.path.join(content, STATE_FILE)):
        return content
    entries = os.listdir(content)
    if len(entries) == 1:
        inner = os.path.join(content, entries[0])
        if os.path.isdir(inner) and not os.path.islink(inner) and os.path.isfile(os.path.join(inner, STATE_FILE)):
            return inner
    return None


def _makedirs(path: str) -> list[str]:
    """Create *path* and missing parents (0700); returns those created, innermost first."""
    created = []
    path = os.path.abspath(path)
    while not os.path.isdir(path):
        created.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    made: list[str] = []
    try:
        for directory in reversed(created):
            try:
                os.mkdir(directory, 0o700)
            except FileExistsError:
                continue
            made.append(directory)
    except BaseException:
        for directory in reversed(made):
            try:
                os.rmdir(directory)
            except OSError:
                break
        raise
    return made[::-1]


def default_max_size(source: BinaryIO) -> int:
    """The default limit on what *source* may unpack to (see the module's notes)."""
    try:
        st = os.fstat(source.fileno())
    except (AttributeError, OSError, ValueError):  # not a file (a buffer in memory)
        return MAX_IMPORT_SIZE
    if not stat.S_ISREG(st.st_mode):  # a pipe: its size is not known in advance
        return MAX_IMPORT_SIZE
    return min(MAX_IMPORT_SIZE, max(MIN_IMPORT_SIZE, MAX_IMPORT_RATIO * st.st_size))


@attrs.frozen
class ImportLimits:
    """How much an import may unpack: total bytes of its files, and number of members."""

    max_size: int
    max_members: int = MAX_IMPORT_MEMBERS


def import_archive(
    source: BinaryIO,
    sessions_dir: str,
    name: str,
    *,
    max_size: int | None = None,
    max_members: int = MAX_IMPORT_MEMBERS,
) -> LoadedSession:
    """Extract the session archive read from *source* into *sessions_dir* under a new id.

    *name* is how the archive is named in messages. *max_size* (default:
    :func:`default_max_size`) and *max_members* bound what is unpacked: past
    them the import fails and leaves nothing behind. Returns the imported
    session, loaded from its new place.
    """
    limits = ImportLimits(default_max_size(source) if max_size is None else max_size, max_members)
    try:
        return _import(source, sessions_dir, name, limits)
    except PlainboxLikeError:
        raise
    except OSError as exc:
        raise PlainboxLikeError(f"{name}: cannot import: {exc}") from None


def _import(source: BinaryIO, sessions_dir: str, name: str, limits: ImportLimits) -> LoadedSession:
    staging = final = None
    lock_fd = -1
    confine.refuse_symlinked_sessions(sessions_dir)
    created = _makedirs(sessions_dir)
    try:
        staging = tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=sessions_dir)
        # Held while we work: whoever cleans up leftovers of killed imports
        # can tell this one is in progress (as with ``.deleting-*`` directories).
        lock_fd = os.open(os.path.join(staging, LOCK_FILE), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        content = os.path.join(staging, "content")
        os.mkdir(content, 0o700)
        _extract_all(source, content, name, limits)
        root = _session_root(content)
        if root is None:
            raise BadArchive(f"{name}: no session in the archive (expected one directory holding a 'session' file)")
        lock = os.path.join(root, LOCK_FILE)
        if os.path.isfile(lock) and not os.path.islink(lock):
            os.unlink(lock)
        _make_private(root)
        _check_links(root, name)
        try:
            staged = reader.load_session(root)
        except (CorruptSession, SessionNotFound) as exc:
            raise BadArchive(f"{name}: the session in the archive does not load: {exc}") from None
        outside = confine.paths_outside(root, staged.state)
        if outside:
            raise UnsafeArchive(f"{name}: refusing to import: the session's {outside[0]}")
        final = tempfile.mkdtemp(prefix="", suffix=SESSION_SUFFIX, dir=sessions_dir)
        # rename(2) replaces an empty directory atomically: the fresh name that
        # mkdtemp reserved now holds the whole session.
        os.rename(root, final)
        os.chmod(final, 0o700)
        moved, final = final, None
        shutil.rmtree(staging, ignore_errors=True)
        staging = None
        fsync_dir(sessions_dir)
        return reader.load_session(moved)
    except BaseException:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        if final is not None:
            try:
                os.rmdir(final)
            except OSError:
                pass
        for directory in created:
            try:
                os.rmdir(directory)
            except OSError:
                break
        raise
    finally:
        if lock_fd >= 0:
            os.close(lock_fd)


def _check_limits(member: tarfile.TarInfo, count: int, size: int, limits: ImportLimits, name: str) -> None:
    if count > limits.max_members:
        raise ArchiveTooLarge(
            f"{name}: refusing to import: more than {limits.max_members} members (--max-members raises the limit)"
        )
    if size > limits.max_size:
        raise ArchiveTooLarge(
            f"{name}: refusing to import: its files add up to more than {format_size(limits.max_size)} "
            f"(at member {member.name!r:.200}; --max-size raises the limit)"
        )


def _extract_all(source: BinaryIO, dest: str, name: str, limits: ImportLimits) -> None:
    count = size = 0
    try:
        with tarfile.open(fileobj=source, mode="r|*") as tar:
            for member in tar:
                count += 1
                if member.isreg():
                    size += member.size
                _check_limits(member, count, size, limits, name)
                # A stream keeps every member read so far, for lookups we never need: a hard
                # link is made to a file already extracted (else refused), never searched for.
                tar.members.clear()
                why = check_member(member, dest)
                if why is not None:
                    raise UnsafeArchive(f"{name}: refusing to import: member {member.name!r:.200}: {why}")
                if member.islnk() and not os.path.isfile(os.path.join(dest, member.linkname)):
                    raise BadArchive(
                        f"{name}: member {member.name!r:.200}: hard link to {member.linkname!r:.200}, "
                        "which is no file extracted before it"
                    )
                try:
                    _extract(tar, member, dest)
                except _FILTER_ERRORS as exc:
                    raise UnsafeArchive(f"{name}: refusing to import: {exc}") from None
    except PlainboxLikeError:
        raise
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise BadArchive(f"{name}: not a readable tar archive ({exc})") from None
    except OSError as exc:
        raise BadArchive(f"{name}: cannot extract: {exc.strerror or exc}") from None
