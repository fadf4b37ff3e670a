"""Hostile payloads on the built pyz: deep nesting, characters SQS cannot carry, large enrolments at once (issue 10)."""

import json
import threading

import pytest
import requests

from tests.e2e.harness import service_env, wait_all_saved
from tests.factories import deeply_nested_body, enrolment_bodies, enrolment_payload
from tests.support.processes import start_work
from tests.support.signing import signed_post

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

PATH = "/enrolment/"
TOO_DEEP = "The body is not JSON this service accepts: it is nested deeper than 100 levels."


def post(live_api, body: bytes) -> requests.Response:
    return signed_post(live_api.base_url, body, PATH, timeout=30)


@pytest.mark.parametrize("levels", [400, 970])
def test_an_enrolment_nested_hundreds_deep_is_a_400_and_logs_no_traceback(live_api, levels):
    queued, logged = live_api.queued(), len(live_api.process.log())

    response = post(live_api, deeply_nested_body(levels, n=levels).encode())

    assert (response.status_code, response.json()) == (400, {"detail": TOO_DEEP})
    assert live_api.queued() == queued
    assert "Traceback" not in live_api.process.log()[logged:]


@pytest.mark.parametrize("character", ["\x01", "\ufffe"])
def test_an_enrolment_holding_a_character_sqs_cannot_carry_is_a_400_naming_it(live_api, character):
    queued = live_api.queued()
    body = (json.dumps(enrolment_payload(1000))[:-1] + f', "referrer": "x{character}"}}').encode()

    response = post(live_api, body)

    assert response.status_code == 400
    assert f"cannot carry: U+{ord(character):04X}" in response.json()["detail"]
    assert live_api.queued() == queued


def test_ten_enrolments_of_250_kib_at_once_are_all_queued(live_api):
    """They were merged into SendMessageBatch calls over SQS's 1 MiB, refused whole: every one got 503."""
    queued = live_api.queued()
    padding = "x" * 250 * 1024
    posts = [json.dumps({**enrolment_payload(2000 + n), "padding": padding}).encode() for n in range(10)]
    start, statuses = threading.Barrier(len(posts)), []

    def send(body: bytes) -> None:
        start.wait(10)
        statuses.append(post(live_api, body).status_code)

    threads = [threading.Thread(target=send, args=(body,)) for body in posts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert statuses == [202] * len(posts), live_api.process.log()[-3000:]
    assert live_api.queued() == queued + len(posts)


def test_a_message_nested_too_deeply_is_set_aside_alone_and_its_nine_batch_mates_are_saved(
    cli, base_env, pg, sqs, moto_endpoint, queues, processes
):
    """It crashed its batch: the nine, a valid enrolment among them, went to the invalid queue as received too often."""
    deep, *valid = sqs.send_batch(queues[0], [deeply_nested_body(500, n=0), *enrolment_bodies(9, start=1)])
    env = service_env(base_env, database_url=pg, sqs_endpoint=moto_endpoint, queues=queues)
    start_work(processes, cli, env)

    wait_all_saved(pg, sqs, queues[0], valid, timeout=60, processes=processes)

    [set_aside] = sqs.client.receive_message(
        QueueUrl=sqs.url(queues[1]), MaxNumberOfMessages=10, MessageAttributeNames=["All"]
    )["Messages"]
    attributes = {name: value["StringValue"] for name, value in set_aside["MessageAttributes"].items()}
    assert attributes["original_message_id"] == deep
    assert json.loads(attributes["errors"]) == {"non_field_errors": [TOO_DEEP]}
    assert "Traceback" not in processes.logs()
