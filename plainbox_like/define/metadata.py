"""What a test plan says about its jobs besides selecting them: category and certification status.

:class:`RunMetadata` is each job's effective metadata in a run (its own, then the test plan's
overrides, :func:`plan_overrides`), kept in the session's run configuration so that exports show
what the run used.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable

import attrs

from plainbox_like.errors import PlanError
from plainbox_like.define.resource import namespace_of
from plainbox_like.define.selection import Matcher, plan_tree
from plainbox_like.define.units import JobDefinition, Override, UnitSet, as_tuple

__all__ = ["DEFAULT_CERTIFICATION_STATUS", "JobMetadata", "RunMetadata", "own_metadata", "plan_overrides"]

#: A job's certification status when neither it nor a test plan gives one (as in Plainbox).
DEFAULT_CERTIFICATION_STATUS = "unspecified"
#: Key of :class:`RunMetadata` in a session's ``metadata.app_blob`` (the run configuration).
APP_BLOB_KEY = "job_metadata"


def _qualified(unit_id: str, namespace: str | None) -> str:
    return unit_id if namespace is None or "::" in unit_id else f"{namespace}::{unit_id}"


@attrs.frozen
class JobMetadata:
    """A job's effective category and certification status in a run."""

    category_id: str | None = None
    certification_status: str = DEFAULT_CERTIFICATION_STATUS

    def to_json(self) -> dict[str, str | None]:
        return {"category_id": self.category_id, "certification_status": self.certification_status}


def own_metadata(job: JobDefinition) -> JobMetadata:
    """What the job unit itself says (``category_id`` gets the job's namespace if it has none)."""
    category = job.extra.get("category_id") or None
    status = job.extra.get("certification_status") or DEFAULT_CERTIFICATION_STATUS
    return JobMetadata(category and _qualified(category, namespace_of(job.id)), status)


def plan_overrides(units: UnitSet, test_plan: str) -> list[Override]:
    """Every override of the test plan and its nested parts, in the order they apply: a later one wins.

    As in Plainbox: the ``key=value`` overrides of the include fields come
    first, then ``category_overrides``, then ``certification_status_overrides``,
    each for the plan and then its nested parts (a part named twice counts
    once); they are grouped by pattern
    (written with the plan's namespace and anchored, ``^ns::pattern$``) and
    the groups are applied in the sorted order of those patterns. Category
    values get the namespace of the plan that names them if they have none.
    Raises ``KeyError`` for an unknown test plan and :class:`PlanError` for a
    bad ``nested_part``.
    """
    tree = plan_tree(units, test_plan)
    groups: dict[str, list[Override]] = {}
    for kind in ("include_overrides", "category_overrides", "certification_status_overrides"):
        for node in tree:
            namespace = namespace_of(node.id)
            for override in getattr(node, kind):
                if override.field == "category_id":
                    override = attrs.evolve(override, value=_qualified(override.value, namespace))
                key = "^" + _qualified(override.pattern, namespace) + "$"
                groups.setdefault(key, []).append(override)
    return [override for _key, group in sorted(groups.items()) for override in group]


@attrs.frozen
class RunMetadata:
    """The effective metadata of a run's jobs, as kept in its session.

    ``jobs`` holds every job whose metadata is not the default (the planned
    ones, and those made from templates once they join the run, see
    :meth:`with_jobs`); ``overrides`` (those of :func:`plan_overrides`) give
    the metadata of any other job, which starts from the default.
    """

    jobs: dict[str, JobMetadata] = attrs.field(factory=dict)
    overrides: tuple[Override, ...] = attrs.field(default=(), converter=as_tuple)

    @classmethod
    def compute(cls, units: UnitSet, test_plan: str | None, jobs: Iterable[JobDefinition]) -> "RunMetadata":
        """Own metadata of *jobs*, then the test plan's overrides applied to them in order."""
        overrides = plan_overrides(units, test_plan) if test_plan is not None else []
        jobs = list(jobs)
        values = {job.id: own_metadata(job) for job in jobs}
        if overrides:
            selected = UnitSet(jobs=jobs)  # its indexes find the jobs a pattern matches quickly
            for override in overrides:
                for job in Matcher(override.pattern, "override").select(selected):
                    values[job.id] = attrs.evolve(values[job.id], **{override.field: override.value})
        default = JobMetadata()
        return cls({job_id: meta for job_id, meta in values.items() if meta != default}, overrides)

    def of(self, job_id: str) -> JobMetadata:
        """The metadata of *job_id*: as computed, else the default with the overrides applied."""
        found = self.jobs.get(job_id)
        return found if found is not None else self._overridden(job_id, JobMetadata())

    def with_jobs(self, jobs: Iterable[JobDefinition]) -> "RunMetadata":
        """This, and the metadata of *jobs* joining the run (made from templates): their own, then the overrides."""
        values = dict(self.jobs)
        for job in jobs:
            meta = self._overridden(job.id, own_metadata(job))
            if meta != JobMetadata():
                values[job.id] = meta
        return RunMetadata(values, self.overrides)

    def _overridden(self, job_id: str, meta: JobMetadata) -> JobMetadata:
        for override in self.overrides:
            try:
                matches = Matcher(override.pattern, "override").matches(job_id)
            except PlanError:
                continue
            if matches:
                meta = attrs.evolve(meta, **{override.field: override.value})
        return meta

    def to_json(self) -> dict[str, object]:
        """``{"jobs": {id: {...}}, "overrides": [...]}``; a job not listed has the default metadata."""
        return {
            "jobs": {job_id: meta.to_json() for job_id, meta in self.jobs.items()},
            "overrides": [
                {"pattern": o.pattern, "field": o.field, "value": o.value} for o in self.overrides
            ],
        }

    def to_app_blob(self, blob: str) -> str:
        """*blob* (a run configuration: base64 of a JSON object) with this metadata under :data:`APP_BLOB_KEY`."""
        data = json.loads(base64.standard_b64decode(blob))
        data[APP_BLOB_KEY] = self.to_json()
        return base64.standard_b64encode(json.dumps(data, sort_keys=True).encode()).decode()

    @classmethod
    def from_app_blob(cls, blob: str | None) -> "RunMetadata | None":
        """The metadata kept in a session's ``app_blob``; None if it has none (older or Plainbox sessions)."""
        if not blob:
            return None
        try:
            data = json.loads(base64.standard_b64decode(blob))
            return cls.from_json(data[APP_BLOB_KEY]) if isinstance(data, dict) and APP_BLOB_KEY in data else None
        except (ValueError, TypeError):  # binascii.Error and JSON errors are ValueErrors
            return None

    @classmethod
    def from_json(cls, data: object) -> "RunMetadata":
        """The inverse of :meth:`to_json`; ``ValueError`` if *data* does not have its shape."""
        try:
            jobs = {
                str(job_id): JobMetadata(meta.get("category_id"), meta.get("certification_status") or DEFAULT_CERTIFICATION_STATUS)
                for job_id, meta in data["jobs"].items()
            }
            overrides = [
                Override(str(o["pattern"]), str(o["field"]), str(o["value"])) for o in data.get("overrides", [])
            ]
        except (AttributeError, KeyError, TypeError) as exc:
            raise ValueError(f"job metadata has an unexpected shape: {exc!r}") from None
        return cls(jobs, overrides)
