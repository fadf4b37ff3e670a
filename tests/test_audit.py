"""The audit table and a rejection's history: every re-drive (when, from where, what became of it) and erase."""

import contextlib
import socket

import pytest

from directory_api import db, models
from directory_api.models import Audit, Rejection
from directory_api.ops import audit, queries, rejections
from directory_api.ops import redrive as redriving
from directory_api.ops.audit import command_source, console_source, redrive_marker
from directory_api.queues import MessageRefused, QueueUnavailable
from tests.factories import enrolment_body, enrolment_payload, save_one


def redriven(message_id: str, source: str) -> None:
    """What a re-drive from `source` records around a send that succeeds."""
    with redrive_marker(source)(message_id):
        pass


def test_a_redrive_is_marked_and_audited_with_its_source(database):
    save_one("m-1", enrolment_payload(export_status="MAYBE"))
    redriven("m-1", "console from 10.0.0.9")
    assert Rejection.get(message_id="m-1").redriven is not None
    row = Audit.get()
    assert (row.action, row.subject, row.source, row.detail) == ("redrive", "m-1", "console from 10.0.0.9", None)


def test_sources_name_the_host_or_the_address():
    assert command_source("redrive") == f"redrive on {socket.gethostname()}"
    assert console_source({"REMOTE_ADDR": "10.0.0.9"}) == "console from 10.0.0.9"
    # A header any client can send names no one: the peer is what is recorded.
    assert console_source({"REMOTE_ADDR": "10.0.0.1", "HTTP_X_FORWARDED_FOR": "203.0.113.7"}) == "console from 10.0.0.1"


def test_history_shows_each_redrive_and_what_became_of_it(database):
    save_one("m-1", enrolment_payload(company_number="SC000001", export_status="MAYBE"))
    redriven("m-1", "redrive on host-a")
    assert [r.outcome for r in audit.history("m-1")] == ["waiting"]
    save_one("m-1", enrolment_payload(company_number="SC000001", date_of_creation="nope"))  # set aside again
    redriven("m-1", "console from 10.0.0.9")
    created = save_one("m-1", enrolment_payload(company_number="SC000001"))  # saved at last

    first, second = audit.history("m-1")
    assert (first.source, first.outcome, list(first.errors)) == ("redrive on host-a", "set_aside", ["date_of_creation"])
    assert first.set_aside
    assert (second.source, second.outcome, second.enrolment_id) == ("console from 10.0.0.9", "saved",
                                                                    created.enrolment_id)


def set_aside_once(worker) -> str:
    """A message the worker sets aside; its id."""
    message_id = worker.enrolments.send(enrolment_body(export_status="MAYBE"))
    worker.run(once=True)
    return message_id


def test_a_message_set_aside_again_before_its_redrive_is_marked_stays_waiting_with_that_outcome(
        make_worker, monkeypatch):
    worker = make_worker()
    message_id = set_aside_once(worker)
    send = worker.enrolments.send

    def send_then_work(body, attributes=None):
        sent = send(body, attributes)
        worker.run(once=True)  # a worker sets it aside again before the re-drive goes on
        return sent

    monkeypatch.setattr(worker.enrolments, "send", send_then_work)
    redriving.redrive(worker.invalid, worker.enrolments, [message_id], wait_seconds=0,
                      mark=redrive_marker("console from 10.0.0.9"))

    assert [(r.message_id, r.redriven) for r in queries.rejections_page().rows] == [(message_id, None)]
    assert queries.waiting_rejections().count() == 1
    assert [r.outcome for r in audit.history(message_id)] == ["set_aside"]


@pytest.mark.parametrize("error", [MessageRefused("send failed: InvalidParameterValue"), QueueUnavailable("down")])
def test_a_redrive_whose_send_fails_leaves_no_audit_row_and_the_rejection_waiting(make_worker, monkeypatch, error):
    worker = make_worker()
    message_id = set_aside_once(worker)

    def fail(body, attributes=None):
        raise error

    monkeypatch.setattr(worker.enrolments, "send", fail)
    with contextlib.suppress(QueueUnavailable):  # a refusal is reported in the result, the rest propagates
        redriving.redrive(worker.invalid, worker.enrolments, [message_id], wait_seconds=0,
                          mark=redrive_marker("console from 10.0.0.9"))

    assert not Audit.select().exists()
    assert Rejection.get(message_id=message_id).redriven is None


def test_a_redrive_with_the_database_down_is_sent_all_the_same_and_only_logs(monkeypatch, caplog):
    monkeypatch.setattr(models.database, "obj", db.database_for("postgres://postgres@127.0.0.1:1/x"))
    sent = []
    with redrive_marker("console from 10.0.0.9")("m-1"):
        sent.append("m-1")
    assert sent == ["m-1"]
    assert "m-1: its re-drive is not recorded in the audit table" in caplog.text


def test_the_audit_page_is_newest_first_and_paged(database):
    for n in range(5):
        audit.record("redrive", [f"m-{n}"], "test")
    first = audit.audit_page(limit=2)
    assert [row.subject for row in first.rows] == ["m-4", "m-3"]
    second = audit.audit_page(before=first.next_before, limit=2)
    assert [row.subject for row in second.rows] == ["m-2", "m-1"]
    assert audit.audit_page(before=second.next_before, limit=2).next_before is None


def test_rejections_are_found_by_the_keys_enrolments_are(database):
    save_one("r-1", enrolment_payload(company_number="SC123456", company_name="Zebra Crossing Ltd", sso_id=5,
                                         company_email="Zed@Example.com", export_status="MAYBE"))
    save_one("r-2", enrolment_payload(company_number="12345678", company_name="Other", sso_id=12345678,
                                         export_status="MAYBE"))
    found = lambda query, field="any": [r.message_id for r in rejections.search(query, field)]  # noqa: E731
    assert found("zebra") == ["r-1"]
    assert found("Zebra Crossing", "company_name") == ["r-1"]
    assert found("sc123456") == ["r-1"]
    assert found("zed@example.COM") == ["r-1"]
    assert found("5") == ["r-1"]
    assert found("12345678") == ["r-2"]  # its company number and its sso id
    assert found("nobody") == []
    assert found("") == []


def test_a_rejections_case_has_its_payload_readable_and_its_history(database):
    save_one("r-1", enrolment_payload(company_name="<script>alert(1)</script>", export_status="MAYBE"))
    case = rejections.case("r-1")
    assert '"company_name": "<script>alert(1)</script>"' in case.payload
    assert case.history == []
    assert rejections.case("nope") is None
    assert rejections.readable("not json {") == "not json {"


def test_the_redrive_command_audits_each_message_it_moves_with_its_host(database, database_url):
    from directory_api.queues import open_enrolment_queues
    from tests.factories import enrolment_body, worker_settings
    from tests.support.cli import invoke_cli

    environ = {"DATABASE_URL": database_url, "QUEUE_BACKEND": "database",
               "SQS_ENROLMENT_QUEUE_NAME": "enrolment", "SQS_INVALID_ENROLMENT_QUEUE_NAME": "enrolment-invalid"}
    enrolments, invalid = open_enrolment_queues(worker_settings(database_url, QUEUE_BACKEND="database"))
    invalid.ensure_exists()
    invalid.send(enrolment_body(), {"original_message_id": "set-aside-1", "errors": "{}"})
    done = invoke_cli("redrive", "--all", **environ)
    assert done.exit_code == 0, done.output
    row = Audit.get()
    assert (row.action, row.subject, row.source) == ("redrive", "set-aside-1", f"redrive on {socket.gethostname()}")


def test_a_dry_run_redrive_is_not_audited(database, database_url):
    from directory_api.queues import open_enrolment_queues
    from tests.factories import enrolment_body, worker_settings
    from tests.support.cli import invoke_cli

    environ = {"DATABASE_URL": database_url, "QUEUE_BACKEND": "database",
               "SQS_ENROLMENT_QUEUE_NAME": "enrolment", "SQS_INVALID_ENROLMENT_QUEUE_NAME": "enrolment-invalid"}
    enrolments, invalid = open_enrolment_queues(worker_settings(database_url, QUEUE_BACKEND="database"))
    invalid.ensure_exists()
    invalid.send(enrolment_body(), {"errors": "{}"})
    assert invoke_cli("redrive", "--all", "--dry-run", **environ).exit_code == 0
    assert not Audit.select().exists()
