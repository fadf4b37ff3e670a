"""The e-mail outbox's rows: recorded with their enrolment, claimed by a sender, their outcomes, their state in words.

saving.py records an e-mail row in the transaction that saves its enrolment,
so an e-mail exists exactly when its enrolment does. A sender (mail.py)
claims waiting rows (claims.lease_claim) by moving their due time past a
lease, and records each outcome only while the claim is still its own (the
row waiting, its attempts unchanged since the claim), but for a sent e-mail:
the server accepted it, so it is recorded sent whoever holds the claim now.
"""

import datetime
import re
import time
import uuid
from collections.abc import Mapping, Sequence

import peewee

from directory_api.claims import lease_claim
from directory_api.models import Email, tuple_rows, utcnow

WAITING, SENT, FAILED, LOGGED = "waiting", "sent", "failed", "logged"
STATES = (WAITING, SENT, FAILED, LOGGED)
# A claim not recorded by then (its worker died) is claimed again. Long enough for a batch of slow
# conversations; the sender starts an e-mail only when its conversation and its record fit in what is left.
LEASE = 300.0


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
    found = dict(tuple_rows(Email.select(Email.state, peewee.fn.COUNT(Email.id)).group_by(Email.state)))
    return {state: found.get(state, 0) for state in STATES}


def for_enrolment(enrolment_id: int) -> Email | None:
    """The confirmation e-mail of one enrolment (its state, tries, last error), for the ops console."""
    return Email.select().where(Email.enrolment == enrolment_id).order_by(Email.id).first()


# -- the state in words (the ops console) ---------------------------------------------------------------------

REPLY = re.compile(r"[2-5]\d\d( |$)")  # a last_error that is the SMTP server's own reply: "451 4.3.0 Try again later"
# The last_error of releases before plain words: "ConnectionRefusedError: [Errno 111] Connection refused".
OLD_STYLE = {"ConnectionRefusedError": "the SMTP server refused the connection",
             "ConnectionResetError": "the SMTP server reset the connection",
             "SMTPServerDisconnected": "the SMTP server closed the connection",
             "TimeoutError": "timed out waiting for the SMTP server",
             "timeout": "timed out waiting for the SMTP server",
             "gaierror": "the SMTP server's name was not found"}


def last_error_in_words(last_error: str) -> str:
    """A recorded last_error as a sentence: the server's reply is said to be one; older records are translated."""
    if REPLY.match(last_error):
        return f"the SMTP server said {last_error}"
    kind, colon, _ = last_error.partition(":")
    return OLD_STYLE.get(kind, last_error) if colon else last_error


def state_in_words(email: Email | None, at: float | None = None) -> str:
    """An e-mail's state as an operator reads it: to whom and when it went; or its tries, next try and last error.

    `at` is now, in epoch seconds (a parameter so that a test can fix it).
    """
    if email is None:
        return "no confirmation e-mail recorded"
    to = email.recipient or "(recipient removed)"
    if email.state == SENT:
        return f"sent to {to} {_when(email.sent)}"
    if email.state == LOGGED:
        return f"not sent: no EMAIL_HOST set (recorded and logged for {to} {_when(email.sent)})"
    if email.state == FAILED:
        return f"not sent to {to}: {last_error_in_words(email.last_error)}; not tried again"
    return _waiting_in_words(email, to, now() if at is None else at)


def _waiting_in_words(email: Email, to: str, at: float) -> str:
    tries = f"{email.attempts} {'try' if email.attempts == 1 else 'tries'}"
    if not email.last_error:
        if email.attempts and email.due_at > at:
            return f"being sent to {to} now ({tries})"
        return f"waiting to be sent to {to}"
    seconds = max(0.0, email.due_at - at)
    next_try = datetime.datetime.fromtimestamp(email.due_at, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return (f"not sent yet to {to}: {tries}; next try at {next_try} (in about {seconds:.0f} s); "
            f"last error: {last_error_in_words(email.last_error)}")


def _when(moment: datetime.datetime | None) -> str:
    return f"at {moment:%Y-%m-%d %H:%M} UTC" if moment else "(time not recorded)"


# -- claiming and recording outcomes --------------------------------------------------------------------------

def claim(limit: int, lease: float = LEASE) -> list[Email]:
    """Take up to `limit` waiting e-mails that are due, hidden from other senders for `lease` seconds."""
    at = now()
    due = (Email.state == WAITING) & (Email.due_at <= at)
    if not Email.select(Email.id).where(due).limit(1).exists():
        return []  # the usual idle answer, without taking SQLite's write lock
    claiming = lease_claim(Email, due=due, order_by=Email.due_at, limit=limit,
                           lease={Email.due_at: at + lease, Email.attempts: Email.attempts + 1})
    return list(claiming.returning(Email).execute())


def _still_claimed(email: Email) -> peewee.Expression:
    # The claim is ours while the row is waiting and no one has claimed it since.
    return (Email.id == email.id) & (Email.attempts == email.attempts) & (Email.state == WAITING)


def mark(email: Email, state: str, reason: str = "") -> None:
    Email.update(state=state, sent=utcnow() if state in (SENT, LOGGED) else None, last_error=reason).where(
        _still_claimed(email)
    ).execute()


def mark_sent(email: Email) -> None:
    """Record an e-mail the SMTP server accepted as sent, whoever holds its claim now: it was sent, by us."""
    Email.update(state=SENT, sent=utcnow(), last_error="").where(
        (Email.id == email.id) & (Email.state == WAITING)
    ).execute()


def mark_logged(emails: Sequence[Email]) -> None:
    """Record claimed e-mails as logged, in one statement: without EMAIL_HOST a claim is logged all at once."""
    claims = [(email.id, email.attempts) for email in emails]
    Email.update(state=LOGGED, sent=utcnow(), last_error="").where(
        peewee.Tuple(Email.id, Email.attempts).in_(claims) & (Email.state == WAITING)
    ).execute()


def retry_later(email: Email, reason: str, delay: float) -> None:
    Email.update(due_at=now() + delay, last_error=reason).where(_still_claimed(email)).execute()


def release(emails: Sequence[Email]) -> None:
    """Hand claimed e-mails back unsent: due at once, for this sender or another."""
    for email in emails:
        Email.update(due_at=now()).where(_still_claimed(email)).execute()

