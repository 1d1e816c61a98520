"""Finding providers as Checkbox finds them: --providers, PROVIDERPATH, .provider files, the standard places."""

from __future__ import annotations

import os
from pathlib import Path

from shared_checkbox import PROVIDERS, needs_providers

from plainbox_like.providers import find_providers, provider_search_path, read_provider_file


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
