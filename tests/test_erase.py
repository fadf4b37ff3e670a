"""`erase`: one supplier's personal data removed by company number or sso id (issue 23 item 3)."""

import json

import pytest

from directory_api import outbox
from directory_api.models import Audit, Company, Email, Enrolment, Rejection, Supplier
from directory_api.ops import erase as erasing
from directory_api.ops.erase import NOT_SENT, erase
from directory_api.saving import Created, Invalid
from tests.factories import enrolment_payload, save_one
from tests.support.cli import invoke_cli

ALICE = {"company_number": "SC123456", "company_name": "Alice Trading Ltd", "sso_id": 11,
         "company_email": "alice@example.com", "mobile_number": "07700900001"}


def enrol(message_id: str = "alice-1", **fields) -> int:
    outcome = save_one(message_id, enrolment_payload(**{**ALICE, **fields}))
    assert isinstance(outcome, Created)
    return outcome.enrolment_id


@pytest.mark.parametrize("key", [{"company_number": "SC123456"}, {"sso_id": 11}])
def test_erase_removes_the_suppliers_personal_data_and_keeps_the_enrolment_row(database, key):
    enrolment_id = enrol()
    save_one("alice-again", enrolment_payload(**{**ALICE, "company_name": "Alice Again"}))  # a rejection
    save_one("bob", enrolment_payload(company_number="01234567", sso_id=22, company_name="Bob Ltd"))
    before = Enrolment.get_by_id(enrolment_id)

    erasure = erase(**key, source="erase on test")

    assert erasure.removed == {"company": 1, "supplier": 1, "enrolment": 1, "email": 1, "rejection": 1}
    assert erasure.enrolment_ids == [enrolment_id]
    assert not Company.select().where(Company.number == "SC123456").exists()
    assert not Supplier.select().where(Supplier.sso_id == 11).exists()
    after = Enrolment.get_by_id(enrolment_id)
    assert (after.id, after.created, after.sqs_message_id) == (before.id, before.created, before.sqs_message_id)
    assert after.erased is not None
    assert after.data == {"export_status": before.data["export_status"]}
    email = Email.get(Email.enrolment == enrolment_id)
    assert (email.recipient, email.company_name) == ("", "")
    rejection = Rejection.get(message_id="alice-again")
    assert (rejection.payload, rejection.company_name, rejection.sso_id) == (None, None, None)
    assert rejection.errors  # the reasons stay
    # Bob is untouched.
    assert Company.get(Company.number == "01234567").name == "Bob Ltd"
    assert Supplier.select().count() == 1


def test_erase_audits_what_it_removed_never_the_personal_data(database):
    enrolment_id = enrol()
    erase(company_number="SC123456", source="erase on host-1")
    row = Audit.get(Audit.action == "erase")
    assert (row.subject, row.source) == (f"enrolment {enrolment_id}", "erase on host-1")
    assert row.detail == {"removed": {"company": 1, "supplier": 1, "enrolment": 1, "email": 1, "rejection": 0}}
    text = json.dumps([row.subject, row.source, row.detail])
    for value in ALICE.values():
        assert str(value) not in text


def test_a_dry_run_counts_and_removes_nothing(database):
    enrol()
    erasure = erase(company_number="SC123456", dry_run=True)
    assert erasure.removed["company"] == 1
    assert Company.select().count() == 1
    assert Enrolment.get().erased is None
    assert not Audit.select().exists()


def test_nothing_matching_removes_nothing(database):
    enrol()
    assert erase(company_number="01234567").empty
    assert erase(sso_id=999).empty
    assert not Audit.select().exists()


def test_a_waiting_email_of_an_erased_enrolment_is_never_sent(database):
    enrolment_id = enrol()
    erase(sso_id=11)
    email = Email.get(Email.enrolment == enrolment_id)
    assert (email.state, email.last_error) == (outbox.FAILED, NOT_SENT)
    assert outbox.claim(10) == []


def test_after_an_erase_the_same_company_enrols_again_as_a_new_enrolment_not_a_retry(database):
    first = enrol("alice-1")
    erase(company_number="SC123456")
    # The very payload again, in a new message: a new enrolment with a company of its own (worker point 8).
    again = save_one("alice-2", enrolment_payload(**ALICE))
    assert isinstance(again, Created) and again.enrolment_id != first
    assert Company.get(Company.number == "SC123456")
    assert Supplier.get(Supplier.sso_id == 11).company.number == "SC123456"


def test_a_rejection_alone_can_be_erased(database):
    save_one("only-rejected", enrolment_payload(**{**ALICE, "export_status": "MAYBE"}))
    erasure = erase(company_number="SC123456")
    assert erasure.removed == {"company": 0, "supplier": 0, "enrolment": 0, "email": 0, "rejection": 1}
    assert Rejection.get().payload is None


def test_a_rejection_of_the_same_company_by_another_sso_id_is_not_erased(database):
    enrol()  # registered to Alice (sso id 11), by mistake say
    save_one("carol", enrolment_payload(**{**ALICE, "sso_id": 33, "company_email": "carol@example.com"}))
    save_one("anonymous", Invalid({"sso_id": ["missing"]}, received=json.dumps({"company_number": "SC123456"})))

    erasure = erase(company_number="SC123456")

    assert erasure.removed["rejection"] == 1  # the one holding the number and no sso id
    carol = Rejection.get(message_id="carol")
    assert (carol.company_email, carol.sso_id) == ("carol@example.com", 33)
    assert json.loads(carol.payload)["company_email"] == "carol@example.com"
    assert Rejection.get(message_id="anonymous").payload is None


def test_a_rejection_holding_the_suppliers_sso_id_under_another_number_is_erased(database):
    enrol()
    save_one("alice-elsewhere", enrolment_payload(**{**ALICE, "company_number": "01234567", "export_status": "X"}))
    assert erase(company_number="SC123456").removed["rejection"] == 1
    assert Rejection.get(message_id="alice-elsewhere").payload is None


# the command


def test_erase_command_prints_what_it_removed_by_table(database, database_url):
    enrol()
    done = invoke_cli("erase", "--company-number", "sc123456", DATABASE_URL=database_url)
    assert done.exit_code == 0, done.output
    assert "removed for company number SC123456:" in done.output
    assert "  company: 1 " in done.output and "  rejection: 0 " in done.output
    assert not Company.select().exists()


def test_erase_command_dry_run_removes_nothing(database, database_url):
    enrol()
    done = invoke_cli("erase", "--sso-id", "11", "--dry-run", DATABASE_URL=database_url)
    assert done.exit_code == 0, done.output
    assert "would remove (dry run) for sso id 11:" in done.output
    assert Company.select().count() == 1


def test_erase_command_matching_nothing_exits_1_with_one_line(database, database_url):
    done = invoke_cli("erase", "--sso-id", "404", DATABASE_URL=database_url)
    assert done.exit_code == 1
    assert done.output.strip().splitlines() == [
        "error: nothing to erase: no company, supplier, enrolment or rejection holds sso id 404"]


@pytest.mark.parametrize("args", [[], ["--company-number", "SC123456", "--sso-id", "1"]])
def test_erase_command_needs_exactly_one_key(database, database_url, args):
    done = invoke_cli("erase", *args, DATABASE_URL=database_url)
    assert done.exit_code == 2
    assert "--company-number or --sso-id" in done.output


def test_erase_labels_cover_every_table():
    assert set(erasing.LABELS) == set(erasing.TABLES)
