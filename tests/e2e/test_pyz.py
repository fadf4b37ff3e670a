"""The artifact: dist/directory-api.pyz runs on a bare python3 >= 3.11 (how it builds: test_build.py)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from directory_api import __version__

pytestmark = pytest.mark.e2e

COMMANDS = ("serve", "work", "env-write", "migrate", "dev", "check")


def identify(python: str) -> tuple[str, tuple[int, int]] | None:
    """The real executable behind `python` (shims and links resolved) and its version."""
    try:
        result = subprocess.run(
            [python, "-I", "-c", "import os, sys; print(os.path.realpath(sys.executable), *sys.version_info[:2])"],
            capture_output=True, text=True, timeout=30, check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    executable, major, minor = result.stdout.rsplit(maxsplit=2)
    return executable, (int(major), int(minor))


def bare_pythons() -> list[str]:
    """Every python3 >= 3.11 here that is not this test's virtualenv, the base interpreter first."""
    candidates = [getattr(sys, "_base_executable", sys.executable), "/usr/bin/python3"]
    candidates += [shutil.which(f"python3.{minor}") for minor in range(11, 16)]
    candidates += sorted(str(path) for path in Path("~/.pyenv/versions").expanduser().glob("3.*/bin/python3"))
    found, seen = [], set()
    for python in filter(None, candidates):
        identity = identify(python)
        if identity and identity[1] >= (3, 11) and identity[0] not in seen:
            seen.add(identity[0])
            found.append(python)
    return found


PYTHONS = bare_pythons()


def run(python: str, pyz: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [python, "-I", str(pyz), *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_the_base_interpreter_has_none_of_the_dependencies():
    # Otherwise the tests below would not show that the pyz carries its own.
    result = subprocess.run([PYTHONS[0], "-I", "-c", "import typer"], capture_output=True, check=False)

    assert result.returncode != 0


def test_help_runs_isolated_on_a_bare_python(pyz, pyz_env):
    result = run(PYTHONS[0], pyz, "--help", env=pyz_env)

    assert result.returncode == 0, result.stderr
    for command in COMMANDS:
        assert command in result.stdout


def test_version_names_this_release(pyz, pyz_env):
    result = run(PYTHONS[0], pyz, "--version", env=pyz_env)

    # The commit is stamped by build.sh: tests/e2e/test_build.py checks it against the clone's HEAD.
    assert result.stdout.strip().startswith(f"directory-api {__version__} (commit ")


def test_unpacks_into_shiv_root(pyz, pyz_env):
    run(PYTHONS[0], pyz, "--help", env=pyz_env)

    assert any(Path(pyz_env["SHIV_ROOT"]).glob("directory-api.pyz_*/site-packages/directory_api/cli.py"))


def test_runs_directly_through_its_shebang(pyz, pyz_env):
    result = subprocess.run([str(pyz), "--help"], env=pyz_env, capture_output=True, text=True, timeout=120)

    assert result.returncode == 0, result.stderr


def test_bad_settings_are_one_line_each_and_exit_2(pyz, pyz_env):
    env = {**pyz_env, "DATABASE_URL": "mysql://db/x", "PORT": "eighty"}

    result = run(PYTHONS[0], pyz, "migrate", env=env)

    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 2, result.stderr
    assert lines[0].startswith("error: PORT: ")
    assert lines[1].startswith("error: DATABASE_URL: ")


@pytest.mark.postgres
@pytest.mark.parametrize("python", PYTHONS)
def test_reaches_postgresql_on_every_python(pyz, pyz_env, postgres_url, python):
    # psycopg2's C extension is per Python version: build.sh packs one for each.
    result = run(python, pyz, "migrate", env={**pyz_env, "DATABASE_URL": postgres_url})

    assert result.returncode == 0, result.stderr
