"""The worker in this process, on each queue backend (a pytest plugin: its fixtures need no import)."""

import pytest


@pytest.fixture
def no_lingering_in_once(monkeypatch):
    """work --once without its one-second wait for stragglers: moto and the database queue answer a poll at once."""
    from directory_api import worker

    monkeypatch.setattr(worker, "ONCE_WAIT", 0)


@pytest.fixture(params=["sqs", "database"])
def backend(request):
    """The queue backend of a test, each in turn (parametrize "backend" to pin one)."""
    return request.param


@pytest.fixture
def make_worker(backend, database, database_url, request, no_lingering_in_once):
    """Make a Worker on the test's backend and database, with settings from a few variables."""
    from directory_api.queues import Queue
    from directory_api.queues.database import DatabaseQueue
    from directory_api.queues.sqs import SqsQueue
    from directory_api.worker import Worker
    from tests.factories import worker_settings

    def make(**environ) -> Worker:
        settings = worker_settings(database_url, **{"QUEUE_BACKEND": backend, "SQS_WAIT_TIME": "0", **environ})
        queues: list[Queue]
        if backend == "sqs":
            client = request.getfixturevalue("aws_sqs")
            queues = [SqsQueue(settings, name, client=client) for name in ("enrolment", "enrolment-invalid")]
        else:
            queues = [DatabaseQueue(settings, name) for name in ("enrolment", "enrolment-invalid")]
        for queue in queues:
            queue.ensure_exists()
        return Worker(settings, *queues, rng=lambda: 0.0)

    return make


def received(queue) -> list:
    """What a queue hands out now, up to ten messages, without waiting."""
    return queue.receive(10, 0)
