"""The audit table and a rejection's history: every re-drive (when, from where, what became of it) and erase."""

import socket

from directory_api.models import Audit, Rejection
from directory_api.ops import audit, rejections
from directory_api.ops.audit import command_source, console_source, redrive_marker
from tests.factories import enrolment_payload, save_one


def test_a_redrive_is_marked_and_audited_with_its_source(database):
    save_one("m-1", enrolment_payload(export_status="MAYBE"))
    redrive_marker("console from 10.0.0.9")(["m-1"])
    assert Rejection.get(message_id="m-1").redriven is not None
    row = Audit.get()
    assert (row.action, row.subject, row.source, row.detail) == ("redrive", "m-1", "console from 10.0.0.9", None)


def test_sources_name_the_host_or_the_address():
    assert command_source("redrive") == f"redrive on {socket.gethostname()}"
    assert console_source({"REMOTE_ADDR": "10.0.0.9"}) == "console from 10.0.0.9"
    assert console_source({"REMOTE_ADDR": "10.0.0.1", "HTTP_X_FORWARDED_FOR": "203.0.113.7"}) == (
        "console from 10.0.0.1 (forwarded for 203.0.113.7)")
    assert len(console_source({"REMOTE_ADDR": "1", "HTTP_X_FORWARDED_FOR": "x" * 1000})) == 255


def test_history_shows_each_redrive_and_what_became_of_it(database):
    save_one("m-1", enrolment_payload(company_number="SC000001", export_status="MAYBE"))
    redrive_marker("redrive on host-a")(["m-1"])
    assert [r.outcome for r in audit.history("m-1")] == ["waiting"]
    save_one("m-1", enrolment_payload(company_number="SC000001", date_of_creation="nope"))  # set aside again
    redrive_marker("console from 10.0.0.9")(["m-1"])
    created = save_one("m-1", enrolment_payload(company_number="SC000001"))  # saved at last

    first, second = audit.history("m-1")
    assert (first.source, first.outcome, list(first.errors)) == ("redrive on host-a", "set_aside", ["date_of_creation"])
    assert first.set_aside
    assert (second.source, second.outcome, second.enrolment_id) == ("console from 10.0.0.9", "saved",
                                                                    created.enrolment_id)


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
