"""health: GET /healthcheck/'s parts, probed on one kept connection at most once a second, never lying."""

import contextlib
import json
import socket
import threading
import time
from unittest.mock import patch

import boto3
import peewee
import pytest
import requests
from moto import settings as moto_settings

from directory_api import db, health, migrations
from directory_api.health import Health
from directory_api.queues import sqs
from directory_api.queues.sqs import SqsQueue
from directory_api.web import make_app
from tests.database_locks import writes_locked
from tests.factories import web_settings, worker_settings
from tests.support.clocks import ManualClock
from tests.support.sqs import REGION
from tests.support.wsgi import wsgi_call


class FakeQueue:
    name = "enrolment"

    def __init__(self):
        self.calls = 0

    def ensure_exists(self) -> None:
        self.calls += 1


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    url = f"sqlite:///{tmp_path / 'data.sqlite3'}"
    database = db.bind(url)
    migrations.migrate(database)
    database.close()
    return url


def test_a_writable_database_and_an_answering_queue_are_ok(database):
    assert Health(database, FakeQueue()).parts() == {"database": "ok", "queue": "ok"}


def test_no_database_is_unavailable():
    assert Health(None, FakeQueue()).parts() == {"database": "unavailable", "queue": "ok"}


def test_a_read_only_sqlite_database_is_not_writable(sqlite_url, monkeypatch):
    # Regression: reads still worked, so health said ok while every enrolment got 503.
    # (query_only fails a write as a read-only file does, with the same error, for a root test run too.)
    monkeypatch.setitem(db.SQLITE_PRAGMAS, "query_only", 1)
    assert Health(db.database_for(sqlite_url), FakeQueue()).parts()["database"] == "not writable"


def test_a_full_disk_under_sqlite_is_not_writable(sqlite_url, monkeypatch):
    # Regression: health said ok while every enrolment failed with "database or disk is full".
    monkeypatch.setattr(db, "free_bytes", lambda folder: 0)
    assert Health(db.database_for(sqlite_url), FakeQueue()).parts()["database"] == "not writable"


def test_a_locked_database_is_not_writable_within_the_probe_timeout(database, database_url):
    # Regression: with the enrolment table locked /healthcheck/ waited as long as the lock, past the client's patience.
    probe = Health(database, FakeQueue())
    with writes_locked(database_url):
        started = time.monotonic()
        assert probe.parts()["database"] == "not writable"
        assert time.monotonic() - started < health.PROBE_TIMEOUT + 1


def count_connects(monkeypatch, database: peewee.Database) -> list:
    connects = []
    # peewee's own stubs leave out Database._connect, the hook each driver's subclass defines and connect() calls.
    original = type(database)._connect  # type: ignore[attr-defined]

    def counting(self):
        connects.append(self)
        return original(self)

    monkeypatch.setattr(type(database), "_connect", counting)
    return connects


def test_probes_from_many_threads_share_one_kept_connection(database, monkeypatch):
    # Regression: each /healthcheck/ opened a PostgreSQL connection of its own (250 a second under a flood).
    probe = Health(database, FakeQueue(), cache_seconds=0)
    connects = count_connects(monkeypatch, database)
    threads = [threading.Thread(target=lambda: [probe.parts() for _ in range(10)]) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(connects) == 1


def test_the_kept_connection_serves_request_threads_that_live_on(database):
    # waitress's threads live as long as the server: a connection made in one is used from the others.
    probe = Health(database, FakeQueue(), cache_seconds=0)
    first_done, answers = threading.Event(), []

    def first():
        answers.append(probe.parts())
        first_done.set()
        time.sleep(0.5)  # alive while the other probes, so the two threads are told apart

    def second():
        first_done.wait(5)
        answers.append(probe.parts())

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert answers == [{"database": "ok", "queue": "ok"}] * 2


def test_a_flood_of_health_checks_probes_once_a_cache_period(database, monkeypatch):
    clock, queue = ManualClock(start=1000.0), FakeQueue()
    probes = []
    monkeypatch.setattr(db, "write_problem", lambda database: probes.append(1))
    probe = Health(database, queue, clock=clock)
    for _ in range(100):
        probe.parts()
    assert (len(probes), queue.calls) == (1, 1)
    clock.now += health.CACHE_SECONDS
    probe.parts()
    assert (len(probes), queue.calls) == (2, 2)


def test_while_one_request_probes_the_others_get_the_last_answer_at_once(database, monkeypatch):
    clock = ManualClock(start=1000.0)
    probe = Health(database, FakeQueue(), clock=clock)
    probe.parts()
    clock.now += health.CACHE_SECONDS
    slow = threading.Event()
    monkeypatch.setattr(db, "write_problem", lambda database: slow.wait(5) and None)
    probing = threading.Thread(target=probe.parts)
    probing.start()
    time.sleep(0.1)
    started = time.monotonic()
    assert probe.parts() == {"database": "ok", "queue": "ok"}
    assert time.monotonic() - started < 0.5
    slow.set()
    probing.join(5)


@pytest.mark.postgres
def test_a_kept_connection_the_server_dropped_is_replaced_without_a_false_alarm(postgres_database):
    database = postgres_database
    probe = Health(database, FakeQueue(), cache_seconds=0)
    assert probe.parts()["database"] == "ok"
    database.execute_sql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid()"
    )
    assert probe.parts()["database"] == "ok"


# The queue on SQS whose credentials, queue or endpoint cannot be used (issue 22, item 6)


@pytest.fixture
def silent_endpoint():
    """An SQS endpoint URL that takes connections (the kernel's backlog) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


def sqs_queue(name: str = "enrolment", **environ) -> SqsQueue:
    """An SQS queue on a client of its own (not the process's shared one, which an earlier test may have made)."""
    settings = worker_settings("sqlite:///unused.sqlite3", **environ)
    return SqsQueue(settings, name, client=sqs.new_client(settings))


def queue_warnings(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records
            if record.levelname == "WARNING" and record.name == "directory_api.health"]


def test_no_aws_credentials_make_the_queue_unavailable_and_say_so(no_aws_credentials, caplog):
    assert Health(None, sqs_queue()).parts()["queue"] == "unavailable"
    (line,) = queue_warnings(caplog)
    assert "healthcheck: the queue enrolment cannot be used: no AWS credentials found" in line


def test_refused_credentials_make_the_queue_unavailable_and_say_so(aws_sqs, caplog):
    with iam_enforced():
        parts = Health(None, sqs_queue()).parts()  # aws_sqs's credentials, which no IAM user of moto's has

    assert parts["queue"] == "unavailable"
    assert "the AWS credentials were refused (InvalidClientTokenId)" in queue_warnings(caplog)[0]


def test_a_missing_queue_these_credentials_may_not_create_is_unavailable_and_says_so(aws_sqs, monkeypatch, caplog):
    allowed_only_to_find_queues(aws_sqs, monkeypatch)
    with iam_enforced():
        parts = Health(None, sqs_queue("never-made")).parts()

    assert parts["queue"] == "unavailable"
    assert ("queue never-made does not exist and these credentials may not create it (sqs:CreateQueue denied)"
            in queue_warnings(caplog)[0])


def test_an_existing_queue_these_credentials_may_find_is_ok(aws_sqs, monkeypatch):
    aws_sqs.create_queue(QueueName="made-before")
    allowed_only_to_find_queues(aws_sqs, monkeypatch)
    with iam_enforced():
        assert Health(None, sqs_queue("made-before")).parts()["queue"] == "ok"


def test_a_silent_sqs_endpoint_is_unavailable_within_the_probe_timeout(silent_endpoint, aws_credentials, caplog):
    # Regression: /healthcheck/ waited for the SQS client's read timeout, twice (61 s), past any load balancer.
    probe = Health(None, sqs_queue(SQS_ENDPOINT_URL=silent_endpoint), cache_seconds=0)
    started = time.monotonic()
    assert probe.parts()["queue"] == "unavailable"
    assert time.monotonic() - started < health.PROBE_TIMEOUT + 1
    assert f"no answer within {health.PROBE_TIMEOUT:g} s" in queue_warnings(caplog)[0]


def test_while_a_queue_probe_hangs_no_second_one_is_started():
    queue = HangingQueue()
    probe = Health(None, queue, cache_seconds=0)
    assert probe.parts()["queue"] == "unavailable"
    started = time.monotonic()
    assert probe.parts()["queue"] == "unavailable"
    assert time.monotonic() - started < 0.5
    assert queue.calls == 1
    queue.answer.set()


def test_a_queue_that_raises_anything_is_unavailable_not_an_error(database):
    class Broken(FakeQueue):
        def ensure_exists(self) -> None:
            raise RuntimeError("no such thing")

    assert Health(database, Broken()).parts()["queue"] == "unavailable"


def test_start_warns_in_one_line_why_the_queue_cannot_be_used(no_aws_credentials, caplog):
    assert not health.warn_if_queue_unusable(sqs_queue())

    (line,) = queue_warnings(caplog)
    assert line.startswith("the enrolment queue enrolment cannot be used: no AWS credentials found")
    assert "answer 503 until it can" in line


def test_start_waits_for_a_silent_endpoint_at_most_its_bound(silent_endpoint, aws_credentials, caplog):
    queue = sqs_queue(SQS_ENDPOINT_URL=silent_endpoint)
    started = time.monotonic()
    assert not health.warn_if_queue_unusable(queue, timeout=1.0)
    assert time.monotonic() - started < 2
    assert "cannot be used: no answer within 1 s" in queue_warnings(caplog)[0]


def test_start_says_nothing_of_a_queue_that_answers(aws_sqs, caplog):
    assert health.warn_if_queue_unusable(sqs_queue())
    assert queue_warnings(caplog) == []


def test_healthcheck_answers_503_naming_the_queue_when_there_are_no_credentials(no_aws_credentials, database):
    status, _, body = wsgi_call(make_app(web_settings(), sqs_queue()), "GET", "/healthcheck/")

    assert status == 503
    assert json.loads(body) == {"status": "unavailable", "database": "ok", "queue": "unavailable"}


class HangingQueue(FakeQueue):
    def __init__(self):
        super().__init__()
        self.answer = threading.Event()

    def ensure_exists(self) -> None:
        self.calls += 1
        self.answer.wait(30)


@contextlib.contextmanager
def iam_enforced():
    """moto checking each call's credentials and IAM policy, as AWS does (it lets every call through by default)."""
    with patch.object(moto_settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0):
        yield


def allowed_only_to_find_queues(aws_sqs, monkeypatch) -> None:
    """Credentials of an IAM user that may call sqs:GetQueueUrl and nothing else, in the environment."""
    iam = boto3.client("iam", region_name=REGION)
    iam.create_user(UserName="finder")
    policy = {"Version": "2012-10-17",
              "Statement": [{"Effect": "Allow", "Action": ["sqs:GetQueueUrl"], "Resource": "*"}]}
    iam.put_user_policy(UserName="finder", PolicyName="find", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName="finder")["AccessKey"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
    monkeypatch.delenv("AWS_SESSION_TOKEN")


def test_serve_without_aws_credentials_warns_at_start_and_its_healthcheck_says_503(serving, tmp_path):
    database_url = f"sqlite:///{tmp_path / 'data.sqlite3'}"
    migrations.migrate(db.bind(database_url))
    nowhere = str(tmp_path / "none")
    serve = serving({"DATABASE_URL": database_url, "QUEUE_BACKEND": "sqs", "SQS_ENROLMENT_QUEUE_NAME": "enrolment",
                     "SQS_INVALID_ENROLMENT_QUEUE_NAME": "enrolment-invalid", "AWS_EC2_METADATA_DISABLED": "true",
                     "AWS_SHARED_CREDENTIALS_FILE": nowhere, "AWS_CONFIG_FILE": nowhere})

    answer = requests.get(f"{serve.url}/healthcheck/", timeout=10)

    assert (answer.status_code, answer.json()["queue"]) == (503, "unavailable")
    warning = "WARNING directory_api.health the enrolment queue enrolment cannot be used: no AWS credentials"
    assert warning in serve.log()
