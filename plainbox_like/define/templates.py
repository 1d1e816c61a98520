"""Instantiating job templates: one job per resource record, as Checkbox makes them.

A template's fields are filled from each record with ``{field}`` placeholders (the default engine) or
Jinja2 (:mod:`plainbox_like.define.rendering`), then read as a job unit by the same parser as a
``.pxu`` record (:class:`plainbox_like.define.pxu.UnitParser`), siblings included.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from plainbox_like.errors import UnitError
from plainbox_like.define.pxu import UnitParser
from plainbox_like.define.rendering import jinja_context, render_jinja
from plainbox_like.define.units import JobDefinition, Origin, Template

__all__ = ["instantiate_template"]

_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_-]*)\}")


def _fill(text: str, record: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "{{":
            return "{"
        if match.group(0) == "}}":
            return "}"
        return record[match.group(1)]  # KeyError: the record lacks the field

    return _PLACEHOLDER.sub(replace, text)


def instantiate_template(
    template: Template,
    records: Sequence[Mapping[str, str]],
    accept: Any = None,
    checkbox_env: Mapping[str, str] | None = None,
) -> tuple[list[JobDefinition], list[str]]:
    """The jobs *template* makes from *records*, and warnings.

    *accept* (a callable taking a record, or None for all) applies the
    template's filter. Each field is filled from the record as Checkbox fills
    it: ``{field}`` placeholders (the default engine), or rendered with Jinja2
    (``template-engine: jinja2``) given the record's fields, ``__index__``,
    and :func:`jinja_context` (*checkbox_env* is ``__checkbox_env__``).
    ``__index__`` counts the accepted records from 1, in both engines. Each job
    is followed by its siblings (see ``siblings`` and ``also-after-suspend``).
    A record lacking a placeholder's field, a field that cannot be rendered, or
    an id already made, makes no job (a warning says why). The jobs' ``extra``
    holds ``template-id``; their origin is the template's.
    """
    if not template.supported:
        return [], []
    origin = template.origin or Origin("<template>", 0)
    namespace = template.id.split("::", 1)[0] if "::" in template.id else None
    parser = UnitParser(origin.path, namespace, checkbox_env)
    jobs: list[JobDefinition] = []
    seen: set[str] = set()
    jinja = template.engine == "jinja2"
    context = jinja_context(checkbox_env) if jinja else {}
    index = 0
    for number, record in enumerate(records, start=1):
        if accept is not None and not accept(record):
            continue
        index += 1
        try:
            if jinja:
                params = {**record, "__index__": index, **context}
                values = {key: render_jinja(value, params) for key, value in template.fields.items()}
            else:
                params = {**record, "__index__": str(index)}
                values = {key: _fill(value, params) for key, value in template.fields.items()}
        except KeyError as exc:
            parser.warn(origin.line, f"template {template.id!r}: record {number} has no field {exc.args[0]!r}")
            continue
        except ValueError as exc:
            parser.warn(origin.line, f"template {template.id!r}: record {number}: {exc}")
            continue
        try:
            job = parser.job_from_values(values, origin.line)
        except UnitError as exc:
            parser.warn(origin.line, f"template {template.id!r}: record {number}: {exc}")
            continue
        for made in parser.with_siblings(job, values, origin.line):
            if made.id in seen:
                parser.warn(origin.line, f"template {template.id!r}: record {number} makes job {made.id!r} again")
                continue
            seen.add(made.id)
            jobs.append(attrs.evolve(made, extra={**made.extra, "template-id": template.id}, origin=origin))
    return jobs, parser.all_warnings()
