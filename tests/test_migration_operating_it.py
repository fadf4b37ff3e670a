"""The migration step of issue 12: re-drives, retries and the ops console's indexes, on a database of step 1."""

from directory_api import db, migrations
from directory_api.models import EnrolmentRetry, Rejection

STEP_2_INDEXES = ("enrolment_created", "enrolment_company_number", "company_name_lower",
                  "supplier_company_email_lower", "rejection_waiting", "rejection_redriven")


def test_the_operating_it_step_upgrades_a_database_made_before_it(database_url, monkeypatch):
    database = db.bind(database_url)
    migrations.migrate(database)
    # Back to what step 1 made before this release.
    for index in STEP_2_INDEXES:
        database.execute_sql(f"DROP INDEX {index}")
    database.execute_sql("DROP TABLE enrolment_retry")
    database.execute_sql("ALTER TABLE rejection DROP COLUMN redriven")
    step = next(step.number for step in migrations.STEPS if step.apply is migrations._operating_it)
    database.execute_sql(f"DELETE FROM schema_version WHERE version >= {step}")
    # The code of the release that brought this step: the later steps are not part of it.
    monkeypatch.setattr(migrations, "STEPS", migrations.STEPS[:step])
    monkeypatch.setattr(migrations, "LATEST", step)

    assert migrations.migrate(database) == [step]
    assert "redriven" in {column.name for column in database.get_columns("rejection")}
    assert database.table_exists(EnrolmentRetry._meta.table_name)
    indexes = {index.name for table in ("enrolment", "company", "supplier", "rejection")
               for index in database.get_indexes(table)}
    assert set(STEP_2_INDEXES) <= indexes
    Rejection.create(message_id="m", errors={}, redriven=None)
    database.close()
