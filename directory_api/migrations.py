"""Ordered schema steps, recorded in a schema_version table, applied under a lock."""

import logging
from collections.abc import Callable

import peewee
from playhouse.migrate import SchemaMigrator
from playhouse.migrate import migrate as migrate_schema

from directory_api import models
from directory_api.db import Handle, behind, is_postgres
from directory_api.errors import SchemaError

log = logging.getLogger(__name__)

# pg_advisory_xact_lock key: any constant of our own ("dir-api" in ASCII).
ADVISORY_LOCK_KEY = 0x6469722D617069

MIGRATE_HINT = "run `directory-api migrate` (or start with --debug, which migrates by itself)"
NEWER_HINT = "run the newer directory-api"


class SchemaVersion(peewee.Model):
    version = peewee.IntegerField(primary_key=True)
    applied = peewee.DateTimeField(default=models.utcnow)

    class Meta:
        database = models.database
        table_name = "schema_version"


def _initial_schema(database: peewee.Database) -> None:
    database.create_tables((models.Enrolment, models.Company, models.Supplier, models.Rejection, models.QueueMessage))


def _email_outbox(database: peewee.Database) -> None:
    """The confirmation e-mail outbox (mail.py), as it was at this step."""

    # A copy of models.Email at this step, so the step creates the same table whatever the model becomes.
    class Email(peewee.Model):
        enrolment = peewee.ForeignKeyField(models.Enrolment, on_delete="CASCADE")
        recipient = peewee.CharField(max_length=255)
        company_name = peewee.CharField(max_length=255)
        token = peewee.CharField(max_length=32)
        state = peewee.CharField(max_length=10, default="waiting")
        due_at = peewee.DoubleField()
        attempts = peewee.IntegerField(default=0)
        last_error = peewee.TextField(default="")
        created = peewee.DateTimeField(default=models.utcnow)
        sent = peewee.DateTimeField(null=True)

        class Meta:
            table_name = "email"

    Email.bind(database, bind_refs=False, bind_backrefs=False)  # models.Enrolment stays on its proxy
    # What the sender claims from: only the waiting e-mails, in the order they fall due.
    Email.add_index(Email.index(Email.due_at, name="email_waiting_due_at", where=Email.state == "waiting"))
    database.create_tables([Email])


def _operating_it(database: peewee.Database) -> None:
    """Re-drives and client retries (issue 12), and the indexes that bound the ops console's queries.

    The initial step creates its tables from the models as they are now, so on
    a fresh database rejection.redriven exists already: each change here is
    made only when missing.
    """
    if "redriven" not in {column.name for column in database.get_columns("rejection")}:
        migrator = SchemaMigrator.from_database(database)
        migrate_schema(migrator.add_column("rejection", "redriven", models.Rejection.redriven))
    database.create_tables([models.EnrolmentRetry], safe=True)
    postgres = is_postgres(database)
    for name, table, expression in _OPS_INDEXES:
        if isinstance(expression, dict):
            expression = expression["postgres" if postgres else "sqlite"]
        database.execute_sql(f"CREATE INDEX IF NOT EXISTS {name} ON {table} {expression}")


# What each index of the ops console is for (every console query is a lookup or a page of one of these):
_OPS_INDEXES = (
    # status and the overview count the enrolments of the last 24 hours; export --since filters on it.
    ("enrolment_created", "enrolment", "(created)"),
    # From a company to its enrolment (search, detail) and a client's retry to the saved payload it repeats.
    ("enrolment_company_number", "enrolment", {
        "postgres": "((data ->> 'company_number'))",
        "sqlite": "(json_extract(data, '$.company_number'))",
    }),
    # Search by the start of a company name, any case (text_pattern_ops: LIKE 'prefix%' under any collation).
    ("company_name_lower", "company", {
        "postgres": "(lower(name) text_pattern_ops)",
        "sqlite": "(lower(name))",
    }),
    # Search by e-mail, any case.
    ("supplier_company_email_lower", "supplier", "(lower(company_email))"),
    # The rejections not re-driven: the console's list and the status count, newest first.
    ("rejection_waiting", "rejection", "(id) WHERE redriven IS NULL"),
    # The recently re-driven, newest first, under that list.
    ("rejection_redriven", "rejection", "(redriven) WHERE redriven IS NOT NULL"),
)


def _rejection_cases(database: peewee.Database) -> None:
    """A rejection says whose it was and keeps its payload; an enrolment may be erased (issue 23 items 1 and 3).

    Nullable columns only, so the previous release runs on it. The initial step
    makes tables from the models as they are now: each column is added only
    when missing.
    """
    added = [
        ("rejection", "payload", peewee.TextField(null=True)),
        ("rejection", "company_number", peewee.CharField(max_length=255, null=True)),
        ("rejection", "company_name", peewee.CharField(max_length=255, null=True)),
        ("rejection", "sso_id", peewee.BigIntegerField(null=True)),
        ("rejection", "company_email", peewee.CharField(max_length=255, null=True)),
        ("rejection", "erased", peewee.DateTimeField(null=True)),
        ("enrolment", "erased", peewee.DateTimeField(null=True)),
    ]
    migrator = SchemaMigrator.from_database(database)
    for table, column, field in added:
        if column not in {existing.name for existing in database.get_columns(table)}:
            migrate_schema(migrator.add_column(table, column, field))
    postgres = is_postgres(database)
    for name, table, expression in _REJECTION_INDEXES:
        if isinstance(expression, dict):
            expression = expression["postgres" if postgres else "sqlite"]
        database.execute_sql(f"CREATE INDEX IF NOT EXISTS {name} ON {table} {expression}")


# The search finds rejections by the keys it finds enrolments by; retention and `status` walk what still
# holds personal data, oldest first.
_REJECTION_INDEXES = (
    ("rejection_company_number", "rejection", "(company_number)"),
    ("rejection_company_name_lower", "rejection", {
        "postgres": "(lower(company_name) text_pattern_ops)",
        "sqlite": "(lower(company_name))",
    }),
    ("rejection_sso_id", "rejection", "(sso_id)"),
    ("rejection_company_email_lower", "rejection", "(lower(company_email))"),
    ("rejection_personal", "rejection", "(created) WHERE erased IS NULL"),
    ("email_personal", "email", "(created) WHERE recipient <> ''"),
)


def _audit_and_jobs(database: peewee.Database) -> None:
    """The audit table of re-drives and erasures, and the schedule of `work`'s periodic jobs (issue 23)."""

    # Copies of models.Audit and models.JobRun at this step.
    class Audit(peewee.Model):
        at = peewee.DateTimeField(default=models.utcnow)
        action = peewee.CharField(max_length=20)
        subject = peewee.CharField(max_length=255)
        source = peewee.CharField(max_length=255)
        detail = models.JSONField(null=True)

        class Meta:
            table_name = "audit"

    class JobRun(peewee.Model):
        name = peewee.CharField(max_length=80, primary_key=True)
        last_run = peewee.DateTimeField()

        class Meta:
            table_name = "job_run"

    # A rejection's history and an enrolment's: the re-drives of one message id.
    Audit.add_index(Audit.index(Audit.subject, name="audit_subject"))
    database.bind([Audit, JobRun], bind_refs=False, bind_backrefs=False)
    database.create_tables([Audit, JobRun], safe=True)


# Append only: a step, once released, never changes. Later steps use
# playhouse.migrate so they describe a change, not a snapshot of the models.
STEPS: tuple[Callable[[peewee.Database], None], ...] = (
    _initial_schema, _email_outbox, _operating_it,
    _rejection_cases,  # additive
    _audit_and_jobs,  # additive
)
LATEST = len(STEPS)


def current_version(database: Handle) -> int:
    """The highest step applied; 0 for an empty database."""
    if not database.table_exists(SchemaVersion._meta.table_name):
        return 0
    return SchemaVersion.select(peewee.fn.MAX(SchemaVersion.version)).scalar() or 0


def migrate(database: Handle) -> list[int]:
    """Apply the steps not applied yet; return their numbers. Safe to run concurrently."""
    database = behind(database)  # steps may ask what it is (playhouse's SchemaMigrator does)
    with database.atomic():
        if is_postgres(database):
            # Held to the end of the transaction: a second migrate waits here,
            # then finds everything applied. (SQLite's BEGIN IMMEDIATE does the same.)
            database.execute_sql("SELECT pg_advisory_xact_lock(%s)", (ADVISORY_LOCK_KEY,))
        database.create_tables([SchemaVersion])
        applied = []
        for number in range(current_version(database) + 1, LATEST + 1):
            log.info("applying schema step %d (%s)", number, STEPS[number - 1].__name__.strip("_"))
            STEPS[number - 1](database)
            SchemaVersion.create(version=number)
            applied.append(number)
    return applied


def schema_problem(version: int) -> str | None:
    """What is wrong with a schema at `version` for this release (older or newer); None when it is current."""
    if version < LATEST:
        return f"at version {version}, this release needs {LATEST}"
    if version > LATEST:
        return f"at version {version}, newer than this release ({LATEST})"
    return None


def ensure_current(database: Handle, *, auto_migrate: bool) -> None:
    """Refuse to run on a schema older or newer than this release (or migrate, under --debug)."""
    version = current_version(database)
    if version < LATEST and auto_migrate:
        migrate(database)
        return
    problem = schema_problem(version)
    if problem:
        raise SchemaError(f"the database schema is {problem}: {MIGRATE_HINT if version < LATEST else NEWER_HINT}")
