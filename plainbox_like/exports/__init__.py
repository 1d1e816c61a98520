"""Exporting a session to other formats, and bringing an archived session back.

One module per format, each with ``write(loaded, out, **options)`` writing
bytes to a binary file object:

``json`` (:mod:`.jsondoc`)
    The full state document plus the session's id, path and origin; with
    ``with_logs=True`` the decoded output of every attempt.
``junit`` (:mod:`.junit`)
    JUnit XML as Jenkins and GitLab read it: one ``<testcase>`` per job.
``html`` (:mod:`.htmlreport`)
    A single self-contained page (no external CSS, JavaScript or fonts).
``tar`` (:mod:`.tarball`)
    The session directory as a ``.tar.gz``; :func:`.tarball.import_archive`
    brings such an archive back under a new id.

The modules are not named after the standard library modules they use
(``json``, ``html``, ``tarfile``) so that importing one never shadows those.
"""

from __future__ import annotations

import importlib
from typing import Any, BinaryIO

from plainbox_like.store.reader import LoadedSession

#: Format name -> module (under this package) that writes it.
FORMAT_MODULES = {"json": "jsondoc", "junit": "junit", "html": "htmlreport", "tar": "tarball"}
FORMATS = tuple(FORMAT_MODULES)

#: File name endings that name a format (for a default from ``-o FILE``).
_SUFFIXES = (
    (".json", "json"),
    (".xml", "junit"),
    (".html", "html"),
    (".htm", "html"),
    (".tar.gz", "tar"),
    (".tgz", "tar"),
)


def format_for_filename(name: str) -> str | None:
    """The format a file name's ending suggests (``report.xml`` -> ``junit``), if any."""
    lower = name.lower()
    for suffix, fmt in _SUFFIXES:
        if lower.endswith(suffix):
            return fmt
    return None


def write(loaded: LoadedSession, fmt: str, out: BinaryIO, **options: Any) -> None:
    """Write *loaded* in format *fmt* to the binary file *out*."""
    if fmt not in FORMAT_MODULES:
        raise ValueError(f"unknown export format {fmt!r} (use one of {', '.join(FORMATS)})")
    module = importlib.import_module(f"{__name__}.{FORMAT_MODULES[fmt]}")
    module.write(loaded, out, **options)
