"""serve's WSGI middleware: a request id on every request, one access line each, the HTTP metrics, /metrics.

It wraps the app rather than touching each route: every answer, a 404 or an
unexpected error's 500 included, gets an X-Request-ID and is counted once.
"""

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator

from directory_api import logs, vendored_internals
from directory_api.metrics import HttpMetrics, Registry

log = logging.getLogger("directory_api.access")

METRICS_PATH = "/metrics"
UNMATCHED = "unmatched"  # the route label of a request that matched no route (a 404, a 405)
MAX_LOGGED_PATH = 500


def loggable_path(path: str) -> str:
    """The path for a text line: control characters escaped (a path may hold %0A), at most 500 characters."""
    if not path.isprintable():
        path = path.encode("unicode_escape").decode("ascii")
    return path if len(path) <= MAX_LOGGED_PATH else path[:MAX_LOGGED_PATH] + "…"


def log_access(method: str, path: str, status: int, seconds: float, request_id: str) -> None:
    """The access line of one request: method, path, status, duration and request id."""
    if not log.isEnabledFor(logging.INFO):
        return
    milliseconds = round(seconds * 1000, 2)
    path = loggable_path(path)
    log.info(
        "%s %s %d %.1f ms request_id=%s", method, path, status, milliseconds, request_id,
        extra={"method": method, "path": path, "status": status, "duration_ms": milliseconds,
               "request_id": request_id},
    )


class Observed:
    """Wraps a Bottle app (or any WSGI app): request ids, access lines, HTTP metrics, and GET /metrics."""

    def __init__(self, app, registry: Registry, metrics: HttpMetrics):
        self.app = app
        self.registry = registry
        self.metrics = metrics
        self._route_labels: dict[object, str] = {}

    def __call__(self, environ, start_response):
        started = time.perf_counter()
        request_id = logs.request_id_for(environ.get("HTTP_X_REQUEST_ID"))
        environ[logs.REQUEST_ID_ENVIRON] = request_id
        statuses = []

        def start(status, headers, exc_info=None):
            statuses.append(status)
            headers.append((logs.REQUEST_ID_HEADER, request_id))
            return start_response(status, headers, exc_info)

        if environ.get("PATH_INFO") == METRICS_PATH:
            body, route = self._metrics(environ, start), METRICS_PATH
        else:
            body = self.app(environ, start)
            route = self._route_label(environ.get("bottle.route"))

        def finish():
            seconds = time.perf_counter() - started
            status = int(statuses[-1][:3]) if statuses else 500
            method = environ.get("REQUEST_METHOD", "")
            self.metrics.observe(route, method, status, seconds)
            log_access(method, environ.get("PATH_INFO", ""), status, seconds, request_id)

        if isinstance(body, list) and statuses:
            finish()
            return body
        return ClosingBody(body, finish)  # a streamed body (a CSV export): counted once it is sent or closed

    def _metrics(self, environ, start_response) -> list[bytes]:
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            method = environ.get("REQUEST_METHOD")
            refusal = json.dumps({"detail": f"Method {method} is not allowed here (allowed: GET)."})
            start_response("405 Method Not Allowed", [("Content-Type", "application/json"), ("Allow", "GET")])
            return [refusal.encode()]
        body = self.registry.exposition()
        start_response("200 OK", [("Content-Type", self.registry.content_type), ("Content-Length", str(len(body)))])
        return [body] if environ["REQUEST_METHOD"] == "GET" else []

    def _route_label(self, route) -> str:
        """The rule of the route that answered, with its mount prefix when it is a mounted app's (/ops/…)."""
        if route is None:
            return UNMATCHED
        label = self._route_labels.get(route)
        if label is None:
            label = self._route_labels[route] = route.rule if route.app is self.app else self._mounted_rule(route)
        return label

    def _mounted_rule(self, route) -> str:
        for mount in getattr(self.app, "routes", ()):
            mountpoint = vendored_internals.mountpoint(mount)
            if mountpoint and mountpoint["target"] is route.app:
                return "/" + mountpoint["prefix"].strip("/") + route.rule
        return route.rule


class ClosingBody:
    """A WSGI body that calls `done` once: when it has been iterated to its end (or failed), or when closed.

    The end counts as well as close() because a WSGI host may drop close(): bottle's mount (Bottle._cast) never
    closes a body that yields nothing (a redirect, a HEAD) or fails on its first chunk.
    """

    def __init__(self, body, done: Callable[[], None]):
        self._body, self._done = body, done
        self._iterator: Iterator | None = None
        self._finished = threading.Lock()

    def __iter__(self):
        self._iterator = iter(self._body)
        return self

    def __next__(self):
        assert self._iterator is not None
        try:
            return next(self._iterator)
        except BaseException:  # StopIteration included: the body is all sent (or never will be)
            self._finish()
            raise

    def close(self) -> None:
        try:
            if hasattr(self._body, "close"):
                self._body.close()
        finally:
            self._finish()

    def _finish(self) -> None:
        if self._finished.acquire(blocking=False):  # once, whichever comes first
            self._done()


def observed(app, registry: Registry | None = None, metrics: HttpMetrics | None = None) -> Observed:
    """`app` with request ids, access lines and metrics (a new in-process registry unless given)."""
    registry = registry or Registry()
    return Observed(app, registry, metrics or HttpMetrics(registry))
