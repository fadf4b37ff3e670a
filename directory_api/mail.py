"""The confirmation e-mail: a transactional outbox.

saving.py records an e-mail row in the transaction that saves its enrolment,
so an e-mail exists exactly when its enrolment does; a sender in `work`
sends it later.
"""

import time
import uuid
from collections.abc import Mapping

import peewee

from directory_api.models import Email

WAITING, SENT, FAILED, LOGGED = "waiting", "sent", "failed", "logged"
STATES = (WAITING, SENT, FAILED, LOGGED)
RETRIED = "retried"  # an outcome (for on_outcome), not a state: the e-mail is waiting again


# -- recording (inside the transaction that saves the enrolment) -------------------------------------------------

def now() -> float:
    return time.time()


def new_token() -> str:
    """The left part of a new e-mail's Message-ID."""
    return uuid.uuid4().hex


def record(new_enrolments: Mapping[int, Mapping]) -> None:
    """Record the confirmation e-mail of each new enrolment (enrolment id -> its validated payload)."""
    if not new_enrolments:
        return
    due = now()
    Email.insert_many([
        {"enrolment": enrolment_id, "recipient": payload["company_email"], "company_name": payload["company_name"],
         "token": new_token(), "state": WAITING, "due_at": due}
        for enrolment_id, payload in new_enrolments.items()
    ]).execute()


def counts() -> dict[str, int]:
    """E-mails in each state, for `status`: {"waiting", "sent", "failed", "logged"}."""
    found = dict(Email.select(Email.state, peewee.fn.COUNT(Email.id)).group_by(Email.state).tuples())
    return {state: found.get(state, 0) for state in STATES}


def for_enrolment(enrolment_id: int) -> Email | None:
    """The confirmation e-mail of one enrolment (its state, tries, last error), for the ops console."""
    return Email.select().where(Email.enrolment == enrolment_id).order_by(Email.id).first()
