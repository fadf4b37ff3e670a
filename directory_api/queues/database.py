"""The database backend (QUEUE_BACKEND=database): a queue table in the application's own database.

A receive claims messages by moving their `visible_at` past the visibility
timeout, in one statement: UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP
LOCKED) RETURNING on PostgreSQL, so several workers share a queue without
waiting on each other; SQLite runs one writer at a time, so the same UPDATE
without the lock clause is enough there.
A claim's receipt is "<id>:<receive count>", so a worker whose claim expired
cannot delete or release the message another worker has claimed since.
"""

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence

import peewee

from directory_api import vendored_internals
from directory_api.db import DATABASE_ERRORS, drop_connection, is_postgres
from directory_api.errors import first_line
from directory_api.models import QueueMessage
from directory_api.queues import Depth, Message, QueueUnavailable, poll_intervals
from directory_api.settings import Settings

NOT_UTF8 = ("The queue row's body is not UTF-8 (byte {start}); it was not written by this service. "
            "The set-aside copy shows the bytes that are not UTF-8 as \\xNN escapes.")
UNREADABLE_ATTRIBUTES = "The queue row's attributes are not a UTF-8 JSON object; it was not written by this service."

# Wakes every receive waiting in this process on a queue name, after a local
# send (serve and work in one `dev` process) or an interrupt.
_wakeups: dict[str, threading.Event] = {}
_wakeups_lock = threading.Lock()


def wakeup_for(name: str) -> threading.Event:
    with _wakeups_lock:
        return _wakeups.setdefault(name, threading.Event())


def receipt_of(message_id: str, receive_count: int) -> str:
    return f"{message_id}:{receive_count}"


def parse_receipt(receipt: str) -> tuple[str, int]:
    message_id, _, count = receipt.rpartition(":")
    return message_id, int(count)


def to_message(message_id: str, receive_count: int, raw_attributes, raw_body) -> Message:
    """A claimed row as a Message; one that is not as this service writes it is marked unreadable."""
    body, unreadable = bytes_of(raw_body), ""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        text, unreadable = body.decode("utf-8", "backslashreplace"), NOT_UTF8.format(start=error.start)
    try:
        attributes = json.loads(bytes_of(raw_attributes).decode("utf-8")) if raw_attributes is not None else {}
    except ValueError:  # not UTF-8, or not JSON
        attributes = None
    if not isinstance(attributes, dict):
        attributes, unreadable = {}, unreadable or UNREADABLE_ATTRIBUTES
    return Message(
        id=message_id, body=text, receipt=receipt_of(message_id, receive_count),
        receive_count=receive_count, attributes=attributes, unreadable=unreadable,
    )


def bytes_of(raw: bytes | memoryview | str) -> bytes:
    return raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else bytes(raw)


class DatabaseQueue:
    """One named queue in the queue_message table; the models must be bound (db.bind) first."""

    def __init__(self, settings: Settings, name: str, *, clock: Callable[[], float] = time.time):
        self.name = name
        self.visibility_timeout = settings.sqs_visibility_timeout
        self.clock = clock
        self.database = QueueMessage._meta.database
        self.wakeup = wakeup_for(name)
        self._interrupts = 0  # bumped by interrupt(); a receive that sees it change returns

    @contextlib.contextmanager
    def unavailable_on_error(self, action: str) -> Iterator[None]:
        """Database errors become QueueUnavailable; a broken connection is dropped so the next call reconnects."""
        try:
            yield
        except DATABASE_ERRORS as error:
            drop_connection(self.database)
            raise QueueUnavailable(f"database queue {self.name}: {action} failed: {first_line(error)}") from error

    def _on_postgres(self) -> bool:
        return is_postgres(self.database)

    def ensure_exists(self) -> None:
        """The queue table is part of the schema (migrate); check that it answers."""
        with self.unavailable_on_error("open"):
            QueueMessage.select(QueueMessage.id).limit(1).execute()

    def send(self, body: str, attributes: Mapping[str, str] | None = None) -> str:
        message_id = str(uuid.uuid4())
        with self.unavailable_on_error("send"):
            QueueMessage.insert(
                id=message_id, queue=self.name, body=body, attributes=dict(attributes or {}),
                visible_at=self.clock(),
            ).execute()
        self.wakeup.set()
        return message_id

    def send_batch(
        self, bodies: Sequence[str], attributes: Sequence[Mapping[str, str] | None] | None = None
    ) -> list[str | None]:
        ids: list[str | None] = [str(uuid.uuid4()) for _ in bodies]
        now = self.clock()
        rows = [
            {"id": message_id, "queue": self.name, "body": body, "attributes": dict(extra or {}), "visible_at": now}
            for message_id, body, extra in zip(ids, bodies, attributes or [None] * len(bodies), strict=True)
        ]
        with self.unavailable_on_error("send"), self.database.atomic():
            QueueMessage.insert_many(rows).execute()
        self.wakeup.set()
        return ids

    def receive(self, max_messages: int, wait_seconds: float) -> list[Message]:
        deadline = time.monotonic() + wait_seconds
        intervals = poll_intervals()
        interrupts = self._interrupts
        while True:
            # Cleared before the claim, so a send during it still wakes the wait below.
            self.wakeup.clear()
            messages = self._claim(max_messages)
            remaining = deadline - time.monotonic()
            if messages or remaining <= 0 or self._interrupts != interrupts:
                return messages
            self.wakeup.wait(min(next(intervals), remaining))

    def _claim(self, max_messages: int) -> list[Message]:
        now = self.clock()
        claimable = (
            QueueMessage.select(QueueMessage.id)
            .where((QueueMessage.queue == self.name) & (QueueMessage.visible_at <= now))
            .order_by(QueueMessage.visible_at)
            .limit(max_messages)
        )
        if self._on_postgres():
            claimable = claimable.for_update(skip_locked=True)
        # Body and attributes come back raw (bytes on SQLite) and are decoded
        # here: a row another tool wrote in another encoding must not fail the
        # fetch, which would leave the claim's statement, and SQLite's write
        # lock, open.
        raw = "TEXT" if self._on_postgres() else "BLOB"
        claim = (
            QueueMessage.update(visible_at=now + self.visibility_timeout, receive_count=QueueMessage.receive_count + 1)
            .where(QueueMessage.id.in_(claimable))
            .returning(
                QueueMessage.id, QueueMessage.receive_count,
                peewee.Cast(QueueMessage.attributes, raw), peewee.Cast(QueueMessage.body, raw),
            )
        )
        with self.unavailable_on_error("receive"):
            cursor = self.database.execute(claim)
            try:
                # As peewee's own execute: driver errors become peewee's.
                with vendored_internals.peewee_errors():
                    rows = cursor.fetchall()
            finally:
                cursor.close()
        return [to_message(*row) for row in rows]

    def _claimed(self, messages: Sequence[Message]) -> peewee.Expression:
        """The rows these receipts still hold (a newer claim makes a receipt stale)."""
        condition = None
        for message in messages:
            message_id, count = parse_receipt(message.receipt)
            one = (QueueMessage.id == message_id) & (QueueMessage.receive_count == count)
            condition = one if condition is None else condition | one
        return (QueueMessage.queue == self.name) & condition

    def delete(self, messages: Sequence[Message]) -> list[Message]:
        if not messages:
            return []
        with self.unavailable_on_error("delete"), self.database.atomic():
            deleted = QueueMessage.delete().where(self._claimed(messages)).execute()
            if deleted == len(messages):
                return []
            # Still there: claimed again since (stale receipt), as SQS may refuse it too.
            left = {
                row.id
                for row in QueueMessage.select(QueueMessage.id).where(
                    QueueMessage.id.in_([parse_receipt(m.receipt)[0] for m in messages])
                )
            }
        return [message for message in messages if message.id in left]

    def release(self, messages: Sequence[Message]) -> None:
        if not messages:
            return
        with self.unavailable_on_error("release"):
            QueueMessage.update(visible_at=self.clock()).where(self._claimed(messages)).execute()
        self.wakeup.set()

    def extend(self, message: Message, seconds: int) -> None:
        # As SQS: the message stays hidden `seconds` from now.
        with self.unavailable_on_error("extend visibility"):
            QueueMessage.update(visible_at=self.clock() + seconds).where(self._claimed([message])).execute()

    def message_size_limit(self) -> None:
        """A text column: no limit of the queue's own."""
        return None

    def interrupt(self) -> None:
        self._interrupts += 1
        self.wakeup.set()

    def depth(self) -> Depth:
        now = self.clock()
        with self.unavailable_on_error("count"):
            # Two counts on the (queue, visible_at) index.
            mine = QueueMessage.select().where(QueueMessage.queue == self.name)
            waiting = mine.where(QueueMessage.visible_at <= now).count()
            in_flight = mine.where(QueueMessage.visible_at > now).count()
        return Depth(waiting, in_flight)
