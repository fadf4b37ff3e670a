"""Prometheus metrics (prometheus_client): what each process counts, and the exposition of /metrics.

prometheus_client chooses at the construction of each metric whether its
values live in memory (one process) or in files of PROMETHEUS_MULTIPROC_DIR
(several processes, summed when scraped). So no metric is made at import:
each part below makes its own when built, after `shared_between_processes()`
has made the directory and switched prometheus_client to it, before the fork.
"""

import contextlib
import logging
import os
from collections.abc import Iterator

from directory_api import tempdirs, vendored_internals

log = logging.getLogger(__name__)

MULTIPROCESS_DIRECTORY = "PROMETHEUS_MULTIPROC_DIR"
# serve's multiprocess directories are named so, in the temporary directory (see tempdirs).
TEMPORARY_PREFIX = "directory-api-metrics-"

# A request is answered in milliseconds; a slow one (a database that hangs) in seconds.
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# A batch of ten is saved in milliseconds; a slow database, a retried statement, in seconds.
BATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

WORKER_OUTCOMES = ("saved", "duplicate", "set_aside", "retried")
EMAIL_OUTCOMES = ("sent", "failed", "retried", "logged")  # logged: recorded and logged, no EMAIL_HOST
# Any other method (a client may send anything) is counted as "other", so labels stay few.
METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))


@contextlib.contextmanager
def shared_between_processes() -> Iterator[str]:
    """A private multiprocess directory for the processes forked inside the block; removed at its end.

    Metrics made inside the block (in the parent or, after the fork, in a
    child) write their values to files there, which `Registry(directory)`
    sums. The directory of a serve killed outright is removed by the next.
    """
    removed = tempdirs.remove_abandoned(TEMPORARY_PREFIX)
    if removed:
        log.info("removed %d metrics director%s left by killed processes",
                 len(removed), "y" if len(removed) == 1 else "ies")
    directory, owner = tempdirs.make(TEMPORARY_PREFIX)
    previous = os.environ.get(MULTIPROCESS_DIRECTORY)
    os.environ[MULTIPROCESS_DIRECTORY] = directory
    # prometheus_client reads the variable once, at its import; tell it again, whenever that was.
    vendored_internals.reload_value_class()
    try:
        yield directory
    finally:
        if previous is None:
            os.environ.pop(MULTIPROCESS_DIRECTORY, None)
        else:
            os.environ[MULTIPROCESS_DIRECTORY] = previous
        vendored_internals.reload_value_class()
        tempdirs.remove(directory, owner)


def mark_process_dead(directory: str | None, pid: int) -> None:
    """A child of a multiprocess serve is gone: its live gauges no longer count (its counters still do)."""
    if directory:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, directory)


class Registry:
    """The metrics of this process, and /metrics: summed over every process sharing `directory` when given."""

    def __init__(self, directory: str | None = None):
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, disable_created_metrics

        # A `_created` sample beside every series doubles /metrics and no query of ours needs it.
        disable_created_metrics()
        self.directory = directory
        self.content_type = CONTENT_TYPE_LATEST
        self.collectors = CollectorRegistry(auto_describe=True)

    def exposition(self) -> bytes:
        from prometheus_client import CollectorRegistry, generate_latest
        from prometheus_client.multiprocess import MultiProcessCollector

        if self.directory is None:
            return generate_latest(self.collectors)
        summed = CollectorRegistry()
        MultiProcessCollector(summed, path=self.directory)
        return generate_latest(summed)


class HttpMetrics:
    """serve's requests: a count by route, method and status, a latency histogram by route, enrolments queued."""

    def __init__(self, registry: Registry):
        from prometheus_client import Counter, Histogram

        self.requests = Counter(
            "directory_api_http_requests", "HTTP requests answered, by route, method and status.",
            ("route", "method", "status"), registry=registry.collectors,
        )
        self.duration = Histogram(
            "directory_api_http_request_duration_seconds", "Time to answer an HTTP request, by route.",
            ("route",), buckets=HTTP_BUCKETS, registry=registry.collectors,
        )
        self.queued = Counter(
            "directory_api_enrolments_queued", "Enrolments put on the enrolment queue (answered 202).",
            registry=registry.collectors,
        )
        # (route, method, status) -> what to count: a label lookup takes a lock, a dict lookup does not.
        self._children: dict[tuple[str, str, int], tuple] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        if method not in METHODS:
            method = "other"
        key = (route, method, status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = self._children_for(route, method, status)
        count, duration, queued = children
        count.inc()
        duration.observe(seconds)
        if queued is not None:
            queued.inc()

    def _children_for(self, route: str, method: str, status: int) -> tuple:
        queued = self.queued if status == 202 and method == "POST" and route.startswith("/enrolment") else None
        return self.requests.labels(route, method, str(status)), self.duration.labels(route), queued


class WorkerMetrics:
    """work's messages by outcome and its batches' duration."""

    def __init__(self, registry: Registry):
        from prometheus_client import Counter, Histogram

        counter = Counter(
            "directory_api_worker_messages", "Queue messages handled by the worker, by outcome.",
            ("outcome",), registry=registry.collectors,
        )
        # Every outcome from the start, at 0: a rate() needs the series before its first increment.
        self._outcomes = {outcome: counter.labels(outcome) for outcome in WORKER_OUTCOMES}
        self.batch_duration = Histogram(
            "directory_api_worker_batch_duration_seconds", "Time to save, set aside and delete one batch.",
            buckets=BATCH_BUCKETS, registry=registry.collectors,
        )

    def count(self, outcome: str, messages: int = 1) -> None:
        if messages:
            self._outcomes[outcome].inc(messages)


class EmailMetrics:
    """Confirmation e-mails by outcome of a try to send one."""

    def __init__(self, registry: Registry):
        from prometheus_client import Counter

        counter = Counter(
            "directory_api_emails",
            "Confirmation e-mails: sent, failed for good, to be retried, or logged (no EMAIL_HOST).",
            ("outcome",), registry=registry.collectors,
        )
        self._outcomes = {outcome: counter.labels(outcome) for outcome in EMAIL_OUTCOMES}

    def count(self, outcome: str) -> None:
        self._outcomes[outcome].inc()


class WorkMetrics:
    """Everything `work` counts, in one registry: its messages and its e-mails."""

    def __init__(self, registry: Registry | None = None):
        self.registry = registry or Registry()
        self.worker = WorkerMetrics(self.registry)
        self.emails = EmailMetrics(self.registry)


def serve_metrics_http(registry: Registry, port: int, host: str = "0.0.0.0"):
    """/metrics of `registry` on its own port, in a daemon thread (work --metrics-port)."""
    from prometheus_client import start_http_server

    return start_http_server(port, addr=host, registry=registry.collectors)
