"""The Stamps type reads and writes the stamps text the index stores, byte for byte."""

import os

from hypothesis import given
from hypothesis import strategies as st

from plainbox_like.index import query as indexing
from plainbox_like.index.stamps import MISSING, Stamps, Stat, join_stamps, session_stamps

_NS = st.integers(min_value=0, max_value=2**63 - 1)
_STAT_TEXT = st.builds(lambda *v: ":".join(map(str, v)), _NS, _NS, _NS, _NS)
_PART = st.one_of(_STAT_TEXT, st.just(MISSING), st.integers(1, 200).map(lambda n: f"error{n}"))


@given(_STAT_TEXT, _PART, _PART)
def test_text_round_trips_byte_for_byte(directory, state, journal):
    text = join_stamps(directory, state, journal)
    assert str(Stamps.parse(text)) == text


def test_parts_of_a_real_session_directory(tmp_path):
    path = tmp_path / "one.session"
    path.mkdir()
    (path / "session").write_bytes(b"x" * 5)
    text = session_stamps(str(path))
    stamps = Stamps.parse(text)
    assert str(stamps) == text
    st_dir, st_state = os.stat(path), os.stat(path / "session")
    assert stamps.dir == Stat(st_dir.st_mtime_ns, st_dir.st_size, st_dir.st_ino, st_dir.st_ctime_ns)
    assert stamps.state == Stat(st_state.st_mtime_ns, 5, st_state.st_ino, st_state.st_ctime_ns)
    assert stamps.journal is None and stamps.has_state
    assert stamps.changed == st_dir.st_ctime_ns / 1e9 and stamps.modified == st_dir.st_mtime_ns / 1e9
    assert stamps.dir_key("one") == f"one.session {st_dir.st_ctime_ns}:{st_dir.st_ino}"
    # scan_sessions writes the same text as session_stamps
    assert indexing.scan_sessions(str(tmp_path)) == {"one": (str(path), text)}


def test_a_part_that_is_not_a_stamp_is_kept_as_it_was():
    stamps = Stamps.parse("1:2:3:4|error13|-")
    assert stamps == Stamps(Stat(1, 2, 3, 4), "error13", None)
    assert stamps.has_state  # something is there, it could not be stat'ed
    assert not Stamps.parse("1:2:3:4|-|-").has_state
    broken = Stamps.parse("garbage")
    assert broken.changed is None and broken.modified is None
    assert broken.dir_key("x") == "x.session -"
