"""Whether a job's ``requires:`` holds, from the records its run's resource jobs gave.

Checked by the run loop just before a job would start, because the resource
jobs it names run earlier in the same run; kept apart from the loop since it
reads only the plan, the outcomes so far and the stored records.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from plainbox_like.define import manifest
from plainbox_like.define import plan as planning
from plainbox_like.define.resource import ResourceExpressionError
from plainbox_like.define.units import JobDefinition, ManifestEntry
from plainbox_like.store.model import OUTCOME_CRASH, OUTCOME_FAIL, OUTCOME_PASS

#: Outcomes of a resource job whose records count (Checkbox keeps the records of any job that ran).
RESOURCE_RAN_OUTCOMES = frozenset({OUTCOME_PASS, OUTCOME_FAIL, OUTCOME_CRASH})


def unmet_requirement(
    job: JobDefinition,
    jobs: Mapping[str, JobDefinition],
    outcomes: Mapping[str, str],
    resources: Mapping[str, list[dict[str, str]]],
    manifest_entries: Sequence[ManifestEntry] = (),
    manifest_answers: Mapping[str, Any] | None = None,
) -> str | None:
    """Why *job*'s ``requires:`` does not hold (None if it holds or there is none).

    *jobs*: the run's planned jobs; *outcomes*: the outcomes so far; *resources*:
    the records stored for each resource job; the manifest's entries and answers
    name the entries a false expression waited for.
    """
    program, error = planning.requirement_program(job)
    if error is not None:
        return f"invalid requires: {error}"
    if program is None:
        return None
    records: dict[str, list[dict[str, str]]] = {}
    for name in program.resources:
        resource_id = planning.resource_id(job, name, jobs)
        if resource_id is None:
            return f"resource job {name} is not part of the run"
        outcome = outcomes.get(resource_id)
        if outcome not in RESOURCE_RAN_OUTCOMES:
            return f"resource job {resource_id} did not run (outcome {outcome})"
        # As in Checkbox: a resource job that printed nothing gives one record with no fields.
        records[name] = resources.get(resource_id) or [{}]
    try:
        unmet = program.first_false(records)
    except ResourceExpressionError as exc:
        return str(exc)
    if unmet is None:
        return None
    reason = f"resource expression is false: {unmet.text}"
    if manifest.MANIFEST_JOB_ID in jobs:
        missing = manifest.unanswered(unmet.text, manifest_entries, manifest_answers)
        if missing:
            entries = ", ".join(missing)
            reason += f" (manifest {'entry' if len(missing) == 1 else 'entries'} {entries} not answered)"
    return reason
