"""The audit table: every re-drive and erase, when, what and from where, never the personal data itself.

A re-drive's row names the original message id and is written before the
message is sent, so however soon the worker sets it aside again it finds the
row and adds that outcome (saving.py); "saved as enrolment N" is read from
the enrolment itself, so the hot path of saving writes nothing here. A
rejection's history and an enrolment's are the re-drives of their message id.
"""

import contextlib
import dataclasses
import datetime
import logging
import socket
from collections.abc import Iterable, Iterator, Mapping

from directory_api import models
from directory_api.db import DATABASE_ERRORS
from directory_api.errors import first_line
from directory_api.models import Audit, Enrolment, EnrolmentRetry, utcnow
from directory_api.ops import queries
from directory_api.ops import redrive as redriving
from directory_api.saving import REDRIVE

log = logging.getLogger(__name__)

ERASE = "erase"
HISTORY_LIMIT = 100  # re-drives shown for one message: more is a loop to look at in the audit page


def command_source(command: str) -> str:
    """Where a command ran: `redrive on HOST`."""
    return f"{command} on {socket.gethostname()}"[:255]


def console_source(environ: Mapping) -> str:
    """Where a console request came from: its TCP peer's address.

    Not X-Forwarded-For: any client can send one, and waitress drops it from requests (no proxy is trusted).
    """
    return f"console from {environ.get('REMOTE_ADDR') or 'an unknown address'}"[:255]


def record(action: str, subjects: Iterable[str], source: str, detail: dict | None = None,
           at: datetime.datetime | None = None) -> None:
    """One audit row a subject."""
    rows = [{"at": at or utcnow(), "action": action, "subject": subject[:255], "source": source, "detail": detail}
            for subject in subjects]
    if rows:
        Audit.insert_many(rows).execute()


def redrive_marker(source: str) -> redriving.Marker:
    """redrive's `mark` for a re-drive from `source`: audited before the send, its rejection marked after it.

    The audit row waits for its outcome before a worker can take the message
    and write one; a send that raises removes it (nothing was re-driven). The
    rejection is marked by mark_redriven. A database that does not answer
    only logs: the message is moved all the same.
    """

    @contextlib.contextmanager
    def mark(original: str) -> Iterator[None]:
        row = _record_redrive(original, source)
        try:
            with redriving.mark_redriven(original):
                yield
        except BaseException:
            _forget_redrive(row, original)
            raise

    return mark


def _record_redrive(original: str, source: str) -> int | None:
    """The id of a new re-drive row waiting for its outcome; None when the database does not answer (logged)."""
    try:
        with models.database.connection_context():
            return Audit.insert(at=utcnow(), action=REDRIVE, subject=original[:255], source=source).execute()
    except DATABASE_ERRORS as error:
        log.warning("message %s: its re-drive is not recorded in the audit table: %s", original, first_line(error))
        return None


def _forget_redrive(row: int | None, original: str) -> None:
    """Remove the audit row of a re-drive whose send failed (a database that does not answer only logs)."""
    if row is None:
        return
    try:
        with models.database.connection_context():
            Audit.delete_by_id(row)
    except DATABASE_ERRORS as error:
        log.warning("message %s: not re-driven, but its audit row %d stays, waiting for an outcome: %s",
                    original, row, first_line(error))


@dataclasses.dataclass(frozen=True)
class Redrive:
    """One re-drive of a message and what became of it."""

    at: datetime.datetime
    source: str
    outcome: str  # "set_aside", "saved" or "waiting"
    set_aside: str | None = None  # when it was set aside again (ISO 8601, UTC)
    errors: Mapping | None = None  # its fresh reasons then
    enrolment_id: int | None = None  # what it was saved as


def history(message_id: str) -> list[Redrive]:
    """The re-drives of one message (by its original id), oldest first, each with its outcome."""
    rows = list(Audit.select().where((Audit.action == REDRIVE) & (Audit.subject == message_id))
                .order_by(Audit.id).limit(HISTORY_LIMIT))
    if not rows:
        return []
    saved = saved_as(message_id)
    return [_redrive(row, saved) for row in rows]


def _redrive(row: Audit, saved: int | None) -> Redrive:
    detail = row.detail if isinstance(row.detail, dict) else None
    if detail and "set_aside" in detail:
        return Redrive(row.at, row.source, "set_aside", str(detail["set_aside"]), detail.get("errors"))
    if saved is not None:
        return Redrive(row.at, row.source, "saved", enrolment_id=saved)
    return Redrive(row.at, row.source, "waiting")


def saved_as(message_id: str) -> int | None:
    """The enrolment a message was saved as (or answered with, as a client's retry), None when not saved."""
    enrolment = Enrolment.select(Enrolment.id).where(Enrolment.sqs_message_id == message_id).first()
    if enrolment is not None:
        return enrolment.id
    retry = EnrolmentRetry.select(EnrolmentRetry.enrolment).where(EnrolmentRetry.message_id == message_id).first()
    return retry.enrolment_id if retry is not None else None


def audit_page(before: int | None = None, limit: int = queries.PAGE_SIZE) -> queries.Page:
    """The audit rows, newest first, a page at a time (keyset on the id)."""
    return queries.newest_first(Audit.select(), before, limit)
