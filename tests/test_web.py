"""web: every row and error of docs/http-api.md, through the WSGI app with raw environs."""

import json

import pytest
from openapi_spec_validator import validate as validate_openapi

from directory_api import db, migrations, models, openapi, web
from directory_api.signature import NonceStore, legacy_signature
from tests.factories import ENROLMENT
from tests.factories import web_settings as settings
from tests.support.signing import UI_SECRET
from tests.support.wsgi import FakeQueue
from tests.support.wsgi import app_call as call
from tests.support.wsgi import app_post as post
from tests.support.wsgi import app_signed_get as signed_get
from tests.support.wsgi import app_signed_headers as signed_headers

SECRET = UI_SECRET


class ExplodingInput:
    """wsgi.input that fails the test if the app reads more than `allowed` bytes of it."""

    def __init__(self, allowed: int):
        self.allowed = allowed
        self.read_so_far = 0

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0 or self.read_so_far + size > self.allowed:
            pytest.fail(f"the app read past {self.allowed} bytes (asked for {size} after {self.read_so_far})")
        self.read_so_far += size
        return b"x" * size


@pytest.fixture
def queue():
    return FakeQueue()


@pytest.fixture
def unbound(monkeypatch):
    """No database: the models bound to none (as before db.bind)."""
    monkeypatch.setattr(models.database, "obj", None)


@pytest.fixture
def app(queue, tmp_path, unbound):
    return web.make_app(settings(), queue, nonce_store=NonceStore(str(tmp_path / "nonces.sqlite3")))


def test_root_says_hello_without_a_signature(app):
    assert call(app, "GET", "/")[::2] == (200, {"status_code": 200, "detail": "Hello world"})


def test_a_valid_signed_enrolment_is_queued_unchanged_and_answered_202(app, queue):
    body = b'{"sso_id": 7, "company_number": "SC123456", "company_name": "Acme Exports Ltd", ' \
           b'"company_email": "enquiries@acme.example.com", "export_status": "NOT_YET", ' \
           b'"date_of_creation": "2012-04-02", "extra": "kept"}'
    status, _, answer = post(app, body)
    assert (status, answer) == (202, {"id": "message-1", "status": "queued"})
    assert queue.sent == [body.decode()]


def test_enrolment_is_accepted_without_the_trailing_slash(app, queue):
    assert post(app, ENROLMENT, path="/enrolment")[0] == 202


def test_an_unsigned_enrolment_is_refused_with_401(app, queue):
    status, headers, answer = call(app, "POST", "/enrolment/", json.dumps(ENROLMENT).encode())
    assert (status, list(answer)) == (401, ["detail"])
    assert headers["www-authenticate"] == "Hawk"
    assert queue.sent == []


def test_an_enrolment_signed_with_another_secret_is_refused(app, queue):
    body = json.dumps(ENROLMENT).encode()
    headers = signed_headers("POST", "/enrolment/", body, secret="another-secret")
    assert call(app, "POST", "/enrolment/", body, headers)[0] == 401
    assert queue.sent == []


def test_a_signature_for_another_body_is_refused(app, queue):
    headers = signed_headers("POST", "/enrolment/", json.dumps(ENROLMENT).encode())
    tampered = json.dumps({**ENROLMENT, "sso_id": 8}).encode()
    assert call(app, "POST", "/enrolment/", tampered, headers)[0] == 401
    assert queue.sent == []


def test_a_signature_for_another_path_is_refused(app):
    body = json.dumps(ENROLMENT).encode()
    assert call(app, "POST", "/enrolment", body, signed_headers("POST", "/enrolment/", body))[0] == 401


def test_the_query_string_is_part_of_what_is_signed(app):
    body = json.dumps(ENROLMENT).encode()
    headers = signed_headers("POST", "/enrolment/?source=ui", body)
    assert call(app, "POST", "/enrolment/", body, headers, query="source=other")[0] == 401
    assert call(app, "POST", "/enrolment/", body, headers, query="source=ui")[0] == 202


def test_a_replayed_enrolment_is_refused_and_queued_once(app, queue):
    body = json.dumps(ENROLMENT).encode()
    headers = signed_headers("POST", "/enrolment/", body)
    assert call(app, "POST", "/enrolment/", body, headers)[0] == 202
    status, _, answer = call(app, "POST", "/enrolment/", body, headers)
    assert (status, answer["detail"]) == (401, "The signature has been used before: sign every request afresh.")
    assert len(queue.sent) == 1


def test_the_legacy_signature_is_refused_by_default(app, queue):
    body = json.dumps(ENROLMENT).encode()
    headers = {"X-Signature": legacy_signature(SECRET, "/enrolment/", body)}
    assert call(app, "POST", "/enrolment/", body, headers)[0] == 401


def test_the_legacy_signature_is_accepted_with_signature_legacy_true(queue, tmp_path):
    app = web.make_app(settings(SIGNATURE_LEGACY="true"), queue, nonce_store=NonceStore(str(tmp_path / "n")))
    body = json.dumps(ENROLMENT).encode()
    headers = {"X-Signature": legacy_signature(SECRET, "/enrolment/", body)}
    assert call(app, "POST", "/enrolment/", body, headers)[0] == 202


@pytest.mark.parametrize(
    "body, reason",
    [(b"\xff\xfe{}", "not UTF-8"), (b"{not json", "not JSON"), (b"", "not JSON")],
)
def test_a_body_that_is_not_utf8_json_is_refused_with_400(app, queue, body, reason):
    status, _, answer = post(app, body)
    assert status == 400 and reason in answer["detail"]
    assert queue.sent == []


@pytest.mark.parametrize("levels", [101, 400, 970])
def test_an_enrolment_nested_deeper_than_100_levels_is_a_400_not_a_500(app, queue, levels):
    body = json.dumps(ENROLMENT)[:-1].encode() + b', "extra": ' + b"[" * levels + b"]" * levels + b"}"

    status, _, answer = post(app, body)

    detail = "The body is not JSON this service accepts: it is nested deeper than 100 levels."
    assert (status, answer) == (400, {"detail": detail})
    assert queue.sent == []


@pytest.mark.parametrize("number", ["1e400", "1" * 5000])
def test_an_enrolment_holding_a_number_that_cannot_be_stored_is_a_400_not_a_500(app, queue, number):
    body = (json.dumps(ENROLMENT)[:-1] + f', "extra": {number}}}').encode()

    status, _, answer = post(app, body)

    assert status == 400 and "number" in answer["detail"]
    assert queue.sent == []


@pytest.mark.parametrize("character", ["\x01", "\x1b", "\ufffe"])
def test_an_enrolment_holding_a_character_sqs_cannot_carry_is_a_400_naming_it(app, queue, character):
    body = (json.dumps(ENROLMENT)[:-1] + f', "referrer": "Acme{character}"}}').encode()

    status, _, answer = post(app, body)

    assert status == 400 and f"cannot carry: U+{ord(character):04X}" in answer["detail"]
    assert queue.sent == []


def test_an_enrolment_holding_such_a_character_as_a_json_escape_is_queued_unchanged(app, queue):
    body = json.dumps({**ENROLMENT, "company_name": "Acme\x01"}).encode()

    assert b"\\u0001" in body
    assert post(app, body)[0] == 202
    assert queue.sent == [body.decode()]


def test_a_body_that_is_not_an_object_is_refused_with_400(app, queue):
    status, _, answer = post(app, b'["sso_id", 7]')
    assert (status, answer) == (400, {"non_field_errors": ["The body must be a JSON object, not an array."]})
    assert queue.sent == []


def test_invalid_fields_are_refused_with_400_and_their_errors(app, queue):
    status, _, answer = post(app, {**ENROLMENT, "company_number": "12", "export_status": "SOON"})
    assert status == 400
    assert set(answer) == {"company_number", "export_status"}
    assert all(isinstance(messages, list) and messages for messages in answer.values())
    assert queue.sent == []


def test_the_signature_is_checked_before_the_body_is_judged(app):
    assert call(app, "POST", "/enrolment/", b"{not json")[0] == 401


def test_a_body_of_256_kib_is_read(app):
    body = json.dumps({**ENROLMENT, "padding": ""}).encode()
    body = body.replace(b'"padding": ""', b'"padding": "' + b"x" * (web.MAX_BODY_BYTES - len(body)) + b'"')
    assert len(body) == web.MAX_BODY_BYTES
    assert post(app, body)[0] == 202


def test_a_declared_body_over_256_kib_is_refused_with_413_without_reading_it(app, queue):
    status, _, answer = call(
        app, "POST", "/enrolment/", headers={"Content-Length": str(10**12)}, **{"wsgi.input": ExplodingInput(0)}
    )
    assert (status, answer) == (413, {"detail": "The body is larger than 256 KiB."})
    assert queue.sent == []


def test_a_body_without_a_length_over_256_kib_is_refused_reading_one_byte_more_at_most(app, queue):
    stream = ExplodingInput(web.MAX_BODY_BYTES + 1)
    status, _, _ = call(app, "POST", "/enrolment/", CONTENT_LENGTH="", **{"wsgi.input": stream,
                                                                          "wsgi.input_terminated": True})
    assert status == 413
    assert queue.sent == []


def test_a_body_without_a_length_within_the_limit_is_read_to_its_end(app, queue):
    body = json.dumps(ENROLMENT).encode()
    headers = signed_headers("POST", "/enrolment/", body)
    status, _, _ = call(app, "POST", "/enrolment/", body, headers, CONTENT_LENGTH="", **{"wsgi.input_terminated": True})
    assert status == 202 and queue.sent == [body.decode()]


def test_a_malformed_content_length_is_refused_with_400(app):
    assert call(app, "POST", "/enrolment/", b"{}", CONTENT_LENGTH="ten")[0] == 400


def test_an_unreachable_queue_gets_503_with_retry_after_and_nothing_sent(app, queue):
    queue.down = True
    status, headers, answer = post(app, ENROLMENT)
    assert status == 503 and int(headers["retry-after"]) > 0 and "detail" in answer
    assert queue.sent == []


def test_an_unknown_path_gets_a_json_404(app):
    assert call(app, "GET", "/no/such/path")[::2] == (404, {"detail": "Not found: no such path."})


def test_a_wrong_method_gets_a_json_405_naming_the_allowed_ones(app):
    status, headers, answer = call(app, "DELETE", "/enrolment/")
    assert status == 405 and headers["allow"] == "POST" and "POST" in answer["detail"]


def test_an_unexpected_error_gets_a_json_500_without_a_traceback(app, queue):
    def broken_send(body, attributes=None):
        raise RuntimeError("secret internals")

    queue.send = broken_send
    status, _, answer = post(app, ENROLMENT)
    assert (status, answer) == (500, {"detail": "Internal server error."})


def test_openapi_json_is_a_valid_openapi_3_document(app):
    status, _, document = call(app, "GET", "/openapi.json")
    assert status == 200 and document["openapi"].startswith("3.")
    validate_openapi(document)


def test_openapi_json_describes_every_route_of_the_app(app):
    document = call(app, "GET", "/openapi.json")[2]
    routes = {(route.method.lower(), route.rule.replace("<message_id>", "{id}")) for route in app.routes}
    described = {(method, path) for path, item in document["paths"].items() for method in item}
    assert routes - {("post", "/enrolment")} == described


def test_healthcheck_is_503_without_a_database(app):
    status, _, answer = call(app, "GET", "/healthcheck/")
    assert (status, answer) == (503, {"status": "unavailable", "database": "unavailable", "queue": "ok"})


def test_enrolment_status_without_a_database_is_503(app):
    assert signed_get(app, "/enrolment/message-1/")[0] == 503


@pytest.fixture
def app_with_database(database, queue, tmp_path):
    return web.make_app(settings(), queue, nonce_store=NonceStore(str(tmp_path / "n")))


def test_healthcheck_is_200_when_database_and_queue_answer(app_with_database):
    status, _, answer = call(app_with_database, "GET", "/healthcheck/")
    assert (status, answer) == (200, {"status": "ok", "database": "ok", "queue": "ok"})


def test_healthcheck_names_the_queue_when_it_does_not_answer(app_with_database, queue):
    queue.down = True
    status, _, answer = call(app_with_database, "GET", "/healthcheck/")
    assert (status, answer) == (503, {"status": "unavailable", "database": "ok", "queue": "unavailable"})


def test_enrolment_status_is_unknown_before_the_worker_saw_it(app_with_database):
    status, _, answer = signed_get(app_with_database, "/enrolment/message-1/")
    assert (status, answer) == (404, {"id": "message-1", "status": "unknown"})


def test_enrolment_status_is_created_once_saved(app_with_database):
    saved = models.Enrolment.create(data=ENROLMENT, sqs_message_id="message-1")
    status, _, answer = signed_get(app_with_database, "/enrolment/message-1/")
    assert (status, answer) == (200, {"id": "message-1", "status": "created", "enrolment_id": saved.id})


def test_enrolment_status_is_rejected_with_the_reasons_once_set_aside(app_with_database):
    models.Rejection.create(message_id="message-1", errors={"sso_id": ["Already a supplier."]})
    status, _, answer = signed_get(app_with_database, "/enrolment/message-1/")
    rejected = {"id": "message-1", "status": "rejected", "errors": {"sso_id": ["Already a supplier."]}}
    assert (status, answer) == (200, rejected)


@pytest.mark.parametrize(
    "message_id", ["%00", "a%00b", "x" * 256, "%C3%A9"], ids=["NUL", "NUL inside", "too long", "not ASCII"]
)
def test_enrolment_status_of_an_id_no_queue_gives_is_unknown(app_with_database, message_id):
    # Regression: a NUL reached PostgreSQL, whose driver refuses it outright: a 500 (found by test_api_fuzz).
    status, _, answer = signed_get(app_with_database, f"/enrolment/{message_id}/")
    assert (status, answer["status"]) == (404, "unknown")


def test_enrolment_status_needs_a_signature(app_with_database):
    assert call(app_with_database, "GET", "/enrolment/message-1/")[0] == 401


def test_accepting_an_enrolment_never_touches_the_database(queue, tmp_path, monkeypatch):
    class NoDatabase:
        def __getattr__(self, name):
            pytest.fail(f"POST /enrolment/ used the database ({name})")

    monkeypatch.setattr(models.database, "obj", NoDatabase())
    app = web.make_app(settings(), queue, nonce_store=NonceStore(str(tmp_path / "n")))
    assert post(app, ENROLMENT)[0] == 202


def test_the_database_queue_backend_puts_the_enrolment_in_the_database(database, tmp_path):
    from directory_api.queues.database import DatabaseQueue

    queue = DatabaseQueue(settings(), "enrolment")
    app = web.make_app(settings(), queue, nonce_store=NonceStore(str(tmp_path / "n")))
    status, _, answer = post(app, ENROLMENT)
    assert status == 202
    stored = models.QueueMessage.get_by_id(answer["id"])
    assert (stored.queue, json.loads(stored.body)) == ("enrolment", ENROLMENT)


def test_healthcheck_says_a_read_only_database_cannot_be_written(tmp_path, queue, monkeypatch):
    # Regression: a read-only SQLite file failed every enrolment with 503 while /healthcheck/ said ok.
    url = f"sqlite:///{tmp_path / 'data.sqlite3'}"
    migrations.migrate(db.bind(url))
    monkeypatch.setitem(db.SQLITE_PRAGMAS, "query_only", 1)  # as a read-only file fails a write, even for root
    db.bind(url)  # again, with the pragma
    app = web.make_app(settings(), queue, nonce_store=NonceStore(str(tmp_path / "n")))
    status, _, answer = call(app, "GET", "/healthcheck/")
    assert (status, answer) == (503, {"status": "unavailable", "database": "not writable", "queue": "ok"})
    assert "not writable" in openapi.document()["components"]["schemas"]["Health"]["properties"]["database"]["enum"]


def test_healthchecks_share_one_kept_database_connection(app_with_database, database, monkeypatch):
    # Regression: each /healthcheck/ opened a database connection of its own (250 a second under a flood).
    connects = []
    original = type(database)._connect
    monkeypatch.setattr(type(database), "_connect", lambda self: connects.append(self) or original(self))
    for _ in range(5):
        assert call(app_with_database, "GET", "/healthcheck/")[0] == 200
    assert len(connects) == 1
