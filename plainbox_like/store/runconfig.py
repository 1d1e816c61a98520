"""How a batch was defined (sources, plan, options), kept in the session for ``resume``.

A persisted model: written as ``metadata.app_blob`` (base64 of sorted-key JSON) when the
session starts and read back by ``resume``, ``cleanup``, ``repair`` and the index. Loading the
units it names is the run's business (:func:`plainbox_like.run.prepare.load_run_units`).
"""

from __future__ import annotations

import base64
import json
from typing import Any

import attrs

from plainbox_like.errors import PlainboxLikeError


@attrs.define
class RunConfig:
    """How the batch was defined, kept in the session (``metadata.app_blob``) for resume."""

    sources: list[str] = attrs.Factory(list)
    commands: list[str] = attrs.Factory(list)
    test_plan: str | None = None
    include: list[str] = attrs.Factory(list)
    exclude: list[str] = attrs.Factory(list)
    parallel: int = 1
    durability: str = "fsync"
    #: Namespace for the jobs of unit files (None: each provider's own, if any).
    namespace: str | None = None
    #: Variables a launcher's ``[environment]`` gives the jobs (only where the environment lacks them).
    environment: dict[str, str] = attrs.Factory(dict)
    #: Manifest answers (entry id -> value), from ``--manifest`` and a launcher's ``[manifest]``.
    manifest: dict[str, Any] = attrs.Factory(dict)
    #: Providers whose units are loaded too: their ``.provider`` files or source trees, as found
    #: when the run started (:func:`plainbox_like.define.providers.find_providers`), in Checkbox's order.
    providers: list[str] = attrs.Factory(list)
    #: The Dask cluster the jobs ran on (``--dask``: a scheduler address or ``local:W``); None: this machine.
    dask: str | None = None
    #: How many times a job whose Dask worker was lost is run again (``--retries``), each a new attempt.
    retries: int = 0

    def to_blob(self) -> str:
        data = attrs.asdict(self)
        for name in _LEFT_OUT_WHEN_DEFAULT:  # added later: a run that does not use them keeps the blob it had
            if data[name] == attrs.fields_dict(RunConfig)[name].default:
                del data[name]
        return base64.standard_b64encode(json.dumps(data, sort_keys=True).encode()).decode()

    @classmethod
    def from_blob(cls, blob: str | None) -> "RunConfig":
        if not blob:
            raise PlainboxLikeError("the session does not say how it was run (no app_blob): cannot resume it")
        try:
            data = json.loads(base64.standard_b64decode(blob))
            return cls(**{f.name: data[f.name] for f in attrs.fields(cls) if f.name in data})
        except (ValueError, TypeError) as exc:
            raise PlainboxLikeError(f"the session's run configuration is unreadable: {exc}") from None


#: Fields left out of the blob when they have their default value.
_LEFT_OUT_WHEN_DEFAULT = ("dask", "retries")
