import time

import botocore.exceptions
import pytest

from directory_api.queues import MessageRefused, QueueUnavailable
from directory_api.queues.sqs import OLD_MESSAGE_SIZE_LIMIT, ReceiveCounts, SqsQueue, client_for, new_client
from tests.factories import worker_settings
from tests.support.sqs import answering, twice, without_receive_count


@pytest.fixture
def settings(tmp_path):
    return worker_settings(f"sqlite:///{tmp_path / 'unused.sqlite3'}", SQS_VISIBILITY_TIMEOUT="30")


@pytest.fixture(params=["boto3", "direct"])
def queue(request, aws_sqs, settings):
    """The queue on a plain boto3 client, and on the client serve and work use (its enrolment calls direct)."""
    client = aws_sqs if request.param == "boto3" else new_client(settings)
    queue = SqsQueue(settings, "enrolment", client=client)
    queue.ensure_exists()
    return queue


def test_ensure_exists_creates_a_missing_queue_with_the_visibility_timeout(aws_sqs, settings):
    SqsQueue(settings, "new-queue", client=aws_sqs).ensure_exists()
    url = aws_sqs.get_queue_url(QueueName="new-queue")["QueueUrl"]
    attributes = aws_sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["VisibilityTimeout"])["Attributes"]
    assert attributes["VisibilityTimeout"] == "30"


def test_ensure_exists_keeps_an_existing_queue(aws_sqs, settings):
    url = aws_sqs.create_queue(QueueName="existing")["QueueUrl"]
    aws_sqs.send_message(QueueUrl=url, MessageBody="kept")
    SqsQueue(settings, "existing", client=aws_sqs).ensure_exists()
    assert aws_sqs.receive_message(QueueUrl=url)["Messages"][0]["Body"] == "kept"


def test_a_sent_message_is_received_with_its_attributes_and_receive_count(queue):
    message_id = queue.send("body", {"errors": "{}"})
    [message] = queue.receive(10, 0)
    assert (message.id, message.body, message.attributes, message.receive_count) == (
        message_id, "body", {"errors": "{}"}, 1)


def test_the_receive_count_grows_with_each_receive(queue):
    queue.send("body")
    queue.release(queue.receive(10, 0))
    [message] = queue.receive(10, 0)
    assert message.receive_count == 2


def test_a_received_message_stays_hidden(queue):
    queue.send("body")
    queue.receive(10, 0)
    assert queue.receive(10, 0) == []


def test_deleted_messages_are_gone(queue):
    queue.send("one")
    queue.send("two")
    assert queue.delete(queue.receive(10, 0)) == []
    assert queue.receive(10, 0) == []


def test_delete_reports_the_entries_the_batch_failed(queue, monkeypatch):
    queue.send("one")
    queue.send("two")
    messages = queue.receive(10, 0)

    def partly(**kwargs):
        return {"Successful": [{"Id": "0"}], "Failed": [{"Id": "1", "Code": "ReceiptHandleIsInvalid"}]}

    monkeypatch.setattr(queue.client, "delete_message_batch", partly)
    assert queue.delete(messages) == [messages[1]]


def test_released_messages_come_back_at_once(queue):
    queue.send("body")
    queue.release(queue.receive(10, 0))
    assert [m.body for m in queue.receive(10, 0)] == ["body"]


def test_extend_keeps_a_message_hidden_from_now(queue, aws_sqs, monkeypatch):
    queue.send("body")
    [message] = queue.receive(10, 0)
    calls = []
    monkeypatch.setattr(queue.client, "change_message_visibility", lambda **kwargs: calls.append(kwargs))
    queue.extend(message, 60)
    assert calls == [{"QueueUrl": queue.url, "ReceiptHandle": message.receipt, "VisibilityTimeout": 60}]


def test_send_batch_returns_an_id_for_each_body(queue):
    ids = queue.send_batch([f"body {n}" for n in range(12)])
    assert len(set(ids)) == 12 and None not in ids


def test_send_batch_gives_none_for_an_entry_the_queue_refused(queue, monkeypatch):
    monkeypatch.setattr(queue.client, "send_message_batch", lambda **kwargs: {
        "Successful": [{"Id": "0", "MessageId": "id-0"}], "Failed": [{"Id": "1", "Code": "InternalError"}]})
    assert queue.send_batch(["a", "b"]) == ["id-0", None]


def test_throttling_is_queue_unavailable(queue, monkeypatch):
    def throttled(**kwargs):
        raise botocore.exceptions.ClientError({"Error": {"Code": "ThrottlingException"}}, "SendMessage")

    monkeypatch.setattr(queue.client, "send_message", throttled)
    with pytest.raises(QueueUnavailable, match="ThrottlingException"):
        queue.send("body")


def test_an_endpoint_that_refuses_connections_is_queue_unavailable_within_seconds(aws_credentials, tmp_path):
    settings = worker_settings(f"sqlite:///{tmp_path / 'x.sqlite3'}", SQS_ENDPOINT_URL="http://127.0.0.1:1")
    started = time.monotonic()
    with pytest.raises(QueueUnavailable, match="enrolment"):
        SqsQueue(settings, "enrolment").ensure_exists()
    assert time.monotonic() - started < 5


def test_every_queue_of_a_process_shares_one_client(aws_credentials, settings):
    assert SqsQueue(settings, "enrolment").client is SqsQueue(settings, "enrolment-invalid").client
    assert client_for(settings) is SqsQueue(settings, "enrolment").client


def test_a_receive_that_returns_one_message_twice_gives_it_once_with_the_last_receipt(queue, monkeypatch):
    queue.send("body")
    answering(queue, monkeypatch, lambda response: {**response, "Messages": [
        response["Messages"][0], {**response["Messages"][0], "ReceiptHandle": "later"}]})
    [message] = queue.receive(10, 0)
    assert message.receipt == "later"


def test_without_approximate_receive_count_the_queue_counts_receives_itself(queue, monkeypatch):
    queue.send("body")
    answering(queue, monkeypatch, lambda response: without_receive_count(twice(response)))
    counts = []
    for _ in range(3):
        [message] = queue.receive(10, 0)
        counts.append(message.receive_count)
        queue.release([message])
    assert counts == [1, 2, 3]


def test_a_deleted_message_is_no_longer_counted(queue, monkeypatch):
    queue.send("body")
    answering(queue, monkeypatch, without_receive_count)
    queue.delete(queue.receive(10, 0))
    assert len(queue.receive_counts._counts) == 0


def test_own_receive_counts_keep_at_most_their_limit_forgetting_the_longest_unseen():
    counts = ReceiveCounts(limit=2)
    counts.received("a")
    counts.received("b")
    counts.received("a")
    counts.received("c")  # "b" was received longest ago
    assert (counts.received("a"), counts.received("b")) == (3, 1)


def test_a_message_over_the_queues_size_limit_is_refused_not_unavailable(queue, aws_sqs):
    aws_sqs.set_queue_attributes(QueueUrl=queue.url, Attributes={"MaximumMessageSize": "1024"})
    with pytest.raises(MessageRefused, match="InvalidParameterValue"):
        queue.send("x" * 2000)


def test_the_size_limit_is_the_queues_maximum_message_size(queue, aws_sqs):
    aws_sqs.set_queue_attributes(QueueUrl=queue.url, Attributes={"MaximumMessageSize": "2048"})
    assert queue.message_size_limit() == 2048


def test_the_size_limit_is_the_old_256_kib_when_the_queue_does_not_say(queue, monkeypatch):
    def denied(**kwargs):
        raise botocore.exceptions.ClientError({"Error": {"Code": "AccessDenied"}}, "GetQueueAttributes")

    monkeypatch.setattr(queue.client, "get_queue_attributes", denied)
    assert queue.message_size_limit() == OLD_MESSAGE_SIZE_LIMIT == 262_144
