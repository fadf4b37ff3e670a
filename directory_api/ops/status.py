"""`status`: what the queues and the database hold now, for the command and the console's overview."""

import dataclasses
import datetime
import json
from collections.abc import Callable

from directory_api import models, outbox, retention
from directory_api.db import DATABASE_ERRORS
from directory_api.errors import first_line
from directory_api.models import Company, Email, Enrolment, Supplier, utcnow
from directory_api.ops.counting import About, cheap, count
from directory_api.ops.queries import waiting_rejections
from directory_api.queues import Queue, QueueUnavailable, open_pipeline


@dataclasses.dataclass(frozen=True)
class Status:
    """What the pipeline holds now: the `status --json` object of docs/operating.md, and which parts did not answer."""

    figures: dict
    unanswered: list[str]  # "part: why", one a part

    @property
    def complete(self) -> bool:
        return not self.unanswered


QUEUE_FIGURES = ("waiting", "in_flight")
DATABASE_FIGURES = ("enrolments", "enrolments_last_24h", "companies", "suppliers", "rejections")
EMAIL_FIGURES = outbox.STATES


def status(enrolments: Queue, invalid: Queue) -> Status:
    unanswered: list[str] = []
    figures = {
        "queues": {
            "enrolment": _queue_figures(enrolments, "enrolment queue", unanswered),
            "invalid": _queue_figures(invalid, "invalid queue", unanswered),
        },
        "database": _database_figures(unanswered),
        "emails": email_figures(),
        "personal_data": personal_data_figures(),
    }
    return Status(figures, unanswered)


def _queue_figures(queue: Queue, part: str, unanswered: list[str]) -> dict:
    try:
        depth = queue.depth()
    except QueueUnavailable as error:
        unanswered.append(f"{part} {queue.name}: {error}")
        return dict.fromkeys(QUEUE_FIGURES)
    return {"waiting": depth.waiting, "in_flight": depth.in_flight}


def _database_figures(unanswered: list[str]) -> dict:
    try:
        with models.database.connection_context():
            return {
                "enrolments": count(Enrolment.select()),
                "enrolments_last_24h": count(Enrolment.select().where(
                    Enrolment.created >= utcnow() - datetime.timedelta(hours=24))),
                "companies": count(Company.select()),
                "suppliers": count(Supplier.select()),
                "rejections": count(waiting_rejections()),
            }
    except DATABASE_ERRORS as error:
        unanswered.append(f"database: {first_line(error)}")
        return dict.fromkeys(DATABASE_FIGURES)


def email_figures() -> dict:
    """The outbox's e-mails (outbox.py) by state; every figure null when it does not answer (or is not migrated yet)."""
    try:
        with models.database.connection_context():
            if cheap(Email.select(Email.state)):
                return outbox.counts()  # one pass over the table
            return {state: count(Email.select().where(Email.state == state)) for state in EMAIL_FIGURES}
    except DATABASE_ERRORS:
        return dict.fromkeys(EMAIL_FIGURES)  # the database part names the failure


def figure(value: int | None) -> str:
    """A figure as `status` and the overview show it: digits grouped by thousands, "about" when an estimate,
    "unavailable" for None."""
    if value is None:
        return "unavailable"
    return f"about {value:,}" if isinstance(value, About) else f"{value:,}"


def personal_data_figures() -> dict:
    """When the oldest rejection and e-mail record still holding personal data were made (retention.py), or null."""
    try:
        with models.database.connection_context():
            oldest = retention.oldest_personal()
    except DATABASE_ERRORS:
        return {"oldest_rejection": None, "oldest_email": None}  # the database part names the failure
    return {"oldest_rejection": _iso(oldest["rejection"]), "oldest_email": _iso(oldest["email"])}


def _iso(when: datetime.datetime | None) -> str | None:
    return None if when is None else when.isoformat(timespec="seconds") + "Z"


def personal_data_line(figures: dict) -> str:
    """`status`'s line on the oldest personal data still kept."""

    def when(value: str | None) -> str:
        return "none" if value is None else value.replace("T", " ").replace("Z", " UTC")

    personal = figures["personal_data"]
    return (f"{'personal data:':<18} oldest rejection holding it {when(personal['oldest_rejection'])},"
            f" oldest e-mail record {when(personal['oldest_email'])}")


def status_lines(result: Status) -> list[str]:
    """`status` as text: one line a part."""
    figures = result.figures
    shown = figure
    lines = []
    for name, queue in figures["queues"].items():
        lines.append(f"{name + ' queue:':<18} {shown(queue['waiting'])} waiting, {shown(queue['in_flight'])} in flight")
    data = figures["database"]
    lines.append(
        f"{'database:':<18} {shown(data['enrolments'])} enrolments ({shown(data['enrolments_last_24h'])} in the last"
        f" 24 hours), {shown(data['companies'])} companies, {shown(data['suppliers'])} suppliers,"
        f" {shown(data['rejections'])} rejections not re-driven"
    )
    emails = figures["emails"]
    if all(value is None for value in emails.values()):
        lines.append(f"{'e-mails:':<18} unavailable")
        return lines
    lines.append(
        f"{'e-mails:':<18} {shown(emails['waiting'])} waiting, {shown(emails['sent'])} sent,"
        f" {shown(emails['failed'])} failed, {shown(emails['logged'])} logged"
    )
    lines.append(personal_data_line(figures))
    return lines




def status_command(settings, *, as_json: bool, out: Callable[[str], None], err: Callable[[str], None]) -> bool:
    """Print `status` with `out`, each part that did not answer with `err`; True when every part answered."""
    enrolments, invalid = open_pipeline(settings)
    try:
        result = status(enrolments, invalid)
    finally:
        models.database.close()
    if as_json:
        out(json.dumps(result.figures))
    else:
        for line in status_lines(result):
            out(line)
    for part in result.unanswered:
        err(part)
    return result.complete
