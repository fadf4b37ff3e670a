"""DirectClient: the enrolment calls signed and sent without boto3's call path, answering as boto3 would."""

import http.server
import json
import os
import socket
import threading
import time
from collections.abc import Iterable

import boto3
import botocore.config
import botocore.exceptions
import pytest
from botocore.stub import Stubber

from directory_api.queues import QueueUnavailable
from directory_api.queues.sqs import SqsQueue, new_client
from directory_api.queues.sqs_direct import DirectClient
from tests.factories import worker_settings
from tests.support.sockets import free_port
from tests.support.sqs import REGION

QUEUE_URL = "http://127.0.0.1/123456789012/enrolment"
Answer = tuple[int, dict[str, str], dict]
EMPTY: Answer = (200, {}, {})
NO_SUCH_QUEUE: Answer = (400, {"x-amzn-query-error": "AWS.SimpleQueueService.NonExistentQueue;Sender"},
                 {"__type": "com.amazonaws.sqs#QueueDoesNotExist", "message": "The specified queue does not exist."})


class FakeSqs(http.server.ThreadingHTTPServer):
    """Answers each request with the next of `answers` (status, headers, JSON body), the last one for good.

    Records each request's connection, headers and body; `close_after_answer` closes the connection
    after every answer without saying so, as a server dropping idle connections does.
    """

    daemon_threads = True

    def __init__(self, answers: Iterable[Answer], close_after_answer: bool = False):
        self.answers = list(answers)
        self.close_after_answer = close_after_answer
        self.requests: list[dict] = []
        super().__init__(("127.0.0.1", free_port()), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        server = self.server
        body = self.rfile.read(int(self.headers["Content-Length"]))
        server.requests.append({"connection": id(self.connection), "path": self.path, "headers": dict(self.headers),
                                "body": json.loads(body)})
        status, headers, answer = server.answers.pop(0) if len(server.answers) > 1 else server.answers[0]
        content = json.dumps(answer).encode()
        self.send_response(status)
        for name, value in {"Content-Type": "application/x-amz-json-1.0", **headers}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)
        self.wfile.flush()
        if server.close_after_answer:
            self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_sqs():
    servers = []

    def start(*answers, **options) -> FakeSqs:
        servers.append(FakeSqs(answers or [EMPTY], **options))
        return servers[-1]

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def client_of(endpoint: str) -> DirectClient:
    return new_client(worker_settings("sqlite:///unused.sqlite3", SQS_ENDPOINT_URL=endpoint))


def receive(client) -> dict:
    return client.receive_message(QueueUrl=QUEUE_URL, MaxNumberOfMessages=10, WaitTimeSeconds=0)


def test_calls_are_json_signed_for_sqs_in_the_clients_region(fake_sqs, aws_credentials):
    server = fake_sqs()
    receive(client_of(server.endpoint))
    sent = server.requests[0]
    assert sent["headers"]["X-Amz-Target"] == "AmazonSQS.ReceiveMessage"
    assert sent["headers"]["Content-Type"] == "application/x-amz-json-1.0"
    assert f"/{REGION}/sqs/aws4_request" in sent["headers"]["Authorization"]
    assert sent["body"] == {"QueueUrl": QUEUE_URL, "MaxNumberOfMessages": 10, "WaitTimeSeconds": 0}


def test_an_endpoint_with_a_path_is_called_at_that_path_as_boto3_calls_it(fake_sqs, aws_credentials):
    server = fake_sqs()
    client = client_of(f"{server.endpoint}/sqs-prefix")
    receive(client)
    receive(client.boto3_client)
    direct, through_boto3 = (sent["path"] for sent in server.requests)
    assert direct == through_boto3 == "/sqs-prefix"


def test_a_session_token_is_sent_with_the_signature(fake_sqs, aws_credentials, monkeypatch):
    monkeypatch.setenv("AWS_SESSION_TOKEN", "fake-session-token")
    server = fake_sqs()
    receive(client_of(server.endpoint))
    assert server.requests[0]["headers"]["X-Amz-Security-Token"] == "fake-session-token"


def test_calls_share_one_kept_connection(fake_sqs, aws_credentials):
    server = fake_sqs()
    client = client_of(server.endpoint)
    for _ in range(5):
        receive(client)
    assert len({sent["connection"] for sent in server.requests}) == 1


def test_a_kept_connection_the_server_dropped_is_replaced_without_an_error(fake_sqs, aws_credentials):
    server = fake_sqs(close_after_answer=True)
    client = client_of(server.endpoint)
    for _ in range(3):
        assert receive(client) == {}
    assert len(server.requests) == 3


def test_a_forked_child_opens_connections_of_its_own(fake_sqs, aws_credentials):
    server = fake_sqs()
    client = client_of(server.endpoint)
    receive(client)  # the parent now keeps a connection
    child = os.fork()
    if child == 0:
        try:
            receive(client)
        finally:
            os._exit(0)
    os.waitpid(child, 0)
    receive(client)
    parent_first, in_child, parent_again = (sent["connection"] for sent in server.requests)
    assert in_child != parent_first == parent_again


def test_an_error_answer_is_the_client_error_boto3_raises(fake_sqs, aws_credentials):
    server = fake_sqs(NO_SUCH_QUEUE)
    client = client_of(server.endpoint)
    with pytest.raises(botocore.exceptions.ClientError) as direct:
        receive(client)
    with pytest.raises(botocore.exceptions.ClientError) as through_boto3:
        receive(client.boto3_client)
    assert type(direct.value) is type(through_boto3.value)
    assert direct.value.response["Error"] == through_boto3.value.response["Error"]
    assert direct.value.response["Error"]["Code"] == "AWS.SimpleQueueService.NonExistentQueue"
    assert str(direct.value) == str(through_boto3.value)


def test_a_server_error_is_tried_once_more(fake_sqs, aws_credentials, monkeypatch):
    monkeypatch.setattr(time, "sleep", lambda seconds: None)
    server = fake_sqs((503, {}, {"__type": "ServiceUnavailable"}), (200, {}, {"Messages": []}))
    assert receive(client_of(server.endpoint)) == {"Messages": []}
    assert len(server.requests) == 2


def test_a_refused_call_is_not_tried_again(fake_sqs, aws_credentials):
    server = fake_sqs(NO_SUCH_QUEUE)
    with pytest.raises(botocore.exceptions.ClientError):
        receive(client_of(server.endpoint))
    assert len(server.requests) == 1


def test_an_endpoint_that_refuses_connections_is_queue_unavailable_within_seconds(aws_credentials):
    queue = SqsQueue(worker_settings("sqlite:///unused.sqlite3"), "enrolment",
                     client=client_of(f"http://127.0.0.1:{free_port()}"))
    queue._url = QUEUE_URL  # known, so the receive is the first call
    started = time.monotonic()
    with pytest.raises(QueueUnavailable, match="receive failed"):
        queue.receive(10, 0)
    assert time.monotonic() - started < 5


def test_with_a_proxy_for_the_endpoint_every_call_goes_through_boto3(fake_sqs, aws_credentials, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.invalid:3128")
    monkeypatch.setenv("NO_PROXY", "")
    client = client_of(fake_sqs().endpoint)
    assert not client.direct
    assert client.receive_message == client.boto3_client.receive_message


def test_no_credentials_is_the_error_boto3_gives(fake_sqs, monkeypatch, tmp_path):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    client = client_of(fake_sqs().endpoint)
    with pytest.raises(botocore.exceptions.NoCredentialsError):
        receive(client)


def test_a_round_trip_through_moto_server(moto_endpoint, aws_credentials):
    client = client_of(moto_endpoint)
    queue = SqsQueue(worker_settings("sqlite:///unused.sqlite3", SQS_ENDPOINT_URL=moto_endpoint), "direct-round-trip",
                     client=client)
    queue.ensure_exists()
    ids = queue.send_batch(["one", "two"], [{"original_message_id": "m-1"}, None])
    received = queue.receive(10, 1)
    assert sorted(message.id for message in received) == sorted(ids)
    assert {message.body: dict(message.attributes) for message in received} == {
        "one": {"original_message_id": "m-1"}, "two": {}}
    assert queue.delete(received) == []
    assert boto3.client("sqs", endpoint_url=moto_endpoint, region_name=REGION).get_queue_attributes(
        QueueUrl=queue.url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"] == {"ApproximateNumberOfMessages": "0", "ApproximateNumberOfMessagesNotVisible": "0"}


# -- parity: each direct call answers as the boto3 client does ------------------------------------

SUCCESSES = {
    "send_message_batch": (
        {"QueueUrl": QUEUE_URL, "Entries": [{"Id": "0", "MessageBody": "{}"}]},
        {"Successful": [{"Id": "0", "MessageId": "m-1", "MD5OfMessageBody": "99914b932bd37a50b983c5e7c90ae93b"}],
         "Failed": [{"Id": "1", "SenderFault": True, "Code": "InvalidParameterValue", "Message": "too long"}]},
    ),
    "receive_message": (
        {"QueueUrl": QUEUE_URL, "MaxNumberOfMessages": 10, "WaitTimeSeconds": 0,
         "MessageSystemAttributeNames": ["ApproximateReceiveCount"], "MessageAttributeNames": ["All"]},
        {"Messages": [{"MessageId": "m-1", "ReceiptHandle": "r-1", "MD5OfBody": "99914b932bd37a50b983c5e7c90ae93b",
                       "Body": "{}", "Attributes": {"ApproximateReceiveCount": "2"},
                       "MessageAttributes": {"original_message_id": {"DataType": "String", "StringValue": "m-0"}}}]},
    ),
    "delete_message_batch": (
        {"QueueUrl": QUEUE_URL, "Entries": [{"Id": "0", "ReceiptHandle": "r-1"}]},
        {"Successful": [{"Id": "0"}], "Failed": []},
    ),
}
THROTTLED = (400, {"x-amzn-query-error": "RequestThrottled;Sender", "x-amzn-requestid": "req-1"},
             {"__type": "com.amazonaws.sqs#RequestThrottled", "message": "Rate exceeded"})


def without_date(response: dict) -> dict:
    """A ClientError's response, less what differs between two answers a second apart."""
    metadata = dict(response.get("ResponseMetadata", {}))
    metadata["HTTPHeaders"] = {name: value for name, value in metadata.get("HTTPHeaders", {}).items()
                               if name != "date"}
    return {**response, "ResponseMetadata": metadata}


@pytest.fixture
def sleeps(monkeypatch) -> list[float]:
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    return slept


@pytest.mark.parametrize("method", sorted(SUCCESSES))
def test_a_success_is_the_answer_boto3_gives(method, fake_sqs, aws_credentials):
    params, answer = SUCCESSES[method]
    client = client_of(fake_sqs((200, {"x-amzn-requestid": "req-1"}, answer)).endpoint)
    direct = getattr(client, method)(**params)
    through_boto3 = getattr(client.boto3_client, method)(**params)
    through_boto3.pop("ResponseMetadata")  # nothing reads it; the direct answer leaves it out (sqs_direct.py)
    assert direct == through_boto3 == answer


@pytest.mark.parametrize("method", sorted(SUCCESSES))
def test_throttling_is_retried_and_raised_as_boto3_does(method, fake_sqs, aws_credentials, sleeps):
    params, _ = SUCCESSES[method]
    server = fake_sqs(THROTTLED)
    client = client_of(server.endpoint)
    with pytest.raises(botocore.exceptions.ClientError) as direct:
        getattr(client, method)(**params)
    direct_requests, direct_sleeps = len(server.requests), list(sleeps)
    with pytest.raises(botocore.exceptions.ClientError) as through_boto3:
        getattr(client.boto3_client, method)(**params)
    assert type(direct.value) is type(through_boto3.value) is client.exceptions.RequestThrottled
    assert without_date(direct.value.response) == without_date(through_boto3.value.response)
    assert str(direct.value) == str(through_boto3.value)
    # total_max_attempts=2 (sqs.CLIENT_CONFIG): one retry each, after a throttling pause of up to a second.
    assert direct_requests == len(server.requests) - direct_requests == 2
    assert len(direct_sleeps) == len(sleeps) - len(direct_sleeps) == 1
    assert 0 <= direct_sleeps[0] <= 1


def test_a_throttled_call_then_a_success_is_the_success(fake_sqs, aws_credentials, sleeps):
    params, answer = SUCCESSES["receive_message"]
    server = fake_sqs(THROTTLED, (200, {}, answer))
    assert client_of(server.endpoint).receive_message(**params) == answer
    assert len(server.requests) == 2


def test_x_amz_retry_after_sets_the_pause_as_for_boto3(fake_sqs, aws_credentials, sleeps):
    status, headers, body = THROTTLED
    server = fake_sqs((status, {**headers, "x-amz-retry-after": "3000"}, body))
    client = client_of(server.endpoint)
    for call in (client.receive_message, client.boto3_client.receive_message):
        with pytest.raises(client.exceptions.RequestThrottled):
            call(**SUCCESSES["receive_message"][0])
    assert sleeps == [3.0, 3.0]


@pytest.mark.parametrize("code", ["InternalFailure", "ServiceUnavailable", "RequestTimeout"])
def test_transient_errors_are_retried_as_boto3_retries_them(code, fake_sqs, aws_credentials, sleeps):
    params, answer = SUCCESSES["delete_message_batch"]
    server = fake_sqs((400 if code == "RequestTimeout" else 500, {}, {"__type": code}), (200, {}, answer))
    assert client_of(server.endpoint).delete_message_batch(**params) == answer
    assert len(server.requests) == 2


def test_attempts_and_timeouts_are_the_boto3_clients_own(aws_credentials):
    silent = socket.create_server(("127.0.0.1", 0))  # takes connections, never answers
    config = botocore.config.Config(connect_timeout=1, read_timeout=0.3, retries={"total_max_attempts": 1})
    boto3_client = boto3.client("sqs", region_name=REGION, config=config,
                                endpoint_url=f"http://127.0.0.1:{silent.getsockname()[1]}")
    client = DirectClient(boto3_client, boto3.session.Session().get_credentials())
    started = time.monotonic()
    with silent, pytest.raises(botocore.exceptions.ReadTimeoutError):
        receive(client)
    assert time.monotonic() - started < 1.5


def test_with_sqs_direct_false_every_call_is_boto3s_where_a_stubber_sees_it(aws_credentials):
    client = new_client(worker_settings("sqlite:///unused.sqlite3", SQS_DIRECT="false"))
    assert not client.direct
    with Stubber(client.boto3_client) as stubber:
        params, answer = SUCCESSES["receive_message"]
        stubber.add_response("receive_message", answer, params)
        assert client.receive_message(**params)["Messages"] == answer["Messages"]
        stubber.assert_no_pending_responses()
