"""The HTTP API as a Bottle app: routes, JSON errors, the body limit.

It knows nothing of SQS or SQL: enrolments go to a Queue, statuses come from
the models, and every answer is JSON, errors included.
"""

import json
import logging
import re
import sys
import threading

import bottle

from directory_api import console, db, enrolment, logs, models, openapi
from directory_api.db import DATABASE_ERRORS
from directory_api.enrolment import MAX_BODY_BYTES
from directory_api.health import Health
from directory_api.queues import Queue, QueueUnavailable
from directory_api.settings import Settings
from directory_api.signature import NonceStore, SignatureError, Verifier, signed_request

log = logging.getLogger(__name__)

TOO_LARGE = f"The body is larger than {MAX_BODY_BYTES // 1024} KiB."
RETRY_AFTER_SECONDS = 5
JSON_TYPE = "application/json"

# How many request threads may wait on the database at once, by default: one that hangs then holds
# only these, and the rest still accept enrolments (SQS needs no database) and answer / and /healthcheck/.
DATABASE_REQUESTS = 4

HELLO = {"status_code": 200, "detail": "Hello world"}
# What a queue message id can be (SQS and the database queue give UUIDs): no other
# id was ever queued, so it needs no database, which could not even store a NUL.
MESSAGE_ID = re.compile(r"[A-Za-z0-9._:-]{1,255}")


def json_response(status: int, payload: dict, headers: dict | None = None) -> bottle.HTTPResponse:
    """A JSON answer; raise it to answer from deep inside a handler."""
    return bottle.HTTPResponse(
        _dumps(payload), status=status, headers={"Content-Type": JSON_TYPE, **(headers or {})}
    )


def detail(status: int, message: str, **headers: str) -> bottle.HTTPResponse:
    return json_response(status, {"detail": message}, headers)


def _dumps(payload: dict) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def read_body(environ: dict, limit: int = MAX_BODY_BYTES) -> bytes:
    """The request body, reading at most `limit` + 1 bytes; 413 when it is longer than `limit`."""
    stream = environ["wsgi.input"]
    length = environ.get("CONTENT_LENGTH", "")
    if length:
        try:
            expected = int(length)
        except ValueError:
            raise detail(400, "Content-Length is not a number.") from None
        if expected < 0:
            raise detail(400, "Content-Length is not a number.")
        if expected > limit:
            raise _too_large(limit)
        return _read_exactly(stream, expected)
    if environ.get("wsgi.input_terminated"):
        # No length (a chunked request the server decoded): read one byte more than allowed to know.
        body = _read_exactly(stream, limit + 1)
        if len(body) > limit:
            raise _too_large(limit)
        return body
    return b""  # WSGI: without a length and an EOF-terminated input there is no body to read


def _read_exactly(stream, size: int) -> bytes:
    chunks, remaining = [], size
    while remaining > 0:
        chunk = stream.read(remaining)
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> bottle.HTTPResponse:
    return detail(413, TOO_LARGE if limit == MAX_BODY_BYTES else f"The body is larger than {limit} bytes.")


class JsonBottle(bottle.Bottle):
    """A Bottle whose every answer is JSON: its HTML error pages and crash page are replaced."""

    def __init__(self):
        # catchall off: an exception reaches wsgi() below, which logs it and answers JSON, no traceback.
        super().__init__()
        self.config["catchall"] = False
        self.config["json.enable"] = False

    def default_error_handler(self, error: bottle.HTTPError) -> bytes:
        bottle.response.content_type = JSON_TYPE
        if error.status_code == 404:
            message = "Not found: no such path."
        elif error.status_code == 405:
            message = f"Method {bottle.request.method} is not allowed here (allowed: {error.headers.get('Allow', '')})."
        else:
            message = bottle.HTTP_CODES.get(error.status_code, "Error")
        return _dumps({"detail": message})

    def wsgi(self, environ, start_response):
        try:
            return super().wsgi(environ, start_response)
        except Exception:
            log.exception("unexpected error answering %s %s", environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"))
            return self._answer(start_response, 500, {"detail": "Internal server error."}, {})

    @staticmethod
    def _answer(start_response, status: int, payload: dict, headers: dict):
        body = _dumps(payload)
        header_list = [("Content-Type", JSON_TYPE), ("Content-Length", str(len(body))), *headers.items()]
        start_response(f"{status} {bottle.HTTP_CODES.get(status, 'Error')}", header_list, sys.exc_info())
        return [body]


def make_app(
    settings: Settings,
    enrolment_queue: Queue,
    *,
    nonce_store: NonceStore | None = None,
    database_requests: int = DATABASE_REQUESTS,
) -> bottle.Bottle:
    """The WSGI app: enrolments go to `enrolment_queue`; statuses and health read the database bound (db.bind), if any.

    `nonce_store` must be shared by every process of one `serve`; by default
    a private one is made (right for one process). At most
    `database_requests` requests wait on the database at once; more get 503.
    """
    app = Api(settings, enrolment_queue, nonce_store=nonce_store, database_requests=database_requests).routes()
    console.mount(app, settings)  # /ops/, when OPS_PASSWORD is set
    return app


class Api:
    """The API's pages, one method a route, in the console's style (console.Console): what they share is built once."""

    def __init__(self, settings: Settings, enrolment_queue: Queue, *, nonce_store: NonceStore | None,
                 database_requests: int):
        self.verifier = Verifier(
            secret=settings.required("UI_SECRET"),
            nonces=nonce_store or NonceStore.temporary(),
            legacy=settings.signature_legacy,
        )
        self.enrolment_queue = enrolment_queue
        self.database = db.bound()
        self.health = Health(self.database, enrolment_queue)
        self.database_requests = database_requests
        self.database_slots = threading.BoundedSemaphore(database_requests)
        self.openapi_document = _dumps(openapi.document())

    def routes(self) -> bottle.Bottle:
        app = JsonBottle()
        app.route("/", "GET", self.hello)
        app.route("/openapi.json", "GET", self.openapi_json)
        app.route("/healthcheck/", "GET", self.healthcheck)
        app.route("/enrolment/", "POST", self.enrol)
        app.route("/enrolment", "POST", self.enrol)
        app.route("/enrolment/<message_id>/", "GET", self.enrolment_status)
        return app

    def hello(self) -> bottle.HTTPResponse:
        return json_response(200, HELLO)

    def openapi_json(self) -> bottle.HTTPResponse:
        return bottle.HTTPResponse(self.openapi_document, status=200, headers={"Content-Type": JSON_TYPE})

    def healthcheck(self) -> bottle.HTTPResponse:
        parts = self.health.parts()
        healthy = all(state == "ok" for state in parts.values())
        return json_response(200 if healthy else 503, {"status": "ok" if healthy else "unavailable", **parts})

    def enrol(self) -> bottle.HTTPResponse:
        body = _verified_body(self.verifier, bottle.request.environ)
        _check_enrolment(body)
        return _queue_enrolment(self.enrolment_queue, body, bottle.request.environ)

    def enrolment_status(self, message_id: str) -> bottle.HTTPResponse:
        _verified_body(self.verifier, bottle.request.environ)
        return _enrolment_status(message_id, self.database, self.database_slots, self.database_requests)


def _verified_body(verifier: Verifier, environ: dict) -> bytes:
    """The request body, once its signature holds; 401 saying why when it does not."""
    body = read_body(environ)
    try:
        verifier.verify(signed_request(environ, body))
    except SignatureError as error:
        raise detail(401, error.detail, **{"WWW-Authenticate": error.www_authenticate}) from None
    return body


def _check_enrolment(body: bytes) -> None:
    """400 with what is wrong when `body` is not a valid enrolment."""
    try:
        payload = enrolment.parse(body)
    except enrolment.BodyError as error:
        raise detail(400, str(error)) from None
    errors = enrolment.validate(payload)
    if errors:
        raise json_response(400, errors)


def _queue_enrolment(enrolment_queue: Queue, body: bytes, environ: dict) -> bottle.HTTPResponse:
    """202 with the message id once `body` is on the queue; 503 when the queue is unavailable."""
    try:
        # Unchanged: the worker and the signature see the very bytes the client sent.
        message_id = enrolment_queue.send(body.decode("utf-8"), _request_attributes(environ))
    except QueueUnavailable as error:
        log.warning("enrolment refused with 503: the queue is unavailable: %s", error)
        raise detail(
            503, "The enrolment queue is unavailable; try again later.", **{"Retry-After": str(RETRY_AFTER_SECONDS)}
        ) from None
    return json_response(202, {"id": message_id, "status": "queued"})


def _enrolment_status(message_id: str, database, database_slots: threading.BoundedSemaphore,
                      database_requests: int) -> bottle.HTTPResponse:
    """The status of one message; 503 when the database is unavailable or `database_requests` already wait on it."""
    if not MESSAGE_ID.fullmatch(message_id):
        return json_response(404, {"id": message_id, "status": "unknown"})
    if database is None:
        raise _database_unavailable()
    if not database_slots.acquire(blocking=False):
        log.warning("enrolment status refused with 503: %d requests already wait on the database",
                    database_requests)
        raise _database_unavailable()
    try:
        with database.connection_context():
            return json_response(*_status(message_id))
    except DATABASE_ERRORS as error:
        log.warning("enrolment status unavailable: the database does not answer: %s", error)
        raise _database_unavailable() from None
    finally:
        database_slots.release()


def _request_attributes(environ: dict) -> dict[str, str] | None:
    """The queue message attributes that carry the request id to the worker's log lines."""
    request_id = environ.get(logs.REQUEST_ID_ENVIRON)
    return {logs.REQUEST_ID_ATTRIBUTE: request_id} if request_id else None


def _status(message_id: str) -> tuple[int, dict]:
    saved = models.Enrolment.get_or_none(models.Enrolment.sqs_message_id == message_id)
    if saved is not None:
        return 200, {"id": message_id, "status": "created", "enrolment_id": saved.id}
    retry = models.EnrolmentRetry.get_or_none(models.EnrolmentRetry.message_id == message_id)
    if retry is not None:  # a client's retry of an enrolment saved before: that enrolment
        return 200, {"id": message_id, "status": "created", "enrolment_id": retry.enrolment_id}
    rejected = models.Rejection.get_or_none(models.Rejection.message_id == message_id)
    if rejected is not None:
        return 200, {"id": message_id, "status": "rejected", "errors": rejected.errors}
    return 404, {"id": message_id, "status": "unknown"}


def _database_unavailable() -> bottle.HTTPResponse:
    return detail(503, "The database is unavailable; try again later.", **{"Retry-After": str(RETRY_AFTER_SECONDS)})
