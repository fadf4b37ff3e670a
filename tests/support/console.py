"""The ops console driven through the WSGI app `serve` runs, as the console's tests drive it."""

import base64
import re
from urllib.parse import urlsplit

from directory_api import console, web
from directory_api.settings import Settings
from tests.support.wsgi import wsgi_call

PASSWORD = "not-a-real-ops-password"
HOST = "ops.example.test"
ORIGIN = f"https://{HOST}"
OPERATOR = "192.0.2.10"  # the address every request comes from unless a test says otherwise


def console_app(worker, monkeypatch):
    """The app `serve` runs, with the console on, its queues the worker's (on SQS, the test's moto client)."""
    settings = Settings.from_environ({
        "DATABASE_URL": worker.settings.database_url, "UI_SECRET": "not-a-real-ui-secret",
        "QUEUE_BACKEND": worker.settings.queue_backend, "SQS_ENROLMENT_QUEUE_NAME": "enrolment",
        "SQS_INVALID_ENROLMENT_QUEUE_NAME": "enrolment-invalid", "OPS_PASSWORD": PASSWORD,
    })
    monkeypatch.setattr(console, "open_enrolment_queues", lambda settings: (worker.enrolments, worker.invalid))
    return web.make_app(settings, worker.enrolments)


class Answer:
    def __init__(self, status: int, headers: dict, body: bytes):
        self.status, self.headers, self.body = status, headers, body

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


def basic(user="ops", password=PASSWORD) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def call(app, method: str, path: str, *, auth: str | None = basic(), form: dict | None = None,
         headers: dict | None = None, client: str = OPERATOR) -> Answer:
    parts = urlsplit(path)
    body = "&".join(f"{k}={v}" for k, v in (form or {}).items()).encode()
    sent = {"Content-Type": "application/x-www-form-urlencoded", **(headers or {})}
    if auth:
        sent["Authorization"] = auth
    status, answer_headers, raw = wsgi_call(app, method, parts.path, body, sent, parts.query, SERVER_NAME=HOST,
                                           SERVER_PORT="443", HTTP_HOST=HOST, REMOTE_ADDR=client,
                                           **{"wsgi.url_scheme": "https"})
    return Answer(status, answer_headers, raw)


def csrf_token(app) -> str:
    page = call(app, "GET", "/ops/rejections")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token, "no CSRF token on the rejections page"
    return token.group(1)


def post(app, path: str, form: dict, *, origin: str | None = ORIGIN, **kwargs) -> Answer:
    headers = {"Origin": origin} if origin else {}
    return call(app, "POST", path, form=form, headers={**headers, **kwargs.pop("headers", {})}, **kwargs)


def set_aside(worker, *bodies) -> list[str]:
    ids = [worker.enrolments.send(body) for body in bodies]
    worker.run(once=True)
    return ids
