"""Tar archives built member by member, for the tests of ``import`` (hostile archives included)."""

from __future__ import annotations

import gzip
import io
import json
import tarfile


def tar_bytes(*members, compression="gz"):
    """An archive of ``(TarInfo, data or None)`` pairs."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode=f"w:{compression}" if compression else "w") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def dir_member(name):
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    return info


def file_member(name, mode=0o644):
    info = tarfile.TarInfo(name)
    info.mode = mode
    return info


def session_members(top="evil.session"):
    """The members of a minimal plainbox-like session directory *top*: the directory and its state."""
    state = gzip.compress(json.dumps({"format": "plainbox-like", "version": 1, "session": {}}).encode())
    return [(dir_member(top), None), (file_member(f"{top}/session", 0o600), state)]


def symlink_member(name, target):
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    return info


def hardlink_member(name, target):
    info = tarfile.TarInfo(name)
    info.type = tarfile.LNKTYPE
    info.linkname = target
    return info


def device_member(name, kind):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.devmajor, info.devminor = 1, 3
    return info


MALICIOUS = {
    "absolute-path": [(file_member("/tmp/plainbox-like-evil-abs"), b"x")],
    "dotdot": [(file_member("evil.session/../../plainbox-like-evil-dotdot"), b"x")],
    "dotdot-top": [(file_member("../plainbox-like-evil-top"), b"x")],
    "symlink-absolute": [(symlink_member("evil.session/io-logs", "/tmp"), None)],
    "symlink-relative-escape": [(symlink_member("evil.session/up", "../../.."), None)],
    "symlink-then-write-through": [
        (symlink_member("evil.session/link", "../.."), None),
        (file_member("evil.session/link/plainbox-like-evil-through"), b"x"),
    ],
    "hardlink-outside": [(hardlink_member("evil.session/passwd", "/etc/passwd"), None)],
    "hardlink-dotdot": [(hardlink_member("evil.session/passwd", "../../etc/passwd"), None)],
    "char-device": [(device_member("evil.session/null", tarfile.CHRTYPE), None)],
    "block-device": [(device_member("evil.session/sda", tarfile.BLKTYPE), None)],
    "fifo": [(device_member("evil.session/fifo", tarfile.FIFOTYPE), None)],
}
