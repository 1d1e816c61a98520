"""``export --format junit``: JUnit XML as Jenkins, GitLab and other CI servers read it.

::

    <testsuites name tests failures errors skipped time>
      <testsuite name tests failures errors skipped time timestamp [hostname]>
        <properties><property name="plainbox-like.session.id" value="..."/>...</properties>
        <testcase classname name time>
          <failure message type="fail">  | <error message type="crash|interrupted|...">
          | <skipped message="..."/>
          <system-out>...</system-out> <system-err>...</system-err>
        </testcase>
      </testsuite>
    </testsuites>

One test case per job, in plan order: ``classname`` is the job id's namespace
(the part before the last ``::``) or ``plainbox-like``, ``name`` the job id,
``time`` the duration of its latest attempt. ``fail`` is a failure; ``crash``,
a job whose attempt was interrupted, and any outcome we do not know are
errors; ``skip``, ``skipped-*``, ``not-supported``, ``not-implemented``,
``undecided``, a job still running and a job never run are skipped. The
output of the latest attempt is in ``system-out``/``system-err``, made
printable (see :func:`common.printable`: also what keeps the XML valid) and
cut to :data:`OUTPUT_LIMIT` bytes per stream, the middle replaced by a note.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import BinaryIO

from plainbox_like import __version__
from plainbox_like.exports import common
from plainbox_like.text import to_datetime
from plainbox_like.store.model import OUTCOME_CRASH, OUTCOME_FAIL, OUTCOME_PASS
from plainbox_like.store.reader import LoadedSession

#: Bytes of each stream kept per test case (first and last halves).
OUTPUT_LIMIT = 1 << 20
DEFAULT_CLASSNAME = "plainbox-like"


def _seconds(value: float | None) -> str:
    return f"{max(0.0, value or 0.0):.3f}"


def _timestamp(epoch: float | None) -> str | None:
    """UTC, without a zone designator (the JUnit schema's ``xs:dateTime`` without offset)."""
    if epoch is None:
        return None
    when = to_datetime(epoch, utc=True)
    return when.strftime("%Y-%m-%dT%H:%M:%S") if when is not None else None


def _attr(text: object) -> str:
    return common.printable(str(text))


def _kind(view: common.JobView) -> str:
    """``pass``, ``failure``, ``error`` or ``skipped``."""
    if view.status == OUTCOME_PASS:
        return "pass"
    if view.status == OUTCOME_FAIL:
        return "failure"
    if view.status in common.SKIPPED_STATUSES or view.status == common.RUNNING:
        return "skipped"
    return "error"


def _message(view: common.JobView) -> str:
    latest = view.latest
    if view.status == common.NOT_RUN and latest is None:
        return "not run"
    if view.status in (common.RUNNING, common.INTERRUPTED):
        return f"{view.status}: {view.note}"
    parts = []
    if view.status in (OUTCOME_FAIL, OUTCOME_CRASH):
        parts.append(view.status if view.status == OUTCOME_CRASH else "failed")
        if latest is not None and latest.return_code is not None:
            parts[-1] += f" with return code {latest.return_code}"
    elif view.status not in common.SKIPPED_STATUSES:
        parts.append(f"outcome {view.status}")
    if view.note:
        parts.append(" ".join(view.note.split()))
    return ": ".join(parts) or view.status


def build(loaded: LoadedSession, output_limit: int = OUTPUT_LIMIT) -> ET.Element:
    """The ``<testsuites>`` element of *loaded*."""
    status = common.session_status(loaded)
    views = common.job_views(loaded, status)
    meta = loaded.state.metadata
    name = meta.title or loaded.id
    counts = {"failure": 0, "error": 0, "skipped": 0}
    cases = []
    total_time = 0.0
    for view in views:
        kind = _kind(view)
        if kind in counts:
            counts[kind] += 1
        total_time += max(0.0, view.duration or 0.0)
        cases.append(_testcase(loaded, view, kind, output_limit))
    wall = common.wall_time(loaded)
    suite_time = _seconds(wall if wall is not None else total_time)
    totals = {
        "tests": str(len(views)),
        "failures": str(counts["failure"]),
        "errors": str(counts["error"]),
        "skipped": str(counts["skipped"]),
        "time": suite_time,
    }
    root = ET.Element("testsuites", {"name": _attr(name), **totals})
    suite = ET.SubElement(root, "testsuite", {"name": _attr(name), **totals, "id": "0"})
    timestamp = _timestamp(meta.created)
    if timestamp:
        suite.set("timestamp", timestamp)
    if meta.runner is not None and meta.runner.host:
        suite.set("hostname", _attr(meta.runner.host))
    properties = ET.SubElement(suite, "properties")
    for key, value in (
        ("session.id", loaded.id),
        ("session.path", loaded.path),
        ("session.origin", loaded.origin),
        ("session.status", status),
        ("session.app_id", meta.app_id),
        ("session.tags", " ".join(meta.tags) or None),
        ("exporter", f"plainbox-like {__version__}"),
    ):
        if value is not None:
            ET.SubElement(properties, "property", {"name": f"plainbox-like.{key}", "value": _attr(value)})
    suite.extend(cases)
    return root


def _testcase(loaded: LoadedSession, view: common.JobView, kind: str, output_limit: int) -> ET.Element:
    case = ET.Element(
        "testcase",
        {
            "classname": _attr(view.namespace or DEFAULT_CLASSNAME),
            "name": _attr(view.id),
            "time": _seconds(view.duration),
        },
    )
    message = _attr(_message(view))
    if kind == "failure":
        failure = ET.SubElement(case, "failure", {"message": message, "type": _attr(view.status)})
        failure.text = _attr(view.note or message)
    elif kind == "error":
        error = ET.SubElement(case, "error", {"message": message, "type": _attr(view.status)})
        error.text = _attr(view.note or message)
    elif kind == "skipped":
        ET.SubElement(case, "skipped", {"message": message})
    if view.attempts:
        ref = view.attempts[-1]
        hint = common.log_hint(loaded, view.id, ref.attempt)
        for stream, tag in (("stdout", "system-out"), ("stderr", "system-err")):
            # Read as a stream, keeping only the head and tail shown: memory stays bounded.
            output = common.read_attempt_capped(loaded, ref, output_limit, (stream,))
            text = common.capped_text(output, lambda n: common.omitted_note(n, hint))
            if stream == "stdout" and output.problem:
                text = f"[plainbox-like: {common.printable(output.problem)}]\n" + text
            if text:
                ET.SubElement(case, tag).text = text
    return case


def write(loaded: LoadedSession, out: BinaryIO, output_limit: int = OUTPUT_LIMIT) -> None:
    """Write the XML document (UTF-8, with declaration, indented)."""
    tree = ET.ElementTree(build(loaded, output_limit))
    ET.indent(tree, space="  ")
    tree.write(out, encoding="utf-8", xml_declaration=True)
    out.write(b"\n")
