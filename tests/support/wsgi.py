"""The WSGI app in this process: requests through it without a server, and a queue double behind it."""

import io
import json
from collections.abc import Mapping

from directory_api.queues import QueueUnavailable
from tests.support.signing import UI_SECRET, signed_headers


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
