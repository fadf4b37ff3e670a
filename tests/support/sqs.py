"""moto as SQS, in this process or as a server over HTTP: queues seen behind the service's back, answers altered."""

import os
import sys
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import boto3
import pytest
import requests
from moto import mock_aws

from tests.support.processes import Processes
from tests.support.signing import UI_SECRET
from tests.support.sockets import free_port
from tests.support.waits import wait_until

REGION = "eu-west-1"
# moto accepts any credentials; these only keep boto3 from looking for real ones.
FAKE_AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing"}


@pytest.fixture
def aws_credentials(monkeypatch):
    """Fake AWS credentials and region in the environment, so boto3 never looks for real ones."""
    for name, value in {**FAKE_AWS, "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def no_aws_credentials(monkeypatch, tmp_path):
    """An environment where boto3's chain finds no credentials: none set, no files, no instance metadata."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                 "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                 "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def aws_sqs(aws_credentials):
    """An SQS client on moto inside this process."""
    with mock_aws():
        yield boto3.client("sqs", region_name=REGION)


def answering(queue, monkeypatch, change):
    """Make the queue's ReceiveMessage answer what `change` makes of moto's answer."""
    receive = queue.client.receive_message
    monkeypatch.setattr(queue.client, "receive_message", lambda **kwargs: change(receive(**kwargs)))


def twice(response):
    """A ReceiveMessage answer with each message in it twice."""
    return {**response, "Messages": response.get("Messages", []) * 2}


def without_receive_count(response):
    """A ReceiveMessage answer without its messages' attributes (ApproximateReceiveCount among them)."""
    messages = response.get("Messages", [])
    return {**response, "Messages": [{k: v for k, v in m.items() if k != "Attributes"} for m in messages]}


def moto_argv(port: int) -> list[str]:
    moto_server = Path(sys.executable).with_name("moto_server")
    if moto_server.exists():
        return [str(moto_server), "-H", "127.0.0.1", "-p", str(port)]
    return [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]


def start_moto(processes: Processes) -> str:
    """A moto server on a free port; returns its endpoint URL once it answers."""
    port = free_port()
    process = processes.start(moto_argv(port), {**os.environ, **FAKE_AWS}, "moto")
    endpoint = f"http://127.0.0.1:{port}"

    def answers():
        assert process.alive(), f"moto_server exited:\n{process.log()}"
        return requests.get(f"{endpoint}/moto-api/", timeout=1).status_code < 500

    wait_until(answers, 30, "moto_server to answer")
    return endpoint


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory) -> Iterator[str]:
    """One moto server for the session; tests keep apart by queue names."""
    started = Processes(tmp_path_factory.mktemp("moto"))
    endpoint = start_moto(started)
    yield endpoint
    started.stop_all()


def sqs_client(endpoint: str):
    """A boto3 SQS client straight to the moto server at `endpoint`."""
    return boto3.client(
        "sqs", endpoint_url=endpoint, region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing"
    )


class Sqs:
    """A client to moto over HTTP, to preload and inspect queues behind the service's back."""

    def __init__(self, endpoint: str):
        self.client = sqs_client(endpoint)

    def url(self, name: str) -> str:
        return self.client.create_queue(QueueName=name)["QueueUrl"]

    def send_batch(self, name: str, bodies: Iterable[str]) -> list[str]:
        """Send with SendMessageBatch, ten a call (moto manages ~110 calls/s); return the message ids in order."""
        url = self.url(name)
        bodies = list(bodies)
        ids: list[str] = []
        for start in range(0, len(bodies), 10):
            chunk = bodies[start : start + 10]
            answer = self.client.send_message_batch(
                QueueUrl=url, Entries=[{"Id": str(n), "MessageBody": body} for n, body in enumerate(chunk)]
            )
            assert not answer.get("Failed"), answer["Failed"]
            by_entry = {entry["Id"]: entry["MessageId"] for entry in answer["Successful"]}
            ids.extend(by_entry[str(n)] for n in range(len(chunk)))
        return ids

    def counts(self, name: str) -> tuple[int, int]:
        """(visible, in flight) messages of a queue; (0, 0) when it does not exist."""
        try:
            url = self.client.get_queue_url(QueueName=name)["QueueUrl"]
        except self.client.exceptions.QueueDoesNotExist:
            return 0, 0
        attributes = self.client.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]), int(attributes["ApproximateNumberOfMessagesNotVisible"])

    def total(self, name: str) -> int:
        return sum(self.counts(name))

    def exists(self, name: str) -> bool:
        try:
            self.client.get_queue_url(QueueName=name)
        except self.client.exceptions.QueueDoesNotExist:
            return False
        return True


def queue_names() -> tuple[str, str]:
    """Fresh enrolment and invalid queue names, so tests sharing a moto server never see each other."""
    suffix = uuid.uuid4().hex[:10]
    return f"enrolment-{suffix}", f"enrolment-invalid-{suffix}"


@pytest.fixture
def sqs(moto_endpoint) -> Sqs:
    return Sqs(moto_endpoint)


@pytest.fixture
def queues() -> tuple[str, str]:
    """Names of an enrolment and an invalid queue of the test's own."""
    return queue_names()


def sqs_env(endpoint: str, queues: tuple[str, str], database_url: str, **settings: object) -> dict[str, str]:
    """The settings of a serve or work process on the moto server at `endpoint`; `settings` override by name."""
    env = {
        **FAKE_AWS,
        "DATABASE_URL": database_url,
        "UI_SECRET": UI_SECRET,
        "QUEUE_BACKEND": "sqs",
        "SQS_ENDPOINT_URL": endpoint,
        "SQS_REGION_NAME": REGION,
        "SQS_ENROLMENT_QUEUE_NAME": queues[0],
        "SQS_INVALID_ENROLMENT_QUEUE_NAME": queues[1],
    }
    env.update({name: str(value) for name, value in settings.items()})
    return env
