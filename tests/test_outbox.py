"""The outbox's rows: each e-mail recorded with its enrolment, counted, claimed, and its state in words."""

import datetime

import pytest

from directory_api import outbox, saving
from directory_api.models import Email, Enrolment
from directory_api.outbox import FAILED, LOGGED, SENT, WAITING
from tests.factories import enrolment_payload, save_one
from tests.support.outbox_rows import saved, states

# -- recording ------------------------------------------------------------------------------------------------

def test_saving_an_enrolment_records_its_confirmation_email_in_the_same_batch(database):
    payloads = [enrolment_payload() for _ in range(3)]
    outcomes = saving.save_batch({f"message-{n}": payload for n, payload in enumerate(payloads)})
    emails = list(Email.select().order_by(Email.id))
    assert [(e.enrolment_id, e.recipient, e.company_name, e.state) for e in emails] == [
        (outcomes[f"message-{n}"].enrolment_id, p["company_email"], p["company_name"], WAITING)
        for n, p in enumerate(payloads)
    ]
    assert len({e.token for e in emails}) == 3


@pytest.mark.parametrize("database_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
def test_on_postgres_a_batch_and_its_emails_are_one_statement(database, monkeypatch):
    statements = []
    execute_sql = database.execute_sql
    monkeypatch.setattr(database, "execute_sql", lambda sql, *args, **kwargs: (
        statements.append(sql), execute_sql(sql, *args, **kwargs))[1])
    saving.save_batch({f"message-{n}": enrolment_payload() for n in range(10)})
    assert len([sql for sql in statements if "INSERT" in sql]) == 1
    assert Email.select().count() == 10


def test_a_message_saved_before_records_no_second_email(database):
    payload = enrolment_payload()
    save_one("message-1", payload)
    save_one("message-1", payload)
    assert Email.select().count() == 1


def test_an_enrolment_that_cannot_be_saved_records_no_email(database):
    save_one("message-1", enrolment_payload(company_number="01234567"))
    save_one("message-2", enrolment_payload(company_number="01234567"))
    save_one("message-3", enrolment_payload(export_status="MAYBE"))
    assert Email.select().count() == 1


def test_the_careful_path_records_the_email_of_each_enrolment_it_saves(database):
    save_one("message-1", enrolment_payload(company_number="01234567"))
    outcomes = saving.save_batch({"message-2": enrolment_payload(company_number="01234567"),
                                  "message-3": enrolment_payload()})
    assert [e.enrolment_id for e in Email.select().order_by(Email.id)][1:] == [outcomes["message-3"].enrolment_id]


def test_an_email_is_written_or_not_with_its_enrolment(database, monkeypatch):
    def broken(new_enrolments):
        raise RuntimeError("the outbox insert failed")

    monkeypatch.setattr(outbox, "record", broken)
    monkeypatch.setattr(saving, "is_postgres", lambda database: False)  # the portable path calls record()
    with pytest.raises(RuntimeError):
        save_one("message-1", enrolment_payload())
    assert Enrolment.select().count() == 0


def test_counts_gives_every_state(database):
    saved(2)
    Email.update(state=SENT).where(Email.id == Email.select(Email.id).order_by(Email.id).limit(1)).execute()
    assert outbox.counts() == {"waiting": 1, "sent": 1, "failed": 0, "logged": 0}


def test_for_enrolment_gives_its_email(database):
    [enrolment_id] = saved()
    assert outbox.for_enrolment(enrolment_id).state == WAITING
    assert outbox.for_enrolment(enrolment_id + 1000) is None


# -- claiming and recording outcomes --------------------------------------------------------------------------

def test_a_claim_taken_over_since_is_not_recorded_logged_by_its_old_holder(make_sender):
    saved(count=2)
    claimed = outbox.claim(10)
    Email.update(attempts=Email.attempts + 1).where(Email.id == claimed[0].id).execute()  # claimed again since
    outbox.mark_logged(claimed)
    assert states() == [WAITING, LOGGED]


# -- the state in words ---------------------------------------------------------------------------------------

AT = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC


def email_row(**fields) -> Email:
    defaults = {"recipient": "boss@acme.example.com", "state": WAITING, "attempts": 0, "last_error": "",
                "due_at": AT, "sent": None}
    return Email(**{**defaults, **fields})


@pytest.mark.parametrize(("fields", "words"), [
    ({"state": SENT, "sent": datetime.datetime(2027, 1, 15, 7, 59)},
     "sent to boss@acme.example.com at 2027-01-15 07:59 UTC"),
    ({"state": LOGGED, "sent": datetime.datetime(2027, 1, 15, 7, 59)},
     "not sent: no EMAIL_HOST set (recorded and logged for boss@acme.example.com at 2027-01-15 07:59 UTC)"),
    ({"state": FAILED, "attempts": 1, "last_error": "550 5.1.1 No such user here"},
     "not sent to boss@acme.example.com: the SMTP server said 550 5.1.1 No such user here; not tried again"),
    ({}, "waiting to be sent to boss@acme.example.com"),
    ({"attempts": 1, "due_at": AT + 300}, "being sent to boss@acme.example.com now (1 try)"),
    ({"attempts": 3, "due_at": AT + 4, "last_error": "the SMTP server refused the connection"},
     "not sent yet to boss@acme.example.com: 3 tries; next try at 2027-01-15 08:00:04 UTC (in about 4 s); "
     "last error: the SMTP server refused the connection"),
    ({"attempts": 2, "due_at": AT + 30, "last_error": "451 4.3.0 Try again later"},
     "not sent yet to boss@acme.example.com: 2 tries; next try at 2027-01-15 08:00:30 UTC (in about 30 s); "
     "last error: the SMTP server said 451 4.3.0 Try again later"),
    ({"attempts": 1, "due_at": AT + 1, "last_error": "ConnectionRefusedError: [Errno 111] Connection refused"},
     "not sent yet to boss@acme.example.com: 1 try; next try at 2027-01-15 08:00:01 UTC (in about 1 s); "
     "last error: the SMTP server refused the connection"),
    ({"state": SENT, "recipient": "", "sent": datetime.datetime(2027, 1, 15, 7, 59)},
     "sent to (recipient removed) at 2027-01-15 07:59 UTC"),
])
def test_an_emails_state_reads_as_words(fields, words):
    assert outbox.state_in_words(email_row(**fields), at=AT) == words


def test_no_email_reads_as_words_too():
    assert outbox.state_in_words(None) == "no confirmation e-mail recorded"

