"""Fixtures shared by every test module: databases on SQLite and PostgreSQL."""

import os
from collections.abc import Iterator

import peewee
import psycopg2
import pytest
from throwaway_postgres import LOCAL_ADMIN_URL, ThrowawayPostgres, emptied

from directory_api import db, migrations

# Fixtures every kind of test may use (the modules of tests/support/ that have any) and the e2e harness's.
pytest_plugins = ("tests.support.processes", "tests.support.sqs", "tests.support.workers", "tests.support.senders",
                  "tests.e2e.harness")
# The whole package, not only its plugins: tests import its other modules (waits, clocks, wsgi) for their asserts,
# and a module imported before pytest loads it as a plugin (checkout, for IN_CI) is rewritten only so.
pytest.register_assert_rewrite("tests.support", "tests.e2e.harness")
from tests.support.checkout import IN_CI  # noqa: E402

# The server the PostgreSQL tests use; each test session makes its own throwaway database there.
POSTGRES_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", LOCAL_ADMIN_URL)


@pytest.fixture(scope="session")
def postgres_url():
    """The URL of a throwaway PostgreSQL database, dropped at the end of the session."""
    database = ThrowawayPostgres("directory_api_test", POSTGRES_ADMIN_URL)
    try:
        url = database.__enter__()
    except psycopg2.OperationalError as error:
        message = f"PostgreSQL at {POSTGRES_ADMIN_URL} cannot be reached: {error}"
        if IN_CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    yield url
    database.__exit__()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request, tmp_path):
    """An empty database, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.sqlite3'}"
        return
    url = request.getfixturevalue("postgres_url")
    emptied(url)
    yield url
    emptied(url)


@pytest.fixture
def database(database_url) -> Iterator[peewee.Database]:
    """The models bound to a freshly migrated database of each kind."""
    bound = db.bind(database_url)
    migrations.migrate(bound)
    yield bound
    bound.close()


@pytest.fixture
def postgres_database(postgres_url) -> Iterator[peewee.Database]:
    """The models bound to a freshly migrated PostgreSQL database (for tests that only PostgreSQL concerns)."""
    emptied(postgres_url)
    bound = db.bind(postgres_url)
    migrations.migrate(bound)
    yield bound
    bound.close()
