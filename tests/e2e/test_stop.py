"""Stop: SIGTERM at any moment ends `work` and `serve` with exit 0 within 2 s, losing nothing."""

import itertools
import signal
import threading
import time

import pytest
import requests

from tests.e2e.harness import assert_saved_exactly_once, post_enrolment, saved_message_ids, service_env, wait_all_saved
from tests.factories import enrolment_bodies, enrolment_payload
from tests.support.processes import start_serve, start_work
from tests.support.waits import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

EXIT_WITHIN = 2.0


def assert_clean_exit(process, code, seconds):
    assert code == 0, f"exit code {code} after {seconds:.2f}s (None: still running):\n{process.log()}"
    assert seconds <= EXIT_WITHIN, f"took {seconds:.2f}s to exit after SIGTERM:\n{process.log()}"


@pytest.fixture
def worker_in_long_poll(cli, base_env, pg, sqs, moto_endpoint, queues, processes):
    """A worker (20 s long polls, 3 s visibility) waiting in a long poll on an empty queue."""
    env = service_env(
        base_env, database_url=pg, sqs_endpoint=moto_endpoint, queues=queues,
        SQS_WAIT_TIME=20, SQS_VISIBILITY_TIMEOUT=3,
    )
    worker = start_work(processes, cli, env)
    # The worker creates its queue at start; a moment later it is waiting in the long poll.
    wait_until(lambda: sqs.exists(queues[0]), 30, "the worker to create its queue")
    time.sleep(2)
    return worker, env


def test_sigterm_during_a_20_second_long_poll_exits_0_within_2_seconds(worker_in_long_poll):
    worker, _ = worker_in_long_poll

    code, seconds = worker.signal_and_time(signal.SIGTERM)

    assert_clean_exit(worker, code, seconds)


def test_messages_a_cut_long_poll_took_are_saved_after_the_visibility_timeout(
    worker_in_long_poll, cli, pg, sqs, queues, processes
):
    worker, env = worker_in_long_poll
    worker.signal_and_time(signal.SIGTERM)
    # The abandoned poll may still be open on the server and be handed these.
    sent = sqs.send_batch(queues[0], enrolment_bodies(5))

    start_work(processes, cli, env, name="work-restarted")
    wait_all_saved(pg, sqs, queues[0], sent, timeout=30, processes=processes)

    assert_saved_exactly_once(pg, sent)


def test_sigterm_while_draining_exits_0_within_2_seconds_and_a_restart_saves_the_rest_once(
    cli, base_env, pg, sqs, moto_endpoint, queues, processes
):
    messages = 200
    sent = sqs.send_batch(queues[0], enrolment_bodies(messages))
    # A long visibility timeout: what the restart finds quickly, the stopped worker handed back.
    env = service_env(
        base_env, database_url=pg, sqs_endpoint=moto_endpoint, queues=queues, SQS_VISIBILITY_TIMEOUT=60
    )
    worker = start_work(processes, cli, env)
    wait_until(lambda: len(saved_message_ids(pg)) >= 20, 60, "the first 20 enrolments", interval=0.02)

    code, seconds = worker.signal_and_time(signal.SIGTERM)

    assert_clean_exit(worker, code, seconds)
    assert len(saved_message_ids(pg)) < messages, "the worker finished before SIGTERM: nothing was proved"
    start_work(processes, cli, env, name="work-restarted")
    wait_all_saved(pg, sqs, queues[0], sent, timeout=45, processes=processes)
    assert_saved_exactly_once(pg, sent)


def test_sigterm_to_serve_under_load_exits_0_within_2_seconds_and_every_202_is_saved_once(
    cli, base_env, pg, sqs, moto_endpoint, queues, processes
):
    env = service_env(base_env, database_url=pg, sqs_endpoint=moto_endpoint, queues=queues)
    server, base_url = start_serve(processes, cli, env)
    numbers = itertools.count()
    accepted: list[str] = []
    other_answers: list[tuple[int, str]] = []
    stop = threading.Event()

    def client():
        while not stop.is_set():
            try:
                response = post_enrolment(base_url, enrolment_payload(next(numbers)))
            except requests.RequestException:
                continue  # refused once the server stopped listening: the client would retry
            if response.status_code == 202:
                accepted.append(response.json()["id"])
            else:
                other_answers.append((response.status_code, response.text))

    clients = [threading.Thread(target=client, daemon=True) for _ in range(4)]
    for thread in clients:
        thread.start()
    wait_until(lambda: len(accepted) >= 20, 30, "20 accepted enrolments")

    code, seconds = server.signal_and_time(signal.SIGTERM)
    stop.set()
    for thread in clients:
        thread.join(15)

    assert_clean_exit(server, code, seconds)
    assert not other_answers, other_answers[:5]
    start_work(processes, cli, env)
    wait_all_saved(pg, sqs, queues[0], accepted, timeout=60, processes=processes)
    # Equal, not just a superset: a request that reached the queue was answered 202, not cut off.
    assert_saved_exactly_once(pg, accepted)
