"""Hostile clients of `serve`: idle and dribbling connections, ambiguous framing, replays under other ids."""

import contextlib
import json
import os
import re
import resource
import socket
import threading
import time

import pytest
import requests

from tests.e2e.harness import post_enrolment, request_bytes, service_env
from tests.factories import enrolment_payload
from tests.support.processes import start_serve
from tests.support.signing import signed_headers
from tests.support.sockets import received_until_closed, statuses

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

PATH = "/enrolment/"
IDLE = 1000
DRIBBLING = 200
DRIBBLE_EVERY = 1.0  # seconds between one dribbled byte and the next on each connection
ATTACK_SECONDS = 15  # past the 10 s header deadline, so dribblers are cut off and come back
ANSWERED_WITHIN = 1.0


@pytest.fixture
def enough_open_files():
    """This process holds over a thousand sockets: raise its soft limit for the test when it is lower."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = IDLE + DRIBBLING + 256
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"needs {needed} open files, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


class Dribblers:
    """Connections that send a request's first line, then one byte now and then, reconnecting when cut off."""

    def __init__(self, port: int, count: int, every: float):
        self.port = port
        self.every = every
        self.sockets = [self._connect() for _ in range(count)]
        self.reconnected = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        sock.sendall(b"POST /enrolment/ HTTP/1.1\r\nHost: x\r\n")
        return sock

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            for index, sock in enumerate(self.sockets):
                try:
                    sock.sendall(b"X")
                except OSError:
                    sock.close()
                    with contextlib.suppress(OSError):
                        self.sockets[index] = self._connect()
                        self.reconnected += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        for sock in self.sockets:
            sock.close()


def timed(call):
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


def test_a_thousand_idle_and_two_hundred_dribbling_connections_do_not_keep_a_signed_post_out(
    cli, base_env, pg, moto_endpoint, queues, processes, enough_open_files
):
    # Regression: waitress accepted 100 connections a process, and every dribbled byte reset its idle
    # timeout: 205 idle sockets made signed POSTs time out, 250 dribbling ones kept serve down for minutes.
    env = service_env(base_env, database_url=pg, sqs_endpoint=moto_endpoint, queues=queues)
    serve, base_url = start_serve(processes, cli, env, "--processes", "2")
    port = int(base_url.rsplit(":", 1)[1])
    idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(IDLE)]
    dribblers = Dribblers(port, DRIBBLING, DRIBBLE_EVERY)
    try:
        slowest, n = 0.0, 0
        deadline = time.monotonic() + ATTACK_SECONDS
        while time.monotonic() < deadline:
            n += 1
            enrolment = enrolment_payload(n)
            posted, seconds = timed(
                lambda enrolment=enrolment: post_enrolment(base_url, enrolment, timeout=ANSWERED_WITHIN * 5)
            )
            assert posted.status_code == 202, posted.text
            hello, hello_seconds = timed(lambda: requests.get(f"{base_url}/", timeout=ANSWERED_WITHIN * 5))
            assert hello.status_code == 200
            slowest = max(slowest, seconds, hello_seconds)
            time.sleep(1)
        assert slowest < ANSWERED_WITHIN, (
            f"a request took {slowest:.2f}s behind {IDLE} idle and {DRIBBLING} dribbling connections"
        )
        assert dribblers.reconnected >= DRIBBLING, "the dribbling connections were never cut off"
        assert serve.alive(), serve.log()
    finally:
        dribblers.close()
        for sock in idle:
            sock.close()


def test_content_length_with_transfer_encoding_is_answered_on_a_connection_then_closed(live_api):
    # Regression: it was answered on a kept connection, so a pipelined second request was served too.
    body = json.dumps(enrolment_payload(1)).encode()
    chunked = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(chunked)}\r\nTransfer-Encoding: chunked\r\n"
        f"X-Signature: {signed_headers(live_api.base_url + PATH, body)['X-Signature']}\r\n\r\n"
    ).encode()
    before = live_api.queued()

    received, closed = received_until_closed(live_api.port, head + chunked + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")

    assert statuses(received) == [400] and closed, received
    assert live_api.queued() == before


def test_expect_100_continue_with_a_gigabyte_body_gets_413_without_100_continue(live_api):
    # Regression: "100 Continue" came first, and the body was read before the 413.
    body = b'{"sso_id": 1}'
    request = request_bytes(
        "POST", PATH, b"", {**signed_headers(live_api.base_url + PATH, body), "Expect": "100-continue"},
        content_length=10**9,
    )

    received, closed = received_until_closed(live_api.port, request)

    assert statuses(received) == [413] and closed, received


def test_a_signed_request_sent_again_under_three_other_hawk_ids_is_queued_once(live_api):
    # Regression: the Hawk id is outside the MAC but was inside the nonce key: one signature queued 4 enrolments.
    body = json.dumps(enrolment_payload(2)).encode()
    headers = signed_headers(live_api.base_url + PATH, body)
    before = live_api.queued()

    answers = []
    for hawk_id in ("directory-ui", "directory-sso", "directory-cms", "someone-else"):
        copy = {**headers, "X-Signature": re.sub(r'id="[^"]*"', f'id="{hawk_id}"', headers["X-Signature"], count=1)}
        answers.append(requests.post(live_api.base_url + PATH, data=body, headers=copy, timeout=10).status_code)

    assert answers == [202, 401, 401, 401]
    assert live_api.queued() == before + 1


def nonce_directories(tmp: os.PathLike) -> set[str]:
    return {name for name in os.listdir(tmp) if name.startswith("directory-api-nonces-")}


def test_the_nonce_directory_of_a_killed_serve_is_removed_when_serve_starts_again(
    cli, base_env, pg, moto_endpoint, queues, processes, tmp_path
):
    # Regression: after a SIGKILL the nonce directory stayed in the temporary directory forever.
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**service_env(base_env, database_url=pg, sqs_endpoint=moto_endpoint, queues=queues), "TMPDIR": str(tmp)}
    killed, _ = start_serve(processes, cli, env, name="killed")
    left = nonce_directories(tmp)
    killed.kill()
    assert len(left) == 1 and nonce_directories(tmp) == left

    start_serve(processes, cli, env, name="restarted")

    remaining = nonce_directories(tmp)
    assert len(remaining) == 1 and not remaining & left
