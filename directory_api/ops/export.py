"""`export` and the console's downloads: a table as streamed CSV, the same on both databases."""

import csv
import dataclasses
import datetime
import decimal
import io
import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from typing import TextIO

import peewee

from directory_api import db, models
from directory_api.db import DATABASE_ERRORS, is_postgres
from directory_api.errors import UserError, first_line
from directory_api.models import Company, Enrolment, JSONField, Rejection, Supplier, utcnow
from directory_api.ops import EXPORT_TABLES, Unanswered
from directory_api.settings import Settings


@dataclasses.dataclass(frozen=True)
class Export:
    model: type[peewee.Model]
    columns: tuple[str, ...]


EXPORTS = dict(zip(EXPORT_TABLES, (
    Export(Enrolment, ("id", "created", "sqs_message_id", "data")),
    Export(Company, ("id", "number", "name", "export_status", "date_of_creation", "revenue", "created", "modified")),
    Export(Supplier,
           ("id", "sso_id", "company_email", "mobile_number", "referrer", "company_id", "created", "modified")),
    Export(Rejection, ("id", "message_id", "created", "redriven", "errors", "company_number", "company_name",
                       "sso_id", "company_email", "payload", "erased")),
), strict=True))
# Rows fetched from the server at a time: memory stays flat whatever the table's size.
EXPORT_FETCH_ROWS = 2000


SINCE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
# An option's value is echoed in its error up to this many characters: enough to recognise, never a screenful.
MAX_ECHOED = 40


def parse_since(raw: str | None) -> datetime.date | None:
    """--since's day: YYYY-MM-DD only (fromisoformat alone would take 20261201 and week dates too)."""
    if raw is None or raw == "":
        return None
    if SINCE.fullmatch(raw):
        try:
            return datetime.date.fromisoformat(raw)
        except ValueError:
            pass  # 2026-13-01
    shown = repr(raw) if len(raw) <= MAX_ECHOED else repr(raw[:MAX_ECHOED]) + "…"
    raise UserError(f"--since {shown}: not a date of the form YYYY-MM-DD")


def export_rows(table: str, since: datetime.date | None = None, *, raw: bool = False) -> Iterator[list]:
    """The header, then each row of `table` (oldest first), created on or after `since`; streamed.

    Text that a spreadsheet would run as a formula is neutralised (see `neutralised`) unless `raw`.
    """
    cell = _csv_value if raw else _safe_csv_value
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
        yield [cell(field, field.python_value(value)) for field, value in zip(fields, row, strict=True)]


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


# What a spreadsheet reads as the start of a formula (OWASP, "CSV Injection"); a payload is the client's text.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralised(text: str) -> str:
    """`text` as a spreadsheet shows it rather than runs it: a leading ' when it starts like a formula."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def _safe_csv_value(field: peewee.Field, value) -> str:
    text = _csv_value(field, value)
    # Numbers and dates are ours, never a formula (a negative number stays a number).
    return neutralised(text) if isinstance(value, str) or isinstance(field, JSONField) else text


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




def export_command(settings: Settings, table: str, *, since: str | None, output, stdout, raw: bool = False) -> int:
    """Write `export`'s CSV to the file `output` (atomically) or to the binary stream `stdout`; the row count."""
    start = parse_since(since)
    db.bind(settings.required("DATABASE_URL"))
    try:
        if output is None:
            text = io.TextIOWrapper(stdout, encoding="utf-8", newline="")
            try:
                return _export_to(table, start, text, raw)
            finally:
                text.flush()
                text.detach()
        directory = os.path.dirname(os.path.abspath(output))
        try:
            handle, temporary = tempfile.mkstemp(prefix=".export-", suffix=".csv", dir=directory)
        except OSError as error:
            raise _unwritable(output, error) from None
        try:
            with open(handle, "w", encoding="utf-8", newline="") as text:
                count = _export_to(table, start, text, raw)
            os.replace(temporary, output)
        except BaseException as error:
            os.unlink(temporary)
            if isinstance(error, OSError):  # a full disk, a quota, a path that is a directory
                raise _unwritable(output, error) from None
            raise
        return count
    finally:
        models.database.close()


def _unwritable(output, error: OSError) -> UserError:
    return UserError(f"--output {output}: cannot write it: {error.strerror or first_line(error)}")


def _export_to(table: str, since, text: TextIO, raw: bool) -> int:
    try:
        return write_csv(export_rows(table, since, raw=raw), text)
    except DATABASE_ERRORS as error:
        raise Unanswered(f"DATABASE_URL: cannot export {table}: {first_line(error)}") from None
