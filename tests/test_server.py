"""server: real `python directory_api.py serve` processes on real ports, SQS from a moto server over HTTP."""

import contextlib
import errno
import json
import os
import random
import re
import resource
import signal
import socket
import sqlite3
import threading
import time

import pytest
import requests

from directory_api import hardened, server
from directory_api.vendored_internals import HTTPRequestParser, socket_map, wasyncore
from tests.factories import enrolment_payload
from tests.support import signing, sqs
from tests.support.checkout import REPO, SOURCE_CLI
from tests.support.processes import Process, wait_for_root
from tests.support.signing import UI_SECRET, signed_headers
from tests.support.sockets import free_port, received_until_closed, statuses
from tests.support.sqs import sqs_client
from tests.support.waits import wait_until

ENROLMENT = enrolment_payload(11)


def sqs_env(moto_endpoint: str, name: str, database_url: str) -> dict:
    return sqs.sqs_env(moto_endpoint, (name, f"{name}-invalid"), database_url)


def signed_post(url: str, payload=ENROLMENT, path="/enrolment/", **kwargs) -> requests.Response:
    return signing.signed_post(url, json.dumps(payload).encode(), path, **kwargs)


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
    expected = {"status": "unavailable", "database": "unavailable", "queue": "ok"}
    assert (health.status_code, health.json()) == (503, expected)


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
    headers = signed_headers(serve.url + "/enrolment/", body)
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
    headers = signed_headers(serve.url + "/enrolment/", body)
    # A fresh connection each time, so the requests spread over both processes.
    statuses = [
        requests.post(
            serve.url + "/enrolment/", data=body, headers={**headers, "Connection": "close"}, timeout=10
        ).status_code
        for _ in range(6)
    ]
    assert sorted(statuses) == [202] + [401] * 5
    assert serve.stop() == 0


def children_of(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as listing:
        return [int(child) for child in listing.read().split()]


def port_refuses(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False


def pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rpartition(")")[2].split()[0] == "Z"  # ended, waiting for init to reap it


def test_children_of_a_sigkilled_serve_end_and_free_the_port_for_the_next_serve(serving, processes, tmp_path):
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}"}
    serve = serving(env, "--debug", "--processes", "2")
    children = children_of(serve.process.pid)
    assert len(children) == 2
    serve.kill()  # SIGKILL of the parent alone, as the OOM killer or a KillMode=process supervisor does
    wait_until(lambda: all(pid_gone(child) for child in children), 10, "the orphaned children to end")
    wait_until(lambda: port_refuses(serve.port), 5, "the port to be free")
    serve_on(processes, serve.port, env, "--debug")


def serve_on(processes, port: int, env: dict, *args: str) -> Process:
    """`serve` from source on `port` (one a Serve had), once it answers."""
    again = processes.start(
        [*SOURCE_CLI, "serve", "--host", "127.0.0.1", "--port", str(port), *args],
        {"PATH": os.environ["PATH"], "UI_SECRET": UI_SECRET, **env}, "serve-again", cwd=REPO,
    )
    wait_for_root(again, f"http://127.0.0.1:{port}")
    return again


def test_a_signed_request_seen_before_a_restart_is_still_refused_as_a_replay_after_it(serving, processes, tmp_path):
    # The nonce store lives in the temporary directory, one per machine: this test's own.
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}", "TMPDIR": str(tmp_path)}
    serve = serving(env, "--debug", "--processes", "2")
    body = json.dumps(ENROLMENT).encode()
    headers = {**signed_headers(serve.url + "/enrolment/", body), "Connection": "close"}

    def post() -> int:
        return requests.post(serve.url + "/enrolment/", data=body, headers=headers, timeout=10).status_code

    assert [post(), post()] == [202, 401]
    assert serve.stop() == 0
    serve_on(processes, serve.port, env, "--debug")
    assert post() == 401


# -- hostile connections, against a server in this process --------------------------------------


def hello_app(environ, start_response):
    """A WSGI app that reads the body and answers 200 JSON."""
    environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", "2")])
    return [b"{}"]


class InProcess:
    """create_server(app) running in a thread of this process, as serve runs it."""

    def __init__(self, app=None, drain_seconds: float = 1):
        self.http = hardened.create_server(app or hello_app, host="127.0.0.1", port=0, threads=2)
        self.port = self.http.socket.getsockname()[1]
        self.stopping = threading.Event()
        self.thread = threading.Thread(
            target=hardened.run, args=(self.http, self.stopping), kwargs={"drain_seconds": drain_seconds}, daemon=True
        )
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(10)


@contextlib.contextmanager
def turned_by_hand(app=hello_app):
    """create_server(app) with one thread and no loop running: the test calls its handlers itself."""
    http = hardened.create_server(app, host="127.0.0.1", port=0, threads=1)
    try:
        yield http
    finally:
        wasyncore.close_all(socket_map(http))
        http.task_dispatcher.shutdown()


@contextlib.contextmanager
def connected(http, count: int):
    """`count` client connections to `http`, waiting in its backlog until it accepts them; closed at the end."""
    clients = [socket.create_connection(http.socket.getsockname()[:2]) for _ in range(count)]
    try:
        yield clients
    finally:
        for client in clients:
            client.close()


@pytest.fixture
def in_process():
    """Start an InProcess server (keyword arguments as InProcess) and return its port; stopped after the test."""
    started: list[InProcess] = []

    def start(**kwargs) -> int:
        started.append(InProcess(**kwargs))
        return started[-1].port

    yield start
    for running in started:
        running.stop()


def test_content_length_with_transfer_encoding_is_refused_and_the_connection_closed(in_process):
    # Regression: it was answered and the connection kept, so a pipelined second request was served.
    port = in_process()
    smuggling = (
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        b"GET /second HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    received, closed = received_until_closed(port, smuggling)
    assert statuses(received) == [400] and closed, received
    assert b"Transfer-Encoding" in received  # the JSON detail says why


def test_content_length_with_transfer_encoding_is_refused_when_waitress_drops_content_length(in_process, monkeypatch):
    # waitress's unreleased main pops CONTENT_LENGTH for a chunked request: the check must not read it there.
    parse_header = HTTPRequestParser.parse_header

    def as_waitress_main(parser, header_plus):
        parse_header(parser, header_plus)
        if parser.chunked:
            parser.headers.pop("CONTENT_LENGTH", None)

    monkeypatch.setattr(HTTPRequestParser, "parse_header", as_waitress_main)
    port = in_process()
    smuggling = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    received, closed = received_until_closed(port, smuggling + b"GET /second HTTP/1.1\r\nHost: x\r\n\r\n")
    assert statuses(received) == [400] and closed, received


def test_transfer_encoding_on_http_1_0_is_refused_and_the_connection_closed(in_process):
    port = in_process()
    request = b"POST / HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    received, closed = received_until_closed(port, request + b"GET / HTTP/1.0\r\n\r\n")
    assert statuses(received) == [400] and closed, received


def test_a_chunked_request_alone_is_still_served_on_a_kept_connection(in_process):
    port = in_process()
    request = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
    received, closed = received_until_closed(port, request + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", timeout=1)
    assert statuses(received) == [200, 200] and not closed, received


def test_expect_100_continue_over_the_limit_gets_413_without_100_continue(in_process):
    # Regression: waitress sent "100 Continue" for a body it had refused, then read it before the 413.
    port = in_process()
    head = b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 1000000000\r\n\r\n"
    received, closed = received_until_closed(port, head)
    assert statuses(received) == [413] and closed, received


def test_expect_100_continue_within_the_limit_still_gets_100_continue_then_the_answer(in_process):
    port = in_process()
    with socket.create_connection(("127.0.0.1", port), timeout=3) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(b"{}")
        assert sock.recv(1000).startswith(b"HTTP/1.1 200")


def test_more_idle_connections_than_waitress_allows_do_not_keep_a_request_out(in_process):
    # Regression: waitress stops accepting at 100 connections, so 100 idle sockets locked every client out.
    port = in_process()
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(150)]
    try:
        received, _ = received_until_closed(port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", timeout=1)
        assert statuses(received) == [200]
    finally:
        for sock in idle:
            sock.close()


def closed_by_server(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def test_at_the_connection_limit_the_quietest_connections_make_room(in_process, monkeypatch):
    monkeypatch.setattr(hardened, "CONNECTION_LIMIT", 20)
    port = in_process()
    idle = []
    try:
        for _ in range(60):
            idle.append(socket.create_connection(("127.0.0.1", port)))
            time.sleep(0.005)  # accepted in order, so the oldest are the quietest
        received, _ = received_until_closed(port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", timeout=1)
        assert statuses(received) == [200]
        closed = [closed_by_server(sock) for sock in idle]
        assert sum(closed) >= 40 and not any(closed[-10:]), closed
    finally:
        for sock in idle:
            sock.close()


def test_a_request_being_answered_is_never_closed_to_make_room(in_process, monkeypatch):
    monkeypatch.setattr(hardened, "CONNECTION_LIMIT", 4)
    release = threading.Event()

    def slow_app(environ, start_response):
        release.wait(5)
        return hello_app(environ, start_response)

    port = in_process(app=slow_app)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as busy:
        busy.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.2)
        crowd = [socket.create_connection(("127.0.0.1", port)) for _ in range(12)]
        time.sleep(0.2)
        release.set()
        assert busy.recv(1000).startswith(b"HTTP/1.1 200")
        for sock in crowd:
            sock.close()


def seconds_until_closed(sock: socket.socket, byte_every: float, give_up: float) -> float:
    """Send one byte every `byte_every` seconds until the server closes the connection; return how long it took."""
    started = time.monotonic()
    while time.monotonic() - started < give_up:
        if closed_by_server(sock):
            break
        sock.setblocking(True)
        try:
            sock.sendall(b"X")
        except OSError:
            break
        time.sleep(byte_every)
    return time.monotonic() - started


def test_a_client_dribbling_its_headers_is_cut_off_after_the_header_deadline(in_process, monkeypatch):
    # Regression: every byte reset waitress's idle timeout, so a byte every few seconds held a connection forever.
    monkeypatch.setattr(hardened, "HEADER_SECONDS", 0.5)
    port = in_process()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n")
        assert seconds_until_closed(sock, byte_every=0.1, give_up=5) < 3


def test_a_stop_does_not_wait_for_a_client_still_dribbling_its_headers():
    running = InProcess(drain_seconds=5)
    with socket.create_connection(("127.0.0.1", running.port)) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHos")
        time.sleep(0.2)
        started = time.monotonic()
        running.stop()
    assert time.monotonic() - started < 1


def test_the_connection_limit_fits_under_the_open_file_limit():
    assert hardened.connection_limit(1024, threads=8) == 1024 - hardened.FD_RESERVE - 32
    assert hardened.connection_limit(10**6, threads=8) == hardened.CONNECTION_LIMIT
    assert hardened.connection_limit(resource.RLIM_INFINITY, threads=8) == hardened.CONNECTION_LIMIT


def test_the_open_file_limit_is_raised_towards_what_serve_needs():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        server.raise_open_file_limit(5000)
        raised = 5000 if hard == resource.RLIM_INFINITY else min(5000, hard)
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (raised, hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def read_response(sock: socket.socket) -> bytes:
    """One whole response with a Content-Length, read from a kept connection."""
    received = b""
    while b"\r\n\r\n" not in received:
        received += sock.recv(4096)
    head, _, body = received.partition(b"\r\n\r\n")
    content_length = re.search(rb"Content-Length: (\d+)", head)
    assert content_length, head
    length = int(content_length.group(1))
    while len(body) < length:
        body += sock.recv(4096)
    return head + b"\r\n\r\n" + body


def test_a_keep_alive_connection_is_closed_after_its_hundredth_answer(in_process):
    # So a small pool of long-lived connections cannot keep all its traffic on one of serve's processes.
    port = in_process()
    with socket.create_connection(("127.0.0.1", port), timeout=3) as sock:
        answers = []
        for _ in range(hardened.REQUESTS_PER_CONNECTION):
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            answers.append(read_response(sock))
        assert sock.recv(1) == b""  # closed after the last answer
    assert all(answer.startswith(b"HTTP/1.1 200") for answer in answers)
    assert [b"Connection: close" in answer for answer in answers] == [False] * (len(answers) - 1) + [True]


def test_one_turn_of_the_loop_accepts_every_connection_waiting():
    # Regression: waitress accepts one a turn, and a turn costs more the more connections are open:
    # at 4,000 open, a burst of new ones waited in the backlog for up to 10 s.
    with turned_by_hand() as http, connected(http, 50):
        http.handle_accept()
        assert len(http.active_channels) == 50


def out_of_files():
    raise OSError(errno.EMFILE, "Too many open files")


def test_out_of_files_the_quietest_connections_make_room_for_the_next_turn(monkeypatch):
    with turned_by_hand() as http, connected(http, 3):
        http.handle_accept()
        monkeypatch.setattr(http, "accept", out_of_files)
        http.handle_accept()
        assert len(http.active_channels) == 0


def test_a_channel_whose_task_is_sending_its_answer_is_not_writable():
    # Regression: waitress said writable whenever output was buffered, also while the task answering held the
    # buffer's lock to send it itself: handle_write could send nothing, and the loop spun on the always-writable
    # socket (~36 turns a request at 16 connections), starving that very task of the GIL.
    with turned_by_hand() as http, connected(http, 1):
        http.handle_accept()
        (channel,) = http.active_channels.values()
        channel.requests, channel.total_outbufs_len = ["a request being answered"], 100
        assert not channel.writable()
        channel.requests = []
        assert channel.writable()  # answered: the loop sends what is left


def test_an_answer_larger_than_the_output_buffer_reaches_a_slow_reader_whole(in_process):
    # The task sends its own output; when the socket will not take it all, it wakes the loop, which
    # must then send for it (past waitress's 16 MiB high watermark the task waits for the loop).
    chunk, chunks = b"x" * (1 << 20), 48

    def large_app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(chunk) * chunks))])
        return (chunk for _ in range(chunks))

    port = in_process(app=large_app)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.5)  # the task fills the socket and the buffer meanwhile
        received = bytearray()
        while len(received) < len(chunk) * chunks and (data := sock.recv(1 << 20)):
            received += data
        head, _, body = bytes(received).partition(b"\r\n\r\n")
        while len(body) < len(chunk) * chunks and (data := sock.recv(1 << 20)):
            body += data
    assert head.startswith(b"HTTP/1.1 200") and body == chunk * chunks


def test_idle_connections_cost_the_loop_nothing_while_another_is_answered(monkeypatch):
    # Regression: every turn of waitress's loop asked each open connection what it wanted and polled them
    # all, so each request cost O(connections): at 64 connections one process fell to a third of its rate.
    monkeypatch.setattr(hardened, "CLEANUP_SECONDS", 3600)  # no maintenance sweep (it asks every connection) mid-test
    asked = []
    readable = hardened.JsonErrorChannel.readable
    monkeypatch.setattr(hardened.JsonErrorChannel, "readable", lambda channel: asked.append(1) or readable(channel))
    running = InProcess()
    idle = [socket.create_connection(("127.0.0.1", running.port)) for _ in range(200)]
    try:
        with socket.create_connection(("127.0.0.1", running.port), timeout=3) as sock:
            wait_until(lambda: len(running.http.active_channels) == 201, 20, "every connection accepted")
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            read_response(sock)
            asked.clear()
            for _ in range(50):
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                read_response(sock)
        assert len(asked) < 10 * 50
    finally:
        for sock in idle:
            sock.close()
        running.stop()


def echo_length_app(environ, start_response):
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    answer = b'{"length": %d}' % len(body)
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(answer)))])
    return [answer]


def test_connections_opened_abandoned_and_reopened_at_once_are_each_answered_right(in_process):
    # Socket numbers are reused as fast as clients close: the loop must never hand one
    # connection's event or answer to another that took its number.
    port = in_process(app=echo_length_app)
    wrong: list[bytes] = []

    def client(seed: int) -> None:
        try:
            requests_of(random.Random(seed))
        except OSError as error:
            wrong.append(repr(error).encode())

    def requests_of(rnd: random.Random) -> None:
        for _ in range(60):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                for _ in range(rnd.randint(1, 3)):
                    body = b"x" * rnd.choice([0, 7, 5000])
                    request = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body
                    if rnd.random() < 0.15:
                        sock.sendall(request[: rnd.randint(1, len(request))])  # abandoned mid-request
                        break
                    sock.sendall(request)
                    answer = read_response(sock)
                    if not answer.endswith(b'{"length": %d}' % len(body)):
                        wrong.append(answer)

    clients = [threading.Thread(target=client, args=(seed,)) for seed in range(12)]
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join(60)
    assert not wrong and not any(thread.is_alive() for thread in clients)
