"""Checkbox launcher files: what a run takes from them, and what it leaves aside.

A launcher is an INI file (``checkbox-cli launcher FILE``). Read here:

- ``[launcher]``: ``session_title`` (the session's title; else ``app_id``, as in
  Checkbox), ``app_id``; ``launcher_version``, ``app_version`` and
  ``session_desc`` are accepted and not used (``app_version`` is added to the
  title, as Checkbox does);
- ``[test plan]``: ``unit`` (the test plan to run), ``forced``, ``filter``
  (both only matter to a person choosing a plan: noted when ``unit`` is set);
- ``[test selection]``: ``forced``, ``exclude`` (regular expressions of job
  ids to leave out, as ``run -x``), ``match`` (as ``run -i``);
- ``[manifest]``: ``ENTRY_ID = VALUE`` answers (true/false/yes/no or a number);
- ``[environment]``: ``NAME = VALUE`` given to the jobs where the environment
  lacks ``NAME``, as in Checkbox;
- ``[ui]``: ``type`` (``silent``; ``interactive`` runs silently too, with a note).

Sections and keys that do not apply to a batch run here (``[transport:*]``,
``[exporter:*]``, ``[report:*]``, ``[agent]``, ``[features]``, unknown keys)
are named once in a note. Values are split as Checkbox splits them (lists:
commas or whitespace, shell quoting; booleans: ``yes``/``true``).
"""

from __future__ import annotations

import configparser
import os
import shlex
from typing import Any

import attrs

from plainbox_like.errors import PlainboxLikeError
from plainbox_like.define.manifest import parse_answer
from plainbox_like.store.paths import open_without_waiting

#: Keys read from each fixed section (others there are noted).
KNOWN_KEYS = {
    "launcher": {"launcher_version", "app_id", "app_version", "session_title", "session_desc", "stock_reports",
                 "local_submission"},
    "test plan": {"unit", "forced", "filter"},
    "test selection": {"forced", "exclude", "match"},
    "ui": {"type", "output", "dont_suppress_output", "verbosity", "auto_retry", "max_attempts",
           "delay_before_retry"},
}  # fmt: skip
#: Keys accepted without effect, and not worth a note (they describe the launcher or only the console).
QUIET_KEYS = {("launcher", "launcher_version"), ("launcher", "session_desc"), ("ui", "output"), ("ui", "verbosity"),
              ("ui", "dont_suppress_output")}  # fmt: skip
UI_TYPES = ("silent", "interactive", "converged", "converged-silent")


@attrs.define
class Launcher:
    """What a launcher file asks of a run."""

    path: str
    title: str | None = None
    app_id: str | None = None
    test_plan: str | None = None
    exclude: list[str] = attrs.Factory(list)
    include: list[str] = attrs.Factory(list)
    manifest: dict[str, Any] = attrs.Factory(dict)
    environment: dict[str, str] = attrs.Factory(dict)
    ui_type: str = "silent"
    #: What the launcher has that this run does not use, said once each.
    notes: list[str] = attrs.Factory(list)


def _list(value: str, where: str) -> list[str]:
    try:
        return shlex.split(value.replace(",", " "))
    except ValueError as exc:
        raise PlainboxLikeError(f"{where}: {exc}") from None


def _bool(value: str) -> bool:
    return value.strip().lower() in ("yes", "true")


def read_launcher(path: str) -> Launcher:
    """Read a Checkbox launcher file; a file that cannot be read or parsed is a one-line error naming it."""
    parser = configparser.ConfigParser(interpolation=None, delimiters=("=",), strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # entry ids and variables keep their case
    try:
        with open(open_without_waiting(path, os.O_RDONLY), encoding="utf-8") as handle:
            parser.read_file(handle, source=path)
    except OSError as exc:
        raise PlainboxLikeError(f"--launcher {path}: cannot read it: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise PlainboxLikeError(f"--launcher {path}: not UTF-8 text: {exc}") from None
    except configparser.Error as exc:
        raise PlainboxLikeError(f"--launcher {path}: not a launcher (INI) file: {' '.join(str(exc).split())}") from None
    launcher = Launcher(path=path)
    ignored: list[str] = []
    for section in parser.sections():
        values = dict(parser.items(section))
        where = f"{path} [{section}]"
        if section == "manifest":
            for key, value in values.items():
                launcher.manifest[key] = parse_answer(value, f"{where} {key}")
            continue
        if section == "environment":
            launcher.environment.update(values)
            continue
        known = KNOWN_KEYS.get(section)
        if known is None:
            ignored.append(f"[{section}]")
            continue
        for key in values:
            if key not in known:
                ignored.append(f"[{section}] {key} (unknown)")
            elif (section, key) not in QUIET_KEYS and not _used(section, key):
                ignored.append(f"[{section}] {key}")
        _apply(launcher, section, values, where)
    if ignored:
        launcher.notes.append(f"launcher {path}: not used by a batch run here: {', '.join(ignored)}")
    return launcher


def _used(section: str, key: str) -> bool:
    return (section, key) in {
        ("launcher", "app_id"), ("launcher", "app_version"), ("launcher", "session_title"),
        ("test plan", "unit"), ("test plan", "forced"), ("test plan", "filter"),
        ("test selection", "forced"), ("test selection", "exclude"), ("test selection", "match"), ("ui", "type"),
    }  # fmt: skip


def _apply(launcher: Launcher, section: str, values: dict[str, str], where: str) -> None:
    if section == "launcher":
        launcher.app_id = values.get("app_id") or None
        title = values.get("session_title") or launcher.app_id
        if title and values.get("app_version"):
            title += f" {values['app_version']}"
        launcher.title = title
    elif section == "test plan":
        unit = values.get("unit", "").strip()
        launcher.test_plan = unit or None
        if unit and not _bool(values.get("forced", "no")):
            launcher.notes.append(
                f"launcher {launcher.path}: [test plan] is not forced; a batch run takes unit = {unit} without asking"
            )
    elif section == "test selection":
        launcher.exclude = _list(values.get("exclude", ""), f"{where} exclude")
        launcher.include = _list(values.get("match", ""), f"{where} match")
        if not _bool(values.get("forced", "no")):
            launcher.notes.append(
                f"launcher {launcher.path}: [test selection] is not forced; a batch run runs the whole selection"
            )
    elif section == "ui":
        ui_type = values.get("type", "interactive").strip()
        if ui_type not in UI_TYPES:
            raise PlainboxLikeError(f"{where} type: expected one of {', '.join(UI_TYPES)}, not {ui_type!r}")
        launcher.ui_type = ui_type
        if ui_type != "silent":
            launcher.notes.append(
                f"launcher {launcher.path}: [ui] type = {ui_type}: runs without asking anyone, as type = silent"
            )
