"""Another session holding a database's locks, as an operator's transaction or a stuck process would."""

import contextlib
import sqlite3
from collections.abc import Iterator

import psycopg2

from tests.support.databases import pg_rows


@contextlib.contextmanager
def postgres_table_locked(url: str, table: str = "enrolment") -> Iterator[None]:
    """`LOCK TABLE table IN ACCESS EXCLUSIVE MODE` held by another connection for the block: even reads wait."""
    connection = psycopg2.connect(url, connect_timeout=5)
    try:
        with connection.cursor() as cursor:
            cursor.execute(f'LOCK TABLE "{table}" IN ACCESS EXCLUSIVE MODE')
        yield
    finally:
        connection.rollback()
        connection.close()


@contextlib.contextmanager
def sqlite_write_locked(path: str) -> Iterator[None]:
    """SQLite's write lock held by another connection (BEGIN EXCLUSIVE) for the block; in WAL mode reads go on."""
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("BEGIN EXCLUSIVE")
        yield
    finally:
        connection.execute("ROLLBACK")
        connection.close()


def sqlite_path(url: str) -> str:
    return url.removeprefix("sqlite:///")


@contextlib.contextmanager
def writes_locked(url: str) -> Iterator[None]:
    """Enrolments cannot be written while the block runs, on either database."""
    if url.startswith("sqlite"):
        with sqlite_write_locked(sqlite_path(url)):
            yield
    else:
        with postgres_table_locked(url):
            yield


def lock_waits(url: str) -> int:
    """Sessions of the PostgreSQL database at `url` waiting for a lock now."""
    query = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
    return pg_rows(url, query)[0][0]


def write_lock_is_free(database_url: str) -> bool:
    """Whether SQLite's write lock can be taken now (within half a second)."""
    connection = sqlite3.connect(database_url.removeprefix("sqlite:///"), timeout=0.5)
    try:
        connection.execute("BEGIN IMMEDIATE")
        connection.rollback()
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        connection.close()
