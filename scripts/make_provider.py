#!/usr/bin/env python3
"""Generate a synthetic Checkbox provider shaped like ``checkbox-provider-base``.

    python scripts/make_provider.py DIR                  # ~60 areas, 340 .pxu files, ~2,500 jobs
    python scripts/make_provider.py DIR --areas 6 --jobs 120

The layout and unit mix follow Checkbox's modern base provider: a
``manage.py`` naming the namespace ``com.canonical.certification``;
``units/<area>/`` directories, each with a category unit, three job files
(automated, manual, stress), a test plan file, and in some areas manifest
entries and packaging meta-data; ``units/resource/`` with the resource jobs;
``units/test-plan/`` with top-level plans that nest the areas' plans.

Jobs use ``requires`` (resource and manifest expressions with ``imports``),
``depends``, ``after``, ``environ``, ``flags``, ``user`` and multi-line
commands and descriptions; each area has templates over the ``device``
resource with a ``template-filter``; test plans use ``nested_part``,
``bootstrap_include``, ``mandatory_include``, ``exclude``, include overrides,
``category_overrides`` and ``certification_status_overrides``. A few things
Checkbox's units that play no part in a run are in it on purpose (category and
packaging units), and manifest entries.

The output is a pure function of the arguments (no randomness), so
:func:`make_provider` can state exactly what loading it must give.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from pathlib import Path

import attrs

NAMESPACE = "com.canonical.certification"
#: Area names of checkbox-provider-base (more are numbered copies).
AREAS = (
    "audio", "benchmarks", "bluetooth", "camera", "canary", "cpu", "disk", "dock", "ethernet",
    "expresscard", "fingerprint", "firmware", "gadget", "graphics", "hibernate", "image", "info",
    "input", "install", "kernel-snap", "keys", "led", "mediacard", "memory", "miscellanea",
    "mobilebroadband", "monitor", "networking", "nvdimm", "optical", "power-management", "rtc",
    "serial", "snapd", "socketcan", "stress", "suspend", "thunderbolt", "touchpad",
    "touchscreen", "tpm", "ubuntucore", "usb", "usb-c", "virtualization", "watchdog", "wireless",
    "wwan", "zapper", "acpi", "apport", "backlight", "bios", "boot", "clock", "docker",
    "edac", "gpio", "i2c", "ipmi",
)  # fmt: skip
#: Resource jobs of ``units/resource/jobs.pxu`` (the first few are the test plans' bootstrap).
RESOURCES = (
    "device", "package", "cpuinfo", "dmi", "uname", "lsb", "meminfo", "module", "block_device",
    "display", "dpkg", "environment", "graphics_card", "interface", "net_if_management", "rtc",
    "snap", "usb", "wifi_interface_mode", "bluez", "dmi_present", "efi", "lspci_standalone",
    "mobilebroadband", "optical_drive", "sleep", "uefi", "virtualization", "wireless_sta_protocol",
    "cdimage",
)  # fmt: skip
#: Top-level test plans of ``units/test-plan/``: (file stem, how many areas each nests).
TOP_PLANS = (
    ("client-cert-desktop-24-04", 1),
    ("client-cert-laptop-24-04", 2),
    ("client-cert-server-24-04", 3),
    ("client-cert-iot-24-04", 4),
    ("sru", 5),
)
#: What the ``device`` resource job prints (``\\n`` for printf).
DEVICE_RECORDS = (
    "category: DISK\\nname: sda\\npath: /dev/sda\\n\\ncategory: DISK\\nname: nvme0n1\\npath: /dev/nvme0n1\\n"
    "\\ncategory: NETWORK\\nname: eth0\\n\\ncategory: WIRELESS\\nname: wlan0\\n"
)


@attrs.frozen
class ProviderInfo:
    """What was generated, which is what loading the provider must give."""

    root: Path
    files: int
    jobs: int
    resource_jobs: int
    templates: int
    jinja_templates: int
    test_plans: int
    areas: int
    #: Unsupported things in it -> how many units/fields have them.
    unsupported: dict[str, int]
    top_plan: str


def _area_names(count: int) -> list[str]:
    names = list(AREAS[:count])
    copy = 2
    while len(names) < count:
        names.extend(f"{area}-{copy}" for area in AREAS[: count - len(names)])
        copy += 1
    return names


def _block(text: str) -> str:
    return textwrap.dedent(text).strip("\n") + "\n"


def _indent(lines: list[str]) -> str:
    return "\n".join(" " + line for line in lines)


def _auto_job(area: str, n: int, first: bool) -> str:
    """An automated shell (or attachment) job; the first of an area is its ``detect`` job."""
    env = area.upper().replace("-", "_")
    job_id = f"{area}/detect" if first else f"{area}/auto-{n:03}"
    plugin = "attachment" if n % 9 == 4 else "shell"
    lines = [
        f"id: {job_id}",
        f"_summary: {area.title()} automated check {n}",
        f"category_id: {NAMESPACE}::{area}",
        f"plugin: {plugin}",
        f"estimated_duration: {5 + n % 40}.5",
        "imports: from com.canonical.plainbox import manifest",
        "requires:",
        _indent([f"manifest.has_{area.replace('-', '_')} == 'True'",
                 f"device.category == 'DISK' or package.name == '{area}-utils'"]),
        f"environ: PATH HOME {env}_DEVICE",
    ]  # fmt: skip
    if not first:
        lines.append(f"depends: {area}/detect")
    if n % 5 == 3:
        lines.append(f"after: {area}/auto-{n - 1:03}" if n > 1 else f"after: {area}/detect")
    if n % 7 == 0:
        lines.append("flags: also-after-suspend preserve-locale")
    if n % 11 == 0:
        lines.append("user: root")
    lines += [
        "command:",
        _indent(["set -e", f'echo "checking {area} {n}"',
                 f'{area}_test.py --device "${{{env}_DEVICE:-default}}" --iterations 3',
                 "# a comment line inside the command", "exit_code=$?; test $exit_code -eq 0"]),
        "_purpose:",
        _indent([f"Check that the {area} subsystem works (step {n}).", ".",
                 "This description spans several lines, as Checkbox's do."]),
    ]  # fmt: skip
    return "\n".join(lines) + "\n"


def _manual_job(area: str, n: int) -> str:
    plugin = ("manual", "user-interact-verify", "user-interact", "user-verify")[n % 4]
    lines = [
        f"id: {area}/manual-{n:03}",
        f"_summary: {area.title()} manual check {n}",
        f"category_id: {NAMESPACE}::{area}",
        f"plugin: {plugin}",
        "estimated_duration: 1m 30s",
        f"depends: {area}/detect",
        "_purpose:",
        _indent([f"This test verifies {area} by hand ({n})."]),
        "_steps:",
        _indent(["1. Plug the device in.", "2. Press Enter and watch the screen."]),
        "_verification:",
        _indent(["Did the device work?"]),
    ]
    if plugin != "manual":
        lines += ["command:", _indent([f"{area}_interactive_test.sh --case {n}"])]
    return "\n".join(lines) + "\n"


def _stress_job(area: str, n: int) -> str:
    lines = [
        f"id: {area}/stress-{n:03}",
        f"_summary: {area.title()} stress {n}",
        f"category_id: {NAMESPACE}::stress",
        "plugin: shell",
        "estimated_duration: 600",
        f"depends: {area}/detect" + (f" {area}/stress-{n - 1:03}" if n > 0 else ""),
        "requires: cpuinfo.count >= '2'",
        "command:",
        _indent([f"stress-ng --{area.replace('-', '')} 4 --timeout 60 --metrics-brief"]),
    ]
    if n == 0 and area == AREAS[1]:
        lines.append(f"siblings: [{{\"id\": \"{area}/stress-after-suspend\"}}]")
    return "\n".join(lines) + "\n"


def _template(area: str, jinja: bool) -> str:
    if jinja:
        return _block(f"""
            unit: template
            template-resource: device
            template-engine: jinja2
            template-filter: device.category == 'NETWORK'
            id: {area}/jinja-{{{{ name }}}}
            template-id: {area}/jinja-name
            _summary: Check {{{{ name }}}}
            plugin: shell
            command: echo {{{{ name }}}}
            """)
    return _block(f"""
        unit: template
        template-resource: device
        template-filter: device.category == 'DISK' and device.name != ''
        template-unit: job
        id: {area}/read-performance_{{name}}
        template-id: {area}/read-performance_name
        _summary: Read performance of {{name}} ({area})
        category_id: {NAMESPACE}::{area}
        plugin: shell
        estimated_duration: 65
        depends: {area}/detect
        requires: block_device.{{name}}_state != 'removable'
        command: disk_read_performance_test.py {{path}}
        """)


def _category(area: str) -> str:
    return _block(f"""
        unit: category
        id: {area}
        _name: {area.title()} tests
        """)


def _manifest(area: str) -> str:
    key = area.replace("-", "_")
    return _block(f"""
        unit: manifest entry
        id: has_{key}
        _name: A {area} device
        value-type: bool
        """)


def _packaging(area: str) -> str:
    return _block(f"""
        unit: packaging meta-data
        os-id: debian
        Depends: {area}-utils
        """)


def _area_plans(area: str, with_overrides: bool) -> str:
    automated = [
        "unit: test plan",
        f"id: {area}-cert-automated",
        f"_name: {area.title()} tests (automated)",
        "_description:",
        _indent([f"Automated {area} tests."]),
        "bootstrap_include:",
        _indent(["device", "package"]),
        "include:",
        _indent([f"{area}/detect    certification-status=blocker",
                 f"{area}/auto-.*",
                 f"{area}/read-performance_.*   certification-status=non-blocker, category-id=disk-perf"]),
        "exclude:",
        _indent([f"{area}/auto-01[0-9]"]),
    ]  # fmt: skip
    if with_overrides:
        automated += [
            "category_overrides:",
            _indent([f"apply {NAMESPACE}::{area}-auto to {area}/auto-.*", f"apply {area}-detect to {area}/detect"]),
        ]
    manual = [
        "unit: test plan",
        f"id: {area}-cert-manual",
        f"_name: {area.title()} tests (manual)",
        "include:",
        _indent([f"{area}/manual-.*    certification-status=non-blocker"]),
        "certification_status_overrides:",
        _indent([f"apply blocker to {area}/manual-00[0-3]"]),
    ]
    full = [
        "unit: test plan",
        f"id: {area}-cert-full",
        f"_name: {area.title()} tests",
        "include:",
        "nested_part:",
        _indent([f"{area}-cert-automated", f"{area}-cert-manual"]),
    ]
    stress = [
        "unit: test plan",
        f"id: {area}-stress",
        f"_name: {area.title()} stress tests",
        "include:",
        _indent([f"{area}/stress-.*"]),
    ]
    return "\n\n".join("\n".join(block) + "\n" for block in (automated, manual, full, stress))


def _top_plan(name: str, areas: list[str], step: int, nested_top: str | None) -> str:
    parts = [f"{NAMESPACE}::{area}-cert-full" for area in areas[::step]]
    if nested_top:
        parts.append(nested_top)
    lines = [
        "unit: test plan",
        f"id: {name}",
        f"_name: Certification tests ({name})",
        "_description:",
        _indent(["The whole certification run, made of the areas' test plans."]),
        "estimated_duration: 3h",
        "include:",
        "mandatory_include:",
        _indent(["com.canonical.plainbox::manifest", "miscellanea/submission-resources    certification-status=blocker"]),
        "bootstrap_include:",
        _indent(list(RESOURCES[:6])),
        "nested_part:",
        _indent(parts),
        "category_overrides:",
        _indent([f"apply {NAMESPACE}::certification to miscellanea/.*"]),
        "certification_status_overrides:",
        _indent([f"apply blocker to {areas[0]}/auto-00[0-5]", "apply non-blocker to .*/manual-.*"]),
    ]  # fmt: skip
    return "\n".join(lines) + "\n"


def _resource_file() -> str:
    blocks = []
    for name in RESOURCES:
        records = DEVICE_RECORDS if name == "device" else f"{name}_state: fixed\\ncount: 4\\nname: {name}\\n"
        lines = [
            f"id: {name}",
            "plugin: resource",
            f"_summary: Collect {name} information",
            "estimated_duration: 0.5",
            "category_id: com.canonical.plainbox::info",
            "command:",
            _indent([f"printf '{records}'"]),
        ]
        blocks.append("\n".join(lines) + "\n")
    blocks.append(_block("""
        id: miscellanea/submission-resources
        plugin: shell
        _summary: Check that the resources needed by submissions are there
        depends: device package cpuinfo
        command: true
        """))
    return "\n".join(blocks)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _per_area(jobs: int, areas: int) -> tuple[int, int, int]:
    """Automated, manual and stress jobs per area so that the areas hold about *jobs* jobs."""
    each = max(3, jobs // areas)
    manual = max(1, each // 4)
    stress = max(1, each // 8)
    return each - manual - stress, manual, stress


def make_provider(root: str | os.PathLike[str], areas: int = 60, jobs: int = 2500) -> ProviderInfo:
    """Write the provider under *root* (created if needed) and say what it holds.

    *jobs* is the number of plain jobs of the areas (the resource jobs come on top).
    """
    root = Path(root)
    names = _area_names(areas)
    auto, manual, stress = _per_area(jobs, areas)
    _write(root / "manage.py", _block(f"""
        #!/usr/bin/env python3
        from plainbox.provider_manager import setup, N_

        setup(
            name='{NAMESPACE}:checkbox-provider-synthetic',
            namespace='{NAMESPACE}',
            version="4.0.0",
            description=N_("Synthetic provider shaped like checkbox-provider-base"),
            gettext_domain='checkbox-provider-synthetic',
        )
        """))
    _write(root / "units" / "resource" / "jobs.pxu", _resource_file())
    files, templates, jinja, manifests, packaging = 1, 0, 0, 0, 0
    for i, area in enumerate(names):
        directory = root / "units" / area
        use_jinja = i % 20 == 7
        jinja += use_jinja
        templates += 2
        _write(directory / "category.pxu", _category(area))
        _write(directory / "jobs.pxu", "\n".join(
            [_auto_job(area, n, n == 0) for n in range(auto)] + [_template(area, False), _template(area, use_jinja)]
        ))  # fmt: skip
        _write(directory / "jobs-manual.pxu", "\n".join(_manual_job(area, n) for n in range(manual)))
        _write(directory / "jobs-stress.pxu", "\n".join(_stress_job(area, n) for n in range(stress)))
        _write(directory / "test-plan.pxu", _area_plans(area, with_overrides=i % 2 == 0))
        files += 5
        if i % 3 == 0:
            _write(directory / "manifest.pxu", _manifest(area))
            files, manifests = files + 1, manifests + 1
        if i % 4 == 0:
            _write(directory / "packaging.pxu", _packaging(area))
            files, packaging = files + 1, packaging + 1
    previous = None
    for name, step in TOP_PLANS:
        _write(root / "units" / "test-plan" / f"{name}.pxu", _top_plan(name, names, step, previous))
        previous, files = f"{NAMESPACE}::{name}", files + 1
    # categories and packaging meta-data play no part in a run: skipped without a word; manifest entries are read
    unsupported: dict[str, int] = {}
    # the jobs Checkbox adds beside others: after-suspend-<id> for also-after-suspend, one siblings entry
    siblings = areas * sum(1 for n in range(auto) if n % 7 == 0) + (1 if areas > 1 else 0)
    return ProviderInfo(
        root=root,
        files=files,
        jobs=areas * (auto + manual + stress) + 1 + siblings,  # + miscellanea/submission-resources
        resource_jobs=len(RESOURCES),
        templates=templates,
        jinja_templates=jinja,
        test_plans=areas * 4 + len(TOP_PLANS),
        areas=areas,
        unsupported={key: count for key, count in unsupported.items() if count},
        top_plan=f"{NAMESPACE}::{TOP_PLANS[-1][0]}",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", help="where to write the provider (created if needed)")
    parser.add_argument("--areas", type=int, default=60, help="units/ subdirectories (default 60)")
    parser.add_argument("--jobs", type=int, default=2500, help="jobs of the areas, about (default 2500)")
    args = parser.parse_args(argv)
    info = make_provider(args.directory, args.areas, args.jobs)
    print(
        f"{info.root}: {info.files} .pxu files, {info.jobs} jobs + {info.resource_jobs} resource jobs, "
        f"{info.templates} templates, {info.test_plans} test plans in {info.areas} areas"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
