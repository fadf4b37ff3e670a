"""metrics: what serve and work count, summed over the processes of one serve, read with prometheus_client's parser."""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from directory_api import metrics
from directory_api import worker as worker_module
from directory_api.metrics import HttpMetrics, Registry, WorkMetrics
from directory_api.queues import QueueUnavailable
from directory_api.queues.database import DatabaseQueue
from directory_api.worker import Worker
from tests.factories import enrolment_body, worker_settings
from tests.support.metrics import metric_samples

ROOT = Path(__file__).resolve().parent.parent


def samples(registry: Registry) -> dict:
    return metric_samples(registry.exposition().decode())


def outcomes(registry: Registry) -> dict[str, float]:
    found = samples(registry)
    return {outcome: found[("directory_api_worker_messages_total", (("outcome", outcome),))]
            for outcome in metrics.WORKER_OUTCOMES}


def test_every_worker_and_email_outcome_is_exposed_at_zero_from_the_start():
    registry = WorkMetrics().registry
    found = samples(registry)

    assert outcomes(registry) == {"saved": 0, "duplicate": 0, "set_aside": 0, "retried": 0}
    for outcome in metrics.EMAIL_OUTCOMES:
        assert found[("directory_api_emails_total", (("outcome", outcome),))] == 0


def test_http_latency_buckets_resolve_milliseconds():
    assert metrics.HTTP_BUCKETS[0] <= 0.001 and 0.005 in metrics.HTTP_BUCKETS and metrics.HTTP_BUCKETS[-1] >= 5


def test_the_processes_of_one_serve_are_summed(tmp_path):
    """Two forked processes count into one multiprocess directory; /metrics in a third sums them."""
    with metrics.shared_between_processes() as directory:
        children = []
        for requests in (3, 4):
            pid = os.fork()
            if pid == 0:
                counting = HttpMetrics(Registry(directory))
                for _ in range(requests):
                    counting.observe("/", "GET", 200, 0.002)
                os._exit(0)
            children.append(pid)
        for pid in children:
            assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
            metrics.mark_process_dead(directory, pid)
        found = samples(Registry(directory))
    assert found[("directory_api_http_requests_total", (("method", "GET"), ("route", "/"), ("status", "200")))] == 7
    assert found[("directory_api_http_request_duration_seconds_bucket", (("le", "0.0025"), ("route", "/")))] == 7
    assert not os.path.exists(directory)
    assert metrics.MULTIPROCESS_DIRECTORY not in os.environ


@pytest.fixture
def make_worker(database, database_url, monkeypatch):
    monkeypatch.setattr(worker_module, "ONCE_WAIT", 0)

    def make() -> tuple[Worker, DatabaseQueue, DatabaseQueue, WorkMetrics]:
        settings = worker_settings(database_url, QUEUE_BACKEND="database", SQS_WAIT_TIME="0")
        enrolments, invalid = (DatabaseQueue(settings, name) for name in ("enrolment", "enrolment-invalid"))
        counted = WorkMetrics()
        return Worker(settings, enrolments, invalid, rng=lambda: 0.0, metrics=counted), enrolments, invalid, counted

    return make


def test_the_workers_outcome_counts_are_exact_after_a_drain_with_a_set_aside_message(make_worker, monkeypatch):
    worker, enrolments, _, counted = make_worker()
    enrolments.send(enrolment_body())
    first = enrolments.receive(10, 0)
    with monkeypatch.context() as patched:
        patched.setattr(enrolments, "delete", lambda messages: list(messages))  # saved, but not deleted
        worker.handle(first)
        worker.finish_deleting()
    enrolments.release(first)  # so it comes back, and is found saved before
    for body in (enrolment_body(), "not json"):
        enrolments.send(body)
    worker.run(once=True)

    assert outcomes(counted.registry) == {"saved": 2, "duplicate": 1, "set_aside": 1, "retried": 0}
    assert samples(counted.registry)[("directory_api_worker_batch_duration_seconds_count", ())] == 2


def test_a_message_whose_set_aside_fails_is_counted_as_retried(make_worker, monkeypatch):
    worker, enrolments, invalid, counted = make_worker()
    enrolments.send("not json")

    def refuse(*args, **kwargs):
        raise QueueUnavailable("the invalid queue is down")

    monkeypatch.setattr(invalid, "send", refuse)
    worker.handle(enrolments.receive(10, 0))

    assert outcomes(counted.registry) == {"saved": 0, "duplicate": 0, "set_aside": 0, "retried": 1}


def test_a_batch_that_meets_a_database_outage_is_counted_as_retried(make_worker, monkeypatch):
    worker, enrolments, _, counted = make_worker()
    for _ in range(3):
        enrolments.send(enrolment_body())
    messages = enrolments.receive(10, 0)

    def down(entries):
        import peewee

        raise peewee.OperationalError("the database is down")

    monkeypatch.setattr(worker_module.saving, "save_batch", down)
    worker.handle(messages)

    assert outcomes(counted.registry)["retried"] == 3


KEEP_A_DIRECTORY = """
import time
from directory_api import metrics
with metrics.shared_between_processes() as directory:
    print(directory, flush=True)
    time.sleep(60)
"""


def hold_a_directory(tmp_path) -> tuple[subprocess.Popen, str]:
    """A process inside shared_between_processes(), with the temporary directory `tmp_path`; and its directory."""
    process = subprocess.Popen([sys.executable, "-c", KEEP_A_DIRECTORY], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "TMPDIR": str(tmp_path)})
    assert process.stdout is not None
    return process, process.stdout.readline().strip()


@pytest.fixture
def temporary_directory(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def test_a_metrics_directory_left_by_a_killed_serve_is_removed_by_the_next(temporary_directory):
    killed, left = hold_a_directory(temporary_directory)
    killed.kill()
    killed.wait(10)
    assert os.path.isdir(left)

    with metrics.shared_between_processes():
        assert not os.path.exists(left)


def test_the_metrics_directory_of_a_running_serve_is_kept(temporary_directory):
    running, directory = hold_a_directory(temporary_directory)
    try:
        with metrics.shared_between_processes():
            assert os.path.isdir(directory)
    finally:
        running.kill()
        running.wait(10)
