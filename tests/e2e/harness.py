"""The e2e tests' own helpers and fixtures: the built pyz as a service, its database, a TCP proxy to cut links.

What process and unit tests share too (ports, waits, subprocesses, moto, signing) is in tests/support/.
Loaded as a pytest plugin by tests/conftest.py; every wait here is bounded.
"""

import contextlib
import dataclasses
import json
import selectors
import socket
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import pytest
import requests
from throwaway_postgres import emptied

from tests.support.databases import pg_rows
from tests.support.processes import Process, Processes, start_serve
from tests.support.signing import signed_headers
from tests.support.sockets import free_port
from tests.support.sqs import Sqs, queue_names, sqs_env
from tests.support.waits import wait_until

# -- the service's environment ----------------------------------------------------------------


def service_env(
    base: Mapping[str, str],
    *,
    database_url: str,
    sqs_endpoint: str,
    queues: tuple[str, str],
    **settings: object,
) -> dict[str, str]:
    """The environment of a serve or work process on SQS (moto) and PostgreSQL; settings override by name."""
    settings = {"SQS_WAIT_TIME": 1, "SQS_VISIBILITY_TIMEOUT": 3, **settings}
    return {**base, **sqs_env(sqs_endpoint, queues, database_url, **settings)}


# -- enrolments -------------------------------------------------------------------------------


def saved_message_ids(database_url: str) -> list[str]:
    """Every enrolment row's queue message id, straight from PostgreSQL (duplicates kept)."""
    return [row[0] for row in pg_rows(database_url, "SELECT sqs_message_id FROM enrolment")]


def table_count(database_url: str, table: str) -> int:
    return pg_rows(database_url, f'SELECT count(*) FROM "{table}"')[0][0]


def wait_all_saved(
    database_url: str, sqs: Sqs, queue: str, expected: Iterable[str], timeout: float, processes: Processes
) -> None:
    """Wait until `expected` are all saved and the queue is drained; fail with the logs otherwise."""
    expected = set(expected)

    def done():
        return expected <= set(saved_message_ids(database_url)) and sqs.total(queue) == 0

    try:
        wait_until(done, timeout, f"{len(expected)} enrolments saved and {queue} drained", interval=0.25)
    except AssertionError as error:
        saved = saved_message_ids(database_url)
        raise AssertionError(
            f"{error}\nsaved {len(saved)} ({len(set(saved))} distinct) of {len(expected)}; "
            f"queue (visible, in flight) = {sqs.counts(queue)}\n{processes.logs()}"
        ) from None


def assert_saved_exactly_once(database_url: str, expected: Iterable[str]) -> None:
    saved = saved_message_ids(database_url)
    expected = sorted(expected)
    twice = sorted({message_id for message_id in saved if saved.count(message_id) > 1})
    assert not twice, f"saved more than once: {twice[:10]}"
    assert sorted(saved) == expected, (
        f"saved {len(saved)}, expected {len(expected)}; "
        f"missing {sorted(set(expected) - set(saved))[:10]}, unexpected {sorted(set(saved) - set(expected))[:10]}"
    )
    assert table_count(database_url, "company") == len(expected)
    assert table_count(database_url, "supplier") == len(expected)


# -- signed requests --------------------------------------------------------------------------


def post_enrolment(base_url: str, data: object, timeout: float = 10) -> requests.Response:
    body = json.dumps(data).encode()
    url = f"{base_url}/enrolment/"
    return requests.post(url, data=body, headers=signed_headers(url, body), timeout=timeout)


def get_signed(base_url: str, path: str, timeout: float = 10) -> requests.Response:
    url = f"{base_url}{path}"
    return requests.get(url, headers=signed_headers(url, b"", "GET", None), timeout=timeout)


# -- a TCP proxy to cut a link at will --------------------------------------------------------


class TcpProxy:
    """Forwards a local port to `target`; `down()` refuses new connections and cuts open ones, `up()` restores.

    Put between the service and PostgreSQL or SQS, it makes that dependency vanish and come
    back on the same address, as a restart or a network partition would. `delay` (seconds)
    holds back every chunk sent towards the target, to widen a race window on purpose.
    """

    delay = 0.0

    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        self.port = free_port()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._running = False

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        self._running = True
        self._thread = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        self._thread.start()

    def down(self) -> None:
        self._running = False
        if self._thread:
            self._thread.join(5)
        if self._listener:
            self._listener.close()
            self._listener = None
        with self._lock:
            for sock in list(self._sockets):
                _close(sock)
            self._sockets.clear()

    def _accept(self, listener: socket.socket) -> None:
        selector = selectors.DefaultSelector()
        selector.register(listener, selectors.EVENT_READ)
        while self._running:
            if not selector.select(0.1):
                continue
            try:
                client, _ = listener.accept()
            except OSError:
                continue
            try:
                server = socket.create_connection(self.target, timeout=5)
                server.settimeout(None)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._sockets.update((client, server))
            for source, sink, upstream in ((client, server, True), (server, client, False)):
                threading.Thread(target=self._pump, args=(source, sink, upstream), daemon=True).start()
        selector.close()

    def _pump(self, source: socket.socket, sink: socket.socket, upstream: bool) -> None:
        try:
            while chunk := source.recv(65536):
                if upstream and self.delay:
                    time.sleep(self.delay)
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            with self._lock:
                self._sockets.discard(source)
                self._sockets.discard(sink)
            _close(source)
            _close(sink)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


# -- fixtures (a pytest plugin: see tests/conftest.py) ----------------------------------------------


@pytest.fixture(scope="session")
def cli(pyz) -> list[str]:
    """The argv prefix that runs the built artifact (tests/e2e/conftest.py builds it).

    The base interpreter, not this virtualenv's: the pyz must bring every package it imports.
    """
    return [getattr(sys, "_base_executable", sys.executable), str(pyz)]


def bare_env(home: Path, shiv_root: Path) -> dict[str, str]:
    """An environment that shares nothing with the developer's: own HOME and SHIV_ROOT, no PYTHONPATH."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "SHIV_ROOT": str(shiv_root),
    }


@pytest.fixture(scope="session")
def base_env(tmp_path_factory) -> dict[str, str]:
    """A bare environment, as conftest's pyz_env, but one SHIV_ROOT a session: the pyz unpacks once, not per process."""
    home = tmp_path_factory.mktemp("home")
    return {
        **bare_env(home, tmp_path_factory.mktemp("shiv")),
        "AWS_CONFIG_FILE": str(home / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "no-aws-credentials"),
    }


def fresh_schema(url: str) -> str:
    """Empty the database at `url` and migrate it to this checkout's schema."""
    from directory_api import db, migrations

    database = db.bind(emptied(url))
    migrations.migrate(database)
    database.close()
    return url


@pytest.fixture
def pg(postgres_url) -> str:
    """The session's PostgreSQL database, emptied and migrated for this test."""
    return fresh_schema(postgres_url)


@dataclasses.dataclass
class LiveApi:
    base_url: str
    queue: str
    sqs: Sqs
    process: Process

    @property
    def port(self) -> int:
        return int(self.base_url.rsplit(":", 1)[1])

    def queued(self) -> int:
        return self.sqs.total(self.queue)


@pytest.fixture(scope="module")
def live_api(cli, base_env, postgres_url, moto_endpoint, tmp_path_factory) -> Iterator[LiveApi]:
    """One `serve` for a whole module of request-level tests (no worker: what is queued stays queued)."""
    started = Processes(tmp_path_factory.mktemp("serve"))
    names = queue_names()
    env = service_env(base_env, database_url=fresh_schema(postgres_url), sqs_endpoint=moto_endpoint, queues=names)
    process, base_url = start_serve(started, cli, env)
    yield LiveApi(base_url, names[0], Sqs(moto_endpoint), process)
    started.stop_all()


def proxied_url(url: str, proxy: TcpProxy) -> str:
    """`url` with its host and port replaced by the proxy's."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit(parts._replace(netloc=f"{user}{proxy.address}"))


@pytest.fixture
def proxy_to():
    """Make a TcpProxy to host:port, brought up now and torn down at the end of the test."""
    made: list[TcpProxy] = []

    def make(url: str) -> TcpProxy:
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        assert parts.hostname is not None
        proxy = TcpProxy(parts.hostname, parts.port or 5432)
        proxy.up()
        made.append(proxy)
        return proxy

    yield make
    for proxy in made:
        proxy.down()


# -- raw HTTP, for requests no client library would send ---------------------------------------


@dataclasses.dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)


def parse_response(data: bytes) -> RawResponse | None:
    """The first HTTP response in `data`, or None when the server sent nothing."""
    if not data:
        return None
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = body[: int(headers["content-length"])]
    return RawResponse(int(status_line.split()[1]), headers, body)


def raw_exchange(port: int, chunks: Iterable[bytes], *, pause: float = 0.0, half_close: bool = False,
                 timeout: float = 10.0) -> RawResponse | None:
    """Send `chunks` (pausing between them), optionally shut our side, and read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        for chunk in chunks:
            sock.sendall(chunk)
            if pause:
                time.sleep(pause)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        received = b""
        try:
            while data := sock.recv(65536):
                received += data
                response = parse_response(received)
                if response and "content-length" in response.headers and len(response.body) == int(
                    response.headers["content-length"]
                ):
                    break
        except (TimeoutError, ConnectionResetError):
            pass
    return parse_response(received)


def request_bytes(method: str, path: str, body: bytes, headers: Mapping[str, str], *,
                  content_length: int | None = None) -> bytes:
    """An HTTP/1.1 request as bytes; `content_length` may lie about the body."""
    length = len(body) if content_length is None else content_length
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close", f"Content-Length: {length}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
