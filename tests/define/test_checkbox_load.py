"""Loading what Checkbox loads: untidy records, units left out, siblings, ``before``, and hostile unit trees."""

from __future__ import annotations

import os
import re
import textwrap
from pathlib import Path

import pytest
from cli_helpers import run

from plainbox_like.define.scheduler import Scheduler
from plainbox_like.define.selection import select_jobs
from plainbox_like.define import plan as planning

from plainbox_like.errors import PlanError
from plainbox_like.store.reader import load_session
from plainbox_like.define.loading import load_units
from plainbox_like.define.pxu import parse_pxu
from cli_helpers import cli
from factories import only_session


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def _outcomes(root: str) -> dict[str, tuple[str, str | None]]:
    path = only_session(root)
    state = load_session(path).state
    return {job_id: (results[-1].outcome, results[-1].skip_reason) for job_id, results in state.results.items()}


# --------------------------------------------------------------------------- issue 14: hostile unit trees


def test_a_chain_of_1200_nested_parts_runs(tmp_path, capsys):
    parts = ["id: leaf-job\ncommand: true\n"]
    for n in range(1200):
        link = f"nested_part: p{n + 1}" if n < 1199 else "include: leaf-job"
        parts.append(f"unit: test plan\nid: p{n}\n{link}\n")
    units = _write(tmp_path / "chain.pxu", "\n".join(parts))
    root = str(tmp_path / "repo")
    assert run(root, "run", "--test-plan", "p0", str(units)) == 0
    assert _outcomes(root) == {"leaf-job": ("pass", None)}
    assert run(root, "run", "--dry-run", "--test-plan", "p0", str(units)) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "leaf-job"


def test_a_fifo_named_like_a_unit_file_is_skipped_not_opened(tmp_path):
    _write(tmp_path / "units" / "a.pxu", "id: a\ncommand: true\n")
    os.mkfifo(tmp_path / "units" / "x.pxu")
    os.symlink(tmp_path / "nowhere.pxu", tmp_path / "units" / "y.pxu")
    done = cli(tmp_path / "repo", "run", "--dry-run", str(tmp_path / "units"), timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["a"]
    assert f"warning: {tmp_path}/units/x.pxu: not a regular file: skipped" in done.stderr
    assert f"warning: {tmp_path}/units/y.pxu: not a regular file: skipped" in done.stderr


def test_a_dependency_cycle_names_each_unit_file_and_line(tmp_path):
    path = _write(tmp_path / "cycle.pxu", """\
        id: ok
        command: true

        id: p
        after: q
        command: true

        id: q
        depends: p
        command: true
        """)
    units = load_units([str(path)])
    with pytest.raises(PlanError) as info:
        planning.build_plan(units.jobs)
    assert str(info.value) == f"dependency cycle: p ({path}:4) -> q ({path}:8) -> p ({path}:4)"


# --------------------------------------------------------------------------- untidy records, units left out


def test_untidy_records_load_with_one_warning_each_naming_file_and_line(tmp_path, capsys):
    path = _write(tmp_path / "untidy.pxu", """\
        id: both
        summary: plain
        command: true
        _summary: translatable

        id: with space
        command: true

        id: odd
        colour: red
        command: true

        unit: test plan
        id: tp
        include: .*
        """)
    root = str(tmp_path / "repo")
    assert run(root, "plans", str(path)) == 0
    captured = capsys.readouterr()
    assert captured.out.split() == ["tp"]
    warnings = captured.err.splitlines()
    assert warnings == [
        f"plainbox-like: warning: {path}:4: both 'summary' (line 2) and '_summary' given: the value of '_summary'"
        " (line 4) is used, as in Checkbox",
        f"plainbox-like: warning: {path}:6: job id 'with space' contains whitespace or a comma: kept as written,"
        " as in Checkbox (no depends/after list can name it)",
        f"plainbox-like: warning: {path}:10: unknown field 'colour' in job kept as extra data",
    ]
    units = load_units([str(path)])
    assert units.job("both").summary == "translatable"
    assert units.job_ids == ("both", "with space", "odd")


def test_a_unit_that_cannot_be_used_is_left_out_and_its_dependents_skipped_naming_it(tmp_path, capsys):
    units_dir = tmp_path / "units"
    _write(units_dir / "a.pxu", """\
        id: broken
        command: true
        command: twice

        id: needs-broken
        depends: broken
        command: true

        id: fine
        command: true
        """)
    _write(units_dir / "b.pxu", "id: other\ncommand: true\n")
    root = str(tmp_path / "repo")
    assert run(root, "run", str(units_dir)) == 0
    err = capsys.readouterr().err
    left_out = f"{units_dir}/a.pxu:3: field 'command' given twice in one record (first at line 2): job 'broken' left out"
    assert f"plainbox-like: warning: {left_out}\n" in err
    outcomes = _outcomes(root)
    assert outcomes["fine"] == outcomes["other"] == ("pass", None)
    assert outcomes["needs-broken"] == ("skipped-dependency", f"dependency broken could not be loaded ({left_out})")
    assert "broken" not in outcomes


# --------------------------------------------------------------------------- siblings, after-suspend, before

SIBLINGS = """\
    id: audio/play
    _summary: Play a sound
    depends: audio/detect
    flags: also-after-suspend also-after-suspend-manual preserve-locale
    group: sound
    command: play
    _siblings: [
      {"id": "audio/play-loud", "_summary": "Play loudly", "command": "play --loud"}
      ]

    id: audio/detect
    command: true
    """


def test_siblings_and_after_suspend_jobs_are_made_as_checkbox_makes_them():
    units = parse_pxu(textwrap.dedent(SIBLINGS), "s.pxu")
    assert units.warnings == ()
    assert units.job_ids == (
        "audio/play",
        "audio/play-loud",
        "after-suspend-audio/play-loud",
        "after-suspend-manual-audio/play-loud",
        "after-suspend-audio/play",
        "after-suspend-manual-audio/play",
        "audio/detect",
    )
    auto = units.job("after-suspend-audio/play")
    assert auto.summary == "Play a sound after suspend (S3)"
    assert auto.depends == ("audio/detect", "audio/play", "com.canonical.certification::suspend/suspend_advanced_auto")
    assert auto.flags == {"preserve-locale"}
    assert auto.extra["group"] == "after-suspend-sound"
    manual = units.job("after-suspend-manual-audio/play")
    assert manual.depends[-1] == "com.canonical.certification::suspend/suspend_advanced"
    loud = units.job("audio/play-loud")
    assert (loud.summary, loud.command, loud.depends) == ("Play loudly", "play --loud", ("audio/detect",))
    assert "siblings" not in loud.extra
    assert units.job("after-suspend-audio/play-loud").summary == "Play loudly after suspend (S3)"
    # the job itself runs before the suspend jobs its siblings wait for
    assert units.job("audio/play").before == (
        "com.canonical.certification::suspend/suspend_advanced_auto",
        "com.canonical.certification::suspend/suspend_advanced",
    )


def test_before_orders_a_job_ahead_of_its_targets():
    units = parse_pxu("id: late\ncommand: true\n\nid: early\nbefore: late\ncommand: true\n", "b.pxu")
    assert planning.build_plan(units.jobs).order == ("early", "late")
    scheduler = Scheduler(planning.build_plan(units.jobs))
    assert scheduler.next_decision().job_id == "early"
    assert scheduler.next_decision() is None  # late waits for early
    scheduler.finish("early", "fail")
    assert scheduler.next_decision().job_id == "late"  # before only orders: any outcome will do


def test_setup_jobs_load_as_jobs_and_setup_include_comes_first():
    units = parse_pxu(textwrap.dedent("""\
        unit: setup job
        id: setup/install
        plugin: shell
        command: true

        id: main
        command: true

        id: boot
        plugin: resource
        command: true

        unit: test plan
        id: tp
        setup_include: setup/install
        bootstrap_include: boot
        include: main
        """), "s.pxu")
    assert units.warnings == ()
    assert units.job("setup/install").extra["unit"] == "setup job"
    selected = select_jobs(units, "tp", [], [])
    assert [job.id for job in selected] == ["setup/install", "boot", "main"]


# --------------------------------------------------------------------------- the real providers of ../shared/checkbox

from shared_checkbox import PROVIDERS, needs_providers  # noqa: E402

NS = "com.canonical.certification::"


@pytest.fixture(scope="module")
def real_units():
    if PROVIDERS is None:
        pytest.skip("../shared/checkbox/providers (Checkbox's real providers) is absent")
    return load_units([os.path.join(PROVIDERS, name) for name in sorted(os.listdir(PROVIDERS))])


@needs_providers
def test_all_real_providers_load_with_warnings_naming_file_and_line(real_units):
    assert len(real_units.test_plans) == 598 + 5  # base + resource (as checkbox-cli lists them) + tutorial
    assert real_units.dropped == {}
    for warning in real_units.warnings:
        assert re.match(re.escape(PROVIDERS) + r"/\S+\.(pxu|yaml):\d+: ", warning), warning
    assert f"{PROVIDERS}/base/units/canary/test-plan.yaml:1: YAML unit files are not read: skipped (5 files;" in (
        "\n".join(real_units.warnings)
    )  # as Checkbox 1.18 (the plans listed are those of .pxu files)
    ids = real_units.job_ids
    assert NS + "query/tpm_setpresence -status" in ids  # an id with a space, kept as Checkbox keeps it
    assert real_units.job(NS + "stress_s3_cycles_iterations_multiple").summary.startswith("Generate multiple suspend")


@needs_providers
def test_real_siblings_are_named_and_placed_as_checkbox_does(real_units):
    ids = list(real_units.job_ids)
    detect = ids.index(NS + "bluetooth/detect-output")
    assert ids[detect + 1] == NS + "after-suspend-bluetooth/detect-output"
    after = real_units.job(NS + "after-suspend-bluetooth/detect-output")
    assert after.depends[-2:] == (NS + "bluetooth/detect-output", NS + "suspend/suspend_advanced_auto")
    assert "also-after-suspend" not in after.flags
    assert after.summary.endswith(" after suspend (S3)")
    crucible = ids.index(NS + "graphics/crucible_core_stencil_triangles")
    assert ids[crucible + 1] == NS + "graphics/crucible_core_aspect_stencil"
    assert real_units.job(NS + "graphics/crucible_core_aspect_stencil").command == (
        "crucible.test 'func.miptree.s8-uint.aspect-stencil.view-2d.levels02.*'"
    )


@needs_providers
def test_real_templates_are_made_as_checkbox_makes_them(real_units):
    from plainbox_like.define.templates import instantiate_template

    templates = {template.id: template for template in real_units.templates}
    jinja = templates[NS + "self/content-plug-connected-name"]
    assert jinja.engine == "jinja2"
    (job,), warnings = instantiate_template(jinja, [{"name": "graphics-core22", "snap": "checkbox"}])
    assert warnings == []
    assert job.id == NS + "self/content-plug-connected-graphics-core22"
    assert job.command == "plug_connected_test.py checkbox graphics-core22"
    assert job.extra["template-id"] == NS + "self/content-plug-connected-name"
    # the default engine: __index__ counts the records the filter accepts, from 1
    from plainbox_like.run.prepare import _record_filter
    from plainbox_like.define.resource import RequirementProgram

    iperf = templates[NS + "suspend/iperf_before_suspend_ether_auto_device__index___interface"]
    records = [
        {"category": "NETWORK", "interface": "eth0"}, {"category": "DISK", "interface": "-"},
        {"category": "NETWORK", "interface": "eth1"},
    ]  # fmt: skip
    jobs, warnings = instantiate_template(iperf, records, _record_filter(RequirementProgram.parse(iperf.filter)))
    assert warnings == []
    assert [job.id for job in jobs] == [
        NS + "suspend/iperf_before_suspend_ether_auto_device1_eth0",
        NS + "suspend/iperf_before_suspend_ether_auto_device2_eth1",
    ]
    assert jobs[1].description.endswith("against device 2 (eth1) before suspend.")


def test_jinja2_fields_get_the_variables_checkbox_gives(monkeypatch):
    from plainbox_like.define.templates import instantiate_template

    monkeypatch.setenv("PBL_TEST_VALUE", "from-env")
    monkeypatch.delenv("SNAP", raising=False)
    units = parse_pxu(textwrap.dedent("""\
        id: plain-jinja
        template-engine: jinja2
        command: echo {{ __system_env__["PBL_TEST_VALUE"] }} {{ __checkbox_env__.get("X", "none") }} {{ __on_ubuntucore__ }}

        unit: template
        template-resource: disks
        template-engine: jinja2
        id: disk/{{ __index__ }}-{{ name | upper }}
        command:
         {% if kind == "ssd" %}trim{% else %}skip{% endif %} {{ name }}
        """), "j.pxu")
    assert units.warnings == ()
    assert units.job("plain-jinja").command == "echo from-env none False"
    (template,) = units.templates
    assert template.id == "disk/__index__-nameupper"  # Checkbox's slug of the id
    jobs, warnings = instantiate_template(
        template, [{"name": "sda", "kind": "ssd"}, {"name": "sdb", "kind": "hdd"}], checkbox_env={"X": "y"}
    )
    assert warnings == []
    assert [(job.id, job.command) for job in jobs] == [("disk/1-SDA", "trim sda"), ("disk/2-SDB", "skip sdb")]
    broken = parse_pxu("id: bad\ntemplate-engine: jinja2\ncommand: {% if %}\n\nid: good\n", "b.pxu")
    assert broken.job_ids == ("good",)
    (warning,) = broken.warnings
    assert warning.startswith("b.pxu:3: field 'command': Jinja2 TemplateSyntaxError") and warning.endswith(
        "job 'bad' left out"
    )


def test_salvage_jobs_run_only_when_what_they_salvage_failed():
    units = parse_pxu(textwrap.dedent("""\
        id: flaky
        command: false

        id: fine
        command: true

        id: repair-flaky
        salvages: flaky
        command: true

        id: repair-fine
        salvages: fine
        command: true

        id: repair-absent
        salvages: absent
        command: true
        """), "s.pxu")
    plan = planning.build_plan(units.jobs)
    assert plan.order.index("repair-flaky") > plan.order.index("flaky")
    scheduler = Scheduler(plan)
    decisions = {}
    while not scheduler.done():
        decision = scheduler.next_decision()
        decisions[decision.job_id] = decision
        if decision.action == "run":
            scheduler.finish(decision.job_id, "fail" if decision.job_id == "flaky" else "pass")
    assert decisions["repair-flaky"].action == "run"
    assert (decisions["repair-fine"].outcome, decisions["repair-fine"].skip_reason) == (
        "skipped-dependency", "salvages fine, which did not fail (outcome pass)")
    assert decisions["repair-absent"].skip_reason == "salvages absent, which did not fail (not part of the run)"


def test_a_group_runs_together_once_all_it_waits_for_is_done():
    units = parse_pxu(textwrap.dedent("""\
        id: g1
        group: fp
        command: true

        id: other
        command: true

        id: g2
        group: fp
        after: late
        command: true

        id: late
        command: true

        id: g3
        group: fp
        depends: g1
        command: true
        """), "g.pxu")
    # without the group: g1, other, late, g2, g3; as in Checkbox, the group's jobs stay together, where the
    # first of them is, after everything any of them waits for (Checkbox's solver walks the group as one job)
    assert planning.build_plan(units.jobs).order == ("late", "g1", "g2", "g3", "other")


def test_an_unknown_test_plan_among_hundreds_names_the_closest_not_all(tmp_path, capsys):
    text = "id: j\ncommand: true\n\n" + "\n".join(
        f"unit: test plan\nid: area{n:03}-cert-automated\ninclude: j\n" for n in range(300)
    )
    path = _write(tmp_path / "plans.pxu", text)
    assert run(str(tmp_path / "repo"), "run", "--dry-run", "--test-plan", "area007-cert-automatd", str(path)) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("plainbox-like: error: unknown test plan 'area007-cert-automatd' (300 known test plans")
    assert "similar: area007-cert-automated" in line and len(line) < 400


def test_a_nested_part_cycle_names_each_test_plan_file_and_line(tmp_path):
    path = _write(tmp_path / "plans.pxu", """\
        unit: test plan
        id: outer
        nested_part: inner

        unit: test plan
        id: inner
        nested_part: outer
        """)
    with pytest.raises(PlanError) as info:
        select_jobs(load_units([str(path)]), "outer", [], [])
    assert str(info.value) == (
        f"test plan cycle through nested_part: outer ({path}:1) -> inner ({path}:5) -> outer ({path}:1)"
    )


def test_template_jobs_added_later_still_run_before_their_before_targets():
    units = parse_pxu(textwrap.dedent("""\
        id: resource
        plugin: resource
        command: true

        id: suspend
        command: true
        """), "t.pxu")
    scheduler = Scheduler(planning.build_plan(units.jobs))
    first = scheduler.next_decision()
    assert first.job_id == "resource"  # suspend is ready as well, waiting in the heap
    made = parse_pxu("id: made\nbefore: suspend\ncommand: true\n", "m.pxu").jobs
    scheduler.extend(made)  # what a template makes once the resource job has run
    scheduler.finish("resource", "pass")
    assert scheduler.next_decision().job_id == "made"
    assert scheduler.next_decision() is None  # suspend waits for made
    scheduler.finish("made", "pass")
    assert scheduler.next_decision().job_id == "suspend"
    scheduler.finish("suspend", "pass")
    assert scheduler.next_decision() is None and scheduler.done()


def test_jinja2_units_get_the_checkbox_environment_given_to_the_load(tmp_path):
    path = _write(tmp_path / "env.pxu", """\
        id: uses-env
        template-engine: jinja2
        command: install {{ __checkbox_env__.get("TEST_SNAP", "test-snapd-tools") }}
        """)
    assert load_units([str(path)]).job("uses-env").command == "install test-snapd-tools"
    loaded = load_units([str(path)], checkbox_env={"TEST_SNAP": "other-snap"})
    assert loaded.job("uses-env").command == "install other-snap"
