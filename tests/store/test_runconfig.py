"""The run configuration a session keeps (``metadata.app_blob``): a persisted model of the store."""

from __future__ import annotations

import os
import sys
import subprocess

import pytest

from plainbox_like.errors import PlainboxLikeError
from plainbox_like.run import prepare
from plainbox_like.store.runconfig import RunConfig

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

#: ``to_blob`` of the configuration below as the runner wrote it before the model moved to the store.
BLOB = (
    "eyJjb21tYW5kcyI6IFsiZWNobyB4Il0sICJkdXJhYmlsaXR5IjogImZzeW5jIiwgImVudmlyb25tZW50Ijoge30sICJleGNsdWRlIjogW10s"
    "ICJpbmNsdWRlIjogW10sICJtYW5pZmVzdCI6IHsibSI6IHRydWV9LCAibmFtZXNwYWNlIjogbnVsbCwgInBhcmFsbGVsIjogMiwgInByb3Zp"
    "ZGVycyI6IFtdLCAic291cmNlcyI6IFsiL3UvYS5weHUiXSwgInRlc3RfcGxhbiI6ICJ0cCJ9"
)


def test_the_blob_is_the_one_sessions_already_hold():
    config = RunConfig(sources=["/u/a.pxu"], commands=["echo x"], test_plan="tp", parallel=2, manifest={"m": True})
    assert config.to_blob() == BLOB
    assert RunConfig.from_blob(BLOB) == config
    assert RunConfig is RunConfig  # still importable where the runner's callers find it


@pytest.mark.parametrize("blob", [None, "", "not base64!", "bnVsbA=="])
def test_a_missing_or_unreadable_blob_is_a_clear_error(blob):
    with pytest.raises(PlainboxLikeError, match="no app_blob|unreadable"):
        RunConfig.from_blob(blob)


def test_reading_the_model_imports_nothing_of_the_runner():
    code = "import sys, plainbox_like.store.runconfig; print(sorted(m for m in sys.modules if m.startswith('plainbox_like.')))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=REPO))
    assert done.returncode == 0, done.stderr
    assert "plainbox_like.store.runconfig" in done.stdout
    assert "plainbox_like.run" not in done.stdout and "plainbox_like.define" not in done.stdout


def test_the_run_loads_the_units_a_configuration_names():
    units = prepare.load_run_units(RunConfig(commands=["echo one", "echo two"]))
    assert [job.command for job in units.jobs] == ["echo one", "echo two"]
