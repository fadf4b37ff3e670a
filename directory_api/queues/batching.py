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
    __slots__ = ("attributes", "body", "done", "result", "size", "wake")

    def __init__(self, body: str, attributes: Mapping[str, str] | None):
        self.body = body
        self.attributes = attributes
        self.size = message_size(body, attributes)
        self.done = False
        self.result: str | Exception | None = None  # once done: the message id, or why the queue did not take it
        # Held until its thread may go on: its entry is done, or it is to send the next batch.
        self.wake = threading.Lock()
        self.wake.acquire()


class GroupSender:
    """Wraps a Queue so that `send` is batched across threads; every other call goes straight through.

    One thread at a time sends; when its batch is answered it wakes exactly
    the threads of that batch, and the oldest waiting thread to send the next
    one. A shared condition woke every waiting thread for each batch, only for
    most to sleep again: a sixth of serve's CPU under 16 connections (py-spy).
    """

    def __init__(self, queue: Queue):
        self.queue = queue
        self._pending: list[_Entry] = []
        self._sending = False  # while True, one thread sends or has been woken to send; none other starts
        self._lock = threading.Lock()

    def __getattr__(self, name: str):
        return getattr(self.queue, name)

    def send(self, body: str, attributes: Mapping[str, str] | None = None) -> str:
        """The message id of `body` once the queue holds it; QueueUnavailable when it does not."""
        entry = _Entry(body, attributes)
        with self._lock:
            self._pending.append(entry)
            waits, self._sending = self._sending, True
        if waits:
            entry.wake.acquire()
        if not entry.done:
            # This thread sends now, and its entry is the oldest pending one, so it is in the batch.
            self._send_next_batch()
        if isinstance(entry.result, str):
            return entry.result
        raise entry.result or RuntimeError("a batched send ended without an answer")

    def _send_next_batch(self) -> None:
        """Send the oldest pending entries; wake their threads, and the next sender when entries remain."""
        with self._lock:
            count = _fitting(self._pending)
            batch, self._pending = self._pending[:count], self._pending[count:]
        interrupted = QueueUnavailable(f"queue {self.queue.name}: the send was interrupted")
        results: list[str | Exception] = [interrupted] * len(batch)
        try:
            results = _send(self.queue, batch)
        finally:
            with self._lock:
                next_sender = self._pending[0] if self._pending else None
                self._sending = next_sender is not None
            for entry, result in zip(batch, results, strict=True):
                entry.result, entry.done = result, True
                if entry.wake.locked():
                    entry.wake.release()
            if next_sender is not None:
                next_sender.wake.release()


def _fitting(pending: list[_Entry]) -> int:
    """How many of the oldest entries one batch takes: at most BATCH_LIMIT and BATCH_BYTES_LIMIT, at least one."""
    count, size = 0, 0
    for entry in pending[:BATCH_LIMIT]:
        size += entry.size
        if count and size > BATCH_BYTES_LIMIT:
            break
        count += 1
    return count


def _send(queue: Queue, batch: list[_Entry]) -> list[str | Exception]:
    """The message id of each entry the queue took, the error for the others."""
    try:
        bodies = [entry.body for entry in batch]
        if any(entry.attributes for entry in batch):
            ids = queue.send_batch(bodies, [entry.attributes for entry in batch])
        else:
            ids = queue.send_batch(bodies)
    except Exception as error:  # handed to each waiting request thread
        return [error] * len(batch)
    refused = QueueUnavailable(f"queue {queue.name}: the queue refused the message")
    return [message_id or refused for message_id in ids]
