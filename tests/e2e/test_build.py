"""./build.sh as a user runs it: in a fresh clone (what is committed), with nothing on PATH but the system python3."""

import hashlib
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from directory_api import __version__
from tests.e2e.conftest import ROOT

pytestmark = pytest.mark.e2e

SYSTEM_PYTHON = "/usr/bin/python3"
# The system's python3 and the usual tools (git, tar, sha256sum), and no virtualenv or version manager.
BARE_PATH = "/usr/bin:/bin"


def system_python_fits() -> bool:
    try:
        probe = "import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))"
        result = subprocess.run([SYSTEM_PYTHON, "-I", "-c", probe], capture_output=True, timeout=30, check=False)
    except OSError:
        return False
    return result.returncode == 0


if not system_python_fits():
    pytest.skip(f"needs {SYSTEM_PYTHON} >= 3.11 with venv", allow_module_level=True)


def user_env(home: Path, **changes: str) -> dict[str, str]:
    """A user's shell: own HOME, a bare PATH; the machine's pip settings and certificates, as pip would find them."""
    env = {"PATH": BARE_PATH, "HOME": str(home), "LANG": "C.UTF-8"}
    passed = ("PIP_", "SSL_CERT_", "REQUESTS_CA_BUNDLE", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy",
              "https_proxy", "no_proxy")
    env.update({name: value for name, value in os.environ.items() if name.startswith(passed)})
    env.update(changes)
    return env


def clone(destination: Path) -> Path:
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(destination)], check=True, timeout=120)
    return destination


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_build(checkout: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["./build.sh"], cwd=checkout, env=env, capture_output=True, text=True, timeout=600,
                          check=False)


@pytest.fixture(scope="module")
def fresh_build(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """A clone of this repository built once by ./build.sh as a user would."""
    home = tmp_path_factory.mktemp("home")
    checkout = clone(tmp_path_factory.mktemp("first") / "directory-api")
    return checkout, run_build(checkout, user_env(home))


def test_a_fresh_clone_builds_with_nothing_but_the_system_python3(fresh_build, tmp_path):
    checkout, result = fresh_build

    assert result.returncode == 0, result.stderr
    pyz = checkout / "dist" / "directory-api.pyz"
    ran = subprocess.run([SYSTEM_PYTHON, "-I", str(pyz), "--help"], env=user_env(tmp_path, SHIV_ROOT=str(tmp_path)),
                         capture_output=True, text=True, timeout=120, check=False)
    assert ran.returncode == 0, ran.stderr


def test_the_build_prints_the_sha256_of_the_pyz(fresh_build):
    checkout, result = fresh_build

    assert result.stdout.splitlines()[-1] == f"sha256 {sha256(checkout / 'dist' / 'directory-api.pyz')}"


def test_the_pyz_names_the_release_and_the_commit_it_was_built_from(fresh_build, tmp_path):
    checkout, _ = fresh_build
    head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=checkout, capture_output=True, text=True,
                          check=True).stdout.strip()

    ran = subprocess.run([SYSTEM_PYTHON, "-I", str(checkout / "dist" / "directory-api.pyz"), "--version"],
                         env=user_env(tmp_path, SHIV_ROOT=str(tmp_path)), capture_output=True, text=True,
                         timeout=120, check=False)

    assert ran.stdout == f"directory-api {__version__} (commit {head})\n", ran.stderr


def test_two_clones_of_one_commit_build_the_same_bytes(fresh_build, tmp_path):
    first, _ = fresh_build
    second = clone(tmp_path / "elsewhere" / "directory-api")

    result = run_build(second, user_env(tmp_path))

    assert result.returncode == 0, result.stderr
    assert sha256(second / "dist/directory-api.pyz") == sha256(first / "dist/directory-api.pyz")


def test_a_python_without_venv_is_named_as_what_is_missing(fresh_build, tmp_path):
    checkout, _ = fresh_build
    # A module on PYTHONPATH shadows the standard library's, as if the venv module were not installed.
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "venv.py").write_text("raise ImportError('No module named venv')\n")

    result = run_build(checkout, user_env(tmp_path, PYTHONPATH=str(shadow)))

    assert result.returncode != 0
    assert "has no venv module" in result.stderr
    assert "python3-venv" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unreachable_package_index_is_named_as_what_is_missing(fresh_build, tmp_path):
    checkout, _ = fresh_build
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    env = {name: value for name, value in user_env(tmp_path).items() if not name.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_INDEX_URL=f"http://127.0.0.1:{port}/simple/", PIP_RETRIES="0",
               PIP_TIMEOUT="5", PIP_NO_CACHE_DIR="1")

    result = run_build(checkout, env)

    assert result.returncode != 0
    assert "the package index is not reachable" in result.stderr
    assert "requirements-build.txt" in result.stderr


def test_make_build_runs_build_sh(fresh_build):
    checkout, _ = fresh_build
    if not shutil.which("make", path=BARE_PATH):
        pytest.skip("no make here")

    result = subprocess.run(
        ["make", "--no-print-directory", "-n", "build"], cwd=checkout, capture_output=True, text=True, check=True
    )

    assert result.stdout.strip() == "./build.sh"
