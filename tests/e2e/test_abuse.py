"""Abuse of POST /enrolment/: odd bodies and bad signatures get a JSON error and queue nothing."""

import hashlib
import json
import threading
import time

import pytest
import requests

from tests.e2e.harness import raw_exchange, request_bytes
from tests.factories import enrolment_payload
from tests.support.signing import UI_SECRET, signed_headers, stale_headers

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

LIMIT = 256 * 1024
PATH = "/enrolment/"


def signed(live_api, body: bytes, path: str = PATH, content_type: str = "application/json") -> dict[str, str]:
    return signed_headers(f"{live_api.base_url}{path}", body, "POST", content_type)


def body_of_size(size: int, n: int = 0) -> bytes:
    """A valid enrolment padded with an unknown field to exactly `size` bytes."""
    empty = json.dumps({**enrolment_payload(n), "padding": ""}).encode()
    return json.dumps({**enrolment_payload(n), "padding": "x" * (size - len(empty))}).encode()


def assert_json_error(response, status: int) -> dict:
    assert response is not None, "the server answered nothing"
    code = getattr(response, "status_code", None) or response.status
    assert code == status, (code, response.content if hasattr(response, "content") else response.body)
    content_type = response.headers.get("content-type", "")
    assert content_type.startswith("application/json"), content_type
    return response.json()


def post(live_api, body: bytes, headers: dict[str, str]) -> requests.Response:
    return requests.post(f"{live_api.base_url}{PATH}", data=body, headers=headers, timeout=30)


@pytest.fixture
def nothing_queued(live_api):
    """The test must leave the enrolment queue as it found it."""
    before = live_api.queued()
    yield
    assert live_api.queued() == before, "a request that was not answered 202 put a message on the queue"


# -- bodies -----------------------------------------------------------------------------------


def test_a_body_of_exactly_256_kib_is_accepted(live_api):
    body = body_of_size(LIMIT)

    response = post(live_api, body, signed(live_api, body))

    assert response.status_code == 202, response.text


def test_a_body_one_byte_over_256_kib_is_refused_with_413(live_api, nothing_queued):
    body = body_of_size(LIMIT + 1, n=1)

    response = post(live_api, body, signed(live_api, body))

    assert_json_error(response, 413)


def test_a_huge_chunked_body_without_content_length_is_refused_with_413(live_api, nothing_queued):
    body = body_of_size(4 * LIMIT, n=2)
    chunks = (body[start : start + 65536] for start in range(0, len(body), 65536))

    response = post(live_api, chunks, signed(live_api, body))

    assert_json_error(response, 413)


def test_a_content_length_of_a_gigabyte_is_refused_without_reading_it(live_api, nothing_queued):
    body = b'{"sso_id": 1}'
    request = request_bytes("POST", PATH, body, signed(live_api, body), content_length=10**9)

    response = raw_exchange(live_api.port, [request], timeout=10)

    assert response is not None and response.status == 413, response


def test_a_truncated_body_then_close_queues_nothing_and_the_server_keeps_serving(live_api, nothing_queued):
    body = json.dumps(enrolment_payload(3)).encode()
    request = request_bytes("POST", PATH, body, signed(live_api, body), content_length=len(body) + 500)

    response = raw_exchange(live_api.port, [request], half_close=True, timeout=10)

    assert response is None or response.status != 202, response
    assert requests.get(f"{live_api.base_url}/", timeout=5).status_code == 200


def test_a_slow_client_is_served_and_does_not_hold_up_others(live_api):
    body = json.dumps(enrolment_payload(4)).encode()
    request = request_bytes("POST", PATH, body, signed(live_api, body))
    pieces = [request[start : start + 16] for start in range(0, len(request), 16)]
    pause = 3.0 / len(pieces)  # the whole request dribbles in over about 3 seconds
    slow_clients = [
        threading.Thread(target=raw_exchange, args=(live_api.port, pieces), kwargs={"pause": pause}, daemon=True)
        for _ in range(20)  # more than serve's request threads
    ]
    for thread in slow_clients:
        thread.start()

    started = time.monotonic()
    response = requests.get(f"{live_api.base_url}/", timeout=5)
    quick = time.monotonic() - started
    slow = raw_exchange(live_api.port, pieces, pause=pause, timeout=20)

    assert response.status_code == 200 and quick < 1.0, f"GET / took {quick:.2f}s behind slow clients"
    assert slow is not None and slow.status in (202, 401), slow  # 401: another slow client used the nonce
    for thread in slow_clients:
        thread.join(20)


def test_a_body_that_is_not_utf8_is_refused_with_400(live_api, nothing_queued):
    body = b'{"company_name": "caf\xe9 Ltd"}'

    response = post(live_api, body, signed(live_api, body))

    assert "detail" in assert_json_error(response, 400)


@pytest.mark.parametrize("body", [b"", b"{", b"[1, 2]", b'"text"', b"null", b"NaN", b'{"a": 1}{'])
def test_a_body_that_is_not_a_json_object_is_refused_with_400(live_api, nothing_queued, body):
    response = post(live_api, body, signed(live_api, body))

    assert_json_error(response, 400)


def test_invalid_fields_are_refused_with_400_naming_each_field(live_api, nothing_queued):
    body = json.dumps(enrolment_payload(5, sso_id=0, company_number="nope")).encode()

    response = post(live_api, body, signed(live_api, body))

    assert set(assert_json_error(response, 400)) == {"sso_id", "company_number"}


# -- signatures -------------------------------------------------------------------------------

BODY = json.dumps(enrolment_payload(6)).encode()


def test_a_request_without_signature_is_refused_with_401(live_api, nothing_queued):
    response = post(live_api, BODY, {"Content-Type": "application/json"})

    assert "detail" in assert_json_error(response, 401)


def test_a_signature_made_with_another_secret_is_refused_with_401(live_api, nothing_queued):
    headers = signed_headers(f"{live_api.base_url}{PATH}", BODY, "POST", "application/json", secret="forged")

    assert_json_error(post(live_api, BODY, headers), 401)


@pytest.mark.parametrize("seconds_old", [120, -120])
def test_a_signature_outside_the_60_second_skew_is_refused_with_401(live_api, nothing_queued, seconds_old):
    assert_json_error(post(live_api, BODY, stale_headers(PATH, BODY, seconds_old)), 401)


def test_a_replayed_signature_is_refused_with_401_and_queues_once(live_api):
    body = json.dumps(enrolment_payload(7)).encode()
    headers = signed(live_api, body)
    before = live_api.queued()

    first = post(live_api, body, headers)
    second = post(live_api, body, headers)

    assert first.status_code == 202, first.text
    assert_json_error(second, 401)
    assert live_api.queued() == before + 1


def test_a_signature_for_another_path_is_refused_with_401(live_api, nothing_queued):
    headers = signed(live_api, BODY, path="/enrolment/?next=/admin/")

    assert_json_error(post(live_api, BODY, headers), 401)


def test_a_signature_for_another_body_is_refused_with_401(live_api, nothing_queued):
    headers = signed(live_api, json.dumps(enrolment_payload(8)).encode())

    assert_json_error(post(live_api, BODY, headers), 401)


def test_a_signature_for_another_content_type_is_refused_with_401(live_api, nothing_queued):
    headers = signed(live_api, BODY, content_type="text/plain")
    headers["Content-Type"] = "application/json"

    assert_json_error(post(live_api, BODY, headers), 401)


def test_a_legacy_signature_is_refused_unless_signature_legacy_is_set(live_api, nothing_queued):
    legacy = hashlib.sha256(PATH.encode() + BODY + UI_SECRET.encode()).hexdigest()

    assert_json_error(post(live_api, BODY, {"X-Signature": legacy, "Content-Type": "application/json"}), 401)


def test_a_garbage_signature_header_is_refused_with_401(live_api, nothing_queued):
    headers = {"X-Signature": 'Hawk mac="!", ts="x", nonce=' + "A" * 5000, "Content-Type": "application/json"}

    assert_json_error(post(live_api, BODY, headers), 401)


# -- routing ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "status"), [
    ("GET", "/no-such-page/", 404),
    ("DELETE", "/enrolment/", 405),
    ("PUT", "/", 405),
])
def test_unknown_paths_and_methods_answer_json(live_api, method, path, status):
    response = requests.request(method, f"{live_api.base_url}{path}", timeout=10)

    assert_json_error(response, status)
