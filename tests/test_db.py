"""db: the Database that DATABASE_URL names."""

import threading
import time

import peewee
import pytest

from directory_api import db, migrations
from tests.database_locks import writes_locked


def test_sqlite_url_gives_a_sqlite_database_at_the_path(tmp_path):
    database = db.database_for(f"sqlite:///{tmp_path}/x.sqlite3")
    assert isinstance(database, peewee.SqliteDatabase)
    assert database.database == f"{tmp_path}/x.sqlite3"


def test_sqlite_relative_url_is_relative_to_the_current_directory():
    assert db.database_for("sqlite:///directory-api-debug.sqlite3").database == "directory-api-debug.sqlite3"


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(tmp_path):
    database = db.database_for(f"sqlite:///{tmp_path}/x.sqlite3")
    assert database.execute_sql("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert database.execute_sql("PRAGMA busy_timeout").fetchone()[0] >= 5000
    assert database.execute_sql("PRAGMA foreign_keys").fetchone()[0] == 1


def test_postgres_and_postgresql_schemes_give_postgres():
    for scheme in ("postgres", "postgresql"):
        database = db.database_for(f"{scheme}://user:p%40ss@db.example:6543/directory")
        assert isinstance(database, peewee.PostgresqlDatabase)
        assert database.database == "directory"
        assert database.connect_params["password"] == "p@ss"
        assert database.connect_params["host"] == "db.example"
        assert database.connect_params["port"] == 6543


def test_bind_points_the_models_at_the_database(tmp_path):
    from directory_api.models import Enrolment

    database = db.bind(f"sqlite:///{tmp_path}/x.sqlite3")
    assert Enrolment._meta.database.obj is database


# Every call bounded in time (docs/worker.md): a hung or locked database is an error, never a thread held for good.


def timed(call) -> tuple[BaseException | None, float]:
    started = time.monotonic()
    try:
        call()
    except Exception as error:  # returned for the test to judge
        return error, time.monotonic() - started
    return None, time.monotonic() - started


@pytest.mark.postgres
def test_a_postgres_statement_is_cut_short_at_the_timeout(postgres_url):
    database = db.database_for(postgres_url, timeout=0.5)
    error, took = timed(lambda: database.execute_sql("SELECT pg_sleep(5)"))
    assert isinstance(error, peewee.OperationalError) and "statement timeout" in str(error)
    assert took < 2


def test_a_locked_enrolment_table_is_a_lock_timeout_not_a_hang(database_url, database):
    # Regression: with the table locked by another session a statement waited for as long as the lock was held.
    bounded = db.database_for(database_url, timeout=0.5)
    with writes_locked(database_url):
        error, took = timed(lambda: bounded.execute_sql(db.WRITE_PROBE))
    assert isinstance(error, peewee.OperationalError)
    assert "lock timeout" in str(error) or "database is locked" in str(error)
    assert took < 2


@pytest.mark.postgres
def test_migrate_alone_runs_without_a_statement_timeout(postgres_url):
    assert db.database_for(postgres_url, timeout=None).execute_sql("SHOW statement_timeout").fetchone() == ("0",)
    assert db.database_for(postgres_url).execute_sql("SHOW statement_timeout").fetchone() == ("10s",)


@pytest.mark.postgres
def test_a_statement_cancelled_from_another_thread_fails_and_its_transaction_rolls_back(postgres_database):
    from directory_api.models import Rejection

    database = postgres_database
    outcome = {}

    def save():
        outcome["connection"] = database.connection()
        try:
            with database.atomic():
                Rejection.create(message_id="m-1", errors={})
                database.execute_sql("SELECT pg_sleep(5)")
        except peewee.PeeweeException as error:
            outcome["error"] = error

    thread = threading.Thread(target=save)
    thread.start()
    time.sleep(0.5)
    db.cancel(database, outcome["connection"])
    thread.join(2)
    assert not thread.is_alive()
    assert "canceling statement due to user request" in str(outcome["error"])
    assert Rejection.select().count() == 0


def test_a_writable_database_has_no_write_problem(database):
    assert db.write_problem(database) is None


def test_the_write_probe_leaves_nothing_behind(database):
    from directory_api.models import Enrolment

    db.write_problem(database)
    assert Enrolment.select().count() == 0
    assert Enrolment.create(data={}, sqs_message_id="m-1").id == 1  # no id used up either


def test_a_read_only_sqlite_database_has_a_write_problem(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'x.sqlite3'}"
    migrations.migrate(db.bind(url))
    # query_only fails writes as a read-only file does, with the same error, for a root test run too.
    monkeypatch.setitem(db.SQLITE_PRAGMAS, "query_only", 1)
    assert db.write_problem(db.database_for(url)) == "attempt to write a readonly database"


def test_a_full_disk_is_a_write_problem_for_sqlite(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'x.sqlite3'}"
    migrations.migrate(db.bind(url))
    monkeypatch.setattr(db, "free_bytes", lambda folder: 10)
    assert db.write_problem(db.database_for(url)) == f"the disk holding {tmp_path} is full (10 bytes free)"


@pytest.mark.postgres
def test_a_read_only_postgres_transaction_is_a_write_problem(postgres_url, postgres_database):
    database = db.database_for(postgres_url)
    database.execute_sql("SET default_transaction_read_only = on")
    assert db.write_problem(database) == "cannot execute INSERT in a read-only transaction"


def test_a_slash_in_the_postgres_password_reaches_the_driver_whole():
    database = db.database_for("postgres://directory:pa/ss@db.example/directory")

    assert database.connect_params["password"] == "pa/ss"
    assert database.connect_params["host"] == "db.example"
    assert database.database == "directory"
