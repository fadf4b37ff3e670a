"""The ops console from the built pyz: its templates are packed, and `serve` renders them from there."""

import zipfile
from pathlib import Path

import pytest
import requests

from directory_api.console import CONSOLE_REQUESTS, CsrfTokens
from tests.support.processes import wait_for_root
from tests.support.sockets import free_port

pytestmark = pytest.mark.e2e

TEMPLATES = sorted(
    path.name for path in (Path(__file__).resolve().parents[2] / "directory_api" / "templates").iterdir()
)


def test_every_template_is_packed_into_the_pyz(pyz):
    packed = set(zipfile.ZipFile(pyz).namelist())
    assert TEMPLATES and {f"site-packages/directory_api/templates/{name}" for name in TEMPLATES} <= packed


PASSWORD = "not-a-real-ops-password"


def serve_console(cli, base_env, processes, tmp_path):
    """`serve` (one process) with the console on, from the pyz: (the serve, its base URL)."""
    port = free_port()
    env = {**base_env, "DATABASE_URL": f"sqlite:///{tmp_path / 'console.sqlite3'}", "QUEUE_BACKEND": "database",
           "UI_SECRET": "not-a-real-secret-for-tests", "SQS_ENROLMENT_QUEUE_NAME": "enrolment",
           "SQS_INVALID_ENROLMENT_QUEUE_NAME": "enrolment-invalid", "OPS_PASSWORD": PASSWORD}
    assert processes.start([*cli, "migrate"], env, "migrate").popen.wait(60) == 0
    serve = processes.start([*cli, "serve", "--host", "127.0.0.1", "--port", str(port)], env, "serve")
    base_url = f"http://127.0.0.1:{port}"
    wait_for_root(serve, base_url)
    return serve, base_url


def test_serve_from_the_pyz_renders_the_console(cli, base_env, processes, tmp_path):
    serve, base_url = serve_console(cli, base_env, processes, tmp_path)
    auth = ("ops", PASSWORD)
    overview = requests.get(f"{base_url}/ops/", auth=auth, timeout=10)
    assert overview.status_code == 200, serve.log()
    assert "<h1>Overview</h1>" in overview.text
    stylesheet = requests.get(f"{base_url}/ops/console.css", auth=auth, timeout=10)
    assert stylesheet.headers["content-type"].startswith("text/css") and ".card" in stylesheet.text


def test_redrives_and_heads_answered_without_a_body_do_not_lock_the_console_out(cli, base_env, processes, tmp_path):
    serve, base_url = serve_console(cli, base_env, processes, tmp_path)
    auth = ("ops", PASSWORD)
    token = CsrfTokens(PASSWORD.encode()).new()
    for _ in range(CONSOLE_REQUESTS):
        redriven = requests.post(f"{base_url}/ops/rejections/redrive-all", data={"csrf_token": token}, auth=auth,
                                 headers={"Origin": base_url}, allow_redirects=False, timeout=10)
        assert redriven.status_code == 303, serve.log()
    assert requests.get(f"{base_url}/ops/", auth=auth, timeout=10).status_code == 200
    for _ in range(CONSOLE_REQUESTS):
        assert requests.head(f"{base_url}/ops/", auth=auth, timeout=10).status_code == 200
    assert requests.get(f"{base_url}/ops/", auth=auth, timeout=10).status_code == 200
