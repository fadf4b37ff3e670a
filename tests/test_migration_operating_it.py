"""The migration step of issue 12: re-drives, retries and the ops console's indexes, on a database of step 1."""

from directory_api import db, migrations
from directory_api.models import EnrolmentRetry, Rejection

STEP_2_INDEXES = ("enrolment_created", "enrolment_company_number", "company_name_lower",
                  "supplier_company_email_lower", "rejection_waiting", "rejection_redriven")


def test_the_operating_it_step_upgrades_a_database_made_before_it(database_url):
    database = db.bind(database_url)
    migrations.migrate(database)
    # Back to what step 1 made before this release.
    for index in STEP_2_INDEXES:
        database.execute_sql(f"DROP INDEX {index}")
    database.execute_sql("DROP TABLE enrolment_retry")
    database.execute_sql("ALTER TABLE rejection DROP COLUMN redriven")
    step = migrations.STEPS.index(migrations._operating_it) + 1  # its number, whatever steps come before it
    # The steps after it (made on a database that had this one) are applied again, finding their work done.
    database.execute_sql(f"DELETE FROM schema_version WHERE version >= {step}")

    assert migrations.migrate(database) == list(range(step, migrations.LATEST + 1))
    assert "redriven" in {column.name for column in database.get_columns("rejection")}
    assert database.table_exists(EnrolmentRetry._meta.table_name)
    indexes = {index.name for table in ("enrolment", "company", "supplier", "rejection")
               for index in database.get_indexes(table)}
    assert set(STEP_2_INDEXES) <= indexes
    Rejection.create(message_id="m", errors={}, redriven=None)
    database.close()
