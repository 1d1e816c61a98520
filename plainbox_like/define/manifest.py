"""The machine manifest, as Checkbox has it: answers to ``unit: manifest entry`` questions.

A manifest maps entry ids to answers: ``{"com.canonical.certification::has_touchscreen": true,
"com.canonical.certification::num_usb3_ports": 2}`` in Checkbox's machine manifest JSON
(``--manifest FILE``), or ``ID = VALUE`` lines in a launcher's ``[manifest]`` section.

Jobs see the manifest through the resource job ``com.canonical.plainbox::manifest``
(which Checkbox defines in a provider of its own; jobs reach it with ``imports: from
com.canonical.plainbox import manifest``). It prints one record per provider
(``ns``, ``name``, then ``KEY: VALUE`` for each manifest entry of that provider, the
key being the entry's ``resource-key`` or its id without namespace). An entry with
no answer has Checkbox's default (``False``, ``0``), so a requirement on it is
false; the skip reason then names the entry.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Iterable, Mapping
from typing import Any

from plainbox_like.errors import PlainboxLikeError
from plainbox_like.store.paths import open_without_waiting
from plainbox_like.define.plan import job_imports
from plainbox_like.define.units import JobDefinition, ManifestEntry

#: The manifest resource job (Checkbox's id for it).
MANIFEST_JOB_ID = "com.canonical.plainbox::manifest"
_TRUE = frozenset({"true", "yes", "1", "on"})
_FALSE = frozenset({"false", "no", "0", "off"})
_FIELD = re.compile(r"\bmanifest\.([A-Za-z_][A-Za-z0-9_]*)")


def answer_text(value: Any) -> str:
    """An answer as the manifest resource prints it (``True``/``False`` for booleans, as Checkbox)."""
    return str(value)


def read_manifest_file(path: str) -> dict[str, Any]:
    """The answers of a Checkbox machine manifest JSON file (an object of id -> boolean or number)."""
    try:
        with open(open_without_waiting(path, os.O_RDONLY), encoding="utf-8") as handle:
            data = json.load(handle)
    except OSError as exc:
        raise PlainboxLikeError(f"--manifest {path}: cannot read it: {exc.strerror or exc}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise PlainboxLikeError(f"--manifest {path}: not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise PlainboxLikeError(f"--manifest {path}: expected a JSON object of entry id -> answer")
    for key, value in data.items():
        if not isinstance(value, (bool, int)):
            raise PlainboxLikeError(f"--manifest {path}: entry {key!r}: expected true, false or a number, not {value!r}")
    return dict(data)


def parse_answer(text: str, where: str) -> bool | int:
    """A launcher's manifest value: a boolean (true/false/yes/no/1/0) or a natural number."""
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    try:
        number = int(lowered)
    except ValueError:
        raise PlainboxLikeError(f"{where}: expected true, false or a number, not {text!r}") from None
    if number < 0:
        raise PlainboxLikeError(f"{where}: expected a natural number, not {text!r}")
    return number


def manifest_job(
    entries: Iterable[ManifestEntry], answers: Mapping[str, Any], provider_of: Any = None
) -> JobDefinition:
    """The ``manifest`` resource job: prints the answers (or defaults) of *entries*, one record per provider.

    *provider_of* (an entry -> ``(namespace, name)`` or None) groups the entries as
    Checkbox does; without it they are grouped by namespace.
    """
    groups: dict[tuple[str, str], list[str]] = {}
    for entry in entries:
        found = provider_of(entry) if provider_of is not None else None
        namespace = entry.id.split("::", 1)[0] if "::" in entry.id else ""
        group = found or (namespace, namespace)
        value = answer_text(answers[entry.id]) if entry.id in answers else entry.default
        groups.setdefault(group, []).append(f"{entry.key}: {value}")
    lines: list[str] = []
    for (namespace, name), fields in groups.items():
        lines += [f"ns: {namespace}", f"name: {name}", *fields, ""]
    command = "printf '%s\\n' " + " ".join(shlex.quote(line) for line in lines) if lines else "true"
    return JobDefinition(
        id=MANIFEST_JOB_ID,
        plugin="resource",
        command=command,
        summary="Hardware Manifest",
        flags=frozenset({"preserve-locale"}),
    )


def needs_manifest(jobs: Iterable[JobDefinition]) -> bool:
    """Whether some job imports the manifest resource job (Checkbox's way to require it)."""
    return any("imports" in job.extra and MANIFEST_JOB_ID in job_imports(job).values() for job in jobs)


def unanswered(text: str, entries: Iterable[ManifestEntry], answers: Mapping[str, Any]) -> list[str]:
    """The entries a requirement *text* reads (``manifest.KEY``) that have no answer, by id."""
    keys = set(_FIELD.findall(text))
    return [entry.id for entry in entries if entry.key in keys and entry.id not in answers]
