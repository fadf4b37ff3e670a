"""A proxy between serve and SQS that loses the answers of sends: the queue takes the message, serve never hears so.

harness.TcpProxy cuts a link whatever crosses it; this one reads HTTP, so it can
let GetQueueUrl and CreateQueue through and cut only the connection of a
SendMessage or SendMessageBatch, after the endpoint answered it. Every call goes
to the endpoint on a connection of its own, and the answers that do come back
are kept alive towards serve as SQS keeps them (moto closes after each), so a
cut can land on a kept connection too.
"""

import contextlib
import re
import socket
import threading
from typing import BinaryIO
from urllib.parse import urlsplit

from tests.support.sockets import free_port

# What marks a send: the JSON protocol's X-Amz-Target (sqs_direct.py, boto3 >= 1.34), else the query protocol's Action.
SEND = re.compile(rb"^x-amz-target:\s*AmazonSQS\.SendMessage(Batch)?\s*$", re.IGNORECASE | re.MULTILINE)
QUERY_SEND = re.compile(rb"(^|&)Action=SendMessage(Batch)?(&|$)")
# The message ids in a send's answer: JSON, or the query protocol's XML.
MESSAGE_ID = re.compile(rb'"MessageId":\s*"([^"]+)"|<MessageId>([^<]+)</MessageId>')


class LostAnswerProxy:
    """Forwards HTTP calls on a local port to `endpoint`; the next `cut_next` sends lose their answer.

    A send whose answer is lost reaches the endpoint whole and is answered there;
    then the proxy closes serve's connection without a byte of that answer.
    `sends` counts the sends forwarded, `lost_ids` holds the message ids the
    queue gave in the answers serve never got.
    """

    def __init__(self, endpoint: str):
        parts = urlsplit(endpoint)
        self.target = (parts.hostname, parts.port or 80)
        self.port = free_port()
        self.cut_next = 0
        self.sends = 0
        self.lost_ids: list[str] = []
        self._lock = threading.Lock()
        self._clients: set[socket.socket] = set()
        self._listener: socket.socket | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cut(self, sends: int) -> None:
        """Lose the answers of the next `sends` sends (from now on, the earlier count forgotten)."""
        with self._lock:
            self.cut_next = sends

    def up(self) -> "LostAnswerProxy":
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def down(self) -> None:
        if self._listener is not None:
            _close(self._listener)
            self._listener = None
        with self._lock:
            clients, self._clients = list(self._clients), set()
        for client in clients:
            _close(client)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # closed by down()
                return
            with self._lock:
                self._clients.add(client)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        """One connection of serve's, call after call, until either side closes or a send's answer is lost."""
        try:
            with client.makefile("rb") as reader:
                while (request := read_message(reader)) is not None:
                    is_send = is_send_call(request)
                    with self._lock:
                        lose = is_send and self.cut_next > 0
                        self.sends += is_send
                        self.cut_next -= lose
                    answer = self._forward(request)
                    if lose:
                        self.lost_ids += message_ids(answer)
                        return
                    client.sendall(kept_alive(answer))
        except OSError:
            pass
        finally:
            with self._lock:
                self._clients.discard(client)
            _close(client)

    def _forward(self, request: bytes) -> bytes:
        with socket.create_connection(self.target, timeout=30) as upstream, upstream.makefile("rb") as reader:
            upstream.sendall(request)
            answer = read_message(reader)
        if answer is None:
            raise ConnectionError("the SQS endpoint closed without an answer")
        return answer


def read_message(reader: BinaryIO) -> bytes | None:
    """One HTTP request or response, head and body (by Content-Length, else to the end); None at a clean end."""
    head = b""
    while (line := reader.readline()) not in (b"\r\n", b"\n"):
        if not line:
            if head:
                raise ConnectionError("the connection closed inside an HTTP head")
            return None
        head += line
    length = re.search(rb"^content-length:\s*(\d+)\s*$", head, re.IGNORECASE | re.MULTILINE)
    if length is not None:
        body = reader.read(int(length.group(1)))
    elif head.startswith(b"HTTP/"):
        body = reader.read()  # an answer without a length ends with its connection
    else:
        body = b""
    return head + b"\r\n" + body


def is_send_call(request: bytes) -> bool:
    head, _, body = request.partition(b"\r\n\r\n")
    return bool(SEND.search(head) or QUERY_SEND.search(body))


def message_ids(answer: bytes) -> list[str]:
    return [(json_id or xml_id).decode() for json_id, xml_id in MESSAGE_ID.findall(answer)]


def kept_alive(answer: bytes) -> bytes:
    """The answer without its `Connection: close`: the endpoint's connection ends, serve's stays open."""
    head, _, body = answer.partition(b"\r\n\r\n")
    head = re.sub(rb"\r\nconnection:[^\r\n]*", b"", head, flags=re.IGNORECASE)
    return head + b"\r\n\r\n" + body


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
