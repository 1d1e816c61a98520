"""Rendering unit fields with Jinja2 as Checkbox renders them, with the variables it gives.

Used both for units with ``template-engine: jinja2`` (:mod:`plainbox_like.define.pxu`) and for
Jinja2 templates (:mod:`plainbox_like.define.templates`); ``jinja2`` is imported only when a unit
needs it.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from typing import Any

__all__ = ["jinja_context", "render_jinja"]


def _on_ubuntucore() -> bool:
    """Checkbox's ``__on_ubuntucore__``: running from a snap (``$SNAP``) that is not classic-confined."""
    snap = os.environ.get("SNAP")
    if not snap:
        return False
    try:
        with open(os.path.join(snap, "meta", "snap.yaml"), encoding="utf-8", errors="replace") as handle:
            return not any(line == "confinement: classic\n" for line in handle)
    except OSError:
        return True


def jinja_context(checkbox_env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The variables Checkbox gives every Jinja2 field besides a record's:
    ``__checkbox_env__`` (a launcher's ``[environment]``), ``__system_env__`` (``os.environ``)
    and ``__on_ubuntucore__``."""
    return {
        "__checkbox_env__": dict(checkbox_env or {}),
        "__system_env__": os.environ,
        "__on_ubuntucore__": _on_ubuntucore(),
    }


@functools.lru_cache(maxsize=2048)
def _jinja_template(text: str) -> Any:
    import jinja2  # only for providers that use it

    return jinja2.Template(text)


def render_jinja(text: str, params: Mapping[str, Any]) -> str:
    """*text* rendered as a Jinja2 template with *params*, as Checkbox renders a field;
    ``ValueError`` (one line) if it cannot be."""
    if "{" not in text:
        return text
    import jinja2  # only for units that use it

    try:
        return _jinja_template(text).render(params)
    except jinja2.TemplateError as exc:
        line = f" (line {exc.lineno})" if getattr(exc, "lineno", None) else ""
        raise ValueError(f"Jinja2 {type(exc).__name__}{line}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    except (TypeError, ArithmeticError, LookupError, AttributeError) as exc:
        raise ValueError(f"Jinja2 rendering failed: {type(exc).__name__}: {exc}") from None
