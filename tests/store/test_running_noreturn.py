"""A running job journaled as noreturn: kept through journal replay and snapshots; other states unchanged."""

from __future__ import annotations

import gzip
import json
import os

import pytest

from plainbox_like.errors import CorruptSession
from plainbox_like.store import codec
from plainbox_like.store.reader import load_session


def _snapshot(path: str) -> dict:
    with gzip.open(os.path.join(path, "session")) as f:
        return json.load(f)["session"]


def test_the_noreturn_mark_survives_replay_and_snapshot_and_is_absent_otherwise(repo):
    writer = repo.create(title="reboot")
    writer.job_started("plain", 1, None)
    writer.job_started("reboot", 1, None, noreturn=True)
    path = writer.path
    writer.abandon()  # the journal only: loading replays it
    running = load_session(path).state.running_jobs
    assert (running["plain"].noreturn, running["reboot"].noreturn) == (False, True)

    writer = repo.open(path)
    writer.close()  # a snapshot of it
    running = _snapshot(path)["running_jobs"]
    assert running["reboot"]["noreturn"] is True
    assert "noreturn" not in running["plain"]  # states without a noreturn job stay as they were
    assert load_session(path).state.running_jobs["reboot"].noreturn is True


def test_a_noreturn_mark_of_the_wrong_type_is_an_error():
    doc = {"format": codec.FORMAT, "version": codec.VERSION, "session": {
        "running_jobs": {"reboot": {"attempt": 1, "started": 1.0, "noreturn": "yes"}},
    }}  # fmt: skip
    with pytest.raises(CorruptSession, match="noreturn"):
        codec.load_document(doc, "x")
