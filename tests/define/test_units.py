"""Tests of the .pxu parser, command lists and loading (plainbox_like.define.records, pxu, loading, units)."""

from __future__ import annotations

import hashlib
import os
import re
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from plainbox_like.define import loading as loading_module
from plainbox_like.define import pxu as pxu_module
from plainbox_like.errors import UnitError
from plainbox_like.define.loading import COMMAND_LINE_PATH, jobs_from_commands, load_units
from plainbox_like.define.pxu import parse_pxu
from plainbox_like.define.units import (
    IncludePattern,
    JobDefinition,
    Origin,
    Override,
    TestPlan,
    UnitSet,
)

DATA = Path(__file__).parent.parent / "data" / "units"
PROVIDER = DATA / "provider"


def pxu(text: str, path: str = "t.pxu") -> UnitSet:
    return parse_pxu(textwrap.dedent(text), path)


def write(tmp_path: Path, name: str, content: str | bytes) -> str:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(textwrap.dedent(content), encoding="utf-8")
    return str(path)


# --------------------------------------------------------------------------- record syntax


def test_simple_job_fields() -> None:
    units = pxu(
        """\
        id: a
        plugin: resource
        command: echo hi
        summary: Say hi
        description: It says hi.
        depends: x, y z
        after: p,q
        environ: HOME, LANG PATH
        estimated_duration: 1.5
        flags: noreturn, preserve-locale
        user: root
        timeout: 10
        requires: package.name == 'bash'
        """
    )
    job = units.job("a")
    assert job == JobDefinition(
        id="a",
        plugin="resource",
        command="echo hi",
        summary="Say hi",
        description="It says hi.",
        depends=("x", "y", "z"),
        after=("p", "q"),
        environ=("HOME", "LANG", "PATH"),
        estimated_duration=1.5,
        flags=frozenset({"noreturn", "preserve-locale"}),
        user="root",
        timeout=10.0,
        requires="package.name == 'bash'",
    )
    assert job.origin == Origin("t.pxu", 1)
    assert units.warnings == ()


def test_defaults() -> None:
    job = pxu("id: only\n").job("only")
    assert job.plugin == "shell"
    assert job.command is None and job.summary is None and job.timeout is None
    assert job.depends == () and job.flags == frozenset() and job.extra == {}


def test_continuation_dedent_and_lone_dot() -> None:
    units = pxu(
        """\
        id: a
        command:
            for i in 1 2; do
                echo $i
            done
            .
            echo end
        description: First line
          second line
           .
          third line
        """
    )
    job = units.job("a")
    assert job.command == "for i in 1 2; do\n    echo $i\ndone\n\necho end"
    assert job.description == "First line\nsecond line\n\nthird line"


def test_tab_continuation_and_trailing_dot_lines_dropped() -> None:
    units = parse_pxu("id: a\ncommand:\n\t.\n\techo a\n\t\techo b\n\t.\n", "t.pxu")
    assert units.job("a").command == "echo a\n\techo b"


def test_crlf_line_endings() -> None:
    units = parse_pxu("id: a\r\ncommand:\r\n  echo 1\r\n  echo 2\r\n\r\nid: b\r\n", "t.pxu")
    assert units.job("a").command == "echo 1\necho 2"
    assert units.job_ids == ("a", "b")


def test_translatable_keys_and_comments() -> None:
    units = pxu(
        """\
        # leading comment
        id: a
        # comment inside a record does not end it
        _summary: Translated
        _description:
          line one
        # comment inside a value is skipped
          line two
        command:
          # an indented hash is part of the value
          true
        """
    )
    job = units.job("a")
    assert job.summary == "Translated"
    assert job.description == "line one\nline two"
    assert job.command == "# an indented hash is part of the value\ntrue"


def test_multiple_records_and_blank_lines() -> None:
    units = pxu(
        """\


        id: a


        id: b
        unit: job
        # comment

        \t
        id: c
        """
    )
    assert units.job_ids == ("a", "b", "c")
    assert [job.origin.line for job in units.jobs] == [3, 6, 11]


def test_key_with_dash_and_space_before_colon() -> None:
    units = pxu(
        """\
        id : a
        some-key_x:value
        """
    )
    assert units.job("a").extra == {"some-key_x": "value"}


def test_durations_accept_checkbox_forms() -> None:
    units = pxu(
        """\
        id: a
        estimated_duration: 1h 2m 3s
        timeout: 1m30s

        id: b
        estimated_duration: 0
        timeout: 2.5
        """
    )
    assert units.job("a").estimated_duration == 3723.0
    assert units.job("a").timeout == 90.0
    assert units.job("b").estimated_duration == 0.0
    assert units.job("b").timeout == 2.5


def test_duplicate_entries_in_lists_are_dropped() -> None:
    job = pxu("id: a\ndepends: x y x\n").job("a")
    assert job.depends == ("x", "y")


# --------------------------------------------------------------------------- warnings


def test_unknown_fields_warn_once_per_file_and_go_to_extra() -> None:
    units = pxu(
        """\
        id: a
        colour: red

        id: b
        colour: blue
        _purpose: Quiet, a known Plainbox field
        category_id: misc
        """
    )
    assert units.job("a").extra == {"colour": "red"}
    assert units.job("b").extra == {
        "colour": "blue",
        "purpose": "Quiet, a known Plainbox field",
        "category_id": "misc",
    }
    assert len(units.warnings) == 1
    assert units.warnings[0].startswith("t.pxu:2: ")
    assert "'colour'" in units.warnings[0]


def test_unknown_fields_warn_once_across_files(tmp_path: Path) -> None:
    one = write(tmp_path, "one.pxu", "id: a\ncolour: red\n\nid: c\ncolour: green\n")
    two = write(tmp_path, "two.pxu", "id: b\ncolour: blue\n")
    units = load_units([one, two])
    assert units.warnings == (
        f"{one}:2: unknown field 'colour' in job kept as extra data (3 jobs in 2 files; reported once)",
    )
    assert units.job("b").extra == {"colour": "blue"}


def test_other_unit_kinds_are_skipped_with_warning() -> None:
    units = pxu(
        """\
        unit: template
        template-resource: devices
        id: dev-{name}
        command: echo {name}

        unit: category
        id: cat
        _name: Category

        unit: template
        id: other-{name}

        unit: something   new
        id: x

        id: real
        """
    )
    assert units.job_ids == ("real",)
    assert [t.id for t in units.templates] == ["dev-name"]  # as Checkbox: the id without braces
    assert units.warnings == (
        "t.pxu:10: template 'other-name' has no 'template-resource' field: skipped",
        "t.pxu:13: unit kind 'something new' is not supported: skipped",
    )  # a category plays no part in a run: skipped without a word, as Checkbox runs


def test_legacy_name_field_is_used_as_id() -> None:
    units = pxu("name: old-style\ncommand: true\n")
    assert units.job_ids == ("old-style",)
    assert units.job("old-style").extra == {}
    assert units.warnings == ("t.pxu:1: job uses the legacy 'name' field as its id",)
    both = pxu("id: new\nname: a display name\n")
    assert both.job_ids == ("new",) and both.job("new").extra == {"name": "a display name"}
    assert both.warnings == ()


def test_legacy_files_with_local_jobs_warn_once_per_kind(tmp_path: Path) -> None:
    """Checkbox 0.3 job files: ``name:`` ids, ``plugin: local`` generators, no ``.pxu`` suffix."""
    local = "name: __{0}__\nplugin: local\ncommand: cat $CHECKBOX_SHARE/jobs/{0}.txt\n\n"
    jobs = "name: {0}/one\nplugin: shell\ncommand: true\n\nname: {0}/two\nplugin: odd\ncommand: true\n"
    one = write(tmp_path, "audio.txt.in", local.format("audio") + jobs.format("audio"))
    two = write(tmp_path, "disk.txt.in", local.format("disk") + jobs.format("disk"))
    units = load_units([one, two])
    assert units.job_ids == ("audio/one", "audio/two", "disk/one", "disk/two")
    assert units.warnings == (
        f"{one}:1: job uses the legacy 'name' field as its id (6 jobs in 2 files; reported once)",
        f"{one}:1: plugin 'local' is not supported: its jobs are skipped (first: '__audio__')"
        " (2 jobs in 2 files; reported once)",
        f"{one}:10: plugin 'odd' is not supported: such jobs are skipped when run (2 jobs in 2 files; reported once)",
    )


# --------------------------------------------------------------------------- test plans


def test_test_plan_with_overrides_and_comments() -> None:
    units = pxu(
        """\
        unit: test plan
        id: tp
        _name: My plan
        _description: quietly kept
        include:
          # comment line
          a.*    certification-status=blocker  other=1
          b      # trailing comment
          c#d
        exclude:
          a2
          a3
        mandatory_include: m
        bootstrap_include:
          boot
        nested_part:
          other-plan
        """
    )
    (plan,) = units.test_plans
    assert plan == TestPlan(
        id="tp",
        name="My plan",
        include=(
            IncludePattern("a.*", (("certification-status", "blocker"), ("other", "1"))),
            IncludePattern("b", ()),
            IncludePattern("c#d", ()),
        ),
        exclude=("a2", "a3"),
        mandatory_include=("m",),
        bootstrap_include=("boot",),
        nested_part=("other-plan",),
        extra={"description": "quietly kept"},
        include_overrides=(Override("a.*", "certification_status", "blocker"),),
    )
    assert plan.origin == Origin("t.pxu", 1)
    assert plan.include_overrides[0].origin == Origin("t.pxu", 7)
    assert units.test_plan("tp") is plan
    assert units.jobs == ()
    assert units.warnings == ("t.pxu:7: override 'other' after an include pattern is not supported: ignored",)


def test_test_plan_override_fields_and_comma_separated_overrides() -> None:
    units = pxu(
        """\
        unit: test plan
        id: tp
        bootstrap_include: res other-res
        mandatory_include: m category-id=core
        include:
          job-a certification_status=blocker, category-id=example
          job-b certification-status=non-blocker
        category-overrides:
          # Plainbox spells it with '-' or '_'
          apply other-example to job-[bc]
        certification_status_overrides:
          apply not-part-of-certification to job-c  # trailing comment
        """
    )
    (plan,) = units.test_plans
    assert plan.bootstrap_include == ("res", "other-res")
    assert [(o.pattern, o.field, o.value, o.origin.line) for o in plan.include_overrides] == [
        ("m", "category_id", "core", 4),
        ("job-a", "certification_status", "blocker", 6),
        ("job-a", "category_id", "example", 6),
        ("job-b", "certification_status", "non-blocker", 7),
    ]
    assert plan.category_overrides == (Override("job-[bc]", "category_id", "other-example"),)
    assert plan.category_overrides[0].origin == Origin("t.pxu", 10)
    assert plan.certification_status_overrides == (
        Override("job-c", "certification_status", "not-part-of-certification"),
    )
    assert plan.extra == {}
    assert units.warnings == ()


def test_bad_override_lines_warn_with_file_and_line() -> None:
    units = pxu(
        """\
        unit: test plan
        id: tp
        include:
          a certification_status=golden
          b notakeyvalue
          c category-id=ok
        category_overrides:
          apply cat to
          put cat on x
          apply cat to bad[regex
          apply good to c
        certification_status_overrides:
          apply blocking to c
        """
    )
    (plan,) = units.test_plans
    assert [item.pattern for item in plan.include] == ["a", "b", "c"]
    assert [(o.pattern, o.value) for o in plan.include_overrides] == [("c", "ok")]
    assert [(o.pattern, o.value) for o in plan.category_overrides] == [("c", "good")]
    assert plan.certification_status_overrides == ()
    lines = [w.split(": ", 1)[0] for w in units.warnings]
    assert lines == ["t.pxu:4", "t.pxu:5", "t.pxu:8", "t.pxu:9", "t.pxu:10", "t.pxu:13"]
    assert "unknown certification status 'golden'" in units.warnings[0]
    assert "'notakeyvalue'" in units.warnings[1]
    assert "expected 'apply VALUE to PATTERN', got 'apply cat to'" in units.warnings[2]
    assert "invalid regular expression 'bad[regex'" in units.warnings[4]
    assert "unknown certification status 'blocking'" in units.warnings[5]


def test_test_plan_bad_override_token_names_line() -> None:
    units = pxu(
        """\
        unit: test plan
        id: tp
        include:
          a
          b notakeyvalue
        """
    )
    assert units.test_plans[0].include == (IncludePattern("a"), IncludePattern("b"))
    (warning,) = units.warnings
    assert warning.startswith("t.pxu:5: include: ") and warning.endswith(": ignored")


def test_test_plan_without_id() -> None:
    units = pxu("\nunit: test plan\ninclude: a\n")
    assert units.test_plans == ()
    assert units.warnings == ("t.pxu:2: test plan has no 'id' field: test plan left out",)


def test_duplicate_test_plan_id() -> None:
    units = pxu("unit: test plan\nid: p\nname: one\n\nunit: test plan\nid: p\n")
    assert [plan.name for plan in units.test_plans] == ["one"]
    assert units.warnings == (
        "t.pxu:5: duplicate test plan id 'p' (first defined at t.pxu:1): test plan 'p' left out",
    )


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("text", "line", "message", "left_out"),
    [
        ("summary: no id\n", 1, "job has no 'id' field", "job"),
        ("id: a\n\n# c\ncommand: x\n", 4, "job has no 'id' field", "job"),
        ("id: a\n\nid: a\n", 3, "duplicate job id 'a' (first defined at t.pxu:1)", "job 'a'"),
        ("id: a\njust some text\n", 2, "expected 'key: value'", "job 'a'"),
        ("id: a\n: value\n", 2, "expected 'key: value'", "job 'a'"),
        ("  indented first\nid: a\n", 1, "continuation line without a field", "job 'a'"),
        ("id: a\n\n  orphan continuation\n", 3, "continuation line without a field", "job"),
        ("id: a\ntimeout: ten\n", 2, "timeout must be a positive number of seconds, got 'ten'", "job 'a'"),
        ("id: a\ntimeout: 0\n", 2, "timeout must be a positive", "job 'a'"),
        ("id: a\ntimeout: nan\n", 2, "timeout must be a positive", "job 'a'"),
        ("id: a\ntimeout: inf\n", 2, "timeout must be a positive", "job 'a'"),
        ("id: a\ncommand: x\ncommand: y\n", 3, "field 'command' given twice in one record", "job 'a'"),
        ("id:\n", 1, "job has an empty 'id'", "job"),
        ("unit: test plan\ninclude: a\n", 1, "test plan has no 'id' field", "test plan"),
    ],
)
def test_unusable_units_are_left_out_naming_file_and_line(text: str, line: int, message: str, left_out: str) -> None:
    units = parse_pxu(text + "\nid: other\n", "t.pxu")
    assert "other" in units.job_ids
    problems = [w for w in units.warnings if w.startswith(f"t.pxu:{line}: {message}")]
    assert len(problems) == 1, units.warnings
    assert problems[0].endswith(f": {left_out} left out")
    assert "\n" not in problems[0]


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("id: a\nsummary: x\n_summary: y\n", 3,
         "both 'summary' (line 2) and '_summary' given: the value of '_summary' (line 3) is used, as in Checkbox"),
        ("id: a b\n", 1, "job id 'a b' contains whitespace or a comma: kept as written"),
        ("id: a\nestimated_duration: soon\n", 2, "estimated_duration: not a duration, 'soon': ignored"),
        ("id: a\nestimated_duration: -1\n", 2, "estimated_duration: not a duration, '-1': ignored"),
    ],
)
def test_untidy_units_load_as_checkbox_reads_them_with_a_warning(text: str, line: int, message: str) -> None:
    (job,) = parse_pxu(text, "t.pxu").jobs
    (warning,) = parse_pxu(text, "t.pxu").warnings
    assert warning.startswith(f"t.pxu:{line}: {message}")
    assert job.estimated_duration is None
    assert job.summary in (None, "y")


def test_missing_file() -> None:
    with pytest.raises(UnitError, match=r"nope\.pxu: no such file or directory$"):
        load_units(["/nonexistent/nope.pxu"])


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read files without permission")
def test_unreadable_file(tmp_path: Path) -> None:
    path = write(tmp_path, "secret.pxu", "id: a\n")
    os.chmod(path, 0)
    with pytest.raises(UnitError, match="permission denied"):
        load_units([path])


def test_unreadable_file_simulated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "secret.pxu", "id: a\n")

    def deny(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(loading_module, "open", deny, raising=False)
    with pytest.raises(UnitError) as info:
        load_units([path])
    assert str(info.value) == f"{path}: cannot read file: permission denied"


def test_binary_file_with_nul(tmp_path: Path) -> None:
    path = write(tmp_path, "bin.pxu", b"id: a\n\nid: b\x00\n")
    with pytest.raises(UnitError) as info:
        load_units([path])
    assert info.value.line == 3
    assert str(info.value) == f"{path}:3: binary file (contains a NUL byte)"


def test_binary_file_invalid_utf8(tmp_path: Path) -> None:
    path = write(tmp_path, "commands.txt", b"echo ok\necho \xff\xfe\n")
    with pytest.raises(UnitError) as info:
        load_units([path])
    assert str(info.value) == f"{path}:2: not UTF-8 text (binary file?)"


def test_special_file_is_rejected(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(UnitError, match="not a regular file"):
        load_units([str(fifo)])


def test_duplicate_ids_across_files_name_both(tmp_path: Path) -> None:
    one = write(tmp_path, "a/one.pxu", "id: x\n")
    two = write(tmp_path, "b/two.pxu", "\nid: y\n\nid: x\n")
    units = load_units([one, two])
    assert units.job_ids == ("x", "y")
    assert units.job("x").origin == Origin(one, 1)
    assert units.warnings == (f"{two}:4: duplicate job id 'x' (first defined at {one}:1): left out",)


# --------------------------------------------------------------------------- loading


def test_directory_loads_pxu_files_recursively_sorted(tmp_path: Path) -> None:
    write(tmp_path, "b.pxu", "id: b\n")
    write(tmp_path, "a/z.pxu", "id: az\n")
    write(tmp_path, "a/y/deep.pxu", "id: ayd\n")
    write(tmp_path, "a-c.pxu", "id: a-c\n")
    write(tmp_path, "notes.txt", "echo not loaded\n")
    units = load_units([tmp_path])
    # sorted by relative path components: a/ (y/deep, z), a-c, b
    assert units.job_ids == ("ayd", "az", "a-c", "b")
    assert units.warnings == ()


def test_empty_directory_warns(tmp_path: Path) -> None:
    units = load_units([str(tmp_path)])
    assert units.jobs == ()
    assert units.warnings == (f"{tmp_path}: directory contains no .pxu files",)


def test_command_lists_number_across_files(tmp_path: Path) -> None:
    one = write(tmp_path, "one.txt", "# header\necho a\n\n   echo b   \n")
    two = write(tmp_path, "two", "  # indented comment\nls -l\n")
    units = load_units([one, two])
    assert units.job_ids == ("cmd-1", "cmd-2", "cmd-3")
    first = units.job("cmd-1")
    assert first.command == "echo a" and first.summary == "echo a" and first.plugin == "shell"
    assert first.origin == Origin(one, 2)
    assert units.job("cmd-2").command == "echo b"
    assert units.job("cmd-3").origin == Origin(two, 2)


def test_file_without_suffix_that_looks_like_units(tmp_path: Path) -> None:
    units = load_units([DATA / "misc" / "units-without-suffix"])
    assert units.job_ids == ("misc/one",)


def test_command_list_that_mentions_id_is_still_commands(tmp_path: Path) -> None:
    path = write(tmp_path, "cmds", "echo first\nid: not a key here\n")
    assert load_units([path]).job_ids == ("cmd-1", "cmd-2")


def test_jobs_from_commands() -> None:
    jobs = jobs_from_commands(["echo 1", "false"])
    assert [job.id for job in jobs] == ["c1", "c2"]
    assert jobs[1].command == "false" and jobs[1].summary == "false"
    assert jobs[1].origin == Origin(COMMAND_LINE_PATH, 2)
    with pytest.raises(UnitError, match="command 2 .* is empty"):
        jobs_from_commands(["true", "  "])


def test_load_units_with_commands(tmp_path: Path) -> None:
    listed = write(tmp_path, "list.txt", "echo x\n")
    units = load_units([listed], commands=["echo y"])
    assert units.job_ids == ("cmd-1", "c1")
    clash = write(tmp_path, "clash.pxu", "id: c1\n")
    units = load_units([clash], commands=["echo y"])
    assert units.job_ids == ("c1",) and units.job("c1").command is None
    assert units.warnings == (f"{COMMAND_LINE_PATH}:1: duplicate job id 'c1' (first defined at {clash}:1): left out",)


def test_realistic_provider_loads_with_warnings_only() -> None:
    units = load_units([PROVIDER])
    assert units.job_ids == (
        "info/cpuinfo",
        "info/environment",
        "storage/detect",
        "storage/read-speed",
        "after-suspend-storage/read-speed",
        "storage/write-speed",
        "storage/eject-media",
    )
    assert {plan.id for plan in units.test_plans} == {"smoke", "full"}
    text = "\n".join(units.warnings)
    assert "'xyzzy'" in text
    assert "'manifest entry'" not in text  # a unit kind read now (see units.manifest_entries)
    assert [entry.id for entry in units.manifest_entries] == ["has_camera"]
    for quiet in ("'category'", "'exporter'"):  # Checkbox's kinds that play no part in a run
        assert quiet not in text
    assert [t.id for t in units.templates] == ["storage/smart-name"]
    for quiet in ("purpose", "steps", "verification", "category_id", "imports"):
        assert f"'{quiet}'" not in text and f"'_{quiet}'" not in text
    assert len(units.warnings) == 1

    cpu = units.job("info/cpuinfo")
    assert cpu.plugin == "resource"
    assert cpu.command == (
        "# one record per line pair, like a Checkbox resource job\n"
        "printf 'count: %s\\n' \"$(nproc)\"\n\nprintf 'arch: %s\\n' \"$(uname -m)\""
    )
    env = units.job("info/environment")
    assert env.environ == ("LANG", "PATH", "HOME")
    assert env.estimated_duration == 1.0
    read = units.job("storage/read-speed")
    assert read.depends == ("storage/detect",)
    assert read.after == ("info/environment",)
    assert read.requires == "cpuinfo.count >= '1'\npackage.name == 'util-linux'"
    assert read.flags == {"also-after-suspend", "noreturn"}
    assert read.user == "root"
    assert read.estimated_duration == 90.0 and read.timeout == 120.0
    assert read.environ == ("STORAGE_DEVICE",)
    assert read.command is not None and read.command.startswith("dev=$(lsblk")
    assert read.extra == {
        "category_id": "storage",
        "imports": "from com.canonical.plainbox import manifest",
    }
    detect = units.job("storage/detect")
    assert detect.description == (
        "Lists the block devices of the machine, one resource\nrecord per device."
    )
    manual = units.job("storage/eject-media")
    assert manual.plugin == "manual" and manual.command is None
    assert manual.extra["steps"] == "1. Insert a USB stick.\n2. Commence the test."
    smoke = units.test_plan("smoke")
    assert smoke.name == "Quick smoke test"
    assert smoke.include == (
        IncludePattern("storage/.*", (("certification-status", "blocker"),)),
        IncludePattern("storage/read-speed", (("certification-status", "non-blocker"),)),
    )
    assert smoke.exclude == ("storage/eject-media",)
    assert smoke.mandatory_include == ("info/environment",)
    assert smoke.bootstrap_include == ("info/cpuinfo",)


# --------------------------------------------------------------------------- checksum


def test_checksum_is_pinned() -> None:
    job = JobDefinition(
        id="a",
        command="echo hi",
        depends=("b",),
        flags=frozenset({"z", "y"}),
        timeout=5,
        extra={"k": "v\u00e9"},
        summary="ignored",
        origin=Origin("x", 1),
    )
    canonical = (
        '{"after":[],"command":"echo hi","depends":["b"],"environ":[],'
        '"extra":{"k":"v\\u00e9"},"flags":["y","z"],"id":"a","plugin":"shell",'
        '"requires":null,"timeout":5.0,"user":null}'
    )
    assert job.checksum == hashlib.sha256(canonical.encode()).hexdigest()


def test_checksum_sensitivity() -> None:
    base = JobDefinition(id="a", command="echo 1", summary="s", description="d")
    same = JobDefinition(
        id="a",
        command="echo 1",
        summary="other",
        description="other",
        estimated_duration=3,
        origin=Origin("elsewhere.pxu", 9),
    )
    assert base.checksum == same.checksum
    assert base != same  # summary is part of equality, not of the checksum
    for changed in (
        JobDefinition(id="a", command="echo 2"),
        JobDefinition(id="b", command="echo 1"),
        JobDefinition(id="a", command="echo 1", plugin="resource"),
        JobDefinition(id="a", command="echo 1", depends=("x",)),
        JobDefinition(id="a", command="echo 1", after=("x",)),
        JobDefinition(id="a", command="echo 1", environ=("X",)),
        JobDefinition(id="a", command="echo 1", flags=frozenset({"f"})),
        JobDefinition(id="a", command="echo 1", user="root"),
        JobDefinition(id="a", command="echo 1", timeout=1),
        JobDefinition(id="a", command="echo 1", requires="x"),
        JobDefinition(id="a", command="echo 1", extra={"k": "v"}),
    ):
        assert changed.checksum != base.checksum, changed


def test_checksum_same_from_parsed_file_and_independent_of_origin() -> None:
    one = pxu("id: a\nsummary: one\ncommand: echo 1\n", "one.pxu").job("a")
    two = pxu("# moved\n\nid: a\n_summary: two\ncommand:\n  echo 1\n", "two.pxu").job("a")
    assert one.checksum == two.checksum
    assert len(one.checksum) == 64


def test_equality_and_hash_ignore_origin() -> None:
    one = JobDefinition(id="a", extra={"k": "v"}, origin=Origin("x", 1))
    two = JobDefinition(id="a", extra={"k": "v"}, origin=Origin("y", 2))
    assert one == two and hash(one) == hash(two)
    assert one != JobDefinition(id="a", extra={"k": "w"})


def test_string_for_list_fields_is_rejected() -> None:
    with pytest.raises(TypeError):
        JobDefinition(id="a", depends="b")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- properties

_ID = st.from_regex(r"[a-z][a-z0-9/._-]{0,12}", fullmatch=True)
_KEY = st.from_regex(r"[a-z][a-z0-9_-]{0,10}", fullmatch=True).filter(
    lambda key: key not in pxu_module._JOB_FIELDS | {"name"}
)
_LINE = st.text(
    alphabet=st.sampled_from("abz09 \t#:.=-_/$'\"\\{}()\u00e9\u00a0\u20ac\U0001f600"),
    max_size=12,
).filter(lambda line: not line or (line.strip() and line.strip() != "."))


@st.composite
def _values(draw: st.DrawFn) -> str:
    lines = draw(st.lists(_LINE, min_size=1, max_size=4))
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    assume(lines)
    assume(any(line and line[0] not in " \t" for line in lines))
    return "\n".join(lines)


def _dump_field(key: str, value: str, translatable: bool, inline: bool) -> str:
    name = f"_{key}" if translatable else key
    lines = value.split("\n")
    if inline and lines[0] == lines[0].strip() and (
        len(lines) == 1 or any(line and line[0] not in " \t" for line in lines[1:])
    ):
        head, rest = f"{name}: {lines[0]}", lines[1:]
    else:
        head, rest = f"{name}:", lines
    return "\n".join([head] + [f"  {line}" if line else "  ." for line in rest])


@st.composite
def _records(draw: st.DrawFn) -> list[tuple[str, str | None, dict[str, str]]]:
    ids = draw(st.lists(_ID, min_size=1, max_size=4, unique=True))
    records = []
    for job_id in ids:
        command = draw(st.none() | _values())
        extra = draw(st.dictionaries(_KEY, _values(), max_size=2))
        records.append((job_id, command, extra))
    return records


@given(records=_records(), data=st.data())
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_round_trip(
    records: list[tuple[str, str | None, dict[str, str]]], data: st.DataObject
) -> None:
    chunks = []
    for job_id, command, extra in records:
        fields = [("id", job_id)]
        if command is not None:
            fields.append(("command", command))
        fields.extend(extra.items())
        fields = data.draw(st.permutations(fields))
        lines = []
        for key, value in fields:
            if data.draw(st.booleans()):
                lines.append("# a comment")
            lines.append(
                _dump_field(
                    key,
                    value,
                    translatable=key != "id" and data.draw(st.booleans()),
                    inline=data.draw(st.booleans()),
                )
            )
        chunks.append("\n".join(lines))
    separator = data.draw(st.sampled_from(["\n\n", "\n\n\n", "\n \t\n", "\n\n# c\n\n"]))
    units = parse_pxu(separator.join(chunks) + "\n", "r.pxu")
    assert units.job_ids == tuple(job_id for job_id, _, _ in records)
    for (job_id, command, extra), job in zip(records, units.jobs):
        assert job.command == command
        assert job.extra == extra


@given(st.text(alphabet=st.sampled_from("ab:_ -#.\t\n\r5xé"), max_size=80))
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_arbitrary_text_parses_or_raises_unit_error_with_line(text: str) -> None:
    try:
        parse_pxu(text, "f.pxu")
    except UnitError as error:
        assert error.line is not None and error.line >= 1
        assert str(error).startswith("f.pxu:")
        assert "\n" not in str(error)


# --------------------------------------------------------------------------- namespaces


def _provider(tmp_path, marker: str, content: str):
    root = tmp_path / "provider"
    (root / "units").mkdir(parents=True)
    (root / marker).write_text(content)
    (root / "units" / "jobs.pxu").write_text(
        "id: a\ncommand: true\n\nid: b\ndepends: a\nafter: com.other::x\ncommand: true\n\n"
        "id: c\ndepends: com.example::a\ncommand: true\n\n"
        "unit: test plan\nid: tp\ninclude: b\n"
    )
    return root


def test_namespace_from_manage_py(tmp_path):
    root = _provider(tmp_path, "manage.py", "from x import setup\nsetup(name='com.example:demo', namespace='com.example')\n")
    units = load_units([str(root / "units")])
    assert units.job_ids == ("com.example::a", "com.example::b", "com.example::c")
    assert units.job("com.example::b").depends == ("com.example::a",)
    assert units.job("com.example::b").after == ("com.other::x",)  # unknown: kept as written
    assert units.job("com.example::c").depends == ("com.example::a",)
    assert units.test_plan("tp").id == "com.example::tp"


def test_namespace_from_provider_file_and_manage_py_name(tmp_path):
    root = _provider(tmp_path, "demo.provider", "[PlainBox Provider]\nname = org.test:demo\nversion = 1\n")
    assert load_units([str(root / "units")]).job_ids[0] == "org.test::a"
    other = tmp_path / "other"
    (other / "units").mkdir(parents=True)
    (other / "manage.py").write_text("setup(name='org.two:demo', version='1')\n")
    (other / "units" / "u.pxu").write_text("id: a\ncommand: true\n")
    assert load_units([str(other / "units" / "u.pxu")]).job_ids == ("org.two::a",)


def test_explicit_namespace_wins_and_ids_with_namespace_are_kept(tmp_path):
    root = _provider(tmp_path, "manage.py", "setup(namespace='com.example')\n")
    units = load_units([str(root / "units")], namespace="my.ns")
    assert units.job_ids == ("my.ns::a", "my.ns::b", "my.ns::c")
    # c's "com.example::a" resolves to the job "a" of namespace my.ns (same name, only one)
    assert units.job("my.ns::c").depends == ("my.ns::a",)
    path = tmp_path / "q.pxu"
    path.write_text("id: other::q\ncommand: true\n\nid: r\ndepends: q\ncommand: true\n")
    assert load_units([str(path)], namespace="n").job_ids == ("other::q", "n::r")
    assert load_units([str(path)], namespace="n").job("n::r").depends == ("other::q",)


def test_files_without_provider_have_no_namespace(tmp_path):
    path = tmp_path / "plain.pxu"
    path.write_text("id: a\ncommand: true\n")
    assert load_units([str(path)]).job_ids == ("a",)
    (tmp_path / "manage.py").write_text("this is not python (\n")
    assert load_units([str(path)]).job_ids == ("a",)


def test_units_man_page_documents_every_interpreted_field() -> None:
    page = (Path(__file__).parent.parent.parent / "man" / "plainbox-like-units.5").read_text()
    text = page.replace("\\-", "-")
    fields = pxu_module._JOB_FIELDS | pxu_module._PLAN_FIELDS
    fields |= {"template-resource", "template-filter", "template-id", "template-engine"}
    missing = sorted(f for f in fields if f not in ("unit",) and not re.search(rf"\b{re.escape(f)}\b", text))
    assert missing == []
