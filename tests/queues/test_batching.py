"""GroupSender: concurrent sends share batches, and each request learns its own outcome."""

import threading

import pytest

from directory_api.queues import QueueUnavailable, message_size
from directory_api.queues.batching import (
    BATCH_BYTES_LIMIT,
    BATCH_LIMIT,
    GroupSender,
)


class RecordingQueue:
    """A queue double whose first send_batch call blocks until released, so others pile up behind it."""

    name = "enrolment"

    def __init__(self, refuse=(), down=False, inner=None):
        self.batches: list[list[str]] = []
        self.batch_attributes: list = []
        self.sent_single: list[tuple[str, dict]] = []
        self.first_call_started = threading.Event()
        self.release_first_call = threading.Event()
        self.refuse = set(refuse)
        self.down = down
        self.inner = inner  # a real queue that then takes each batch

    def send_batch(self, bodies, attributes=None):
        if not self.batches:
            self.first_call_started.set()
            self.release_first_call.wait(5)
        self.batches.append(list(bodies))
        self.batch_attributes.append(attributes)
        if self.inner is not None:
            return self.inner.send_batch(bodies, attributes)
        if self.down:
            raise QueueUnavailable("fake queue is down")
        return [None if body in self.refuse else f"id-{body}" for body in bodies]

    def send(self, body, attributes=None):
        self.sent_single.append((body, attributes))
        return f"single-{body}"

    def ensure_exists(self):
        return None


def send_concurrently(sender, bodies, queue):
    """Send bodies[0] first, hold it on the wire, send the rest meanwhile; each body -> id or error."""
    outcomes = {}

    def send(body):
        try:
            outcomes[body] = sender.send(body)
        except QueueUnavailable as error:
            outcomes[body] = error

    first = threading.Thread(target=send, args=(bodies[0],))
    first.start()
    assert queue.first_call_started.wait(5)
    others = [threading.Thread(target=send, args=(body,)) for body in bodies[1:]]
    for thread in others:
        thread.start()
    while len(sender._pending) < len(others):
        threading.Event().wait(0.001)
    queue.release_first_call.set()
    for thread in [first, *others]:
        thread.join(5)
    return outcomes


def test_a_lone_send_goes_at_once_and_returns_its_id():
    queue = RecordingQueue()
    queue.release_first_call.set()
    assert GroupSender(queue).send("a") == "id-a"
    assert queue.batches == [["a"]]


def test_sends_arriving_while_one_is_on_the_wire_share_the_next_batch():
    queue = RecordingQueue()
    outcomes = send_concurrently(GroupSender(queue), ["a", "b", "c", "d"], queue)
    assert outcomes == {"a": "id-a", "b": "id-b", "c": "id-c", "d": "id-d"}
    assert queue.batches == [["a"], ["b", "c", "d"]]


def test_a_batch_holds_at_most_ten_entries():
    queue = RecordingQueue()
    bodies = [str(n) for n in range(1 + BATCH_LIMIT + 3)]
    outcomes = send_concurrently(GroupSender(queue), bodies, queue)
    assert outcomes == {body: f"id-{body}" for body in bodies}
    assert [len(batch) for batch in queue.batches] == [1, BATCH_LIMIT, 3]


def test_a_batch_holds_at_most_256_kib_in_all():
    queue = RecordingQueue()
    bodies = [str(n) * 100 * 1024 for n in range(6)]

    outcomes = send_concurrently(GroupSender(queue), bodies, queue)

    assert outcomes == {body: f"id-{body}" for body in bodies}
    assert [len(batch) for batch in queue.batches] == [1, 2, 2, 1]
    assert all(sum(map(message_size, batch)) <= BATCH_BYTES_LIMIT for batch in queue.batches)


def test_a_body_larger_than_the_byte_limit_goes_alone():
    queue = RecordingQueue()
    bodies = ["a", "b" * (BATCH_BYTES_LIMIT + 1), "c"]

    send_concurrently(GroupSender(queue), bodies, queue)

    assert queue.batches == [["a"], [bodies[1]], ["c"]]


def test_message_size_counts_utf8_bytes_of_body_and_of_each_attribute_name_type_and_value():
    assert message_size("é€😀") == 2 + 3 + 4
    assert message_size("body", {"errors": "{}", "original_message_id": "é"}) == 4 + (6 + 6 + 2) + (19 + 6 + 2)


def test_concurrent_large_enrolments_over_1_mib_in_all_are_each_queued_on_sqs(monkeypatch, tmp_path):
    """Issue 10 item 5: six enrolments of 250 KiB at once were one SendMessageBatch over SQS's 1 MiB: all 503."""
    import boto3
    from moto import mock_aws

    from directory_api.queues.sqs import SqsQueue
    from tests.factories import worker_settings

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    bodies = [f'{{"n": {n}, "padding": "{"x" * 250 * 1024}"}}' for n in range(6)]
    with mock_aws():
        sqs = SqsQueue(worker_settings(f"sqlite:///{tmp_path}/x.sqlite3"), "enrolment",
                       client=boto3.client("sqs", region_name="eu-west-1"))
        queue = RecordingQueue(inner=sqs)

        outcomes = send_concurrently(GroupSender(queue), bodies, queue)

        received = []
        while batch := sqs.receive(10, 0):
            received.extend(batch)
    assert not [outcome for outcome in outcomes.values() if isinstance(outcome, Exception)]
    assert sorted(message.body for message in received) == sorted(bodies)


def test_an_entry_the_queue_refused_fails_only_its_own_request():
    queue = RecordingQueue(refuse={"c"})
    outcomes = send_concurrently(GroupSender(queue), ["a", "b", "c"], queue)
    assert outcomes["b"] == "id-b"
    assert isinstance(outcomes["c"], QueueUnavailable)


def test_a_queue_that_is_down_fails_every_request_of_the_batch():
    queue = RecordingQueue(down=True)
    outcomes = send_concurrently(GroupSender(queue), ["a", "b", "c"], queue)
    assert all(isinstance(outcome, QueueUnavailable) for outcome in outcomes.values())


def test_a_send_with_attributes_is_batched_with_its_attributes():
    queue = RecordingQueue()
    queue.release_first_call.set()
    assert GroupSender(queue).send("a", {"request_id": "r-1"}) == "id-a"
    assert queue.batches == [["a"]] and queue.batch_attributes == [[{"request_id": "r-1"}]]


def test_other_calls_reach_the_wrapped_queue():
    queue = RecordingQueue()
    sender = GroupSender(queue)
    assert sender.name == "enrolment"
    assert sender.ensure_exists() is None


@pytest.mark.parametrize("backend", ["sqs", "database"])
def test_group_sends_land_on_a_real_backend(backend, database, database_url, monkeypatch):
    import boto3
    from moto import mock_aws

    from directory_api.queues.database import DatabaseQueue
    from directory_api.queues.sqs import SqsQueue
    from tests.factories import worker_settings

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    settings = worker_settings(database_url, QUEUE_BACKEND=backend)
    bodies = [f'{{"n": {n}}}' for n in range(25)]
    request_ids = {body: f"request-{n}" for n, body in enumerate(bodies)}
    with mock_aws():
        if backend == "sqs":
            queue = SqsQueue(settings, "enrolment", client=boto3.client("sqs", region_name="eu-west-1"))
        else:
            queue = DatabaseQueue(settings, "enrolment")
        queue.ensure_exists()
        sender = GroupSender(queue)
        threads = [
            threading.Thread(target=sender.send, args=(body, {"request_id": request_ids[body]} if n % 2 else None))
            for n, body in enumerate(bodies)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        received = []
        while batch := queue.receive(10, 0):
            received.extend(batch)
    assert sorted(message.body for message in received) == sorted(bodies)
    assert {m.body: m.attributes.get("request_id") for m in received} == {
        body: request_ids[body] if n % 2 else None for n, body in enumerate(bodies)
    }


def test_many_threads_sending_at_once_each_get_their_own_id_and_every_body_is_sent_once():
    queue = RecordingQueue()
    queue.release_first_call.set()
    sender = GroupSender(queue)
    outcomes: dict[str, str] = {}

    def send_many(thread: int):
        for number in range(50):
            body = f"{thread}-{number}"
            outcomes[body] = sender.send(body)

    threads = [threading.Thread(target=send_many, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not any(thread.is_alive() for thread in threads), "a sender was never woken"
    assert outcomes == {body: f"id-{body}" for body in outcomes} and len(outcomes) == 16 * 50
    assert sorted(body for batch in queue.batches for body in batch) == sorted(outcomes)
    assert all(1 <= len(batch) <= BATCH_LIMIT for batch in queue.batches)
