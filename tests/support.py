"""What unit, process and e2e tests share: free ports, bounded waits, subprocesses, moto, signing, a manual clock.

Loaded as a pytest plugin by tests/conftest.py, so its fixtures (`processes`,
`moto_endpoint`, `aws_sqs`) reach every test without an import. Every wait is
bounded; a helper that gives up raises AssertionError with what it saw, so a
broken promise fails the test instead of hanging CI.
"""

import contextlib
import io
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import boto3
import psycopg2
import pytest
import requests
from mohawk import Sender
from moto import mock_aws
from prometheus_client.parser import text_string_to_metric_families
from sigauth.helpers import RequestSigner
from typer.testing import CliRunner

from directory_api.queues import QueueUnavailable

REPO = Path(__file__).resolve().parent.parent
# The service run from this checkout's source, as `python directory_api.py ...`.
SOURCE_CLI = (sys.executable, str(REPO / "directory_api.py"))
# Under CI=true a test that cannot run (no PostgreSQL, no browser) fails instead of skipping.
IN_CI = os.environ.get("CI", "").lower() == "true"

UI_SECRET = "not-a-real-secret"
REGION = "eu-west-1"
# moto accepts any credentials; these only keep boto3 from looking for real ones.
FAKE_AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing"}


# -- ports and waits --------------------------------------------------------------------------


def free_port() -> int:
    """A port nothing listens on now (nor, most likely, a moment later)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.1):
    """Poll `predicate` until it returns something truthy, and return that; fail naming `what` after `timeout` s.

    A predicate that raises counts as not yet (a service still starting answers with errors);
    the last error is in the failure.
    """
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            last = predicate()
        except Exception as error:
            last = error
        else:
            if last:
                return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")
        time.sleep(interval)


def errors_in_threads(target: Callable[[], object], count: int, timeout: float = 30) -> list[Exception]:
    """Run `target` in `count` threads at once and wait up to `timeout` s for them; return what they raised."""
    errors: list[Exception] = []

    def run():
        try:
            target()
        except Exception as error:
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    assert not any(thread.is_alive() for thread in threads), f"a thread still runs after {timeout} s"
    return errors


class ManualClock:
    """A monotonic clock and a sleep that move only when the test says: `advance` instead of real sleeps.

    A thread given `clock` and `clock.sleep` runs one step each time the test
    advances past its wake-up time; `advance` returns once each thread it woke
    sleeps again, so what the step did is done. Plain `clock.now = ...` moves it too.
    """

    def __init__(self, start: float = 1000.0, settle: float = 5.0):
        self.now = start
        self.settle = settle
        self._changed = threading.Condition()
        self._asleep = 0
        self._woken = 0
        self._wakes: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self._changed:
            wake = self.now + seconds
            self._wakes.append(wake)
            self._asleep += 1
            self._changed.notify_all()
            self._changed.wait_for(lambda: self.now >= wake)
            self._wakes.remove(wake)
            self._asleep -= 1
            self._woken += 1
            self._changed.notify_all()

    def wait_for_sleepers(self, count: int = 1) -> None:
        """Block until `count` threads sleep on this clock."""
        with self._changed:
            assert self._changed.wait_for(lambda: self._asleep >= count, self.settle), "no thread sleeps on the clock"

    def advance(self, seconds: float) -> None:
        """Move time forward by `seconds`, one sleeper's wake-up at a time, letting each step run."""
        target = self.now + seconds
        with self._changed:
            while due := [wake for wake in self._wakes if wake <= target]:
                asleep, woken = self._asleep, self._woken
                self.now = min(due)
                self._changed.notify_all()
                # The woken thread runs its step and sleeps again.
                stepped = lambda woken=woken, asleep=asleep: self._woken > woken and self._asleep >= asleep  # noqa: E731
                assert self._changed.wait_for(stepped, self.settle), "a thread woken by the clock did not sleep again"
            self.now = target


# -- the WSGI app in this process ---------------------------------------------------------------


class FakeQueue:
    """A Queue double: remembers what was sent; `down` makes it refuse like an unreachable backend."""

    name = "enrolment"

    def __init__(self):
        self.sent: list[str] = []
        self.down = False

    def ensure_exists(self) -> None:
        if self.down:
            raise QueueUnavailable("fake queue is down")

    def send(self, body: str, attributes=None) -> str:
        self.ensure_exists()
        self.sent.append(body)
        return f"message-{len(self.sent)}"


def wsgi_call(app, method: str, path: str, body: bytes = b"", headers: Mapping[str, str] | None = None,
              query: str = "", **environ) -> tuple[int, dict[str, str], bytes]:
    """Run one request through a WSGI app; return (status code, lower-cased headers, raw body)."""
    env = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "REQUEST_URI": path + (f"?{query}" if query else ""),
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": io.StringIO(),
        "CONTENT_LENGTH": str(len(body)),
    }
    for name, value in (headers or {}).items():
        key = name.upper().replace("-", "_")
        env[key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else f"HTTP_{key}"] = value
    env.update(environ)
    answer = {}

    def start_response(status, response_headers, exc_info=None):
        answer["status"] = int(status.split()[0])
        answer["headers"] = {name.lower(): value for name, value in response_headers}

    iterable = app(env, start_response)
    try:
        raw = b"".join(iterable)
    finally:
        if hasattr(iterable, "close"):
            iterable.close()
    return answer["status"], answer["headers"], raw


def metric_samples(exposition: str) -> dict[tuple[str, tuple], float]:
    """(name, labels as a sorted tuple) -> value, from a Prometheus exposition parsed by prometheus_client's parser."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }


def app_call(app, method: str, path: str, body: bytes = b"", headers: Mapping[str, str] | None = None,
             query: str = "", **environ) -> tuple[int, dict[str, str], object]:
    """Run one request through the WSGI app; return (status code, lower-cased headers, JSON body)."""
    status, answer_headers, raw = wsgi_call(app, method, path, body, headers, query, **environ)
    assert answer_headers["content-type"] == "application/json"
    return status, answer_headers, json.loads(raw)


def app_signed_headers(method: str, path: str, body: bytes = b"", content_type: str | None = "application/json",
                       secret: str = UI_SECRET) -> dict[str, str]:
    """Headers signing a request to `path` of the app in this process (its host is testserver)."""
    return signed_headers(f"http://testserver{path}", body, method, content_type, secret)


def app_post(app, body, path: str = "/enrolment/", **environ):
    """A signed POST of `body` (bytes, or an object sent as JSON) through the WSGI app, as app_call answers."""
    body = body if isinstance(body, bytes) else json.dumps(body).encode()
    return app_call(app, "POST", path, body, app_signed_headers("POST", path, body), **environ)


def app_signed_get(app, path: str):
    return app_call(app, "GET", path, b"", app_signed_headers("GET", path, content_type=None))


# -- the worker in this process ---------------------------------------------------------------------


@pytest.fixture
def no_lingering_in_once(monkeypatch):
    """work --once without its one-second wait for stragglers: moto and the database queue answer a poll at once."""
    from directory_api import worker

    monkeypatch.setattr(worker, "ONCE_WAIT", 0)


@pytest.fixture(params=["sqs", "database"])
def backend(request):
    """The queue backend of a test, each in turn (parametrize "backend" to pin one)."""
    return request.param


@pytest.fixture
def make_worker(backend, database, database_url, request, no_lingering_in_once):
    """Make a Worker on the test's backend and database, with settings from a few variables."""
    from directory_api.queues.database import DatabaseQueue
    from directory_api.queues.sqs import SqsQueue
    from directory_api.worker import Worker
    from tests.factories import worker_settings

    def make(**environ) -> Worker:
        settings = worker_settings(database_url, **{"QUEUE_BACKEND": backend, "SQS_WAIT_TIME": "0", **environ})
        if backend == "sqs":
            client = request.getfixturevalue("aws_sqs")
            queues = [SqsQueue(settings, name, client=client) for name in ("enrolment", "enrolment-invalid")]
        else:
            queues = [DatabaseQueue(settings, name) for name in ("enrolment", "enrolment-invalid")]
        for queue in queues:
            queue.ensure_exists()
        return Worker(settings, *queues, rng=lambda: 0.0)

    return make


def received(queue) -> list:
    """What a queue hands out now, up to ten messages, without waiting."""
    return queue.receive(10, 0)


# -- behind the service's back -----------------------------------------------------------------------


def pg_rows(url: str, sql: str) -> list[tuple]:
    """The rows `sql` gives on the PostgreSQL database at `url`, on a connection of its own."""
    with contextlib.closing(psycopg2.connect(url, connect_timeout=5)) as connection, connection.cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetchall()


def insert_raw_row(database_url: str, message_id: str, body: bytes, attributes: bytes = b"{}",
                   queue: str = "enrolment") -> None:
    """A queue row as another tool might write it, bytes and all, outside peewee."""
    connection = sqlite3.connect(database_url.removeprefix("sqlite:///"))
    with connection:
        connection.execute(
            "INSERT INTO queue_message (id, queue, body, attributes, visible_at, receive_count, created)"
            " VALUES (?, ?, CAST(? AS TEXT), CAST(? AS TEXT), 0, 0, '2026-01-01 00:00:00')",
            (message_id, queue, body, attributes),
        )
    connection.close()


# -- the CLI in this process -----------------------------------------------------------------------


def invoke_cli(*args: str, **env: str):
    """Run `directory-api ARGS` in this process, of the variables it reads only `env` set; a crash fails the test."""
    from directory_api.cli import app
    from directory_api.settings import VARIABLES

    # Every variable the CLI reads, unset, so the developer's own environment cannot leak in.
    unset = {variable.name: None for variable in VARIABLES} | {f"DIRECTORY_API_{v.name}": None for v in VARIABLES}
    return CliRunner().invoke(app, list(args), env={**unset, **env}, catch_exceptions=False)


# -- subprocesses -----------------------------------------------------------------------------


class Process:
    """A subprocess whose output goes to a log file, so a failing test can show it."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], log_path: Path, cwd: Path | None = None):
        self.argv = list(argv)
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - the process writes to it until stop() closes it
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

    def full_log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

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


@pytest.fixture
def processes(tmp_path):
    """Every process a test starts, stopped at its end; their logs stay in tmp_path."""
    started = Processes(tmp_path)
    yield started
    started.stop_all()


def wait_for_root(process: Process, base_url: str, timeout: float = 30) -> None:
    """Wait until GET `base_url`/ answers 200, failing with the log if the process exits first."""

    def answers():
        assert process.alive(), f"{process.argv} exited:\n{process.log()}"
        return requests.get(f"{base_url}/", timeout=1).status_code == 200

    wait_until(answers, timeout, f"GET {base_url}/")


def start_serve(processes: Processes, cli: Sequence[str], env: Mapping[str, str], *args: str,
                name: str = "serve", ready: bool = True) -> tuple[Process, str]:
    """`serve` on a free port; returns (process, base URL), once GET / answers 200 unless `ready` is False."""
    port = free_port()
    process = processes.start([*cli, "serve", "--host", "127.0.0.1", "--port", str(port), *args], env, name)
    base_url = f"http://127.0.0.1:{port}"
    if ready:
        wait_for_root(process, base_url)
    return process, base_url


def start_dev(processes: Processes, cli: Sequence[str], env: Mapping[str, str], workdir: Path,
              name: str = "dev") -> tuple[Process, str]:
    """`dev` in `workdir` on a free port; returns (process, base URL) once GET / answers 200."""
    port = free_port()
    process = processes.start([*cli, "dev", "--port", str(port)], env, name, cwd=workdir)
    base_url = f"http://127.0.0.1:{port}"
    wait_for_root(process, base_url)
    return process, base_url


def start_work(processes: Processes, cli: Sequence[str], env: Mapping[str, str], *args: str,
               name: str = "work") -> Process:
    return processes.start([*cli, "work", *args], env, name)


class Serve:
    """`python directory_api.py serve` from this checkout on a free port, its output in a log file."""

    def __init__(self, processes: Processes, env: Mapping[str, str], *args: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._process = processes.start(
            [*SOURCE_CLI, "serve", "--host", "127.0.0.1", "--port", str(self.port), *args],
            {"PATH": os.environ["PATH"], "UI_SECRET": UI_SECRET, **env}, "serve", cwd=REPO,
        )
        self.process = self._process.popen

    def log(self) -> str:
        return self._process.full_log()

    def wait_ready(self) -> "Serve":
        wait_for_root(self._process, self.url)
        return self

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 15) -> int:
        self.process.send_signal(signum)
        return self.process.wait(timeout)

    def kill(self) -> None:
        self._process.kill()


@pytest.fixture
def serving(processes):
    """Start `serve` from source with settings and arguments; every one is stopped at the end of the test."""

    def start(env: Mapping[str, str], *args: str, ready: bool = True) -> Serve:
        serve = Serve(processes, env, *args)
        return serve.wait_ready() if ready else serve

    return start


def received_until_closed(port: int, data: bytes, timeout: float = 5.0) -> tuple[bytes, bool]:
    """Send `data`; return what came back and whether the server closed the connection within `timeout`."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except TimeoutError:
            return received, False
        except ConnectionResetError:
            pass
    return received, True


def statuses(received: bytes) -> list[int]:
    """The status codes of every HTTP response in `received`, in order."""
    return [int(status) for status in re.findall(rb"HTTP/1\.[01] (\d{3}) ", received)]


# -- moto as SQS: in this process, or as a server over HTTP ----------------------------------------


@pytest.fixture
def aws_credentials(monkeypatch):
    """Fake AWS credentials and region in the environment, so boto3 never looks for real ones."""
    for name, value in {**FAKE_AWS, "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def no_aws_credentials(monkeypatch, tmp_path):
    """An environment where boto3's chain finds no credentials: none set, no files, no instance metadata."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                 "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                 "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def aws_sqs(aws_credentials):
    """An SQS client on moto inside this process."""
    with mock_aws():
        yield boto3.client("sqs", region_name=REGION)


def answering(queue, monkeypatch, change):
    """Make the queue's ReceiveMessage answer what `change` makes of moto's answer."""
    receive = queue.client.receive_message
    monkeypatch.setattr(queue.client, "receive_message", lambda **kwargs: change(receive(**kwargs)))


def twice(response):
    """A ReceiveMessage answer with each message in it twice."""
    return {**response, "Messages": response.get("Messages", []) * 2}


def without_receive_count(response):
    """A ReceiveMessage answer without its messages' attributes (ApproximateReceiveCount among them)."""
    messages = response.get("Messages", [])
    return {**response, "Messages": [{k: v for k, v in m.items() if k != "Attributes"} for m in messages]}


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


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory) -> str:
    """One moto server for the session; tests keep apart by queue names."""
    started = Processes(tmp_path_factory.mktemp("moto"))
    endpoint = start_moto(started)
    yield endpoint
    started.stop_all()


def sqs_client(endpoint: str):
    """A boto3 SQS client straight to the moto server at `endpoint`."""
    return boto3.client(
        "sqs", endpoint_url=endpoint, region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing"
    )


class Sqs:
    """A client to moto over HTTP, to preload and inspect queues behind the service's back."""

    def __init__(self, endpoint: str):
        self.client = sqs_client(endpoint)

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


@pytest.fixture
def sqs(moto_endpoint) -> Sqs:
    return Sqs(moto_endpoint)


@pytest.fixture
def queues() -> tuple[str, str]:
    """Names of an enrolment and an invalid queue of the test's own."""
    return queue_names()


def sqs_env(endpoint: str, queues: tuple[str, str], database_url: str, **settings: object) -> dict[str, str]:
    """The settings of a serve or work process on the moto server at `endpoint`; `settings` override by name."""
    env = {
        **FAKE_AWS,
        "DATABASE_URL": database_url,
        "UI_SECRET": UI_SECRET,
        "QUEUE_BACKEND": "sqs",
        "SQS_ENDPOINT_URL": endpoint,
        "SQS_REGION_NAME": REGION,
        "SQS_ENROLMENT_QUEUE_NAME": queues[0],
        "SQS_INVALID_ENROLMENT_QUEUE_NAME": queues[1],
    }
    env.update({name: str(value) for name, value in settings.items()})
    return env


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


def signed_post(base_url: str, body: bytes, path: str = "/enrolment/", secret: str = UI_SECRET, timeout: float = 10,
                **kwargs) -> requests.Response:
    """POST `body` to `base_url``path`, signed; keyword arguments go to requests (headers are added to)."""
    url = f"{base_url}{path}"
    headers = {**signed_headers(url, body, secret=secret), **kwargs.pop("headers", {})}
    return requests.post(url, data=body, headers=headers, timeout=timeout, **kwargs)


def signed_get(base_url: str, path: str, secret: str = UI_SECRET, timeout: float = 10) -> requests.Response:
    url = f"{base_url}{path}"
    return requests.get(url, headers=signed_headers(url, b"", "GET", None, secret=secret), timeout=timeout)
