"""A frugal HTTP/1.1 load generator: pre-built requests, keep-alive connections, one thread, epoll.

Each request is sent once (a Hawk signature can be used only once), so the
caller builds them all before the timed window; in the window the client only
writes bytes and reads answers, which keeps its CPU per request small beside
the server's (the benchmark reports both).

Why not wrk (Debian's, measured against the SQS stub, 16 connections, same
request): wrk used ~7 us of CPU per request, this client 15-28 us; beside
serve's 1-2 ms per request both disturb it by a few percent at most. This one
is kept because it sends an exact count of distinct pre-signed requests (a
signature may be used once; wrk repeats or needs Lua plumbing per thread) and
keeps every answer's body, so each 202's id can be checked on the queue.
"""

import dataclasses
import json
import selectors
import socket
import time
from collections import deque
from collections.abc import Iterable

RECEIVE_SIZE = 65536


@dataclasses.dataclass
class Answer:
    status: int
    latency: float
    body: bytes


@dataclasses.dataclass
class Run:
    answers: list[Answer]
    elapsed: float
    connections: int
    failures: int  # connections the server closed or reset mid-request

    @property
    def rate(self) -> float:
        return len(self.answers) / self.elapsed if self.elapsed else 0.0

    def percentile(self, fraction: float) -> float:
        latencies = sorted(answer.latency for answer in self.answers)
        if not latencies:
            return float("nan")
        return latencies[min(len(latencies) - 1, int(fraction * len(latencies)))]

    def statuses(self) -> dict[int, int]:
        counts: dict[int, int] = {}
        for answer in self.answers:
            counts[answer.status] = counts.get(answer.status, 0) + 1
        return counts


def build_request(method: str, path: str, port: int, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def parse_head(head: bytes) -> tuple[int, int, bool]:
    """Status, Content-Length and whether the server will close, from a response head."""
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length, closing = 0, lines[0].startswith(b"HTTP/1.0")
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection":
            closing = value.strip().lower() == b"close"
    return status, length, closing


class Connection:
    __slots__ = ("sock", "buffer", "sent_at", "pending")

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.buffer = bytearray()
        self.sent_at = 0.0
        self.pending: bytes | None = None


def run(port: int, requests: Iterable[bytes], connections: int, max_seconds: float = 60.0) -> Run:
    """Send every request once over `connections` keep-alive connections; stop early after max_seconds."""
    load = _Load(port, requests, max_seconds)
    for _ in range(min(connections, len(load.todo))):
        load.send_next(load.open_connection())
    while load.selector.get_map():
        for key, _ in load.selector.select(timeout=1.0):
            load.readable(key.data)
    elapsed = time.perf_counter() - load.started
    load.selector.close()
    return Run(answers=load.answers, elapsed=elapsed, connections=connections, failures=load.failures)


class _Load:
    """One run's state: the requests left to send, the answers back, the connections on the selector."""

    def __init__(self, port: int, requests: Iterable[bytes], max_seconds: float):
        self.port = port
        self.todo = deque(requests)
        self.answers: list[Answer] = []
        self.failures = 0
        self.selector = selectors.DefaultSelector()
        self.started = time.perf_counter()
        self.deadline = self.started + max_seconds

    def open_connection(self) -> Connection:
        connection = Connection(self.port)
        self.selector.register(connection.sock, selectors.EVENT_READ, connection)
        return connection

    def close(self, connection: Connection) -> None:
        self.selector.unregister(connection.sock)
        connection.sock.close()

    def send_next(self, connection: Connection) -> bool:
        if not self.todo or time.perf_counter() > self.deadline:
            self.close(connection)
            return False
        connection.pending = self.todo.popleft()
        connection.sent_at = time.perf_counter()
        connection.sock.sendall(connection.pending)  # small requests: the send buffer takes them whole
        return True

    def readable(self, connection: Connection) -> None:
        try:
            chunk = connection.sock.recv(RECEIVE_SIZE)
        except ConnectionError:
            chunk = b""
        if not chunk:
            # Closed by the server mid-request: count it, and go on on a fresh connection.
            self.failures += 1
            self.close(connection)
            if connection.pending is not None:
                self.send_next(self.open_connection())
            return
        connection.buffer += chunk
        self.take_answers(connection)

    def take_answers(self, connection: Connection) -> None:
        """Each whole answer in the buffer, each followed by the next request (on a fresh connection if closing)."""
        while True:
            end = connection.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            status, length, closing = parse_head(bytes(connection.buffer[:end]))
            if len(connection.buffer) < end + 4 + length:
                return
            self.answers.append(Answer(status, time.perf_counter() - connection.sent_at,
                                       bytes(connection.buffer[end + 4:end + 4 + length])))
            del connection.buffer[:end + 4 + length]
            connection.pending = None
            if closing:
                self.close(connection)
                if self.todo:
                    self.send_next(self.open_connection())
                return
            if not self.send_next(connection):
                return


def accepted_ids(run_result: Run) -> list[str]:
    """The ids of the 202 answers ({"id": ..., "status": "queued"})."""
    return [json.loads(answer.body)["id"] for answer in run_result.answers if answer.status == 202]
