"""Finding Checkbox providers: where their units, scripts and data are.

A provider is a directory laid out as Checkbox lays it out (``units/`` and
the older ``jobs/`` with unit files, ``bin/`` with the scripts its jobs call,
``data/``, ``locale/``), known either by a ``.provider`` file (INI, section
``[PlainBox Provider]``, as ``manage.py develop -d DIR`` and package installs
write them) or, for a source tree, by its ``manage.py`` (whose ``setup(...)``
call is read, never run).

Where they are looked for, as Checkbox looks:

* ``--providers DIR`` options: DIR holds ``.provider`` files, or is itself a
  provider source tree (with ``manage.py``);
* the directories of the ``PROVIDERPATH`` variable (``:``-separated), which
  replace the standard ones when it is set;
* otherwise ``/usr/local/share/plainbox-providers-1``,
  ``/usr/share/plainbox-providers-1``,
  ``$XDG_DATA_HOME/plainbox-providers-1`` (default
  ``~/.local/share/plainbox-providers-1``) and
  ``/var/tmp/checkbox-providers-develop``.

Order (Checkbox's): the providers of all ``.provider`` files sorted by the
file's path; source trees given as ``--providers`` come first, in the order
given. Two definitions of one provider (same ``namespace:name``): the first
is kept and the other named in a warning.
"""

from __future__ import annotations

import ast
import os
import re
from collections.abc import Mapping, Sequence

import attrs

from plainbox_like.define.units import as_tuple

__all__ = [
    "Provider",
    "find_providers",
    "provider_refs",
    "provider_search_path",
    "read_provider_file",
    "read_source_tree",
    "PROVIDER_SECTION",
    "STANDARD_PROVIDER_DIRS",
]

#: The section of a ``.provider`` file.
PROVIDER_SECTION = "PlainBox Provider"
#: System-wide provider directories, searched before the user's (as Checkbox does).
STANDARD_PROVIDER_DIRS = ("/usr/local/share/plainbox-providers-1", "/usr/share/plainbox-providers-1")
#: Where ``manage.py develop`` writes ``.provider`` files by default (searched last).
DEVELOP_PROVIDER_DIR = "/var/tmp/checkbox-providers-develop"
_NAMESPACE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def provider_refs(providers: Sequence["Provider"]) -> list[str]:
    """What :func:`find_providers` needs to find *providers* again: each one's ``.provider`` file or source tree."""
    return [
        p.base_dir if p.definition and os.path.basename(p.definition) == "manage.py" and p.base_dir else p.definition or ""
        for p in providers
    ]


@attrs.frozen
class Provider:
    """One provider found: who it is and where its parts are (None: it has no such directory).

    ``units_dirs`` are the directories whose unit files belong to it (``units``
    then ``jobs``, those that exist); ``definition`` is the ``.provider`` file or
    ``manage.py`` it was found by.
    """

    name: str
    namespace: str
    base_dir: str | None
    bin_dir: str | None = None
    data_dir: str | None = None
    units_dirs: tuple[str, ...] = attrs.field(default=(), converter=as_tuple)
    locale_dir: str | None = None
    gettext_domain: str | None = None
    version: str | None = None
    definition: str | None = None

    @property
    def units_dir(self) -> str | None:
        """The first directory of unit files (None if it has none)."""
        return self.units_dirs[0] if self.units_dirs else None

    @property
    def full_name(self) -> str:
        """``namespace:name``, unless the name already has a namespace."""
        return self.name if ":" in self.name else f"{self.namespace}:{self.name}"


def provider_search_path(environ: Mapping[str, str] | None = None) -> list[str]:
    """The directories searched for ``.provider`` files: ``PROVIDERPATH``'s, or the standard ones."""
    environ = os.environ if environ is None else environ
    value = environ.get("PROVIDERPATH")
    if value is not None:
        return [entry for entry in value.split(os.pathsep) if entry]
    data_home = environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return [*STANDARD_PROVIDER_DIRS, os.path.join(data_home, "plainbox-providers-1"), DEVELOP_PROVIDER_DIR]


def _existing_dir(path: str | None) -> str | None:
    return path if path and os.path.isdir(path) else None


def _layout(
    name: str,
    namespace: str | None,
    location: str | None,
    given: Mapping[str, str],
    definition: str,
) -> Provider:
    """A provider whose directories not *given* explicitly are the usual ones under *location*, where they exist."""

    def directory(key: str, default: str) -> str | None:
        if given.get(key):
            return given[key]
        return _existing_dir(os.path.join(location, default)) if location else None

    if not namespace:
        namespace = name.split(":", 1)[0] if ":" in name else name
    units = [d for d in (directory("units_dir", "units"), directory("jobs_dir", "jobs")) if d]
    locale = directory("locale_dir", "locale") or (
        _existing_dir(os.path.join(location, "build", "mo")) if location else None
    )
    return Provider(
        name=name,
        namespace=namespace,
        base_dir=location,
        bin_dir=directory("bin_dir", "bin"),
        data_dir=directory("data_dir", "data"),
        units_dirs=tuple(dict.fromkeys(units)),
        locale_dir=locale,
        gettext_domain=given.get("gettext_domain") or None,
        version=given.get("version") or None,
        definition=definition,
    )


def read_provider_file(path: str) -> Provider:
    """The provider a ``.provider`` file defines; ``ValueError`` (a one-line reason) if it cannot be used.

    ``relocatable = True`` puts the provider where the file is, with the usual layout.
    """
    import configparser  # only for providers with a .provider file: not at every start-up

    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path, encoding="utf-8") as handle:
            parser.read_file(handle, path)
    except (OSError, UnicodeDecodeError, configparser.Error) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0]
        raise ValueError(f"cannot read provider file: {reason}") from None
    if not parser.has_section(PROVIDER_SECTION):
        raise ValueError(f"no [{PROVIDER_SECTION}] section")
    values = {key: value.strip() for key, value in parser.items(PROVIDER_SECTION)}
    name = values.get("name", "")
    if not name:
        raise ValueError("no 'name'")
    location = values.get("location") or None
    if values.get("relocatable", "").lower() in ("1", "yes", "true", "on"):
        location = os.path.dirname(os.path.abspath(path))
        values = {k: v for k, v in values.items() if not k.endswith("_dir")}
    for key in ("location", "units_dir", "jobs_dir", "data_dir", "bin_dir", "locale_dir"):
        value = location if key == "location" else values.get(key)
        if value and not (os.path.isabs(value) and os.path.isdir(value)):
            raise ValueError(f"{key} {value!r} is not an existing directory (absolute path)")
    namespace = values.get("namespace") or None
    if namespace is None and ":" not in name:
        raise ValueError(f"no 'namespace' and the name {name!r} has none ('namespace:name')")
    return _layout(name, namespace, location, values, path)


def _setup_arguments(path: str) -> dict[str, str] | None:
    """The string keyword arguments of the ``setup(...)`` call of a ``manage.py`` (read with ast); None if none."""
    try:
        with open(path, "rb") as handle:
            tree = ast.parse(handle.read(), path)
    except (OSError, SyntaxError, ValueError):
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, (ast.Name, ast.Attribute)):
            name = node.func.id if isinstance(node.func, ast.Name) else node.func.attr
            if name != "setup":
                continue
            values: dict[str, str] = {}
            for keyword in node.keywords:
                value = keyword.value
                if isinstance(value, ast.Call) and value.args:  # N_("...") around a description
                    value = value.args[0]
                if keyword.arg and isinstance(value, ast.Constant) and isinstance(value.value, str):
                    values[keyword.arg] = value.value
            return values
    return None


def read_source_tree(directory: str) -> Provider | None:
    """The provider a source tree defines by its ``manage.py``; None if *directory* has no usable one."""
    manage = os.path.join(directory, "manage.py")
    if not os.path.isfile(manage):
        return None
    values = _setup_arguments(manage)
    if not values or not values.get("name"):
        return None
    name, namespace = values["name"], values.get("namespace") or None
    if namespace is None and ":" not in name:
        return None
    if namespace is not None and not _NAMESPACE.fullmatch(namespace):
        return None
    location = os.path.abspath(directory)
    return _layout(name, namespace, location, {k: v for k, v in values.items() if k in ("gettext_domain", "version")}, manage)


def _provider_files(directory: str) -> list[str]:
    """The regular ``*.provider`` files directly in *directory* (none if it cannot be listed)."""
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    return [os.path.join(directory, n) for n in names if n.endswith(".provider") and os.path.isfile(os.path.join(directory, n))]


def find_providers(
    dirs: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
    search: bool = True,
) -> tuple[list[Provider], list[str]]:
    """The providers found, in Checkbox's order, and warnings (each naming a file).

    *dirs* are ``--providers`` directories (of ``.provider`` files, or provider
    source trees) or ``.provider`` files; with *search*, the directories of :func:`provider_search_path`
    (read from *environ*, default ``os.environ``) are searched as well.
    Missing or unreadable directories are skipped silently, as in Checkbox.
    """
    warnings: list[str] = []
    trees: list[Provider] = []
    files: list[str] = []
    for directory in dirs:
        directory = os.path.abspath(directory)
        if directory.endswith(".provider") and os.path.isfile(directory):  # one definition, as a run keeps it
            files.append(directory)
            continue
        found = _provider_files(directory)
        if found:
            files.extend(found)
            continue
        tree = read_source_tree(directory)
        if tree is not None:
            trees.append(tree)
        else:
            warnings.append(
                f"{directory}: neither .provider files nor a provider source tree (manage.py with setup(name=...))"
            )
    if search:
        for directory in provider_search_path(environ):
            files.extend(_provider_files(directory))
    providers = list(trees)
    for path in sorted(dict.fromkeys(files)):
        try:
            providers.append(read_provider_file(path))
        except ValueError as exc:
            warnings.append(f"{path}: {exc}: provider skipped")
    kept: dict[str, Provider] = {}
    for provider in providers:
        first = kept.setdefault(provider.full_name, provider)
        if first is not provider:
            warnings.append(
                f"{provider.definition}: provider {provider.full_name} is already defined by {first.definition}: skipped"
            )
    return list(kept.values()), warnings
