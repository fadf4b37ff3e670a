"""The queue interface that serve and work use, whatever the backend (QUEUE_BACKEND)."""

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Protocol

from directory_api.settings import Settings


@dataclasses.dataclass(frozen=True)
class Message:
    """A received message; `receipt` is what delete/release/extend need to name it."""

    id: str
    body: str
    receipt: str
    receive_count: int = 1
    attributes: Mapping[str, str] = dataclasses.field(default_factory=dict)


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


class Queue(Protocol):
    name: str

    def ensure_exists(self) -> None:
        """Create the queue when missing; raise QueueUnavailable when the backend does not answer."""

    def send(self, body: str, attributes: Mapping[str, str] | None = None) -> str:
        """Put one message on the queue and return its message id."""

    def send_batch(self, bodies: Sequence[str]) -> list[str | None]:
        """Put several messages on the queue; the id of each, or None for one the queue refused."""

    def receive(self, max_messages: int, wait_seconds: float) -> list[Message]:
        """Up to max_messages, waiting at most wait_seconds for the first; hidden for the visibility timeout."""

    def delete(self, messages: Sequence[Message]) -> list[Message]:
        """Delete messages for good; return the ones that could not be deleted."""

    def release(self, messages: Sequence[Message]) -> None:
        """Hand messages back at once (visibility 0), for another receive."""

    def extend(self, message: Message, seconds: int) -> None:
        """Keep a message hidden `seconds` longer while its handling runs long."""

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
