"""The environment of commands a benchmark times: their modules compiled, as for an installed program."""

from __future__ import annotations


def compiled_env(env: dict[str, str], cache: str) -> dict[str, str]:
    """*env* with byte-code caching on, in *cache* (a directory of the benchmark's own), whatever
    PYTHONDONTWRITEBYTECODE says: pip compiles an installed package's modules, so a timed command
    that compiled them on every start would pay what no user pays."""
    env = dict(env, PYTHONPYCACHEPREFIX=cache)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env
