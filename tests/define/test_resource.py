"""Resource records and ``requires:`` expressions, and how a run uses them."""

from __future__ import annotations

import os
import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plainbox_like.define import plan as planning
from plainbox_like.run import batch
from plainbox_like.store.runconfig import RunConfig
from plainbox_like.run import prepare
from plainbox_like.store.model import OUTCOME_PASS, OUTCOME_SKIPPED_DEPENDENCY, OUTCOME_SKIPPED_RESOURCE
from plainbox_like.define.resource import (
    read_records,
    ALLOWED_NODES,
    Requirement,
    RequirementProgram,
    ResourceExpressionError,
    parse_records,
)
from plainbox_like.store.reader import load_session
from plainbox_like.store.repository import SessionRepository

# -- records ------------------------------------------------------------------------------


def test_records_are_separated_by_blank_lines():
    text = "name: bash\nversion: 5.1\n\n\n  \nname: zsh\nversion: 5.9\n"
    assert parse_records(text) == [{"name": "bash", "version": "5.1"}, {"name": "zsh", "version": "5.9"}]


def test_continuation_lines_comments_and_colons():
    text = "# header\ndesc: first\n  second\n .\n third\nk:v:w\n\n"
    assert parse_records(text) == [{"desc": "first\n second\n\nthird", "k": "v:w"}]


@pytest.mark.parametrize(
    "text, problem",
    [
        ("a: 1\n\nb: 2\nnot a field\n\nc: 3\n", "line 4: not a 'key: value' line"),
        ("a: 1\n\n\tb: tab\n", None),  # a tab line with a colon is a field, as in Checkbox
        ("a: 1\n\n\tno colon\n", "line 3: not a 'key: value' line"),
        ("a: 1\n\nb: 1\nb: 2\n", "line 4: key 'b' given twice"),
        ("a: 1\n\n orphan\n", "line 3: a continuation line with no field before it"),
    ],
)
def test_invalid_rfc822_stops_the_reading_as_in_checkbox(text, problem):
    records, error = read_records(text)
    if problem is None:
        assert error is None and records == [{"a": "1"}, {"b": "tab"}]
    else:
        assert error.startswith(problem)
        assert records == [{"a": "1"}]  # the records before it stay, the one it is in is dropped


def test_empty_output_has_no_records():
    assert parse_records("") == []
    assert parse_records("\n\n  \n") == []


def test_a_repeated_key_ends_the_records():
    assert parse_records("a: 0\n\na: 1\na: 2\n") == [{"a": "0"}]


_keys = st.from_regex(r"[A-Za-z_][A-Za-z0-9_-]{0,10}", fullmatch=True)
_values = st.from_regex(r"[A-Za-z0-9_.=/-][A-Za-z0-9 _.=/-]{0,20}", fullmatch=True).map(str.strip).filter(bool)


@given(st.lists(st.dictionaries(_keys, _values, min_size=1, max_size=5), max_size=6))
def test_records_round_trip(records):
    text = "\n\n".join("\n".join(f"{k}: {v}" for k, v in record.items()) for record in records)
    assert parse_records(text) == records


@given(st.text(max_size=300))
def test_parsing_any_text_never_fails(text):
    records = parse_records(text)
    assert all(isinstance(r, dict) and r for r in records)


# -- expressions --------------------------------------------------------------------------

PACKAGES = {"package": [{"name": "bash", "version": "5"}, {"name": "zsh", "version": "10"}]}


@pytest.mark.parametrize(
    "text, expected",
    [
        ('package.name == "bash"', True),
        ("package.name == 'fish'", False),
        ('package.name != "bash"', True),  # zsh
        ('package.name == "bash" and package.version == "5"', True),
        # as in Checkbox: without parentheses, each side of 'and' is evaluated over the records on its own
        ('package.name == "bash" and package.version == "10"', True),
        ('(package.name == "bash" and package.version == "10")', False),  # one record must satisfy all
        ('package.name == "fish" or package.version == "10"', True),
        ('not package.name == "bash"', True),
        ('package.name in ("fish", "zsh")', True),
        ('package.name in ["fish"]', False),
        ('package.name not in ["bash", "zsh"]', False),
        ('"ash" in package.name', True),
        ("package.version > 7", False),  # a string and a number do not compare: no record matches
        ('package.version == 10', False),  # "10" is not 10
        ("int(package.version) >= 11 or package.name == 'x'", False),
        ("int(package.version) < 6 and package.name == 'bash'", True),
        ("package.name == 'zsh' and int(package.version) > -1", True),
        ('package.version > "7"', False),  # string comparison: "5" and "10" are both < "7"
        ("package.name > 1", False),  # not a number: no record matches
        ('package.missing == "x"', False),
        ('package.missing == ""', True),  # a missing field is the empty string, as in Checkbox
        ('not package.missing == "x"', True),
        ('len(package.name) == 3 and package.name != "x"', True),
        ('package.name == "bash" == package.name', True),
    ],
)
def test_evaluation(text, expected):
    assert Requirement.parse(text).evaluate(PACKAGES) is expected


def test_a_resource_without_records_makes_the_expression_false():
    requirement = Requirement.parse('package.name == "bash"')
    assert requirement.evaluate({}) is False
    assert requirement.evaluate({"package": []}) is False
    assert Requirement.parse('not package.name == "bash"').evaluate({}) is False


def test_names_only_inside_calls_are_not_resources_as_in_checkbox():
    with pytest.raises(ResourceExpressionError, match="names no resource"):
        Requirement.parse("int(cpu.count) > 1")
    mixed = Requirement.parse("int(cpu.count) > 1 and (cpu.platform == 'x86_64' or cpu.platform == 'i386')")
    assert mixed.resources == ("cpu",)
    assert mixed.evaluate({"cpu": [{"count": "1", "platform": "x86_64"}, {"count": "4", "platform": "x86_64"}]})
    # a name written only inside the call is not bound: the expression cannot be true
    other = Requirement.parse("int(mem.size) > 1 and (cpu.count == '4')")
    assert other.resources == ("cpu",)
    assert not other.evaluate({"cpu": [{"count": "4"}], "mem": [{"size": "9"}]})


def test_several_resources_need_one_matching_combination():
    requirement = Requirement.parse('cpu.arch == "arm" and package.name == "zsh"')
    assert requirement.resources == ("cpu", "package")
    assert requirement.evaluate({**PACKAGES, "cpu": [{"arch": "x86"}, {"arch": "arm"}]})
    assert not requirement.evaluate({**PACKAGES, "cpu": [{"arch": "x86"}]})


def test_no_cap_on_records_evaluated_per_resource_as_checkbox_does():
    many = [{"n": str(i)} for i in range(2000)]
    # split at ' and ': each side over its own resource, 2 x 2,000 records, not 4,000,000 combinations
    assert Requirement.parse('a.n == "1999" and b.n == "0"').evaluate({"a": many, "b": many})
    assert not Requirement.parse('a.n == "1999" and b.n == "x"').evaluate({"a": many, "b": many})
    # with parentheses Checkbox tries combinations of one record of each, without a limit
    few = [{"n": str(i)} for i in range(400)]
    assert Requirement.parse('(a.n == "399" and b.n == "398")').evaluate({"a": few, "b": few})


def test_namespaced_resources():
    requirement = Requirement.parse('com.canonical.certification::package.name == "bash"')
    assert requirement.resources == ("com.canonical.certification::package",)
    assert requirement.evaluate({"com.canonical.certification::package": PACKAGES["package"]})
    with pytest.raises(ResourceExpressionError, match="needs a field"):
        Requirement.parse('com.canonical::package == "x"')


def test_program_is_one_expression_per_line_all_must_hold():
    program = RequirementProgram.parse(
        textwrap.dedent(
            """\
            package.name == "bash"
            # a comment
            int(cpu.count) > 1 and cpu.count != ""

            """
        )
    )
    cpu = 'int(cpu.count) > 1 and cpu.count != ""'
    assert [r.text for r in program.requirements] == ['package.name == "bash"', cpu]
    assert program.resources == ("package", "cpu")
    assert program.first_false({**PACKAGES, "cpu": [{"count": "4"}]}) is None
    assert program.first_false({**PACKAGES, "cpu": [{"count": "1"}]}).text == cpu


@pytest.mark.parametrize(
    "text",
    [
        '__import__("os").system("true")',
        "open(package.name)",
        "package.name.upper()",
        "package.__class__",
        "package.__class__.__bases__",
        "package.name[0]",
        "(lambda: package.name)()",
        "[x for x in package.name]",
        "package.name if package.name else 1",
        "package.name + 'x' == 'y'",
        "2 ** 1000000 == package.x",
        "package.name == b'x'",
        "package.name == None",
        "package.name == ...",
        "x",
        "package",
        "1 == 1",
        "",
        "package.name = 'x'",
        "package.name == 'x'; import os",
        "f'{package.name}' == 'x'",
        "{package.name} == 'x'",
        "int(package.name, 16) == 1",
        "int(x=package.name) == 1",
        "getattr(package, 'name') == 'x'",
        "__ns0__.name == 'x'",
        "package.name := 1",
        "await package.name",
        "(" * 500 + "package.name == 'x'" + ")" * 500,
        "not " * 300 + "package.name == 'x'",
        "package.name == '" + "x" * 5000 + "'",
    ],
)
def test_malicious_or_unsupported_expressions_are_rejected(text):
    with pytest.raises(ResourceExpressionError):
        Requirement.parse(text)


def test_only_listed_node_types_are_allowed():
    names = {node.__name__ for node in ALLOWED_NODES}
    assert names == {
        "Expression", "BoolOp", "And", "Or", "UnaryOp", "Not", "USub", "Compare", "Attribute", "Name",
        "Load", "Constant", "Tuple", "List", "Call", "Eq", "NotEq", "Lt", "LtE", "Gt", "GtE", "In", "NotIn",
    }  # fmt: skip


_fields = st.sampled_from(["a", "b", "c"])
_consts = st.one_of(st.sampled_from(['"1"', '"x"', "1", "2", "-3", '"ab"']))
_atoms = st.builds(lambda f, op, c: f"r.{f} {op} {c}", _fields, st.sampled_from(["==", "!=", "<", ">=", "in"]), _consts)


def _combine(children):
    return st.one_of(
        st.builds(lambda a, b: f"({a}) and ({b})", children, children),
        st.builds(lambda a, b: f"({a}) or ({b})", children, children),
        st.builds(lambda a: f"not ({a})", children),
    )


_record_values = st.sampled_from(["1", "2", "x", "ab", "-3", "a"])


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(_atoms, _combine, max_leaves=6),
    st.lists(st.dictionaries(_fields, _record_values), max_size=4),
)
def test_any_record_semantics_match_a_reference(text, records):
    """True iff some record makes the expression true, as Python (Checkbox's eval) says on a record object
    whose missing fields are the empty string; an exception makes that record not match."""

    class Record:
        def __init__(self, data):
            self.data = data

        def __getattr__(self, name):
            return self.__dict__["data"].get(name, "")

    def reference(record):
        try:
            return bool(eval(text, {"r": Record(record)}))  # noqa: S307 - expressions of the strategy above
        except TypeError:
            return False

    expected = any(reference(r) for r in records)
    assert Requirement.parse(text).evaluate({"r": records}) is expected


UNITS = """\
id: cpu
plugin: resource
command: printf 'count: 4\\narch: amd64\\n\\ncount: 1\\narch: arm\\n'

id: needs_arm
requires: cpu.arch == "arm"
command: echo arm

id: needs_ppc
requires:
 cpu.count == "4"
 cpu.arch == "ppc"
command: echo ppc

id: after_ppc
depends: needs_ppc
command: true

id: broken
plugin: resource
command: exit 1

id: needs_broken
requires: broken.x == "1"
command: true

id: bad_expression
requires: cpu.arch.upper() == "ARM"
command: true

id: unknown_resource
requires: nowhere.x == "1"
command: true
"""


def _run(tmp_path, text=UNITS):
    path = tmp_path / "units.pxu"
    path.write_text(text)
    config = RunConfig(sources=[str(path)])
    prepared = prepare.start_session(SessionRepository(str(tmp_path / "repo")), config)
    summary = prepare.run_prepared(prepared)
    return summary, load_session(summary.path)


def test_run_stores_records_and_skips_unmet_requirements(tmp_path):
    _summary, loaded = _run(tmp_path)
    state = loaded.state
    outcome = {job: state.latest(job).outcome for job in state.desired_job_list}
    reason = {job: state.latest(job).skip_reason for job in state.desired_job_list}
    assert state.resources == {"cpu": [{"count": "4", "arch": "amd64"}, {"count": "1", "arch": "arm"}], "broken": []}
    assert outcome["needs_arm"] == OUTCOME_PASS
    assert outcome["needs_ppc"] == OUTCOME_SKIPPED_RESOURCE
    assert reason["needs_ppc"] == 'resource expression is false: cpu.arch == "ppc"'
    assert outcome["after_ppc"] == OUTCOME_SKIPPED_DEPENDENCY
    assert outcome["needs_broken"] == OUTCOME_SKIPPED_RESOURCE
    # as in Checkbox: a failed resource job that printed nothing gives one record with no fields
    assert reason["needs_broken"] == 'resource expression is false: broken.x == "1"'
    assert outcome["bad_expression"] == OUTCOME_SKIPPED_RESOURCE
    assert reason["bad_expression"].startswith("invalid requires:")
    assert outcome["unknown_resource"] == OUTCOME_SKIPPED_RESOURCE
    assert "nowhere" in reason["unknown_resource"]


def test_resume_uses_stored_records_without_rerunning_the_resource_job(tmp_path):
    marker = tmp_path / "ran"
    text = textwrap.dedent(
        f"""\
        id: res
        plugin: resource
        command: echo run >> {marker}; echo 'kind: good'

        id: stop_here
        command: kill -TERM $PPID; sleep 5

        id: user
        after: stop_here
        requires: res.kind == "good"
        command: true
        """
    )
    path = tmp_path / "units.pxu"
    path.write_text(text)
    repo = SessionRepository(str(tmp_path / "repo"))
    # Run only the resource job, as if the runner died right after it.
    config = RunConfig(sources=[str(path)])
    prepared = prepare.start_session(repo, config)
    runner = batch.BatchRunner(prepared.writer, planning.build_plan([prepared.plan.jobs["res"]]))
    try:
        runner.run()
        flags = prepared.writer.state.metadata.flags
    finally:
        prepared.writer.close()
    assert "incomplete" in flags
    assert marker.read_text() == "run\n"
    state = load_session(prepared.writer.path).state
    assert state.resources == {"res": [{"kind": "good"}]}

    resumed = prepare.resume_session(repo, prepared.writer.id)
    assert resumed.finished == {"res": OUTCOME_PASS}
    resumed.plan = planning.build_plan([resumed.plan.jobs["res"], resumed.plan.jobs["user"]])
    summary = prepare.run_prepared(resumed)
    state = load_session(summary.path).state
    assert state.latest("user").outcome == OUTCOME_PASS
    assert marker.read_text() == "run\n"  # not run again
    assert len(state.results["res"]) == 1


def test_resources_survive_a_snapshot_and_journal_replay(tmp_path):
    _summary, loaded = _run(tmp_path)
    session_dir = loaded.path
    again = load_session(session_dir).state
    assert again.resources == loaded.state.resources
    assert os.path.exists(os.path.join(session_dir, "session"))


# -- templates ---------------------------------------------------------------------------

TEMPLATES = """\
id: disks
plugin: resource
command: printf 'name: sda\\nkind: ssd\\n\\nname: sdb\\nkind: hdd\\n\\nname: sdc\\nkind: ssd\\n'

unit: template
template-resource: disks
template-filter: disks.kind == "ssd"
id: disk/trim-{name}
_summary: Trim {name}
command: echo trimming /dev/{name} {{braces}}
depends: before

id: before
command: true

unit: template
template-resource: disks
template-engine: jinja2
id: disk/jinja-{{ name }}
command: echo {{ name }}

id: last
command: true
"""


def test_template_instantiation_from_records():
    from plainbox_like.define.pxu import parse_pxu
    from plainbox_like.define.templates import instantiate_template

    units = parse_pxu(TEMPLATES, "t.pxu")
    plain, jinja = units.templates
    assert jinja.supported and units.warnings == ()
    jobs, warnings = instantiate_template(plain, [{"name": "sda"}, {"nom": "x"}, {"name": "sda"}])
    assert [job.id for job in jobs] == ["disk/trim-sda"]
    assert jobs[0].command == "echo trimming /dev/sda {braces}"
    assert jobs[0].summary == "Trim sda"
    assert jobs[0].depends == ("before",)
    assert jobs[0].extra["template-id"] == "disk/trim-name"  # Checkbox's: the id without braces
    assert any("no field 'name'" in w for w in warnings) and any("again" in w for w in warnings)
    (made,), warnings = instantiate_template(jinja, [{"name": "sda"}])
    assert (made.id, made.command, made.extra["template-id"], warnings) == ("disk/jinja-sda", "echo sda", "disk/jinja-name", [])


def test_template_jobs_join_the_run_after_their_resource_and_survive_resume(tmp_path):
    summary, loaded = _run(tmp_path, TEMPLATES)
    state = loaded.state
    assert summary.counts == {"pass": 8}
    assert state.desired_job_list == [
        "disks", "before", "last", "disk/trim-sda", "disk/trim-sdc", "disk/jinja-sda", "disk/jinja-sdb", "disk/jinja-sdc"
    ]
    assert state.results["disk/trim-sda"][0].outcome == OUTCOME_PASS
    stem = state.results["disk/trim-sdc"][0].io_log_filename[: -len(".record.gz")]
    with open(os.path.join(loaded.path, stem + ".stdout")) as handle:
        assert handle.read() == "trimming /dev/sdc {braces}\n"
    # A resume re-makes the template jobs from the stored records: nothing is changed or run again.
    repo = SessionRepository(str(tmp_path / "repo"))
    resumed = prepare.resume_session(repo, summary.session_id)
    assert set(resumed.plan.order) == set(state.desired_job_list)
    assert len(resumed.finished) == 8
    again = prepare.run_prepared(resumed)
    assert again.counts == {"pass": 8}
    assert all(len(attempts) == 1 for attempts in load_session(again.path).state.results.values())


def test_template_jobs_follow_the_test_plan_selection(tmp_path):
    text = TEMPLATES + "\nunit: test plan\nid: tp\nbootstrap_include: disks\ninclude:\n disk/trim-sdc\n last\n"
    path = tmp_path / "units.pxu"
    path.write_text(text)
    config = RunConfig(sources=[str(path)], test_plan="tp")
    prepared = prepare.start_session(SessionRepository(str(tmp_path / "repo")), config)
    assert prepared.plan.order == ("disks", "last")
    summary = prepare.run_prepared(prepared)
    state = load_session(summary.path).state
    # the selected template job pulls in its dependency, as any selected job does
    assert state.desired_job_list == ["disks", "last", "before", "disk/trim-sdc"]
    assert summary.counts == {"pass": 4}


def test_cli_progress_counts_template_jobs(tmp_path, capsys):
    from plainbox_like.cli.main import main

    path = tmp_path / "units.pxu"
    path.write_text(TEMPLATES)
    assert main(["--repository", str(tmp_path / "repo"), "run", str(path)]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert len(lines) == 8 and lines[-1].startswith("[8/8]")
    assert "jinja2" not in captured.err


def test_dry_run_with_bootstrap_lists_template_jobs(tmp_path, capsys):
    from plainbox_like.cli.main import main

    text = TEMPLATES + "\nunit: test plan\nid: tp\nbootstrap_include: disks\ninclude:\n disk/.*\n last\n"
    path = tmp_path / "units.pxu"
    path.write_text(text)
    repo = tmp_path / "repo"
    assert main(["--repository", str(repo), "run", "--dry-run", "--test-plan", "tp", str(path)]) == 0
    assert capsys.readouterr().out.split() == ["disks", "last"]
    args = ["--repository", str(repo), "run", "--dry-run", "--bootstrap", "--json", "--test-plan", "tp", str(path)]
    assert main(args) == 0
    import json

    # as in Checkbox: the made jobs where the plan's pattern names them (before ``last``), template by template
    assert json.loads(capsys.readouterr().out) == [
        "disks", "before", "disk/trim-sda", "disk/trim-sdc", "disk/jinja-sda", "disk/jinja-sdb", "disk/jinja-sdc", "last"
    ]
    assert not repo.exists() or not SessionRepository(str(repo)).session_paths()
    assert main(["--repository", str(repo), "run", "--bootstrap", str(path)]) == 2
    assert "--bootstrap only goes with --dry-run" in capsys.readouterr().err
    assert main(["--repository", str(repo), "run", "--dry-run", "--bootstrap", str(path)]) == 2
    assert "--bootstrap needs --test-plan" in capsys.readouterr().err


def test_resource_output_past_the_limit_is_left_out_with_a_warning_naming_the_job(tmp_path, monkeypatch):
    from plainbox_like.store import limits

    monkeypatch.setattr(limits, "MAX_RESOURCE_OUTPUT", 80)
    path = tmp_path / "units.pxu"
    # 3 records of 23 bytes (69) fit; the 4th crosses the limit; then 1 MB more that is never read.
    path.write_text(
        "id: big\nplugin: resource\n"
        "command: for n in 1 2 3 4; do printf 'name: record-number-%s\\n\\n' $n; done; yes xxxxxxxxx | head -c 1000000\n"
    )
    config = RunConfig(sources=[str(path)])
    prepared = prepare.start_session(SessionRepository(str(tmp_path / "repo")), config)
    summary = prepare.run_prepared(prepared)
    state = load_session(summary.path).state
    assert state.resources["big"] == [{"name": f"record-number-{n}"} for n in (1, 2, 3)]
    warnings = [w for w in prepared.notes if "big" in w]
    assert len(warnings) == 1 and "more than 80 bytes" in warnings[0] and "kept the 3 record(s)" in warnings[0], prepared.notes
