"""`work` as a real process (python directory_api.py work) against a moto server over HTTP."""

import os
import re
import signal
import time

import pytest

from directory_api.models import Company, Enrolment, Rejection
from directory_api.queues.database import DatabaseQueue
from tests.factories import enrolment_body, worker_settings
from tests.support.checkout import SOURCE_CLI
from tests.support.databases import insert_raw_row
from tests.support.processes import Process, start_work
from tests.support.sqs import sqs_env
from tests.support.waits import wait_until


@pytest.fixture
def enrolment_queue_url(sqs, queues):
    return sqs.client.create_queue(QueueName=queues[0], Attributes={"VisibilityTimeout": "2"})["QueueUrl"]


@pytest.fixture
def start_worker(database, database_url, moto_endpoint, queues, processes):
    """Start `work --debug` processes on the test's database and queues; each is stopped at the end if still running."""

    def start(**environ) -> Process:
        env = {**os.environ, **sqs_env(moto_endpoint, queues, database_url, SQS_VISIBILITY_TIMEOUT=2, **environ)}
        return start_work(processes, SOURCE_CLI, env, "--debug")

    return start


def stop(process: Process, within: float) -> float:
    """SIGTERM the process and return how long it took to exit (it must exit 0 within `within` s)."""
    returncode, took = process.signal_and_time(signal.SIGTERM, within + 5)
    assert returncode == 0, process.full_log()
    return took


@pytest.mark.parametrize("backend", ["sqs", "database"])
def test_sigterm_during_a_20_second_long_poll_exits_0_within_2_seconds(start_worker, enrolment_queue_url, backend):
    worker = start_worker(SQS_WAIT_TIME="20", QUEUE_BACKEND=backend)
    wait_until(lambda: "waiting up to 20 s" in worker.full_log(), 30, "the worker's first long poll")
    time.sleep(1)  # well into the poll
    assert stop(worker, within=2) < 2


def test_kill_9_in_the_middle_of_300_messages_then_a_restart_leaves_exactly_300_enrolments(
    start_worker, sqs, queues, enrolment_queue_url
):
    sent = set(sqs.send_batch(queues[0], [enrolment_body() for _ in range(300)]))
    worker = start_worker()
    wait_until(lambda: Enrolment.select().count() >= 30, 60, "the first enrolments")
    worker.kill()
    assert Enrolment.select().count() < 300, "all saved before the kill: the test proves nothing"
    restarted = start_worker()
    wait_until(lambda: Enrolment.select().count() >= 300 and sqs.total(queues[0]) == 0, 90,
               "all 300 enrolments")
    stop(restarted, within=2)
    assert {e.sqs_message_id for e in Enrolment.select()} == sent
    assert (Enrolment.select().count(), Company.select().count(), Rejection.select().count()) == (300, 300, 0)


def test_two_workers_on_one_queue_save_every_message_once(start_worker, sqs, queues, enrolment_queue_url):
    sent = set(sqs.send_batch(queues[0], [enrolment_body() for _ in range(200)]))
    workers = [start_worker(), start_worker()]
    wait_until(lambda: Enrolment.select().count() >= 200 and sqs.total(queues[0]) == 0, 90,
               "all 200 enrolments")
    for worker in workers:
        stop(worker, within=2)
    assert all(re.search(r"batch of \d+: [1-9]\d* saved", worker.full_log()) for worker in workers), \
        "one worker did all the work"
    assert {e.sqs_message_id for e in Enrolment.select()} == sent
    assert (Enrolment.select().count(), Rejection.select().count()) == (200, 0)


def test_a_worker_whose_database_refuses_connections_keeps_waiting_and_stops_on_sigterm(start_worker, sqs,
                                                                                       enrolment_queue_url):
    sqs.client.send_message(QueueUrl=enrolment_queue_url, MessageBody=enrolment_body())
    worker = start_worker(DATABASE_URL="postgres://postgres@127.0.0.1:1/x")
    wait_until(lambda: worker.full_log().count("database unreachable") >= 3, 20, "three tries of the database")
    assert stop(worker, within=2) < 2
    answer = sqs.client.receive_message(QueueUrl=enrolment_queue_url, MessageSystemAttributeNames=["All"])
    [message] = answer["Messages"]
    assert message["Attributes"]["ApproximateReceiveCount"] == "1"  # never received by the worker


@pytest.mark.parametrize("backend", ["sqs", "database"])
def test_an_idle_worker_with_sqs_wait_time_0_backs_off_rather_than_spin(start_worker, enrolment_queue_url, backend):
    worker = start_worker(SQS_WAIT_TIME="0", QUEUE_BACKEND=backend)
    wait_until(lambda: "waiting up to 0 s" in worker.full_log(), 30, "the worker's first receive")
    time.sleep(4)
    receives = worker.full_log().count("waiting up to 0 s")
    stop(worker, within=2)
    assert receives <= 8  # at 0, 0.2, 0.6, 1.4, 2.4, 3.4 s: pauses of 0.2 s doubling to 1 s


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_sqlite_queue_row_that_is_not_utf8_is_set_aside_the_good_ones_saved_and_sigterm_honoured(
    start_worker, database_url, queues
):
    DatabaseQueue(worker_settings(database_url), queues[0]).send_batch([enrolment_body() for _ in range(25)])
    insert_raw_row(database_url, "written-elsewhere", b'{"company_name": "caf\xe9"}', queue=queues[0])
    worker = start_worker(QUEUE_BACKEND="database", SQS_WAIT_TIME="1")
    wait_until(lambda: Enrolment.select().count() == 25 and Rejection.select().count() == 1, 30,
               "25 enrolments and one rejection")
    assert stop(worker, within=2) < 2
    assert "not UTF-8" in Rejection.get(message_id="written-elsewhere").errors["non_field_errors"][0]
