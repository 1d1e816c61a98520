"""Who writes a session: the lock file's holder, and whether that process is alive here.

Kept apart from the writer and the reader so that readers (``list`` through the index)
can ask without importing the state machinery.
"""

from __future__ import annotations

import os

from plainbox_like.store.names import LOCK_FILE  # noqa: F401 (public here too)
#: A short management command (tag, rename, delete, ...) that holds a session's lock writes this, and
#: its command name, on a second line: others wait for it a little instead of failing at once.
MAINTENANCE_NOTE = "plainbox-like "


def hostname() -> str:
    """This machine's name, as in a lock holder (``socket.gethostname()`` without importing socket)."""
    return os.uname().nodename


def lock_holder(path: str) -> tuple[int, str] | None:
    """The pid and host written in the session's lock file, if a writer ever held it.

    (Read with plain system calls: a rebuild asks this of every session.)
    """
    try:  # (non-blocking: a FIFO in its place must not hang every reader)
        fd = os.open(os.path.join(path, LOCK_FILE), os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        data = os.read(fd, 65536)
    except OSError:
        return None
    finally:
        os.close(fd)
    lines = data.splitlines()  # \n, \r or \r\n, as a text-mode readline() would end the first line
    try:
        pid, host = lines[0].decode("utf-8", "replace").split(None, 1)
        return int(pid), host.strip()
    except (IndexError, ValueError):
        return None


def lock_note(path: str) -> str | None:
    """The second line of the session's lock file (``plainbox-like tag``: held by that command), if any."""
    try:
        fd = os.open(os.path.join(path, LOCK_FILE), os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        data = os.read(fd, 4096)
    except OSError:
        return None
    finally:
        os.close(fd)
    lines = data.splitlines()
    note = lines[1].decode("utf-8", "replace").strip() if len(lines) > 1 else ""
    return note if note.startswith(MAINTENANCE_NOTE) else None


def held_flocks() -> set[tuple[int, int, int]] | None:
    """(major, minor, inode) of every file someone holds a flock on, from /proc/locks."""
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    held = set()
    for line in lines:
        parts = line.split()
        # "12: FLOCK  ADVISORY  WRITE 4242 fd:01:393219 0 EOF"; waiters have "->" second.
        if len(parts) >= 6 and parts[1] == "FLOCK":
            try:
                major, minor, inode = parts[5].split(":")
                held.add((int(major, 16), int(minor, 16), int(inode)))
            except ValueError:
                continue
    return held


def writer_alive(path: str, held: set[tuple[int, int, int]] | None = None) -> bool:
    """Whether a process on this host holds the session's lock now.

    The pid in the lock file alone is not proof (after a reboot it may name an
    unrelated process), so the kernel's table of held locks is asked too;
    pass *held* (from :func:`held_flocks`) when checking many sessions.
    """
    holder = lock_holder(path)
    if holder is None or holder[1] != hostname() or not pid_alive(holder[0]):
        return False
    held = held if held is not None else held_flocks()
    if held is None:
        return True
    try:
        st = os.stat(os.path.join(path, LOCK_FILE))
    except OSError:
        return False
    return (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino) in held


def pid_alive(pid: int) -> bool:
    """Whether a process with *pid* exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
