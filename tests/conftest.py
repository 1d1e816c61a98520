"""Fixtures shared by the test modules, and the path that lets them import their helpers (``factories``,
``cli_helpers``, ``archives``, ``strategies``) however pytest imports them. A test module never imports
another test module: what two of them share lives in one of those helpers."""

import os
import signal
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import pytest  # noqa: E402

import factories  # noqa: E402
from plainbox_like.run.jobenv import CWD_PREFIX  # noqa: E402
from plainbox_like.store.paths import SESSION_SUFFIX  # noqa: E402
from plainbox_like.store.repository import SessionRepository  # noqa: E402


@pytest.fixture
def root(tmp_path):
    """A repository root inside the test's temporary directory (never ~/.cache)."""
    return str(tmp_path / "repo")


@pytest.fixture
def repo(root):
    """The :class:`SessionRepository` at :func:`root`."""
    return SessionRepository(root)


# -- sessions in each state (built by the factory in factories.py) ------------------------------


@pytest.fixture
def finished_session(repo) -> str:
    """The path of a session of real jobs run to the end (:data:`factories.COMMANDS`): closed, complete."""
    return factories.run_session(repo.root)


@pytest.fixture
def running_session(repo):
    """A live writer holding its session's lock, titled ``live``, its job ``a`` running; after the test it
    is abandoned (a test that wants the final snapshot closes it itself)."""
    writer = factories.written_session(repo, "live", complete=False, end=factories.OPEN)
    writer.job_started("a", 1, None)
    yield writer
    writer.abandon()


@pytest.fixture
def interrupted_session(repo) -> str:
    """The path of a session whose runner died while its job c2 ran (:func:`factories.interrupted_run`):
    incomplete, no live runner, c2 left running."""
    return factories.interrupted_run(repo.root)


@pytest.fixture
def checkbox_session(repo) -> str:
    """The path of a session written by real Checkbox (:data:`factories.CHECKBOX_SESSION`), as
    ``sessions/checkbox.session`` of the repository."""
    return factories.real_checkbox_session(os.path.join(repo.sessions_dir, "checkbox.session"))


def _job_cwds(directory: str) -> dict[str, str]:
    """The jobs' working directories in *directory*, by name: the session id each is for."""
    try:
        names = os.listdir(directory)
    except OSError:
        return {}
    # <prefix><session id>-<12 hex of the job id>-<attempt>-<random>; a session id may hold "-".
    return {name: name[len(CWD_PREFIX) :].rsplit("-", 3)[0] for name in names if name.startswith(CWD_PREFIX)}


def _sessions_under(directory, wanted: set[str]) -> set[str]:
    """Which of the session ids *wanted* have a session directory somewhere below *directory*."""
    found = set()
    for dirpath, dirnames, _files in os.walk(directory):
        sessions = [d for d in dirnames if d.endswith(SESSION_SUFFIX)]
        found.update(d[: -len(SESSION_SUFFIX)] for d in sessions)
        dirnames[:] = [d for d in dirnames if not d.endswith(SESSION_SUFFIX)]  # no session inside a session
    return found & wanted


@pytest.fixture(scope="session", autouse=True)
def _jobs_temporary_directory_for_the_session(tmp_path_factory):
    """``$TMPDIR`` is one of the suite's own from the start, so that the jobs a module- or session-scoped
    fixture runs (before any test's :func:`_jobs_temporary_directory`) never make their working directories
    in the shared /tmp either, a killed runner's leftovers included.

    And the guard: a job working directory that appears in the shared temporary directory during the run,
    for a session this suite made (its directory is under the suite's basetemp: other processes on the
    machine may make such directories at the same time), fails the run.
    """
    shared = tempfile.gettempdir()  # the caller's $TMPDIR or /tmp (read before it is changed below)
    before = set(_job_cwds(shared))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TMPDIR", str(tmp_path_factory.mktemp("session-tmpdir")))
        yield
    new = {name: sid for name, sid in _job_cwds(shared).items() if name not in before}
    if new:
        ours = _sessions_under(tmp_path_factory.getbasetemp(), set(new.values()))
        leaked = sorted(os.path.join(shared, name) for name, sid in new.items() if sid in ours)
        if leaked:
            pytest.fail(
                f"the suite left {len(leaked)} job working directories in the shared {shared} (a job run "
                f"without the test's $TMPDIR): {', '.join(leaked)}",
                pytrace=False,
            )


@pytest.fixture(autouse=True)
def _jobs_temporary_directory(tmp_path_factory, monkeypatch):
    """Jobs make their working directories under ``$TMPDIR``: one of the test's own, never the shared /tmp."""
    monkeypatch.setenv("TMPDIR", str(tmp_path_factory.mktemp("tmpdir")))


#: The boot integration's commands as every test sees them on PATH: they refuse to do anything, so that no
#: test reads or changes the machine's crontab or systemd (tests that need them put fakes first on PATH).
_REFUSING_COMMAND = '#!/bin/sh\necho "$(basename "$0"): not for tests (put a fake first on PATH)" >&2\nexit 1\n'


@pytest.fixture(scope="session")
def _refusing_boot_commands(tmp_path_factory):
    bin_dir = tmp_path_factory.mktemp("refusing-bin")
    for name in ("systemctl", "crontab"):
        path = bin_dir / name
        path.write_text(_REFUSING_COMMAND)
        path.chmod(0o755)
    return bin_dir


@pytest.fixture(autouse=True)
def _no_real_boot_integration(_refusing_boot_commands, tmp_path_factory, monkeypatch):
    """``autoresume`` (and the message before a noreturn job, which asks it) never sees the real unit directory,
    systemd or crontab: the variables documented for testing point into the test's directory."""
    monkeypatch.setenv("PATH", f"{_refusing_boot_commands}{os.pathsep}{os.environ.get('PATH', '')}")
    place = tmp_path_factory.mktemp("boot")
    monkeypatch.setenv("PLAINBOX_LIKE_SYSTEMD_UNIT_DIR", str(place / "units"))
    monkeypatch.setenv("PLAINBOX_LIKE_SYSTEMD_RUNTIME", str(place / "no-systemd"))


@pytest.fixture
def kill_later():
    """Process groups to SIGKILL at teardown, so a failing test leaves no sleepers behind."""
    from plainbox_like.run.executors import iter_pgid_members, process_env
    from plainbox_like.run.settle import SESSION_ENV

    groups: list[int] = []
    yield groups
    for pgid in groups:
        # Only a group that still holds a job process of some session (never a reused id).
        if any(process_env(pid).get(SESSION_ENV) for pid in iter_pgid_members(pgid)):
            try:
                os.killpg(pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
