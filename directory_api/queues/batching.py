"""Group sending: concurrent sends from request threads share one SendMessageBatch.

Like a database's group commit, it adds no wait of its own: the first sender
sends at once, and whoever arrives while that call is on the wire is sent
together with the others in the next call, up to ten a batch and up to
BATCH_BYTES_LIMIT in all. Under one client nothing changes; under many, one
round trip serves up to ten requests.
"""

import threading
from collections.abc import Mapping

from directory_api.queues import BATCH_LIMIT, Queue, QueueUnavailable, message_size

# SQS refuses a whole SendMessageBatch (BatchRequestTooLong) whose messages add up to more than
# 1 MiB, and more than 256 KiB before 2025 (still the limit of some SQS-compatible servers).
# 256 KiB holds on both; enrolments are a few hundred bytes, so real batches never split on it.
BATCH_BYTES_LIMIT = 256 * 1024


class _Entry:
    __slots__ = ("attributes", "body", "done", "error", "message_id", "size")

    def __init__(self, body: str, attributes: Mapping[str, str] | None):
        self.body = body
        self.attributes = attributes
        self.size = message_size(body, attributes)
        self.done = False
        self.message_id: str | None = None
        self.error: Exception | None = None


class GroupSender:
    """Wraps a Queue so that `send` is batched across threads; every other call goes straight through."""

    def __init__(self, queue: Queue):
        self.queue = queue
        self._pending: list[_Entry] = []
        self._sending = False
        self._changed = threading.Condition()

    def __getattr__(self, name: str):
        return getattr(self.queue, name)

    def send(self, body: str, attributes: Mapping[str, str] | None = None) -> str:
        """The message id of `body` once the queue holds it; QueueUnavailable when it does not."""
        entry = _Entry(body, attributes)
        with self._changed:
            self._pending.append(entry)
            while not entry.done:
                if self._sending:
                    self._changed.wait()
                else:
                    self._send_next_batch()
        if entry.error is not None:
            raise entry.error
        return entry.message_id

    def _send_next_batch(self) -> None:
        """Send the oldest pending entries, with the lock released while the call is on the wire."""
        count = _fitting(self._pending)
        batch, self._pending = self._pending[:count], self._pending[count:]
        self._sending = True
        self._changed.release()
        try:
            results = _send(self.queue, batch)
        finally:
            self._changed.acquire()
            self._sending = False
        for entry, (message_id, error) in zip(batch, results):
            entry.message_id, entry.error, entry.done = message_id, error, True
        self._changed.notify_all()


def _fitting(pending: list[_Entry]) -> int:
    """How many of the oldest entries one batch takes: at most BATCH_LIMIT and BATCH_BYTES_LIMIT, at least one."""
    count, size = 0, 0
    for entry in pending[:BATCH_LIMIT]:
        size += entry.size
        if count and size > BATCH_BYTES_LIMIT:
            break
        count += 1
    return count


def _send(queue: Queue, batch: list[_Entry]) -> list[tuple[str | None, Exception | None]]:
    """(message id, None) for each entry the queue took, (None, error) for the others."""
    try:
        bodies = [entry.body for entry in batch]
        if any(entry.attributes for entry in batch):
            ids = queue.send_batch(bodies, [entry.attributes for entry in batch])
        else:
            ids = queue.send_batch(bodies)
    except Exception as error:  # noqa: BLE001 - handed to each waiting request thread
        return [(None, error)] * len(batch)
    refused = QueueUnavailable(f"queue {queue.name}: the queue refused the message")
    return [(message_id, None if message_id else refused) for message_id in ids]
