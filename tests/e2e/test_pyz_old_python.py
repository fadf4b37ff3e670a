"""Under python3 3.6 to 3.10 the pyz and directory_api.py say in one line which Python they need (issue 22.2)."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT

pytestmark = pytest.mark.e2e

OLD_MINORS = range(6, 11)


def old_pythons() -> list[str]:
    """A python3 of each version 3.6-3.10 on this machine: pyenv's (as CI's machine has them), else on PATH."""
    found = []
    for minor in OLD_MINORS:
        candidates = sorted(Path("~/.pyenv/versions").expanduser().glob(f"3.{minor}.*/bin/python3"))
        candidates += [Path(path) for path in filter(None, [shutil.which(f"python3.{minor}")])]
        if candidates:
            found.append(str(candidates[0]))
    return found


OLD_PYTHONS = old_pythons()


def test_ci_has_an_old_python_to_try():
    if not OLD_PYTHONS:
        if os.environ.get("CI") == "true":
            pytest.fail("no python3 3.6-3.10 here (pyenv's or on PATH): these tests would prove nothing")
        pytest.skip("no python3 3.6-3.10 here")


def assert_one_line_refusal(result: subprocess.CompletedProcess, python: str, program: str) -> None:
    version = subprocess.run([python, "-c", "import platform; print(platform.python_version())"],
                             capture_output=True, text=True, check=True).stdout.strip()
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    (line,) = lines
    assert line.startswith("error: directory-api needs Python 3.11 or newer"), line
    assert f"is Python {version}" in line
    assert "apt-get install python3.11" in line and "dnf install python3.11" in line
    assert f"ExecStart=/usr/bin/python3.11 {program} serve" in line


@pytest.mark.parametrize("python", OLD_PYTHONS)
def test_the_pyz_names_the_python_it_needs(pyz, pyz_env, python, tmp_path):
    result = subprocess.run([python, "-I", str(pyz), "--help"], env=pyz_env, capture_output=True, text=True,
                            timeout=60, check=False)

    assert_one_line_refusal(result, python, str(pyz))
    # Refused before shiv's bootstrap: nothing was unpacked.
    assert not Path(pyz_env["SHIV_ROOT"]).exists()


@pytest.mark.parametrize("python", OLD_PYTHONS)
def test_directory_api_py_names_the_python_it_needs(pyz_env, python):
    script = ROOT / "directory_api.py"
    result = subprocess.run([python, "-I", str(script), "--help"], env=pyz_env, capture_output=True, text=True,
                            timeout=60, check=False)

    assert_one_line_refusal(result, python, str(script))


@pytest.mark.parametrize("python", OLD_PYTHONS)
def test_the_refusal_is_json_under_log_format_json(pyz, pyz_env, python):
    result = subprocess.run([python, "-I", str(pyz), "check"], env={**pyz_env, "LOG_FORMAT": "json"},
                            capture_output=True, text=True, timeout=60, check=False)

    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith('{"time": "') and '"level": "ERROR"' in line and "needs Python 3.11" in line
