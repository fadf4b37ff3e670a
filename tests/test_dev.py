"""`dev` as a real process in an empty directory: the one command a newcomer runs."""

import os
import signal
import subprocess
import time

import pytest
import requests

from tests.factories import enrolment_body
from tests.support.checkout import SOURCE_CLI
from tests.support.enrolling import DEBUG_SECRET
from tests.support.metrics import metric_samples
from tests.support.signing import signed_headers
from tests.support.sockets import free_port
from tests.support.waits import wait_until


def signed(method: str, url: str, body: str = "") -> dict:
    return signed_headers(url, body.encode(), method, secret=DEBUG_SECRET)


@pytest.fixture
def dev(processes, tmp_path):
    """`python directory_api.py dev` in an empty directory, with no settings in its environment."""
    port = free_port()
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("DATABASE_", "SQS_", "QUEUE_", "UI_", "PORT", "LOG_"))}
    process = processes.start([*SOURCE_CLI, "dev", "--port", str(port)], env, "dev", cwd=tmp_path)
    process.base_url = f"http://127.0.0.1:{port}"

    def answers():
        assert process.alive(), process.full_log()
        return requests.get(process.base_url + "/", timeout=1)

    wait_until(answers, 20, "dev to answer")
    return process


def test_dev_turns_a_signed_post_into_an_enrolment_reported_as_created(dev):
    body = enrolment_body()
    url = dev.base_url + "/enrolment/"
    answer = requests.post(url, data=body.encode(), headers=signed("POST", url, body), timeout=5)
    assert answer.status_code == 202, answer.text
    status_url = f"{dev.base_url}/enrolment/{answer.json()['id']}/"
    # A Response is truthy when it is a 2xx.
    status = wait_until(lambda: requests.get(status_url, headers=signed("GET", status_url), timeout=5), 10,
                        "the enrolment's status")
    assert status.json()["status"] == "created", dev.full_log()


def test_one_ctrl_c_stops_serve_and_work_with_exit_0_within_3_seconds(dev):
    started = time.monotonic()
    dev.popen.send_signal(signal.SIGINT)
    assert dev.popen.wait(10) == 0, dev.full_log()
    assert time.monotonic() - started < 3
    with pytest.raises(requests.ConnectionError):
        requests.get(dev.base_url + "/", timeout=1)


def test_a_signed_request_to_dev_logs_no_third_party_debug_line(dev):
    body = enrolment_body()
    url = dev.base_url + "/enrolment/"
    assert requests.post(url, data=body.encode(), headers=signed("POST", url, body), timeout=5).status_code == 202
    wait_until(lambda: "saved as enrolment" in dev.full_log(), 10, "the enrolment saved")
    dev.popen.send_signal(signal.SIGINT)
    assert dev.popen.wait(10) == 0

    # What an operator would grep for: DEBUG lines of any logger but this service's own.
    third_party = subprocess.run(["grep", "-E", r" DEBUG ([^d]|d[^i]|di[^r])", str(dev.log_path)],
                                 capture_output=True, text=True, check=False)
    ours = subprocess.run(["grep", "-c", " DEBUG directory_api", str(dev.log_path)],
                          capture_output=True, text=True, check=False)
    assert third_party.stdout == "", third_party.stdout
    assert int(ours.stdout) > 0, "dev logs this service at DEBUG"
    assert " INFO directory_api.access POST /enrolment/ 202 " in dev.full_log()


def test_dev_serves_the_metrics_of_its_requests_and_of_its_worker_on_its_one_port(dev):
    body = enrolment_body()
    url = dev.base_url + "/enrolment/"
    assert requests.post(url, data=body.encode(), headers=signed("POST", url, body), timeout=5).status_code == 202

    def emailed():
        found = metric_samples(requests.get(dev.base_url + "/metrics", timeout=5).text)
        return found[("directory_api_emails_total", (("outcome", "logged"),))] == 1 and found

    found = wait_until(emailed, 10, "the e-mail logged")
    labels = (("method", "POST"), ("route", "/enrolment/"), ("status", "202"))
    assert found[("directory_api_http_requests_total", labels)] == 1
    assert found[("directory_api_worker_messages_total", (("outcome", "saved"),))] == 1
    assert found[("directory_api_emails_total", (("outcome", "logged"),))] == 1
