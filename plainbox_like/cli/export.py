"""``export`` and ``import``: a session as JSON, JUnit XML, an HTML report or an archive, and back."""

from __future__ import annotations

import argparse
import errno
import os
import stat
import sys
import tempfile
from typing import BinaryIO, Callable, Iterable

from plainbox_like.store import codec, reader
from plainbox_like import exports
from plainbox_like.cli import options, output
from plainbox_like.errors import PlainboxLikeError
from plainbox_like.store.paths import open_without_waiting
from plainbox_like.exports import tarball
from plainbox_like.text import format_size, parse_size


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export",
        help="write a session as JSON, JUnit XML, an HTML report or a .tar.gz archive",
        description="Write a session in another format: json (the full state plus the session's id, "
        "path and origin; with --with-logs also every attempt's output), junit (JUnit XML for CI "
        "servers: one test case per job), html (a self-contained report to open in a browser) or "
        "tar (the session directory as a .tar.gz that 'import' brings back). Works on Checkbox and "
        "Plainbox session directories too, and on a session being run (what it holds at that moment).",
    )
    options.add_session(p)
    p.add_argument(
        "--format",
        choices=exports.FORMATS,
        help="the output format (default: from the name given to -o: .json, .xml for junit, .html, "
        ".tar.gz or .tgz for tar; else json)",
    )
    p.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="write to FILE, replacing a regular file only once the export is complete (a device or FIFO "
        "is written into, a symbolic link is followed; never inside a session) (default or '-': standard "
        "output, which for tar must not be a terminal)",
    )
    p.add_argument(
        "--with-logs",
        action="store_true",
        help="json only: add the output of every attempt of every job (text, and base64 where it is not UTF-8)",
    )
    p.set_defaults(func=cmd_export)

    p = subparsers.add_parser(
        "import",
        help="bring a session archive made by 'export --format tar' back, under a new id",
        description="Extract a session archive into the repository under a new id and print that id. "
        "The archive is checked before anything is extracted from it: absolute paths, '..', links "
        "that point outside the session and device files are refused. The session must load before it "
        "appears in the repository; on any error nothing is left behind. An archive of a Checkbox or "
        "Plainbox session directory imports too (it can then be inspected, not resumed).",
    )
    p.add_argument(
        "archive",
        metavar="ARCHIVE",
        help="the archive: a .tar.gz from 'export --format tar', or any tar (gzip, bzip2, xz or "
        "uncompressed) of one session directory; '-' reads standard input",
    )
    p.add_argument(
        "--max-size",
        metavar="SIZE",
        type=_size,
        help="refuse an archive whose files add up to more than SIZE bytes (512M, 10G...; default: 10G, "
        f"or {tarball.MAX_IMPORT_RATIO} times the archive's size if that is smaller, but at least "
        f"{format_size(tarball.MIN_IMPORT_SIZE)})",
    )
    p.add_argument(
        "--max-members",
        metavar="N",
        type=options.positive_int,
        default=tarball.MAX_IMPORT_MEMBERS,
        help=f"refuse an archive of more than N files, directories and links (default: {tarball.MAX_IMPORT_MEMBERS})",
    )
    p.set_defaults(func=cmd_import)


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _within(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip(os.sep) + os.sep)


def write_output(path: str, produce: Callable[[BinaryIO], None], refused: Iterable[tuple[str, str]] = ()) -> None:
    """Write the export to *path* without ever replacing what is not a regular file.

    A device, FIFO or socket there is written into (``-o /dev/stdout``, a pipe); a
    symbolic link is followed and its target written; a regular file (or nothing)
    is replaced through a temporary file renamed over it: never a half-written
    export. *refused*: ``(directory, what)`` pairs that nothing is written inside
    (the sessions), checked where the name leads after every link.
    """
    shown = path
    path = os.path.abspath(path)
    real = os.path.realpath(path)
    for directory, what in refused:
        if _within(real, os.path.realpath(directory)):
            raise PlainboxLikeError(f"{shown}: inside {what}: an export never writes there")
    try:
        st: os.stat_result | None = os.stat(path)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise PlainboxLikeError(f"{shown}: cannot write: {exc.strerror or exc}") from None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise PlainboxLikeError(f"{shown}: is a directory")
    if st is not None and not stat.S_ISREG(st.st_mode):
        _write_into(shown, path, produce)
        return
    directory, base = os.path.split(real)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise PlainboxLikeError(f"{shown}: cannot write: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            produce(f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0o022)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # as a shell redirection would create it
        os.replace(tmp, real)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError) and not isinstance(exc, PlainboxLikeError):
            raise PlainboxLikeError(f"{shown}: cannot write: {exc.strerror or exc}") from None
        raise


def _write_into(shown: str, path: str, produce: Callable[[BinaryIO], None]) -> None:
    """Write into an existing device, FIFO or socket, as a shell redirection would (never replacing it)."""
    try:
        fd = open_without_waiting(path, os.O_WRONLY)
    except OSError as exc:
        why = "a FIFO that nobody reads" if exc.errno == errno.ENXIO else exc.strerror or exc
        raise PlainboxLikeError(f"{shown}: cannot write: {why}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            produce(f)
            f.flush()
    except OSError as exc:
        if isinstance(exc, (PlainboxLikeError, BrokenPipeError)):
            raise
        raise PlainboxLikeError(f"{shown}: cannot write: {exc.strerror or exc}") from None


def cmd_export(args: argparse.Namespace) -> int:
    to_stdout = args.output in (None, "-")
    fmt = args.format or (None if to_stdout else exports.format_for_filename(args.output)) or "json"
    if args.with_logs and fmt != "json":
        raise PlainboxLikeError(
            f"--with-logs applies to --format json only ({fmt} exports always include the output)"
        )
    if fmt == "tar" and to_stdout and sys.stdout.isatty():
        raise PlainboxLikeError("will not write a .tar.gz archive to a terminal: give -o FILE or redirect the output")
    repo = options.repository(args)
    loaded = reader.load_session(repo.resolve(args.session))
    format_options: dict = {}
    if fmt == "json":
        format_options["with_logs"] = args.with_logs
    elif fmt == "tar":
        format_options["warn"] = output.note

    def produce(out: BinaryIO) -> None:
        exports.write(loaded, fmt, out, **format_options)

    if to_stdout:
        sys.stdout.flush()
        produce(sys.stdout.buffer)
        sys.stdout.buffer.flush()
    else:
        refused = [
            (loaded.path, f"the session it exports ({loaded.path})"),
            (repo.sessions_dir, f"the repository's sessions directory ({repo.sessions_dir})"),
        ]
        write_output(args.output, produce, refused)
    return 0


def _open_archive(path: str) -> BinaryIO:
    """Open *path* for reading without waiting for a writer: a FIFO nobody writes into reads as empty.

    (A pipe that is being written, as from ``<(...)``, is read as usual.)
    """
    return os.fdopen(open_without_waiting(path, os.O_RDONLY), "rb")


def cmd_import(args: argparse.Namespace) -> int:
    repo = options.repository(args)
    limits = {"max_size": args.max_size, "max_members": args.max_members}
    if args.archive == "-":
        if sys.stdin.isatty():
            raise PlainboxLikeError("will not read an archive from a terminal: give a file or redirect the input")
        loaded = tarball.import_archive(sys.stdin.buffer, repo.sessions_dir, "standard input", **limits)
    else:
        try:
            source = _open_archive(args.archive)
        except OSError as exc:
            raise PlainboxLikeError(f"{args.archive}: cannot read: {exc.strerror or exc}") from None
        with source:
            loaded = tarball.import_archive(source, repo.sessions_dir, args.archive, **limits)
    print(loaded.id)
    if loaded.origin != codec.FORMAT:
        output.note(f"session {loaded.id} is a Checkbox/Plainbox session: it can be inspected and exported, not resumed")
    return 0
