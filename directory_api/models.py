"""The tables, as peewee models; one set of models for SQLite and PostgreSQL."""

import datetime
import json
from collections.abc import Iterable
from typing import Any, cast

import peewee

# Bound at start by db.bind(), so the models know nothing of DATABASE_URL.
database = peewee.DatabaseProxy()


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(tzinfo=None)


class JSONField(peewee.Field):
    """JSON: jsonb on PostgreSQL, text on SQLite (see db.py's field types)."""

    field_type = "JSON"

    def db_value(self, value):
        if value is None:
            return None
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)

    def python_value(self, value):
        # psycopg2 decodes jsonb itself; SQLite hands back the text.
        if isinstance(value, (str, bytes)):
            return json.loads(value)
        return value


class BaseModel(peewee.Model):
    # Each model but QueueMessage (its own id) declares the `id = peewee.AutoField()` peewee adds, for mypy.
    class Meta:
        database = database
        legacy_table_names = False


class Enrolment(BaseModel):
    """One saved enrolment: the payload as received and the queue message it came in."""

    id = peewee.AutoField()
    created = peewee.DateTimeField(default=utcnow)
    data = JSONField()
    sqs_message_id = peewee.CharField(max_length=255, unique=True)
    # When `erase` removed the personal fields of its payload; None before.
    erased = peewee.DateTimeField(null=True)


class Company(BaseModel):
    id = peewee.AutoField()
    number = peewee.CharField(max_length=8, unique=True)
    name = peewee.CharField(max_length=255)
    export_status = peewee.CharField(max_length=20)
    date_of_creation = peewee.DateField()
    revenue = peewee.DecimalField(max_digits=17, decimal_places=2, null=True)
    created = peewee.DateTimeField(default=utcnow)
    modified = peewee.DateTimeField(default=utcnow)


class Supplier(BaseModel):
    id = peewee.AutoField()
    sso_id = peewee.BigIntegerField(unique=True)
    company_email = peewee.CharField(max_length=255)
    mobile_number = peewee.CharField(max_length=20, default="")
    referrer = peewee.CharField(max_length=255, default="")
    company = peewee.ForeignKeyField(Company, backref="suppliers", on_delete="CASCADE")
    company_id: int  # the foreign key's value, which peewee adds for `company`
    created = peewee.DateTimeField(default=utcnow)
    modified = peewee.DateTimeField(default=utcnow)


class Rejection(BaseModel):
    """A message set aside as invalid, so GET /enrolment/<id>/ can say why."""

    id = peewee.AutoField()
    message_id = peewee.CharField(max_length=255, unique=True)
    errors = JSONField()
    created = peewee.DateTimeField(default=utcnow)
    # Set by `redrive` when the message goes back to the enrolment queue; cleared when it is set aside again.
    redriven = peewee.DateTimeField(null=True)
    # What solving it needs (saving.rejection_fields): the body as the worker could decode it (bounded) and the
    # keys of the enrolment it was, where the payload holds them. All None once erased or past retention.
    payload = peewee.TextField(null=True)
    company_number = peewee.CharField(max_length=255, null=True)
    company_name = peewee.CharField(max_length=255, null=True)
    sso_id = peewee.BigIntegerField(null=True)
    company_email = peewee.CharField(max_length=255, null=True)
    # When its personal data was removed (erase or retention); None while it may hold some.
    erased = peewee.DateTimeField(null=True)


class EnrolmentRetry(BaseModel):
    """A client's retry: a message whose payload equals a saved enrolment's, answered with that enrolment."""

    id = peewee.AutoField()
    message_id = peewee.CharField(max_length=255, unique=True)
    enrolment = peewee.ForeignKeyField(Enrolment, on_delete="CASCADE")
    enrolment_id: int  # the foreign key's value, which peewee adds for `enrolment`
    created = peewee.DateTimeField(default=utcnow)


class QueueMessage(BaseModel):
    """A message of the database queue backend (QUEUE_BACKEND=database)."""

    id = peewee.CharField(max_length=36, primary_key=True)
    queue = peewee.CharField(max_length=80)
    body = peewee.TextField()
    attributes = JSONField(null=True)
    # Epoch seconds; a receive claims a message by moving this into the future.
    visible_at = peewee.DoubleField()
    receive_count = peewee.IntegerField(default=0)
    created = peewee.DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("queue", "visible_at"), False),)


class Email(BaseModel):
    """A confirmation e-mail of the outbox: recorded with its enrolment, sent by `work` (mail.py)."""

    id = peewee.AutoField()
    enrolment = peewee.ForeignKeyField(Enrolment, backref="emails", on_delete="CASCADE")
    # The validated company_email and company_name of the payload; the rest comes from the settings at send time.
    recipient = peewee.CharField(max_length=255)
    company_name = peewee.CharField(max_length=255)
    # The left part of the Message-ID: the same on every try, so a resend after a crash can be recognised.
    token = peewee.CharField(max_length=32)
    state = peewee.CharField(max_length=10, default="waiting")  # waiting, sent, failed or logged
    # Epoch seconds; a claim moves this past a lease, a temporary failure past its backoff.
    due_at = peewee.DoubleField()
    attempts = peewee.IntegerField(default=0)  # claims so far; also a claim's receipt
    last_error = peewee.TextField(default="")
    created = peewee.DateTimeField(default=utcnow)
    sent = peewee.DateTimeField(null=True)


class Audit(BaseModel):
    """One re-drive or erase (ops/audit.py): when, what, from where; never the personal data itself."""

    id = peewee.AutoField()
    at = peewee.DateTimeField(default=utcnow)
    action = peewee.CharField(max_length=20)  # "redrive" or "erase"
    # A re-drive's original message id; an erase's enrolment ids (never a company number or sso id).
    subject = peewee.CharField(max_length=255)
    source = peewee.CharField(max_length=255)  # "redrive on HOST", "console from ADDRESS", "erase on HOST"
    # An erase: what it removed, by table. A re-drive set aside again: when, and its fresh reasons.
    detail = JSONField(null=True)


class JobRun(BaseModel):
    """When each periodic job of `work` (jobs.py) last ran, so its schedule survives restarts."""

    name = peewee.CharField(max_length=80, primary_key=True)
    last_run = peewee.DateTimeField()


ALL_MODELS = (Enrolment, Company, Supplier, Rejection, QueueMessage, Email, EnrolmentRetry, Audit, JobRun)


def enrolment_company_number() -> peewee.ColumnBase:
    """The company number inside Enrolment.data, spelt as its index is (migrations._operating_it), so it is used."""
    if isinstance(database.obj, peewee.PostgresqlDatabase):
        return peewee.NodeList((Enrolment.data, peewee.SQL("->> 'company_number'")))
    # A literal: a parameter misses the index.
    return peewee.fn.json_extract(Enrolment.data, peewee.SQL("'$.company_number'"))


# peewee's own stubs type .tuples() and .dicts() as yielding model instances; these say what the rows are.
def tuple_rows(query: peewee.SelectBase) -> Iterable[tuple[Any, ...]]:
    """The rows of `query` as tuples, in the order of its columns."""
    return cast(Iterable[tuple[Any, ...]], query.tuples())


def dict_rows(query: peewee.SelectBase) -> Iterable[dict[str, Any]]:
    """The rows of `query` as dicts by column name (or alias)."""
    return cast(Iterable[dict[str, Any]], query.dicts())
