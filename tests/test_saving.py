import datetime
import decimal

import pytest

from directory_api import saving
from directory_api.models import Company, Enrolment, EnrolmentRetry, Rejection, Supplier
from directory_api.saving import ALREADY_A_SUPPLIER, COMPANY_ALREADY_REGISTERED, Created, Duplicate, Invalid
from tests.factories import enrolment_payload, save_one
from tests.support.databases import pg_rows


def test_a_valid_message_becomes_an_enrolment_a_company_and_a_supplier(database):
    payload = enrolment_payload(company_number="SC123456", sso_id=42)
    outcome = save_one("message-1", payload)
    assert isinstance(outcome, Created)
    enrolment = Enrolment.get_by_id(outcome.enrolment_id)
    assert (enrolment.sqs_message_id, enrolment.data) == ("message-1", payload)
    supplier = Supplier.get(sso_id=42)
    assert supplier.company.number == "SC123456"
    assert supplier.company_email == payload["company_email"]


def test_a_message_saved_before_is_a_duplicate_with_no_second_row(database):
    payload = enrolment_payload()
    save_one("message-1", payload)
    assert save_one("message-1", payload) == Duplicate()
    assert (Enrolment.select().count(), Company.select().count(), Supplier.select().count()) == (1, 1, 1)


def test_a_company_already_registered_is_invalid_and_writes_nothing(database):
    save_one("message-1", enrolment_payload(company_number="01234567"))
    outcome = save_one("message-2", enrolment_payload(company_number="01234567"))
    assert outcome == Invalid({"company_number": [COMPANY_ALREADY_REGISTERED]})
    assert not Enrolment.select().where(Enrolment.sqs_message_id == "message-2").exists()


def test_an_sso_id_already_a_supplier_is_invalid(database):
    save_one("message-1", enrolment_payload(sso_id=7))
    assert save_one("message-2", enrolment_payload(sso_id=7)) == Invalid({"sso_id": [ALREADY_A_SUPPLIER]})


def test_a_payload_failing_validation_is_invalid_with_its_field_errors(database):
    outcome = save_one("message-1", enrolment_payload(company_number="nope"))
    assert list(outcome.errors) == ["company_number"]
    assert Enrolment.select().count() == 0


def test_an_invalid_message_is_recorded_as_a_rejection_once(database):
    save_one("message-1", enrolment_payload(export_status="MAYBE"))
    save_one("message-1", enrolment_payload(export_status="MAYBE"))
    rejection = Rejection.get(message_id="message-1")
    assert list(rejection.errors) == ["export_status"]
    assert Rejection.select().count() == 1


def test_an_invalid_verdict_given_is_recorded_as_a_rejection(database):
    outcome = save_one("message-1", Invalid({"non_field_errors": ["The body is not JSON."]}))
    assert outcome == Invalid({"non_field_errors": ["The body is not JSON."]})
    assert Rejection.get(message_id="message-1").errors == {"non_field_errors": ["The body is not JSON."]}


def test_an_invalid_verdict_for_a_message_saved_before_is_a_duplicate(database):
    save_one("message-1", enrolment_payload())
    assert save_one("message-1", Invalid({"non_field_errors": ["received too often"]})) == Duplicate()
    assert Rejection.select().count() == 0


def test_one_bad_message_in_a_batch_does_not_sink_the_others(database):
    outcomes = saving.save_batch({
        "good-1": enrolment_payload(),
        "bad": enrolment_payload(sso_id="not a number"),
        "good-2": enrolment_payload(),
    })
    assert [type(outcomes[key]) for key in ("good-1", "bad", "good-2")] == [Created, Invalid, Created]
    assert Enrolment.select().count() == 2


def test_two_messages_of_a_batch_for_one_company_save_the_first_only(database):
    outcomes = saving.save_batch({
        "first": enrolment_payload(company_number="SC000001"),
        "second": enrolment_payload(company_number="SC000001"),
    })
    assert isinstance(outcomes["first"], Created)
    assert outcomes["second"] == Invalid({"company_number": [COMPANY_ALREADY_REGISTERED]})
    assert (Company.select().count(), Supplier.select().count()) == (1, 1)


def test_a_batch_is_one_transaction(database, monkeypatch):
    def fail(*args):
        raise RuntimeError("database gone")

    monkeypatch.setattr(saving, "_record_rejections", fail)
    with pytest.raises(RuntimeError):
        saving.save_batch({"good": enrolment_payload(), "bad": enrolment_payload(sso_id=0)})
    assert Enrolment.select().count() == 0


def test_a_company_registered_by_another_worker_since_the_lookup_is_invalid_and_the_rest_saved(database, monkeypatch):
    save_one("other-worker", enrolment_payload(company_number="SC999999"))
    lookup = saving.Registered.lookup
    lookups = []

    def too_early(payloads):
        lookups.append(payloads)
        return saving.Registered(set(), set()) if len(lookups) == 1 else lookup(payloads)

    monkeypatch.setattr(saving.Registered, "lookup", too_early)
    outcomes = saving.save_batch({"late": enrolment_payload(company_number="SC999999"), "fine": enrolment_payload()})
    assert outcomes["late"] == Invalid({"company_number": [COMPANY_ALREADY_REGISTERED]})
    assert isinstance(outcomes["fine"], Created)
    assert Rejection.get(message_id="late")


def test_a_message_saved_by_another_worker_since_the_batch_began_is_a_duplicate(database, monkeypatch):
    payload = enrolment_payload()
    save_one("message-1", payload)
    # Both looked up before the other worker committed.
    monkeypatch.setattr(saving.Registered, "lookup", lambda payloads: saving.Registered(set(), set()))
    monkeypatch.setattr(saving, "_saved_message_ids", lambda ids: set())
    assert save_one("message-1", payload) == Duplicate()
    assert Company.select().count() == 1


def test_a_batch_of_valid_new_messages_is_saved_without_looking_anything_up(database, monkeypatch):
    def no_lookups(*args):
        raise AssertionError("the usual case needs no lookups before its inserts")

    monkeypatch.setattr(saving.Registered, "lookup", no_lookups)
    monkeypatch.setattr(saving, "_saved_message_ids", no_lookups)
    outcomes = saving.save_batch({f"message-{n}": enrolment_payload() for n in range(10)})
    assert all(isinstance(outcome, Created) for outcome in outcomes.values())
    assert (Enrolment.select().count(), Company.select().count(), Supplier.select().count()) == (10, 10, 10)


def test_a_batch_meeting_a_registered_company_saves_the_others_and_rejects_that_one(database):
    save_one("first", enrolment_payload(company_number="SC000001"))
    outcomes = saving.save_batch({
        "again": enrolment_payload(company_number="SC000001"),
        "new": enrolment_payload(company_number="SC000002"),
    })
    assert outcomes["again"] == Invalid({"company_number": [COMPANY_ALREADY_REGISTERED]})
    assert isinstance(outcomes["new"], Created)
    assert Rejection.get(message_id="again")


def test_every_field_of_a_batch_lands_in_its_column(database):
    with_optional = enrolment_payload(company_number="SC123456", sso_id=2**40, extra={"kept": ["as", "sent"]})
    without_optional = enrolment_payload(company_number="01234567")
    for field in ("mobile_number", "referrer", "revenue"):
        del without_optional[field]
    outcomes = saving.save_batch({"full": with_optional, "bare": without_optional})

    full = Supplier.get(sso_id=2**40)
    assert (full.company_email, full.mobile_number, full.referrer) == (
        with_optional["company_email"], "07700900000", "google")
    assert (full.company.number, full.company.name, full.company.export_status) == (
        "SC123456", with_optional["company_name"], "YES")
    assert (full.company.date_of_creation, full.company.revenue) == (
        datetime.date(2001, 2, 3), decimal.Decimal("125000.50"))
    assert Enrolment.get_by_id(outcomes["full"].enrolment_id).data == with_optional
    bare = Supplier.get(sso_id=without_optional["sso_id"])
    assert (bare.mobile_number, bare.referrer, bare.company.revenue) == ("", "", None)
    assert Enrolment.get_by_id(outcomes["bare"].enrolment_id).created is not None


def test_a_payload_equal_to_a_saved_enrolments_is_a_retry_created_with_that_enrolment_and_no_new_rows(database):
    payload = enrolment_payload()
    first = save_one("first", payload)
    assert save_one("retry", dict(reversed(payload.items()))) == first
    assert (Enrolment.select().count(), Company.select().count(), Supplier.select().count()) == (1, 1, 1)
    assert EnrolmentRetry.get(message_id="retry").enrolment_id == first.enrolment_id
    assert not Rejection.select().exists()


def test_a_retry_delivered_again_is_a_duplicate(database):
    payload = enrolment_payload()
    save_one("first", payload)
    save_one("retry", payload)
    assert save_one("retry", payload) == Duplicate()
    assert EnrolmentRetry.select().count() == 1


def test_a_payload_differing_in_one_field_from_the_saved_one_is_not_a_retry(database):
    payload = enrolment_payload()
    save_one("first", payload)
    outcome = save_one("second", {**payload, "referrer": "another"})
    assert isinstance(outcome, Invalid)
    assert not EnrolmentRetry.select().exists()


@pytest.mark.postgres
def test_a_batch_of_new_messages_on_postgresql_is_still_one_statement_with_retries_detected(
    postgres_database, monkeypatch
):
    database = postgres_database
    statements = []
    execute_sql = database.execute_sql
    monkeypatch.setattr(database, "execute_sql", lambda sql, *args, **kwargs: statements.append(sql) or
                        execute_sql(sql, *args, **kwargs))
    saving.save_batch({f"message-{n}": enrolment_payload() for n in range(10)})
    assert len([sql for sql in statements if not sql.startswith(("BEGIN", "COMMIT", "SAVEPOINT", "RELEASE"))]) == 1


@pytest.mark.postgres
def test_a_batch_of_new_messages_on_postgresql_is_committed_without_begin_and_commit_round_trips(
    postgres_database, postgres_url, monkeypatch
):
    transaction_calls = []
    monkeypatch.setattr(postgres_database, "begin", lambda *args, **kwargs: transaction_calls.append("BEGIN"))
    monkeypatch.setattr(postgres_database, "commit", lambda *args, **kwargs: transaction_calls.append("COMMIT"))
    outcomes = saving.save_batch({f"message-{n}": enrolment_payload() for n in range(10)})
    assert transaction_calls == []
    assert all(isinstance(outcome, Created) for outcome in outcomes.values())
    assert pg_rows(postgres_url, "SELECT count(*) FROM enrolment") == [(10,)]  # seen from another connection


@pytest.mark.parametrize(("revenue", "stored"), [
    ("1.", "1.00"), (".5", "0.50"), ("+7", "7.00"), ("-0012.30", "-12.30"), ("1234567.890", "1234567.89"),
])
def test_a_revenue_is_stored_as_the_decimal_it_writes(database, revenue, stored):
    payload = enrolment_payload(revenue=revenue)
    saving.save_batch({"message": payload})
    assert Company.get(number=payload["company_number"]).revenue == decimal.Decimal(stored)


def test_text_beyond_ascii_is_stored_as_sent(database):
    payload = enrolment_payload(company_name="Ŝpëcial ☃ 𝄞 Ltd", referrer="ﬁ\t\"quoted\" \\back")
    outcomes = saving.save_batch({"message": payload})
    company = Company.get(number=payload["company_number"])
    assert company.name == "Ŝpëcial ☃ 𝄞 Ltd"
    assert Supplier.get(sso_id=payload["sso_id"]).referrer == "ﬁ\t\"quoted\" \\back"
    assert Enrolment.get_by_id(outcomes["message"].enrolment_id).data == payload
