"""The schema steps of issue 23 (rejections that say whose they are, erasure, the audit table, the job schedule),
on a database made before them."""

from directory_api import db, migrations
from directory_api.models import Audit, Enrolment, JobRun, Rejection

NEW_COLUMNS = {"rejection": ("payload", "company_number", "company_name", "sso_id", "company_email", "erased"),
               "enrolment": ("erased",)}


def test_the_steps_upgrade_a_database_made_before_them_and_keep_its_rows(database_url):
    database = db.bind(database_url)
    migrations.migrate(database)
    first = next(step.number for step in migrations.STEPS if step.apply is migrations._rejection_cases)
    # Back to what the release before made.
    for name, _, _ in migrations._REJECTION_INDEXES:
        database.execute_sql(f"DROP INDEX {name}")
    for table, columns in NEW_COLUMNS.items():
        for column in columns:
            database.execute_sql(f"ALTER TABLE {table} DROP COLUMN {column}")
    database.execute_sql("DROP TABLE audit")
    database.execute_sql("DROP TABLE job_run")
    database.execute_sql(f"DELETE FROM schema_version WHERE version >= {first}")
    database.execute_sql("INSERT INTO rejection (message_id, errors, created) VALUES ('old', '{}', '2026-01-01')")

    assert migrations.migrate(database) == list(range(first, migrations.LATEST + 1))
    for table, columns in NEW_COLUMNS.items():
        assert set(columns) <= {column.name for column in database.get_columns(table)}
    old = Rejection.get(message_id="old")
    assert (old.payload, old.company_number, old.erased) == (None, None, None)
    assert Enrolment.select().where(Enrolment.erased.is_null()).count() == 0
    Audit.create(action="redrive", subject="old", source="test")
    JobRun.create(name="retention", last_run=old.created)
    database.close()

