"""Kept importable: its helpers moved to :mod:`.options` (arguments, the repository) and :mod:`.output`."""

from __future__ import annotations

from plainbox_like.cli.options import positive_int, repository  # noqa: F401
from plainbox_like.cli.output import format_duration, format_time, iso_time, print_json  # noqa: F401
