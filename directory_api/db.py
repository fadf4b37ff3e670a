"""The peewee Database named by DATABASE_URL, and binding the models to it.

The models' DatabaseProxy (models.database) is the one database of a
process: db.bind() points it at DATABASE_URL once, at start, and everything
that reads or writes goes through it. What needs the Database behind it (to
copy its connection parameters, or to tell SQLite from PostgreSQL) asks
bound().

Every call is bounded in time (docs/worker.md): PostgreSQL cuts a statement or a lock
wait short, SQLite gives up waiting for the write lock, and TCP keepalives
notice a server that vanished mid-statement. A hung or locked database is
then an error the caller treats as transient, never a thread held for good.
"""

import shutil
from pathlib import Path

import peewee

from directory_api import models
from directory_api.errors import first_line
from directory_api.settings import split_database_url

# Seconds any one statement may take, lock waits included (serve and work).
TIMEOUT = 10.0
# Locks are given up sooner, so a lock wait is named as one in the error.
LOCK_SHARE = 0.5

# serve and work share one SQLite file: WAL lets readers run beside the one
# writer, and the busy timeout makes a writer wait instead of failing at once.
SQLITE_PRAGMAS = {
    "journal_mode": "wal",
    "busy_timeout": int(TIMEOUT * 1000),
    "foreign_keys": 1,
    "synchronous": "normal",
}
SQLITE_FIELD_TYPES = {"JSON": "TEXT"}
POSTGRES_FIELD_TYPES = {"JSON": "JSONB"}
POSTGRES_CONNECT_TIMEOUT = 5
# statement_timeout is the server's: a server gone silent is noticed by the client's TCP stack instead
# (about 10 s of silence, and sent data left unacknowledged for 10 s).
POSTGRES_KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 4,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,
}

# The database as callers hold it: the models' DatabaseProxy (the one database of a process), or a Database.
Handle = peewee.Database | peewee.DatabaseProxy

# What peewee raises when the database is down, unreachable, locked, read-only or not migrated: the one
# definition of "the database is unavailable now", which callers treat as transient.
DATABASE_ERRORS = (peewee.DatabaseError, peewee.InterfaceError)

# A write that writes nothing: it takes the enrolment table's write lock and passes every check a real
# insert passes (read-only file or transaction, hot standby, query_only, privileges), so it fails when an
# enrolment would, without a row, a sequence value or a byte on disk.
WRITE_PROBE = (
    "INSERT INTO enrolment (created, data, sqs_message_id) "
    "SELECT created, data, sqs_message_id FROM enrolment WHERE 1 = 0"
)
# The probe writes nothing, so it cannot see a full disk; SQLite needs a few pages free for a batch.
MIN_FREE_BYTES = 1 << 20


class PostgresqlDatabase(peewee.PostgresqlDatabase):
    """PostgreSQL with statement_timeout and lock_timeout set on every connection it opens."""

    def __init__(self, *args, timeout: float | None, **kwargs):
        self.timeout = timeout
        super().__init__(*args, **kwargs)

    def _initialize_connection(self, conn):
        # SET rather than libpq's `options`, which connection poolers such as PgBouncer refuse.
        if self.timeout is None:
            return
        with conn.cursor() as cursor:
            cursor.execute(
                "SET statement_timeout = %s; SET lock_timeout = %s",
                (int(self.timeout * 1000), int(self.timeout * LOCK_SHARE * 1000)),
            )


def database_for(url: str, *, timeout: float | None = TIMEOUT) -> peewee.Database:
    """A Database for a validated DATABASE_URL; nothing is connected yet.

    `timeout` bounds each statement in seconds; None leaves PostgreSQL's own
    (for `migrate`, whose steps may rightly run long). SQLite's wait for the
    write lock is always bounded.
    """
    parts = split_database_url(url)
    if parts.scheme == "sqlite":
        return _sqlite(parts.name, timeout or TIMEOUT)
    login = {"user": parts.user, "password": parts.password, "host": parts.host, "port": parts.port}
    return _postgres(parts.name, login, timeout)


def _sqlite(path: str, timeout: float, thread_safe: bool = True) -> peewee.SqliteDatabase:
    return peewee.SqliteDatabase(
        path,
        pragmas={**SQLITE_PRAGMAS, "busy_timeout": int(timeout * 1000)},
        field_types=SQLITE_FIELD_TYPES,
        # Every transaction takes the write lock at BEGIN, so two writers
        # queue on the busy timeout rather than deadlock on an upgrade.
        lock_type="IMMEDIATE",
        timeout=timeout,
        thread_safe=thread_safe,
        # One connection for every thread (one_connection) is used by one thread at a time: its callers lock.
        check_same_thread=thread_safe,
    )


def _postgres(name: str, login: dict, timeout: float | None, thread_safe: bool = True) -> PostgresqlDatabase:
    return PostgresqlDatabase(
        name,
        **login,
        timeout=timeout,
        thread_safe=thread_safe,
        field_types=POSTGRES_FIELD_TYPES,
        connect_timeout=POSTGRES_CONNECT_TIMEOUT,
        application_name="directory-api",
        **POSTGRES_KEEPALIVES,
    )


def one_connection(database: peewee.Database, *, timeout: float) -> peewee.Database:
    """Another Database on what `database` reaches, bounded by `timeout`, whose one connection all threads share.

    Its callers take turns (a lock of their own); nothing is connected yet.
    """
    if isinstance(database, peewee.SqliteDatabase):
        return _sqlite(database.database, timeout, thread_safe=False)
    login = {key: database.connect_params.get(key) for key in ("user", "password", "host", "port")}
    return _postgres(database.database, login, timeout, thread_safe=False)


def bound() -> peewee.Database | None:
    """The Database the models are bound to (db.bind), or None before."""
    return models.database.obj


def behind(database: Handle) -> peewee.Database:
    """`database`, or the Database a DatabaseProxy stands for."""
    return database.obj if isinstance(database, peewee.DatabaseProxy) else database


def is_postgres(database: Handle) -> bool:
    return isinstance(behind(database), peewee.PostgresqlDatabase)


def drop_connection(database: Handle) -> None:
    """Close this thread's connection after an error (unless in a transaction), so the next call opens a fresh one."""
    try:
        if not database.in_transaction():
            database.close()
    except DATABASE_ERRORS:
        pass  # closing a dead connection can fail too; it is gone either way


def cancel(database: Handle, connection) -> None:
    """Cut short the statement another thread runs on `connection`: it fails, and its transaction rolls back.

    It may block (PostgreSQL's cancel opens a connection of its own): call it off the thread that must not wait.
    """
    try:
        if is_postgres(database):
            connection.cancel()
        else:
            connection.interrupt()
    except Exception:  # best effort: a statement not cut short still ends at its timeout
        pass


def write_problem(database: Handle) -> str | None:
    """Why an enrolment could not be written now (None: it could), found without writing anything.

    Raises the driver's error when the connection itself is lost, rather
    than calling that a refusal.
    """
    if isinstance(behind(database), peewee.SqliteDatabase):
        folder = Path(database.database).resolve().parent
        free = free_bytes(folder)
        if free < MIN_FREE_BYTES:
            return f"the disk holding {folder} is full ({free} bytes free)"
    try:
        database.execute_sql(WRITE_PROBE)
    except DATABASE_ERRORS as error:
        if not database.is_connection_usable():
            raise
        return first_line(error)
    return None


def free_bytes(folder: Path) -> int:
    return shutil.disk_usage(folder).free


def bind(url: str, *, timeout: float | None = TIMEOUT) -> peewee.Database:
    """Create the Database for `url` and point the models at it."""
    database = database_for(url, timeout=timeout)
    models.database.initialize(database)
    return database
