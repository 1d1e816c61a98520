"""The session man pages: they render without warnings and keep up with the code.

``man/plainbox-like-session-state.7`` documents every persisted field, one
``.TP`` entry per field under a subsection per class; the structure page
documents every journal operation as a ``.TP`` entry of its ``journal``
subsection. These tests compare those entries with ``model.py`` so that the
documentation cannot silently fall behind (or run ahead of) the code.
"""

from __future__ import annotations

import ast
import inspect
import os
import re
import shutil
import subprocess
import textwrap

import attrs
import pytest

from plainbox_like.store import codec, iolog, model, writer
from plainbox_like.store.names import BACKUP_FILE, IO_LOGS, JOURNAL_FILE, LOCK_FILE, SHARE_DIR, STATE_FILE

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAN = os.path.join(REPO, "man")
STATE_PAGE = os.path.join(MAN, "plainbox-like-session-state.7")
STRUCTURE_PAGE = os.path.join(MAN, "plainbox-like-session-structure.7")
PAGES = [STATE_PAGE, STRUCTURE_PAGE]

#: Subsection of the state page that documents each persisted class.
STATE_SECTIONS = {
    "The session object": model.SessionState,
    "The metadata object": model.SessionMetadata,
    "Runner objects": model.Runner,
    "Attempt objects": model.Attempt,
    "Running job objects": model.RunningJob,
    "Leftover processes objects": model.LeftoverProcesses,
    "Leftover process objects": model.LeftoverProcess,
    "Placement objects": model.Placement,
    "Answered objects": model.Answered,
}
#: Fields every journal line has, documented next to the operations.
JOURNAL_COMMON = {"seq", "t", "op"}

_ESCAPES = {
    r"\-": "-",
    r"\(aq": "'",
    r"\(dq": '"',
    r"\(ti": "~",
    r"\(->": "->",
    r"\(en": "-",
    r"\(bu": "*",
    r"\&": "",
    r"\c": "",
    r"\e": "\\",
}


def unescape(text: str) -> str:
    """The roff escapes these pages use, as plain characters."""
    for escape, plain in _ESCAPES.items():
        text = text.replace(escape, plain)
    return text


def read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def plain_text(path: str) -> str:
    """The words of a page without macros' names, quotes around arguments, or escapes."""
    return plain_text_of(read(path))


def plain_text_of(source: str) -> str:
    words = []
    for line in source.splitlines():
        if line.startswith('.\\"'):
            continue
        if line.startswith("."):
            line = line.split(None, 1)[1] if " " in line else ""
            line = line.replace('"', " ")
        words.append(unescape(line))
    return "\n".join(words)


def section_text(path: str, heading: str) -> str:
    """The plain text of the ``.SH`` section *heading* of a page."""
    source = read(path)
    start = source.index(f".SH {heading}\n")
    end = source.find("\n.SH ", start + 1)
    return plain_text_of(source[start : end if end >= 0 else None])


def entries_by_section(path: str) -> dict[str, list[str]]:
    """For each ``.SH``/``.SS`` heading, the names that start its ``.TP`` entries' tags."""
    sections: dict[str, list[str]] = {}
    current = ""
    lines = read(path).splitlines()
    for index, line in enumerate(lines):
        if line.startswith((".SH ", ".SS ")):
            current = unescape(line[4:].strip().strip('"'))
            sections.setdefault(current, [])
        elif line.strip() == ".TP" and index + 1 < len(lines):
            tag = lines[index + 1]
            match = re.match(r'\.(?:B|BR|I|IR|IB|BI)\s+"?([^\s"]+)', tag)
            if match:
                sections.setdefault(current, []).append(unescape(match.group(1)))
    return sections


def journal_ops() -> set[str]:
    """The operations ``SessionState.apply`` handles, read from its source."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(model.SessionState.apply)))
    ops = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and isinstance(node.left, ast.Name) and node.left.id == "op":
            for comparator in node.comparators:
                for const in ast.walk(comparator):
                    if isinstance(const, ast.Constant) and isinstance(const.value, str):
                        ops.add(const.value)
    return ops


# -- rendering -------------------------------------------------------------------


@pytest.mark.parametrize("page", PAGES, ids=os.path.basename)
def test_groff_renders_page_without_warnings(page):
    if shutil.which("groff") is None:
        pytest.skip("groff is not installed")
    done = subprocess.run(["groff", "-man", "-ww", "-z", page], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


@pytest.mark.parametrize("page", PAGES, ids=os.path.basename)
def test_page_names_itself_and_links_the_other(page):
    text = plain_text(page)
    name = os.path.basename(page)[: -len(".7")]
    assert re.search(rf"^\.TH {re.escape(name.upper().replace('-', chr(92) + '-'))} 7 ", read(page), re.M)
    other = next(os.path.basename(p)[: -len(".7")] for p in PAGES if p != page)
    see_also = text.split("SEE ALSO", 1)[1]
    assert f"{other} (7)" in see_also or f"{other}(7)" in see_also
    assert "plainbox-like (1)" in see_also or "plainbox-like(1)" in see_also


# -- the state page keeps up with model.py ----------------------------------------


def test_state_page_mentions_every_field_of_every_persisted_class():
    text = plain_text(STATE_PAGE)
    missing = sorted(
        f"{cls.__name__}.{field.name}"
        for cls in STATE_SECTIONS.values()
        for field in attrs.fields(cls)
        if not re.search(rf"\b{re.escape(field.name)}\b", text)
    )
    assert not missing, f"not documented in {os.path.basename(STATE_PAGE)}: {missing}"


def test_persisted_classes_are_all_covered_by_the_state_page():
    # A new attrs class reachable from SessionState needs a subsection of its own.
    def reachable(cls, seen):
        seen.add(cls)
        for field in attrs.fields(cls):
            for name in re.findall(r"\w+", str(field.type)):
                candidate = getattr(model, name, None)
                if attrs.has(candidate) if isinstance(candidate, type) else False:
                    if candidate not in seen:
                        reachable(candidate, seen)
        return seen

    assert reachable(model.SessionState, set()) == set(STATE_SECTIONS.values())


@pytest.mark.parametrize("section, cls", STATE_SECTIONS.items(), ids=[c.__name__ for c in STATE_SECTIONS.values()])
def test_state_page_section_lists_exactly_the_fields_of_its_class(section, cls):
    sections = entries_by_section(STATE_PAGE)
    assert section in sections, f"no subsection {section!r} in {os.path.basename(STATE_PAGE)}"
    documented = sections[section]
    fields = [field.name for field in attrs.fields(cls)]
    assert sorted(set(fields) - set(documented)) == [], f"{cls.__name__} fields not documented under {section!r}"
    assert sorted(set(documented) - set(fields)) == [], f"documented under {section!r} but not fields of {cls.__name__}"
    assert len(documented) == len(set(documented)), f"a field is documented twice under {section!r}"


def test_state_page_documents_the_document_keys_and_versions():
    sections = entries_by_section(STATE_PAGE)
    assert set(sections["THE DOCUMENT"]) == set(codec.state_document(model.SessionState()))
    versions = [int(v) for v in sections["VERSIONS"]]
    assert versions == list(range(1, codec.VERSION + 1)), "every state version needs an entry under VERSIONS"
    first, last = codec.PLAINBOX_VERSIONS[0], codec.PLAINBOX_VERSIONS[-1]
    assert f"Versions {first} to {last} of Plainbox's format" in " ".join(plain_text(STATE_PAGE).split())


def test_state_page_documents_outcomes_and_flags():
    text = section_text(STATE_PAGE, "OUTCOMES")
    outcomes = {value for name, value in vars(model).items() if name.startswith("OUTCOME_")}
    outcomes |= set(model.SKIP_OUTCOMES) | set(model.FAILED_OUTCOMES)
    missing = sorted(o for o in outcomes if not re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", text))
    assert not missing, f"outcomes not documented under OUTCOMES: {missing}"
    flags = {value for name, value in vars(model).items() if name.startswith("FLAG_")}
    page = plain_text(STATE_PAGE)
    assert all(f'"{flag}"' in page for flag in flags), flags


# -- the structure page keeps up with model.py and writer.py ---------------------


def test_journal_ops_are_read_from_apply():
    # Guards the AST reading itself: these have been there from the start.
    assert {"start", "result", "plan", "meta"} <= journal_ops()


def test_structure_page_documents_every_journal_operation():
    documented = set(entries_by_section(STRUCTURE_PAGE).get("journal", []))
    ops = journal_ops()
    assert sorted(ops - documented) == [], "journal operations handled by SessionState.apply but not documented"
    assert JOURNAL_COMMON <= documented, "the fields every journal line has must be documented"
    stale = documented - ops - JOURNAL_COMMON
    assert sorted(stale) == [], "operations documented in the journal section that SessionState.apply does not handle"


def test_structure_page_lists_the_editable_metadata_fields():
    editable = model._EDITABLE_METADATA
    text = plain_text(STRUCTURE_PAGE)
    meta_entry = text.split("\nmeta\n", 1)[1].split("Setting any other name", 1)[0]
    missing = sorted(name for name in editable if not re.search(rf"\b{name}\b", meta_entry))
    assert not missing, f"editable metadata fields not listed under the meta operation: {missing}"


def test_structure_page_names_every_file_of_a_session_directory():
    text = plain_text(STRUCTURE_PAGE)
    names = [STATE_FILE, JOURNAL_FILE, LOCK_FILE, IO_LOGS, SHARE_DIR, BACKUP_FILE]
    for name in names:
        assert re.search(rf"^\.SS {re.escape(name.replace('-', chr(92) + '-'))}/?$", read(STRUCTURE_PAGE), re.M), name
    assert "index.sqlite3" in text
    assert "PLAINBOX_LIKE_REPOSITORY" in text and "PLAINBOX_SESSION_SHARE" in text
    assert set(writer.DURABILITY_MODES) <= set(entries_by_section(STRUCTURE_PAGE)["Durability"])


def test_structure_page_states_the_current_policy_numbers():
    text = " ".join(plain_text(STRUCTURE_PAGE).split())
    assert f"{writer.MIN_JOURNAL_BYTES // 1024} KiB" in text
    assert f"{writer.SNAPSHOT_INTERVAL:g} seconds" in text
    assert f"{writer.SNAPSHOT_TIME_BUDGET * 100:g}%" in text
    assert f"{iolog.FLUSH_INTERVAL:g} seconds" in text
    assert f"longer than {iolog.MAX_SLUG} characters" in text
    assert f"first {iolog.MAX_SLUG - 13} characters" in text
