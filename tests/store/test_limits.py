"""Limits on hostile input: archives that unpack too much, gzip bombs, huge logs."""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
import tarfile
import tracemalloc
import xml.etree.ElementTree as ET
from html import escape as html_escape

import pytest
from isal import isal_zlib

from cli_helpers import assert_one_line_error, run
from plainbox_like.store import codec, iolog, limits
from plainbox_like.errors import CorruptSession, PlainboxLikeError
from plainbox_like.exports import htmlreport, jsondoc, junit, tarball
from plainbox_like.store.model import Attempt
from plainbox_like.store.paths import session_id_of
from plainbox_like.store.reader import load_session
from plainbox_like.store.repository import SessionRepository
from plainbox_like.text import format_size, parse_size


def _session_archive(repo: SessionRepository, extra: list[tuple[str, bytes | None]]) -> bytes:
    """A ``.tar.gz`` of a real session, plus *extra* members (``None``: a directory) at its end."""
    with repo.create(title="limits") as writer:
        path = writer.path
    out = io.BytesIO()
    tarball.write_archive(path, out, "x")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(out.getvalue()), mode="r:gz") as src, tarfile.open(
        fileobj=buffer, mode="w:gz", compresslevel=1
    ) as dst:
        for member in src:
            dst.addfile(member, src.extractfile(member) if member.isreg() else None)
        for name, data in extra:
            info = tarfile.TarInfo(f"x.session/{name}")
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o700
                dst.addfile(info)
            else:
                info.size, info.mode = len(data), 0o600
                dst.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _nothing_left(root) -> None:
    sessions = root / "sessions"
    assert not sessions.exists() or os.listdir(sessions) == []


# -- import ----------------------------------------------------------------------


def test_parse_and_format_sizes():
    assert parse_size("512M") == 512 << 20
    assert parse_size("10G") == parse_size("10GiB") == parse_size("10gb") == 10 << 30
    assert parse_size("1.5K") == 1536 and parse_size("4096") == 4096 and parse_size("7B") == 7
    for bad in ("", "x", "-1", "G", "1e9", "nan", "1.2.3M", "\u0661"):
        with pytest.raises(ValueError, match="not a size"):
            parse_size(bad)
    assert format_size(512 << 20) == "512 MiB" and format_size(1536) == "1.5 KiB" and format_size(3) == "3 bytes"


def test_import_refuses_an_archive_past_max_size(tmp_path, capsys):
    source = SessionRepository(str(tmp_path / "src"))
    archive = tmp_path / "big.tar.gz"
    archive.write_bytes(_session_archive(source, [("session-share", None), ("session-share/zeros", bytes(2 << 20))]))
    root = tmp_path / "repo"
    capsys.readouterr()
    assert run(str(root), "import", "--max-size", "1M", str(archive)) == 2
    assert_one_line_error(capsys.readouterr().err, str(archive), "more than 1 MiB", "--max-size")
    _nothing_left(root)
    # Under a larger limit the same archive imports.
    assert run(str(root), "import", "--max-size", "3M", str(archive)) == 0
    assert len(os.listdir(root / "sessions")) == 1


def test_import_checks_the_size_a_member_claims_before_reading_it(tmp_path, capsys):
    """A header claiming 20 GiB (no data follows): refused by the default limit, nothing read or written."""
    source = SessionRepository(str(tmp_path / "src"))
    good = _session_archive(source, [])
    with tarfile.open(fileobj=io.BytesIO(good), mode="r:gz") as src:
        members = [(m, src.extractfile(m).read() if m.isreg() else None) for m in src]
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as dst:
        for member, data in members:
            dst.addfile(member, io.BytesIO(data) if data is not None else None)
    header = tarfile.TarInfo("x.session/huge")
    header.size = 20 << 30
    body = raw.getvalue().rstrip(b"\0") + b"\0" * (-len(raw.getvalue().rstrip(b"\0")) % 512)
    archive = tmp_path / "claims.tar"
    archive.write_bytes(body + header.tobuf(tarfile.GNU_FORMAT))
    root = tmp_path / "repo"
    capsys.readouterr()
    assert run(str(root), "import", str(archive)) == 2
    assert_one_line_error(capsys.readouterr().err, str(archive), "more than 64 MiB", "x.session/huge")
    _nothing_left(root)


def test_default_import_size_limit(tmp_path):
    def limit_for(size: int) -> int:
        path = tmp_path / f"a{size}"
        with open(path, "wb") as f:
            f.truncate(size)
        with open(path, "rb") as f:
            return tarball.default_max_size(f)

    assert limit_for(10) == tarball.MIN_IMPORT_SIZE
    assert limit_for(1 << 20) == 100 << 20  # 100x the archive
    assert limit_for(1 << 30) == 10 << 30  # never more than 10 GiB
    assert tarball.default_max_size(io.BytesIO(b"x")) == 10 << 30  # size unknown (a stream)


def test_import_refuses_too_many_members(tmp_path, capsys):
    source = SessionRepository(str(tmp_path / "src"))
    files = [(f"session-share/f{n}", b"x") for n in range(20)]
    archive = tmp_path / "many.tar.gz"
    archive.write_bytes(_session_archive(source, [("session-share", None), *files]))
    root = tmp_path / "repo"
    capsys.readouterr()
    assert run(str(root), "import", "--max-members", "10", str(archive)) == 2
    assert_one_line_error(capsys.readouterr().err, str(archive), "more than 10 members", "--max-members")
    _nothing_left(root)
    assert run(str(root), "import", "--max-members", "100", str(archive)) == 0


def test_import_of_a_hard_link_to_nothing_extracted_is_a_one_line_error(tmp_path, capsys):
    """Members read are not kept (memory stays flat over a million), so no link is searched for among them."""
    source = SessionRepository(str(tmp_path / "src"))
    good = _session_archive(source, [])
    buffer = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(good), mode="r:gz") as src, tarfile.open(fileobj=buffer, mode="w:gz") as dst:
        for member in src:
            dst.addfile(member, src.extractfile(member) if member.isreg() else None)
        link = tarfile.TarInfo("x.session/alias")
        link.type, link.linkname = tarfile.LNKTYPE, "x.session/later"
        dst.addfile(link)
        later = tarfile.TarInfo("x.session/later")
        dst.addfile(later, io.BytesIO(b""))
    archive = tmp_path / "link.tar.gz"
    archive.write_bytes(buffer.getvalue())
    root = tmp_path / "repo"
    capsys.readouterr()
    assert run(str(root), "import", str(archive)) == 2
    assert_one_line_error(capsys.readouterr().err, str(archive), "'x.session/alias': hard link to 'x.session/later'")
    _nothing_left(root)


@pytest.mark.parametrize("value", ["", "lots", "-5", "1e9"])
def test_import_max_size_must_be_a_size(tmp_path, capsys, value):
    with pytest.raises(SystemExit) as info:
        run(str(tmp_path), "import", "--max-size", value, "x.tar.gz")
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --max-size: not a size" in err and "Traceback" not in err


# -- gzip bombs ------------------------------------------------------------------


def _bomb(size: int) -> bytes:
    """*size* zero bytes, gzipped (about a thousandth of that)."""
    deflate = isal_zlib.compressobj(1, isal_zlib.DEFLATED, 31)
    zeros = bytes(1 << 20)
    return b"".join(deflate.compress(zeros) for _ in range(size >> 20)) + deflate.flush()


def _measured(args: list[str], env: dict[str, str], tree: str) -> tuple[int, str, int]:
    """Run the CLI of *tree* in a fresh interpreter: exit code, standard output, and its peak RSS in KiB."""
    script = (
        "import resource, sys\n"
        "from plainbox_like.cli.main import main\n"
        "try:\n"
        "    code = main(sys.argv[1:])\n"
        "finally:\n"
        "    sys.stdout.flush()\n"
        "    sys.stderr.write(f'maxrss={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}\\n')\n"
        "sys.exit(code)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, env=env, cwd=tree, timeout=120
    )
    rss = int(done.stderr.rsplit("maxrss=", 1)[1])
    return done.returncode, done.stdout, rss


def test_gunzip_stops_at_the_limit(monkeypatch):
    data = gzip.compress(b"x" * 1000)
    assert codec.gunzip(data, "s", limit=1000) == b"x" * 1000
    with pytest.raises(CorruptSession, match=r"^s: inflates to more than 999 bytes \(the limit; "):
        codec.gunzip(data, "s", limit=999)
    # Several gzip members count together; a lying trailer changes nothing.
    with pytest.raises(CorruptSession, match="more than 1.5 KiB"):
        codec.gunzip(data + data, "s", limit=1536)
    lying = bytearray(gzip.compress(bytes(100_000)))
    lying[-4:] = (10).to_bytes(4, "little")
    with pytest.raises(CorruptSession, match="more than 1000 bytes"):
        codec.gunzip(bytes(lying), "s", limit=1000)
    monkeypatch.setenv(limits.MAX_STATE_SIZE_ENV, "1K")
    with pytest.raises(CorruptSession, match="more than 1 KiB"):
        codec.decode_state(gzip.compress(b" " * 1025), "s")
    monkeypatch.setenv(limits.MAX_STATE_SIZE_ENV, "lots")
    with pytest.raises(PlainboxLikeError, match=r"^\$PLAINBOX_LIKE_MAX_STATE_SIZE: not a size: 'lots'"):
        limits.max_state_size()


def test_a_bad_state_limit_is_an_error_not_corrupt_sessions(tmp_path, monkeypatch, capsys):
    root = tmp_path / "repo"
    with SessionRepository(str(root)).create(title="fine"):
        pass
    monkeypatch.setenv("PLAINBOX_LIKE_MAX_STATE_SIZE", "lots")
    assert run(str(root), "list") == 2
    assert_one_line_error(capsys.readouterr().err, "$PLAINBOX_LIKE_MAX_STATE_SIZE: not a size: 'lots'")
    monkeypatch.delenv("PLAINBOX_LIKE_MAX_STATE_SIZE")
    assert run(str(root), "list") == 0
    assert "corrupt" not in capsys.readouterr().out


def test_list_and_check_report_a_gzip_bomb_in_bounded_memory(tmp_path):
    """256 MiB of zeros in place of a state, limit 8 MiB: corrupt, and memory as without it."""
    root = tmp_path / "repo"
    repo = SessionRepository(str(root))
    with repo.create(title="fine"):
        pass
    with repo.create(title="bomb") as writer:
        bomb_path = writer.path
    tree = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(codec.__file__))))
    env = {**os.environ, "PLAINBOX_LIKE_MAX_STATE_SIZE": "8M", "PYTHONPATH": tree}
    env.pop("PLAINBOX_LIKE_REPOSITORY", None)
    code, _, baseline = _measured(["--repository", str(root), "list"], env, tree)
    assert code == 0
    with open(os.path.join(bomb_path, "session"), "wb") as f:
        f.write(_bomb(256 << 20))
    for index_file in root.glob("index.sqlite3*"):  # read every session again
        index_file.unlink()
    code, out, rss = _measured(["--repository", str(root), "list"], env, tree)
    assert "Traceback" not in out
    assert code == 0
    (line,) = [line for line in out.splitlines() if line.startswith(session_id_of(bomb_path))]
    assert "corrupt: " in line and "inflates to more than 8 MiB" in line
    assert rss < baseline + 48 * 1024, (baseline, rss)
    code, out, rss = _measured(["--repository", str(root), "check", session_id_of(bomb_path)], env, tree)
    assert code == 1 and "inflates to more than 8 MiB" in out
    assert rss < baseline + 48 * 1024, (baseline, rss)


def test_a_record_file_that_inflates_to_one_huge_line_is_damage(tmp_path):
    path = tmp_path / "job.record.gz"
    good = b'[0.1,"stdout","aGkK"]\n'
    path.write_bytes(gzip.compress(good) + _bomb(64 << 20))
    reader = iolog.RecordReader(str(path), max_line=1 << 20)
    assert [r.data for r in reader] == [b"hi\n"]
    assert not reader.complete
    assert reader.problem == "bad record at line 2 (longer than 1 MiB, the limit)"


# -- huge logs ---------------------------------------------------------------------

#: The big log of these tests, and the memory reading it may take (several times less).
BIG = 32 << 20
BOUND = 8 << 20


def _line(n: int) -> bytes:
    return b"line %08d of a job that prints a lot\n" % n


@pytest.fixture(scope="module")
def big_session(tmp_path_factory):
    """A session whose job ``big`` printed 32 MiB (numbered lines), its last line on stderr."""
    repo = SessionRepository(str(tmp_path_factory.mktemp("big") / "repo"))
    writer = repo.create(title="big")
    log, name = writer.new_log("big", 1, started=0.0, clock=lambda: 0.0)
    writer.job_started("big", 1, name)
    per_chunk = (64 << 10) // len(_line(0))
    lines = BIG // len(_line(0))
    for start in range(0, lines - 1, per_chunk):
        log.write("stdout", b"".join(_line(n) for n in range(start, min(start + per_chunk, lines - 1))), now=0.0)
    log.write("stderr", _line(lines - 1), now=0.0)
    log.close()
    writer.job_finished("big", Attempt(outcome="fail", return_code=1, io_log_filename=name))
    writer.close()
    return load_session(writer.path), lines


def _peak(action) -> int:
    """The most memory (traced Python allocations) *action* took at once."""
    tracemalloc.start()
    try:
        action()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_log_streams_a_huge_log_in_bounded_memory(big_session, tmp_path, monkeypatch, capsys):
    loaded, lines = big_session
    expected = b"".join(_line(n) for n in range(lines))
    target = tmp_path / "out"
    with open(target, "wb") as out:
        monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(out, write_through=True))
        peak = _peak(lambda: run(str(tmp_path), "log", loaded.path, "big"))
    assert target.read_bytes() == expected
    assert peak < BOUND, peak


def test_html_and_junit_embed_a_bounded_head_and_tail(big_session):
    loaded, lines = big_session
    limit = 64 << 10
    html = io.BytesIO()
    peak = _peak(lambda: htmlreport.write(loaded, html, output_limit=limit))
    assert peak < BOUND, peak
    page = html.getvalue().decode()
    assert _line(0).decode() in page and _line(lines - 1).decode() in page  # the first line, the last (stderr)
    assert _line(lines // 2).decode() not in page
    omitted = lines * len(_line(0)) - limit
    assert html_escape(f"[... {omitted} bytes omitted here; 'plainbox-like log --attempt 1 ") in page
    assert html_escape(f"{loaded.path} big' prints all of it ...]") in page
    assert len(page) < 4 * limit + 64 * 1024

    xml = io.BytesIO()
    peak = _peak(lambda: junit.write(loaded, xml, output_limit=limit))
    assert peak < BOUND, peak
    case = ET.fromstring(xml.getvalue()).find(".//testcase")
    out = case.find("system-out").text
    assert out.startswith(_line(0).decode()) and out.endswith(_line(lines - 2).decode())
    assert f"[... {(lines - 1) * len(_line(0)) - limit} bytes omitted here; 'plainbox-like log" in out
    assert case.find("system-err").text == _line(lines - 1).decode()


def test_export_with_logs_streams_in_bounded_memory(big_session, tmp_path):
    """Written as it is read, the export is still exactly ``json.dumps(document(...))``."""
    loaded, lines = big_session
    target = tmp_path / "export.json"
    with open(target, "wb") as out:
        peak = _peak(lambda: jsondoc.write(loaded, out, with_logs=True))
    assert peak < BOUND, peak
    (entry,) = json.loads(target.read_bytes())["logs"]["big"]
    assert entry["stdout"]["bytes"] == (lines - 1) * len(_line(0)) and entry["stdout"]["exact"]
    assert entry["stdout"]["text"] == b"".join(_line(n) for n in range(lines - 1)).decode()
    assert entry["stderr"]["text"] == _line(lines - 1).decode() and entry["complete"]

    # Hostile text, invalid UTF-8, a character split between records: the same bytes as json.dumps gives.
    repo = SessionRepository(str(tmp_path / "repo"))
    writer = repo.create(title="t")
    for job, chunks in (
        ("b", [("stdout", b"\xff\xfe not utf-8 \xc3"), ("stderr", "é\u2028\"\\\x1b".encode() * 3)]),
        ("a\n\"é", [("stderr", b"x" * 7), ("stdout", b"\xc3"), ("stdout", b"\xa9 split character")]),
    ):
        log, name = writer.new_log(job, 1, started=0.0, clock=lambda: 0.0)
        writer.job_started(job, 1, name)
        for stream, data in chunks:
            log.write(stream, data, now=0.0)
        log.close()
        writer.job_finished(job, Attempt(outcome="pass", io_log_filename=name))
    writer.job_started("never-logged", 1, None)
    writer.close()
    loaded = load_session(writer.path)
    out = io.BytesIO()
    jsondoc.write(loaded, out, with_logs=True)
    expected = json.dumps(jsondoc.document(loaded, True), indent=2, sort_keys=True, ensure_ascii=False)
    assert out.getvalue() == expected.encode() + b"\n"
