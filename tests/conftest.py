"""Fixtures shared by every test module: databases on SQLite and PostgreSQL."""

import os
import uuid

import peewee
import psycopg2
import pytest

from directory_api import db, migrations

# The server the PostgreSQL tests use; each test session makes its own throwaway database there.
POSTGRES_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
IN_CI = os.environ.get("CI", "").lower() == "true"


def _admin_connection():
    connection = psycopg2.connect(POSTGRES_ADMIN_URL, connect_timeout=5)
    connection.autocommit = True
    return connection


@pytest.fixture(scope="session")
def postgres_url():
    """The URL of a throwaway PostgreSQL database, dropped at the end of the session."""
    try:
        admin = _admin_connection()
    except psycopg2.OperationalError as error:
        message = f"PostgreSQL at {POSTGRES_ADMIN_URL} cannot be reached: {error}"
        if IN_CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    name = f"directory_api_test_{uuid.uuid4().hex[:12]}"
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    with admin.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


def _empty_postgres(url: str) -> None:
    database = db.database_for(url)
    # Threads a test started (worker lanes, the e-mail sender, health) keep their connections past its end:
    # left alone, they add up over the suite to PostgreSQL's max_connections (100 by default).
    database.execute_sql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    database.execute_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    database.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request, tmp_path):
    """An empty database, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.sqlite3'}"
        return
    url = request.getfixturevalue("postgres_url")
    _empty_postgres(url)
    yield url
    _empty_postgres(url)


@pytest.fixture
def database(database_url) -> peewee.Database:
    """The models bound to a freshly migrated database of each kind."""
    bound = db.bind(database_url)
    migrations.migrate(bound)
    yield bound
    bound.close()


@pytest.fixture
def postgres_database(postgres_url) -> peewee.Database:
    """The models bound to a freshly migrated PostgreSQL database (for tests that only PostgreSQL concerns)."""
    _empty_postgres(postgres_url)
    bound = db.bind(postgres_url)
    migrations.migrate(bound)
    yield bound
    bound.close()
