"""Where and with what environment a job runs, the way Checkbox runs it.

Checkbox gives each job the variables of the provider that defines it
(``PLAINBOX_PROVIDER_DATA``, ``PLAINBOX_PROVIDER_UNITS``, ``CHECKBOX_SHARE``,
the gettext domain and locale directory), puts the ``bin/`` directory of every
provider that shares the job's namespace on ``PATH`` (in the order the
providers were found, the first of a name winning), and runs the command in a
fresh temporary working directory that is removed afterwards; files left there
are reported (here: listed in the attempt's ``leftover_files``) unless the job
has the ``has-leftovers`` flag. ``preserve-cwd`` runs it in the runner's own
directory instead; ``reset-locale`` gives it ``LANG=C.UTF-8`` without any
``LANGUAGE`` or ``LC_*``, and otherwise (``preserve-locale`` included) the
locale is left as it is.

A provider is found from the file a job was defined in: its directory or one
of its parents holds a ``.provider`` file (what ``manage.py develop`` writes)
or a ``manage.py`` whose ``setup(...)`` call names it (read with :mod:`ast`,
never run). Jobs from files outside any provider get none of this but the
temporary directory.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterable, Mapping

from plainbox_like.define.providers import Provider, read_provider_file, read_source_tree
from plainbox_like.define.units import JobDefinition
from plainbox_like.run import workdir
from plainbox_like.run.workdir import TempCwd

#: Directory levels looked at above a unit file for its provider (units/sub/file.pxu).
PROVIDER_LEVELS = 3
FLAG_PRESERVE_CWD = "preserve-cwd"
FLAG_HAS_LEFTOVERS = "has-leftovers"
FLAG_RESET_LOCALE = "reset-locale"
CWD_PREFIX = "plainbox-like-cwd-"


def provider_in(directory: str) -> Provider | None:
    """The provider *directory* itself defines (a ``.provider`` file naming it as its location, else
    ``manage.py``), or None (*directory* is absolute)."""
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return None
    for name in names:
        if name.endswith(".provider") and os.path.isfile(os.path.join(directory, name)):
            try:
                provider = read_provider_file(os.path.join(directory, name))
            except ValueError:
                continue
            if provider.base_dir and os.path.abspath(provider.base_dir) == directory:
                return provider
    return read_source_tree(directory) if "manage.py" in names else None


class ProviderIndex:
    """Finds the provider of each job (from its file) and remembers the providers in the order met."""

    def __init__(self, providers: Iterable[Provider] = ()) -> None:
        self._by_dir: dict[str, Provider | None] = {}
        self._by_path: dict[str, Provider | None] = {}  # answers of of_path, until another provider is met
        self.providers: list[Provider] = []
        for provider in providers:
            self._remember(provider)

    def _remember(self, provider: Provider) -> None:
        if provider not in self.providers:
            self.providers.append(provider)
            self._by_path.clear()

    def of_path(self, path: str) -> Provider | None:
        """The provider a unit file belongs to (one given whose units it holds, else one found above it), or None."""
        try:
            return self._by_path[path]
        except KeyError:
            found = self._by_path[path] = self._find(path)
            return found

    def _find(self, path: str) -> Provider | None:
        path = os.path.abspath(path)
        for provider in self.providers:
            for units in provider.units_dirs:
                if path.startswith(units.rstrip(os.sep) + os.sep):
                    return provider
        directory = os.path.dirname(path)
        for _ in range(PROVIDER_LEVELS):
            if directory not in self._by_dir:
                self._by_dir[directory] = provider_in(directory)
            found = self._by_dir[directory]
            if found is not None:
                self._remember(found)
                return found
            parent = os.path.dirname(directory)
            if parent == directory:
                break
            directory = parent
        return None

    def of_job(self, job: JobDefinition) -> Provider | None:
        """The provider that defines *job* (None for jobs from the command line or plain files)."""
        if job.origin is None or job.origin.path.startswith("<"):
            return None
        return self.of_path(job.origin.path)

    def learn(self, jobs: Iterable[JobDefinition]) -> None:
        """Meet the providers of *jobs* now, so that ``PATH`` has them in the order of the jobs."""
        for job in jobs:
            self.of_job(job)

    def bin_dirs(self, namespace: str) -> list[str]:
        """The ``bin/`` directories of every provider of *namespace*, in the order the providers were met."""
        return [p.bin_dir for p in self.providers if p.namespace == namespace and p.bin_dir]


def job_env(
    base: Mapping[str, str],
    job: JobDefinition,
    provider: Provider | None,
    bin_dirs: Iterable[str],
    launcher_env: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Checkbox's variables for *job* on top of *base* (the session's own are added by the caller).

    ``launcher_env`` (a launcher's ``[environment]``) only fills variables
    *base* does not have, as in Checkbox.
    """
    env = dict(base)
    if FLAG_RESET_LOCALE in job.flags:
        env["LANG"] = "C.UTF-8"
        env.pop("LANGUAGE", None)
        for name in [n for n in env if n.startswith("LC_")]:
            del env[name]
    elif provider is not None:
        if provider.gettext_domain:
            env["TEXTDOMAIN"] = env["PLAINBOX_PROVIDER_GETTEXT_DOMAIN"] = provider.gettext_domain
        if provider.locale_dir:
            env["TEXTDOMAINDIR"] = env["PLAINBOX_PROVIDER_LOCALE_DIR"] = provider.locale_dir
    dirs = list(bin_dirs)
    if dirs:
        env["PATH"] = os.pathsep.join([*dirs, env.get("PATH", "")])
    if provider is not None:
        for name, value in (
            ("PLAINBOX_PROVIDER_DATA", provider.data_dir),
            ("PLAINBOX_PROVIDER_UNITS", provider.units_dir),
            ("CHECKBOX_SHARE", provider.base_dir),
        ):
            if value is not None:
                env[name] = value
    for name, value in (launcher_env or {}).items():
        env.setdefault(name, value)
    return env


def _cwd_prefix(session_id: str, job_id: str, attempt: int) -> str:
    digest = hashlib.sha256(job_id.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{CWD_PREFIX}{session_id}-{digest}-{attempt}-"


def temp_cwd(job: JobDefinition, session_id: str = "", attempt: int = 0, shared: bool = False) -> TempCwd | None:
    """The temporary working directory *job* gets, or None if it keeps the runner's (``preserve-cwd``).

    Its name says which session, job and attempt it is for, so that the
    directory of a job whose runner died can be found and removed
    (:func:`remove_stale_cwds`). *shared*: the job runs as another user, who
    writes there too (as in Checkbox).
    """
    if FLAG_PRESERVE_CWD in job.flags:
        return None
    return TempCwd(
        _cwd_prefix(session_id, job.id, attempt),
        list_leftovers=FLAG_HAS_LEFTOVERS not in job.flags,
        mode=0o777 if shared else None,
    )


def make_cwd(job: JobDefinition, session_id: str = "", attempt: int = 0) -> str | None:
    """Create the directory of :func:`temp_cwd` now (for a job run outside an executor); None for ``preserve-cwd``."""
    spec = temp_cwd(job, session_id, attempt)
    return None if spec is None else workdir.make(spec)


def remove_stale_cwds(session_id: str, job_id: str, attempt: int) -> None:
    """Remove the temporary working directories a dead runner left for this attempt (in today's ``$TMPDIR``)."""
    root = workdir.temp_root()
    prefix = _cwd_prefix(session_id, job_id, attempt)
    try:
        names = [name for name in os.listdir(root) if name.startswith(prefix)]
    except OSError:
        return
    for name in names:
        shutil.rmtree(os.path.join(root, name), ignore_errors=True)


def remove_empty_cwds(session_id: str) -> None:
    """Remove the empty temporary working directories a dead runner of *session_id* left (in ``$TMPDIR``).

    A runner removes a finished job's empty directory while the next job runs, so one killed just then
    leaves it behind: it holds nothing, and with the runner dead nothing will use it again. Directories
    that hold something are left to :func:`remove_stale_cwds` (the running job's) or to the user.
    """
    root = workdir.temp_root()
    prefix = f"{CWD_PREFIX}{session_id}-"
    try:
        names = [name for name in os.listdir(root) if name.startswith(prefix)]
    except OSError:
        return
    for name in names:
        try:
            os.rmdir(os.path.join(root, name))
        except OSError:
            pass  # not empty, or not ours


def collect_leftovers(cwd: str | None, job: JobDefinition) -> list[str]:
    """Remove *cwd* (from :func:`make_cwd`); what the job left in it unless it has ``has-leftovers``."""
    if cwd is None:
        return []
    return workdir.remove(cwd, FLAG_HAS_LEFTOVERS not in job.flags)
