"""A recorded rejection says whose enrolment it was and keeps what was received (issue 23 item 1)."""

import datetime
import json

from directory_api import saving
from directory_api.models import Audit, Rejection
from directory_api.saving import Invalid
from tests.factories import enrolment_payload, save_one


def test_a_rejection_keeps_the_payload_and_the_keys_of_whose_enrolment_it_was(database):
    payload = enrolment_payload(company_number="SC123456", company_name="Acme <b>Ltd</b>", sso_id=77,
                                company_email="owner@example.com", export_status="MAYBE")
    save_one("message-1", payload)
    rejection = Rejection.get(message_id="message-1")
    assert (rejection.company_number, rejection.company_name, rejection.sso_id, rejection.company_email) == (
        "SC123456", "Acme <b>Ltd</b>", 77, "owner@example.com")
    assert json.loads(rejection.payload) == payload
    assert rejection.erased is None


def test_a_rejection_for_a_registered_company_keeps_its_payload(database):
    save_one("first", enrolment_payload(company_number="01234567"))
    second = enrolment_payload(company_number="01234567", company_name="Second Ltd")
    save_one("second", second)
    rejection = Rejection.get(message_id="second")
    assert (rejection.company_name, json.loads(rejection.payload)) == ("Second Ltd", second)


def test_a_body_the_worker_could_not_decode_is_kept_as_text(database):
    save_one("message-1", Invalid({"non_field_errors": ["The body is not JSON."]}, received='{"company_name": "A'))
    rejection = Rejection.get(message_id="message-1")
    assert rejection.payload == '{"company_name": "A'
    assert rejection.company_name is None


def test_a_body_received_too_often_is_kept_with_its_keys(database):
    body = json.dumps(enrolment_payload(company_number="SC654321", sso_id=9))
    save_one("message-1", Invalid({"non_field_errors": ["Received 6 times"]}, received=body))
    rejection = Rejection.get(message_id="message-1")
    assert (rejection.payload, rejection.company_number, rejection.sso_id) == (body, "SC654321", 9)


def test_each_rejection_of_a_batch_keeps_its_own_keys_whatever_the_first_one_held(database):
    not_json = Invalid({"non_field_errors": ["The body is not JSON."]}, received="{not json")
    payload = enrolment_payload(company_number="00000077", company_name="Batchmate Ltd", sso_id=77,
                                company_email="owner@example.com", export_status="MAYBE")
    saving.save_batch({"first": not_json, "second": payload})
    second = Rejection.get(message_id="second")
    assert (second.company_number, second.company_name, second.sso_id, second.company_email) == (
        "00000077", "Batchmate Ltd", 77, "owner@example.com")
    assert Rejection.get(message_id="first").payload == "{not json"


def test_keys_of_the_wrong_type_or_size_are_left_out_or_cut_to_the_column(database):
    payload = enrolment_payload(company_number=["x"], sso_id=True, company_name="n" * 300, company_email=2)
    save_one("message-1", payload)
    rejection = Rejection.get(message_id="message-1")
    assert (rejection.company_number, rejection.sso_id, rejection.company_email) == (None, None, None)
    assert rejection.company_name == "n" * 255


def test_a_kept_payload_is_bounded(database):
    body = "x" * (saving.PAYLOAD_LIMIT * 4)
    save_one("message-1", Invalid({"non_field_errors": ["The body is not JSON."]}, received=body))
    payload = Rejection.get(message_id="message-1").payload
    assert len(payload) < saving.PAYLOAD_LIMIT + 100
    assert payload.endswith(f"(truncated: {len(body)} characters received)")


def test_nul_and_unpaired_surrogates_in_a_body_are_stored_replaced(database):
    save_one("message-1", Invalid({"non_field_errors": ["not UTF-8"]}, received="a\x00b\udcff"))
    assert Rejection.get(message_id="message-1").payload == "a\ufffdb?"


def test_a_message_set_aside_again_shows_its_new_time_and_reasons_and_sorts_as_the_newest(database):
    save_one("redriven", enrolment_payload(export_status="MAYBE"))
    save_one("later", enrolment_payload(export_status="MAYBE"))
    old = Rejection.get(message_id="redriven")
    Rejection.update(created=old.created - datetime.timedelta(days=1),
                     redriven=datetime.datetime(2026, 1, 1)).where(Rejection.id == old.id).execute()
    save_one("redriven", enrolment_payload(date_of_creation="not a date"))
    again = Rejection.get(message_id="redriven")
    assert list(again.errors) == ["date_of_creation"]
    assert again.created > old.created
    assert again.redriven is None
    newest = Rejection.select().order_by(Rejection.id.desc()).first()
    assert newest.message_id == "redriven"
    assert Rejection.select().count() == 2


def test_a_redrive_set_aside_again_records_its_outcome_in_the_audit(database):
    save_one("message-1", enrolment_payload(export_status="MAYBE"))
    Audit.create(action=saving.REDRIVE, subject="message-1", source="redrive on host-1")
    Audit.create(action=saving.REDRIVE, subject="other", source="redrive on host-1")
    save_one("message-1", enrolment_payload(export_status="STILL NOT"))
    mine = Audit.get(Audit.subject == "message-1")
    assert mine.detail["errors"] == {"export_status": Rejection.get(message_id="message-1").errors["export_status"]}
    assert mine.detail["set_aside"]
    assert Audit.get(Audit.subject == "other").detail is None


def test_export_rejections_carries_whose_it_was_and_the_payload(database):
    from directory_api.ops.export import export_rows

    payload = enrolment_payload(company_number="SC123456", company_name='Quote "and", comma', sso_id=5,
                                company_email="a@example.com", export_status="MAYBE")
    save_one("message-1", payload)
    header, row = list(export_rows("rejections"))
    assert header[:5] == ["id", "message_id", "created", "redriven", "errors"]  # the columns it had, first
    found = dict(zip(header, row, strict=True))
    assert (found["company_number"], found["company_name"], found["sso_id"], found["company_email"]) == (
        "SC123456", 'Quote "and", comma', "5", "a@example.com")
    assert json.loads(found["payload"]) == payload
    assert found["erased"] == ""


def test_a_redriven_message_set_aside_again_is_logged_under_its_original_id(make_worker, caplog):
    from directory_api.queues import ORIGINAL_MESSAGE_ID

    worker = make_worker()
    new_id = worker.enrolments.send(json.dumps(enrolment_payload(export_status="MAYBE")),
                                    {ORIGINAL_MESSAGE_ID: "original-1"})
    caplog.set_level("INFO", logger="directory_api.worker")
    worker.run(once=True)
    [line] = [r for r in caplog.records if "cannot be saved" in r.getMessage()]
    assert line.getMessage().startswith(f"message original-1 (re-driven as {new_id}): cannot be saved, set aside")
    assert (line.message_id, line.redriven_as) == ("original-1", new_id)
    assert Rejection.get(message_id="original-1").payload
