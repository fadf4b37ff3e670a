"""Operating the service: the figures of `status`, the rows of `export`, the console's queries, and `redrive`.

The commands and the console read through here, so they show the same data.
Every query the console runs is a page (a LIMIT on an index, walked with a
keyset, never OFFSET) or a lookup by an indexed key, so the console never
competes with the worker for long; the indexes are migrations._operating_it's.
"""

import csv
import dataclasses
import datetime
import decimal
import io
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TextIO

import peewee

from directory_api import mail, models
from directory_api.db import DATABASE_ERRORS, is_postgres
from directory_api.enrolment import BIGINT_MAX, COMPANY_NUMBER
from directory_api.errors import UserError, first_line
from directory_api.models import (
    Company,
    Email,
    Enrolment,
    EnrolmentRetry,
    JSONField,
    Rejection,
    Supplier,
    dict_rows,
    enrolment_company_number,
    utcnow,
)
from directory_api.queues import (
    ORIGINAL_MESSAGE_ID,
    Message,
    MessageRefused,
    Queue,
    QueueUnavailable,
    open_pipeline,
    original_id,
)
from directory_api.settings import Settings

log = logging.getLogger(__name__)

PAGE_SIZE = 50


class Unanswered(UserError):
    """A queue or the database did not answer a command: exit 1, naming it."""

    exit_code = 1


# ---------------------------------------------------------------------------
# status


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
EMAIL_FIGURES = mail.STATES


def status(enrolments: Queue, invalid: Queue) -> Status:
    unanswered: list[str] = []
    figures = {
        "queues": {
            "enrolment": _queue_figures(enrolments, "enrolment queue", unanswered),
            "invalid": _queue_figures(invalid, "invalid queue", unanswered),
        },
        "database": _database_figures(unanswered),
        "emails": email_figures(),
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
                "enrolments": Enrolment.select().count(),
                "enrolments_last_24h": Enrolment.select().where(
                    Enrolment.created >= utcnow() - datetime.timedelta(hours=24)).count(),
                "companies": Company.select().count(),
                "suppliers": Supplier.select().count(),
                "rejections": waiting_rejections().count(),
            }
    except DATABASE_ERRORS as error:
        unanswered.append(f"database: {first_line(error)}")
        return dict.fromkeys(DATABASE_FIGURES)


def email_figures() -> dict:
    """The outbox's e-mails (mail.py) by state; every figure null when it does not answer (or is not migrated yet)."""
    try:
        with models.database.connection_context():
            return mail.counts()
    except DATABASE_ERRORS:
        return dict.fromkeys(EMAIL_FIGURES)  # the database part names the failure


def status_lines(result: Status) -> list[str]:
    """`status` as text: one line a part."""
    figures = result.figures

    def shown(value) -> str:
        return "unavailable" if value is None else f"{value:,}"

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
    return lines


# ---------------------------------------------------------------------------
# export


@dataclasses.dataclass(frozen=True)
class Export:
    model: type[peewee.Model]
    columns: tuple[str, ...]


EXPORTS = {
    "enrolments": Export(Enrolment, ("id", "created", "sqs_message_id", "data")),
    "companies": Export(
        Company, ("id", "number", "name", "export_status", "date_of_creation", "revenue", "created", "modified")),
    "suppliers": Export(
        Supplier, ("id", "sso_id", "company_email", "mobile_number", "referrer", "company_id", "created", "modified")),
    "rejections": Export(Rejection, ("id", "message_id", "created", "redriven", "errors")),
}
# Rows fetched from the server at a time: memory stays flat whatever the table's size.
EXPORT_FETCH_ROWS = 2000


def parse_since(raw: str | None) -> datetime.date | None:
    if raw is None or raw == "":
        return None
    try:
        return datetime.date.fromisoformat(raw)
    except ValueError:
        raise UserError(f"--since {raw!r}: not a date of the form YYYY-MM-DD") from None


def export_rows(table: str, since: datetime.date | None = None) -> Iterator[list]:
    """The header, then each row of `table` (oldest first), created on or after `since`; streamed."""
    export = EXPORTS[table]
    fields = [export.model._meta.columns[column] for column in export.columns]
    query = export.model.select(*fields).order_by(export.model._meta.primary_key)
    if since is not None:
        created = export.model._meta.columns["created"]
        query = query.where(created >= datetime.datetime.combine(since, datetime.time()))
    yield list(export.columns)
    sql, params = query.sql()
    # Raw rows (a model instance a row would cost more than the CSV), read as each field reads them.
    for row in _stream(sql, params):
        yield [_csv_value(field, field.python_value(value)) for field, value in zip(fields, row, strict=True)]


def _stream(sql: str, params) -> Iterator[tuple]:
    """Rows of one query, never all in memory: a server-side cursor on PostgreSQL, SQLite's own stepping."""
    database = models.database
    with database.connection_context():
        if not is_postgres(database):
            yield from database.execute_sql(sql, params)
            return
        connection = database.connection()
        # peewee runs psycopg2 in autocommit, where a named (server-side) cursor is refused.
        connection.autocommit = False
        try:
            with connection.cursor(name="directory_api_export") as cursor:
                cursor.itersize = EXPORT_FETCH_ROWS
                cursor.execute(sql, params)
                yield from cursor
        finally:
            connection.rollback()  # read only: nothing to keep
            connection.autocommit = True


def _csv_value(field: peewee.Field, value) -> str:
    """One value as text, the same on both databases: ISO dates, compact JSON, decimals to the column's places."""
    if value is None:
        return ""
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    if isinstance(field, JSONField):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    if isinstance(field, peewee.DecimalField):
        return format(decimal.Decimal(value).quantize(decimal.Decimal(1).scaleb(-field.decimal_places)), "f")
    return str(value)


def write_csv(rows: Iterable[list], out: TextIO) -> int:
    """RFC 4180 CSV (CRLF line ends, quotes where needed) of the header and rows; the number of data rows."""
    writer = csv.writer(out, lineterminator="\r\n")
    written = 0
    for row in rows:
        writer.writerow(row)
        written += 1
    return max(written - 1, 0)


def csv_chunks(rows: Iterable[list], size: int = 64 * 1024) -> Iterator[bytes]:
    """The same CSV as write_csv, as UTF-8 chunks of about `size` characters, for a streamed HTTP body."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    for row in rows:
        writer.writerow(row)
        if buffer.tell() >= size:
            yield buffer.getvalue().encode("utf-8")
            buffer.seek(0)
            buffer.truncate()
    if buffer.tell():
        yield buffer.getvalue().encode("utf-8")


def export_filename(table: str, now: datetime.datetime | None = None) -> str:
    """As the 2017 service's Django admin named its CSV downloads."""
    return f"find-a-buyer_{table}_{(now or utcnow()).strftime('%Y%m%d%H%M%S')}.csv"


# ---------------------------------------------------------------------------
# the console's queries


@dataclasses.dataclass(frozen=True)
class Page:
    rows: list
    next_before: int | None  # the keyset of the next (older) page, None on the last


SEARCH_FIELDS = ("any", "company_number", "company_name", "sso_id", "email")


@dataclasses.dataclass(frozen=True)
class Found:
    """One search result: a company, its supplier and the enrolment that made them."""

    company_id: int
    company_number: str
    company_name: str
    created: datetime.datetime
    sso_id: int | None
    company_email: str | None
    enrolment_id: int | None


def search(query: str, field: str = "any", before: int | None = None, limit: int = PAGE_SIZE) -> Page:
    """Companies matching `query` in `field` (newest first), with supplier and enrolment; empty query: all."""
    rows: dict[int, dict] = {}
    # One query a condition, each on its own index (an OR across the join could use none).
    for condition, order in _search_conditions(query.strip(), field):
        select = (
            Company.select(Company.id, Company.number, Company.name, Company.created, Supplier.sso_id,
                           Supplier.company_email)
            .join(Supplier, on=(Supplier.company == Company.id))  # inner: a planner may then start from either
            .order_by(order.desc())
            .limit(limit + 1)
        )
        if condition is not True:
            select = select.where(condition)
        if before is not None:
            select = select.where(Company.id < before)
        rows.update((row["id"], row) for row in dict_rows(select))
    page = sorted(rows.values(), key=lambda row: row["id"], reverse=True)[:limit + 1]
    more = len(page) > limit
    page = page[:limit]
    enrolment_ids = _enrolment_ids([row["number"] for row in page])
    found = [
        Found(row["id"], row["number"], row["name"], row["created"], row["sso_id"], row["company_email"],
              enrolment_ids.get(row["number"]))
        for row in page
    ]
    return Page(found, page[-1]["id"] if more else None)


def _search_conditions(query: str, field: str) -> list[tuple]:
    """(WHERE on an indexed column, ORDER BY) for the field searched: WHERE True for all, [] when nothing can match."""
    if not query:
        return [(True, Company.id)]
    if field == "any":
        if "@" in query:
            field = "email"
        elif query.isdigit():
            # Eight digits is a company number and could be an sso id: both, each by its unique index.
            return (_search_conditions(query, "company_number") if len(query) == 8 else []) + \
                _search_conditions(query, "sso_id")
        elif COMPANY_NUMBER.fullmatch(query.upper()):
            field = "company_number"
        else:
            field = "company_name"
    if field == "company_number":
        return [(Company.number == query.upper(), Company.id)]
    if field == "sso_id":
        return [(Supplier.sso_id == int(query), Company.id)] if query.isdigit() and int(query) <= BIGINT_MAX else []
    if field == "email":
        return [(peewee.fn.lower(Supplier.company_email) == query.lower(), Company.id)]
    if field == "company_name":
        # A prefix may match many rows, and a planner would rather walk the primary key newest first and filter
        # (no sort), unbounded when few match: "id + 0" is not the key, so the index on the name is used.
        return [(_name_starts_with(query), Company.id + 0)]
    raise ValueError(f"unknown search field {field!r}")


def _name_starts_with(prefix: str) -> peewee.Expression:
    """Company names starting with `prefix`, any case, by the index on lower(name)."""
    if is_postgres(models.database):
        escaped = prefix.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return peewee.Expression(peewee.fn.lower(Company.name), "LIKE", escaped + "%")
    # SQLite's lower() folds ASCII only; its LIKE cannot use an index on an expression, a range can.
    low = "".join(c.lower() if c.isascii() else c for c in prefix)
    return (peewee.fn.lower(Company.name) >= low) & (peewee.fn.lower(Company.name) < low + "\U0010ffff")


def _enrolment_ids(company_numbers: Sequence[str]) -> dict[str, int]:
    if not company_numbers:
        return {}
    number = enrolment_company_number()
    query = Enrolment.select(Enrolment.id, number.alias("number")).where(number.in_(list(company_numbers)))
    return {row["number"]: row["id"] for row in dict_rows(query)}


@dataclasses.dataclass(frozen=True)
class EnrolmentDetail:
    enrolment: Enrolment
    company: Company | None
    supplier: Supplier | None
    retries: list[str]  # message ids of the client's retries of it
    email: dict


def enrolment_detail(enrolment_id: int) -> EnrolmentDetail | None:
    enrolment = Enrolment.get_or_none(Enrolment.id == enrolment_id)
    if enrolment is None:
        return None
    number = enrolment.data.get("company_number") if isinstance(enrolment.data, dict) else None
    company = Company.get_or_none(Company.number == number) if isinstance(number, str) else None
    supplier = Supplier.get_or_none(Supplier.company == company.id) if company else None
    retries = [row.message_id for row in
               EnrolmentRetry.select(EnrolmentRetry.message_id).where(EnrolmentRetry.enrolment == enrolment.id)
               .order_by(EnrolmentRetry.id).limit(PAGE_SIZE)]
    return EnrolmentDetail(enrolment, company, supplier, retries, enrolment_email(enrolment.id))


def enrolment_email(enrolment_id: int) -> dict:
    """The confirmation e-mail's state for one enrolment (by the outbox's index on enrolment_id).

    state None: none recorded.
    """
    email = Email.select().where(Email.enrolment == enrolment_id).order_by(Email.id.desc()).first()
    if email is None:
        return {"state": None, "detail": None}
    sent = f"at {email.sent:%Y-%m-%d %H:%M} UTC" if email.sent else None
    return {"state": email.state, "detail": email.last_error or sent}


def message_state(message_id: str) -> tuple[str, int | None]:
    """What became of a message.

    ("created", enrolment id), ("rejected", None), ("redriven", None) or ("unknown", None).
    """
    saved = Enrolment.get_or_none(Enrolment.sqs_message_id == message_id)
    if saved is not None:
        return "created", saved.id
    retry = EnrolmentRetry.get_or_none(EnrolmentRetry.message_id == message_id)
    if retry is not None:
        return "created", retry.enrolment_id
    rejection = Rejection.get_or_none(Rejection.message_id == message_id)
    if rejection is not None:
        return ("redriven" if rejection.redriven else "rejected"), None
    return "unknown", None


def waiting_rejections() -> "peewee.ModelSelect[Rejection]":
    """Recorded rejections not re-driven since (the partial index rejection_waiting)."""
    return Rejection.select().where(Rejection.redriven.is_null())


def rejections_page(before: int | None = None, limit: int = PAGE_SIZE) -> Page:
    """Rejections not re-driven, newest first."""
    query = waiting_rejections().order_by(Rejection.id.desc()).limit(limit + 1)
    if before is not None:
        query = query.where(Rejection.id < before)
    rows = list(query)
    more = len(rows) > limit
    return Page(rows[:limit], rows[limit - 1].id if more else None)


def recently_redriven(limit: int = 20) -> list[tuple[Rejection, str, int | None]]:
    """The last rejections re-driven, each with what became of its message since."""
    query = (Rejection.select().where(Rejection.redriven.is_null(False))
             .order_by(Rejection.redriven.desc()).limit(limit))
    return [(rejection, *message_state(rejection.message_id)) for rejection in query]


# ---------------------------------------------------------------------------
# redrive

# Long-polled receives of the invalid queue: a short poll samples only some SQS servers and may miss messages.
REDRIVE_WAIT_SECONDS = 1


def redrive_wait(settings) -> float:
    """How long a receive of the invalid queue waits: the database queue answers exactly at once, SQS may not."""
    return 0 if settings.queue_backend == "database" else REDRIVE_WAIT_SECONDS


@dataclasses.dataclass
class Redriven:
    moved: list[str] = dataclasses.field(default_factory=list)  # original ids, one a message moved (or listed)
    missing: list[str] = dataclasses.field(default_factory=list)  # ids asked for and not on the invalid queue
    # original id -> why the enrolment queue refused it
    refused: dict[str, str] = dataclasses.field(default_factory=dict)


def redrive(
    invalid: Queue,
    enrolments: Queue,
    ids: Iterable[str] | None,
    *,
    dry_run: bool = False,
    on_message: Callable[[Message], None] = lambda message: None,
    mark: Callable[[list[str]], None] = lambda original_ids: None,
    wait_seconds: float = REDRIVE_WAIT_SECONDS,
) -> Redriven:
    """Move set-aside messages back to the enrolment queue: those whose original id is in `ids`, or all (None).

    Each message is sent to the enrolment queue before it is deleted from the
    invalid queue, so a crash at any moment leaves it on one or both, never
    neither; a copy on both is saved once (the worker saves under the original
    id). `mark` records the re-drive (the rejection rows) between the two.
    Messages received and not moved go back at the end. An original id is
    moved once a run, so a worker setting one aside again during the run does
    not keep it going round.
    """
    wanted = None if ids is None else set(ids)
    result = Redriven()
    held: list[Message] = []
    seen: set[str] = set()
    try:
        while wanted is None or not wanted <= seen:
            batch = invalid.receive(10, wait_seconds)
            if not batch:
                break
            for message in batch:
                original = original_id(message)
                if (wanted is not None and original not in wanted) or original in seen:
                    held.append(message)
                    continue
                seen.add(original)
                if dry_run:
                    held.append(message)
                else:
                    try:
                        _move(message, invalid, enrolments, mark)
                    except MessageRefused as error:
                        held.append(message)  # stays set aside; the others still go
                        result.refused[original] = first_line(error)
                        continue
                result.moved.append(original)
                on_message(message)
    finally:
        if held:
            invalid.release(held)
    if wanted is not None:
        result.missing = sorted(wanted - seen)
    return result


def _move(message: Message, invalid: Queue, enrolments: Queue, mark: Callable[[list[str]], None]) -> None:
    original = original_id(message)
    # Body unchanged; the reasons stay behind (a message set aside again gets fresh ones).
    enrolments.send(message.body, {ORIGINAL_MESSAGE_ID: original})
    mark([original])
    for left in invalid.delete([message]):
        # Now on both queues: the worker saves it once; the next redrive moves this copy too.
        log.warning("message %s: re-driven but not deleted from the invalid queue %s", left.id, invalid.name)


def mark_redriven(original_ids: list[str]) -> None:
    """redrive's `mark`: the rejections of these ids are re-driven now (a database down only logs)."""
    try:
        with models.database.connection_context():
            Rejection.update(redriven=utcnow()).where(Rejection.message_id.in_(original_ids)).execute()
    except DATABASE_ERRORS as error:
        log.warning("messages %s: re-driven, but not marked so in the database: %s",
                    ", ".join(original_ids), first_line(error))


def errors_of(message: Message) -> Mapping:
    """The reasons a set-aside message carries (an empty mapping when they cannot be read)."""
    try:
        errors = json.loads(message.attributes.get("errors", "{}"))
    except ValueError:
        return {}
    return errors if isinstance(errors, dict) else {}


# ---------------------------------------------------------------------------
# the commands (cli.py wires settings into these)


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


def redrive_command(settings, ids: list[str], *, dry_run: bool, out: Callable[[str], None],
                    err: Callable[[str], None]) -> bool:
    """Run `redrive` (ids, or all when empty); True when every id asked for was found and moved."""
    enrolments, invalid = open_pipeline(settings)

    def show(message: Message) -> None:
        reasons = json.dumps(errors_of(message), ensure_ascii=False)
        out(f"{'would move' if dry_run else 'moved'} {original_id(message)} {reasons}")

    try:
        result = redrive(invalid, enrolments, ids or None, dry_run=dry_run, on_message=show,
                         mark=mark_redriven, wait_seconds=redrive_wait(settings))
    except QueueUnavailable as error:
        raise Unanswered(f"{error} (nothing after the last line above was moved)") from None
    finally:
        models.database.close()
    count = len(result.moved)
    out(f"{count} message{'' if count == 1 else 's'} {'would be moved (dry run)' if dry_run else 'moved'}")
    for missing in result.missing:
        err(f"{missing}: not on the invalid queue {settings.invalid_queue} (or in flight there now)")
    for refused, why in result.refused.items():
        err(f"{refused}: the enrolment queue refuses it ({why}); it stays on the invalid queue")
    return not result.missing and not result.refused


def export_command(settings: Settings, table: str, *, since: str | None, output, stdout) -> int:
    """Write `export`'s CSV to the file `output` (atomically) or to the binary stream `stdout`; the row count."""
    import os
    import tempfile

    from directory_api import db

    start = parse_since(since)
    db.bind(settings.required("DATABASE_URL"))
    try:
        if output is None:
            text = io.TextIOWrapper(stdout, encoding="utf-8", newline="")
            try:
                return _export_to(table, start, text)
            finally:
                text.flush()
                text.detach()
        directory = os.path.dirname(os.path.abspath(output))
        handle, temporary = tempfile.mkstemp(prefix=".export-", suffix=".csv", dir=directory)
        try:
            with open(handle, "w", encoding="utf-8", newline="") as text:
                count = _export_to(table, start, text)
            os.replace(temporary, output)
        except BaseException:
            os.unlink(temporary)
            raise
        return count
    finally:
        models.database.close()


def _export_to(table: str, since, text: TextIO) -> int:
    try:
        return write_csv(export_rows(table, since), text)
    except DATABASE_ERRORS as error:
        raise Unanswered(f"DATABASE_URL: cannot export {table}: {first_line(error)}") from None
