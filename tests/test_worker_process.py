"""`work` as a real process (python directory_api.py work) against a moto server over HTTP."""

import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import boto3
import pytest

from directory_api.models import Company, Enrolment, Rejection
from directory_api.queues.database import DatabaseQueue
from tests.factories import enrolment_body, worker_settings
from tests.queues.test_database import insert_raw_row

REPO = Path(__file__).resolve().parent.parent
MOTO_SERVER = Path(sys.executable).parent / "moto_server"
FAKE_AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture(scope="module")
def moto_endpoint(tmp_path_factory):
    port = free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")
    server = subprocess.Popen([str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log)
    endpoint = f"http://127.0.0.1:{port}"

    def answers():
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0

    wait_until(answers, 20, "moto_server")
    yield endpoint
    server.terminate()
    server.wait(10)
    log.close()


@pytest.fixture
def queue_names():
    suffix = uuid.uuid4().hex[:8]
    return f"enrolment-{suffix}", f"enrolment-invalid-{suffix}"


@pytest.fixture
def sqs(moto_endpoint):
    return boto3.client("sqs", region_name="eu-west-1", endpoint_url=moto_endpoint, **{
        "aws_access_key_id": "testing", "aws_secret_access_key": "testing"})


@pytest.fixture
def enrolment_queue_url(sqs, queue_names):
    return sqs.create_queue(QueueName=queue_names[0], Attributes={"VisibilityTimeout": "2"})["QueueUrl"]


@pytest.fixture
def start_worker(database, database_url, moto_endpoint, queue_names, tmp_path):
    """Start `work` processes on the test's database and queues; each is killed at the end if still running."""
    started = []

    def start(**environ) -> subprocess.Popen:
        env = {
            **os.environ, **FAKE_AWS,
            "DATABASE_URL": database_url,
            "QUEUE_BACKEND": "sqs",
            "SQS_ENDPOINT_URL": moto_endpoint,
            "SQS_ENROLMENT_QUEUE_NAME": queue_names[0],
            "SQS_INVALID_ENROLMENT_QUEUE_NAME": queue_names[1],
            "SQS_VISIBILITY_TIMEOUT": "2",
            **environ,
        }
        log = open(tmp_path / f"worker-{len(started)}.log", "wb")
        process = subprocess.Popen(
            [sys.executable, "directory_api.py", "work", "--debug"], cwd=REPO, env=env, stdout=log, stderr=log)
        process.log_path = log.name
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def log_of(process) -> str:
    return Path(process.log_path).read_text(errors="replace")


def send_enrolments(sqs, queue_url: str, count: int) -> set[str]:
    ids = set()
    for start in range(0, count, 10):
        entries = [{"Id": str(n), "MessageBody": enrolment_body()} for n in range(min(10, count - start))]
        ids.update(entry["MessageId"] for entry in sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)["Successful"])
    return ids


def queue_is_empty(sqs, queue_url: str) -> bool:
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return attributes == {"ApproximateNumberOfMessages": "0", "ApproximateNumberOfMessagesNotVisible": "0"}


def stop(process, within: float) -> float:
    """SIGTERM the process and return how long it took to exit (it must exit 0 within `within` s)."""
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    returncode = process.wait(within + 5)
    took = time.monotonic() - started
    assert returncode == 0, log_of(process)
    return took


@pytest.mark.parametrize("backend", ["sqs", "database"])
def test_sigterm_during_a_20_second_long_poll_exits_0_within_2_seconds(start_worker, enrolment_queue_url, backend):
    worker = start_worker(SQS_WAIT_TIME="20", QUEUE_BACKEND=backend)
    wait_until(lambda: "waiting up to 20 s" in log_of(worker), 30, "the worker's first long poll")
    time.sleep(1)  # well into the poll
    assert stop(worker, within=2) < 2


def test_kill_9_in_the_middle_of_300_messages_then_a_restart_leaves_exactly_300_enrolments(
    start_worker, sqs, enrolment_queue_url
):
    sent = send_enrolments(sqs, enrolment_queue_url, 300)
    worker = start_worker()
    wait_until(lambda: Enrolment.select().count() >= 30, 60, "the first enrolments")
    worker.kill()
    worker.wait(10)
    assert Enrolment.select().count() < 300, "all saved before the kill: the test proves nothing"
    restarted = start_worker()
    wait_until(lambda: Enrolment.select().count() >= 300 and queue_is_empty(sqs, enrolment_queue_url), 90,
               "all 300 enrolments")
    stop(restarted, within=2)
    assert {e.sqs_message_id for e in Enrolment.select()} == sent
    assert (Enrolment.select().count(), Company.select().count(), Rejection.select().count()) == (300, 300, 0)


def test_two_workers_on_one_queue_save_every_message_once(start_worker, sqs, enrolment_queue_url):
    sent = send_enrolments(sqs, enrolment_queue_url, 200)
    workers = [start_worker(), start_worker()]
    wait_until(lambda: Enrolment.select().count() >= 200 and queue_is_empty(sqs, enrolment_queue_url), 90,
               "all 200 enrolments")
    for worker in workers:
        stop(worker, within=2)
    assert all(re.search(r"batch of \d+: [1-9]\d* saved", log_of(worker)) for worker in workers), "one worker did all the work"
    assert {e.sqs_message_id for e in Enrolment.select()} == sent
    assert (Enrolment.select().count(), Rejection.select().count()) == (200, 0)


def test_a_worker_whose_database_refuses_connections_keeps_waiting_and_stops_on_sigterm(start_worker, sqs,
                                                                                       enrolment_queue_url):
    sqs.send_message(QueueUrl=enrolment_queue_url, MessageBody=enrolment_body())
    worker = start_worker(DATABASE_URL="postgres://postgres@127.0.0.1:1/x")
    wait_until(lambda: log_of(worker).count("database unreachable") >= 3, 20, "three tries of the database")
    assert stop(worker, within=2) < 2
    [message] = sqs.receive_message(QueueUrl=enrolment_queue_url, MessageSystemAttributeNames=["All"])["Messages"]
    assert message["Attributes"]["ApproximateReceiveCount"] == "1"  # never received by the worker


@pytest.mark.parametrize("backend", ["sqs", "database"])
def test_an_idle_worker_with_sqs_wait_time_0_backs_off_rather_than_spin(start_worker, enrolment_queue_url, backend):
    worker = start_worker(SQS_WAIT_TIME="0", QUEUE_BACKEND=backend)
    wait_until(lambda: "waiting up to 0 s" in log_of(worker), 30, "the worker's first receive")
    time.sleep(4)
    receives = log_of(worker).count("waiting up to 0 s")
    stop(worker, within=2)
    assert receives <= 8  # at 0, 0.2, 0.6, 1.4, 2.4, 3.4 s: pauses of 0.2 s doubling to 1 s


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_sqlite_queue_row_that_is_not_utf8_is_set_aside_the_good_ones_saved_and_sigterm_honoured(
    start_worker, database_url, queue_names
):
    DatabaseQueue(worker_settings(database_url), queue_names[0]).send_batch([enrolment_body() for _ in range(25)])
    insert_raw_row(database_url, "written-elsewhere", b'{"company_name": "caf\xe9"}', queue=queue_names[0])
    worker = start_worker(QUEUE_BACKEND="database", SQS_WAIT_TIME="1")
    wait_until(lambda: Enrolment.select().count() == 25 and Rejection.select().count() == 1, 30,
               "25 enrolments and one rejection")
    assert stop(worker, within=2) < 2
    assert "not UTF-8" in Rejection.get(message_id="written-elsewhere").errors["non_field_errors"][0]
