"""server: real `python directory_api.py serve` processes on real ports, SQS from a moto server over HTTP."""

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
import requests
from sigauth.helpers import RequestSigner

ROOT = Path(__file__).resolve().parent.parent
SECRET = "not-a-real-secret"
ENROLMENT = {
    "sso_id": 11,
    "company_number": "01234567",
    "company_name": "Acme Exports Ltd",
    "company_email": "enquiries@acme.example.com",
    "export_status": "YES",
    "date_of_creation": "2015-01-31",
}
FAKE_AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "eu-west-1"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, what: str, timeout: float = 20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = predicate()
            if result:
                return result
        except (OSError, requests.RequestException):
            pass
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


class Serve:
    """A `serve` subprocess on a free port, logging to a file."""

    def __init__(self, tmp_path: Path, env: dict, *args: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp_path / f"serve-{self.port}.log"
        self.process = subprocess.Popen(
            [sys.executable, "directory_api.py", "serve", "--host", "127.0.0.1", "--port", str(self.port), *args],
            cwd=ROOT,
            env={"PATH": os.environ["PATH"], "UI_SECRET": SECRET, **env},
            stdout=self.log_path.open("w"),
            stderr=subprocess.STDOUT,
        )

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_ready(self) -> "Serve":
        def answers():
            assert self.process.poll() is None, f"serve exited early:\n{self.log()}"
            return requests.get(self.url + "/", timeout=1).status_code == 200

        wait_until(answers, f"serve on port {self.port}")
        return self

    def stop(self, signum=signal.SIGTERM, timeout: float = 15) -> int:
        self.process.send_signal(signum)
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def serving(tmp_path):
    started: list[Serve] = []

    def start(env: dict, *args: str, ready: bool = True) -> Serve:
        serve = Serve(tmp_path, env, *args)
        started.append(serve)
        return serve.wait_ready() if ready else serve

    yield start
    for serve in started:
        serve.kill()


@pytest.fixture(scope="module")
def moto_endpoint(tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    moto_server = Path(sys.executable).parent / "moto_server"
    process = subprocess.Popen([str(moto_server), "-p", str(port)], stdout=log.open("w"), stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: requests.get(endpoint + "/moto-api/", timeout=1).ok, "moto_server")
        yield endpoint
    finally:
        process.terminate()
        process.wait(10)


def sqs_env(moto_endpoint: str, name: str, database_url: str) -> dict:
    return {
        **FAKE_AWS,
        "QUEUE_BACKEND": "sqs",
        "SQS_ENDPOINT_URL": moto_endpoint,
        "SQS_ENROLMENT_QUEUE_NAME": name,
        "SQS_INVALID_ENROLMENT_QUEUE_NAME": f"{name}-invalid",
        "DATABASE_URL": database_url,
    }


def sqs_client(moto_endpoint: str):
    return boto3.client("sqs", endpoint_url=moto_endpoint, region_name="eu-west-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def signed_post(url: str, payload=ENROLMENT, path="/enrolment/", **kwargs) -> requests.Response:
    body = json.dumps(payload).encode()
    headers = RequestSigner(secret=SECRET, sender_id="directory-ui").get_signature_headers(
        url + path, body, "POST", "application/json"
    )
    return requests.post(url + path, data=body, headers={**headers, "Content-Type": "application/json"},
                         timeout=10, **kwargs)


def test_a_sigauth_signed_enrolment_to_serve_debug_lands_on_the_database_queue(serving, tmp_path):
    database = tmp_path / "debug.sqlite3"
    serve = serving({"DATABASE_URL": f"sqlite:///{database}"}, "--debug")
    answer = signed_post(serve.url)
    assert answer.status_code == 202, answer.text
    message_id = answer.json()["id"]
    with sqlite3.connect(database) as connection:
        rows = connection.execute("SELECT queue, body FROM queue_message WHERE id = ?", (message_id,)).fetchall()
    assert [(queue, json.loads(body)) for queue, body in rows] == [("enrolment", ENROLMENT)]


def test_serve_creates_the_sqs_queue_at_start_and_queues_enrolments_on_it(serving, moto_endpoint, tmp_path):
    env = sqs_env(moto_endpoint, "serve-creates", f"sqlite:///{tmp_path / 'db.sqlite3'}")
    serve = serving(env, "--debug")  # --debug migrates the empty SQLite database
    client = sqs_client(moto_endpoint)
    queue_url = client.get_queue_url(QueueName="serve-creates")["QueueUrl"]
    answer = signed_post(serve.url)
    assert answer.status_code == 202, answer.text
    messages = client.receive_message(QueueUrl=queue_url, WaitTimeSeconds=1)["Messages"]
    assert [(m["MessageId"], json.loads(m["Body"])) for m in messages] == [(answer.json()["id"], ENROLMENT)]


def test_serve_on_sqs_accepts_enrolments_while_the_database_is_down(serving, moto_endpoint):
    down = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"
    serve = serving(sqs_env(moto_endpoint, "database-down", down))
    assert signed_post(serve.url).status_code == 202
    health = requests.get(serve.url + "/healthcheck/", timeout=15)
    assert (health.status_code, health.json()) == (503, {"status": "unavailable", "database": "unavailable", "queue": "ok"})


def test_serve_on_the_database_queue_refuses_to_start_without_the_database(serving):
    down = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"
    serve = serving({"QUEUE_BACKEND": "database", "DATABASE_URL": down}, "--debug", ready=False)
    assert serve.process.wait(30) == 2
    assert "error: DATABASE_URL: cannot connect" in serve.log()
    assert "Traceback" not in serve.log()


def test_a_body_declared_over_256_kib_gets_a_json_413_from_the_server(serving, tmp_path):
    serve = serving({"DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}"}, "--debug")
    with socket.create_connection(("127.0.0.1", serve.port)) as sock:
        sock.sendall(b"POST /enrolment/ HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n")
        response = sock.makefile("rb").read()
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413") and b"application/json" in head
    assert json.loads(body) == {"detail": "The body is larger than 256 KiB."}


def test_a_chunked_body_over_256_kib_gets_a_json_413_from_the_server(serving, tmp_path):
    serve = serving({"DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}"}, "--debug")
    chunks = (b"x" * 65536 for _ in range(8))
    answer = requests.post(serve.url + "/enrolment/", data=chunks, timeout=10)
    assert (answer.status_code, answer.json()) == (413, {"detail": "The body is larger than 256 KiB."})


def test_sigterm_lets_the_request_in_flight_finish_then_exits_0(serving, tmp_path):
    serve = serving({"DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}"}, "--debug")
    body = json.dumps(ENROLMENT).encode()
    headers = RequestSigner(secret=SECRET, sender_id="directory-ui").get_signature_headers(
        serve.url + "/enrolment/", body, "POST", "application/json"
    )
    head = (
        "POST /enrolment/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nX-Signature: {headers['X-Signature']}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", serve.port)) as sock:
        sock.sendall(head + body[:10])  # the request is in flight: half its body is still to come
        time.sleep(0.3)
        serve.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", serve.port), timeout=2).close()
        sock.sendall(body[10:])
        response = sock.makefile("rb").readline()
    assert response.startswith(b"HTTP/1.1 202")
    assert serve.process.wait(10) == 0


def test_sigint_stops_an_idle_serve_with_exit_0(serving, tmp_path):
    serve = serving({"DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}"}, "--debug")
    started = time.monotonic()
    assert serve.stop(signal.SIGINT) == 0
    assert time.monotonic() - started < 3


def test_processes_share_one_port_and_refuse_a_replay_to_any_of_them(serving, moto_endpoint, tmp_path):
    env = sqs_env(moto_endpoint, "processes", f"sqlite:///{tmp_path / 'db.sqlite3'}")
    serve = serving(env, "--debug", "--processes", "2")
    body = json.dumps(ENROLMENT).encode()
    headers = RequestSigner(secret=SECRET, sender_id="directory-ui").get_signature_headers(
        serve.url + "/enrolment/", body, "POST", "application/json"
    )
    headers["Content-Type"] = "application/json"
    # A fresh connection each time, so the requests spread over both processes.
    statuses = [
        requests.post(serve.url + "/enrolment/", data=body, headers={**headers, "Connection": "close"}, timeout=10).status_code
        for _ in range(6)
    ]
    assert sorted(statuses) == [202] + [401] * 5
    assert serve.stop() == 0
