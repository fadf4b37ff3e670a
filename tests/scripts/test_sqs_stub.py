"""The benchmark's SQS stub behaves as boto3 expects SQS to (so the instrument itself is proven)."""

import time

import benchlib
import pytest


@pytest.fixture(scope="module")
def endpoint():
    process, url = benchlib.start_stub()
    yield url
    benchlib.stop(process)


@pytest.fixture
def client(endpoint):
    return benchlib.sqs_client(endpoint)


@pytest.fixture
def queue_url(client, request):
    return client.create_queue(QueueName=f"test-{request.node.name[:60].replace('[', '-').strip(']')}")["QueueUrl"]


def test_sent_message_is_received_with_its_body_and_id(client, queue_url):
    sent = client.send_message(QueueUrl=queue_url, MessageBody='{"sso_id": 1}')
    received = client.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)["Messages"]
    assert [(m["MessageId"], m["Body"]) for m in received] == [(sent["MessageId"], '{"sso_id": 1}')]


def test_get_queue_url_of_a_missing_queue_raises_queue_does_not_exist(client):
    with pytest.raises(client.exceptions.QueueDoesNotExist) as raised:
        client.get_queue_url(QueueName="never-created")
    assert raised.value.response["Error"]["Code"] == "AWS.SimpleQueueService.NonExistentQueue"


def test_create_queue_twice_answers_the_same_url(client):
    assert client.create_queue(QueueName="twice")["QueueUrl"] == client.create_queue(QueueName="twice")["QueueUrl"]


def test_batch_send_answers_each_entry_and_receive_honours_max_number(client, queue_url):
    entries = [{"Id": str(n), "MessageBody": f"m{n}"} for n in range(10)]
    answer = client.send_message_batch(QueueUrl=queue_url, Entries=entries)
    assert sorted(entry["Id"] for entry in answer["Successful"]) == sorted(str(n) for n in range(10))
    assert len(client.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=4)["Messages"]) == 4


def test_received_message_is_hidden_until_its_visibility_timeout_ends(client, queue_url):
    client.send_message(QueueUrl=queue_url, MessageBody="once")
    client.receive_message(QueueUrl=queue_url, VisibilityTimeout=1)
    assert "Messages" not in client.receive_message(QueueUrl=queue_url)
    again = client.receive_message(QueueUrl=queue_url, WaitTimeSeconds=3,
                                   MessageSystemAttributeNames=["ApproximateReceiveCount"])["Messages"]
    assert again[0]["Attributes"]["ApproximateReceiveCount"] == "2"


def test_long_poll_returns_as_soon_as_a_message_arrives(client, queue_url, endpoint):
    import threading

    sender = benchlib.sqs_client(endpoint)
    threading.Timer(0.3, lambda: sender.send_message(QueueUrl=queue_url, MessageBody="late")).start()
    started = time.monotonic()
    messages = client.receive_message(QueueUrl=queue_url, WaitTimeSeconds=10)["Messages"]
    assert messages[0]["Body"] == "late" and time.monotonic() - started < 3


def test_long_poll_on_an_empty_queue_answers_no_messages_after_the_wait(client, queue_url):
    started = time.monotonic()
    assert "Messages" not in client.receive_message(QueueUrl=queue_url, WaitTimeSeconds=1)
    assert 0.9 < time.monotonic() - started < 3


def test_deleted_message_never_comes_back(client, queue_url):
    client.send_message(QueueUrl=queue_url, MessageBody="gone")
    message = client.receive_message(QueueUrl=queue_url, VisibilityTimeout=1)["Messages"][0]
    client.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    assert "Messages" not in client.receive_message(QueueUrl=queue_url, WaitTimeSeconds=2)


def test_delete_batch_reports_each_entry(client, queue_url):
    client.send_message_batch(QueueUrl=queue_url, Entries=[{"Id": str(n), "MessageBody": "x"} for n in range(3)])
    messages = client.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)["Messages"]
    answer = client.delete_message_batch(
        QueueUrl=queue_url,
        Entries=[{"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(messages)])
    assert len(answer["Successful"]) == 3 and not answer.get("Failed")
    assert benchlib.stub_message_ids(client.meta.endpoint_url, queue_url.rsplit("/", 1)[1]) == set()


def test_change_visibility_to_zero_hands_the_message_back_at_once(client, queue_url):
    client.send_message(QueueUrl=queue_url, MessageBody="back")
    message = client.receive_message(QueueUrl=queue_url, VisibilityTimeout=30)["Messages"][0]
    client.change_message_visibility_batch(
        QueueUrl=queue_url, Entries=[{"Id": "a", "ReceiptHandle": message["ReceiptHandle"], "VisibilityTimeout": 0}])
    assert client.receive_message(QueueUrl=queue_url)["Messages"][0]["MessageId"] == message["MessageId"]


def test_change_visibility_of_a_message_not_in_flight_fails_that_entry(client, queue_url):
    client.send_message(QueueUrl=queue_url, MessageBody="x")
    message = client.receive_message(QueueUrl=queue_url)["Messages"][0]
    client.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    answer = client.change_message_visibility_batch(
        QueueUrl=queue_url, Entries=[{"Id": "a", "ReceiptHandle": message["ReceiptHandle"], "VisibilityTimeout": 0}])
    assert [entry["Id"] for entry in answer["Failed"]] == ["a"]


def test_message_attributes_come_back_when_asked_for(client, queue_url):
    attributes = {"errors": {"DataType": "String", "StringValue": '{"sso_id": ["taken"]}'}}
    client.send_message(QueueUrl=queue_url, MessageBody="bad", MessageAttributes=attributes)
    message = client.receive_message(QueueUrl=queue_url, MessageAttributeNames=["All"])["Messages"][0]
    assert message["MessageAttributes"] == attributes


def test_queue_attributes_count_visible_and_in_flight_messages(client, queue_url):
    client.send_message_batch(QueueUrl=queue_url, Entries=[{"Id": str(n), "MessageBody": "x"} for n in range(3)])
    client.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=1)
    attributes = client.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
    counts = (attributes["ApproximateNumberOfMessages"], attributes["ApproximateNumberOfMessagesNotVisible"])
    assert counts == ("2", "1")


def test_purge_empties_the_queue(client, queue_url):
    client.send_message(QueueUrl=queue_url, MessageBody="x")
    client.purge_queue(QueueUrl=queue_url)
    assert "Messages" not in client.receive_message(QueueUrl=queue_url)


def test_empty_batch_is_refused_as_sqs_refuses_it(client, queue_url):
    with pytest.raises(client.exceptions.EmptyBatchRequest):
        client.delete_message_batch(QueueUrl=queue_url, Entries=[])


def test_long_poll_of_a_client_that_went_away_takes_no_messages(client, queue_url, endpoint):
    import json
    import socket

    port = int(endpoint.rsplit(":", 1)[1])
    body = json.dumps({"QueueUrl": queue_url, "WaitTimeSeconds": 10}).encode()
    with socket.create_connection(("127.0.0.1", port)) as gone:
        gone.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nX-Amz-Target: AmazonSQS.ReceiveMessage\r\n"
                     b"Content-Type: application/x-amz-json-1.0\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        time.sleep(0.2)
    time.sleep(0.2)
    client.send_message(QueueUrl=queue_url, MessageBody="for a live client")
    assert client.receive_message(QueueUrl=queue_url, WaitTimeSeconds=2)["Messages"][0]["Body"] == "for a live client"
