"""The built artifact for the e2e tests: `pyz` (built once a session when stale) and `pyz_env`.

The harness's fixtures (servers, processes, queues, databases) come as a plugin: see tests/conftest.py.
"""

import subprocess
from pathlib import Path

import pytest

from tests.e2e.harness import bare_env

ROOT = Path(__file__).resolve().parents[2]
PYZ = ROOT / "dist" / "directory-api.pyz"
# What the pyz is made of: a change to any of them makes it stale.
SOURCES = ("build.sh", "requirements.txt", "requirements-build.txt", "directory_api", "env.json")


def newest_source_mtime(root: Path = ROOT) -> float:
    mtimes = []
    for name in SOURCES:
        path = root / name
        # Every file of the package, templates included, not only its modules.
        files = (file for file in path.rglob("*") if file.is_file() and "__pycache__" not in file.parts) \
            if path.is_dir() else [path]
        mtimes += [file.stat().st_mtime for file in files]
    return max(mtimes)


def build(root: Path = ROOT, env: dict | None = None) -> Path:
    """Run build.sh in `root`; fail the test with its output when it fails."""
    result = subprocess.run(
        ["./build.sh"], cwd=root, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    if result.returncode != 0:
        pytest.fail(f"./build.sh failed ({result.returncode}):\n{result.stdout}\n{result.stderr}", pytrace=False)
    return root / "dist" / "directory-api.pyz"


@pytest.fixture(scope="session")
def pyz() -> Path:
    """dist/directory-api.pyz, built by ./build.sh when missing or older than its sources."""
    if not PYZ.exists() or PYZ.stat().st_mtime < newest_source_mtime():
        build()
    return PYZ


@pytest.fixture
def pyz_env(tmp_path) -> dict[str, str]:
    """A bare environment of the test's own."""
    home = tmp_path / "home"
    home.mkdir()
    return bare_env(home, tmp_path / "shiv")
