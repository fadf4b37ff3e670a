"""The ops console from the built pyz: its templates are packed, and `serve` renders them from there."""

import zipfile
from pathlib import Path

import pytest
import requests

from tests.support import free_port, wait_for_root

pytestmark = pytest.mark.e2e

TEMPLATES = sorted(
    path.name for path in (Path(__file__).resolve().parents[2] / "directory_api" / "templates").iterdir()
)


def test_every_template_is_packed_into_the_pyz(pyz):
    packed = set(zipfile.ZipFile(pyz).namelist())
    assert TEMPLATES and {f"site-packages/directory_api/templates/{name}" for name in TEMPLATES} <= packed


def test_serve_from_the_pyz_renders_the_console(cli, base_env, processes, tmp_path):
    port = free_port()
    env = {**base_env, "DATABASE_URL": f"sqlite:///{tmp_path / 'console.sqlite3'}", "QUEUE_BACKEND": "database",
           "UI_SECRET": "not-a-real-secret-for-tests", "SQS_ENROLMENT_QUEUE_NAME": "enrolment",
           "SQS_INVALID_ENROLMENT_QUEUE_NAME": "enrolment-invalid", "OPS_PASSWORD": "not-a-real-ops-password"}
    assert processes.start([*cli, "migrate"], env, "migrate").popen.wait(60) == 0
    serve = processes.start([*cli, "serve", "--host", "127.0.0.1", "--port", str(port)], env, "serve")
    base_url = f"http://127.0.0.1:{port}"
    wait_for_root(serve, base_url)
    auth = ("ops", "not-a-real-ops-password")
    overview = requests.get(f"{base_url}/ops/", auth=auth, timeout=10)
    assert overview.status_code == 200, serve.log()
    assert "<h1>Overview</h1>" in overview.text
    stylesheet = requests.get(f"{base_url}/ops/console.css", auth=auth, timeout=10)
    assert stylesheet.headers["content-type"].startswith("text/css") and ".card" in stylesheet.text
