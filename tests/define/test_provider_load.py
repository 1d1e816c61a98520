"""A provider shaped like Checkbox's checkbox-provider-base loads, plans and warns as it should.

The provider is made by ``scripts/make_provider.py`` (the generator the
benchmark ``scripts/bench_units.py`` uses at full size), smaller here.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
import tarfile
from pathlib import Path

import pytest

from plainbox_like.define import plan as planning
from plainbox_like.cli.main import main
from plainbox_like.define.loading import load_units
from plainbox_like.define.metadata import JobMetadata, RunMetadata
from plainbox_like.define.selection import bootstrap_jobs, mandatory_jobs, select_jobs

SCRIPTS = Path(__file__).resolve().parent.parent.parent / "scripts"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # attrs needs the module of its classes
    spec.loader.exec_module(module)
    return module


make_provider = _script("make_provider")


@pytest.fixture(scope="module")
def provider(tmp_path_factory):
    return make_provider.make_provider(tmp_path_factory.mktemp("provider"), areas=8, jobs=160)


@pytest.fixture(scope="module")
def units(provider):
    return load_units([provider.root / "units"])


def test_every_unit_loads_with_the_expected_counts(provider, units):
    assert len(list((provider.root / "units").rglob("*.pxu"))) == provider.files
    assert len(units.jobs) == provider.jobs + provider.resource_jobs
    assert len(units.test_plans) == provider.test_plans
    assert len(units.templates) == provider.templates
    assert all(t.supported for t in units.templates)
    assert sum(t.engine == "jinja2" for t in units.templates) == provider.jinja_templates == 1
    namespace = make_provider.NAMESPACE + "::"
    assert all(unit.id.startswith(namespace) for unit in (*units.jobs, *units.test_plans, *units.templates))
    assert units.job(namespace + "audio/auto-001").depends == (namespace + "audio/detect",)


def test_each_unsupported_thing_is_named_once_with_its_file_and_line(provider, units):
    assert len(units.warnings) == len(provider.unsupported)
    for thing, count in provider.unsupported.items():
        (warning,) = [w for w in units.warnings if thing in w]
        where = re.match(r"(.+):(\d+): ", warning)
        path, line = Path(where.group(1)), int(where.group(2))
        text = path.read_text().splitlines()[line - 1]
        if thing.startswith("unit kind"):
            assert text == "unit: " + thing.split("'")[1]
        elif thing.startswith("template-engine"):
            assert text == "unit: template"  # the template's first line
        else:
            assert text.startswith("siblings:")
        if count > 1:
            assert warning.endswith("; reported once)") and f"({count} " in warning
        else:
            assert "reported once" not in warning


def test_the_largest_plan_selects_bootstrap_first_and_keeps_its_metadata(provider, units):
    top = provider.top_plan
    jobs = select_jobs(units, top, [], [])
    order = planning.build_plan(jobs).order
    namespace = make_provider.NAMESPACE + "::"
    bootstrap = bootstrap_jobs(units, top)
    assert bootstrap[:2] == [namespace + "device", namespace + "package"]
    assert list(order[: len(bootstrap)]) == bootstrap
    assert mandatory_jobs(units, top) == [namespace + "miscellanea/submission-resources"]
    meta = RunMetadata.compute(units, top, jobs)
    assert meta.of(namespace + "audio/detect").certification_status == "blocker"
    assert meta.of(namespace + "audio/detect").category_id == namespace + "audio-detect"
    assert meta.of(namespace + "audio/manual-004") == JobMetadata(namespace + "audio", "non-blocker")
    # ^ns::audio/manual-00[0-3]$ sorts after ^ns::audio/manual-.*$ and ^ns::.*/manual-.*$: it wins
    assert meta.of(namespace + "audio/manual-001").certification_status == "blocker"
    assert meta.of(namespace + "audio/auto-002").category_id == namespace + "audio-auto"
    assert meta.of(namespace + "miscellanea/submission-resources") == JobMetadata(
        namespace + "certification", "blocker"
    )


def test_cli_plans_and_dry_run(provider, tmp_path, capsys):
    root = str(provider.root / "units")
    assert main(["--repository", str(tmp_path), "plans", "--json", root]) == 0
    captured = capsys.readouterr()
    plans = json.loads(captured.out)
    assert len(plans) == provider.test_plans
    top = next(p for p in plans if p["id"] == provider.top_plan)
    assert top["certification_status_overrides"][0]["value"] == "blocker"
    assert top["overrides"] and all(o["origin"] for o in top["overrides"])
    assert captured.err.count("warning:") == len(provider.unsupported)
    assert main(["--repository", str(tmp_path), "run", "--dry-run", root]) == 0
    listed = capsys.readouterr().out.split()
    # + Checkbox's manifest resource job, which the manifest entries bring
    assert len(listed) == provider.jobs + provider.resource_jobs + 1
    assert "com.canonical.plainbox::manifest" in listed


def _legacy_tarball() -> Path | None:
    bench = _script("bench_units")
    for path in (bench.cache_dir() / bench.LEGACY_NAME, Path("/tmp/prov") / bench.LEGACY_NAME):
        if path.is_file() and bench.sha256_of(path) == bench.LEGACY_SHA256:
            return path
    return None


@pytest.mark.skipif(_legacy_tarball() is None, reason="plainbox-provider-checkbox 0.3 sdist not cached")
def test_the_2014_checkbox_provider_loads(tmp_path):
    with tarfile.open(_legacy_tarball()) as archive:  # verified by its sha256
        if hasattr(tarfile, "data_filter"):
            archive.extractall(tmp_path, filter="data")
        else:
            archive.extractall(tmp_path)
    files = sorted((tmp_path / "plainbox-provider-checkbox-0.3" / "provider_jobs").glob("*.txt.in"))
    units = load_units(files)
    assert len(files) == 47 and len(units.jobs) == 538 and not units.test_plans
    assert all(job.id.startswith("2013.com.canonical::") for job in units.jobs)  # from checkbox.provider
    assert len(units.warnings) == 2
    assert "legacy 'name'" in units.warnings[0] and "plugin 'local'" in units.warnings[1]
