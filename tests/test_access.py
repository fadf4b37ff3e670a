"""access: every answer carries a request id, each request is one access line and counted once, GET /metrics."""

import json
import logging

import bottle
import pytest
from prometheus_client.parser import text_string_to_metric_families

from directory_api import access, logs, web
from directory_api.metrics import HttpMetrics, Registry
from directory_api.signature import NonceStore
from tests.factories import ENROLMENT
from tests.factories import web_settings as settings
from tests.support.metrics import metric_samples
from tests.support.wsgi import FakeQueue
from tests.support.wsgi import app_signed_headers as signed_headers
from tests.support.wsgi import wsgi_call as call

HOSTILE_REQUEST_IDS = ["has spaces", "new\nline", "x" * 10_240, "semi;colon", "tab\there"]


class AttributeQueue(FakeQueue):
    def __init__(self):
        super().__init__()
        self.attributes: list = []

    def send(self, body, attributes=None):
        self.attributes.append(attributes)
        return super().send(body)


@pytest.fixture
def queue():
    return AttributeQueue()


@pytest.fixture
def registry():
    return Registry()


@pytest.fixture
def app(queue, registry, tmp_path):
    inner = web.make_app(settings(), queue, nonce_store=NonceStore(str(tmp_path / "nonces.sqlite3")))
    return access.observed(inner, registry)


def enrol(app, request_id=None):
    body = json.dumps(ENROLMENT).encode()
    headers = signed_headers("POST", "/enrolment/", body)
    if request_id is not None:
        headers["X-Request-ID"] = request_id
    return call(app, "POST", "/enrolment/", body, headers)


def samples(registry) -> dict:
    return metric_samples(registry.exposition().decode())


def test_the_clients_request_id_is_echoed(app):
    status, headers, _ = call(app, "GET", "/", headers={"X-Request-ID": "abc-123.x_y"})

    assert status == 200 and headers["x-request-id"] == "abc-123.x_y"


@pytest.mark.parametrize("path", ["/", "/no-such-path", "/enrolment/"])
def test_every_answer_without_a_request_id_gets_a_new_one(app, path):
    _, first, _ = call(app, "GET", path)
    _, second, _ = call(app, "GET", path)

    assert logs.safe_request_id(first["x-request-id"]) and first["x-request-id"] != second["x-request-id"]


def test_an_unexpected_errors_500_carries_a_request_id_too(registry):
    broken = web.JsonBottle()

    @broken.get("/")
    def crash():
        raise RuntimeError("a bug")

    status, headers, _ = call(access.observed(broken, registry), "GET", "/", headers={"X-Request-ID": "r-500"})

    assert status == 500 and headers["x-request-id"] == "r-500"


@pytest.mark.parametrize("hostile", HOSTILE_REQUEST_IDS, ids=["spaces", "newline", "10KB", "semicolon", "tab"])
def test_a_hostile_request_id_is_replaced_and_never_logged(app, hostile, caplog):
    with caplog.at_level(logging.INFO, logger="directory_api.access"):
        _, headers, _ = call(app, "GET", "/", headers={"X-Request-ID": hostile})

    assert headers["x-request-id"] != hostile and logs.safe_request_id(headers["x-request-id"])
    assert hostile not in caplog.text
    [record] = caplog.records
    assert record.request_id == headers["x-request-id"]


def test_one_access_line_a_request_with_method_path_status_duration_and_request_id(app, caplog):
    with caplog.at_level(logging.INFO, logger="directory_api.access"):
        enrol(app, "r-1")

    [record] = caplog.records
    assert (record.method, record.path, record.status, record.request_id) == ("POST", "/enrolment/", 202, "r-1")
    assert record.duration_ms >= 0
    assert record.getMessage().startswith("POST /enrolment/ 202 ") and record.getMessage().endswith(" request_id=r-1")


def test_a_path_with_a_newline_is_escaped_in_the_access_line(app, caplog):
    with caplog.at_level(logging.INFO, logger="directory_api.access"):
        call(app, "GET", "/a\nINFO forged line")

    assert "\n" not in caplog.records[0].getMessage()


@pytest.mark.parametrize("method, path", [("GET", "/" + "a" * 100_000), ("X" * 100_000, "/"),
                                          ("X" * 100_000, "/" + "\n" * 100_000)])
def test_a_json_access_line_caps_the_method_and_path_as_the_text_line_does(app, method, path):
    lines: list[str] = []

    class JsonLines(logging.Handler):
        def emit(self, record):
            lines.append(logs.JsonFormatter().format(record))

    handler = JsonLines()
    logger = logging.getLogger("directory_api.access")
    logger.addHandler(handler)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(logger, "level", logging.INFO)
            call(app, method, path)
    finally:
        logger.removeHandler(handler)

    [line] = lines
    entry = json.loads(line)
    assert len(entry["method"]) <= access.MAX_LOGGED_METHOD + 1 and len(entry["path"]) <= access.MAX_LOGGED_PATH + 1
    assert len(line) < 4096  # whatever the request: far below the 16 KB at which shippers split lines
    assert entry["message"].startswith(f"{entry['method']} {entry['path']} ")


def test_the_request_id_rides_on_the_queued_message(app, queue):
    enrol(app, "r-queued")

    assert queue.attributes == [{"request_id": "r-queued"}]


def test_counts_are_exact_after_known_traffic(app, registry):
    for _ in range(3):
        call(app, "GET", "/")
    call(app, "GET", "/no-such-path")
    call(app, "DELETE", "/")
    enrol(app)
    call(app, "POST", "/enrolment/", b"{}", {"Content-Type": "application/json"})  # unsigned: 401

    found = samples(registry)

    def requests(route, method, status):
        return found[("directory_api_http_requests_total", (("method", method), ("route", route), ("status", status)))]

    assert requests("/", "GET", "200") == 3
    assert requests("unmatched", "GET", "404") == 1
    assert requests("unmatched", "DELETE", "405") == 1
    assert requests("/enrolment/", "POST", "202") == 1
    assert requests("/enrolment/", "POST", "401") == 1
    assert found[("directory_api_enrolments_queued_total", ())] == 1
    assert found[("directory_api_http_request_duration_seconds_count", (("route", "/"),))] == 3
    assert found[("directory_api_http_request_duration_seconds_bucket", (("le", "+Inf"), ("route", "/")))] == 3


def test_an_enrolment_route_with_an_id_is_one_series_whatever_the_id(app, registry):
    for message_id in ("a", "b", "c"):
        call(app, "GET", f"/enrolment/{message_id}/")

    found = samples(registry)

    assert found[("directory_api_http_request_duration_seconds_count", (("route", "/enrolment/<message_id>/"),))] == 3


def test_an_unknown_method_is_counted_as_other(app, registry):
    call(app, "BREW", "/")

    assert ("directory_api_http_requests_total", (("method", "other"), ("route", "unmatched"), ("status", "405"))) \
        in samples(registry)


def test_a_mounted_apps_routes_are_labelled_with_their_prefix(registry):
    top, console = web.JsonBottle(), bottle.Bottle()

    @console.get("/things/<name>")
    def thing(name):
        return "ok"

    top.mount("/ops/", console)
    call(access.observed(top, registry), "GET", "/ops/things/x")

    count = ("directory_api_http_request_duration_seconds_count", (("route", "/ops/things/<name>"),))
    assert count in samples(registry)


def test_get_metrics_is_prometheus_text_that_its_own_parser_reads(app):
    call(app, "GET", "/")

    status, headers, raw = call(app, "GET", "/metrics")

    assert status == 200 and headers["content-type"].startswith("text/plain")
    names = {family.name for family in text_string_to_metric_families(raw.decode())}
    assert {"directory_api_http_requests", "directory_api_http_request_duration_seconds",
            "directory_api_enrolments_queued"} <= names


def test_post_metrics_is_a_json_405(app):
    status, headers, raw = call(app, "POST", "/metrics")

    assert status == 405 and headers["allow"] == "GET" and "detail" in json.loads(raw)


def test_a_streamed_body_is_counted_once_it_is_closed(registry):
    streaming = web.JsonBottle()

    @streaming.get("/stream")
    def stream():
        yield b"a"
        yield b"b"

    status, _, raw = call(access.observed(streaming, registry), "GET", "/stream")

    assert (status, raw) == (200, b"ab")
    assert samples(registry)[("directory_api_http_request_duration_seconds_count", (("route", "/stream"),))] == 1


def test_the_request_metrics_take_no_label_lookup_after_the_first_request(registry, monkeypatch):
    metrics = HttpMetrics(registry)
    metrics.observe("/", "GET", 200, 0.001)
    monkeypatch.setattr(metrics.requests, "labels", lambda *a: pytest.fail("labels() on the hot path"))

    metrics.observe("/", "GET", 200, 0.001)


# ClosingBody: the wrapper the access lines and the console's request slots rely on


def mounted(body_factory) -> bottle.Bottle:
    """A Bottle app with a plain WSGI app mounted under /in/, as the console is under /ops/."""
    def inner(environ, start_response):
        start_response("200 OK", [])
        return body_factory()

    top = bottle.Bottle()
    top.mount("/in/", inner)
    return top


def empty_stream():
    yield from ()


def failing_stream():
    raise RuntimeError("the first chunk fails")
    yield b"never"


@pytest.mark.parametrize("stream", [empty_stream, failing_stream])
def test_a_body_that_a_mount_never_closes_is_done_once_at_its_end(stream):
    done = []
    top = mounted(lambda: access.ClosingBody(stream(), lambda: done.append(1)))

    call(top, "GET", "/in/x")

    assert done == [1]


def test_a_body_sent_and_then_closed_is_done_once():
    done = []
    body = access.ClosingBody(iter([b"a", b"b"]), lambda: done.append(1))

    assert b"".join(body) == b"ab"
    body.close()

    assert done == [1]


def test_a_body_closed_before_its_end_is_done_at_close_and_closes_what_it_wraps():
    done, closed = [], []

    def stream():
        try:
            yield b"a"
            yield b"b"
        finally:
            closed.append(1)

    body = access.ClosingBody(stream(), lambda: done.append(1))
    assert next(iter(body)) == b"a"
    assert done == []
    body.close()

    assert (done, closed) == ([1], [1])
