"""A hung or locked database: serve keeps accepting enrolments and answering, and work stops within 2 s.

The lock is a real one, held by another session: LOCK TABLE enrolment IN
ACCESS EXCLUSIVE MODE on PostgreSQL, BEGIN EXCLUSIVE on SQLite.
"""

import threading
import time

import pytest

from directory_api import db, health, migrations, web
from directory_api.models import Enrolment
from directory_api.queues.database import DatabaseQueue
from directory_api.queues.sqs import SqsQueue
from directory_api.signature import NonceStore
from directory_api.worker import Worker
from tests.database_locks import lock_waits, postgres_table_locked, sqlite_path, sqlite_write_locked
from tests.factories import ENROLMENT, enrolment_body, worker_settings
from tests.factories import web_settings as settings
from tests.support.waits import wait_until
from tests.support.wsgi import FakeQueue
from tests.support.wsgi import app_call as call
from tests.support.wsgi import app_post as post
from tests.support.wsgi import app_signed_get as signed_get

# serve


@pytest.mark.postgres
def test_status_requests_beyond_the_database_slots_get_503_at_once_and_enrolments_still_go_in(
    postgres_database, postgres_url, tmp_path
):
    # Regression: signed GET /enrolment/<id>/ requests on a locked table took every request thread,
    # and signed POSTs (which only need SQS) and /healthcheck/ timed out after 30 s.
    postgres_database.timeout = 2.0  # statements give up after 2 s (lock waits after 1 s)
    queue = FakeQueue()
    app = web.make_app(settings(), queue, nonce_store=NonceStore(str(tmp_path / "n")), database_requests=2)
    answers = []
    with postgres_table_locked(postgres_url):
        waiting = [
            threading.Thread(target=lambda: answers.append(signed_get(app, "/enrolment/m-1/"))) for _ in range(2)
        ]
        for thread in waiting:
            thread.start()
        wait_until(lambda: lock_waits(postgres_url) == 2, 5, "two status requests waiting on the lock")

        started = time.monotonic()
        status, headers, _ = signed_get(app, "/enrolment/m-2/")
        assert (status, headers["retry-after"]) == (503, str(web.RETRY_AFTER_SECONDS))
        assert post(app, ENROLMENT)[0] == 202
        assert call(app, "GET", "/healthcheck/")[::2] == (
            503, {"status": "unavailable", "database": "not writable", "queue": "ok"}
        )
        assert time.monotonic() - started < health.PROBE_TIMEOUT + 1

        for thread in waiting:
            thread.join(5)
    assert [answer[0] for answer in answers] == [503, 503]  # the waits themselves end, at the lock timeout
    assert len(queue.sent) == 1


def test_healthcheck_answers_within_seconds_while_sqlite_is_write_locked(tmp_path):
    url = f"sqlite:///{tmp_path / 'data.sqlite3'}"
    database = db.bind(url)
    migrations.migrate(database)
    app = web.make_app(settings(), FakeQueue(), nonce_store=NonceStore(str(tmp_path / "n")))
    with sqlite_write_locked(sqlite_path(url)):
        started = time.monotonic()
        status, _, answer = call(app, "GET", "/healthcheck/")
        took = time.monotonic() - started
    assert (status, answer["database"]) == (503, "not writable")
    assert took < health.PROBE_TIMEOUT + 1


# work


def start_worker(worker: Worker) -> threading.Thread:
    """Run the worker in a thread; return once it has passed its start-up checks and receives."""
    thread = threading.Thread(target=worker.run, name="worker-under-test")
    thread.start()
    wait_until(lambda: "receive_lane" in worker.__dict__, 10, "the worker's first receive")
    return thread


def stop_while_saving(worker: Worker, thread: threading.Thread, saving) -> float:
    """Once `saving()` says the worker's save waits, ask it to stop; return how long it took."""
    wait_until(saving, 10, "the worker's save to wait for the lock")
    time.sleep(0.3)
    started = time.monotonic()
    worker.shutdown.request()
    thread.join(5)
    assert not thread.is_alive(), "the worker did not stop"
    return time.monotonic() - started


def handed_back(queue) -> list:
    """The messages receivable again within 3 s: handed back, not left to the 60 s visibility timeout."""
    received: list = []

    def receive_more() -> list:
        received.extend(queue.receive(10, 0))
        return received

    wait_until(receive_more, 3, "the batch back on the queue")
    return received


def in_flight(aws_sqs, name: str) -> int:
    url = aws_sqs.get_queue_url(QueueName=name)["QueueUrl"]
    attributes = aws_sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"])
    return int(attributes["Attributes"]["ApproximateNumberOfMessagesNotVisible"])


@pytest.mark.postgres
def test_a_stop_while_a_save_waits_on_a_locked_table_returns_within_2_s_and_hands_the_batch_back(
    postgres_database, postgres_url
):
    # Regression: `work` hung on its batch and neither a first nor a second SIGTERM stopped it.
    settings_ = worker_settings(postgres_url, QUEUE_BACKEND="database", SQS_WAIT_TIME="1", SQS_VISIBILITY_TIMEOUT="60")
    enrolments, invalid = (DatabaseQueue(settings_, name) for name in ("enrolment", "enrolment-invalid"))
    worker = Worker(settings_, enrolments, invalid, rng=lambda: 0.0)
    thread = start_worker(worker)
    with postgres_table_locked(postgres_url):
        message_id = enrolments.send(enrolment_body())
        took = stop_while_saving(worker, thread, lambda: lock_waits(postgres_url) == 1)
        # Cancelled, not left to wait: the lock holder is the only session waiting on nothing but its client.
        wait_until(lambda: lock_waits(postgres_url) == 0, 1, "the worker's statement to be cancelled")
    assert took < 2
    assert [back.id for back in handed_back(enrolments)] == [message_id]
    assert Enrolment.select().count() == 0


def test_a_stop_while_a_save_waits_for_sqlites_write_lock_returns_within_2_s(tmp_path, aws_sqs):
    url = f"sqlite:///{tmp_path / 'data.sqlite3'}"
    database = db.bind(url)
    migrations.migrate(database)
    settings_ = worker_settings(url, SQS_WAIT_TIME="0", SQS_VISIBILITY_TIMEOUT="60")
    enrolments, invalid = (SqsQueue(settings_, name, client=aws_sqs) for name in ("enrolment", "enrolment-invalid"))
    for queue in (enrolments, invalid):
        queue.ensure_exists()
    worker = Worker(settings_, enrolments, invalid, rng=lambda: 0.0)
    thread = start_worker(worker)
    with sqlite_write_locked(sqlite_path(url)):
        message_id = enrolments.send(enrolment_body())
        took = stop_while_saving(worker, thread, lambda: in_flight(aws_sqs, "enrolment") == 1)
        back = handed_back(enrolments)
    assert took < 2
    assert [message.id for message in back] == [message_id]
