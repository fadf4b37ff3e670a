"""`dev` on the embedded defaults: in an empty directory, one command takes an enrolment through to the database."""

import json

import pytest
import requests

from tests.factories import enrolment_payload
from tests.support.processes import start_dev
from tests.support.signing import signed_headers
from tests.support.waits import wait_until

pytestmark = pytest.mark.e2e

DEBUG_SECRET = "debug"  # UI_SECRET's --debug default, which dev uses


def test_dev_in_an_empty_directory_queues_and_saves_a_signed_enrolment(cli, base_env, processes, tmp_path):
    workdir = tmp_path / "empty"
    workdir.mkdir()
    process, base_url = start_dev(processes, cli, base_env, workdir)
    body = json.dumps(enrolment_payload(0)).encode()
    url = f"{base_url}/enrolment/"

    queued = requests.post(url, data=body, headers=signed_headers(url, body, secret=DEBUG_SECRET), timeout=10)

    assert queued.status_code == 202, queued.text
    status_path = f"/enrolment/{queued.json()['id']}/"

    def status():
        status_url = f"{base_url}{status_path}"
        headers = signed_headers(status_url, b"", "GET", None, secret=DEBUG_SECRET)
        return requests.get(status_url, headers=headers, timeout=10).json()

    answer = wait_until(lambda: (seen := status())["status"] == "created" and seen, 30, "the enrolment to be created")
    assert answer["id"] == queued.json()["id"] and answer["enrolment_id"], answer
    assert (workdir / "directory-api-debug.sqlite3").is_file(), "dev did not use the embedded SQLite default"
    # No EMAIL_HOST under dev: the confirmation e-mail is logged, showing what would be sent.
    email = enrolment_payload(0)["company_email"]
    wait_until(lambda: f"e-mail to {email}, subject \"Your company's trade profile\": logged"
               in process.log(), 10, "the confirmation e-mail logged")
