"""Checkbox's real providers (``../shared/checkbox``) run here with Checkbox's outcomes, job for job.

The expected outcomes are those of the real Checkbox 1.18.1 on the same files
(``scripts/compat_checkbox.py``; for tutorial-base also the README beside the
providers): Checkbox's ``not-supported`` is our ``skipped-resource`` or
``skipped-dependency``. The jobs chosen need no hardware and no
``checkbox_support``. Also: manifests and launcher files.
"""

from __future__ import annotations

import json
import os
import textwrap

import pytest

from cli_helpers import assert_one_line_error, run
from plainbox_like.run.report import NullReporter, RunSummary
from plainbox_like.store.runconfig import RunConfig
from plainbox_like.run import prepare
from plainbox_like.define.launcher import read_launcher
from plainbox_like.define.manifest import MANIFEST_JOB_ID
from plainbox_like.store.reader import load_session
from plainbox_like.store.repository import SessionRepository
from shared_checkbox import PROVIDERS, needs_providers

NS = "com.canonical.certification::"
NOT_SUPPORTED = ("skipped-resource", "skipped-dependency")
#: tutorial-base with Checkbox 1.18.1 (silent launcher), in the order Checkbox ran the jobs.
TUTORIAL_BASE = [
    ("tutorial_resources", "pass"),
    ("tutorial/passing", "pass"),
    ("tutorial/failing", "fail"),
    ("tutorial/crashing", "crash"),
    ("tutorial/passing_dependency", "pass"),
    ("tutorial/failing_dependency", "not-supported"),
    ("tutorial/has_resource", "pass"),
    ("tutorial/no_resource", "not-supported"),
    ("tutorial/environment_variable", "pass"),
    ("tutorial/manual", "skip"),
    ("tutorial/user-interact", "skip"),
    ("tutorial/user-interact-verify", "skip"),
]


def _provider(name: str) -> str:
    return os.path.join(PROVIDERS, name)


class _Order(NullReporter):
    def __init__(self) -> None:
        self.jobs: list[str] = []

    def finished(self, job_id, result) -> None:
        self.jobs.append(job_id)


def _run(tmp_path, reporter=None, **config) -> tuple[RunSummary, object]:
    prepared = prepare.start_session(SessionRepository(str(tmp_path / "repo")), RunConfig(**config))
    summary = prepare.run_prepared(prepared, reporter)
    return summary, load_session(summary.path).state


def _same(checkbox: str, ours: str) -> bool:
    return ours == checkbox or (checkbox == "not-supported" and ours in NOT_SUPPORTED)


@needs_providers
def test_tutorial_base_runs_with_checkbox_outcomes_in_checkbox_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    order = _Order()
    _summary, state = _run(tmp_path, order, sources=[_provider("tutorial")], test_plan="tutorial-base")
    assert order.jobs == [NS + job for job, _ in TUTORIAL_BASE]  # skips in their place, as Checkbox
    for job, checkbox in TUTORIAL_BASE:
        ours = state.latest(NS + job).outcome
        assert _same(checkbox, ours), f"{job}: Checkbox {checkbox}, ours {ours}"
    assert "tutorial/failing did not pass (outcome fail)" in state.latest(NS + "tutorial/failing_dependency").skip_reason


@needs_providers
def test_resource_and_base_jobs_that_need_no_hardware(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    jobs = ["uname", "environment", "executable", "kernel_cmdline_attachment"]
    include = [NS + job for job in jobs] + [NS + "miscellanea/ubuntu-desktop-recommends"]
    _summary, state = _run(tmp_path, sources=[_provider("resource"), _provider("base")], include=include)
    for job in jobs:
        assert state.latest(NS + job).outcome == "pass", (job, state.latest(NS + job))
    # resource records of a real resource script, through the provider's bin/ on PATH
    assert any(record.get("name") == "bash" for record in state.resources[NS + "executable"])
    # Checkbox: not-supported (its package requirement is false on a machine without ubuntu-desktop)
    unmet = state.latest(NS + "miscellanea/ubuntu-desktop-recommends")
    assert unmet.outcome in NOT_SUPPORTED


@needs_providers
def test_manifest_file_and_unanswered_entries(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sources = [_provider("tutorial"), _provider("base")]
    _summary, state = _run(tmp_path, sources=sources, test_plan="tutorial-base-manifest")
    job = state.latest(NS + "tutorial/manifest")
    assert job.outcome == "skipped-resource"
    assert "manifest entry com.canonical.certification::has_touchscreen not answered" in job.skip_reason
    records = state.resources[MANIFEST_JOB_ID]
    assert any(r.get("has_touchscreen") == "False" and r.get("ns") == "com.canonical.certification" for r in records)

    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({NS + "has_touchscreen": True}))
    root = str(tmp_path / "cli")
    argv = ["run", "--manifest", str(manifest), "--test-plan", "tutorial-base-manifest", *sources]
    assert run(root, *argv) == 0
    (session,) = os.listdir(os.path.join(root, "sessions"))
    state = load_session(os.path.join(root, "sessions", session)).state
    assert state.latest(NS + "tutorial/manifest").outcome == "pass"


@pytest.mark.parametrize(
    "text, message",
    [
        ("[1, 2]", "expected a JSON object"),
        ('{"a::b": "yes"}', "expected true, false or a number"),
        ("{", "not JSON"),
    ],
)
def test_bad_manifest_file_is_a_one_line_error(tmp_path, capfd, text, message):
    manifest = tmp_path / "m.json"
    manifest.write_text(text)
    assert run(str(tmp_path / "r"), "run", "--manifest", str(manifest), "-c", "true") == 2
    assert_one_line_error(capfd.readouterr().err, str(manifest), message)


def test_manifest_entries_are_units(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.pxu").write_text(
        textwrap.dedent(
            """\
            unit: manifest entry
            id: ns::has_thing
            _name: A thing
            value-type: bool

            unit: manifest entry
            id: ns::num_ports
            _name: Ports
            value-type: natural
            resource-key: ports

            id: ns::needs_thing
            imports: from com.canonical.plainbox import manifest
            requires: manifest.has_thing == 'True'
            command: true

            id: ns::needs_ports
            imports: from com.canonical.plainbox import manifest
            requires: manifest.ports == '2'
            command: true
            """
        )
    )
    _summary, state = _run(tmp_path, sources=[str(tmp_path / "m.pxu")], manifest={"ns::num_ports": 2})
    assert state.latest("ns::needs_ports").outcome == "pass"
    assert state.latest("ns::needs_thing").outcome == "skipped-resource"
    assert "ns::has_thing not answered" in state.latest("ns::needs_thing").skip_reason
    assert state.resources[MANIFEST_JOB_ID] == [{"ns": "ns", "name": "ns", "has_thing": "False", "ports": "2"}]


LAUNCHER = """\
[launcher]
launcher_version = 1
app_id = com.example:tester
session_title = Nightly
stock_reports = none

[test plan]
unit = ns::plan
forced = yes

[test selection]
forced = yes
exclude = ns::skipped_by_launcher, ns::other_.*

[manifest]
ns::has_thing = yes

[environment]
FROM_LAUNCHER = 1

[transport:c3]
type = submission-service

[exporter:html]
unit = com.canonical.plainbox::html

[ui]
type = silent
"""
UNITS = """\
unit: manifest entry
id: ns::has_thing
_name: A thing
value-type: bool

unit: test plan
id: ns::plan
_name: Plan
include: .*

id: ns::env
command: test "$FROM_LAUNCHER" = 1

id: ns::skipped_by_launcher
command: false

id: ns::needs_thing
imports: from com.canonical.plainbox import manifest
requires: manifest.has_thing == 'True'
command: true
"""


def test_launcher_file_is_read_as_checkbox_reads_it(tmp_path):
    path = tmp_path / "launcher.conf"
    path.write_text(LAUNCHER)
    launcher = read_launcher(str(path))
    assert launcher.title == "Nightly" and launcher.app_id == "com.example:tester"
    assert launcher.test_plan == "ns::plan"
    assert launcher.exclude == ["ns::skipped_by_launcher", "ns::other_.*"]
    assert launcher.manifest == {"ns::has_thing": True}
    assert launcher.environment == {"FROM_LAUNCHER": "1"}
    assert launcher.ui_type == "silent"
    (note,) = launcher.notes
    assert "[launcher] stock_reports" in note and "[transport:c3]" in note and "[exporter:html]" in note


def test_launcher_command_runs_the_launchers_plan(tmp_path, capfd, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "launcher.conf").write_text(LAUNCHER)
    (tmp_path / "units.pxu").write_text(UNITS)
    root = str(tmp_path / "r")
    assert run(root, "launcher", str(tmp_path / "launcher.conf"), str(tmp_path / "units.pxu")) == 0
    err = capfd.readouterr().err
    assert err.count("not used by a batch run here") == 1
    (session,) = os.listdir(os.path.join(root, "sessions"))
    state = load_session(os.path.join(root, "sessions", session)).state
    assert state.metadata.title == "Nightly"
    assert "ns::skipped_by_launcher" not in state.results
    assert state.latest("ns::env").outcome == "pass"
    assert state.latest("ns::needs_thing").outcome == "pass"
    # run --launcher is the same, and an option given on the command line wins
    assert run(root, "run", "--launcher", str(tmp_path / "launcher.conf"), "--title", "mine", str(tmp_path / "units.pxu")) == 0
    titles = {load_session(os.path.join(root, "sessions", s)).state.metadata.title for s in os.listdir(os.path.join(root, "sessions"))}
    assert titles == {"Nightly", "mine"}


@pytest.mark.parametrize(
    "text, message",
    [
        ("not an ini file\n", "not a launcher (INI) file"),
        ("[ui]\ntype = fancy\n", "expected one of"),
        ("[manifest]\nns::x = maybe\n", "expected true, false or a number"),
        ("[launcher]\napp_id = x\n", "no test plan to run"),
    ],
)
def test_bad_launcher_is_a_one_line_error(tmp_path, capfd, text, message):
    (tmp_path / "l.conf").write_text(text)
    (tmp_path / "u.pxu").write_text("id: a\ncommand: true\n")
    assert run(str(tmp_path / "r"), "launcher", str(tmp_path / "l.conf"), str(tmp_path / "u.pxu")) == 2
    assert_one_line_error(capfd.readouterr().err, "l.conf", message)
    assert run(str(tmp_path / "r"), "run", "--launcher", str(tmp_path / "missing.conf"), "-c", "true") == 2
    assert_one_line_error(capfd.readouterr().err, "missing.conf", "cannot read")


def test_a_launchers_environment_is_the_checkbox_env_of_jinja2_templates(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "units.pxu").write_text(
        textwrap.dedent(
            """\
            id: ns::res
            plugin: resource
            command: echo 'name: one'

            unit: template
            template-resource: ns::res
            template-engine: jinja2
            id: ns::made-{{ name }}-{{ __checkbox_env__.get("FLAVOUR", "none") }}
            command: true
            """
        )
    )
    _summary, state = _run(tmp_path, sources=[str(tmp_path / "units.pxu")], environment={"FLAVOUR": "blue"})
    assert state.latest("ns::made-one-blue").outcome == "pass"


#: Checkbox 1.18.1's run order for tutorial-extended (tutorial + resource + base) once bootstrapped: the
#: bootstrap job it ran, then its run list (``list-bootstrapped``), each job's dependencies walked in the order
#: written (``scripts/compat_checkbox.py --order-only``; Checkbox's own walk of a dependency set changes from
#: process to process). ``network_available_eth0`` stands for the jobs the template makes, one per interface.
TUTORIAL_EXTENDED_BOOTSTRAPPED = """
    network_iface_info cdimage cpuinfo dmi_present dmi dpkg efi environment lsb meminfo module package snap
    requirements uname device dmi_attachment executable lsblk_attachment sysfs_attachment udev_attachment
    dkms_info_json udev_json raw_devices_dmi_json modprobe_json lspci_standard_config_json system_info_json
    kernel_cmdline_attachment info/kernel_config kernel_config_attachment miscellanea/submission-resources
    info/systemd-analyze info/systemd-analyze-critical-chain info/kernel-config-iommu-flag
    network_available_eth0 network_available network_speed
""".split()


@needs_providers
def test_template_made_jobs_are_listed_where_checkbox_puts_them(tmp_path, capfd, monkeypatch):
    monkeypatch.chdir(tmp_path)
    providers = [_provider("tutorial"), _provider("resource"), _provider("base")]
    plan = NS + "tutorial-extended"
    assert run(str(tmp_path / "repo"), "run", "--dry-run", "--bootstrap", "--test-plan", plan, *providers) == 0
    ours = [line.split("::", 1)[1] for line in capfd.readouterr().out.split()]
    made = [job for job in ours if job.startswith("network_available_")]
    if not made:
        pytest.skip("network_iface_info found no Ethernet interface here, so the template makes no job")
    at = TUTORIAL_EXTENDED_BOOTSTRAPPED.index("network_available_eth0")
    expected = TUTORIAL_EXTENDED_BOOTSTRAPPED[:at] + made + TUTORIAL_EXTENDED_BOOTSTRAPPED[at + 1 :]
    assert ours == expected  # the made jobs where the plan's pattern names them, not after everything


SMALL_PROVIDER = """\
unit: test plan
id: plan
_name: Made jobs in the middle
bootstrap_include:
  disks
include:
  first
  check_.*
  last

id: disks
plugin: resource
command: printf 'name: b\\n\\nname: a\\n'

id: first
command: true

id: last
command: true

unit: template
template-resource: disks
id: check_{name}
depends: helper
command: true

id: helper
command: true
"""


def test_template_made_jobs_run_where_the_plan_names_them(tmp_path, capfd, monkeypatch):
    # As Checkbox: once bootstrapped, the plan is selected again with the made jobs after the loaded ones
    # (records in order), so they come where their pattern is, each after what it depends on.
    monkeypatch.chdir(tmp_path)
    units = tmp_path / "units.pxu"
    units.write_text(SMALL_PROVIDER)
    expected = ["disks", "first", "helper", "check_b", "check_a", "last"]
    assert run(str(tmp_path / "dry"), "run", "--dry-run", "--bootstrap", "--test-plan", "plan", str(units)) == 0
    assert capfd.readouterr().out.split() == expected
    order = _Order()
    _summary, state = _run(tmp_path, order, sources=[str(units)], test_plan="plan")
    assert order.jobs == expected
    assert all(state.latest(job).outcome == "pass" for job in expected)
