"""Where sessions live, which ids are valid, and how a reference finds a session."""

from __future__ import annotations

import os
import stat

import pytest

from plainbox_like.store import paths
from plainbox_like.errors import InvalidSessionId, SessionNotFound
from plainbox_like.store.repository import SessionRepository


# -- default repository -----------------------------------------------------------


def test_default_repository_follows_xdg_cache_home(monkeypatch, tmp_path):
    monkeypatch.delenv(paths.REPOSITORY_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert paths.default_repository() == str(tmp_path / "cache" / "plainbox-like")


def test_default_repository_without_xdg_is_home_cache(monkeypatch, tmp_path):
    monkeypatch.delenv(paths.REPOSITORY_ENV, raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert paths.default_repository() == str(tmp_path / ".cache" / "plainbox-like")


def test_repository_env_wins_over_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv(paths.REPOSITORY_ENV, str(tmp_path / "repo"))
    assert paths.default_repository() == str(tmp_path / "repo")


def test_relative_repository_env_is_made_absolute(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(paths.REPOSITORY_ENV, "rel/repo")
    assert paths.default_repository() == str(tmp_path / "rel" / "repo")


def test_repository_uses_default_root_and_creates_private_dirs(monkeypatch, tmp_path):
    monkeypatch.delenv(paths.REPOSITORY_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    repo = SessionRepository()
    assert repo.root == str(tmp_path / "cache" / "plainbox-like")
    with repo.create(title="t") as writer:
        assert os.path.dirname(writer.path) == os.path.join(repo.root, "sessions")
    for directory in (repo.root, repo.sessions_dir):
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    assert repo.session_paths() == [writer.path]


# -- session ids ------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["", ".", "..", "a/b", "/abs", "a/", "a\0b", "\0", ".hidden", "..x", "./x"])
def test_validate_session_id_refuses(bad):
    with pytest.raises(InvalidSessionId) as info:
        paths.validate_session_id(bad)
    message = str(info.value)
    assert repr(bad) in message
    assert "plain name" in message


@pytest.mark.parametrize("bad", [None, 5, b"abc"])
def test_validate_session_id_refuses_non_strings(bad):
    with pytest.raises(InvalidSessionId):
        paths.validate_session_id(bad)


@pytest.mark.parametrize("good", ["abc", "tmpx1y2_z3", "a..b", "x.session", "é-ü_1", "a b"])
def test_validate_session_id_accepts_plain_names(good):
    assert paths.validate_session_id(good) == good


def test_session_id_of():
    assert paths.session_id_of("/r/sessions/abc.session") == "abc"
    assert paths.session_id_of("/r/sessions/abc.session/") == "abc"
    assert paths.session_id_of("/plainbox/pbox-xyz") == "pbox-xyz"


# -- resolving references ---------------------------------------------------------


def _make_sessions(root, *ids):
    """Real sessions under *root*, renamed to the given ids."""
    repo = SessionRepository(str(root))
    made = {}
    for session_id in ids:
        writer = repo.create(title=session_id)
        writer.close()
        target = os.path.join(repo.sessions_dir, session_id + paths.SESSION_SUFFIX)
        os.rename(writer.path, target)
        made[session_id] = target
    return repo, made


def test_resolve_exact_id_even_when_it_is_a_prefix_of_another(tmp_path):
    repo, made = _make_sessions(tmp_path, "abc", "abcdef")
    assert repo.resolve("abc") == made["abc"]
    assert repo.resolve("abcdef") == made["abcdef"]
    assert repo.load("abc").state.metadata.title == "abc"


def test_resolve_unique_prefix(tmp_path):
    repo, made = _make_sessions(tmp_path, "abc123", "abd456", "xyz")
    assert repo.resolve("abc") == made["abc123"]
    assert repo.resolve("abd4") == made["abd456"]
    assert repo.resolve("x") == made["xyz"]


def test_resolve_ambiguous_prefix_names_the_candidates(tmp_path):
    repo, _ = _make_sessions(tmp_path, "abc123", "abc456", "xyz")
    with pytest.raises(SessionNotFound) as info:
        repo.resolve("abc")
    message = str(info.value)
    assert "'abc'" in message
    assert "2 sessions" in message
    assert "abc123" in message and "abc456" in message
    assert "xyz" not in message


def test_resolve_unknown_id(tmp_path):
    repo, _ = _make_sessions(tmp_path, "abc123")
    with pytest.raises(SessionNotFound) as info:
        repo.resolve("nope")
    assert "'nope'" in str(info.value)
    assert repo.sessions_dir in str(info.value)


def test_resolve_in_an_empty_repository(tmp_path):
    repo = SessionRepository(str(tmp_path / "never-created"))
    assert repo.session_paths() == []
    with pytest.raises(SessionNotFound):
        repo.resolve("abc")


@pytest.mark.parametrize("bad", [".hidden", "a\0b", ""])
def test_resolve_refuses_invalid_ids(tmp_path, bad):
    repo, _ = _make_sessions(tmp_path, "abc")
    with pytest.raises(InvalidSessionId):
        repo.resolve(bad)


def test_resolve_absolute_and_relative_paths(tmp_path, monkeypatch):
    repo, made = _make_sessions(tmp_path / "repo", "abc")
    other_repo = SessionRepository(str(tmp_path / "other"))
    assert other_repo.resolve(made["abc"]) == made["abc"]
    assert other_repo.resolve(made["abc"] + "/") == made["abc"]
    monkeypatch.chdir(repo.sessions_dir)
    assert other_repo.resolve("./abc.session") == made["abc"]
    # A bare directory name (no slash) that is not an id in the repository.
    assert other_repo.resolve("abc.session") == made["abc"]
    monkeypatch.chdir(made["abc"])
    assert other_repo.resolve(".") == made["abc"]
    assert other_repo.load(".").state.metadata.title == "abc"


def test_resolve_path_without_session_file(tmp_path):
    repo = SessionRepository(str(tmp_path / "repo"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SessionNotFound) as info:
        repo.resolve(str(tmp_path / "empty"))
    assert str(tmp_path / "empty") in str(info.value)
    with pytest.raises(SessionNotFound):
        repo.resolve(str(tmp_path / "missing"))
