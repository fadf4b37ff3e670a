"""The queue interface that serve and work use, whatever the backend (QUEUE_BACKEND)."""

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from typing import Protocol

from directory_api.settings import Settings

# An empty queue is polled at growing intervals, not in a tight loop.
FIRST_POLL_INTERVAL = 0.2
LONGEST_POLL_INTERVAL = 1.0

# The most entries SQS takes in one batch call (send, delete, change visibility) or hands back from one receive.
BATCH_LIMIT = 10
ATTRIBUTE_TYPE = "String"  # the data type every attribute this service sends has


@dataclasses.dataclass(frozen=True)
class Message:
    """A received message; `receipt` is what delete/release/extend need to name it.

    `unreadable` says why the queue could not read the message as it was
    written (then `body` is a copy that any queue can carry); the worker sets
    such a message aside with that reason.
    """

    id: str
    body: str
    receipt: str
    receive_count: int = 1
    attributes: Mapping[str, str] = dataclasses.field(default_factory=dict)
    unreadable: str = ""


# The attribute a set-aside message carries: the id it is saved and reported under, even once re-driven.
ORIGINAL_MESSAGE_ID = "original_message_id"


def original_id(message: Message) -> str:
    """The id a message is saved, deduplicated and reported under: a re-driven one keeps its original id."""
    return message.attributes.get(ORIGINAL_MESSAGE_ID) or message.id


@dataclasses.dataclass(frozen=True)
class Depth:
    """Messages on a queue, as the queue reports them (approximate on SQS)."""

    waiting: int
    in_flight: int


class QueueUnavailable(Exception):
    """The queue cannot be reached or refused the call now; the caller may try again later."""


class MessageRefused(QueueUnavailable):
    """The queue refuses this message itself (too large, a character it cannot carry): sending it again fails again.

    A QueueUnavailable, so a caller that does not tell the two apart still keeps the message and answers "try later".
    """


def poll_intervals() -> Iterator[float]:
    """0.2 s, 0.4 s, 0.8 s, then 1 s for good."""
    interval = FIRST_POLL_INTERVAL
    while True:
        yield interval
        interval = min(interval * 2, LONGEST_POLL_INTERVAL)


def message_size(body: str, attributes: Mapping[str, str] | None = None) -> int:
    """The bytes SQS counts for a message: the body, and each attribute's name, data type and value, in UTF-8."""
    size = len(body.encode("utf-8", "surrogatepass"))
    for name, value in (attributes or {}).items():
        size += len(name.encode("utf-8")) + len(ATTRIBUTE_TYPE) + len(value.encode("utf-8", "surrogatepass"))
    return size


class Queue(Protocol):
    name: str

    def ensure_exists(self) -> None:
        """Create the queue when missing; raise QueueUnavailable when the backend does not answer."""

    def send(self, body: str, attributes: Mapping[str, str] | None = None) -> str:
        """Put one message on the queue and return its message id."""

    def send_batch(
        self, bodies: Sequence[str], attributes: Sequence[Mapping[str, str] | None] | None = None
    ) -> list[str | None]:
        """Put several messages on the queue, each with its attributes when given.

        Return the id of each, or None for one the queue refused.
        """

    def receive(self, max_messages: int, wait_seconds: float) -> list[Message]:
        """Up to max_messages, each once, waiting at most wait_seconds for the first.

        Each is hidden for the visibility timeout.
        """

    def delete(self, messages: Sequence[Message]) -> list[Message]:
        """Delete messages for good; return the ones that could not be deleted."""

    def release(self, messages: Sequence[Message]) -> None:
        """Hand messages back at once (visibility 0), for another receive."""

    def extend(self, message: Message, seconds: int) -> None:
        """Keep a message hidden `seconds` longer while its handling runs long."""

    def message_size_limit(self) -> int | None:
        """The most bytes a message may have (see message_size), or None when the backend has no such limit."""

    def interrupt(self) -> None:
        """Cut short a receive waiting in another thread, where the backend can (SQS cannot)."""

    def depth(self) -> Depth:
        """Messages waiting and in flight (received, not yet deleted or back)."""


def open_queue(settings: Settings, name: str) -> Queue:
    """The queue called `name` on the backend the settings choose."""
    if settings.queue_backend == "sqs":
        from directory_api.queues.sqs import SqsQueue

        return SqsQueue(settings, name)
    from directory_api.queues.database import DatabaseQueue

    return DatabaseQueue(settings, name)


def open_enrolment_queues(settings: Settings) -> tuple[Queue, Queue]:
    """The enrolment queue and the invalid queue the settings name; nothing is asked of the backend yet."""
    return (open_queue(settings, settings.required("SQS_ENROLMENT_QUEUE_NAME")),
            open_queue(settings, settings.required("SQS_INVALID_ENROLMENT_QUEUE_NAME")))


def open_pipeline(settings: Settings) -> tuple[Queue, Queue]:
    """What `work`, `status` and `redrive` run on: the models bound to DATABASE_URL (db.bind), and both queues.

    Nothing is connected yet: the worker waits until each answers, the commands report what does not.
    """
    from directory_api import db

    db.bind(settings.required("DATABASE_URL"))  # where the database backend keeps its queues, too
    return open_enrolment_queues(settings)
