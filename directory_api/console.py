"""The ops console at /ops/: server-rendered pages over ops/, behind HTTP Basic, for the people who run the service.

It runs inside `serve` (and `dev`), in the same waitress threads as the API,
so every page is a few bounded queries (ops/queries.py) and nothing is cached in the
process. Pages are bottle SimpleTemplates, which escape every {{value}};
there is no JavaScript and no asset from another origin. Every answer carries
the security headers below, and every POST must bring the form's CSRF token
from a page of the same origin, else 403 with nothing done. A GET never
changes anything.
"""

import base64
import binascii
import functools
import hashlib
import hmac
import json
import logging
import math
import threading
import time
from collections.abc import Callable
from importlib import resources
from typing import NoReturn
from urllib.parse import urlencode, urlsplit

import bottle

from directory_api import casework, db, models
from directory_api.access import ClosingBody
from directory_api.db import DATABASE_ERRORS, drop_connection
from directory_api.errors import UserError
from directory_api.models import Rejection
from directory_api.ops import audit, queries, redrive, rejections, status
from directory_api.ops.export import EXPORTS, csv_chunks, export_filename, export_rows, parse_since
from directory_api.queues import Queue, QueueUnavailable, open_enrolment_queues
from directory_api.settings import Settings
from directory_api.throttle import LoginThrottle

log = logging.getLogger(__name__)

USER = "ops"
REALM = 'Basic realm="directory-api ops", charset="UTF-8"'
SECURITY_HEADERS = [
    # Only this origin's stylesheet; no script, frame, plugin or form target elsewhere.
    ("Content-Security-Policy",
     "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
     "frame-ancestors 'none'; base-uri 'none'"),
    ("X-Frame-Options", "DENY"),
    ("Cache-Control", "no-store"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),
]
HTML_TYPE = "text/html; charset=utf-8"
# The request threads of a process the console may hold at once (a CSV download holds one while it streams);
# the others stay the API's, so operators never keep an enrolment waiting for a thread.
CONSOLE_REQUESTS = 2
NEEDS_LOGIN = b"Authentication needed: user ops and the console's password (OPS_PASSWORD)."
BUSY = b"The console is busy with other requests of this process; try again in a few seconds."

# A CSRF token is "<unix time>.<HMAC of it>" under a key made from OPS_PASSWORD: no state to share between the
# processes and machines of a serve, and a page left open for a working day still re-drives.
CSRF_LIFETIME_SECONDS = 12 * 3600
CSRF_CLOCK_SKEW_SECONDS = 300
CSRF_FIELD = "csrf_token"

FORBIDDEN_ORIGIN = "Refused: this form must be sent from a page of the console itself (Origin or Referer)."
DATABASE_UNAVAILABLE = "The database does not answer now; try again shortly (the overview shows what does)."
FORBIDDEN_TOKEN = "Refused: the form's security token is missing, wrong or expired; reload the page and try again."
SEARCH_FIELD_LABELS = (("any", "anything"), ("company_number", "company number"), ("company_name", "company name"),
                       ("sso_id", "sso id"), ("email", "e-mail"))


def _template_text(name: str) -> str:
    # importlib.resources reads from the package, whether it is a directory or inside the pyz.
    return resources.files("directory_api").joinpath("templates", name).read_text(encoding="utf-8")


@functools.cache
def template(name: str) -> bottle.SimpleTemplate:
    return bottle.SimpleTemplate(source=_template_text(f"{name}.tpl"))


@functools.cache
def stylesheet() -> bytes:
    return _template_text("console.css").encode("utf-8")


def shown(value) -> str:
    """A stored value as a page shows it: "-" when there is none (the template escapes it)."""
    return "-" if value is None or value == "" else str(value)


def email_shown(value) -> str:
    """An e-mail address, escaped, that may break before its @ and after each dot, never inside a word."""
    if value is None or value == "":
        return "-"
    escaped = bottle.html_escape(str(value))
    return escaped.replace("@", "<wbr>@").replace(".", ".<wbr>")


def page(name: str, *, title: str, section: str = "", **values) -> str:
    base = bottle.request.script_name
    body = template(name).render(base=base, shown=shown, email_shown=email_shown, **values)
    return template("base").render(title=title, section=section, base=base, body=body)


def authorized(environ: dict, password: bytes) -> bool:
    """HTTP Basic with user `ops` and OPS_PASSWORD, both compared in constant time."""
    scheme, _, encoded = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    user, colon, given = decoded.partition(b":")
    user_ok = hmac.compare_digest(user, USER.encode())
    password_ok = hmac.compare_digest(given, password)  # compared even when the user is wrong: no timing hint
    return bool(colon) and user_ok and password_ok


def same_origin(environ: dict) -> bool:
    """Whether the request's Origin (or, without one, its Referer) names the host the request was sent to."""
    source = environ.get("HTTP_ORIGIN") or environ.get("HTTP_REFERER") or ""
    parts = urlsplit(source)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False  # none, "null" (a sandboxed or privacy-sensitive context), or not a web origin
    try:
        source_port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return False
    # Behind a TLS-terminating proxy the request itself may have come in as plain http: the Host header
    # (as the browser sent it) is what the page was served from, in the origin's scheme.
    host = environ.get("HTTP_HOST") or environ.get("SERVER_NAME", "")
    target = urlsplit(f"{parts.scheme}://{host}")
    try:
        target_port = target.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return False
    return (parts.hostname, source_port) == (target.hostname, target_port)


def redirect_to_path(path: str, status: int) -> NoReturn:
    """Redirect to `path` on the host and scheme the browser used.

    bottle.redirect makes the Location absolute from serve's own scheme (plain http behind a
    TLS-terminating proxy) and from X-Forwarded-Host, which any client may send; a path alone holds
    behind every proxy.
    """
    response = bottle.response.copy(cls=bottle.HTTPResponse)
    response.status = status
    response.body = ""
    response.set_header("Location", path)
    raise response


class CsrfTokens:
    def __init__(self, password: bytes, clock: Callable[[], float] = time.time):
        self.key = hmac.new(password, b"directory-api ops console csrf", hashlib.sha256).digest()
        self.clock = clock

    def _mac(self, stamp: str) -> str:
        return hmac.new(self.key, stamp.encode(), hashlib.sha256).hexdigest()

    def new(self) -> str:
        stamp = str(int(self.clock()))
        return f"{stamp}.{self._mac(stamp)}"

    def valid(self, token: str) -> bool:
        stamp, _, mac = token.partition(".")
        if not stamp.isdigit() or len(stamp) > 12:
            return False
        age = self.clock() - int(stamp)
        fresh = -CSRF_CLOCK_SKEW_SECONDS <= age <= CSRF_LIFETIME_SECONDS
        return hmac.compare_digest(mac, self._mac(stamp)) and fresh


class Console:
    """The /ops/ WSGI app: authentication and headers around a Bottle app of the pages."""

    def __init__(self, settings: Settings, enrolments: Queue, invalid: Queue):
        self.password = settings.required("OPS_PASSWORD").encode("utf-8")
        self.redrive_wait = redrive.redrive_wait(settings)
        self.exact_depth = settings.queue_backend == "database"  # SQS counts approximately
        self.enrolments = enrolments
        self.invalid = invalid
        self.csrf = CsrfTokens(self.password)
        self.queue_names = (settings.required("SQS_ENROLMENT_QUEUE_NAME"),
                            settings.required("SQS_INVALID_ENROLMENT_QUEUE_NAME"))
        self.slots = threading.BoundedSemaphore(CONSOLE_REQUESTS)
        self.logins = LoginThrottle()
        self.app = self._pages()

    def __call__(self, environ, start_response):
        def with_headers(status, headers, exc_info=None):
            return start_response(status, [*headers, *SECURITY_HEADERS], exc_info)

        refusal = self._login_refused(environ)
        if refusal is not None:
            status, headers, body = refusal
            with_headers(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))),
                                  *headers])
            return [body]
        if not self.slots.acquire(blocking=False):
            with_headers("503 Service Unavailable", [("Content-Type", "text/plain; charset=utf-8"),
                                                     ("Content-Length", str(len(BUSY))), ("Retry-After", "5")])
            return [BUSY]
        try:
            body = self.app(environ, with_headers)
        except BaseException:
            self.slots.release()
            raise
        if isinstance(body, list):  # made whole (a page, a redirect, a HEAD): it holds no thread any more
            self.slots.release()
            return body
        return ClosingBody(body, self.slots.release)  # a download: its slot is held while it streams

    def _login_refused(self, environ: dict) -> tuple[str, list[tuple[str, str]], bytes] | None:
        """None when the request is the operator's; else the answer: 401 asking for Basic, or 429 while throttled."""
        address = environ.get("REMOTE_ADDR") or "unknown"
        wait = self.logins.wait(address)
        if wait:  # the credentials are not even checked: no guess counts while an address waits
            seconds = str(math.ceil(wait))
            return ("429 Too Many Requests", [("Retry-After", seconds)],
                    f"Too many failed logins from your address; try again in {seconds} seconds.".encode())
        if authorized(environ, self.password):
            self.logins.succeeded(address)
            return None
        if environ.get("HTTP_AUTHORIZATION"):  # none is a browser's first request, not a guess
            failures, wait = self.logins.failed(address)
            log.warning("ops console: failed login from %s (%d in a row)%s", address, failures,
                        f"; its next try is checked in {math.ceil(wait)} s" if wait else "",
                        extra={"client": address, "failures": failures})
        return "401 Unauthorized", [("WWW-Authenticate", REALM)], NEEDS_LOGIN

    def _pages(self) -> bottle.Bottle:
        app = bottle.Bottle()
        app.config["json.enable"] = False
        app.default_error_handler = self._error_page
        app.route("/", "GET", self.overview)
        app.route("/console.css", "GET", self.css)
        app.route("/enrolments", "GET", self.enrolments_page)
        app.route("/enrolments/<enrolment_id:int>", "GET", self.enrolment_page)
        app.route("/messages/<message_id>", "GET", self.message_page)
        app.route("/rejections", "GET", self.rejections)
        app.route("/rejections/redrive", "POST", self.guarded(self.redrive_one))
        app.route("/rejections/redrive-all", "GET", self.redrive_all_page)
        app.route("/rejections/redrive-all", "POST", self.guarded(self.redrive_all))
        app.route("/export.csv", "GET", self.export)
        casework.routes(app, self)  # erase and the audit
        app.add_hook("after_request", self._close)
        app.install(_database_unavailable_is_503)
        return app

    def _close(self) -> None:
        if bottle.request.path != "/export.csv":  # an export closes its own, once streamed
            drop_connection(models.database)

    def _error_page(self, error: bottle.HTTPError) -> str:
        bottle.response.content_type = HTML_TYPE
        if error.status_code == 500:
            log.error("ops console: %s %s failed", bottle.request.method, bottle.request.path, exc_info=error.exception)
        message = error.body if isinstance(error.body, str) and error.status_code in (400, 403, 503) else {
            404: "There is no such page.", 405: "This page does not take that method.",
        }.get(error.status_code, "Something went wrong; the service log has the details.")
        return page("error", title=bottle.HTTP_CODES.get(error.status_code, "Error"), message=message)

    def guarded(self, handler):
        """A POST handler that runs only for a same-origin form carrying a valid CSRF token."""

        @functools.wraps(handler)
        def checked(*args, **kwargs):
            if not same_origin(bottle.request.environ):
                raise bottle.HTTPError(403, FORBIDDEN_ORIGIN)
            if not self.csrf.valid(bottle.request.forms.get(CSRF_FIELD, "")):
                raise bottle.HTTPError(403, FORBIDDEN_TOKEN)
            return handler(*args, **kwargs)

        return checked

    # pages

    def css(self):
        bottle.response.content_type = "text/css; charset=utf-8"
        return stylesheet()

    def overview(self):
        result = status.status(self.enrolments, self.invalid)
        return page("overview", title="Overview", section="overview", figures=result.figures,
                    unanswered=result.unanswered, figure=status.figure, enrolment_queue=self.queue_names[0],
                    invalid_queue=self.queue_names[1], tables=sorted(EXPORTS))

    def enrolments_page(self):
        query = bottle.request.query.getunicode("q", default="")[:255]
        by = bottle.request.query.getunicode("by", default="any")
        by = by if by in queries.SEARCH_FIELDS else "any"
        found = queries.search(query, by, before=_positive(bottle.request.query.get("before")),
                               after=_name_keyset(bottle.request.query))
        next_url = "?" + urlencode({"q": query, "by": by, **found.next_page}) if found.next_page else None
        return page("enrolments", title="Enrolments", section="enrolments", page=found, query=query, by=by,
                    fields=SEARCH_FIELD_LABELS, next_url=next_url, rejections_found=rejections.search(query, by))

    def enrolment_page(self, enrolment_id: int):
        detail = queries.enrolment_detail(enrolment_id)
        if detail is None:
            raise bottle.HTTPError(404)
        payload = json.dumps(detail.enrolment.data, indent=2, ensure_ascii=False, sort_keys=True)
        return page("enrolment", title=f"Enrolment {enrolment_id}", section="enrolments",
                    enrolment=detail.enrolment, company=detail.company, supplier=detail.supplier,
                    retries=detail.retries, email=detail.email, payload=payload,
                    erased_notice=casework.erased_notice(bottle.request.query, detail.enrolment),
                    history_html=casework.history_html(detail.enrolment.sqs_message_id))

    def message_page(self, message_id: str):
        state, enrolment_id = queries.message_state(message_id)
        rejection = Rejection.get_or_none(Rejection.message_id == message_id) if state != "created" else None
        description = {
            "created": f"saved as enrolment {enrolment_id}",
            "rejected": "set aside on the invalid queue",
            "redriven": "re-driven: on the enrolment queue, waiting for the worker",
            "unknown": "not saved or set aside (yet)",
        }[state]
        case = rejections.case(message_id)
        return page("message", title="Message", section="rejections", message_id=message_id, state=state,
                    description=description, enrolment_id=enrolment_id, rejection=rejection, case=case,
                    history_html=casework.history_html(message_id) if case else "", search_query=casework.search_query)

    def rejections(self):
        query = bottle.request.query
        notices = []
        moved = query.getall("moved")
        if moved:
            done = f"Re-driven: {moved[0]}." if len(moved) == 1 else f"Re-driven: {len(moved)} messages."
            notices.append(("done", done))
        if query.get("moved_count") is not None:
            notices.append(("done", f"Re-driven: {_positive(query.get('moved_count')) or 0} message(s)."))
        for missing in query.getall("missing")[:10]:
            notices.append(("problem", f"{missing} is not on the invalid queue (or is in flight there now)."))
        for refused in query.getall("refused")[:10]:
            notices.append(("problem", f"The enrolment queue refuses {refused}; it stays set aside (see the log)."))
        if query.get("unavailable"):
            notices.append(("problem", "The queues did not answer; nothing more was moved. Try again shortly."))
        return page("rejections", title="Rejections", section="rejections",
                    page=queries.rejections_page(before=_positive(query.get("before"))),
                    redriven=queries.recently_redriven(), notices=notices, csrf_token=self.csrf.new(),
                    moved_one=moved[0] if len(moved) == 1 else None)

    def redrive_all_page(self):
        """The confirmation "Re-drive all" asks for, naming how many messages it moves; its form POSTs."""
        try:
            depth = self.invalid.depth()
            waiting, in_flight = depth.waiting, depth.in_flight
        except QueueUnavailable as error:
            log.warning("ops console: the invalid queue does not answer: %s", error)
            waiting = in_flight = None
        return page("redrive_all", title="Re-drive all", section="rejections", waiting=waiting, in_flight=in_flight,
                    approximate=not self.exact_depth, figure=status.figure, csrf_token=self.csrf.new(),
                    invalid_queue=self.queue_names[1], enrolment_queue=self.queue_names[0])

    def redrive_one(self):
        message_id = bottle.request.forms.getunicode("message_id", default="").strip()
        if not message_id:
            raise bottle.HTTPError(400, "No message id given.")
        return self._redrive([message_id])

    def redrive_all(self):
        return self._redrive(None)

    def _redrive(self, ids: list[str] | None):
        try:
            mark = audit.redrive_marker(audit.console_source(bottle.request.environ))
            result = redrive.redrive(self.invalid, self.enrolments, ids, mark=mark,
                                 wait_seconds=self.redrive_wait)
        except QueueUnavailable as error:
            log.warning("ops console: re-drive stopped: %s", error)
            return self._back_to_rejections([("unavailable", "1")])
        log.info("ops console: re-drove %d message(s): %s", len(result.moved), ", ".join(result.moved))
        refused = [("refused", m) for m in result.refused]
        if ids is None:
            return self._back_to_rejections([("moved_count", str(len(result.moved)))] + refused)
        return self._back_to_rejections(
            [("moved", m) for m in result.moved] + [("missing", m) for m in result.missing] + refused)

    def _back_to_rejections(self, query: list[tuple[str, str]]):
        # Post/Redirect/Get: reloading the page that follows sends nothing again.
        redirect_to_path(f"{bottle.request.script_name}rejections?{urlencode(query)}", 303)

    def export(self):
        table = bottle.request.query.get("table", "")
        if table not in EXPORTS:
            raise bottle.HTTPError(404)
        try:
            since = parse_since(bottle.request.query.get("since"))
        except UserError:
            raise bottle.HTTPError(400, "The date is not of the form YYYY-MM-DD.") from None
        bottle.response.content_type = "text/csv; charset=utf-8"
        bottle.response.set_header("Content-Disposition", f'attachment; filename="{export_filename(table)}"')
        return self._streamed(table, since)

    def _streamed(self, table, since):
        try:
            yield from csv_chunks(export_rows(table, since))
        finally:
            drop_connection(models.database)


def _database_unavailable_is_503(callback):
    """A bottle plugin: a page whose database does not answer says so (503), not "something went wrong"."""

    @functools.wraps(callback)
    def answer(*args, **kwargs):
        try:
            return callback(*args, **kwargs)
        except DATABASE_ERRORS as error:
            log.warning("ops console: %s: the database does not answer: %s", bottle.request.path, error)
            raise bottle.HTTPError(503, DATABASE_UNAVAILABLE) from None

    return answer


def _positive(raw: str | None) -> int | None:
    return int(raw) if raw and raw.isdigit() and len(raw) < 19 else None


def _name_keyset(query: bottle.FormsDict) -> tuple[str, int] | None:
    """The (lowered name, id) a page by name starts after; None (the first page) when absent or malformed."""
    after_id = _positive(query.get("after_id"))
    after = query.getunicode("after")
    return (after[:255], after_id) if after is not None and after_id is not None else None


def make_console(settings: Settings) -> Console:
    """The console for `settings` (OPS_PASSWORD must be set), on its own handles to both queues."""
    return Console(settings, *open_enrolment_queues(settings))


def mount(app: bottle.Bottle, settings: Settings) -> None:
    """Serve the console under /ops/ of `app` when OPS_PASSWORD is set and a database is bound (else a 404)."""
    if not settings.ops_password or db.bound() is None:
        return
    console = make_console(settings)
    # Mounted as plain WSGI, so the console answers its own errors (as HTML) behind its own authentication.
    app.mount("/ops/", lambda environ, start_response: console(environ, start_response))
    app.route("/ops", "GET", lambda: redirect_to_path("/ops/", 301))
