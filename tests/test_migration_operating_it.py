"""Migration step 2 (issue 12): re-drives, retries and the ops console's indexes, on a database of step 1."""

from directory_api import db, migrations
from directory_api.models import EnrolmentRetry, Rejection

STEP_2_INDEXES = ("enrolment_created", "enrolment_company_number", "company_name_lower",
                  "supplier_company_email_lower", "rejection_waiting")


def test_step_2_upgrades_a_database_of_step_1(database_url):
    database = db.bind(database_url)
    migrations.migrate(database)
    # Back to what step 1 made before this release.
    for index in STEP_2_INDEXES:
        database.execute_sql(f"DROP INDEX {index}")
    database.execute_sql("DROP TABLE enrolment_retry")
    database.execute_sql("ALTER TABLE rejection DROP COLUMN redriven")
    database.execute_sql("DELETE FROM schema_version WHERE version = 2")

    assert migrations.migrate(database) == [2]
    assert "redriven" in {column.name for column in database.get_columns("rejection")}
    assert database.table_exists(EnrolmentRetry._meta.table_name)
    indexes = {index.name for table in ("enrolment", "company", "supplier", "rejection")
               for index in database.get_indexes(table)}
    assert set(STEP_2_INDEXES) <= indexes
    Rejection.create(message_id="m", errors={}, redriven=None)
    database.close()
