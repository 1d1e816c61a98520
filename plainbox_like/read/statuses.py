"""The statuses a job is shown with, and their one order (for counts, legends and tables).

Kept apart from :mod:`plainbox_like.read.jobs` and free of imports so that ``list``, which
orders the counts of every session, starts without the state machinery.
"""

from __future__ import annotations

#: Job status of a job that has no attempt at all.
NOT_RUN = "not-run"
#: A job with an attempt started and no result, while its writer runs (or is paused: still its writer's).
RUNNING = "running"
#: The same, once the writer is gone (killed, machine rebooted).
INTERRUPTED = "interrupted"

#: Order of statuses in counts and legends; others follow alphabetically.
STATUS_ORDER = (
    "pass",
    "fail",
    "crash",
    INTERRUPTED,
    RUNNING,
    "skip",
    "skipped-dependency",
    "skipped-resource",
    "not-supported",
    "not-implemented",
    "undecided",
    NOT_RUN,
)

_RANK = {name: i for i, name in enumerate(STATUS_ORDER)}


def in_status_order(counts: dict[str, int]) -> dict[str, int]:
    """*counts* (status -> number) in :data:`STATUS_ORDER`, other statuses alphabetically after."""
    return dict(sorted(counts.items(), key=lambda kv: (_RANK.get(kv[0], len(_RANK)), kv[0])))
