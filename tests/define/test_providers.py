"""Finding providers as Checkbox finds them: --providers, PROVIDERPATH, .provider files, the standard places."""

from __future__ import annotations

import os
import re
from pathlib import Path

from cli_helpers import cli
from factories import only_session
from shared_checkbox import PROVIDERS, needs_providers

from plainbox_like.define.providers import find_providers, provider_search_path, read_provider_file


def _tree(root: Path, name: str = "demo", namespace: str = "org.example") -> Path:
    for sub in ("units", "bin", "data"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "manage.py").write_text(
        "from plainbox.provider_manager import setup, N_\n"
        f"setup(name={name!r}, namespace={namespace!r}, version='1.0', description=N_('x'), gettext_domain='dom')\n"
    )
    return root


def _provider_file(directory: Path, location: Path, name: str = "demo", **extra: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    lines = ["[PlainBox Provider]", f"location = {location}", f"name = {name}", "version = 1.0"]
    lines += [f"{k} = {v}" for k, v in extra.items()]
    path = directory / f"{name.replace(':', '.')}.provider"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_search_path_is_providerpath_when_set_else_the_standard_places(tmp_path):
    assert provider_search_path({"PROVIDERPATH": f"{tmp_path}/a:{tmp_path}/b"}) == [f"{tmp_path}/a", f"{tmp_path}/b"]
    standard = provider_search_path({"XDG_DATA_HOME": str(tmp_path)})
    assert standard[:2] == ["/usr/local/share/plainbox-providers-1", "/usr/share/plainbox-providers-1"]
    assert standard[2] == os.path.join(str(tmp_path), "plainbox-providers-1")


def test_provider_files_sorted_by_path_with_their_layout(tmp_path):
    zed = _tree(tmp_path / "zed", "zed", "org.zed")
    alpha = _tree(tmp_path / "alpha", "alpha", "org.alpha")
    (alpha / "jobs").mkdir()
    path = tmp_path / "pp"
    _provider_file(path, zed, "zed", namespace="org.zed")
    _provider_file(path, alpha, "alpha", namespace="org.alpha", gettext_domain="dom")
    providers, warnings = find_providers(environ={"PROVIDERPATH": str(path)})
    assert warnings == []
    assert [p.name for p in providers] == ["alpha", "zed"]
    first = providers[0]
    assert (first.namespace, first.base_dir, first.bin_dir, first.data_dir) == (
        "org.alpha", str(alpha), str(alpha / "bin"), str(alpha / "data"))
    assert first.units_dirs == (str(alpha / "units"), str(alpha / "jobs"))
    assert first.gettext_domain == "dom"


def test_namespace_from_the_name_and_relocatable_files(tmp_path):
    tree = _tree(tmp_path / "p")
    path = _provider_file(tmp_path / "pp", Path("/nonexistent"), "org.example:thing", relocatable="True")
    os.replace(path, tree / path.name)
    provider = read_provider_file(str(tree / path.name))
    assert (provider.namespace, provider.base_dir, provider.units_dir) == ("org.example", str(tree), str(tree / "units"))


def test_bad_provider_files_are_named_and_skipped_others_kept(tmp_path):
    good = _tree(tmp_path / "good")
    pp = tmp_path / "pp"
    _provider_file(pp, good, "good", namespace="org.good")
    _provider_file(pp, tmp_path / "missing", "bad", namespace="org.bad")
    (pp / "noname.provider").write_text("[PlainBox Provider]\nlocation = /\n")
    (pp / "dup.provider").write_text(f"[PlainBox Provider]\nlocation = {good}\nname = good\nnamespace = org.good\n")
    providers, warnings = find_providers(environ={"PROVIDERPATH": str(pp)})
    assert [p.name for p in providers] == ["good"]
    assert len(warnings) == 3
    assert any(w.startswith(f"{pp}/bad.provider: location") for w in warnings)
    assert any(w.startswith(f"{pp}/noname.provider: no 'name'") for w in warnings)
    assert any(w.startswith(f"{pp}/good.provider: provider org.good:good is already defined by {pp}/dup.provider") for w in warnings)


def test_providers_option_takes_source_trees_and_provider_directories(tmp_path):
    tree = _tree(tmp_path / "tree", "tree", "org.tree")
    other = _tree(tmp_path / "other", "other", "org.other")
    _provider_file(tmp_path / "pp", other, "other", namespace="org.other")
    providers, warnings = find_providers([str(tree), str(tmp_path / "pp"), str(tmp_path)], environ={"PROVIDERPATH": ""})
    assert [p.name for p in providers] == ["tree", "other"]
    assert providers[0].definition == str(tree / "manage.py")
    assert warnings == [f"{tmp_path}: neither .provider files nor a provider source tree (manage.py with setup(name=...))"]


@needs_providers
def test_real_checkbox_source_trees():
    SHARED = Path(PROVIDERS)
    providers, warnings = find_providers([str(SHARED / "base"), str(SHARED / "resource")], search=False)
    assert warnings == []
    base, resource = providers
    assert (base.name, base.namespace) == ("checkbox-provider-base", "com.canonical.certification")
    assert base.units_dirs == (str(SHARED / "base" / "units"),)
    assert resource.units_dirs == (str(SHARED / "resource" / "jobs"),)
    assert resource.bin_dir == str(SHARED / "resource" / "bin")
    assert base.gettext_domain == "checkbox-provider-base"


# --------------------------------------------------------------------------- the command line


def _provider_with_units(root: Path, name: str, namespace: str, units: str) -> Path:
    tree = _tree(root, name, namespace)
    (tree / "units" / "jobs.pxu").write_text(units)
    return tree


def test_run_and_plans_find_providers_through_providerpath(tmp_path, monkeypatch, capsys):
    from cli_helpers import run

    from plainbox_like.store.reader import load_session

    one = _provider_with_units(tmp_path / "one", "one", "org.one", (
        "id: hello\ncommand: echo hello\n\nunit: test plan\nid: greet\nname: Greetings\ninclude: hello\n"
    ))
    two = _provider_with_units(tmp_path / "two", "two", "org.two", "id: other\ncommand: true\n")
    pp = tmp_path / "pp"
    _provider_file(pp, one, "one", namespace="org.one")
    _provider_file(pp, two, "two", namespace="org.two")
    monkeypatch.setenv("PROVIDERPATH", str(pp))
    root = str(tmp_path / "repo")
    assert run(root, "plans") == 0
    assert capsys.readouterr().out.splitlines() == ["org.one::greet  Greetings"]
    assert run(root, "run", "--test-plan", "org.one::greet") == 0
    capsys.readouterr()
    path = only_session(root)
    assert list(load_session(path).state.results) == ["org.one::hello"]
    # --providers DIR finds them whatever PROVIDERPATH says
    monkeypatch.setenv("PROVIDERPATH", str(tmp_path / "empty"))
    assert run(root, "run", "--dry-run", "--providers", str(pp), "--test-plan", "greet") == 0
    assert capsys.readouterr().out.split() == ["org.one::hello"]


def test_no_provider_found_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    from cli_helpers import assert_one_line_error, run

    monkeypatch.setenv("PROVIDERPATH", str(tmp_path / "none"))
    assert run(str(tmp_path / "repo"), "plans") == 2
    assert_one_line_error(capsys.readouterr().err, "no test plans to list", f"PROVIDERPATH={tmp_path}/none")
    assert run(str(tmp_path / "repo"), "run", "--test-plan", "x") == 2
    assert_one_line_error(capsys.readouterr().err, "nothing to run", "--providers DIR")
    assert run(str(tmp_path / "repo"), "plans", "--providers", str(tmp_path / "missing")) == 2
    assert_one_line_error(capsys.readouterr().err, f"--providers {tmp_path}/missing: not a directory")


@needs_providers
def test_base_and_resource_list_checkbox_598_test_plans_quickly(tmp_path):
    import resource

    def children_cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    before = children_cpu()
    done = cli(None, "plans", f"{PROVIDERS}/base", f"{PROVIDERS}/resource", timeout=120)
    elapsed = children_cpu() - before  # CPU time: a loaded machine does not make it fail
    assert done.returncode == 0, done.stderr
    ids = [line.split()[0] for line in done.stdout.splitlines()]
    assert len(ids) == len(set(ids)) == 598
    assert "com.canonical.certification::submission-cert-automated" in ids
    assert "com.canonical.certification::cpu-cert-automated" in ids
    for warning in done.stderr.splitlines():  # every warning names a file and line
        assert re.match(r"plainbox-like: warning: /\S+:\d+: ", warning), warning
    assert elapsed < 10  # seconds of CPU, generous; scripts/bench_units.py measures the real figure


@needs_providers
def test_run_finds_a_real_checkbox_plan_through_provider_files(tmp_path, monkeypatch, capsys):
    from cli_helpers import run

    pp = tmp_path / "pp"
    for name in ("base", "resource"):  # what 'manage.py develop -d pp' writes
        _provider_file(pp, Path(PROVIDERS) / name, f"checkbox-provider-{name}", namespace="com.canonical.certification")
    monkeypatch.setenv("PROVIDERPATH", str(pp))
    argv = ["run", "--dry-run", "--test-plan", "com.canonical.certification::submission-cert-automated"]
    assert run(str(tmp_path / "repo"), *argv) == 0
    order = capsys.readouterr().out.split()
    assert len(order) == len(set(order)) > 20
    assert "com.canonical.certification::dmi_attachment" in order  # a job of base
    assert "com.canonical.certification::cpuinfo" in order  # a resource job of resource
    assert all(job_id.startswith("com.canonical.certification::") for job_id in order)
