"""A fast in-memory SQS-compatible endpoint (the JSON protocol botocore 1.44 speaks), for benchmarks.

Why not moto: moto_server is a faithful SQS, but far too slow to measure
`serve` against; the benchmark would measure moto. On the 2-core benchmark
machine (shared with other work), both were measured once, when the stub was
written:

    moto_server:  26-37 SendMessage/s   (one boto3 client, 1,000 messages)
    this stub:    550-615 SendMessage/s (the same; boto3's own client CPU bounds it)
    this stub:    10,900-15,400 SendMessage/s raw (pre-built requests on 8
                  keep-alive connections), 60-75 us of stub CPU per message

It speaks the JSON protocol (POST /, X-Amz-Target: AmazonSQS.<Action>,
application/x-amz-json-1.0) and implements what serve, work and the
benchmarks use: CreateQueue, GetQueueUrl, GetQueueAttributes, PurgeQueue,
SendMessage(Batch), ReceiveMessage (long poll, MaxNumberOfMessages,
VisibilityTimeout, ApproximateReceiveCount, MessageAttributes),
DeleteMessage(Batch), ChangeMessageVisibility(Batch). Errors carry the JSON
`__type` and the `x-amzn-query-error` header as SQS does, so botocore raises
`client.exceptions.QueueDoesNotExist` with the legacy code
`AWS.SimpleQueueService.NonExistentQueue`. Signatures are not checked.

`GET /_stub/queues/NAME` answers the ids of every message on a queue (visible
or in flight) without receiving them, so a benchmark can check what arrived.

Run: python scripts/sqs_stub.py --port 9324 (one process, one asyncio loop).
"""

import argparse
import asyncio
import contextlib
import hashlib
import heapq
import itertools
import json
import struct
import time
import uuid
from collections import deque

ACCOUNT = "000000000000"
REGION = "eu-west-1"
MAX_BATCH = 10
MAX_BODY = 1024 * 1024
SWEEP_SECONDS = 0.05  # how often messages whose visibility expired come back


class SqsError(Exception):
    """An error in the JSON protocol's shape: shape name, legacy query code, message."""

    def __init__(self, shape: str, query_code: str, message: str, status: int = 400, fault: str = "Sender"):
        super().__init__(message)
        self.shape, self.query_code, self.message, self.status, self.fault = shape, query_code, message, status, fault


def queue_does_not_exist() -> SqsError:
    return SqsError("QueueDoesNotExist", "AWS.SimpleQueueService.NonExistentQueue",
                    "The specified queue does not exist.")


def md5_hex(text: str) -> str:
    return hashlib.md5(text.encode("utf-8")).hexdigest()  # SQS's own checksum


def md5_of_attributes(attributes: dict) -> str:
    """SQS's MD5OfMessageAttributes: length-prefixed name, type, transport byte, value; names sorted."""
    digest = hashlib.md5()
    for name in sorted(attributes):
        value = attributes[name]
        data_type = value["DataType"]
        for part in (name.encode(), data_type.encode()):
            digest.update(struct.pack("!I", len(part)) + part)
        if "StringValue" in value:
            raw = value["StringValue"].encode()
            digest.update(b"\x01" + struct.pack("!I", len(raw)) + raw)
        else:
            import base64

            raw = base64.b64decode(value.get("BinaryValue", ""))
            digest.update(b"\x02" + struct.pack("!I", len(raw)) + raw)
    return digest.hexdigest()


class Message:
    __slots__ = ("id", "body", "attributes", "sent", "first_received", "receive_count", "receipt", "hidden_until")

    def __init__(self, body: str, attributes: dict):
        self.id = str(uuid.uuid4())
        self.body = body
        self.attributes = attributes
        self.sent = int(time.time() * 1000)
        self.first_received = 0
        self.receive_count = 0
        self.receipt = ""  # the current receipt handle; older ones no longer work
        self.hidden_until = 0.0


class Queue:
    def __init__(self, name: str, url: str, attributes: dict):
        self.name = name
        self.url = url
        self.created = int(time.time())
        self.visibility_timeout = int(attributes.get("VisibilityTimeout", 30))
        self.wait_seconds = int(attributes.get("ReceiveMessageWaitTimeSeconds", 0))
        self.messages: dict[str, Message] = {}
        self.visible: deque[str] = deque()
        self.hidden: list[tuple[float, str, str]] = []  # heap of (until, id, receipt)
        self.waiters: deque[asyncio.Future] = deque()
        self.receipts = itertools.count(1)

    def send(self, body: str, attributes: dict) -> Message:
        message = Message(body, attributes)
        self.messages[message.id] = message
        self.visible.append(message.id)
        self.wake()
        return message

    def wake(self) -> None:
        while self.waiters and self.visible:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    def receive(self, count: int, visibility: int) -> list[Message]:
        now = time.time()
        taken: list[Message] = []
        while self.visible and len(taken) < count:
            message = self.messages.get(self.visible.popleft())
            if message is None or message.hidden_until > now:
                continue  # deleted, or already taken by another receive
            message.receive_count += 1
            message.first_received = message.first_received or int(now * 1000)
            message.receipt = f"{message.id}#{next(self.receipts)}"
            message.hidden_until = now + visibility
            heapq.heappush(self.hidden, (message.hidden_until, message.id, message.receipt))
            taken.append(message)
        return taken

    def find(self, receipt: str) -> Message | None:
        message = self.messages.get(receipt.split("#", 1)[0])
        return message if message is not None and message.receipt == receipt else None

    def delete(self, receipt: str) -> None:
        if "#" not in receipt:
            raise SqsError("ReceiptHandleIsInvalid", "ReceiptHandleIsInvalid",
                           f"The input receipt handle \"{receipt}\" is not a valid receipt handle.")
        # As in SQS, an outdated receipt handle "succeeds" without deleting.
        if self.find(receipt) is not None:
            del self.messages[receipt.split("#", 1)[0]]

    def change_visibility(self, receipt: str, seconds: int) -> None:
        message = self.find(receipt)
        if message is None or message.hidden_until <= time.time():
            raise SqsError("MessageNotInflight", "AWS.SimpleQueueService.MessageNotInflight",
                           "Message is not in flight.")
        if seconds == 0:
            message.hidden_until = 0.0
            self.visible.appendleft(message.id)
            self.wake()
        else:
            message.hidden_until = time.time() + seconds
            heapq.heappush(self.hidden, (message.hidden_until, message.id, message.receipt))

    def sweep(self, now: float) -> None:
        """Make visible again the messages whose visibility timeout ran out."""
        while self.hidden and self.hidden[0][0] <= now:
            until, message_id, receipt = heapq.heappop(self.hidden)
            message = self.messages.get(message_id)
            if message is not None and message.receipt == receipt and message.hidden_until == until:
                message.hidden_until = 0.0
                self.visible.append(message_id)
        self.wake()

    def purge(self) -> None:
        self.messages.clear()
        self.visible.clear()
        self.hidden.clear()

    def counts(self) -> tuple[int, int]:
        now = time.time()
        in_flight = sum(1 for message in self.messages.values() if message.hidden_until > now)
        return len(self.messages) - in_flight, in_flight


class Sqs:
    """The queues and the actions on them; each action takes and returns the JSON protocol's dicts."""

    def __init__(self, base_url: str):
        self.base_url = base_url
        self.queues: dict[str, Queue] = {}

    def queue(self, request: dict) -> Queue:
        url = request.get("QueueUrl", "")
        queue = self.queues.get(url.rstrip("/").rsplit("/", 1)[-1])
        if queue is None:
            raise queue_does_not_exist()
        return queue

    def CreateQueue(self, request):
        name = request["QueueName"]
        if name not in self.queues:
            self.queues[name] = Queue(name, f"{self.base_url}/{ACCOUNT}/{name}", request.get("Attributes", {}))
        return {"QueueUrl": self.queues[name].url}

    def GetQueueUrl(self, request):
        queue = self.queues.get(request.get("QueueName", ""))
        if queue is None:
            raise queue_does_not_exist()
        return {"QueueUrl": queue.url}

    def GetQueueAttributes(self, request):
        queue = self.queue(request)
        visible, in_flight = queue.counts()
        every = {
            "ApproximateNumberOfMessages": visible,
            "ApproximateNumberOfMessagesNotVisible": in_flight,
            "ApproximateNumberOfMessagesDelayed": 0,
            "VisibilityTimeout": queue.visibility_timeout,
            "ReceiveMessageWaitTimeSeconds": queue.wait_seconds,
            "CreatedTimestamp": queue.created,
            "LastModifiedTimestamp": queue.created,
            "QueueArn": f"arn:aws:sqs:{REGION}:{ACCOUNT}:{queue.name}",
            "MaximumMessageSize": 262144,
            "MessageRetentionPeriod": 345600,
            "DelaySeconds": 0,
        }
        names = request.get("AttributeNames") or []
        chosen = every if "All" in names else {name: every[name] for name in names if name in every}
        return {"Attributes": {name: str(value) for name, value in chosen.items()}}

    def PurgeQueue(self, request):
        self.queue(request).purge()
        return {}

    def SendMessage(self, request):
        message = self.queue(request).send(request["MessageBody"], request.get("MessageAttributes") or {})
        return self._sent(message)

    def SendMessageBatch(self, request):
        queue = self.queue(request)
        entries = self._entries(request, "Send")
        successful = []
        for entry in entries:
            message = queue.send(entry["MessageBody"], entry.get("MessageAttributes") or {})
            successful.append({"Id": entry["Id"], **self._sent(message)})
        return {"Successful": successful, "Failed": []}

    @staticmethod
    def _sent(message: Message) -> dict:
        answer = {"MessageId": message.id, "MD5OfMessageBody": md5_hex(message.body)}
        if message.attributes:
            answer["MD5OfMessageAttributes"] = md5_of_attributes(message.attributes)
        return answer

    @staticmethod
    def _entries(request: dict, action: str) -> list:
        entries = request.get("Entries") or []
        if not entries:
            raise SqsError("EmptyBatchRequest", "AWS.SimpleQueueService.EmptyBatchRequest",
                           f"There should be at least one {action}MessageBatchRequestEntry in the request.")
        if len(entries) > MAX_BATCH:
            raise SqsError("TooManyEntriesInBatchRequest", "AWS.SimpleQueueService.TooManyEntriesInBatchRequest",
                           f"Maximum number of entries per request are {MAX_BATCH}. You have sent {len(entries)}.")
        ids = [entry["Id"] for entry in entries]
        if len(set(ids)) != len(ids):
            raise SqsError("BatchEntryIdsNotDistinct", "AWS.SimpleQueueService.BatchEntryIdsNotDistinct",
                           "Two or more batch entries in the request have the same Id.")
        return entries

    def ReceiveMessage(self, request):
        """Answered by receive_message(), which may wait; this is the part that never does."""
        queue = self.queue(request)
        count = int(request.get("MaxNumberOfMessages", 1))
        if not 1 <= count <= MAX_BATCH:
            raise SqsError("InvalidParameterValue", "InvalidParameterValue",
                           f"Value {count} for parameter MaxNumberOfMessages is invalid.")
        visibility = int(request.get("VisibilityTimeout", queue.visibility_timeout))
        return queue, queue.receive(count, visibility)

    def DeleteMessage(self, request):
        self.queue(request).delete(request["ReceiptHandle"])
        return {}

    def DeleteMessageBatch(self, request):
        queue = self.queue(request)
        return self._batch(self._entries(request, "Delete"), lambda entry: queue.delete(entry["ReceiptHandle"]))

    def ChangeMessageVisibility(self, request):
        self.queue(request).change_visibility(request["ReceiptHandle"], int(request["VisibilityTimeout"]))
        return {}

    def ChangeMessageVisibilityBatch(self, request):
        queue = self.queue(request)
        return self._batch(
            self._entries(request, "ChangeMessageVisibility"),
            lambda entry: queue.change_visibility(entry["ReceiptHandle"], int(entry["VisibilityTimeout"])),
        )

    @staticmethod
    def _batch(entries, action) -> dict:
        successful, failed = [], []
        for entry in entries:
            try:
                action(entry)
                successful.append({"Id": entry["Id"]})
            except SqsError as error:
                failed.append({"Id": entry["Id"], "SenderFault": True, "Code": error.shape, "Message": error.message})
        return {"Successful": successful, "Failed": failed}

    def sweep(self) -> None:
        now = time.time()
        for queue in self.queues.values():
            queue.sweep(now)


SYSTEM_ATTRIBUTES = ("ApproximateReceiveCount", "SentTimestamp", "ApproximateFirstReceiveTimestamp", "SenderId")


def message_view(message: Message, system_names: list, attribute_names: list) -> dict:
    """A received message as ReceiveMessage shows it: system and message attributes only when asked."""
    view: dict[str, str | dict] = {"MessageId": message.id, "ReceiptHandle": message.receipt,
                                   "MD5OfBody": md5_hex(message.body), "Body": message.body}
    wanted = SYSTEM_ATTRIBUTES if "All" in system_names else [n for n in system_names if n in SYSTEM_ATTRIBUTES]
    if wanted:
        every = {"ApproximateReceiveCount": message.receive_count, "SentTimestamp": message.sent,
                 "ApproximateFirstReceiveTimestamp": message.first_received, "SenderId": ACCOUNT}
        view["Attributes"] = {name: str(every[name]) for name in wanted}
    if message.attributes and attribute_names:
        if any(name in ("All", ".*") for name in attribute_names):
            chosen = message.attributes
        else:
            prefixes = [name[:-2] for name in attribute_names if name.endswith(".*")]
            chosen = {name: value for name, value in message.attributes.items()
                      if name in attribute_names or any(name.startswith(prefix) for prefix in prefixes)}
        if chosen:
            view["MessageAttributes"] = chosen
            view["MD5OfMessageAttributes"] = md5_of_attributes(chosen)
    return view


async def receive_message(sqs: Sqs, request: dict) -> dict:
    """ReceiveMessage with its long poll: wait until a message is visible or WaitTimeSeconds pass."""
    queue, messages = sqs.ReceiveMessage(request)
    wait = float(request.get("WaitTimeSeconds", queue.wait_seconds))
    deadline = time.monotonic() + wait
    while not messages and time.monotonic() < deadline:
        waiter = asyncio.get_running_loop().create_future()
        queue.waiters.append(waiter)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(waiter, deadline - time.monotonic())
        queue, messages = sqs.ReceiveMessage(request)
    system_names = list(request.get("MessageSystemAttributeNames") or []) + list(request.get("AttributeNames") or [])
    attribute_names = request.get("MessageAttributeNames") or []
    if not messages:
        return {}
    return {"Messages": [message_view(message, system_names, attribute_names) for message in messages]}


def http_response(status: int, body: bytes, extra: str = "", content_type: str = "application/x-amz-json-1.0") -> bytes:
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 411: "Length Required", 413: "Too Large",
              500: "Internal Server Error"}.get(status, "Status")
    head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nx-amzn-RequestId: {uuid.uuid4()}\r\n{extra}\r\n")
    return head.encode("latin-1") + body


def error_response(error: SqsError) -> bytes:
    body = json.dumps({"__type": f"com.amazonaws.sqs#{error.shape}", "message": error.message}).encode()
    return http_response(error.status, body, f"x-amzn-query-error: {error.query_code};{error.fault}\r\n")


class HttpProtocol(asyncio.Protocol):
    """HTTP/1.1 with keep-alive, Content-Length bodies only (what urllib3 sends botocore's calls with)."""

    def __init__(self, sqs: Sqs):
        self.sqs = sqs
        self.buffer = bytearray()
        self.busy = False  # a long poll is answering; the next request waits (no pipelining from urllib3)
        self.transport: asyncio.Transport | None = None
        self.poll: asyncio.Task | None = None

    def connection_made(self, transport):
        self.transport = transport

    def connection_lost(self, exc):
        # Unlike SQS, drop the long poll of a client that went away, so it takes no
        # messages nobody will read: one benchmark run's stopped worker must not
        # hide the next run's messages for a visibility timeout.
        if self.poll is not None:
            self.poll.cancel()

    def data_received(self, data):
        self.buffer += data
        if not self.busy:
            self.process()

    def process(self):
        while not self.busy:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            if "content-length" not in headers and lines[0].startswith("POST"):
                self.reply(http_response(411, b'{"message": "Content-Length required"}'), close=True)
                return
            length = int(headers.get("content-length", 0))
            if length > MAX_BODY:
                self.reply(http_response(413, b'{"message": "too large"}'), close=True)
                return
            if len(self.buffer) < end + 4 + length:
                return
            body = bytes(self.buffer[end + 4:end + 4 + length])
            del self.buffer[:end + 4 + length]
            self.handle(lines[0], headers, body)

    def handle(self, request_line: str, headers: dict, body: bytes) -> None:
        method, path = request_line.split(" ")[:2]
        if method == "GET" and path.startswith("/_stub/queues/"):
            queue = self.sqs.queues.get(path.rsplit("/", 1)[-1])
            answer = {"ids": list(queue.messages)} if queue else {"ids": []}
            self.reply(http_response(200, json.dumps(answer).encode(), content_type="application/json"))
            return
        action = headers.get("x-amz-target", "").removeprefix("AmazonSQS.")
        try:
            request = json.loads(body or b"{}")
            if action == "ReceiveMessage":
                self.busy = True
                self.poll = asyncio.ensure_future(self.long_poll(request))
                return
            handler = getattr(self.sqs, action, None) if action[:1].isupper() else None
            if handler is None:
                raise SqsError("UnsupportedOperation", "AWS.SimpleQueueService.UnsupportedOperation",
                               f"{action or 'the request'} is not supported by this stub")
            self.reply(http_response(200, json.dumps(handler(request)).encode()))
        except SqsError as error:
            self.reply(error_response(error))
        except (KeyError, ValueError, TypeError) as error:
            self.reply(error_response(SqsError("InvalidParameterValue", "InvalidParameterValue", repr(error))))

    async def long_poll(self, request: dict) -> None:
        try:
            answer = http_response(200, json.dumps(await receive_message(self.sqs, request)).encode())
        except SqsError as error:
            answer = error_response(error)
        except (KeyError, ValueError, TypeError) as error:
            answer = error_response(SqsError("InvalidParameterValue", "InvalidParameterValue", repr(error)))
        self.busy = False
        self.poll = None
        self.reply(answer)
        self.process()

    def reply(self, data: bytes, close: bool = False) -> None:
        assert self.transport is not None, "a reply before connection_made"
        if self.transport.is_closing():
            return
        self.transport.write(data)
        if close:
            self.transport.close()


async def sweep_forever(sqs: Sqs) -> None:
    while True:
        await asyncio.sleep(SWEEP_SECONDS)
        sqs.sweep()


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    sqs: Sqs  # made once the port is known: the protocol factory runs at the first connection, after
    server = await loop.create_server(lambda: HttpProtocol(sqs), host, port, reuse_address=True)
    bound = server.sockets[0].getsockname()[1]
    sqs = Sqs(f"http://{host}:{bound}")
    print(f"sqs_stub listening on http://{host}:{bound}", flush=True)
    asyncio.ensure_future(sweep_forever(sqs))
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to listen on")
    parser.add_argument("--port", type=int, default=9324, help="port (0: any free one, printed at start)")
    arguments = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(arguments.host, arguments.port))


if __name__ == "__main__":
    main()
