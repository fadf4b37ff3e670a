"""The same pyz on Linux aarch64 (an AWS Graviton VM): Debian's arm64 python3 under qemu-user (issue 22.4).

.ci/run installs qemu-user-static and unpacks Debian's arm64 python3.11 with the libraries it needs into
/opt/debian-arm64 (an arm64 python3 cannot be installed beside the machine's own; see .ci/run). qemu runs
it with that directory as its root for libraries: no binfmt registration is needed.
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from throwaway_postgres import emptied

from tests.factories import enrolment_payload
from tests.support.enrolling import post_enrolment, wait_created
from tests.support.processes import start_dev

pytestmark = pytest.mark.e2e

ARM64_ROOT = Path(os.environ.get("DEBIAN_ARM64_ROOT", "/opt/debian-arm64"))
ARM64_PYTHON = ARM64_ROOT / "usr" / "bin" / "python3.11"
QEMU = shutil.which("qemu-aarch64-static") or shutil.which("qemu-aarch64")
# Emulated, a Python start takes seconds and the first unpacking of the pyz tens of them.
SLOW = 300

if not (QEMU and ARM64_PYTHON.is_file()):
    message = f"needs qemu-aarch64(-static) and Debian's arm64 python3.11 in {ARM64_ROOT} (.ci/run installs both)"
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message, allow_module_level=True)


@pytest.fixture(scope="module")
def arm64_cli(pyz) -> list[str]:
    return [str(QEMU), "-L", str(ARM64_ROOT), str(ARM64_PYTHON), "-I", str(pyz)]


@pytest.fixture(scope="module")
def arm64_env(tmp_path_factory) -> dict[str, str]:
    """A bare environment with a SHIV_ROOT of this module's: the pyz unpacks once, under emulation."""
    home = tmp_path_factory.mktemp("arm64-home")
    return {"PATH": "/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8",
            "SHIV_ROOT": str(tmp_path_factory.mktemp("arm64-shiv"))}


def run(cli: list[str], env: dict[str, str], *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*cli, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=SLOW,
                          check=False)


def test_the_emulated_python_is_debians_arm64_python3():
    result = subprocess.run(
        [str(QEMU), "-L", str(ARM64_ROOT), str(ARM64_PYTHON), "-I", "-c",
         "import platform, sys; print(platform.machine(), *sys.version_info[:2])"],
        capture_output=True, text=True, timeout=SLOW, check=True,
    )

    machine, major, minor = result.stdout.split()
    assert machine == "aarch64" and (int(major), int(minor)) >= (3, 11)


def test_help_on_aarch64(arm64_cli, arm64_env):
    result = run(arm64_cli, arm64_env, "--help")

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: directory-api")


@pytest.mark.postgres
def test_migrate_and_check_reach_postgresql_through_the_aarch64_psycopg2(arm64_cli, arm64_env, postgres_url,
                                                                          tmp_path):
    env = {**arm64_env, "DATABASE_URL": emptied(postgres_url), "QUEUE_BACKEND": "database",
           "UI_SECRET": "not-a-real-secret-0123456789", "SQS_ENROLMENT_QUEUE_NAME": "enrolment",
           "SQS_INVALID_ENROLMENT_QUEUE_NAME": "enrolment-invalid"}

    migrated = run(arm64_cli, env, "migrate")
    checked = run(arm64_cli, env, "check")

    assert migrated.returncode == 0, migrated.stderr
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "database schema: current" in checked.stdout


def test_dev_on_aarch64_saves_a_signed_enrolment(arm64_cli, arm64_env, processes, tmp_path):
    workdir = tmp_path / "empty"
    workdir.mkdir()
    _, base_url = start_dev(processes, arm64_cli, arm64_env, workdir, name="dev-aarch64", timeout=SLOW)

    message_id = post_enrolment(base_url, enrolment_payload(0), timeout=60)

    wait_created(base_url, message_id, 120)
