"""`dev` as a real process in an empty directory: the one command a newcomer runs."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from sigauth.helpers import RequestSigner

from tests.factories import enrolment_body

REPO = Path(__file__).resolve().parent.parent
DEBUG_SECRET = "debug"  # UI_SECRET's --debug default


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def signed(method: str, url: str, body: str = "") -> dict:
    headers = {"Content-Type": "application/json"}
    signer = RequestSigner(secret=DEBUG_SECRET, sender_id="directory-ui")
    headers.update(signer.get_signature_headers(url, body.encode(), method, headers["Content-Type"]))
    return headers


@pytest.fixture
def dev(tmp_path):
    """`python directory_api.py dev` in an empty directory, with no settings in its environment."""
    port = free_port()
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("DATABASE_", "SQS_", "QUEUE_", "UI_", "PORT", "LOG_"))}
    log = open(tmp_path / "dev.log", "wb")
    process = subprocess.Popen(
        [sys.executable, str(REPO / "directory_api.py"), "dev", "--port", str(port)],
        cwd=tmp_path, env=env, stdout=log, stderr=log,
    )
    process.base_url = f"http://127.0.0.1:{port}"
    process.log_path = tmp_path / "dev.log"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            requests.get(process.base_url + "/", timeout=1)
            break
        except requests.ConnectionError:
            assert process.poll() is None, process.log_path.read_text()
            time.sleep(0.1)
    yield process
    if process.poll() is None:
        process.kill()
        process.wait(10)
    log.close()


def test_dev_turns_a_signed_post_into_an_enrolment_reported_as_created(dev):
    body = enrolment_body()
    url = dev.base_url + "/enrolment/"
    answer = requests.post(url, data=body.encode(), headers=signed("POST", url, body), timeout=5)
    assert answer.status_code == 202, answer.text
    status_url = f"{dev.base_url}/enrolment/{answer.json()['id']}/"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        status = requests.get(status_url, headers=signed("GET", status_url), timeout=5)
        if status.status_code == 200:
            break
        time.sleep(0.1)
    assert status.json()["status"] == "created", dev.log_path.read_text()


def test_one_ctrl_c_stops_serve_and_work_with_exit_0_within_3_seconds(dev):
    started = time.monotonic()
    dev.send_signal(signal.SIGINT)
    assert dev.wait(10) == 0, dev.log_path.read_text()
    assert time.monotonic() - started < 3
    with pytest.raises(requests.ConnectionError):
        requests.get(dev.base_url + "/", timeout=1)


def test_a_signed_request_to_dev_logs_no_third_party_debug_line(dev):
    body = enrolment_body()
    url = dev.base_url + "/enrolment/"
    assert requests.post(url, data=body.encode(), headers=signed("POST", url, body), timeout=5).status_code == 202
    deadline = time.monotonic() + 10
    while "saved as enrolment" not in dev.log_path.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    dev.send_signal(signal.SIGINT)
    assert dev.wait(10) == 0

    # What an operator would grep for: DEBUG lines of any logger but this service's own.
    third_party = subprocess.run(["grep", "-E", r" DEBUG ([^d]|d[^i]|di[^r])", str(dev.log_path)],
                                 capture_output=True, text=True, check=False)
    ours = subprocess.run(["grep", "-c", " DEBUG directory_api", str(dev.log_path)],
                          capture_output=True, text=True, check=False)
    assert third_party.stdout == "", third_party.stdout
    assert int(ours.stdout) > 0, "dev logs this service at DEBUG"
    assert " INFO directory_api.access POST /enrolment/ 202 " in dev.log_path.read_text()


def test_dev_serves_the_metrics_of_its_requests_and_of_its_worker_on_its_one_port(dev):
    from prometheus_client.parser import text_string_to_metric_families

    body = enrolment_body()
    url = dev.base_url + "/enrolment/"
    assert requests.post(url, data=body.encode(), headers=signed("POST", url, body), timeout=5).status_code == 202

    def scrape() -> dict:
        text = requests.get(dev.base_url + "/metrics", timeout=5).text
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = scrape()
        if found[("directory_api_emails_total", (("outcome", "logged"),))] == 1:
            break
        time.sleep(0.1)
    assert found[("directory_api_http_requests_total", (("method", "POST"), ("route", "/enrolment/"), ("status", "202")))] == 1
    assert found[("directory_api_worker_messages_total", (("outcome", "saved"),))] == 1
    assert found[("directory_api_emails_total", (("outcome", "logged"),))] == 1
