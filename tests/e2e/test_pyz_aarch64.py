"""The same pyz on Linux aarch64 (an AWS Graviton VM): Debian's arm64 python3 under qemu-user (issue 22.4).

.ci/run installs qemu-user-static and unpacks Debian's arm64 python3.11 with the libraries it needs into
/opt/debian-arm64 (an arm64 python3 cannot be installed beside the machine's own; see .ci/run). qemu runs
it with that directory as its root for libraries: no binfmt registration is needed.
"""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import requests
from throwaway_postgres import emptied

from tests.factories import enrolment_payload
from tests.support.processes import wait_for_root
from tests.support.signing import signed_headers
from tests.support.sockets import free_port
from tests.support.waits import wait_until

pytestmark = pytest.mark.e2e

ARM64_ROOT = Path(os.environ.get("DEBIAN_ARM64_ROOT", "/opt/debian-arm64"))
ARM64_PYTHON = ARM64_ROOT / "usr" / "bin" / "python3.11"
QEMU = shutil.which("qemu-aarch64-static") or shutil.which("qemu-aarch64")
# Emulated, a Python start takes seconds and the first unpacking of the pyz tens of them.
SLOW = 300
DEBUG_SECRET = "debug"  # UI_SECRET's --debug default, which dev uses

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
    port = free_port()
    process = processes.start([*arm64_cli, "dev", "--port", str(port)], arm64_env, "dev-aarch64", cwd=workdir)
    base_url = f"http://127.0.0.1:{port}"
    wait_for_root(process, base_url, timeout=SLOW)
    body = json.dumps(enrolment_payload(0)).encode()
    url = f"{base_url}/enrolment/"

    queued = requests.post(url, data=body, headers=signed_headers(url, body, secret=DEBUG_SECRET), timeout=60)

    assert queued.status_code == 202, queued.text
    status_url = f"{base_url}/enrolment/{queued.json()['id']}/"

    def created():
        headers = signed_headers(status_url, b"", "GET", None, secret=DEBUG_SECRET)
        return requests.get(status_url, headers=headers, timeout=60).json()["status"] == "created"

    wait_until(created, 120, "the enrolment to be created")
