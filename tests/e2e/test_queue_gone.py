"""Queue gone: with SQS unreachable `serve` answers 503 and queues nothing; the worker waits and recovers."""

import time

import pytest
import requests

from tests.e2e.harness import assert_saved_exactly_once, post_enrolment, service_env, wait_all_saved
from tests.factories import enrolment_bodies, enrolment_payload
from tests.support.processes import start_serve, start_work
from tests.support.waits import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]


def test_serve_answers_503_with_retry_after_and_queues_nothing_while_sqs_is_down(
    cli, base_env, pg, sqs, moto_endpoint, queues, processes, proxy_to
):
    proxy = proxy_to(moto_endpoint)
    env = service_env(base_env, database_url=pg, sqs_endpoint=f"http://{proxy.address}", queues=queues)
    _, base_url = start_serve(processes, cli, env)
    assert post_enrolment(base_url, enrolment_payload(0)).status_code == 202
    queued_before = sqs.total(queues[0])

    proxy.down()
    answers = [post_enrolment(base_url, enrolment_payload(n), timeout=60) for n in range(1, 4)]

    for answer in answers:
        assert answer.status_code == 503, answer.text
        assert answer.headers.get("Retry-After", "").isdigit(), answer.headers
        assert answer.headers["Content-Type"].startswith("application/json")
        assert "detail" in answer.json()
    assert requests.get(f"{base_url}/", timeout=5).status_code == 200, "the load balancer check needs no queue"
    health = requests.get(f"{base_url}/healthcheck/", timeout=60)
    assert health.status_code == 503 and health.json()["queue"] != "ok", health.text
    proxy.up()
    assert sqs.total(queues[0]) == queued_before, "a request answered 503 left a message on the queue"
    assert post_enrolment(base_url, enrolment_payload(9)).status_code == 202, "serve did not recover when SQS came back"


def test_the_worker_keeps_retrying_while_sqs_is_down_and_recovers_when_it_is_back(
    cli, base_env, pg, sqs, moto_endpoint, queues, processes, proxy_to
):
    proxy = proxy_to(moto_endpoint)
    env = service_env(base_env, database_url=pg, sqs_endpoint=f"http://{proxy.address}", queues=queues)
    worker = start_work(processes, cli, env)
    before = sqs.send_batch(queues[0], enrolment_bodies(10))
    wait_all_saved(pg, sqs, queues[0], before, timeout=30, processes=processes)

    proxy.down()
    during = sqs.send_batch(queues[0], enrolment_bodies(30, start=10))
    time.sleep(6)
    assert worker.alive(), f"the worker died while SQS was down:\n{worker.log()}"

    proxy.up()
    wait_all_saved(pg, sqs, queues[0], before + during, timeout=45, processes=processes)
    assert_saved_exactly_once(pg, before + during)
    assert worker.alive()


def test_a_worker_started_while_sqs_is_down_creates_its_queues_when_it_answers(
    cli, base_env, pg, sqs, moto_endpoint, queues, processes, proxy_to
):
    proxy = proxy_to(moto_endpoint)
    proxy.down()
    env = service_env(base_env, database_url=pg, sqs_endpoint=f"http://{proxy.address}", queues=queues)
    worker = start_work(processes, cli, env)
    time.sleep(3)
    assert worker.alive(), f"the worker gave up on an unreachable queue:\n{worker.log()}"

    proxy.up()
    wait_until(lambda: all(map(sqs.exists, queues)), 45, "the worker to create both queues")
    sent = sqs.send_batch(queues[0], enrolment_bodies(5))
    wait_all_saved(pg, sqs, queues[0], sent, timeout=45, processes=processes)
    assert_saved_exactly_once(pg, sent)
