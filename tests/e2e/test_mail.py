"""The confirmation e-mail from the built pyz.

`work` against a real SMTP server (scripts/smtp_sink.py) in its own process.
"""

import asyncio
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import smtp_sink

from tests.e2e.harness import service_env
from tests.factories import enrolment_bodies, enrolment_payload
from tests.smtp import SmtpServer, parse, parts, self_signed_certificate
from tests.support.databases import pg_rows
from tests.support.processes import start_work
from tests.support.sockets import free_port
from tests.support.waits import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

SINK = Path(__file__).resolve().parents[2] / "scripts" / "smtp_sink.py"
CONFIRMATION_URL = "https://directory.example.com/confirm/"


class SinkProcess:
    """scripts/smtp_sink.py on a port; the messages it accepted, from its JSON lines file."""

    def __init__(self, processes, tmp_path: Path, port: int | None = None, mode: str = "accept", *options: str):
        self.port = port or free_port()
        self.out = tmp_path / f"mails-{self.port}-{mode}.jsonl"
        self.process = processes.start(
            [sys.executable, str(SINK), "--port", str(self.port), "--mode", mode, "--out", str(self.out), *options],
            {"PATH": "/usr/bin:/bin"}, f"smtp-{mode}")
        wait_until(lambda: "ready" in self.process.log(), 15, "the SMTP sink to start")

    def records(self) -> list[dict]:
        if not self.out.exists():
            return []
        return [json.loads(line) for line in self.out.read_text().splitlines() if line.strip()]

    def message_ids(self) -> list[str]:
        return [parse(record["data"])["Message-ID"] for record in self.records()]

    def stop(self) -> None:
        self.process.stop()


def mail_env(base_env, pg, moto_endpoint, queues, port, **settings):
    return service_env(base_env, database_url=pg, sqs_endpoint=moto_endpoint, queues=queues, **{
        "EMAIL_HOST": "127.0.0.1", "EMAIL_PORT": port, "EMAIL_USE_TLS": "false",
        "DEFAULT_FROM_EMAIL": "noreply@example.com", "COMPANY_EMAIL_CONFIRMATION_URL": CONFIRMATION_URL,
        **settings})


def emails(database_url: str) -> list[tuple]:
    """(state, attempts, last_error, token, recipient) of every e-mail row, oldest first."""
    return pg_rows(database_url, "SELECT state, attempts, last_error, token, recipient FROM email ORDER BY id")


def states(database_url: str) -> list[str]:
    return [row[0] for row in emails(database_url)]


def test_work_sends_each_new_supplier_a_confirmation_with_a_text_and_an_html_part(
        cli, base_env, pg, moto_endpoint, sqs, queues, processes, tmp_path):
    sink = SinkProcess(processes, tmp_path)
    sqs.send_batch(queues[0], enrolment_bodies(3))
    start_work(processes, cli, mail_env(base_env, pg, moto_endpoint, queues, sink.port))
    wait_until(lambda: len(sink.records()) == 3 and states(pg) == ["sent"] * 3, 30, "3 e-mails sent")
    by_recipient = {record["rcpt_tos"][0]: parse(record["data"]) for record in sink.records()}
    assert set(by_recipient) == {enrolment_payload(n)["company_email"] for n in range(3)}
    message = by_recipient[enrolment_payload(0)["company_email"]]
    bodies_of = parts(message)
    company = enrolment_payload(0)["company_name"]
    assert f"You recently registered a trade profile for your company, {company}" in bodies_of["text/plain"]
    assert f'href="{CONFIRMATION_URL}"' in bodies_of["text/html"]
    assert message["Message-ID"] in {f"<{row[3]}@example.com>" for row in emails(pg)}


def test_an_smtp_server_down_then_up_gets_every_email_once(
        cli, base_env, pg, moto_endpoint, sqs, queues, processes, tmp_path):
    port = free_port()
    sqs.send_batch(queues[0], enrolment_bodies(5))
    start_work(processes, cli, mail_env(base_env, pg, moto_endpoint, queues, port))
    wait_until(lambda: any(row[2] for row in emails(pg)), 30, "a failed try while the server is down")
    assert len(emails(pg)) == 5 and set(states(pg)) == {"waiting"}
    sink = SinkProcess(processes, tmp_path, port)
    wait_until(lambda: states(pg) == ["sent"] * 5, 60, "every e-mail sent once the server is up")
    ids = sink.message_ids()
    assert len(ids) == len(set(ids)) == 5


def test_a_550_marks_the_email_failed_with_the_reply_and_it_is_never_tried_again(
        cli, base_env, pg, moto_endpoint, sqs, queues, processes, tmp_path):
    sink = SinkProcess(processes, tmp_path, None, "refuse")
    sqs.send_batch(queues[0], enrolment_bodies(1))
    work = start_work(processes, cli, mail_env(base_env, pg, moto_endpoint, queues, sink.port))
    wait_until(lambda: states(pg) == ["failed"], 30, "the e-mail marked failed")
    [(_, attempts, last_error, _, _)] = emails(pg)
    assert (attempts, last_error) == (1, "550 5.1.1 No such user here")
    assert "failed, not tried again: 550 5.1.1 No such user here" in work.log()
    code, _ = work.signal_and_time(signal.SIGTERM)
    assert code == 0 and emails(pg)[0][1] == 1


def test_sigterm_while_the_smtp_server_stalls_exits_0_within_2_s_and_the_email_goes_later_with_its_message_id(
        cli, base_env, pg, moto_endpoint, sqs, queues, processes, tmp_path):
    stalling = SinkProcess(processes, tmp_path, None, "stall")
    sqs.send_batch(queues[0], enrolment_bodies(1))
    work = start_work(processes, cli, mail_env(base_env, pg, moto_endpoint, queues, stalling.port))
    wait_until(lambda: [row[1] for row in emails(pg)] == [1], 30, "the e-mail claimed")
    time.sleep(1)  # in DATA now, waiting for an answer that never comes
    code, seconds = work.signal_and_time(signal.SIGTERM)
    assert (code, seconds < 2) == (0, True), (code, seconds, work.log())
    assert states(pg) == ["waiting"]
    sink = SinkProcess(processes, tmp_path)
    start_work(processes, cli, mail_env(base_env, pg, moto_endpoint, queues, sink.port), name="work-again")
    wait_until(lambda: states(pg) == ["sent"], 30, "the e-mail sent by the next worker")
    assert sink.message_ids() == [f"<{emails(pg)[0][3]}@example.com>"]


class SlowReplySink(smtp_sink.Sink):
    """Accepts each message, answering its end `delay` seconds after it came in; `got_message` is set then."""

    def __init__(self, delay: float):
        super().__init__()
        self.delay = delay
        self.got_message = threading.Event()

    async def handle_DATA(self, server, session, envelope):
        self.got_message.set()
        await asyncio.sleep(self.delay)
        return await super().handle_DATA(server, session, envelope)


def test_sigterm_right_after_a_message_was_sent_records_its_250_as_sent_and_exits_0_within_2_s(
        cli, base_env, pg, moto_endpoint, sqs, queues, processes):
    server = SmtpServer()
    server.sink = SlowReplySink(0.8)
    server.start()
    try:
        sqs.send_batch(queues[0], enrolment_bodies(1))
        work = start_work(processes, cli, mail_env(base_env, pg, moto_endpoint, queues, server.port))
        assert server.sink.got_message.wait(30), work.log()  # the message's end is in; its 250 comes 0.8 s later
        code, seconds = work.signal_and_time(signal.SIGTERM)
        assert (code, seconds < 2) == (0, True), (code, seconds, work.log())
        assert states(pg) == ["sent"] and server.sink.count == 1  # recorded sent: never sent again
    finally:
        server.stop()


def test_two_workers_send_each_email_once(cli, base_env, pg, moto_endpoint, sqs, queues, processes, tmp_path):
    sink = SinkProcess(processes, tmp_path)
    sqs.send_batch(queues[0], enrolment_bodies(60))
    env = mail_env(base_env, pg, moto_endpoint, queues, sink.port)
    for name in ("work-1", "work-2"):
        start_work(processes, cli, env, name=name)
    wait_until(lambda: states(pg) == ["sent"] * 60, 90, "60 e-mails sent")
    ids = sink.message_ids()
    assert len(ids) == len(set(ids)) == 60


def test_a_company_name_carrying_headers_cannot_add_a_recipient_or_a_header(
        cli, base_env, pg, moto_endpoint, sqs, queues, processes, tmp_path):
    sink = SinkProcess(processes, tmp_path)
    injected = enrolment_payload(0, company_name="Evil Ltd\r\nBcc: victim@example.org\r\nX-Injected: yes")
    sqs.send_batch(queues[0], [json.dumps(injected)])
    start_work(processes, cli, mail_env(base_env, pg, moto_endpoint, queues, sink.port))
    wait_until(lambda: len(sink.records()) == 1, 30, "the e-mail sent")
    [record] = sink.records()
    message = parse(record["data"])
    assert record["rcpt_tos"] == [injected["company_email"]]
    assert message["Bcc"] is None and message["X-Injected"] is None
    assert "Bcc: victim@example.org" in parts(message)["text/plain"]


def test_starttls_to_a_server_with_a_self_signed_certificate_the_machine_trusts(
        cli, base_env, pg, moto_endpoint, sqs, queues, processes, tmp_path):
    cert, key = self_signed_certificate(tmp_path)
    sink = SinkProcess(processes, tmp_path, None, "accept", "--tls-cert", str(cert), "--tls-key", str(key),
                       "--user", "mailer", "--password", "not-a-real-password")
    sqs.send_batch(queues[0], enrolment_bodies(1))
    env = mail_env(base_env, pg, moto_endpoint, queues, sink.port, EMAIL_USE_TLS="true", EMAIL_HOST_USER="mailer",
                   EMAIL_HOST_PASSWORD="not-a-real-password", SSL_CERT_FILE=str(cert))
    result = subprocess.run([*cli, "check"], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert f"ok       e-mail: SMTP server 127.0.0.1:{sink.port} answers (STARTTLS, login as mailer)" in result.stdout
    start_work(processes, cli, env)
    wait_until(lambda: states(pg) == ["sent"], 30, "the e-mail sent over TLS")
    assert sink.records()[0]["tls"] is True


def test_without_email_host_work_logs_each_email_and_counts_it_logged(
        cli, base_env, pg, moto_endpoint, sqs, queues, processes):
    sqs.send_batch(queues[0], enrolment_bodies(2))
    env = service_env(base_env, database_url=pg, sqs_endpoint=moto_endpoint, queues=queues)
    work = processes.start([*cli, "work", "--once"], env, "work-once")
    assert work.popen.wait(60) == 0, work.log()
    assert states(pg) == ["logged"] * 2
    log = work.log()
    for n in range(2):
        recipient = enrolment_payload(n)["company_email"]
        assert f"e-mail to {recipient}, subject \"Your company's trade profile\": logged" in log
