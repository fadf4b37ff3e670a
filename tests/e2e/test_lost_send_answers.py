"""What holds when SQS takes a message but its answer never reaches serve (docs/http-api.md, docs/worker.md).

serve cannot tell a send whose answer was lost from one the queue never got: it
answers 503 though the message is queued, or 202 behind a retry that queued it
twice. The built pyz on moto, with lost_answers.LostAnswerProxy between serve
and moto (moto straight for the worker), pins what the contract promises instead:
a 4xx never reaches the queue, and every copy and the client's retry of one
payload are saved as one enrolment, answered `created` under each id, mailed once.
"""

import dataclasses
import json
from collections.abc import Iterator

import pytest
import requests

from tests.e2e.harness import get_signed, post_enrolment, service_env, table_count
from tests.e2e.lost_answers import LostAnswerProxy
from tests.factories import enrolment_payload
from tests.smtp import SmtpServer
from tests.support.databases import pg_rows
from tests.support.processes import Processes, start_serve, start_work
from tests.support.sqs import Sqs

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]


@dataclasses.dataclass
class Pipeline:
    """serve behind the proxy, and what `work` needs to drain its queue into `database_url` and mail at `smtp`."""

    cli: list[str]
    base_url: str
    proxy: LostAnswerProxy
    sqs: Sqs
    queues: tuple[str, str]
    database_url: str
    smtp: SmtpServer
    work_env: dict[str, str]
    processes: Processes

    def drain(self) -> None:
        """`work --once`: every message now queued saved or set aside, every e-mail due sent."""
        work = start_work(self.processes, self.cli, self.work_env, "--once",
                          name=f"work-{len(self.processes.started)}")
        assert work.popen.wait(60) == 0, self.processes.logs()
        assert self.sqs.total(self.queues[0]) == 0, self.processes.logs()

    def status(self, message_id: str) -> tuple[int, dict]:
        answer = get_signed(self.base_url, f"/enrolment/{message_id}/")
        return answer.status_code, answer.json()


@pytest.fixture
def pipeline(cli, base_env, pg, moto_endpoint, sqs, queues, processes) -> Iterator[Pipeline]:
    proxy = LostAnswerProxy(moto_endpoint).up()
    smtp = SmtpServer().start()
    mail = {"EMAIL_HOST": "127.0.0.1", "EMAIL_PORT": smtp.port, "EMAIL_USE_TLS": "false",
            "DEFAULT_FROM_EMAIL": "noreply@example.com",
            "COMPANY_EMAIL_CONFIRMATION_URL": "https://directory.example.com/confirm/"}
    work_env = service_env(base_env, database_url=pg, sqs_endpoint=moto_endpoint, queues=queues, **mail)
    serve_env = service_env(base_env, database_url=pg, sqs_endpoint=proxy.url, queues=queues)
    _, base_url = start_serve(processes, cli, serve_env)
    yield Pipeline(cli, base_url, proxy, sqs, queues, pg, smtp, work_env, processes)
    processes.stop_all()
    proxy.down()
    smtp.stop()


def warm_up(pipeline: Pipeline, kept: bool) -> list[dict]:
    """With `kept`, an enrolment sent first, so the send to come finds a connection kept from it (SQS keeps them)."""
    if not kept:
        return []
    payload = enrolment_payload()
    assert post_enrolment(pipeline.base_url, payload).status_code == 202
    return [payload]


def assert_saved_once_and_mailed_once(pipeline: Pipeline, payload: dict, ids: list[str], others: int = 0) -> None:
    """One enrolment, company, supplier and e-mail for `payload`; each of `ids` answers `created` with that enrolment.

    `others`: how many other enrolments the test saved.
    """
    database_url = pipeline.database_url
    saved = [(enrolment_id, json.loads(data) if isinstance(data, str) else data)
             for enrolment_id, data in pg_rows(database_url, "SELECT id, data FROM enrolment")]
    assert len(saved) == 1 + others, (saved, pipeline.processes.logs())
    [enrolment_id] = [enrolment_id for enrolment_id, data in saved if data == payload]
    assert [table_count(database_url, table) for table in ("company", "supplier", "rejection")] == [
        1 + others, 1 + others, 0]
    assert pipeline.sqs.total(pipeline.queues[1]) == 0  # no copy set aside as "already registered"
    for message_id in ids:
        assert pipeline.status(message_id) == (
            200, {"id": message_id, "status": "created", "enrolment_id": enrolment_id})
    recipient = payload["company_email"]
    assert [state for state, to in pg_rows(database_url, "SELECT state, recipient FROM email") if to == recipient] \
        == ["sent"]
    mailed = [message["Message-ID"] for message in pipeline.smtp.messages if message["To"] == recipient]
    assert len(mailed) == 1, mailed
    assert len(pipeline.smtp.messages) == 1 + others


def test_a_4xx_answer_never_reaches_the_queue(pipeline):
    invalid = post_enrolment(pipeline.base_url, enrolment_payload(export_status="MAYBE"))
    not_an_object = post_enrolment(pipeline.base_url, [enrolment_payload()])
    unsigned = requests.post(f"{pipeline.base_url}/enrolment/", data=json.dumps(enrolment_payload()),
                             headers={"Content-Type": "application/json"}, timeout=10)
    assert [invalid.status_code, not_an_object.status_code, unsigned.status_code] == [400, 400, 401]
    assert pipeline.proxy.sends == 0
    assert pipeline.sqs.total(pipeline.queues[0]) == 0


CONNECTIONS = pytest.mark.parametrize("kept", [False, True], ids=["new-connection", "kept-connection"])


@CONNECTIONS
@pytest.mark.parametrize("drained_before_the_retry", [False, True], ids=["retry-queued-beside", "retry-after-saved"])
def test_a_503_whose_message_the_queue_took_is_saved_once_with_the_clients_retry_and_mailed_once(
        pipeline, kept, drained_before_the_retry):
    others = warm_up(pipeline, kept)
    payload = enrolment_payload()
    pipeline.proxy.cut(sends=10)  # every try of serve's loses its answer
    refused = post_enrolment(pipeline.base_url, payload)
    assert refused.status_code == 503, (refused.status_code, refused.text)
    assert "Retry-After" in refused.headers
    lost = pipeline.proxy.lost_ids
    # serve's try and its one retry queued it, and on a kept connection the resend at once of a "stale" one too.
    assert len(lost) == (3 if kept else 2), (lost, pipeline.proxy.sends)
    assert pipeline.sqs.total(pipeline.queues[0]) == len(lost) + len(others)
    if drained_before_the_retry:
        pipeline.drain()
    pipeline.proxy.cut(sends=0)
    retried = post_enrolment(pipeline.base_url, payload)  # as the client does after a 503: the same payload
    assert retried.status_code == 202, retried.text
    pipeline.drain()
    assert_saved_once_and_mailed_once(pipeline, payload, [*lost, retried.json()["id"]], len(others))


@CONNECTIONS
def test_a_202_behind_a_lost_first_answer_is_queued_twice_and_saved_and_mailed_once(pipeline, kept):
    others = warm_up(pipeline, kept)
    payload = enrolment_payload()
    pipeline.proxy.cut(sends=1)  # the first try's answer is lost; serve's retry goes through
    accepted = post_enrolment(pipeline.base_url, payload)
    assert accepted.status_code == 202, accepted.text
    [lost] = pipeline.proxy.lost_ids
    assert pipeline.sqs.total(pipeline.queues[0]) == 2 + len(others)
    pipeline.drain()
    assert_saved_once_and_mailed_once(pipeline, payload, [accepted.json()["id"], lost], len(others))
