"""Loading units: files, directories, providers and ``-c`` commands into one :class:`UnitSet`.

:func:`load_units` decides what each input is (a provider, a tree of ``.pxu`` files, a unit file, a
plain command list), gives unit ids their provider's namespace, reports a unit defined twice, and
resolves ``depends``/``after``/``before`` targets written with or without a namespace. Plain command
lists (any text file not recognised as unit records) hold one shell command per non-empty line;
``#`` lines are comments. Parsing one file is :mod:`plainbox_like.define.pxu`'s job.
"""

from __future__ import annotations

import ast
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import attrs

from plainbox_like.errors import UnitError
from plainbox_like.define.pxu import Notice, merge_notices, parse_with_notices
from plainbox_like.define.records import looks_like_units
from plainbox_like.define.units import JobDefinition, ManifestEntry, Origin, Template, TestPlan, UnitSet

if TYPE_CHECKING:
    from plainbox_like.define.providers import Provider

__all__ = [
    "load_units",
    "parse_command_list",
    "jobs_from_commands",
    "provider_namespace",
    "COMMAND_LINE_PATH",
    "PROVIDER_UNIT_SUFFIXES",
]

#: ``Origin.path`` of jobs made by :func:`jobs_from_commands` (``-c CMD`` options).
COMMAND_LINE_PATH = "<command line>"


def _read_text(path: str) -> str:
    """Read a whole file as UTF-8 text, turning every problem into a one-line UnitError."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        raise UnitError(path, "no such file or directory") from None
    except PermissionError:
        raise UnitError(path, "cannot read file: permission denied") from None
    except IsADirectoryError:
        raise UnitError(path, "is a directory") from None
    except OSError as exc:
        raise UnitError(path, f"cannot read file: {exc.strerror or exc}") from None
    nul = data.find(b"\0")
    if nul >= 0:
        line = data.count(b"\n", 0, nul) + 1
        raise UnitError(path, "binary file (contains a NUL byte)", line=line)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UnitError(
            path, "not UTF-8 text (binary file?)", line=data.count(b"\n", 0, exc.start) + 1
        ) from None
    if text.startswith("\ufeff"):
        text = text[1:]
    return text


def parse_command_list(text: str, path: str, first_number: int = 1) -> list[JobDefinition]:
    """Jobs from a plain command list: one shell command per non-empty, non-``#`` line.

    Jobs get ids ``cmd-<n>`` numbered from ``first_number`` and the command as
    summary; their origin is the command's line.
    """
    jobs: list[JobDefinition] = []
    for number, line in enumerate(text.split("\n"), start=1):
        command = line.strip()
        if not command or command.startswith("#"):
            continue
        jobs.append(
            JobDefinition(
                id=f"cmd-{first_number + len(jobs)}",
                command=command,
                summary=command,
                origin=Origin(path, number),
            )
        )
    return jobs


def jobs_from_commands(commands: Sequence[str]) -> list[JobDefinition]:
    """Jobs for ``-c CMD`` options: ids ``c1``, ``c2``, ... in the order given.

    Their origin is ``Origin(COMMAND_LINE_PATH, n)``; an empty command is an error.
    """
    jobs: list[JobDefinition] = []
    for number, command in enumerate(commands, start=1):
        if not command.strip():
            raise UnitError(COMMAND_LINE_PATH, f"command {number} (-c) is empty")
        jobs.append(
            JobDefinition(
                id=f"c{number}",
                command=command,
                summary=command,
                origin=Origin(COMMAND_LINE_PATH, number),
            )
        )
    return jobs


#: File name endings Checkbox reads units from in a provider's ``units``/``jobs`` directory.
PROVIDER_UNIT_SUFFIXES = (".pxu", ".txt", ".txt.in", ".in")


def _unit_files(directory: str, suffixes: tuple[str, ...] = (".pxu",), warnings: list[str] | None = None) -> list[str]:
    """Every regular file ending in one of *suffixes* under ``directory`` (recursively, not following
    symlinked directories), sorted by their path relative to it.

    Anything else with such a name (a FIFO, a device, a socket, a dangling link) is
    not opened, which could block forever: it is named in *warnings* and skipped.
    """
    found: list[tuple[tuple[str, ...], str]] = []
    for root, dirs, files in os.walk(directory):
        dirs.sort()
        rel = os.path.relpath(root, directory)
        parts = () if rel == "." else tuple(rel.split(os.sep))
        for name in files:
            if name.endswith(suffixes):
                path = os.path.join(root, name)
                if not os.path.isfile(path):
                    if warnings is not None:
                        warnings.append(f"{path}: not a regular file: skipped")
                    continue
                found.append((parts + (name,), path))
    found.sort()
    return [path for _, path in found]


_NAMESPACE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def _provider_file_namespace(path: str) -> str | None:
    import configparser  # only for providers with a .provider file

    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError, OSError):
        return None
    for section in parser.sections():
        namespace = parser.get(section, "namespace", fallback=None)
        name = parser.get(section, "name", fallback=None)
        if namespace:
            return namespace.strip()
        if name and ":" in name:
            return name.split(":", 1)[0].strip()
    return None


def _manage_py_namespace(path: str) -> str | None:
    """``namespace=`` (or the part of ``name=`` before ``:``) of the ``setup(...)`` call, read with ast."""
    try:
        tree = ast.parse(_read_text(path), path)
    except (SyntaxError, ValueError, UnitError):
        return None
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "setup"):
            continue
        values = {
            kw.arg: kw.value.value
            for kw in node.keywords
            if kw.arg and isinstance(kw.value, ast.Constant) and isinstance(kw.value.value, str)
        }
        if values.get("namespace"):
            return values["namespace"]
        if ":" in values.get("name", ""):
            return values["name"].split(":", 1)[0]
    return None


def provider_namespace(path: str, levels: int = 3, cache: dict[str, str | None] | None = None) -> str | None:
    """The namespace of the provider a unit file belongs to, or None.

    Looked for in the file's directory and up to *levels* - 1 parents: a
    ``.provider`` file (INI; its ``namespace`` key, or the part of its ``name``
    key before ``:``), else a ``manage.py`` whose ``setup(...)`` call has a
    ``namespace=`` argument (or ``name="namespace:provider"``). ``manage.py``
    is parsed, never run. *cache* (directory -> what that directory itself
    says) saves looking at a directory again for the other files of a load.
    """
    cache = {} if cache is None else cache
    directory = os.path.dirname(os.path.abspath(path))
    for _ in range(levels):
        if directory not in cache:
            cache[directory] = _directory_namespace(directory)
        if cache[directory]:
            return cache[directory]
        parent = os.path.dirname(directory)
        if parent == directory:
            break
        directory = parent
    return None


def _directory_namespace(directory: str) -> str | None:
    """The namespace a ``.provider`` file or ``manage.py`` in *directory* itself names, or None."""
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return None
    namespace = None
    for name in names:
        if name.endswith(".provider") and os.path.isfile(os.path.join(directory, name)):
            namespace = _provider_file_namespace(os.path.join(directory, name))
            if namespace:
                break
    if not namespace and "manage.py" in names:
        namespace = _manage_py_namespace(os.path.join(directory, "manage.py"))
    return namespace if namespace and _NAMESPACE.fullmatch(namespace) else None


def _resolve_references(jobs: list[JobDefinition], left_out: Iterable[str] = ()) -> list[JobDefinition]:
    """Write ``depends``/``after``/``before`` targets as the full ids they refer to, with or without namespace.

    A target that is a job id stays; otherwise ``<referrer's namespace>::target``, then for
    ``ns::name`` the bare ``name``, then the only job ``<any namespace>::target``. Ids of jobs
    *left_out* count as ids (so a job needing one names it). Targets that resolve to nothing
    stay as written (and are reported as unknown when planned).
    """
    ids = {job.id for job in jobs} | set(left_out)
    if not any("::" in job_id for job_id in ids) and not any(
        "::" in dep for job in jobs for dep in job.depends + job.after + job.before + job.salvages
    ):
        return jobs
    bare: dict[str, list[str]] = {}
    for job_id in ids:
        if "::" in job_id:
            bare.setdefault(job_id.split("::", 1)[1], []).append(job_id)

    def resolve(target: str, namespace: str | None) -> str:
        if target in ids:
            return target
        if namespace and "::" not in target and f"{namespace}::{target}" in ids:
            return f"{namespace}::{target}"
        name = target.split("::", 1)[1] if "::" in target else target
        if name in ids:
            return name
        found = bare.get(name, [])
        return found[0] if len(found) == 1 else target

    out = []
    for job in jobs:
        if job.depends or job.after or job.before or job.salvages:
            namespace = job.id.split("::", 1)[0] if "::" in job.id else None
            depends = tuple(dict.fromkeys(resolve(d, namespace) for d in job.depends))
            after = tuple(dict.fromkeys(resolve(d, namespace) for d in job.after))
            before = tuple(dict.fromkeys(resolve(d, namespace) for d in job.before))
            salvages = tuple(dict.fromkeys(resolve(d, namespace) for d in job.salvages))
            if (depends, after, before, salvages) != (job.depends, job.after, job.before, job.salvages):
                job = attrs.evolve(job, depends=depends, after=after, before=before, salvages=salvages)
        out.append(job)
    return out


def load_units(
    paths: Sequence[str | os.PathLike[str]],
    commands: Sequence[str] = (),
    namespace: str | None = None,
    providers: Sequence[Provider] = (),
    checkbox_env: Mapping[str, str] | None = None,
) -> UnitSet:
    """Load jobs and test plans from providers, files and directories, in the order given.

    * each of *providers* (:func:`plainbox_like.define.providers.find_providers`)
      contributes the unit files (``.pxu``, ``.txt``, ``.txt.in``, ``.in``, as
      Checkbox reads them) of its ``units`` and ``jobs`` directories, in its
      namespace; they come first;
    * a directory that is a provider source tree (a ``manage.py`` whose
      ``setup(...)`` names the provider) is loaded as that provider;
    * any other directory contributes every ``*.pxu`` file under it,
      recursively, sorted by relative path; a file there that is not a regular
      file (a FIFO ...) is skipped with a warning;
    * a file ending in ``.pxu``, or whose content looks like unit records, is
      parsed with :func:`parse_pxu`;
    * any other text file is a command list: each command becomes job
      ``cmd-<n>``, where n counts command-list jobs across the whole load
      (1-based, in load order), so the ids are stable for the same inputs;
    * ``commands`` (``-c`` options) are appended as jobs ``c1``, ``c2``, ...
    * jobs and test plans of unit files get a namespace (``ns::id``) unless
      their id has one: *namespace* if given, else the one of the provider
      the file belongs to (:func:`provider_namespace`), else none;
    * ``depends``/``after``/``before`` targets are then resolved with or without their
      namespace (see :func:`_resolve_references`);
    * units with ``template-engine: jinja2`` that are not templates are rendered with
      :func:`jinja_context`, *checkbox_env* being ``__checkbox_env__``.

    A unit that cannot be used is left out with a warning naming its file and
    line (ids of such jobs are kept in :attr:`UnitSet.dropped`); so is a
    second unit with an id already loaded (the warning names both places). A
    file named in *paths* that cannot be read is an error; one found in a
    directory is skipped with a warning. Warnings about unsupported things come
    last, each kind once for the whole load.
    """
    from plainbox_like.define.providers import read_source_tree

    jobs: list[JobDefinition] = []
    plans: list[TestPlan] = []
    templates: list[Template] = []
    entries: list[ManifestEntry] = []
    warnings: list[str] = []
    dropped: dict[str, str] = {}
    notices: dict[tuple[str, ...], Notice] = {}
    job_origin: dict[str, Origin | None] = {}
    plan_origin: dict[str, Origin | None] = {}
    command_jobs = 0
    provider_cache: dict[str, str | None] = {}

    def parse(text: str, path: str, file_namespace: str | None = None) -> UnitSet:
        ns = namespace or file_namespace or provider_namespace(path, cache=provider_cache)
        units, found = parse_with_notices(text, path, ns, checkbox_env)
        merge_notices(notices, found)
        return units

    def add(units: UnitSet) -> None:
        for job in units.jobs:
            if _is_new(job_origin, job.id, job.origin, "job", warnings):
                jobs.append(job)
        for plan in units.test_plans:
            if _is_new(plan_origin, plan.id, plan.origin, "test plan", warnings):
                plans.append(plan)
        templates.extend(units.templates)
        entries.extend(units.manifest_entries)
        warnings.extend(units.warnings)
        for job_id, why in units.dropped.items():
            dropped.setdefault(job_id, why)

    def add_tree(directory: str, suffixes: tuple[str, ...], file_namespace: str | None) -> None:
        for file in _unit_files(directory, suffixes, warnings):
            try:
                text = _read_text(file)
            except UnitError as exc:
                warnings.append(f"{exc}: file skipped")
                continue
            add(parse(text, file, file_namespace))

    def add_provider(provider: Provider) -> None:
        for directory in provider.units_dirs:
            add_tree(directory, PROVIDER_UNIT_SUFFIXES, provider.namespace)
            for path in _unit_files(directory, (".yaml", ".yml")):  # newer Checkbox reads these; 1.18 does not
                message = "YAML unit files are not read: skipped"
                merge_notices(notices, {("yaml",): Notice(message, Origin(path, 1), "file", paths={path})})

    for provider in providers:
        add_provider(provider)
    for entry in paths:
        path = os.fspath(entry)
        if os.path.isdir(path):
            tree = read_source_tree(path)
            if tree is not None and tree.units_dirs:
                add_provider(tree)
                continue
            before = len(jobs) + len(plans) + len(templates) + len(warnings)
            add_tree(path, (".pxu",), None)
            if before == len(jobs) + len(plans) + len(templates) + len(warnings):
                warnings.append(f"{path}: directory contains no .pxu files")
            continue
        if os.path.exists(path) and not os.path.isfile(path):
            raise UnitError(path, "not a regular file or directory")
        text = _read_text(path)
        if path.endswith(".pxu") or looks_like_units(text):
            add(parse(text, path))
        else:
            listed = parse_command_list(text, path, first_number=command_jobs + 1)
            command_jobs += len(listed)
            add(UnitSet(jobs=listed))
    add(UnitSet(jobs=jobs_from_commands(commands)))
    warnings.extend(str(notice) for notice in notices.values())
    left_out = {job_id: why for job_id, why in dropped.items() if job_id not in job_origin}
    return UnitSet(
        jobs=_resolve_references(jobs, left_out),
        test_plans=plans,
        warnings=warnings,
        templates=templates,
        dropped=left_out,
        manifest_entries=entries,
    )


def _is_new(
    seen: dict[str, Origin | None], unit_id: str, origin: Origin | None, what: str, warnings: list[str]
) -> bool:
    """Whether *unit_id* is met for the first time; a second one is named in *warnings* (both places) and left out."""
    if unit_id not in seen:
        seen[unit_id] = origin
        return True
    first = seen[unit_id]
    where = str(first) if first else "elsewhere"
    place = str(origin) if origin else "<unknown>"
    warnings.append(f"{place}: duplicate {what} id {unit_id!r} (first defined at {where}): left out")
    return False
