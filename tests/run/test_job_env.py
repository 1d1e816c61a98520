"""Jobs run as Checkbox runs them: the provider's variables, every bin/ of the namespace on PATH, and a
fresh temporary working directory whose leftovers are listed in the result."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from plainbox_like.store import codec
from plainbox_like.store.runconfig import RunConfig
from plainbox_like.run import prepare
from plainbox_like.store.reader import load_session
from plainbox_like.store.repository import SessionRepository

MANAGE = """\
from plainbox.provider_manager import setup, N_
setup(name="{name}", namespace="{ns}", version="1.0", description=N_("x"), gettext_domain="{domain}")
"""


def _provider(root: Path, name: str, ns: str, units: str = "", tools: dict[str, str] | None = None) -> Path:
    base = root / name
    (base / "units").mkdir(parents=True)
    (base / "data").mkdir()
    (base / "bin").mkdir()
    (base / "manage.py").write_text(MANAGE.format(name=name, ns=ns, domain=name.replace("-", "_")))
    if units:
        (base / "units" / "jobs.pxu").write_text(textwrap.dedent(units))
    for tool, text in (tools or {}).items():
        path = base / "bin" / tool
        path.write_text("#!/bin/sh\n" + text + "\n")
        path.chmod(0o755)
    return base


def _run(tmp_path: Path, *sources: Path, **config) -> dict:
    repo = SessionRepository(str(tmp_path / "repo"))
    prepared = prepare.start_session(repo, RunConfig(sources=[str(s) for s in sources], **config))
    summary = prepare.run_prepared(prepared)
    return load_session(summary.path).state


def _env(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def test_provider_variables_and_every_bin_of_the_namespace_on_path(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    first = _provider(
        tmp_path,
        "first",
        "ns.one",
        f"""\
        id: show
        command: env > {out}/env; first_tool > {out}/first; second_tool > {out}/second; other_tool || echo 127 > {out}/other
        """,
        {"first_tool": "echo first"},
    )
    second = _provider(tmp_path, "second", "ns.one", "id: nothing\ncommand: true\n", {"second_tool": "echo second"})
    other = _provider(tmp_path, "other", "ns.two", "id: nothing\ncommand: true\n", {"other_tool": "echo other"})
    state = _run(tmp_path, first, second, other)
    assert state.latest("ns.one::show").outcome == "pass"
    env = _env(out / "env")
    assert env["PLAINBOX_PROVIDER_DATA"] == str(first / "data")
    assert env["PLAINBOX_PROVIDER_UNITS"] == str(first / "units")
    assert env["CHECKBOX_SHARE"] == str(first)
    assert env["PLAINBOX_PROVIDER_GETTEXT_DOMAIN"] == env["TEXTDOMAIN"] == "first"
    assert os.path.isdir(env["PLAINBOX_SESSION_SHARE"])
    # both bin/ of namespace ns.one, in the order the providers were given, before the caller's PATH
    assert env["PATH"].split(os.pathsep)[:2] == [str(first / "bin"), str(second / "bin")]
    assert (out / "first").read_text() == "first\n"
    assert (out / "second").read_text() == "second\n"
    assert (out / "other").read_text() == "127\n"  # another namespace's bin/ is not on PATH


@pytest.mark.parametrize("parallel", [1, 2])  # spawned here, or by worker processes
def test_each_job_gets_a_fresh_temporary_directory_and_its_leftovers_are_listed(tmp_path, monkeypatch, parallel):
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    out = tmp_path / "out"
    out.mkdir()
    units = tmp_path / "jobs.pxu"
    units.write_text(
        textwrap.dedent(
            f"""\
            id: messy
            command: pwd > {out}/messy; touch left.txt; mkdir -p d/e; touch d/e/x

            id: clean
            command: pwd > {out}/clean; ls -A > {out}/clean-ls

            id: allowed
            flags: has-leftovers
            command: touch expected.txt

            id: stays
            flags: preserve-cwd
            command: pwd > {out}/stays
            """
        )
    )
    state = _run(tmp_path, units, parallel=parallel)
    messy = (out / "messy").read_text().strip()
    clean = (out / "clean").read_text().strip()
    assert messy != clean and messy != str(here)
    assert not os.path.exists(messy) and not os.path.exists(clean)  # removed afterwards
    assert (out / "clean-ls").read_text() == ""  # fresh: nothing of the job before it
    assert state.latest("messy").leftover_files == ("d", "d/e", "d/e/x", "left.txt")
    assert state.latest("clean").leftover_files == ()
    assert state.latest("allowed").leftover_files == ()
    assert (out / "stays").read_text().strip() == str(here)


def test_leftover_files_are_kept_and_an_older_state_without_them_loads(tmp_path):
    units = tmp_path / "jobs.pxu"
    units.write_text("id: messy\ncommand: touch x\n\nid: tidy\ncommand: true\n")
    state = _run(tmp_path, units)
    document = codec.state_document(state)
    assert document["session"]["results"]["messy"][-1]["leftover_files"] == ["x"]
    assert "leftover_files" not in document["session"]["results"]["tidy"][-1]  # omitted when empty
    older = codec.converter.structure({"outcome": "pass", "attempt": 1}, codec.Attempt)
    assert older.leftover_files == ()


def test_reset_locale_and_launcher_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("LC_TIME", "fr_FR.UTF-8")
    monkeypatch.setenv("ALREADY", "caller")
    out = tmp_path / "out"
    out.mkdir()
    units = tmp_path / "jobs.pxu"
    units.write_text(
        textwrap.dedent(
            f"""\
            id: reset
            flags: reset-locale
            command: env > {out}/reset

            id: kept
            flags: preserve-locale
            command: env > {out}/kept
            """
        )
    )
    _run(tmp_path, units, environment={"FROM_LAUNCHER": "yes", "ALREADY": "launcher"})
    reset, kept = _env(out / "reset"), _env(out / "kept")
    assert reset["LANG"] == "C.UTF-8" and "LC_TIME" not in reset
    assert kept["LC_TIME"] == "fr_FR.UTF-8"
    # a launcher's [environment] only fills what the caller's environment lacks, as in Checkbox
    assert kept["FROM_LAUNCHER"] == "yes" and kept["ALREADY"] == "caller"


def test_the_working_directory_of_a_job_whose_runner_died_is_removed_when_it_is_settled(tmp_path):
    from plainbox_like.run import jobenv, settle
    from plainbox_like.define.units import JobDefinition

    repo = SessionRepository(str(tmp_path / "repo"))
    writer = repo.create()
    job = JobDefinition("a", command="true")
    writer.set_plan({"a": job.checksum}, ["a"])
    writer.job_started("a", 1, None)
    left = jobenv.make_cwd(job, writer.id, 1)  # as the dead runner made it
    other = jobenv.make_cwd(job, writer.id, 2)  # another attempt's, with files: not this one's to remove
    (Path(other) / "kept").write_text("y")
    ended = jobenv.make_cwd(JobDefinition("b", command="true"), writer.id, 1)  # ended, not removed yet: empty
    elsewhere = jobenv.make_cwd(job, "othersession", 1)  # another session's
    (Path(left) / "file").write_text("x")
    settle.settle_interrupted(writer, frozenset(), lambda _msg: None)
    writer.close()
    assert not os.path.exists(left)
    assert not os.path.exists(ended)
    assert os.listdir(other) == ["kept"]
    assert os.path.isdir(elsewhere)


def test_the_spawner_enters_the_jobs_directory_and_comes_back(tmp_path):
    from plainbox_like.run.executors import Exited, LocalExecutor, ProcessSpec, find_shell

    here = os.getcwd()
    executor = LocalExecutor()
    out = tmp_path / "pwd"
    executor.start(ProcessSpec("k", (find_shell(), "-c", f"pwd > {out}"), dict(os.environ), cwd=str(tmp_path)))
    assert os.getcwd() == here
    while not any(isinstance(event, Exited) for event in executor.poll(5.0)):
        pass
    assert out.read_text().strip() == str(tmp_path)
    with pytest.raises(FileNotFoundError):
        executor.start(ProcessSpec("gone", (find_shell(), "-c", "true"), dict(os.environ), cwd=str(tmp_path / "no")))
    assert os.getcwd() == here
    executor.close()
