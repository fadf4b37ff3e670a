import json
import logging
import threading
import time

import pytest
import requests

from directory_api import batch, db, enrolment
from directory_api import worker as worker_module
from directory_api.backoff import backoff
from directory_api.errors import SchemaError, UserError
from directory_api.migrations import SchemaVersion
from directory_api.models import Company, Enrolment, Rejection
from directory_api.queues import MessageRefused, QueueUnavailable, message_size
from directory_api.settings import Settings
from directory_api.worker import BatchOutcome, metrics_address
from tests.database_locks import write_lock_is_free
from tests.factories import deeply_nested_body, enrolment_body, enrolment_payload, save_one, worker_settings
from tests.support.databases import insert_raw_row
from tests.support.sockets import free_port
from tests.support.sqs import answering, twice, without_receive_count
from tests.support.waits import wait_until
from tests.support.workers import received

REFUSING_DATABASE = "postgres://postgres@127.0.0.1:1/x"


# The moto and database queues answer a poll at once: no need for --once's one-second wait.
pytestmark = pytest.mark.usefixtures("no_lingering_in_once")


def test_a_valid_message_is_saved_and_deleted(make_worker):
    worker = make_worker()
    message_id = worker.enrolments.send(enrolment_body(company_number="SC123456"))
    worker.run(once=True)
    assert Enrolment.get(sqs_message_id=message_id).data["company_number"] == "SC123456"
    assert received(worker.enrolments) == []


def test_a_message_saved_before_is_deleted_without_a_second_row(make_worker):
    worker = make_worker()
    body = enrolment_body()
    message_id = worker.enrolments.send(body)
    save_one(message_id, json.loads(body))
    worker.run(once=True)
    assert (Enrolment.select().count(), Company.select().count()) == (1, 1)
    assert received(worker.enrolments) == []


def test_an_invalid_message_goes_to_the_invalid_queue_with_its_errors_and_is_recorded(make_worker):
    worker = make_worker()
    body = enrolment_body(export_status="MAYBE")
    message_id = worker.enrolments.send(body)
    worker.run(once=True)
    [set_aside] = received(worker.invalid)
    assert set_aside.body == body
    assert set_aside.attributes["original_message_id"] == message_id
    assert list(json.loads(set_aside.attributes["errors"])) == ["export_status"]
    assert list(Rejection.get(message_id=message_id).errors) == ["export_status"]
    assert received(worker.enrolments) == []


def test_a_body_that_is_not_json_is_set_aside(make_worker):
    worker = make_worker()
    message_id = worker.enrolments.send("{not json")
    worker.run(once=True)
    [set_aside] = received(worker.invalid)
    assert "not JSON" in set_aside.attributes["errors"]
    assert Rejection.get(message_id=message_id)


def test_an_enrolment_for_a_company_already_registered_is_set_aside(make_worker):
    worker = make_worker()
    save_one("earlier", enrolment_payload(company_number="01234567"))
    worker.enrolments.send(enrolment_body(company_number="01234567"))
    worker.run(once=True)
    [set_aside] = received(worker.invalid)
    assert "company_number" in json.loads(set_aside.attributes["errors"])


def test_a_message_received_more_than_the_max_receive_count_is_set_aside_with_that_reason(make_worker):
    worker = make_worker(SQS_MAX_RECEIVE_COUNT="1")
    message_id = worker.enrolments.send(enrolment_body())
    worker.enrolments.release(received(worker.enrolments))  # received once, not saved
    worker.run(once=True)
    [set_aside] = received(worker.invalid)
    assert "Received 2 times without being saved" in set_aside.attributes["errors"]
    assert not Enrolment.select().where(Enrolment.sqs_message_id == message_id).exists()


def test_one_bad_message_in_a_batch_does_not_keep_the_others_from_being_saved(make_worker):
    worker = make_worker()
    for body in (enrolment_body(), "[]", enrolment_body(), enrolment_body(sso_id=0)):
        worker.enrolments.send(body)
    worker.run(once=True)
    assert Enrolment.select().count() == 2
    assert len(received(worker.invalid)) == 2
    assert received(worker.enrolments) == []


@pytest.mark.parametrize("levels", [500, 970])
def test_a_message_nested_too_deeply_is_set_aside_alone_and_its_batch_mates_are_saved(make_worker, levels):
    worker = make_worker()
    deep_id = worker.enrolments.send(deeply_nested_body(levels))
    for _ in range(9):
        worker.enrolments.send(enrolment_body())

    worker.run(once=True)

    [set_aside] = received(worker.invalid)
    reason = "The body is not JSON this service accepts: it is nested deeper than 100 levels."
    assert json.loads(set_aside.attributes["errors"]) == {"non_field_errors": [reason]}
    assert Rejection.get(message_id=deep_id).errors == {"non_field_errors": [reason]}
    assert Enrolment.select().count() == 9
    assert received(worker.enrolments) == []


@pytest.mark.parametrize("number", ["1e400", "1" * 5000])
def test_a_message_holding_a_number_that_cannot_be_stored_is_set_aside_alone(make_worker, number):
    worker = make_worker()
    bad_id = worker.enrolments.send(enrolment_body()[:-1] + f', "extra": {number}}}')
    for _ in range(3):
        worker.enrolments.send(enrolment_body())

    worker.run(once=True)

    [set_aside] = received(worker.invalid)
    assert "number" in set_aside.attributes["errors"]
    assert Rejection.get(message_id=bad_id)
    assert Enrolment.select().count() == 3
    assert received(worker.enrolments) == []


@pytest.mark.parametrize("backend", ["database"])
def test_a_message_holding_a_character_sqs_cannot_carry_is_set_aside_alone(make_worker):
    # Only the database queue can hold one (written there by another tool); SQS never delivers it.
    worker = make_worker()
    bad_id = worker.enrolments.send(enrolment_body()[:-1] + ', "extra": "\x01"}')
    worker.enrolments.send(enrolment_body())

    worker.run(once=True)

    [set_aside] = received(worker.invalid)
    assert "cannot carry: U+0001" in set_aside.attributes["errors"]
    assert Rejection.get(message_id=bad_id)
    assert Enrolment.select().count() == 1


def test_once_drains_more_than_one_batch(make_worker):
    worker = make_worker()
    for _ in range(25):
        worker.enrolments.send(enrolment_body())
    worker.run(once=True)
    assert Enrolment.select().count() == 25


def test_a_message_whose_set_aside_fails_stays_on_the_queue(make_worker, monkeypatch):
    worker = make_worker()
    worker.enrolments.send("{not json")
    monkeypatch.setattr(worker.invalid, "send", lambda *args: (_ for _ in ()).throw(QueueUnavailable("down")))
    messages = received(worker.enrolments)
    assert worker.handle(messages) is BatchOutcome.QUEUE_DOWN
    worker.enrolments.release(messages)
    assert len(received(worker.enrolments)) == 1


def test_a_delete_that_partly_fails_is_logged_and_the_others_are_deleted(make_worker, monkeypatch, caplog):
    worker = make_worker()
    worker.enrolments.send(enrolment_body())
    worker.enrolments.send(enrolment_body())
    messages = received(worker.enrolments)
    delete = worker.enrolments.delete
    monkeypatch.setattr(worker.enrolments, "delete", lambda batch: delete(batch[1:]) or [batch[0]])
    with caplog.at_level(logging.WARNING):
        assert worker.handle(messages) is BatchOutcome.SAVED
        worker.finish_deleting()
    assert f"message {messages[0].id}: handled but not deleted" in caplog.text
    worker.enrolments.release(messages)
    [back] = received(worker.enrolments)
    assert back.id == messages[0].id


def test_a_message_that_comes_back_after_a_failed_delete_is_deleted_without_a_second_row(make_worker, monkeypatch):
    worker = make_worker()
    worker.enrolments.send(enrolment_body())
    messages = received(worker.enrolments)
    monkeypatch.setattr(worker.enrolments, "delete", lambda batch: list(batch))
    worker.handle(messages)
    worker.finish_deleting()
    monkeypatch.undo()
    worker.enrolments.release(messages)
    worker.run(once=True)
    assert Enrolment.select().count() == 1
    assert received(worker.enrolments) == []


@pytest.mark.parametrize("backend", ["sqs"])
def test_a_batch_that_meets_a_database_outage_stays_on_the_queue(make_worker):
    worker = make_worker()
    worker.enrolments.send(enrolment_body())
    messages = received(worker.enrolments)
    db.bind(REFUSING_DATABASE)
    assert worker.handle(messages) is BatchOutcome.DATABASE_DOWN
    worker.enrolments.release(messages)
    assert len(received(worker.enrolments)) == 1


@pytest.mark.parametrize("backend", ["sqs"])
def test_a_worker_started_while_the_database_is_down_receives_nothing_and_keeps_running(make_worker, caplog):
    worker = make_worker()
    worker.enrolments.send(enrolment_body())
    db.bind(REFUSING_DATABASE)
    thread = threading.Thread(target=worker.run)
    with caplog.at_level(logging.WARNING):
        thread.start()
        wait_until(lambda: caplog.text.count("database unreachable") >= 2, 10, "two tries of the database")
        assert thread.is_alive()
        worker.shutdown.request()
        thread.join(2)
    assert not thread.is_alive()
    assert caplog.text.count("database unreachable") >= 2
    [message] = received(worker.enrolments)
    assert message.receive_count == 1


@pytest.mark.parametrize("backend", ["sqs"])
def test_a_stop_while_a_database_connection_attempt_hangs_returns_within_two_seconds(make_worker, monkeypatch):
    worker = make_worker()
    probing, released = threading.Event(), threading.Event()
    monkeypatch.setattr(worker, "probe_database", lambda: (probing.set(), released.wait(10)))
    thread = threading.Thread(target=worker.run)
    thread.start()
    assert probing.wait(5)
    worker.shutdown.request()
    thread.join(2)
    released.set()
    assert not thread.is_alive()


@pytest.mark.parametrize("backend", ["sqs"])
def test_a_schema_older_than_the_code_stops_the_worker_with_the_migrate_hint(make_worker):
    worker = make_worker()
    SchemaVersion.delete().execute()
    with pytest.raises(SchemaError, match="directory-api migrate"):
        worker.run()


def test_a_stop_during_a_long_poll_returns_within_two_seconds(make_worker):
    worker = make_worker(SQS_WAIT_TIME="20")
    calls = calls_to_receive(worker)
    thread = threading.Thread(target=worker.run)
    thread.start()
    wait_until(lambda: calls, 10, "the long poll")
    started = time.monotonic()
    worker.shutdown.request()
    thread.join(5)
    assert not thread.is_alive()
    assert time.monotonic() - started < 2


def test_messages_received_but_not_started_are_handed_back_at_stop(make_worker):
    worker = make_worker()
    worker.enrolments.send(enrolment_body())
    worker.pending = worker.start_receive(0)
    worker.pending.done.wait(5)
    worker.stop()
    assert len(received(worker.enrolments)) == 1


def test_backoff_doubles_from_half_a_second_to_thirty_seconds_with_jitter():
    assert [backoff(n, lambda: 1.0) for n in (1, 2, 3, 7, 8, 20)] == [0.5, 1, 2, 30, 30, 30]
    assert backoff(3, lambda: 0.0) == 1


def limit_invalid_queue(worker, monkeypatch, limit: int) -> None:
    """Make the invalid queue refuse, as SQS does, a message whose body and attributes pass `limit` bytes."""
    send = worker.invalid.send

    def limited(body, attributes=None):
        if message_size(body, attributes or {}) > limit:
            raise MessageRefused(f"over {limit} bytes")
        return send(body, attributes)

    monkeypatch.setattr(worker.invalid, "send", limited)
    monkeypatch.setattr(worker.invalid, "message_size_limit", lambda: limit)


def invalid_body_of(size: int) -> str:
    """An enrolment with several invalid fields, padded to `size` bytes."""
    payload = enrolment_payload(export_status="MAYBE", sso_id=0, company_number="bad", date_of_creation="soon")
    padding = size - len(json.dumps({**payload, "notes": ""}))
    return json.dumps({**payload, "notes": "x" * padding})


def test_a_rejected_message_too_large_with_its_reasons_for_the_invalid_queue_is_set_aside_with_them_trimmed(
    make_worker, monkeypatch
):
    worker = make_worker()
    limit, room_for_reasons = 4096, 200
    identity = {"original_message_id": "x" * 36, "errors": ""}
    body = invalid_body_of(limit - message_size("", identity) - room_for_reasons)
    reasons = enrolment.validate(json.loads(body))
    assert len(json.dumps(reasons)) > room_for_reasons
    limit_invalid_queue(worker, monkeypatch, limit)
    message_id = worker.enrolments.send(body)
    worker.run(once=True)
    [set_aside] = received(worker.invalid)
    assert (set_aside.body, set_aside.attributes["original_message_id"]) == (body, message_id)
    [trimmed] = json.loads(set_aside.attributes["errors"])["non_field_errors"]
    assert trimmed.startswith(batch.TRIMMED) and trimmed.endswith("…")
    assert Rejection.get(message_id=message_id).errors == reasons
    assert received(worker.enrolments) == []


def test_a_rejected_message_the_invalid_queue_refuses_even_trimmed_is_recorded_deleted_and_logged(
    make_worker, monkeypatch, caplog
):
    worker = make_worker()
    limit_invalid_queue(worker, monkeypatch, 4096)
    body = invalid_body_of(4100)
    message_id = worker.enrolments.send(body)
    messages = received(worker.enrolments)
    with caplog.at_level(logging.ERROR):
        assert worker.handle(messages) is BatchOutcome.SAVED
    worker.finish_deleting()
    assert f"message {message_id}: the invalid queue refuses it" in caplog.text
    assert set(Rejection.get(message_id=message_id).errors) == {
        "sso_id", "company_number", "export_status", "date_of_creation"}
    worker.enrolments.release(messages)
    assert received(worker.enrolments) == [] and received(worker.invalid) == []


@pytest.mark.parametrize("backend", ["sqs"])
def test_a_rejected_message_over_the_invalid_queues_maximum_message_size_stops_coming_back(make_worker, aws_sqs):
    worker = make_worker()
    aws_sqs.set_queue_attributes(QueueUrl=worker.invalid.url, Attributes={"MaximumMessageSize": "1024"})
    message_id = worker.enrolments.send(invalid_body_of(1500))
    messages = received(worker.enrolments)
    assert worker.handle(messages) is BatchOutcome.SAVED
    worker.finish_deleting()
    worker.enrolments.release(messages)
    assert received(worker.enrolments) == []
    assert Rejection.get(message_id=message_id)


def calls_to_receive(worker, before=lambda count: None) -> list:
    """Record each receive of the worker's enrolment queue; `before(count)` runs ahead of the count-th."""
    calls = []
    receive = worker.enrolments.receive

    def counted(*args):
        calls.append(time.monotonic())
        before(len(calls))
        return receive(*args)

    worker.enrolments.receive = counted
    return calls


def test_an_idle_worker_with_sqs_wait_time_0_backs_off_rather_than_spin(make_worker):
    worker = make_worker(SQS_WAIT_TIME="0")
    calls = calls_to_receive(worker)
    thread = threading.Thread(target=worker.run)
    thread.start()
    time.sleep(2.5)
    worker.shutdown.request()
    thread.join(2)
    assert not thread.is_alive()
    assert 2 <= len(calls) <= 6  # at 0, 0.2, 0.6, 1.4 and 2.4 s: 0.2 s doubling to 1 s


def test_the_idle_pause_doubles_from_0_2_s_to_1_s_and_starts_afresh_once_messages_come(make_worker, monkeypatch):
    worker = make_worker(SQS_WAIT_TIME="0")
    pauses = []
    monkeypatch.setattr(worker, "sleep", lambda seconds: pauses.append(seconds) or True)

    def before(count):
        if count == 6:
            worker.enrolments.send(enrolment_body())
        if count == 8:
            worker.shutdown.request()

    calls_to_receive(worker, before)
    worker.run()
    # Each less the time its receive took.
    assert pauses == pytest.approx([0.2, 0.4, 0.8, 1.0, 1.0, 0.2, 0.4], abs=0.15)


def test_a_stop_while_idle_with_sqs_wait_time_0_returns_within_two_seconds(make_worker):
    worker = make_worker(SQS_WAIT_TIME="0")
    calls = calls_to_receive(worker)
    thread = threading.Thread(target=worker.run)
    thread.start()
    wait_until(lambda: len(calls) >= 5, 10, "the fifth receive")  # after pauses of 0.2, 0.4, 0.8 and 1 s
    started = time.monotonic()
    worker.shutdown.request()
    thread.join(5)
    assert not thread.is_alive()
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("backend", ["database"])
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_sqlite_queue_row_whose_body_is_not_utf8_is_set_aside_and_blocks_no_other_message(
    make_worker, database_url
):
    worker = make_worker()
    for _ in range(25):
        worker.enrolments.send(enrolment_body())
    insert_raw_row(database_url, "written-elsewhere", b'{"company_name": "caf\xe9"}')
    thread = threading.Thread(target=worker.run, kwargs={"once": True})
    thread.start()
    thread.join(30)
    worker.shutdown.request()
    thread.join(2)
    assert not thread.is_alive()
    assert Enrolment.select().count() == 25
    [set_aside] = received(worker.invalid)
    assert set_aside.body == '{"company_name": "caf\\xe9"}'
    assert "not UTF-8" in set_aside.attributes["errors"]
    assert "not UTF-8" in Rejection.get(message_id="written-elsewhere").errors["non_field_errors"][0]
    assert received(worker.enrolments) == []
    assert write_lock_is_free(database_url)


@pytest.mark.parametrize("backend", ["sqs"])
def test_a_receive_that_returns_one_message_twice_sets_it_aside_once(make_worker, monkeypatch):
    worker = make_worker()
    worker.enrolments.send("{not json")
    answering(worker.enrolments, monkeypatch, twice)
    worker.run(once=True)
    assert len(received(worker.invalid)) == 1


@pytest.mark.parametrize("backend", ["sqs"])
def test_without_approximate_receive_count_the_max_receive_rule_still_applies(make_worker, monkeypatch):
    worker = make_worker(SQS_MAX_RECEIVE_COUNT="1")
    message_id = worker.enrolments.send(enrolment_body())
    answering(worker.enrolments, monkeypatch, without_receive_count)
    worker.enrolments.release(received(worker.enrolments))  # received once, not saved
    worker.run(once=True)
    monkeypatch.undo()
    [set_aside] = received(worker.invalid)
    assert "Received 2 times without being saved" in set_aside.attributes["errors"]
    assert not Enrolment.select().where(Enrolment.sqs_message_id == message_id).exists()


def test_the_workers_line_for_a_message_carries_the_request_id_it_was_queued_with(make_worker, caplog):
    worker = make_worker()
    message_id = worker.enrolments.send(enrolment_body(), {"request_id": "req-7"})
    with caplog.at_level(logging.DEBUG, logger="directory_api.worker"):
        worker.run(once=True)

    [line] = [record for record in caplog.records if getattr(record, "message_id", None) == message_id]
    assert line.request_id == "req-7" and "request_id=req-7" in line.getMessage()


def test_a_set_aside_message_keeps_the_request_id_it_was_queued_with(make_worker):
    worker = make_worker()
    worker.enrolments.send("{not json", {"request_id": "req-8"})
    worker.run(once=True)

    [set_aside] = received(worker.invalid)
    assert set_aside.attributes["request_id"] == "req-8"


def test_an_unsafe_request_id_attribute_is_neither_logged_nor_passed_on(make_worker, caplog):
    worker = make_worker()
    hostile = "forged\nERROR line " + "x" * 300
    message_id = worker.enrolments.send("{not json", {"request_id": hostile})
    with caplog.at_level(logging.DEBUG, logger="directory_api.worker"):
        worker.run(once=True)

    [set_aside] = received(worker.invalid)
    assert "request_id" not in set_aside.attributes
    assert "forged" not in caplog.text
    assert any(getattr(record, "message_id", None) == message_id for record in caplog.records)


# -- work's /metrics: where, and from when -------------------------------------------------------------------------

def test_metrics_host_defaults_to_every_address_and_to_loopback_under_debug():
    assert worker_settings("sqlite:///x.sqlite3").metrics_host == "0.0.0.0"
    debug = Settings.from_environ({}, debug=True, require=())
    assert debug.metrics_host == "127.0.0.1"


def test_the_metrics_options_win_over_the_settings_and_once_serves_none_unless_its_option_asks():
    settings = worker_settings("sqlite:///x.sqlite3", METRICS_PORT="9100", METRICS_HOST="10.0.0.5")
    assert metrics_address(settings, once=False, port=None, host=None) == (9100, "10.0.0.5")
    assert metrics_address(settings, once=False, port=9200, host="127.0.0.1") == (9200, "127.0.0.1")
    assert metrics_address(settings, once=True, port=None, host=None) == (None, "10.0.0.5")
    assert metrics_address(settings, once=True, port=9200, host=None) == (9200, "10.0.0.5")


def test_a_metrics_host_that_is_no_address_is_one_line_naming_the_option():
    with pytest.raises(UserError, match="^--metrics-host: 'not an address' is not a host name"):
        metrics_address(worker_settings("sqlite:///x.sqlite3"), once=False, port=9100, host="not an address")


@pytest.mark.parametrize("backend", ["database"])
def test_work_opens_its_metrics_port_only_once_the_schema_is_checked(make_worker, database_url, monkeypatch):
    opened = []
    monkeypatch.setattr(worker_module, "serve_metrics_http", lambda *args: opened.append(args))
    monkeypatch.setattr(worker_module.Shutdown, "install", lambda self: None)
    settings = worker_settings(database_url, QUEUE_BACKEND="database", SQS_WAIT_TIME="0")
    versions = list(SchemaVersion.select().dicts())
    SchemaVersion.delete().execute()
    with pytest.raises(SchemaError):
        worker_module.work(settings, metrics_port=free_port(), metrics_host="127.0.0.1")
    assert opened == []
    SchemaVersion.insert_many(versions).execute()
    port = free_port()
    worker_module.work(settings, once=True, metrics_port=port, metrics_host="127.0.0.1")
    [(_, served_port, host)] = opened
    assert (served_port, host) == (port, "127.0.0.1")


@pytest.mark.parametrize("backend", ["database"])
def test_work_serves_metrics_on_the_host_asked_for(make_worker, database_url, monkeypatch):
    monkeypatch.setattr(worker_module.Shutdown, "install", lambda self: None)
    settings = worker_settings(database_url, QUEUE_BACKEND="database", SQS_WAIT_TIME="0")
    port = free_port()
    worker_module.work(settings, once=True, metrics_port=port, metrics_host="127.0.0.1")
    answer = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    assert "directory_api_worker_messages_total" in answer.text
