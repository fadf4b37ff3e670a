"""Observing real processes: serve --processes 2's /metrics, work --metrics-port, JSON lines, request ids end to end."""

import json
import os
import re
import signal
import socket
import threading
from pathlib import Path

import pytest
import requests

from directory_api import logs
from tests.factories import enrolment_body
from tests.support.checkout import SOURCE_CLI
from tests.support.metrics import metric_samples
from tests.support.processes import start_work
from tests.support.signing import signed_post
from tests.support.sockets import free_port
from tests.support.waits import wait_until

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def database_env(tmp_path) -> dict:
    """serve and work on one SQLite file and its database queue, logging JSON."""
    return {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'observed.sqlite3'}",
        "QUEUE_BACKEND": "database",
        "SQS_ENROLMENT_QUEUE_NAME": "enrolment",
        "SQS_INVALID_ENROLMENT_QUEUE_NAME": "enrolment-invalid",
        "LOG_FORMAT": "json",
    }


@pytest.fixture
def serving(serving):
    """serve --debug: it migrates the database."""
    return lambda env, *args: serving(env, "--debug", *args)


def json_lines(text: str) -> list[dict]:
    """Every line as a JSON object; fails on the first line that is not one."""
    entries = []
    for line in text.splitlines():
        try:
            entries.append(json.loads(line))
        except ValueError:
            pytest.fail(f"not a JSON line: {line!r}")
    return entries


def scrape(url: str) -> dict:
    return metric_samples(requests.get(url, timeout=5).text)


def requests_total(found: dict, route: str, method: str, status: str) -> float:
    return found.get(("directory_api_http_requests_total",
                      (("method", method), ("route", route), ("status", status))), 0)


def raw_request(port: int, head: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(head)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    return answer


def test_serve_processes_2_metrics_count_every_request_of_both_processes_exactly(serving, database_env):
    serve = serving(database_env, "--processes", "2", "--threads", "4")
    directory = re.search(r"summed in (\S+)\"", serve.log()).group(1)
    before = scrape(serve.url + "/metrics")  # wait_ready's GETs of / count too
    hellos = requests_total(before, "/", "GET", "200")

    # Many connections at once, so both processes take some.
    def hello_burst():
        for _ in range(10):
            requests.get(serve.url + "/", timeout=5)

    burst = [threading.Thread(target=hello_burst) for _ in range(6)]
    for thread in burst:
        thread.start()
    for thread in burst:
        thread.join(30)
    for _ in range(3):
        requests.get(serve.url + "/no-such-path", timeout=5)
    for _ in range(4):
        assert signed_post(serve.url, enrolment_body().encode()).status_code == 202

    found = scrape(serve.url + "/metrics")

    assert requests_total(found, "/", "GET", "200") == hellos + 60
    assert requests_total(found, "unmatched", "GET", "404") == 3
    assert requests_total(found, "/enrolment/", "POST", "202") == 4
    assert requests_total(found, "/metrics", "GET", "200") == 1
    assert found[("directory_api_enrolments_queued_total", ())] == 4
    assert found[("directory_api_http_request_duration_seconds_count", (("route", "/"),))] == hellos + 60
    counters = [name for name in os.listdir(directory) if name.startswith("counter_")]
    assert len(counters) == 2, "both serve processes counted requests"
    assert serve.stop() == 0
    assert not os.path.exists(directory), "the metrics directory is removed at exit"


def test_every_line_serve_writes_under_log_format_json_parses(serving, database_env):
    serve = serving(database_env)
    signed_post(serve.url, enrolment_body().encode())
    requests.get(serve.url + "/no-such-path", timeout=5)
    raw_request(serve.port, b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n")  # waitress's own 400
    assert serve.stop() == 0

    entries = json_lines(serve.log())

    assert {"settings (--debug)", "stopped"} <= {entry["message"] for entry in entries}
    access = [entry for entry in entries if entry["logger"] == "directory_api.access"]
    assert [(entry["method"], entry["status"]) for entry in access][-3:] == [("POST", 202), ("GET", 404), ("GET", 400)]
    for entry in entries:
        assert {"time", "level", "logger", "message"} <= set(entry)


@pytest.mark.parametrize("hostile", [b"has spaces in it", b"x" * 10_240, b"a\tb"], ids=["spaces", "10KB", "tab"])
def test_a_hostile_request_id_sent_to_serve_is_replaced_and_never_logged(serving, database_env, hostile):
    serve = serving(database_env)

    answer = raw_request(serve.port, b"GET / HTTP/1.1\r\nHost: x\r\nX-Request-ID: " + hostile + b"\r\n\r\n")

    echoed = re.search(rb"X-Request-ID: (\S+)\r\n", answer, re.IGNORECASE).group(1).decode()
    assert logs.safe_request_id(echoed) and echoed.encode() != hostile
    assert serve.stop() == 0
    assert hostile.decode() not in serve.log()
    assert any(entry.get("request_id") == echoed for entry in json_lines(serve.log()))


def test_a_newline_in_a_request_id_is_refused_by_the_server_with_a_request_id_of_its_own(serving, database_env):
    serve = serving(database_env)

    answer = raw_request(serve.port, b"GET / HTTP/1.1\r\nHost: x\r\nX-Request-ID: evil\nInjected: 1\r\n\r\n")

    assert answer.split(b"\r\n")[0].endswith(b" 400 Bad Request")
    assert logs.safe_request_id(re.search(rb"X-Request-ID: (\S+)\r\n", answer, re.IGNORECASE).group(1).decode())
    assert serve.stop() == 0
    assert "Injected" not in serve.log()


def work(processes, env: dict, *args: str):
    return start_work(processes, SOURCE_CLI, {"PATH": os.environ["PATH"], **env}, "--debug", *args)


def test_a_request_id_goes_from_the_client_through_the_access_line_to_the_workers_line(
        serving, database_env, processes):
    serve = serving(database_env)
    answer = _signed_post_with_request_id(serve.url, "client-req.42")
    assert answer.status_code == 202 and answer.headers["X-Request-ID"] == "client-req.42"
    message_id = answer.json()["id"]
    assert serve.stop() == 0

    worker = work(processes, database_env, "--once")
    assert worker.popen.wait(60) == 0, worker.full_log()

    access = [e for e in json_lines(serve.log()) if e.get("request_id") == "client-req.42"]
    assert [(e["logger"], e["method"], e["path"], e["status"]) for e in access] == [
        ("directory_api.access", "POST", "/enrolment/", 202)]
    worker_lines = [e for e in json_lines(worker.full_log()) if e.get("request_id") == "client-req.42"]
    assert worker_lines and worker_lines[0]["message_id"] == message_id
    assert worker_lines[0]["logger"] == "directory_api.worker"


def _signed_post_with_request_id(url: str, request_id: str) -> requests.Response:
    return signed_post(url, enrolment_body().encode(), headers={"X-Request-ID": request_id})


def test_work_metrics_port_serves_the_message_and_email_counts_after_a_drain_with_a_set_aside_message(
        serving, database_env, processes):
    serve = serving(database_env)  # migrates the database (--debug) and queues what the worker drains
    for _ in range(3):
        assert _signed_post_with_request_id(serve.url, "r").status_code == 202
    assert serve.stop() == 0
    _queue_raw(database_env, "not json")
    port = free_port()

    worker = work(processes, database_env, "--metrics-port", str(port))
    try:
        url = f"http://127.0.0.1:{port}/metrics"

        def drained():
            found = scrape(url)
            done = found[("directory_api_worker_messages_total", (("outcome", "set_aside"),))] == 1
            return done and found[("directory_api_emails_total", (("outcome", "logged"),))] == 3 and found

        found = wait_until(drained, 20, "the worker's metrics after the drain")
    finally:
        worker.popen.send_signal(signal.SIGTERM)
        assert worker.popen.wait(10) == 0, worker.full_log()

    counts = {outcome: found[("directory_api_worker_messages_total", (("outcome", outcome),))]
              for outcome in ("saved", "duplicate", "set_aside", "retried")}
    assert counts == {"saved": 3, "duplicate": 0, "set_aside": 1, "retried": 0}
    emails = {outcome: found[("directory_api_emails_total", (("outcome", outcome),))]
              for outcome in ("sent", "failed", "retried", "logged")}
    assert emails == {"sent": 0, "failed": 0, "retried": 0, "logged": 3}
    assert found[("directory_api_worker_batch_duration_seconds_count", ())] >= 1
    json_lines(worker.full_log())


def _queue_raw(env: dict, body: str) -> None:
    """Put a body on the database queue as another sender would, bypassing serve's checks."""
    from directory_api import db
    from directory_api.queues.database import DatabaseQueue
    from directory_api.settings import Settings

    settings = Settings.from_environ(env, require=())
    database = db.bind(settings.required("DATABASE_URL"))
    try:
        DatabaseQueue(settings, settings.required("SQS_ENROLMENT_QUEUE_NAME")).send(body)
    finally:
        database.close()
