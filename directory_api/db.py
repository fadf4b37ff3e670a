"""The peewee Database named by DATABASE_URL, and binding the models to it."""

import peewee

from directory_api import models
from directory_api.settings import split_database_url

# serve and work share one SQLite file: WAL lets readers run beside the one
# writer, and the busy timeout makes a writer wait instead of failing at once.
SQLITE_PRAGMAS = {
    "journal_mode": "wal",
    "busy_timeout": 10_000,
    "foreign_keys": 1,
    "synchronous": "normal",
}
SQLITE_FIELD_TYPES = {"JSON": "TEXT"}
POSTGRES_FIELD_TYPES = {"JSON": "JSONB"}
POSTGRES_CONNECT_TIMEOUT = 5


def database_for(url: str) -> peewee.Database:
    """A Database for a validated DATABASE_URL; nothing is connected yet."""
    parts = split_database_url(url)
    if parts.scheme == "sqlite":
        return peewee.SqliteDatabase(
            parts.name,
            pragmas=SQLITE_PRAGMAS,
            field_types=SQLITE_FIELD_TYPES,
            # Every transaction takes the write lock at BEGIN, so two writers
            # queue on the busy timeout rather than deadlock on an upgrade.
            lock_type="IMMEDIATE",
            timeout=SQLITE_PRAGMAS["busy_timeout"] / 1000,
        )
    return peewee.PostgresqlDatabase(
        parts.name,
        user=parts.user,
        password=parts.password,
        host=parts.host,
        port=parts.port,
        field_types=POSTGRES_FIELD_TYPES,
        connect_timeout=POSTGRES_CONNECT_TIMEOUT,
        application_name="directory-api",
    )


def is_postgres(database: peewee.Database) -> bool:
    return isinstance(database, peewee.PostgresqlDatabase)


def drop_connection(database: peewee.Database) -> None:
    """Close this thread's connection after an error (unless in a transaction), so the next call opens a fresh one."""
    try:
        if not database.in_transaction():
            database.close()
    except peewee.PeeweeException:
        pass  # closing a dead connection can fail too; it is gone either way


def bind(url: str) -> peewee.Database:
    """Create the Database for `url` and point the models at it."""
    database = database_for(url)
    models.database.initialize(database)
    return database
