"""Personal data kept no longer than needed: rejections' payloads and keys, e-mail records' recipients.

`work` runs `remove` once an hour (jobs.py); `erase` strips rejections with
the same `strip_rejections`. What is removed leaves the row's id, reasons and
times, so counts, history and `GET /enrolment/<id>/` still answer.
"""

import dataclasses
import datetime
import logging
from collections.abc import Callable

import peewee

from directory_api import outbox
from directory_api.models import Email, Rejection, utcnow

log = logging.getLogger(__name__)

# A rejection's personal fields, as they are once removed.
STRIPPED_REJECTION = {
    Rejection.payload: None,
    Rejection.company_number: None,
    Rejection.company_name: None,
    Rejection.sso_id: None,
    Rejection.company_email: None,
}
# An e-mail record's, likewise (the columns are NOT NULL).
STRIPPED_EMAIL = {Email.recipient: "", Email.company_name: ""}


@dataclasses.dataclass(frozen=True)
class Removed:
    rejections: int
    emails: int


def strip_rejections(condition: peewee.Expression, now: datetime.datetime | None = None) -> int:
    """Remove the personal fields of the rejections matching `condition` that still hold some; how many."""
    return (Rejection.update({**STRIPPED_REJECTION, Rejection.erased: now or utcnow()})
            .where(condition & Rejection.erased.is_null()).execute())


def strip_emails(condition: peewee.Expression) -> int:
    """Remove the recipient of the e-mail records matching `condition` that still hold one; how many."""
    return Email.update(STRIPPED_EMAIL).where(condition & (Email.recipient != "")).execute()


# Rows a statement strips, and statements a pass runs per table: each statement stays well inside the
# statement timeout, and a backlog (the first pass after an upgrade) is worked off over a few hours.
CHUNK = 1000
CHUNKS_A_PASS = 100


def remove(rejection_days: int, email_days: int, now: datetime.datetime) -> Removed:
    """One pass: strip rejections and e-mail records (sent, logged or failed) older than their days (0: none)."""
    rejections = emails = 0
    if rejection_days:
        old = Rejection.created < now - datetime.timedelta(days=rejection_days)
        rejections = _in_chunks(lambda: strip_rejections(Rejection.id.in_(
            Rejection.select(Rejection.id).where(old & Rejection.erased.is_null()).limit(CHUNK)), now))
    if email_days:
        # A waiting e-mail still needs its recipient, however old.
        old = (Email.created < now - datetime.timedelta(days=email_days)) & (Email.state != outbox.WAITING)
        emails = _in_chunks(lambda: strip_emails(Email.id.in_(
            Email.select(Email.id).where(old & (Email.recipient != "")).limit(CHUNK))))
    return Removed(rejections, emails)


def _in_chunks(strip: Callable[[], int]) -> int:
    """Run `strip` (one chunk) until a chunk finds fewer than CHUNK rows, at most CHUNKS_A_PASS times; the total."""
    total = 0
    for _ in range(CHUNKS_A_PASS):
        done = strip()
        total += done
        if done < CHUNK:
            break
    return total


def oldest_personal() -> dict[str, datetime.datetime | None]:
    """When the oldest rejection and e-mail record still holding personal data were made (None: there is none)."""
    rejection = (Rejection.select(Rejection.created).where(Rejection.erased.is_null())
                 .order_by(Rejection.created).first())
    email = Email.select(Email.created).where(Email.recipient != "").order_by(Email.created).first()
    return {"rejection": rejection and rejection.created, "email": email and email.created}
