"""Text for people: times that no calendar holds show as themselves, everywhere a time is shown."""

from __future__ import annotations

import gzip
import json
import math
import os
import time

import pytest

from plainbox_like.cli.main import main
from plainbox_like.store.model import Attempt
from plainbox_like.store.names import STATE_FILE
from plainbox_like.text import format_time, iso_time, to_datetime

OUT_OF_RANGE = [1e18, -1e18, math.inf, math.nan]


def test_a_time_in_range_is_a_date():
    assert iso_time(0.0) == "1970-01-01T00:00:00+00:00"
    assert to_datetime(0.0, utc=True).year == 1970
    assert format_time(time.time())[:2] == "20"
    assert format_time(None) == "-" and iso_time(None) is None


@pytest.mark.parametrize("epoch", OUT_OF_RANGE)
def test_a_time_no_date_can_hold_shows_as_itself(epoch):
    assert to_datetime(epoch) is None and to_datetime(epoch, utc=True) is None
    assert format_time(epoch) == f"{epoch!r} (not a date)"
    shown = iso_time(epoch)
    assert shown is epoch or (math.isnan(epoch) and math.isnan(shown))


def _session_from_year_30_billion(repo) -> str:
    writer = repo.create(title="far")
    writer.set_plan({"a": "sum-a"}, ["a"])
    writer.job_finished("a", Attempt("pass", return_code=0))
    writer.update_metadata(flags=[], finished=time.time())
    writer.close()
    state_path = os.path.join(writer.path, STATE_FILE)
    with gzip.open(state_path) as f:
        data = json.load(f)
    data["session"]["metadata"]["created"] = 1e18
    for attempts in data["session"]["results"].values():
        for attempt in attempts:
            attempt["start"] = 1e18
    with gzip.open(state_path, "wt") as f:
        json.dump(data, f)
    return writer.id


@pytest.mark.parametrize(
    "argv",
    [["list"], ["list", "--json"], ["show", "{id}"], ["show", "{id}", "--json"], ["search", "far"],
     ["export", "{id}", "--format", "junit", "-o", "{tmp}/x.xml"],
     ["export", "{id}", "--format", "html", "-o", "{tmp}/x.html"],
     ["export", "{id}", "--format", "json", "-o", "{tmp}/x.json"], ["check"]],
    ids=lambda argv: " ".join(a for a in argv if "{" not in a),
)
def test_a_session_time_past_year_9999_never_breaks_a_command(repo, root, tmp_path, capsys, argv):
    sid = _session_from_year_30_billion(repo)
    argv = [a.format(id=sid, tmp=tmp_path) for a in argv]
    assert main(["--repository", root, *argv]) == 0
    out = capsys.readouterr().out
    if argv[0] == "list" and "--json" not in argv:
        assert "1e+18 (not a date)" in out and "corrupt" not in out
    if argv == ["list", "--json"]:
        assert json.loads(out)[0]["created"] == 1e18
