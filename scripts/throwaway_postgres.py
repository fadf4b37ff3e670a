"""A throwaway PostgreSQL database on a local server, for tests and benchmarks: made on entry, dropped on exit."""

import contextlib
import uuid

import psycopg2

LOCAL_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def _run_as_admin(admin_url: str, statement: str) -> None:
    # CREATE and DROP DATABASE cannot run inside a transaction.
    with contextlib.closing(psycopg2.connect(admin_url, connect_timeout=5)) as connection:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(statement)


class ThrowawayPostgres:
    """`with ThrowawayPostgres("label") as url:` a fresh database named label_<random> beside `admin_url`'s."""

    def __init__(self, label: str, admin_url: str = LOCAL_ADMIN_URL):
        self.admin_url = admin_url
        self.name = f"{label}_{uuid.uuid4().hex[:12]}"
        self.url = f"{admin_url.rsplit('/', 1)[0]}/{self.name}"

    def __enter__(self) -> str:
        """Create the database; psycopg2.OperationalError when the server cannot be reached."""
        _run_as_admin(self.admin_url, f'CREATE DATABASE "{self.name}"')
        return self.url

    def __exit__(self, *exc) -> None:
        _run_as_admin(self.admin_url, f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def reachable(admin_url: str = LOCAL_ADMIN_URL) -> bool:
    try:
        psycopg2.connect(admin_url, connect_timeout=3).close()
    except psycopg2.Error:
        return False
    return True


def emptied(url: str) -> str:
    """Empty the database at `url` for the next user: its other sessions ended, the public schema made anew."""
    with contextlib.closing(psycopg2.connect(url, connect_timeout=5)) as connection:
        connection.autocommit = True
        with connection.cursor() as cursor:
            # Threads a test started (worker lanes, the e-mail sender, health) keep their connections past its end:
            # left alone, they add up over the suite to PostgreSQL's max_connections (100 by default).
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            cursor.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    return url
