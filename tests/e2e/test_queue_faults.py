"""Queue faults on the built pyz: a message the invalid queue refuses, an idle worker polling without a wait,
a SQLite queue row another tool wrote in another encoding."""

import json
import signal
import sqlite3
import subprocess
import time

import pytest

from tests.e2e.harness import service_env, table_count
from tests.factories import enrolment_body, enrolment_payload
from tests.support.databases import insert_raw_row
from tests.support.processes import start_work
from tests.support.waits import wait_until

pytestmark = pytest.mark.e2e


def assert_stops_within_2_seconds(worker) -> None:
    code, seconds = worker.signal_and_time(signal.SIGTERM)
    assert (code, seconds <= 2) == (0, True), f"exit code {code} after {seconds:.2f}s:\n{worker.log()}"


@pytest.mark.postgres
def test_a_rejected_message_the_invalid_queue_refuses_is_recorded_and_stops_coming_back(
    cli, base_env, pg, moto_endpoint, sqs, queues, processes
):
    # An invalid queue whose limit the message passes, as a 256 KiB queue with a body near 256 KiB.
    sqs.client.create_queue(QueueName=queues[1], Attributes={"MaximumMessageSize": "1024"})
    sqs.client.create_queue(QueueName=queues[0], Attributes={"VisibilityTimeout": "2"})
    [message_id] = sqs.send_batch(queues[0], [enrolment_body(0, export_status="MAYBE", notes="x" * 1300)])
    env = service_env(base_env, database_url=pg, sqs_endpoint=moto_endpoint, queues=queues)
    worker = start_work(processes, cli, env)
    wait_until(lambda: table_count(pg, "rejection") == 1 and sqs.total(queues[0]) == 0, 30,
               "the rejection recorded and the message gone from the enrolment queue")
    assert f"message {message_id}: the invalid queue refuses it" in worker.log()
    time.sleep(3)  # past the visibility timeout: it would be back by now
    assert sqs.total(queues[0]) == 0
    assert_stops_within_2_seconds(worker)


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["sqs", "database"])
def test_an_idle_worker_with_sqs_wait_time_0_does_not_spin(
    cli, base_env, pg, moto_endpoint, sqs, queues, processes, backend
):
    env = service_env(base_env, database_url=pg, sqs_endpoint=moto_endpoint, queues=queues,
                      QUEUE_BACKEND=backend, SQS_WAIT_TIME=0)
    # --debug logs each receive ("waiting up to 0 s"), so the log counts them.
    worker = processes.start([*cli, "work", "--debug"], env, "work")
    wait_until(lambda: "waiting up to 0 s" in worker.log_path.read_text(errors="replace"), 30, "the first receive")
    time.sleep(5)
    receives = worker.log_path.read_text(errors="replace").count("waiting up to 0 s")
    assert_stops_within_2_seconds(worker)
    # Spinning, it made thousands (and used most of a core); pausing 0.2 s doubling to 1 s, about one a second.
    assert receives <= 10, f"{receives} receives in 5 s idle"


def test_a_sqlite_queue_row_that_is_not_utf8_is_set_aside_and_the_others_are_saved(cli, base_env, processes, tmp_path):
    database_url = f"sqlite:///{tmp_path / 'directory-api.sqlite3'}"
    env = {**base_env, "DATABASE_URL": database_url, "QUEUE_BACKEND": "database", "SQS_WAIT_TIME": "1",
           "SQS_ENROLMENT_QUEUE_NAME": "enrolment", "SQS_INVALID_ENROLMENT_QUEUE_NAME": "enrolment-invalid"}
    subprocess.run([*cli, "migrate"], env=env, check=True, capture_output=True, timeout=60)
    connection = sqlite3.connect(tmp_path / "directory-api.sqlite3")
    with connection:
        connection.executemany(
            "INSERT INTO queue_message (id, queue, body, attributes, visible_at, receive_count, created)"
            " VALUES (?, 'enrolment', ?, '{}', 0, 0, '2026-01-01 00:00:00')",
            [(f"good-{n}", json.dumps(enrolment_payload(n))) for n in range(25)],
        )
    insert_raw_row(database_url, "written-elsewhere", b'{"company_name": "caf\xe9"}')
    worker = start_work(processes, cli, env)

    def counts():
        with connection:
            return [connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                    for table in ("enrolment", "rejection")]

    wait_until(lambda: counts() == [25, 1], 30, "25 enrolments and one rejection")
    assert_stops_within_2_seconds(worker)
    [errors] = connection.execute("SELECT errors FROM rejection WHERE message_id = 'written-elsewhere'").fetchone()
    assert "not UTF-8" in json.loads(errors)["non_field_errors"][0]
    connection.close()
