"""The HTML report in a real headless browser (Debian's ``chromium``): it renders, and shows every job.

Skipped when chromium is not installed (``apt-get install chromium``; ``.ci/run``
installs it when it runs as root on a system with apt-get).
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys

import pytest

from plainbox_like import exports
from plainbox_like.store.repository import SessionRepository
from plainbox_like.store.reader import load_session
from factories import PLAN, report_session

CHROMIUM_PATHS = ("/usr/bin/chromium", "/usr/bin/chromium-browser")


def _chromium() -> str | None:
    for path in CHROMIUM_PATHS:
        if os.access(path, os.X_OK):
            return path
    return shutil.which("chromium")


CHROMIUM = _chromium()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install chromium)"
)


def _browser(tmp_path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / "chromium-profile"
    profile.mkdir(exist_ok=True)
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        *args,
    ]
    env = dict(os.environ, HOME=str(tmp_path))
    return subprocess.run(command, capture_output=True, timeout=120, env=env, cwd=str(tmp_path))


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("report")
    writer = report_session(SessionRepository(str(tmp_path / "repo")))
    path = tmp_path / "report.html"
    with open(path, "wb") as f:
        exports.write(load_session(writer.path), "html", f)
    return path


def test_report_renders_every_job(report, tmp_path):
    result = _browser(tmp_path, "--dump-dom", report.as_uri())
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-2000:]
    dom = result.stdout.decode("utf-8")
    assert "<title>" in dom and "plainbox-like session report" in dom
    for job in PLAN:
        assert job in dom, f"job {job!r} is not in the rendered page"
    # The hostile output stayed text: the browser built no element from it.
    assert "&lt;script&gt;alert" in dom and "<script>alert" not in dom
    assert "onerror=alert(1)&gt;" in dom
    assert "<img" not in dom and "<script" not in dom


def _png_size(path) -> tuple[int, int]:
    with open(path, "rb") as f:
        header = f.read(24)
    assert header[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    return struct.unpack(">II", header[16:24])


def test_report_screenshot(report, tmp_path):
    shot = tmp_path / "screenshot" / "report.png"
    shot.parent.mkdir()
    result = _browser(tmp_path, f"--screenshot={shot}", "--window-size=1280,2000", "--hide-scrollbars", report.as_uri())
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-2000:]
    assert shot.is_file(), result.stderr.decode(errors="replace")[-2000:]
    assert _png_size(shot) == (1280, 2000)
    # A blank page compresses to a few kilobytes; a rendered report does not.
    assert shot.stat().st_size > 30_000
    kept = tmp_path / "report-screenshot.png"
    shutil.copyfile(shot, kept)
    print(f"\nscreenshot of the HTML report: {kept}", file=sys.stderr)
