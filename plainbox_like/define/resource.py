"""Resource records and ``requires:`` expressions, evaluated as Checkbox evaluates them.

A ``plugin: resource`` job prints records on its standard output in the same
RFC 822 style as unit files: ``key: value`` lines, records separated by blank
lines. :func:`read_records` turns that output into a list of dicts the way
Checkbox does, and says where output that is not RFC 822 stopped it.

A job's ``requires:`` field holds one expression per line; all of them must
hold for the job to run. An expression is a small subset of Python::

    package.name == "bash"
    int(cpuinfo.count) >= 2 and cpuinfo.platform in ("x86_64", "aarch64")
    com.canonical.certification::package.name != "x"

``resource.field`` names a field of a record of the resource job
``resource`` (with or without a namespace); a field a record lacks is the
empty string, and values compare as Python compares them (``"2" > 1`` is an
error, which makes that record not match; ``"2" == 2`` is false). As in
Checkbox, an expression written without parentheses is split at its last
`` or `` (else its last `` and ``) and each side is evaluated on its own; an
expression that is not split is true if *any* record of its resource (for
several resources: any combination of one record of each) makes it true, with
no limit on the combinations. The resources of an expression are the names
written outside of function calls (``int(cpu.count) > 1`` alone names none).

Expressions are parsed with :mod:`ast` and walked by this module; only the
node types listed in :data:`ALLOWED_NODES` are accepted, so nothing is ever
evaluated by Python itself.
"""

from __future__ import annotations

import ast
import functools
import itertools
import operator
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Callable

import attrs

from plainbox_like.errors import ResourceExpressionError

__all__ = [
    "ALLOWED_NODES",
    "ResourceExpressionError",
    "Requirement",
    "RequirementProgram",
    "parse_records",
    "namespace_of",
    "resolve_resource",
    "bare_name_index",
]

#: Longest expression accepted (characters), and deepest nesting.
MAX_EXPRESSION_LENGTH = 4000
MAX_DEPTH = 40

_KEY = re.compile(r"([^\s:][^:]*?)\s*:(.*)")
_NAMESPACED = re.compile(r"([A-Za-z_][A-Za-z0-9_.]*)::([A-Za-z_][A-Za-z0-9_]*)")
_PLACEHOLDER = "__ns{}__"
_RESERVED = re.compile(r"__ns\d+__")


def parse_records(text: str) -> list[dict[str, str]]:
    """Records from the output of a resource job, as Checkbox reads them (see :func:`read_records`)."""
    return read_records(text)[0]


def read_records(text: str) -> tuple[list[dict[str, str]], str | None]:
    """Records from the output of a resource job, and what is not valid RFC 822 in it (or None).

    As Checkbox: blank (or whitespace-only) lines separate records; a line
    with a colon starts a field (``key: value``, both stripped); a line
    starting with a space continues the previous field (a line ``.`` stands
    for an empty one); ``#`` in column 0 is a comment. Any other line, a
    continuation with no field before it, or a key given twice in one record
    stops the reading there: the records before it are kept, the one it is in
    is dropped, and the problem is returned (``line N: ...``).
    """
    records: list[dict[str, str]] = []
    record: dict[str, str] = {}
    key: str | None = None
    values: list[str] = []

    def commit() -> None:
        nonlocal key
        if key is not None:
            record[key] = _normalize("".join(values))
            key = None

    for number, line in enumerate(text.splitlines(True), start=1):
        if line.startswith("#"):
            continue
        if not line.strip():
            commit()
            if record:
                records.append(record)
            record = {}
            continue
        if line.startswith(" "):
            if key is None:
                return records, f"line {number}: a continuation line with no field before it: {line.rstrip()!r:.60}"
            values.append(line[1:])
            continue
        if ":" not in line:
            return records, f"line {number}: not a 'key: value' line: {line.rstrip()!r:.60}"
        commit()
        name, value = line.split(":", 1)
        name = name.strip()
        if name in record:
            return records, f"line {number}: key {name!r} given twice in one record"
        key, values = name, ([value.lstrip()] if value.strip() else [])
    commit()
    if record:
        records.append(record)
    return records, None


_DOT_LINE = re.compile(r"^(\s*)\.$", re.M)


def _normalize(value: str) -> str:
    """A field's value as Checkbox keeps it: for several lines, ``.`` lines made empty and dedented; stripped."""
    if value.count("\n") > 1:
        import textwrap  # only for resource output with fields on several lines: not at every start-up

        value = textwrap.dedent(_DOT_LINE.sub(r"\1", value))
    return value.strip()


# --------------------------------------------------------------------------- expressions

_COMPARE: dict[type, Callable[[Any, Any], bool]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}
_FUNCTIONS: dict[str, Callable[[Any], Any]] = {"int": int, "float": float, "str": str, "len": len, "bool": bool}

#: Every AST node type an expression may contain.
ALLOWED_NODES: frozenset[type] = frozenset(
    {
        ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.USub, ast.Compare,
        ast.Attribute, ast.Name, ast.Load, ast.Constant, ast.Tuple, ast.List, ast.Call,
        *_COMPARE,
    }
)  # fmt: skip


class _NoMatch(Exception):
    """This record (combination) cannot make the expression true: a field is missing, or a type error."""


@attrs.frozen
class Requirement:
    """One ``requires:`` line, parsed and checked."""

    text: str
    #: Resource names as Checkbox sees them (outside function calls), in order of first use, as written.
    resources: tuple[str, ...]
    _tree: ast.Expression = attrs.field(eq=False, repr=False)
    _names: dict[str, str] = attrs.field(eq=False, repr=False)  # python name -> resource name

    @classmethod
    def parse(cls, text: str) -> "Requirement":
        text = text.strip()
        if not text:
            raise ResourceExpressionError("empty requires expression")
        if len(text) > MAX_EXPRESSION_LENGTH:
            raise ResourceExpressionError(f"requires expression longer than {MAX_EXPRESSION_LENGTH} characters")
        if _RESERVED.search(text):
            raise ResourceExpressionError(f"names like '__ns0__' are reserved: {text!r}")
        names: dict[str, str] = {}

        def placeholder(match: re.Match[str]) -> str:
            full = f"{match.group(1)}::{match.group(2)}"
            for name, resource in names.items():
                if resource == full:
                    return name
            name = _PLACEHOLDER.format(len(names))
            names[name] = full
            return name

        source = _NAMESPACED.sub(placeholder, text)
        try:
            tree = ast.parse(source, mode="eval")
        except SyntaxError as exc:
            raise ResourceExpressionError(f"invalid requires expression {text!r}: {exc.msg}") from None
        except (RecursionError, MemoryError, ValueError):
            raise ResourceExpressionError(f"requires expression too complex: {text[:60]!r}") from None
        resources: dict[str, None] = {}
        _check(tree.body, text, names, resources, 0)
        if not resources:
            raise ResourceExpressionError(
                f"requires expression {text!r} names no resource outside a function call (use resource.field)"
            )
        return cls(text, tuple(resources), tree, names)

    def evaluate(self, records: Mapping[str, Sequence[Mapping[str, str]]]) -> bool:
        """Whether the expression holds for *records* (by resource name as written), as in Checkbox."""
        if "(" not in self.text:
            for word in (" or ", " and "):
                if self.text.rfind(word) > 0:
                    head, tail = self.text.rsplit(word, 1)
                    left = _part(head)
                    if word == " or ":
                        return bool(left and left.evaluate(records)) or bool(
                            (right := _part(tail)) and right.evaluate(records)
                        )
                    right = _part(tail)
                    return bool(left and left.evaluate(records)) and bool(right and right.evaluate(records))
        pools = [records.get(name, ()) for name in self.resources]
        for combo in itertools.product(*pools):
            bound = dict(zip(self.resources, combo))
            try:
                if _truth(_eval(self._tree.body, bound, self._names)):
                    return True
            except _NoMatch:
                continue
        return False


@functools.lru_cache(maxsize=4096)
def _part(text: str) -> "Requirement | None":
    """One side of an expression split at `` or ``/`` and ``, parsed (None if it is not an expression)."""
    try:
        return Requirement.parse(text)
    except ResourceExpressionError:
        return None


def _resource_name(node: ast.expr, names: Mapping[str, str]) -> str | None:
    if isinstance(node, ast.Name):
        return names.get(node.id, node.id)
    return None


def _check(node: ast.AST, text: str, names: Mapping[str, str], resources: dict[str, None], depth: int) -> None:
    if depth > MAX_DEPTH:
        raise ResourceExpressionError(f"requires expression nested too deeply: {text[:60]!r}")
    kind = type(node)
    if kind not in ALLOWED_NODES:
        raise ResourceExpressionError(f"{kind.__name__} is not allowed in a requires expression: {text!r}")
    if kind is ast.Attribute:
        resource = _resource_name(node.value, names)  # type: ignore[attr-defined]
        if resource is None:
            raise ResourceExpressionError(f"only resource.field is allowed, not nested attributes: {text!r}")
        if node.attr.startswith("__"):  # type: ignore[attr-defined]
            raise ResourceExpressionError(f"field names starting with '__' are not allowed: {text!r}")
        resources.setdefault(resource, None)
        return
    if kind is ast.Name:
        if node.id in names:  # type: ignore[attr-defined]
            raise ResourceExpressionError(f"a namespaced resource needs a field (ns::resource.field): {text!r}")
        raise ResourceExpressionError(
            f"bare name {node.id!r} in requires expression {text!r} (use resource.field or a quoted string)"  # type: ignore[attr-defined]
        )
    if kind is ast.Constant:
        value = node.value  # type: ignore[attr-defined]
        if not isinstance(value, (str, int, float)):
            raise ResourceExpressionError(f"constant {value!r} is not allowed in a requires expression: {text!r}")
        return
    if kind is ast.Call:
        func = node.func  # type: ignore[attr-defined]
        if not isinstance(func, ast.Name) or func.id not in _FUNCTIONS:
            raise ResourceExpressionError(
                f"only the functions {', '.join(sorted(_FUNCTIONS))} may be called in a requires expression: {text!r}"
            )
        if node.keywords or len(node.args) != 1:  # type: ignore[attr-defined]
            raise ResourceExpressionError(f"{func.id}() takes exactly one argument here: {text!r}")
        # Checkbox does not look inside calls for resource names: what is only named there is not bound.
        _check(node.args[0], text, names, {}, depth + 1)  # type: ignore[attr-defined]
        return
    for child in ast.iter_child_nodes(node):
        _check(child, text, names, resources, depth + 1)


def _eval(node: ast.AST, bound: Mapping[str, Mapping[str, str]], names: Mapping[str, str]) -> Any:
    """The value of *node* as Python gives it; :class:`_NoMatch` where Python would raise."""
    kind = type(node)
    if kind is ast.BoolOp:
        is_and = type(node.op) is ast.And  # type: ignore[attr-defined]
        value: Any = None
        for item in node.values:  # type: ignore[attr-defined]
            value = _eval(item, bound, names)
            if _truth(value) != is_and:
                return value
        return value
    if kind is ast.UnaryOp:
        operand = _eval(node.operand, bound, names)  # type: ignore[attr-defined]
        if type(node.op) is ast.Not:  # type: ignore[attr-defined]
            return not _truth(operand)
        try:
            return -operand
        except TypeError:
            raise _NoMatch from None
    if kind is ast.Compare:
        left = _eval(node.left, bound, names)  # type: ignore[attr-defined]
        for op, comparator in zip(node.ops, node.comparators):  # type: ignore[attr-defined]
            right = _eval(comparator, bound, names)
            try:
                ok = _COMPARE[type(op)](left, right)
            except TypeError:
                raise _NoMatch from None
            if not ok:
                return False
            left = right
        return True
    if kind is ast.Attribute:
        record = bound.get(names.get(node.value.id, node.value.id))  # type: ignore[attr-defined]
        if record is None:  # a name only written inside a call: not bound, as in Checkbox
            raise _NoMatch
        return record.get(node.attr, "")  # type: ignore[attr-defined]
    if kind is ast.Constant:
        return node.value  # type: ignore[attr-defined]
    if kind in (ast.Tuple, ast.List):
        items = [_eval(item, bound, names) for item in node.elts]  # type: ignore[attr-defined]
        return tuple(items) if kind is ast.Tuple else items
    if kind is ast.Call:
        try:
            return _FUNCTIONS[node.func.id](_eval(node.args[0], bound, names))  # type: ignore[attr-defined]
        except (TypeError, ValueError, OverflowError):
            raise _NoMatch from None
    raise AssertionError(f"unchecked node {kind.__name__}")  # pragma: no cover


def _truth(value: Any) -> bool:
    return bool(value)


@attrs.frozen
class RequirementProgram:
    """All the ``requires:`` lines of a job; each must hold."""

    requirements: tuple[Requirement, ...]

    @classmethod
    def parse(cls, text: str) -> "RequirementProgram":
        """One expression per non-blank line (lines starting with ``#`` are comments)."""
        lines = [line.strip() for line in text.splitlines()]
        return cls(tuple(Requirement.parse(line) for line in lines if line and not line.startswith("#")))

    @property
    def resources(self) -> tuple[str, ...]:
        """Every resource name used, in order of first use, as written."""
        return tuple(dict.fromkeys(name for req in self.requirements for name in req.resources))

    def first_false(self, records: Mapping[str, Sequence[Mapping[str, str]]]) -> Requirement | None:
        """The first requirement that does not hold, or None if all hold."""
        for requirement in self.requirements:
            if not requirement.evaluate(records):
                return requirement
        return None


def namespace_of(job_id: str) -> str | None:
    """The namespace of a ``ns::name`` id, or None."""
    namespace, sep, _name = job_id.partition("::")
    return namespace if sep else None


def bare_name_index(job_ids: Iterable[str]) -> dict[str, list[str]]:
    """``name -> [ids ending in ::name]`` for :func:`resolve_resource` (build it once for many look-ups)."""
    index: dict[str, list[str]] = {}
    for job_id in job_ids:
        if "::" in job_id:
            index.setdefault(job_id.rsplit("::", 1)[1], []).append(job_id)
    return index


def resolve_resource(
    name: str,
    job_ids: Mapping[str, Any] | frozenset[str] | set[str],
    namespace: str | None = None,
    by_bare: Mapping[str, Sequence[str]] | None = None,
) -> str | None:
    """The job id a resource *name* of an expression refers to, or None.

    Tried in order: the name itself; ``namespace::name`` (the requiring job's
    namespace); for ``ns::name``, the bare ``name``; finally the only job id
    ending in ``::name``. *by_bare* (:func:`bare_name_index` of *job_ids*)
    makes that last step a look-up instead of a scan of every id.
    """
    if name in job_ids:
        return name
    if namespace and "::" not in name and f"{namespace}::{name}" in job_ids:
        return f"{namespace}::{name}"
    if "::" in name:
        bare = name.split("::", 1)[1]
        if bare in job_ids:
            return bare
        name = bare
    if by_bare is not None and "::" not in name:
        matches = by_bare.get(name, ())
    else:
        suffix = f"::{name}"
        matches = [job_id for job_id in job_ids if job_id.endswith(suffix)]
    return matches[0] if len(matches) == 1 else None
