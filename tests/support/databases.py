"""Behind the service's back: reading and writing its database outside peewee."""

import contextlib
import sqlite3

import psycopg2


def pg_rows(url: str, sql: str) -> list[tuple]:
    """The rows `sql` gives on the PostgreSQL database at `url`, on a connection of its own."""
    with contextlib.closing(psycopg2.connect(url, connect_timeout=5)) as connection, connection.cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetchall()


def insert_raw_row(database_url: str, message_id: str, body: bytes, attributes: bytes = b"{}",
                   queue: str = "enrolment") -> None:
    """A queue row as another tool might write it, bytes and all, outside peewee."""
    connection = sqlite3.connect(database_url.removeprefix("sqlite:///"))
    with connection:
        connection.execute(
            "INSERT INTO queue_message (id, queue, body, attributes, visible_at, receive_count, created)"
            " VALUES (?, ?, CAST(? AS TEXT), CAST(? AS TEXT), 0, 0, '2026-01-01 00:00:00')",
            (message_id, queue, body, attributes),
        )
    connection.close()
