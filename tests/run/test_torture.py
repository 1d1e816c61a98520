"""A small run of ``scripts/torture_resume.py``: SIGKILL the runner at random moments, resume, check.

The full-size run (200 jobs, 25 kills) is ``python scripts/torture_resume.py``.
"""

from __future__ import annotations

import importlib.util
import os
import re

import pytest

from plainbox_like.store.model import Attempt, SessionMetadata, SessionState
from plainbox_like.run.settle import STOPPED_WHILE_RUNNING

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "scripts", "torture_resume.py")


@pytest.fixture(scope="module")
def torture():
    spec = importlib.util.spec_from_file_location("torture_resume", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("parallel, seed", [(1, 20240), (2, 777)])
def test_small_torture_run(torture, tmp_path, capsys, parallel, seed):
    code = torture.main(
        ["--size", "40", "--kills", "5", "--jobs", str(parallel), "--seed", str(seed), "--workdir", str(tmp_path)]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    table = {}
    for line in out.splitlines():
        match = re.match(r"^(\S.*?)\s{2,}(.*)$", line)
        if match:
            table[match.group(1)] = match.group(2)
    assert table["duplicates"] == "0", out
    assert table["missing"] == "0", out
    assert table["all-loaded"] == "yes", out
    assert table["jobs with a result"] == "40 of 40", out
    assert table["kills delivered"].startswith("5 of 5"), out
    assert "VIOLATION" not in out


def _state(results):
    state = SessionState(metadata=SessionMetadata(flags=[]))
    state.results = {jid: [attempt] for jid, attempt in results.items()}
    return state


def test_checker_reports_violations(torture):
    ids = ["j000", "j001", "j002", "j003"]
    passed = Attempt(outcome="pass")
    stopped = Attempt(outcome="crash", comments=STOPPED_WHILE_RUNNING)
    good = _state({"j000": passed, "j001": stopped, "j002": stopped, "j003": passed})
    counts = {"j000": 1, "j001": 1, "j003": 1}
    assert torture.check(good, ids, counts, [{"j001"}, {"j002"}], 1) == []

    # A passed job whose side effect happened twice (it ran again after a kill).
    problems = torture.check(good, ids, dict(counts, j000=2), [{"j001"}, {"j002"}], 1)
    assert any("j000" in p and "2 times" in p for p in problems)
    # A passed job without its side effect.
    problems = torture.check(good, ids, {"j001": 1, "j003": 1}, [{"j001"}, {"j002"}], 1)
    assert any("j000" in p for p in problems)
    # A crash no kill explains, and more running jobs than -j allows.
    problems = torture.check(good, ids, counts, [{"j001", "j000"}], 1)
    assert any("j002" in p for p in problems) and any("-j 1" in p for p in problems)
    # A missing result and a leftover incomplete flag.
    partial = _state({"j000": passed, "j001": stopped, "j002": stopped})
    partial.metadata.flags = ["incomplete"]
    problems = torture.check(partial, ids, counts, [{"j001"}, {"j002"}], 1)
    assert any("j003" in p and "0 results" in p for p in problems)
    assert any("incomplete" in p for p in problems)
