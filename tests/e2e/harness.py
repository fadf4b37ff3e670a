"""Process helpers for the fault tests: moto over HTTP, the pyz as subprocesses, a TCP proxy to cut links.

Every wait here is bounded; a helper that gives up raises AssertionError with what it saw,
so a broken promise fails the test instead of hanging CI.
"""

import contextlib
import dataclasses
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import boto3
import pytest
import psycopg2
import requests
from mohawk import Sender
from sigauth.helpers import RequestSigner

UI_SECRET = "not-a-real-secret"
REGION = "eu-west-1"
# moto accepts any credentials; these only keep boto3 from looking for real ones.
FAKE_AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing"}
IN_CI = os.environ.get("CI", "").lower() == "true"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.1):
    """Poll `predicate` until it returns something truthy; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except Exception as error:  # noqa: BLE001 - a service still starting answers with errors
            last = error
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


# -- subprocesses -----------------------------------------------------------------------------


class Process:
    """A subprocess whose output goes to a log file, so a failing test can show it."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], log_path: Path, cwd: Path | None = None):
        self.argv = list(argv)
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.popen = subprocess.Popen(
            self.argv, env=dict(env), cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-6000:]

    def signal_and_time(self, signum: int, timeout: float = 10.0) -> tuple[int | None, float]:
        """Send `signum`; return (exit code or None if still running after `timeout`, seconds it took)."""
        started = time.monotonic()
        self.popen.send_signal(signum)
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            code = None
        return code, time.monotonic() - started

    def kill(self) -> None:
        """SIGKILL, as a crash or the OOM killer would."""
        if self.alive():
            self.popen.kill()
        self.popen.wait(10)

    def stop(self) -> None:
        """Clean up at the end of a test: SIGTERM, then SIGKILL if it will not go."""
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        self._log.close()


class Processes:
    """Starts processes for one test and stops every one of them at its end."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.started: list[Process] = []

    def start(self, argv, env, name: str, cwd: Path | None = None) -> Process:
        process = Process(argv, env, self.log_dir / f"{name}-{len(self.started)}.log", cwd=cwd)
        self.started.append(process)
        return process

    def stop_all(self) -> None:
        for process in reversed(self.started):
            process.stop()

    def logs(self) -> str:
        return "\n".join(f"--- {p.log_path.name} (rc={p.popen.poll()}):\n{p.log()}" for p in self.started)


# -- moto over HTTP as SQS --------------------------------------------------------------------


def moto_argv(port: int) -> list[str]:
    moto_server = Path(sys.executable).with_name("moto_server")
    if moto_server.exists():
        return [str(moto_server), "-H", "127.0.0.1", "-p", str(port)]
    return [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]


def start_moto(processes: Processes) -> str:
    """A moto server on a free port; returns its endpoint URL once it answers."""
    port = free_port()
    process = processes.start(moto_argv(port), {**os.environ, **FAKE_AWS}, "moto")
    endpoint = f"http://127.0.0.1:{port}"

    def answers():
        assert process.alive(), f"moto_server exited:\n{process.log()}"
        return requests.get(f"{endpoint}/moto-api/", timeout=1).status_code < 500

    wait_until(answers, 30, "moto_server to answer")
    return endpoint


class Sqs:
    """A boto3 client straight to moto, to preload and inspect queues behind the service's back."""

    def __init__(self, endpoint: str):
        self.client = boto3.client(
            "sqs",
            endpoint_url=endpoint,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def url(self, name: str) -> str:
        return self.client.create_queue(QueueName=name)["QueueUrl"]

    def send_batch(self, name: str, bodies: Iterable[str]) -> list[str]:
        """Send with SendMessageBatch, ten a call (moto manages ~110 calls/s); return the message ids in order."""
        url = self.url(name)
        bodies = list(bodies)
        ids: list[str] = []
        for start in range(0, len(bodies), 10):
            chunk = bodies[start : start + 10]
            answer = self.client.send_message_batch(
                QueueUrl=url, Entries=[{"Id": str(n), "MessageBody": body} for n, body in enumerate(chunk)]
            )
            assert not answer.get("Failed"), answer["Failed"]
            by_entry = {entry["Id"]: entry["MessageId"] for entry in answer["Successful"]}
            ids.extend(by_entry[str(n)] for n in range(len(chunk)))
        return ids

    def counts(self, name: str) -> tuple[int, int]:
        """(visible, in flight) messages of a queue; (0, 0) when it does not exist."""
        try:
            url = self.client.get_queue_url(QueueName=name)["QueueUrl"]
        except self.client.exceptions.QueueDoesNotExist:
            return 0, 0
        attributes = self.client.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]), int(attributes["ApproximateNumberOfMessagesNotVisible"])

    def total(self, name: str) -> int:
        return sum(self.counts(name))

    def exists(self, name: str) -> bool:
        try:
            self.client.get_queue_url(QueueName=name)
        except self.client.exceptions.QueueDoesNotExist:
            return False
        return True


def queue_names() -> tuple[str, str]:
    """Fresh enrolment and invalid queue names, so tests sharing a moto server never see each other."""
    suffix = uuid.uuid4().hex[:10]
    return f"enrolment-{suffix}", f"enrolment-invalid-{suffix}"


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
    env = {
        **base,
        **FAKE_AWS,
        "DATABASE_URL": database_url,
        "UI_SECRET": UI_SECRET,
        "QUEUE_BACKEND": "sqs",
        "SQS_ENDPOINT_URL": sqs_endpoint,
        "SQS_REGION_NAME": REGION,
        "SQS_ENROLMENT_QUEUE_NAME": queues[0],
        "SQS_INVALID_ENROLMENT_QUEUE_NAME": queues[1],
        "SQS_WAIT_TIME": "1",
        "SQS_VISIBILITY_TIMEOUT": "3",
    }
    env.update({name: str(value) for name, value in settings.items()})
    return env


def start_serve(processes: Processes, cli: Sequence[str], env: Mapping[str, str], name: str = "serve"):
    """`serve` on a free port; returns (process, base URL) once GET / answers 200."""
    port = free_port()
    process = processes.start([*cli, "serve", "--host", "127.0.0.1", "--port", str(port)], env, name)
    base_url = f"http://127.0.0.1:{port}"
    wait_for_root(process, base_url)
    return process, base_url


def wait_for_root(process: Process, base_url: str, timeout: float = 30) -> None:
    def answers():
        assert process.alive(), f"{process.argv} exited:\n{process.log()}"
        return requests.get(f"{base_url}/", timeout=1).status_code == 200

    wait_until(answers, timeout, f"GET {base_url}/")


def start_work(processes: Processes, cli: Sequence[str], env: Mapping[str, str], name: str = "work") -> Process:
    return processes.start([*cli, "work"], env, name)


# -- enrolments -------------------------------------------------------------------------------


def payload(n: int, **changes) -> dict:
    """The n-th valid enrolment; distinct n give distinct sso_id and company_number."""
    data = {
        "sso_id": n + 1,
        "company_number": f"{n:08d}",
        "company_name": f"Test Company {n} Ltd",
        "company_email": f"contact{n}@example.com",
        "export_status": "YES",
        "date_of_creation": "2010-10-10",
        "mobile_number": "07700900000",
        "referrer": "email",
    }
    data.update(changes)
    return data


def bodies(count: int, start: int = 0) -> list[str]:
    return [json.dumps(payload(n)) for n in range(start, start + count)]


def saved_message_ids(database_url: str) -> list[str]:
    """Every enrolment row's queue message id, straight from PostgreSQL (duplicates kept)."""
    with contextlib.closing(psycopg2.connect(database_url, connect_timeout=5)) as connection:
        with connection.cursor() as cursor:
            cursor.execute("SELECT sqs_message_id FROM enrolment")
            return [row[0] for row in cursor.fetchall()]


def table_count(database_url: str, table: str) -> int:
    with contextlib.closing(psycopg2.connect(database_url, connect_timeout=5)) as connection:
        with connection.cursor() as cursor:
            cursor.execute(f'SELECT count(*) FROM "{table}"')
            return cursor.fetchone()[0]


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


# -- signatures -------------------------------------------------------------------------------


def signed_headers(url: str, body: bytes = b"", method: str = "POST", content_type: str | None = "application/json",
                   secret: str = UI_SECRET) -> dict[str, str]:
    """Headers of a request signed as directory-ui signs it, with sigauth."""
    headers = RequestSigner(secret=secret, sender_id="directory-ui").get_signature_headers(
        url, body, method, content_type
    )
    if content_type is not None:
        headers["Content-Type"] = content_type
    return headers


def stale_headers(path: str, body: bytes, seconds_old: int, content_type: str = "application/json") -> dict[str, str]:
    """A correct Hawk signature made `seconds_old` seconds ago."""
    sender = Sender(
        {"id": "directory-ui", "key": UI_SECRET, "algorithm": "sha256"},
        path,
        "POST",
        content=body,
        content_type=content_type,
        _timestamp=int(time.time()) - seconds_old,
    )
    return {"X-Signature": sender.request_header, "Content-Type": content_type}


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


# -- fixtures (imported by the e2e test modules) ----------------------------------------------


@pytest.fixture(scope="session")
def cli(pyz) -> list[str]:
    """The argv prefix that runs the built artifact (tests/e2e/conftest.py builds it).

    The base interpreter, not this virtualenv's: the pyz must bring every package it imports.
    """
    return [getattr(sys, "_base_executable", sys.executable), str(pyz)]


@pytest.fixture(scope="session")
def base_env(tmp_path_factory) -> dict[str, str]:
    """A bare environment, as conftest's pyz_env, but one SHIV_ROOT a session: the pyz unpacks once, not per process."""
    home = tmp_path_factory.mktemp("home")
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "SHIV_ROOT": str(tmp_path_factory.mktemp("shiv")),
        "AWS_CONFIG_FILE": str(home / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "no-aws-credentials"),
    }


@pytest.fixture
def processes(tmp_path):
    """Every process a test starts, stopped at its end; their logs stay in tmp_path."""
    started = Processes(tmp_path)
    yield started
    started.stop_all()


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory) -> str:
    """One moto server for the session; tests keep apart by queue names."""
    started = Processes(tmp_path_factory.mktemp("moto"))
    endpoint = start_moto(started)
    yield endpoint
    started.stop_all()


@pytest.fixture
def sqs(moto_endpoint) -> Sqs:
    return Sqs(moto_endpoint)


@pytest.fixture
def queues() -> tuple[str, str]:
    return queue_names()


def fresh_schema(url: str) -> str:
    """Empty the database at `url` and migrate it to this checkout's schema."""
    from directory_api import db, migrations

    database = db.bind(url)
    database.execute_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
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
def live_api(cli, base_env, postgres_url, moto_endpoint, tmp_path_factory) -> LiveApi:
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
        except (socket.timeout, ConnectionResetError):
            pass
    return parse_response(received)


def request_bytes(method: str, path: str, body: bytes, headers: Mapping[str, str], *,
                  content_length: int | None = None) -> bytes:
    """An HTTP/1.1 request as bytes; `content_length` may lie about the body."""
    length = len(body) if content_length is None else content_length
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close", f"Content-Length: {length}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
