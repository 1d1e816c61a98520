"""Runs that continue after a restart: which sessions a reboot ended, and what starts them again at boot.

A job flagged ``noreturn`` (a reboot or power-off test) is journaled as such
when it starts; a session whose runner is gone while such a job ran ended as
planned (:func:`boot_sessions`). ``plainbox-like autoresume enable`` installs
what runs ``plainbox-like resume --autoresume`` for one repository at boot: a
systemd unit where systemd runs (a system unit for root, else a user unit),
else an ``@reboot`` line in the user's crontab, marked so that ``disable``
removes only ours. Nothing is installed without that command.

Everything that touches the machine goes through :class:`Boot`: the unit
directory, whether systemd runs and the ``systemctl`` and ``crontab``
commands, so that tests never touch the real ones.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Mapping, Sequence

import attrs

from plainbox_like.errors import AutoresumeError, PlainboxLikeError, one_line
from plainbox_like.run.settle import NORETURN_PREFIX
from plainbox_like.store.model import FLAG_INCOMPLETE, SessionState
from plainbox_like.store.paths import session_id_of
from plainbox_like.store.locks import held_flocks, writer_alive
from plainbox_like.store.reader import load_session
from plainbox_like.store.repository import SessionRepository

#: Where systemd keeps its runtime state: it runs if this is a directory (as ``sd_booted()`` checks).
SYSTEMD_RUNTIME = "/run/systemd/system"
#: Where a system unit goes (root); a user unit goes to ``$XDG_CONFIG_HOME/systemd/user``.
SYSTEM_UNIT_DIR = "/etc/systemd/system"
#: For testing: the directory units are written to instead of the standard one.
UNIT_DIR_ENV = "PLAINBOX_LIKE_SYSTEMD_UNIT_DIR"
#: For testing: the path whose existence says that systemd runs, instead of :data:`SYSTEMD_RUNTIME`.
SYSTEMD_RUNTIME_ENV = "PLAINBOX_LIKE_SYSTEMD_RUNTIME"
#: Our units are named ``<prefix><hash of the repository>.service``: one per repository.
UNIT_PREFIX = "plainbox-like-autoresume-"
#: The comment line of our units that names the repository.
UNIT_REPOSITORY_LINE = "# Repository: "
#: The comment that ends our crontab lines, followed by the repository's hash.
CRON_MARK = "# plainbox-like autoresume "
#: Seconds a ``systemctl`` or ``crontab`` command may take.
COMMAND_TIMEOUT = 60


def _line(text: str) -> str:
    return " ".join(text.split())


# -- which sessions continue ------------------------------------------------------------------------


def ended_on_noreturn(state: SessionState) -> str | None:
    """The noreturn job the session stopped on, or None.

    One journaled as noreturn that was still running when it stopped (the
    latest started); or, with nothing left running, the job whose attempt
    started last, if it was settled as a noreturn job (``cleanup`` ran before
    the boot did).
    """
    flagged = [(running.started, job_id) for job_id, running in state.running_jobs.items() if running.noreturn]
    if flagged or state.running_jobs:
        return max(flagged)[1] if flagged else None
    latest = [(a[-1].started or 0.0, job_id, a[-1]) for job_id, a in state.results.items() if a]
    if not latest:
        return None
    _started, job_id, attempt = max(latest, key=lambda item: (item[0], item[1]))
    return job_id if (attempt.comments or "").startswith(NORETURN_PREFIX) else None


@attrs.define
class BootSession:
    """An incomplete session of the repository, and whether ``resume --autoresume`` continues it."""

    path: str
    created: float
    #: The noreturn job it ended on (it continues), or None (it is left alone).
    noreturn_job: str | None
    #: Why it is left alone (None when it continues).
    why_not: str | None = None

    @property
    def id(self) -> str:
        return session_id_of(self.path)


def boot_sessions(repo: SessionRepository) -> list[BootSession]:
    """Every incomplete session of *repo*, in order of creation, each saying whether it ended on a noreturn job.

    A session continues when it is incomplete, no live runner holds it and it
    stopped on a noreturn job (:func:`ended_on_noreturn`). Sessions that
    cannot be read are listed as left alone, with the reason.
    """
    found = []
    held = held_flocks()
    for path in repo.session_paths():
        try:
            state = load_session(path).state
        except PlainboxLikeError as exc:
            found.append(BootSession(path, 0.0, None, f"cannot be read: {one_line(exc)}"))
            continue
        if FLAG_INCOMPLETE not in state.metadata.flags:
            continue
        created = state.metadata.created or 0.0
        job = ended_on_noreturn(state)
        if writer_alive(path, held):
            found.append(BootSession(path, created, None, "its runner is alive"))
        elif job is None:
            found.append(BootSession(path, created, None, "it did not stop on a noreturn job"))
        else:
            found.append(BootSession(path, created, job))
    return sorted(found, key=lambda s: (s.created, s.id))


# -- what starts it at boot -----------------------------------------------------------------------------


@attrs.define(frozen=True)
class Boot:
    """Where and how this machine starts things at boot (every part injectable for tests)."""

    #: Whether systemd runs.
    systemd: bool
    #: A system unit (root) rather than a user unit.
    system: bool
    #: The directory our unit goes to.
    unit_dir: str
    #: The ``systemctl`` command (with ``--user`` for a user unit).
    systemctl: tuple[str, ...] = ("systemctl",)
    #: The ``crontab`` command.
    crontab: tuple[str, ...] = ("crontab",)

    @classmethod
    def detect(cls, env: Mapping[str, str] | None = None, euid: int | None = None) -> Boot:
        """This machine's: systemd runs if ``/run/systemd/system`` is a directory; root gets a system unit.

        ``$PLAINBOX_LIKE_SYSTEMD_RUNTIME`` and ``$PLAINBOX_LIKE_SYSTEMD_UNIT_DIR``
        replace the standard paths (for testing); ``systemctl`` and ``crontab``
        are found on ``PATH``.
        """
        env = os.environ if env is None else env
        system = (os.geteuid() if euid is None else euid) == 0
        if env.get(UNIT_DIR_ENV):
            unit_dir = env[UNIT_DIR_ENV]
        elif system:
            unit_dir = SYSTEM_UNIT_DIR
        else:
            config = env.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
            unit_dir = os.path.join(config, "systemd", "user")
        return cls(
            systemd=os.path.isdir(env.get(SYSTEMD_RUNTIME_ENV) or SYSTEMD_RUNTIME),
            system=system,
            unit_dir=os.path.abspath(unit_dir),
            systemctl=("systemctl",) if system else ("systemctl", "--user"),
        )

    @property
    def unit_kind(self) -> str:
        return "system unit" if self.system else "user unit"


def repository_hash(root: str) -> str:
    """A short name for the repository at *root* (its absolute path hashed): units and cron lines carry it."""
    return hashlib.sha256(os.path.abspath(root).encode("utf-8", "surrogateescape")).hexdigest()[:16]


def unit_name(root: str) -> str:
    """The name of the unit that continues the sessions of the repository at *root*."""
    return f"{UNIT_PREFIX}{repository_hash(root)}.service"


def program_command() -> list[str]:
    """How to start this program again: the ``plainbox-like`` executable that runs, else ``python -m plainbox_like``."""
    argv0 = sys.argv[0] if sys.argv else ""
    if os.path.basename(argv0) == "plainbox-like" and os.path.isfile(argv0):
        return [os.path.abspath(argv0)]
    python = os.path.abspath(sys.executable) if sys.executable else shutil.which("python3") or "/usr/bin/python3"
    return [python, "-m", "plainbox_like"]


def _package_path() -> str | None:
    """The directory to put on ``PYTHONPATH`` for ``python -m plainbox_like``: the one holding this package,
    unless that is where the Python installs packages (a source tree run with ``PYTHONPATH`` needs it at boot)."""
    parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    installed = {os.path.abspath(sysconfig.get_paths()[key]) for key in ("purelib", "platlib")}
    return None if parent in installed else parent


def boot_command(root: str, program: Sequence[str] | None = None) -> list[str]:
    """The command line run at boot for the repository at *root*."""
    return [*(program or program_command()), "--repository", os.path.abspath(root), "resume", "--autoresume"]


def _check_path(root: str) -> str:
    root = os.path.abspath(root)
    if any(ord(c) < 32 or c == "\x7f" for c in root):
        raise PlainboxLikeError(f"{root!r}: a repository path with control characters cannot go into a unit or a crontab")
    return root


def _systemd_quote(word: str) -> str:
    """*word* as one argument of a unit's ``ExecStart=`` (specifiers and variables escaped)."""
    escaped = word.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$")
    plain = escaped == word and word and not any(c.isspace() or c in "'\";" for c in word)
    return word if plain else f'"{escaped}"'


def unit_text(root: str, system: bool, program: Sequence[str] | None = None) -> str:
    """The unit that runs ``resume --autoresume`` for the repository at *root* once the machine is up."""
    root = _check_path(root)
    command = boot_command(root, program)
    lines = [
        "# Installed by 'plainbox-like autoresume enable'; 'plainbox-like autoresume disable' removes it.",
        f"{UNIT_REPOSITORY_LINE}{root}",
        "[Unit]",
        "Description=Continue the plainbox-like sessions that a restart ended",
    ]
    if system:
        lines += ["Wants=network-online.target", "After=network-online.target"]
    lines += ["", "[Service]", "Type=simple", "ExecStart=" + " ".join(_systemd_quote(w) for w in command)]
    if program is None and command[1:2] == ["-m"]:
        path = _package_path()
        if path is not None:
            lines.append("Environment=" + _systemd_quote(f"PYTHONPATH={path}"))
    lines += ["", "[Install]", f"WantedBy={'multi-user.target' if system else 'default.target'}", ""]
    return "\n".join(lines)


def cron_line(root: str, program: Sequence[str] | None = None) -> str:
    """The ``@reboot`` crontab line for the repository at *root*, marked as ours."""
    root = _check_path(root)
    command = " ".join(shlex.quote(w) for w in boot_command(root, program)).replace("%", "\\%")
    if program is None and boot_command(root)[1:2] == ["-m"]:
        path = _package_path()
        if path is not None:
            command = f"PYTHONPATH={shlex.quote(path)} {command}".replace("%", "\\%")
    return f"@reboot {command} {CRON_MARK}{repository_hash(root)}"


def _run(command: Sequence[str], stdin: str | None = None, ok_codes: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess:
    try:
        done = subprocess.run(
            list(command), input=stdin, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AutoresumeError(f"{' '.join(command)}: {one_line(exc)}") from None
    if done.returncode not in ok_codes:
        detail = _line(done.stderr or done.stdout) or f"exit status {done.returncode}"
        raise AutoresumeError(f"{' '.join(command)} failed: {detail}")
    return done


def _has_command(command: Sequence[str]) -> bool:
    return shutil.which(command[0]) is not None


def _read_crontab(boot: Boot) -> list[str] | None:
    """The user's crontab lines ([] when there is none), or None when there is no ``crontab`` command."""
    if not _has_command(boot.crontab):
        return None
    done = _run([*boot.crontab, "-l"], ok_codes=(0, 1))
    if done.returncode == 1:
        if "no crontab" in done.stderr.lower():
            return []
        raise AutoresumeError(f"{' '.join(boot.crontab)} -l failed: {_line(done.stderr) or 'exit status 1'}")
    return done.stdout.splitlines()


def _write_crontab(boot: Boot, lines: list[str]) -> None:
    _run([*boot.crontab, "-"], stdin="".join(f"{line}\n" for line in lines))


def _is_ours(line: str, root: str | None = None) -> bool:
    if root is None:
        head, sep, tail = line.rpartition(CRON_MARK)
        return bool(sep) and len(tail) == 16 and all(c in "0123456789abcdef" for c in tail)
    return line.endswith(f"{CRON_MARK}{repository_hash(root)}")


@attrs.define
class Installed:
    """One thing autoresume installed: a unit or a crontab line, for one repository."""

    #: "systemd system unit", "systemd user unit" or "crontab".
    kind: str
    #: The unit file, or "crontab" with the line.
    where: str
    repository: str | None
    #: For a unit: what ``systemctl is-enabled`` says (None if not asked).
    state: str | None = None


def _unit_repository(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(UNIT_REPOSITORY_LINE):
                    return line[len(UNIT_REPOSITORY_LINE):].rstrip("\n")
    except OSError:
        return None
    return None


def _cron_repository(line: str) -> str | None:
    try:
        words = shlex.split(line.replace("\\%", "%"), comments=True)
    except ValueError:
        return None
    if "--repository" in words[:-1]:
        return words[words.index("--repository") + 1]
    return None


def status(boot: Boot, problems: list[str] | None = None) -> list[Installed]:
    """Everything autoresume installed that this user can see: our units in the unit directory, our cron lines.

    A ``crontab -l`` that fails is told in *problems* (the units are still
    listed), or raised as :class:`AutoresumeError` without it.
    """
    found = []
    try:
        names = sorted(n for n in os.listdir(boot.unit_dir) if n.startswith(UNIT_PREFIX) and n.endswith(".service"))
    except OSError:
        names = []
    for name in names:
        path = os.path.join(boot.unit_dir, name)
        state = None
        if boot.systemd and _has_command(boot.systemctl):
            try:
                state = _run([*boot.systemctl, "is-enabled", name], ok_codes=tuple(range(256))).stdout.strip() or None
            except AutoresumeError as exc:
                if problems is None:
                    raise
                problems.append(str(exc))
        found.append(Installed(f"systemd {boot.unit_kind}", path, _unit_repository(path), state))
    try:
        lines = _read_crontab(boot) or []
    except AutoresumeError as exc:
        if problems is None:
            raise
        problems.append(str(exc))
        lines = []
    for line in lines:
        if _is_ours(line):
            found.append(Installed("crontab", line, _cron_repository(line)))
    return found


def enable(root: str, boot: Boot, program: Sequence[str] | None = None) -> list[str]:
    """Install what runs ``resume --autoresume`` for *root* at boot; returns what was done, one line each.

    A unit where systemd runs (``daemon-reload``, then ``enable``), else an
    ``@reboot`` crontab line (replacing ours for *root*, if any).
    """
    root = _check_path(root)
    done = []
    if boot.systemd:
        if not _has_command(boot.systemctl):
            raise AutoresumeError(f"systemd runs but there is no {boot.systemctl[0]} command on PATH")
        name = unit_name(root)
        path = os.path.join(boot.unit_dir, name)
        try:
            os.makedirs(boot.unit_dir, exist_ok=True)
            temporary = f"{path}.tmp{os.getpid()}"
            with open(temporary, "w", encoding="utf-8") as f:
                f.write(unit_text(root, boot.system, program))
            os.chmod(temporary, 0o644)
            os.replace(temporary, path)
        except OSError as exc:
            raise AutoresumeError(f"{path}: cannot write the unit: {exc.strerror or exc}") from None
        done.append(f"wrote the systemd {boot.unit_kind} {path}")
        _run([*boot.systemctl, "daemon-reload"])
        _run([*boot.systemctl, "enable", name])
        done.append(f"enabled it: {' '.join(boot.systemctl)} enable {name}")
        return done
    lines = _read_crontab(boot)
    if lines is None:
        raise AutoresumeError(
            f"nothing can start runs at boot: systemd does not run ({SYSTEMD_RUNTIME} is missing) "
            f"and there is no {boot.crontab[0]} command on PATH"
        )
    line = cron_line(root, program)
    _write_crontab(boot, [kept for kept in lines if not _is_ours(kept, root)] + [line])
    done.append(f"added to the crontab: {line}")
    return done


def disable(root: str, boot: Boot) -> list[str]:
    """Remove what :func:`enable` installed for *root* (its unit, its crontab line); returns what was done."""
    root = os.path.abspath(root)
    done = []
    name = unit_name(root)
    path = os.path.join(boot.unit_dir, name)
    if os.path.lexists(path):
        if boot.systemd and _has_command(boot.systemctl):
            _run([*boot.systemctl, "disable", name])
            done.append(f"disabled it: {' '.join(boot.systemctl)} disable {name}")
        try:
            os.unlink(path)
        except OSError as exc:
            raise AutoresumeError(f"{path}: cannot remove the unit: {exc.strerror or exc}") from None
        done.insert(0, f"removed the systemd {boot.unit_kind} {path}")
        if boot.systemd and _has_command(boot.systemctl):
            _run([*boot.systemctl, "daemon-reload"])
    lines = _read_crontab(boot)
    if lines and any(_is_ours(line, root) for line in lines):
        _write_crontab(boot, [line for line in lines if not _is_ours(line, root)])
        done.append("removed its line from the crontab")
    return done


def enabled_for(root: str, boot: Boot) -> bool:
    """Whether something autoresume installed continues the sessions of *root* at boot."""
    root = os.path.abspath(root)
    return any(item.repository == root for item in status(boot, problems=[]))
