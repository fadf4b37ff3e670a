"""Ordered schema steps, recorded in a schema_version table, applied under a lock."""

import contextlib
import dataclasses
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence

import peewee
from playhouse.migrate import SchemaMigrator
from playhouse.migrate import migrate as migrate_schema

from directory_api import __version__, models
from directory_api.db import Handle, behind, is_postgres
from directory_api.errors import SchemaError

log = logging.getLogger(__name__)

# pg_advisory_xact_lock key: any constant of our own ("dir-api" in ASCII).
ADVISORY_LOCK_KEY = 0x6469722D617069

MIGRATE_HINT = "run `directory-api migrate` (or start with --debug, which migrates by itself)"
NEWER_HINT = "run the newer directory-api that migrated it"


class SchemaVersion(peewee.Model):
    """One row a schema step applied, marked additive or breaking (CHANGELOG.md, docs/production.md)."""

    version = peewee.IntegerField(primary_key=True)
    applied = peewee.DateTimeField(default=models.utcnow)
    # A database default as well, for a release that inserts without it (1.0.0 knows only the two above):
    # a step recorded by code that cannot say is taken as breaking.
    additive = peewee.BooleanField(default=False, constraints=[peewee.SQL("DEFAULT FALSE")])

    class Meta:
        database = models.database
        table_name = "schema_version"


class HeldSchemaVersion(SchemaVersion):
    """Rows of schema_version kept where release 1.0.0 does not look (see `hold`).

    While this table exists a hold is in effect: every step beyond 1.0.0's is
    recorded here, by any `migrate`, until `migrate --end-compatibility`.
    """

    class Meta:
        table_name = "schema_version_beyond_1_0_0"


def _initial_schema(database: peewee.Database) -> None:
    database.create_tables((models.Enrolment, models.Company, models.Supplier, models.Rejection, models.QueueMessage))


def _email_outbox(database: peewee.Database) -> None:
    """The confirmation e-mail outbox (outbox.py), as it was at this step."""

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
    _create_indexes(database, _OPS_INDEXES)


def _add_missing_columns(database: peewee.Database, columns: Sequence[tuple[str, str, peewee.Field]]) -> None:
    """Add each (table, column, field) the table lacks: the initial step makes tables from today's models."""
    migrator = SchemaMigrator.from_database(database)
    for table, column, field in columns:
        if column not in {existing.name for existing in database.get_columns(table)}:
            migrate_schema(migrator.add_column(table, column, field))


def _create_indexes(database: peewee.Database, indexes: Sequence[tuple[str, str, str | dict[str, str]]]) -> None:
    """Create each (name, table, expression) index missing; a dict expression holds one per database."""
    postgres = is_postgres(database)
    for name, table, expression in indexes:
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
    # enrolment first: a saving transaction of a running worker (any release) writes enrolment before
    # rejection, so taking their locks in the same order cannot deadlock with it.
    added: list[tuple[str, str, peewee.Field]] = [
        ("enrolment", "erased", peewee.DateTimeField(null=True)),
        ("rejection", "payload", peewee.TextField(null=True)),
        ("rejection", "company_number", peewee.CharField(max_length=255, null=True)),
        ("rejection", "company_name", peewee.CharField(max_length=255, null=True)),
        ("rejection", "sso_id", peewee.BigIntegerField(null=True)),
        ("rejection", "company_email", peewee.CharField(max_length=255, null=True)),
        ("rejection", "erased", peewee.DateTimeField(null=True)),
    ]
    _add_missing_columns(database, added)
    _create_indexes(database, _REJECTION_INDEXES)


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


def _company_name_sorted(database: peewee.Database) -> None:
    """The console lists a name search by name, a page at a time (issue 23.7): an index in that order.

    PostgreSQL's index for LIKE (company_name_lower, text_pattern_ops) cannot serve an ORDER BY; one in the
    "C" collation serves both the prefix and the order. On SQLite company_name_lower already serves both: an
    index entry ends with the rowid, which is id.
    """
    if is_postgres(database):
        database.execute_sql(
            'CREATE INDEX IF NOT EXISTS company_name_sorted ON company ((lower(name) COLLATE "C"), id)')


@dataclasses.dataclass(frozen=True)
class Step:
    """One schema step: `apply` makes the change; `additive` when code older than the step still runs on it."""

    number: int
    name: str
    apply: Callable[[peewee.Database], None]
    # Additive: new tables, new columns that are nullable or have a default, indexes. Not additive
    # (breaking): dropping or renaming anything, a new NOT NULL column without a default, a changed type.
    additive: bool = True


def _schema_version_additive(database: peewee.Database) -> None:
    """schema_version.additive (issue 24): whether code older than a step still runs on it.

    NOT NULL with a database default, so 1.0.0, which inserts (version, applied)
    only, could still record a step. Steps 1 to 3 were all additive.
    """
    if "additive" in _columns(database, "schema_version"):
        return
    database.execute_sql("ALTER TABLE schema_version ADD COLUMN additive BOOLEAN NOT NULL DEFAULT FALSE")
    database.execute_sql("UPDATE schema_version SET additive = TRUE WHERE version <= 3")


def _columns(database: peewee.Database, table: str) -> set[str]:
    return {column.name for column in database.get_columns(table)}


# Append only, numbered from 1 without gaps: a step, once released, never changes. Later steps use
# playhouse.migrate so they describe a change, not a snapshot of the models.
STEPS: tuple[Step, ...] = (
    Step(1, "initial_schema", _initial_schema),
    Step(2, "email_outbox", _email_outbox),
    Step(3, "operating_it", _operating_it),
    Step(4, "schema_version_additive", _schema_version_additive),
    Step(5, "rejection_cases", _rejection_cases),  # additive
    Step(6, "audit_and_jobs", _audit_and_jobs),  # additive
    Step(7, "company_name_sorted", _company_name_sorted),  # additive
)
LATEST = len(STEPS)


@dataclasses.dataclass(frozen=True)
class Release:
    """A published release and the last schema step its code knows."""

    version: str
    last_step: int
    # Whether it runs on a newer schema whose newer steps are all additive (1.0.0 refuses any newer schema).
    runs_on_additive: bool = True


# Every release before this one; add this one's line when it is published.
RELEASES: tuple[Release, ...] = (Release("1.0.0", 3, runs_on_additive=False),)
# The one release a hold is for (HeldSchemaVersion's table is named for it).
HELD_FOR = RELEASES[0]


def releases_stopped_by(step: Step) -> list[str]:
    """The published releases that can no longer start once `step` is applied."""
    return [release.version for release in RELEASES
            if release.last_step < step.number and not (step.additive and release.runs_on_additive)]


def _version_tables(database: Handle) -> list[type[SchemaVersion]]:
    return [model for model in (SchemaVersion, HeldSchemaVersion) if database.table_exists(model._meta.table_name)]


def current_version(database: Handle) -> int:
    """The highest step applied (recorded in schema_version, or held for 1.0.0); 0 for an empty database."""
    versions = [model.select(peewee.fn.MAX(model.version)).scalar() or 0 for model in _version_tables(database)]
    return max(versions, default=0)


def newer_steps(database: Handle) -> dict[int, bool]:
    """The steps applied that this release does not know, each with whether it is additive."""
    return applied_beyond(database, LATEST)


def applied_beyond(database: Handle, number: int) -> dict[int, bool]:
    """The steps applied after step `number`, each with whether it is additive."""
    if current_version(database) <= number:
        return {}  # and a table of 1.0.0's may have no additive column to read
    beyond = {}
    for model in _version_tables(database):
        query = model.select(model.version, model.additive).where(model.version > number)
        beyond.update({row.version: bool(row.additive) for row in query})
    return beyond


def hold_in_effect(database: Handle) -> bool:
    """Whether `migrate --compatible-with 1.0.0` holds steps for 1.0.0 (until `migrate --end-compatibility`)."""
    return bool(database.table_exists(HeldSchemaVersion._meta.table_name))


def held_steps(database: Handle) -> list[int]:
    """The steps whose rows the hold keeps out of schema_version."""
    if not hold_in_effect(database):
        return []
    return [row.version for row in HeldSchemaVersion.select(HeldSchemaVersion.version).order_by(
        HeldSchemaVersion.version)]


def pending_steps(database: Handle) -> list[Step]:
    """The steps `migrate` would apply now, in order; changes nothing."""
    return list(STEPS[current_version(database):])


@contextlib.contextmanager
def _locked(database: peewee.Database) -> Iterator[None]:
    """A transaction that one migrate at a time holds (the others wait here)."""
    with database.atomic():
        if is_postgres(database):
            # Held to the end of the transaction. (SQLite's BEGIN IMMEDIATE does the same.)
            database.execute_sql("SELECT pg_advisory_xact_lock(%s)", (ADVISORY_LOCK_KEY,))
        yield


def _record(database: peewee.Database, step: Step, *, held: bool) -> None:
    """The row of `step`, in schema_version, or where 1.0.0 does not look when `held`."""
    if held:
        HeldSchemaVersion.insert(version=step.number, applied=models.utcnow(), additive=step.additive).execute()
        return
    row: dict = {"version": step.number, "applied": models.utcnow().isoformat(sep=" ")}
    # Before step 4 the table has no additive column (a 1.0.0 database migrated from step 1 or 2).
    if "additive" in _columns(database, SchemaVersion._meta.table_name):
        row["additive"] = step.additive
    # Raw SQL: the model would insert every column it has, additive included.
    marks = ", ".join(database.param for _ in row)
    database.execute_sql(f"INSERT INTO schema_version ({', '.join(row)}) VALUES ({marks})", tuple(row.values()))


def breaking_refusal(steps: list[Step]) -> str | None:
    """Why `migrate` without --allow-breaking refuses `steps`; None when they are all additive."""
    breaking = [step for step in steps if not step.additive]
    if not breaking:
        return None
    named = ", ".join(f"{step.number} ({step.name})" for step in breaking)
    stopped = sorted({release for step in breaking for release in releases_stopped_by(step)})
    return (f"schema step {named} is breaking: {' and '.join(stopped) or 'older releases'} can no longer run "
            "after it; stop every process of those releases, then run `directory-api migrate --allow-breaking`")


def hold_refusal(steps: list[Step]) -> str | None:
    """Why `migrate` refuses `steps` while a hold is in effect (a breaking one among them); None when it does not."""
    breaking = [step for step in steps if not step.additive]
    if not breaking:
        return None
    named = ", ".join(f"{step.number} ({step.name})" for step in breaking)
    version = HELD_FOR.version
    return (f"schema step {named} is breaking and steps are held for {version} (migrate --compatible-with "
            f"{version}): end the hold first, once no {version} process is left (`directory-api migrate "
            "--end-compatibility`), then run `directory-api migrate --allow-breaking`")


def migrate(database: Handle, *, allow_breaking: bool = False, compatible_with: str | None = None,
            end_hold: bool = False) -> list[int]:
    """Apply the steps not applied yet, each in its own transaction; return their numbers.

    Safe to run concurrently, and again after being killed at any point: a
    step and its row commit together. A breaking step is applied only with
    allow_breaking, and never while a hold is in effect; otherwise nothing is
    applied. compatible_with="1.0.0" starts a hold (see `hold`): from then on
    every migrate records the steps 1.0.0 does not know where 1.0.0 does not
    look, so 1.0.0 keeps starting, until end_hold records them in
    schema_version again.
    """
    if compatible_with and end_hold:
        raise SchemaError("--compatible-with and --end-compatibility: give one of the two")
    database = behind(database)  # steps may ask what it is (playhouse's SchemaMigrator does)
    release = compatible_release(compatible_with) if compatible_with else None
    with _locked(database):
        database.create_tables([SchemaVersion])
    pending = pending_steps(database)
    holding = hold_in_effect(database) and not end_hold
    refusal = (compatibility_refusal(release, pending, applied_beyond(database, release.last_step))
               if release else None) or \
        (hold_refusal(pending) if holding else None) or \
        (breaking_refusal(pending) if not allow_breaking else None)
    if refusal:
        raise SchemaError(refusal)
    if release or end_hold:
        with _locked(database):
            if release:
                hold(database, release)
            else:
                _put_back(database)
    applied: list[int] = []
    while True:
        with _locked(database):
            # Read again under the lock: another migrate may have applied steps, or started a hold, meanwhile.
            number = current_version(database) + 1
            if number > LATEST:
                break
            step = STEPS[number - 1]
            holding = hold_in_effect(database) and number > HELD_FOR.last_step
            if not step.additive and holding:
                raise SchemaError(hold_refusal([step]) or "")
            if not step.additive and not allow_breaking:
                raise SchemaError(breaking_refusal([step]) or "")
            log.info("applying schema step %d (%s, %s)", number, step.name, kind(step))
            step.apply(database)
            _record(database, step, held=holding)
        applied.append(number)
    return applied


def compatible_release(version: str) -> Release:
    """The release `--compatible-with` names, when it is one that needs it."""
    for release in RELEASES:
        if release.version == version and not release.runs_on_additive:
            return release
    needing = ", ".join(release.version for release in RELEASES if not release.runs_on_additive)
    raise SchemaError(f"--compatible-with {version}: only {needing} needs it (later releases run on additive steps "
                      "by themselves)")


def compatibility_refusal(release: Release, pending: list[Step], applied_newer: Mapping[int, bool]) -> str | None:
    """Why the steps beyond `release`'s cannot be held for it: one of them is breaking."""
    breaking = sorted({step.number for step in pending if step.number > release.last_step and not step.additive} |
                      {number for number, additive in applied_newer.items() if not additive})
    if not breaking:
        return None
    return (f"--compatible-with {release.version}: {steps_are(breaking)} breaking, so "
            f"{release.version} cannot run on this schema whatever is recorded")


def hold(database: peewee.Database, release: Release) -> list[int]:
    """Start a hold: move the rows of the (additive) steps beyond `release`'s out of schema_version; return
    their numbers.

    Release 1.0.0 reads MAX(schema_version.version) and refuses anything above
    its own last step, additive or not. Its code runs on additive steps, so
    their rows wait in schema_version_beyond_1_0_0, where this release reads
    them too, and the steps applied later join them, until `migrate
    --end-compatibility` puts them back (`_put_back`).
    """
    database.create_tables([HeldSchemaVersion])
    # A schema_version of 1.0.0 (nothing beyond 3 yet) has no additive column to select.
    if (SchemaVersion.select(peewee.fn.MAX(SchemaVersion.version)).scalar() or 0) <= release.last_step:
        return []
    beyond = SchemaVersion.version > release.last_step
    rows = list(SchemaVersion.select().where(beyond).order_by(SchemaVersion.version))
    if any(not row.additive for row in rows):
        raise SchemaError(compatibility_refusal(release, [], {row.version: row.additive for row in rows}) or "")
    HeldSchemaVersion.insert_from(SchemaVersion.select(*_fields(SchemaVersion)).where(beyond),
                                  _fields(HeldSchemaVersion)).execute()
    SchemaVersion.delete().where(beyond).execute()
    return [row.version for row in rows]


def _put_back(database: peewee.Database) -> None:
    """The rows `hold` moved, back into schema_version (from then on 1.0.0 refuses to start)."""
    if not database.table_exists(HeldSchemaVersion._meta.table_name):
        return
    SchemaVersion.insert_from(HeldSchemaVersion.select(*_fields(HeldSchemaVersion)), _fields(SchemaVersion)).execute()
    database.drop_tables([HeldSchemaVersion])


def _fields(model: type[SchemaVersion]) -> list[peewee.Field]:
    return [model.version, model.applied, model.additive]


def steps_are(numbers: Sequence[int], verb: str = "is") -> str:
    """"step 5 is" or "steps 5, 6 are": `verb` is said of one step ("is", "is held"), its first word made plural."""
    if len(numbers) == 1:
        return f"step {numbers[0]} {verb}"
    first, _, rest = verb.partition(" ")
    plural = {"is": "are", "was": "were"}.get(first, first)
    return f"steps {', '.join(map(str, numbers))} {plural}{' ' + rest if rest else ''}"


def kind(step: Step) -> str:
    return "additive" if step.additive else "breaking"


def describe(step: Step, holding: bool = False) -> str:
    """One step as `migrate --dry-run` lists it: number, name, additive or breaking, and whom it stops
    (`holding`: a hold for 1.0.0 is in effect, so an additive step is held too)."""
    stopped = releases_stopped_by(step)
    bridged = [release.version for release in RELEASES if step.additive and not release.runs_on_additive
               and release.version in stopped]
    if holding and bridged:
        stopped = [version for version in stopped if version not in bridged]
    unless = f" (unless migrate --compatible-with {bridged[0]})" if bridged and not holding else ""
    after = f"; {' and '.join(stopped)} can no longer start after it{unless}" if stopped else ""
    if holding and bridged:
        after += f"; held for {' and '.join(bridged)}, which still starts"
    needs = "" if step.additive else \
        " (needs --end-compatibility, then --allow-breaking)" if holding else " (needs --allow-breaking)"
    return f"step {step.number} {step.name}: {kind(step)}{needs}{after}"


def dry_run_lines(version: int, pending: list[Step], held: Sequence[int] = (), holding: bool = False) -> list[str]:
    """What `migrate --dry-run` prints for a schema at `version` (`held`: rows a hold in effect keeps out of
    schema_version)."""
    lines = []
    if holding:
        what = steps_are(held, "is held") if held else "steps beyond 3 are held"
        lines.append(f"{what} for {HELD_FOR.version} (migrate --compatible-with {HELD_FOR.version}), so it still "
                     f"starts; migrate keeps them held; migrate --end-compatibility would record them in "
                     f"schema_version again, after which {HELD_FOR.version} no longer starts")
    if not pending:
        newer = f", newer than this release ({LATEST})" if version > LATEST else ""
        return [f"schema at version {version}{newer}: nothing to apply", *lines]
    lines.insert(0, f"schema at version {version}; migrate would apply {len(pending)} step(s), in this order:")
    lines[1:1] = [f"  {describe(step, holding)}" for step in pending]
    lines.append("nothing was changed (--dry-run)")
    return lines


def stopped_lines(steps: list[Step], version: int, compatible_with: str | None = None) -> list[str]:
    """What `migrate` says before applying `steps` to a schema at `version`: the releases that may run on it
    now and can no longer start once a step is applied (none for an empty database)."""
    running = {release.version for release in RELEASES if 0 < release.last_step <= version}
    lines = []
    for step in steps:
        stopped = [v for v in releases_stopped_by(step) if v in running and v != compatible_with]
        if stopped:
            lines.append(f"schema step {step.number} ({step.name}, {kind(step)}): {' and '.join(stopped)} can no "
                         "longer start once it is applied")
    return lines


def warning_lines(pending: list[Step], version: int, held: Sequence[int], *, holding: bool, allow_breaking: bool,
                  compatible_with: str | None, end_hold: bool = False) -> list[str]:
    """What `migrate` warns of before applying `pending` (nothing when it will refuse a breaking step)."""
    held_after = bool(compatible_with) or (holding and not end_hold)
    if (held_after or not allow_breaking) and breaking_refusal(pending):
        return []
    lines = stopped_lines(pending, version, HELD_FOR.version if held_after else None)
    if end_hold and held:
        lines.append(f"schema {steps_are(held, 'is recorded')} in schema_version again: {HELD_FOR.version} can no "
                     "longer start")
    return lines


def summary_lines(applied: list[int], version: int, held: Sequence[int], ended: Sequence[int] | None = None
                  ) -> list[str]:
    """What `migrate` says once done: the steps applied, those held for 1.0.0 and how to end that, or (`ended`:
    migrate --end-compatibility) the steps it recorded in schema_version again."""
    if applied:
        lines = [f"schema migrated to version {applied[-1]} (applied steps {', '.join(map(str, applied))})"]
    else:
        lines = [f"schema already at version {max(version, LATEST)}: nothing to do"]
    release = HELD_FOR.version
    if held:
        lines.append(f"{steps_are(held, 'is held')} for {release} in {HeldSchemaVersion._meta.table_name}, where "
                     f"it does not look, so it still starts: once no {release} process is left, end the hold with "
                     "`directory-api migrate --end-compatibility`")
    elif ended:
        lines.append(f"{steps_are(ended, 'is recorded')} in schema_version again: the hold for {release} is ended")
    elif ended is not None:
        lines.append(f"no step was held for {release}: nothing to end")
    return lines


def schema_problem(version: int, newer: Mapping[int, bool] | None = None) -> str | None:
    """What keeps this release off a schema at `version`; None when it may run.

    `newer` holds the steps beyond this release's (number: additive); it runs
    on them only when they are all additive (None: not known, so it does not).
    """
    if version < LATEST:
        return f"at version {version}, this release needs {LATEST}"
    if version > LATEST:
        breaking = sorted(number for number, additive in (newer or {}).items() if not additive)
        if newer is None or breaking:
            which = f"; {steps_are(breaking)} breaking" if breaking else ""
            return f"at version {version}, newer than this release ({LATEST}){which}"
    return None


_warned: set[int] = set()


def ensure_current(database: Handle, *, auto_migrate: bool) -> None:
    """Refuse to run on a schema older than this release (or migrate, under --debug), or on a newer one
    unless every newer step is additive (then warn, once a process)."""
    version = current_version(database)
    if version < LATEST and auto_migrate:
        migrate(database)
        return
    newer = newer_steps(database) if version > LATEST else {}
    problem = schema_problem(version, newer)
    if problem:
        raise SchemaError(f"the database schema is {problem}: {MIGRATE_HINT if version < LATEST else NEWER_HINT}")
    if newer and version not in _warned:
        _warned.add(version)
        log.warning("the database schema is at version %d, newer than this release (directory-api %s, version %d); "
                    "its newer steps are all additive, so this release runs on it", version, __version__, LATEST)
