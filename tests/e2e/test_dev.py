"""`dev` on the embedded defaults: in an empty directory, one command takes an enrolment through to the database."""

import pytest

from tests.factories import enrolment_payload
from tests.support.enrolling import post_enrolment, wait_created
from tests.support.processes import start_dev
from tests.support.waits import wait_until

pytestmark = pytest.mark.e2e

def test_dev_in_an_empty_directory_queues_and_saves_a_signed_enrolment(cli, base_env, processes, tmp_path):
    workdir = tmp_path / "empty"
    workdir.mkdir()
    process, base_url = start_dev(processes, cli, base_env, workdir)

    message_id = post_enrolment(base_url, enrolment_payload(0))

    answer = wait_created(base_url, message_id, 30)
    assert answer["id"] == message_id and answer["enrolment_id"], answer
    assert (workdir / "directory-api-debug.sqlite3").is_file(), "dev did not use the embedded SQLite default"
    # No EMAIL_HOST under dev: the confirmation e-mail is logged, showing what would be sent.
    email = enrolment_payload(0)["company_email"]
    wait_until(lambda: f"e-mail to {email}, subject \"Your company's trade profile\": logged"
               in process.log(), 10, "the confirmation e-mail logged")
