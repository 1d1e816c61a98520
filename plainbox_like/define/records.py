"""RFC 822 style records: the syntax of a ``.pxu`` file, before any field means anything.

A ``.pxu`` file is a sequence of records, as Plainbox/Checkbox providers write them::

    # a comment (``#`` in column 0)
    id: disk/read
    plugin: shell
    _summary: Read from the disk
    command:
      dd if=/dev/sda of=/dev/null count=1
      .
      echo done

Rules implemented by :func:`split_records`:

* records are separated by one or more blank (or whitespace-only) lines;
* a field is ``key: value``; keys are case-sensitive and usually start with a
  letter or ``_`` and contain letters, digits, ``_`` and ``-`` (as in
  Checkbox, whatever comes before the first ``:`` is taken as a key);
* a line starting with a space or tab continues the previous field's value;
  the continuation lines of one field lose their common leading whitespace
  (dedent) and are appended after a newline; a continuation line that is a
  lone ``.`` stands for an empty line inside the value; leading and trailing
  empty lines of a value are dropped;
* a ``#`` in column 0 starts a comment line, also in the middle of a value;
* ``_key`` is the translatable form of ``key`` and means the same; a record
  with both uses ``_key``'s value, as Checkbox does (with a warning).

A line that breaks these rules marks its record unusable instead of failing the
file; what the fields mean is :mod:`plainbox_like.define.pxu`'s business.
"""

from __future__ import annotations

import os
import re

import attrs

_KEY_LINE = re.compile(r"([A-Za-z_][A-Za-z0-9_-]*)[ \t]*:(.*)")
_UNITS_HINT = re.compile(r"^(?:id|unit|plugin)[ \t]*:", re.MULTILINE)


@attrs.define
class Field:
    """One ``key: value`` field of a record, its continuation lines kept raw until asked for."""

    key: str  # normalized (no leading "_")
    raw_key: str
    line: int
    first: str
    cont: list[tuple[int, str]] = attrs.field(factory=list)  # (line number, raw line)

    def lines(self) -> list[tuple[int, str]]:
        """The value's lines with their line numbers, after dedent and ``.`` handling."""
        if not self.cont:  # the common case: a one-line value
            return [(self.line, self.first)] if self.first else []
        body: list[tuple[int, str | None]] = []
        indents: list[str] = []
        for number, raw in self.cont:
            stripped = raw.lstrip(" \t")
            if stripped.rstrip() == ".":
                body.append((number, None))
            else:
                body.append((number, raw))
                indents.append(raw[: len(raw) - len(stripped)])
        common = os.path.commonprefix(indents) if indents else ""
        out: list[tuple[int, str]] = []
        if self.first:
            out.append((self.line, self.first))
        for number, raw in body:
            out.append((number, "" if raw is None else raw[len(common) :]))
        while out and not out[0][1].strip():
            out.pop(0)
        while out and not out[-1][1].strip():
            out.pop()
        return out

    def value(self) -> str:
        if not self.cont:
            return self.first
        return "\n".join(text for _, text in self.lines())


@attrs.define
class Record:
    """The fields of one record, by key without its leading ``_``, and what makes it unusable or untidy."""

    line: int
    fields: dict[str, Field] = attrs.field(factory=dict)
    #: Why the record cannot be used (line, reason): the first problem met; None if it can.
    problem: tuple[int, str] | None = None
    #: Untidy but usable things (line, what), each reported once with its line.
    untidy: list[tuple[int, str]] = attrs.field(factory=list)

    def fail(self, line: int, reason: str) -> None:
        if self.problem is None:
            self.problem = (line, reason)


def split_records(text: str, path: str) -> list[Record]:
    """Split RFC 822 style text into records of fields (no interpretation yet).

    Lines that Checkbox would refuse (no ``key:``, a field given twice, a
    continuation with no field before it) mark their record as unusable
    (:attr:`Record.problem`) instead of failing the whole file; a record with
    both ``key`` and ``_key`` keeps ``_key``'s value, as Checkbox reads it.
    """
    records: list[Record] = []
    record: Record | None = None
    field: Field | None = None
    if "\r" in text:  # a CR ending a line is not part of it
        text = text.replace("\r\n", "\n")
        text = text[:-1] if text.endswith("\r") else text
    for number, line in enumerate(text.split("\n"), start=1):
        first = line[:1]
        if first == "#":
            continue
        if not first or (first.isspace() and line.isspace()):
            record = field = None
            continue
        if record is None:
            record = Record(line=number)
            records.append(record)
        if first == " " or first == "\t":
            if field is None:
                record.fail(number, "continuation line without a field before it")
            else:
                field.cont.append((number, line))
            continue
        match = _KEY_LINE.fullmatch(line)
        if match is not None:
            raw_key, rest = match.groups()
        else:
            raw_key, colon, rest = line.partition(":")
            raw_key = raw_key.strip()
            if not colon or not raw_key:
                shown = line if len(line) <= 40 else line[:37] + "..."
                record.fail(
                    number,
                    f"expected 'key: value', an indented continuation, a '#' comment or a blank line, got {shown!r}",
                )
                field = None
                continue
        key = raw_key[1:] if raw_key.startswith("_") and len(raw_key) > 1 else raw_key
        field = Field(key=key, raw_key=raw_key, line=number, first=rest.strip())
        previous = record.fields.get(key)
        if previous is None:
            record.fields[key] = field
        elif previous.raw_key == raw_key:
            record.fail(number, f"field {raw_key!r} given twice in one record (first at line {previous.line})")
        else:
            used = field if raw_key.startswith("_") else previous
            record.untidy.append(
                (number, f"both {previous.raw_key!r} (line {previous.line}) and {raw_key!r} given: the value of"
                 f" {used.raw_key!r} (line {used.line}) is used, as in Checkbox")
            )
            record.fields[key] = used
    return records


def looks_like_units(text: str) -> bool:
    """Whether a file without the ``.pxu`` suffix holds unit records.

    True when the first line that is neither blank nor a comment is a
    ``key: value`` line and some line starts with ``id:`` or ``unit:``; shell
    commands practically never look like that.
    """
    for line in text.split("\n"):
        if not line.strip() or line.startswith("#"):
            continue
        if _KEY_LINE.fullmatch(line.rstrip("\r")) is None:
            return False
        return _UNITS_HINT.search(text) is not None
    return False
