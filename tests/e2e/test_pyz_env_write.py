"""env-write from the pyz alone: its built-in env.json when the current directory has none (issue 22.7)."""

import json
import subprocess
import sys
import zipfile

import pytest
from dotenv import dotenv_values

from tests.e2e.conftest import ROOT

pytestmark = pytest.mark.e2e

BARE_PYTHON = getattr(sys, "_base_executable", sys.executable)
HOST = {
    "DIRECTORY_API_DATABASE_URL": "postgres://directory_api:not-a-real-password@db.example.invalid/directory_api",
    "DIRECTORY_API_UI_SECRET": "not-a-real-secret-0123456789",
    "DIRECTORY_API_SQS_ENROLMENT_QUEUE_NAME": "directory-api-enrolment",
    "DIRECTORY_API_SQS_INVALID_ENROLMENT_QUEUE_NAME": "directory-api-enrolment-invalid",
    "DIRECTORY_API_COMPANY_EMAIL_CONFIRMATION_SUBJECT": "Your company's trade profile",
}


def env_write(pyz, env, cwd, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([BARE_PYTHON, "-I", str(pyz), "env-write", *args], env={**env, **HOST}, cwd=cwd,
                          capture_output=True, text=True, timeout=120, check=False)


def test_in_an_empty_directory_the_pyz_writes_env_from_its_built_in_env_json(pyz, pyz_env, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()

    result = env_write(pyz, pyz_env, empty)

    assert result.returncode == 0, result.stderr
    assert sorted(path.name for path in empty.iterdir()) == [".env"]
    assert dotenv_values(empty / ".env") == {name.removeprefix("DIRECTORY_API_"): value for name, value in HOST.items()}
    # Every value bare, so `docker run --env-file` reads it too; the note names the built-in config.
    assert "'" not in (empty / ".env").read_text().replace("company's", "")
    assert result.stderr.startswith("no env.json in the current directory: using the one built into directory-api")


def test_an_env_json_in_the_current_directory_still_wins(pyz, pyz_env, tmp_path):
    config = json.loads((ROOT / "env.json").read_text())
    config["env_vars"] = {"required": ["UI_SECRET"], "optional": []}
    (tmp_path / "env.json").write_text(json.dumps(config))

    result = env_write(pyz, pyz_env, tmp_path)

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert (tmp_path / ".env").read_text() == "UI_SECRET=not-a-real-secret-0123456789\n"


def test_the_built_in_env_json_is_the_repositorys(pyz):
    with zipfile.ZipFile(pyz) as archive:
        assert archive.read("site-packages/directory_api/env.json") == (ROOT / "env.json").read_bytes()
