"""The Amazon SQS backend (QUEUE_BACKEND=sqs), or any SQS-compatible endpoint."""

import collections
import contextlib
import logging
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence

import boto3
import botocore.config
import botocore.exceptions
import botocore.session

from directory_api.queues import BATCH_LIMIT, Depth, Message, MessageRefused, QueueUnavailable
from directory_api.queues.sqs_direct import DirectClient
from directory_api.settings import Settings

log = logging.getLogger(__name__)

# Fail fast when the endpoint is down (serve answers 503 at once, the worker
# backs off by itself), but keep the read timeout above the longest long poll.
CLIENT_CONFIG = botocore.config.Config(
    connect_timeout=2,
    read_timeout=30,
    retries={"mode": "standard", "total_max_attempts": 2},
    max_pool_connections=32,
)

# What a queue's MaximumMessageSize was before 2025, and still is on many
# queues created then; assumed when the attribute cannot be read.
OLD_MESSAGE_SIZE_LIMIT = 262_144

# The codes with which SQS refuses a message itself: too long, or a character
# outside the XML set it carries. Another try fails the same way.
REFUSED_MESSAGE_CODES = ("InvalidParameterValue", "InvalidMessageContents")

# The most message ids whose receives a queue counts itself (see ReceiveCounts).
COUNTED_IDS = 10_000

_clients: dict[tuple[str, str | None], DirectClient] = {}
_clients_lock = threading.Lock()


def client_for(settings: Settings) -> DirectClient:
    """The one SQS client of this process for the settings' endpoint and region.

    boto3 clients are thread-safe but creating them is not, so every queue and
    thread shares the one made here, under a lock.
    """
    key = (settings.sqs_region, settings.sqs_endpoint_url)
    with _clients_lock:
        if key not in _clients:
            _clients[key] = new_client(settings)
        return _clients[key]


def new_client(settings: Settings) -> DirectClient:
    """A boto3 SQS client for the settings; its enrolments' calls go direct (sqs_direct.py) unless SQS_DIRECT=false."""
    core = botocore.session.Session()
    session = boto3.session.Session(botocore_session=core)
    client = session.client(
        "sqs", region_name=settings.sqs_region, endpoint_url=settings.sqs_endpoint_url, config=CLIENT_CONFIG
    )
    return DirectClient(client, session.get_credentials(), ca_bundle=core.get_config_variable("ca_bundle"),
                        direct=settings.sqs_direct)


@contextlib.contextmanager
def unavailable_on_error(action: str, queue_name: str) -> Iterator[None]:
    """Turn any botocore failure (connection, throttling, 5xx, refused call) into QueueUnavailable."""
    try:
        yield
    except botocore.exceptions.ClientError as error:
        code = error.response.get("Error", {}).get("Code", "error")
        if action == "send" and code in REFUSED_MESSAGE_CODES:
            reason = error.response.get("Error", {}).get("Message", "")
            raise MessageRefused(f"SQS queue {queue_name}: {action} refused: {code}: {reason}") from error
        raise QueueUnavailable(f"SQS queue {queue_name}: {action} failed: {code}") from error
    except botocore.exceptions.BotoCoreError as error:
        raise QueueUnavailable(f"SQS queue {queue_name}: {action} failed: {error}") from error


def chunks(items: Sequence, size: int = BATCH_LIMIT) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def message_attributes(attributes: Mapping[str, str] | None) -> dict:
    return {name: {"DataType": "String", "StringValue": value} for name, value in (attributes or {}).items()}


def to_message(raw: Mapping, counts: "ReceiveCounts") -> Message:
    """A received message; its receive count is SQS's own, or this process's where the endpoint gives none."""
    approximate = raw.get("Attributes", {}).get("ApproximateReceiveCount")
    return Message(
        id=raw["MessageId"],
        body=raw["Body"],
        receipt=raw["ReceiptHandle"],
        receive_count=int(approximate) if approximate is not None else counts.received(raw["MessageId"]),
        attributes={
            name: value.get("StringValue", "") for name, value in raw.get("MessageAttributes", {}).items()
        },
    )


class ReceiveCounts:
    """How often this process received each message, for endpoints that omit ApproximateReceiveCount.

    Without a count the max-receive rule would never apply and a poison
    message would loop forever. A deleted message is forgotten, and past
    `limit` ids the one received longest ago, so memory stays bounded. The
    count is per process: with several workers a message may be received
    more often before one of them sets it aside.
    """

    def __init__(self, limit: int = COUNTED_IDS):
        self.limit = limit
        self._counts: collections.OrderedDict[str, int] = collections.OrderedDict()
        self._lock = threading.Lock()

    def received(self, message_id: str) -> int:
        """Count one more receive of the message; the count so far."""
        with self._lock:
            count = self._counts.pop(message_id, 0) + 1
            self._counts[message_id] = count
            if len(self._counts) > self.limit:
                self._counts.popitem(last=False)
        return count

    def forget(self, message_ids: Iterable[str]) -> None:
        with self._lock:
            for message_id in message_ids:
                self._counts.pop(message_id, None)


def is_missing_queue(error: botocore.exceptions.ClientError) -> bool:
    code = error.response.get("Error", {}).get("Code", "")
    return code in ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist")


class SqsQueue:
    """One SQS queue, found (or created) by name on first use."""

    def __init__(self, settings: Settings, name: str, client=None):
        self.name = name
        self.visibility_timeout = settings.sqs_visibility_timeout
        self.client = client or client_for(settings)
        self._url: str | None = None
        self._size_limit: int | None = None
        self.receive_counts = ReceiveCounts()

    @property
    def url(self) -> str:
        if self._url is None:
            self._url = self._get_or_create()
        return self._url

    def ensure_exists(self) -> None:
        self._url = self._get_or_create()

    def _get_or_create(self) -> str:
        """The queue's URL, the queue created when it is missing."""
        with unavailable_on_error("get or create", self.name):
            try:
                return self.client.get_queue_url(QueueName=self.name)["QueueUrl"]
            except botocore.exceptions.ClientError as error:
                if not is_missing_queue(error):
                    raise
                log.info("creating SQS queue %s", self.name)
                return self.client.create_queue(
                    QueueName=self.name,
                    Attributes={"VisibilityTimeout": str(self.visibility_timeout)},
                )["QueueUrl"]

    def send(self, body: str, attributes: Mapping[str, str] | None = None) -> str:
        with unavailable_on_error("send", self.name):
            response = self.client.send_message(
                QueueUrl=self.url, MessageBody=body, MessageAttributes=message_attributes(attributes)
            )
        return response["MessageId"]

    def send_batch(
        self, bodies: Sequence[str], attributes: Sequence[Mapping[str, str] | None] | None = None
    ) -> list[str | None]:
        """Send several messages; the id of each, or None for those the queue refused."""
        ids: list[str | None] = []
        for chunk in chunks(list(zip(bodies, attributes or [None] * len(bodies), strict=True))):
            entries = []
            for index, (body, extra) in enumerate(chunk):
                entry = {"Id": str(index), "MessageBody": body}
                if extra:
                    entry["MessageAttributes"] = message_attributes(extra)
                entries.append(entry)
            with unavailable_on_error("send", self.name):
                response = self.client.send_message_batch(QueueUrl=self.url, Entries=entries)
            sent = {entry["Id"]: entry["MessageId"] for entry in response.get("Successful", [])}
            ids.extend(sent.get(str(index)) for index in range(len(chunk)))
        return ids

    def receive(self, max_messages: int, wait_seconds: float) -> list[Message]:
        with unavailable_on_error("receive", self.name):
            response = self.client.receive_message(
                QueueUrl=self.url,
                MaxNumberOfMessages=max_messages,
                WaitTimeSeconds=int(wait_seconds),
                MessageSystemAttributeNames=["ApproximateReceiveCount"],
                MessageAttributeNames=["All"],
            )
        # SQS may hand out one message twice in a response: count and handle it
        # once, by the receipt of the last copy (the one a delete surely takes).
        raws = {raw["MessageId"]: raw for raw in response.get("Messages", [])}
        return [to_message(raw, self.receive_counts) for raw in raws.values()]

    def delete(self, messages: Sequence[Message]) -> list[Message]:
        failed: list[Message] = []
        for chunk in chunks(messages):
            entries = [{"Id": str(index), "ReceiptHandle": m.receipt} for index, m in enumerate(chunk)]
            with unavailable_on_error("delete", self.name):
                response = self.client.delete_message_batch(QueueUrl=self.url, Entries=entries)
            # The batch answers 200 even when entries failed: only `Failed` says so.
            for entry in response.get("Failed", []):
                message = chunk[int(entry["Id"])]
                log.warning("SQS queue %s: message %s not deleted: %s", self.name, message.id, entry.get("Code"))
                failed.append(message)
        self.receive_counts.forget(message.id for message in messages if message not in failed)
        return failed

    def release(self, messages: Sequence[Message]) -> None:
        for chunk in chunks(messages):
            entries = [
                {"Id": str(index), "ReceiptHandle": m.receipt, "VisibilityTimeout": 0}
                for index, m in enumerate(chunk)
            ]
            with unavailable_on_error("release", self.name):
                self.client.change_message_visibility_batch(QueueUrl=self.url, Entries=entries)

    def extend(self, message: Message, seconds: int) -> None:
        with unavailable_on_error("extend visibility", self.name):
            self.client.change_message_visibility(
                QueueUrl=self.url, ReceiptHandle=message.receipt, VisibilityTimeout=seconds
            )

    def message_size_limit(self) -> int:
        """The queue's MaximumMessageSize, read once; the old 256 KiB default when it cannot be read."""
        if self._size_limit is None:
            try:
                with unavailable_on_error("read attributes", self.name):
                    attributes = self.client.get_queue_attributes(
                        QueueUrl=self.url, AttributeNames=["MaximumMessageSize"]
                    )["Attributes"]
                self._size_limit = int(attributes["MaximumMessageSize"])
            except (QueueUnavailable, KeyError, ValueError) as error:
                log.warning("SQS queue %s: MaximumMessageSize unknown (%s); assuming %d bytes",
                            self.name, error, OLD_MESSAGE_SIZE_LIMIT)
                self._size_limit = OLD_MESSAGE_SIZE_LIMIT
        return self._size_limit

    def interrupt(self) -> None:
        """A long poll cannot be cut short on SQS: its messages come back after the visibility timeout."""

    def depth(self) -> Depth:
        with unavailable_on_error("get attributes", self.name):
            attributes = self.client.get_queue_attributes(
                QueueUrl=self.url,
                AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
            )["Attributes"]
        return Depth(
            int(attributes["ApproximateNumberOfMessages"]), int(attributes["ApproximateNumberOfMessagesNotVisible"])
        )

