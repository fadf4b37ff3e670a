"""db: the Database that DATABASE_URL names."""

import peewee

from directory_api import db


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


def test_a_slash_in_the_postgres_password_reaches_the_driver_whole():
    database = db.database_for("postgres://directory:pa/ss@db.example/directory")

    assert database.connect_params["password"] == "pa/ss"
    assert database.connect_params["host"] == "db.example"
    assert database.database == "directory"
