import sqlite3
import threading
import time
import uuid

import psycopg2
import pytest

from directory_api import db, migrations
from directory_api.models import QueueMessage
from directory_api.queues import QueueUnavailable
from directory_api.queues.database import DatabaseQueue
from tests.database_locks import write_lock_is_free
from tests.factories import worker_settings
from tests.support.clocks import ManualClock
from tests.support.databases import insert_raw_row
from tests.support.waits import errors_in_threads


@pytest.fixture
def clock():
    return ManualClock(start=1_000_000.0)


@pytest.fixture
def queue(database, database_url, clock):
    return DatabaseQueue(worker_settings(database_url, SQS_VISIBILITY_TIMEOUT="30"), "enrolment", clock=clock)


def test_send_returns_a_uuid4_message_id(queue):
    assert uuid.UUID(queue.send("body")).version == 4


def test_a_sent_message_is_received_with_its_attributes_and_receive_count(queue):
    message_id = queue.send("body", {"errors": "{}"})
    [message] = queue.receive(10, 0)
    assert (message.id, message.body, message.attributes, message.receive_count) == (
        message_id, "body", {"errors": "{}"}, 1)


def test_a_received_message_stays_hidden_until_the_visibility_timeout(queue, clock):
    queue.send("body")
    queue.receive(10, 0)
    clock.now += 29
    assert queue.receive(10, 0) == []
    clock.now += 2
    [message] = queue.receive(10, 0)
    assert message.receive_count == 2


def test_receive_takes_at_most_max_messages(queue):
    for n in range(5):
        queue.send(f"body {n}")
    assert len(queue.receive(3, 0)) == 3
    assert len(queue.receive(3, 0)) == 2


def test_queues_of_other_names_are_apart(queue, database_url, clock):
    other = DatabaseQueue(worker_settings(database_url), "enrolment-invalid", clock=clock)
    other.send("set aside")
    assert queue.receive(10, 0) == []


def test_deleted_messages_are_gone(queue, clock):
    queue.send("one")
    queue.send("two")
    assert queue.delete(queue.receive(10, 0)) == []
    clock.now += 60
    assert queue.receive(10, 0) == []


def test_a_stale_receipt_deletes_nothing_and_is_reported(queue, clock):
    queue.send("body")
    [stale] = queue.receive(10, 0)
    clock.now += 31
    queue.receive(10, 0)  # another worker's claim since
    assert queue.delete([stale]) == [stale]
    assert QueueMessage.select().count() == 1


def test_released_messages_come_back_at_once(queue):
    queue.send("body")
    queue.release(queue.receive(10, 0))
    assert [m.body for m in queue.receive(10, 0)] == ["body"]


def test_extend_keeps_a_message_hidden_from_now(queue, clock):
    queue.send("body")
    [message] = queue.receive(10, 0)
    clock.now += 20
    queue.extend(message, 30)
    clock.now += 20
    assert queue.receive(10, 0) == []
    clock.now += 11
    assert len(queue.receive(10, 0)) == 1


def test_send_batch_returns_an_id_for_each_body(queue):
    ids = queue.send_batch(["a", "b", "c"])
    assert sorted(m.id for m in queue.receive(10, 0)) == sorted(ids)


def test_an_empty_queue_waits_polling_at_growing_intervals(queue, monkeypatch):
    claims = []
    claim = queue._claim
    monkeypatch.setattr(queue, "_claim", lambda n: claims.append(1) or claim(n))
    started = time.monotonic()
    assert queue.receive(10, 2) == []
    assert 2 <= time.monotonic() - started < 2.5
    assert len(claims) <= 5  # 0.2, 0.4, 0.8, then 0.6 s of the last second


def test_a_send_in_the_same_process_wakes_a_waiting_receive(queue):
    threading.Timer(0.3, lambda: queue.send("body")).start()
    started = time.monotonic()
    assert [m.body for m in queue.receive(10, 10)] == ["body"]
    assert time.monotonic() - started < 1


def test_interrupt_cuts_a_waiting_receive_short(queue):
    threading.Timer(0.3, queue.interrupt).start()
    started = time.monotonic()
    queue.receive(10, 10)
    assert time.monotonic() - started < 2


def test_a_database_that_refuses_connections_is_queue_unavailable():
    db.bind("postgres://postgres@127.0.0.1:1/x")
    queue = DatabaseQueue(worker_settings("postgres://postgres@127.0.0.1:1/x"), "enrolment")
    with pytest.raises(QueueUnavailable, match="database queue enrolment"):
        queue.send("body")


@pytest.mark.postgres
def test_a_dropped_connection_is_reopened_on_the_next_call(postgres_url):
    database = db.bind(postgres_url)
    migrations.migrate(database)
    queue = DatabaseQueue(worker_settings(postgres_url), f"dropped-{uuid.uuid4()}")
    queue.send("before")
    pid = queue.database.execute_sql("SELECT pg_backend_pid()").fetchone()[0]
    with psycopg2.connect(postgres_url) as admin, admin.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", (pid,))
    with pytest.raises(QueueUnavailable):
        queue.send("lost with the connection")
    queue.send("after")
    assert sorted(m.body for m in queue.receive(10, 0)) == ["after", "before"]
    database.close()


def test_concurrent_receivers_never_share_a_message(queue, database):
    queue.send_batch([f"body {n}" for n in range(40)])
    received = []

    def drain():
        try:
            while batch := queue.receive(3, 0):
                received.extend(m.id for m in batch)
        finally:
            database.close()

    errors = errors_in_threads(drain, 4)
    assert errors == []
    assert len(received) == len(set(received)) == 40


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_row_whose_body_is_not_utf8_is_received_as_unreadable_beside_the_others(queue, database_url):
    queue.send("good")
    insert_raw_row(database_url, "written-elsewhere", b'{"name": "caf\xe9"}')
    messages = {m.id: m for m in queue.receive(10, 0)}
    bad = messages.pop("written-elsewhere")
    assert [m.body for m in messages.values()] == ["good"]
    assert "not UTF-8 (byte 13)" in bad.unreadable
    assert bad.body == '{"name": "caf\\xe9"}'
    assert write_lock_is_free(database_url)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_row_whose_attributes_are_not_a_json_object_is_received_as_unreadable(queue, database_url):
    insert_raw_row(database_url, "written-elsewhere", b"{}", attributes=b"not json")
    [message] = queue.receive(10, 0)
    assert (message.body, message.attributes) == ("{}", {})
    assert "attributes are not a UTF-8 JSON object" in message.unreadable


def test_the_database_queue_has_no_message_size_limit(queue):
    assert queue.message_size_limit() is None


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_claim_whose_fetch_fails_is_queue_unavailable_and_releases_the_write_lock(queue, database_url, monkeypatch):
    queue.send("body")
    database = queue.database.obj  # behind the models' proxy
    execute = database.execute

    class FailingFetch:
        def __init__(self, cursor):
            self.cursor = cursor

        def fetchall(self):
            raise sqlite3.OperationalError("the fetch failed")

        def close(self):
            self.cursor.close()

    monkeypatch.setattr(database, "execute", lambda query: FailingFetch(execute(query)))
    with pytest.raises(QueueUnavailable, match="the fetch failed"):
        queue.receive(10, 0)
    assert write_lock_is_free(database_url)
