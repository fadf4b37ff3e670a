"""The Sender: each e-mail claimed from the outbox, sent to a real (aiosmtpd) server, its outcome recorded.

Retried with backoff, handed back on a stop, kept to its share of a CPU, and run by `work`.
"""

import asyncio
import contextlib
import logging
import socket
import threading
import time

import pytest

from directory_api import mail, outbox
from directory_api.metrics import WorkMetrics
from directory_api.models import Email, Enrolment
from directory_api.outbox import FAILED, LOGGED, SENT, WAITING
from directory_api.queues.database import DatabaseQueue
from directory_api.smtp import STOP_REPLY_WAIT
from directory_api.threads import Shutdown
from directory_api.worker import working
from tests.factories import enrolment_body, mail_settings
from tests.smtp import SmtpServer
from tests.support.databases import pg_rows
from tests.support.outbox_rows import make_due, saved, states
from tests.support.senders import ObservedSink
from tests.support.waits import wait_until

# -- sending and retrying -------------------------------------------------------------------------------------

def test_a_550_marks_the_email_failed_with_the_reply_and_it_is_not_tried_again(make_sender, smtp):
    smtp.sink.mode = "refuse"
    outcomes = []
    sender = make_sender(smtp.port, on_outcome=outcomes.append)
    saved()
    sender.run_once()
    email = Email.get()
    assert (email.state, email.last_error) == (FAILED, "550 5.1.1 No such user here")
    smtp.sink.mode = "accept"
    make_due()
    assert not sender.run_once()
    assert smtp.sink.messages == [] and outcomes == ["failed"]


def test_a_451_is_tried_again_after_a_backoff_with_the_same_message_id(make_sender, smtp):
    smtp.sink.mode = "defer"
    outcomes = []
    sender = make_sender(smtp.port, on_outcome=outcomes.append)
    saved()
    before = time.time()
    sender.run_once()
    email = Email.get()
    assert (email.state, email.last_error, email.attempts) == (WAITING, "451 4.3.0 Try again later", 1)
    assert email.due_at >= before + 0.5  # the first retry waits half to all of a second
    assert not sender.run_once()  # not due yet
    smtp.sink.mode = "accept"
    make_due()
    sender.run_once()
    assert states() == [SENT] and outcomes == ["retried", "sent"]
    assert smtp.messages[0]["Message-ID"] == f"<{email.token}@example.com>"


def test_retries_back_off_to_at_most_sixty_seconds():
    failures = mail.retry_failures(rng=lambda: 1.0)
    assert [failures.delay(n) for n in (1, 2, 3, 6, 7, 20)] == [1, 2, 4, 32, 60, 60]


def test_a_server_down_then_up_gets_every_email_once(make_sender, database):
    server = SmtpServer()
    sender = make_sender(server.port)
    saved(5)
    with pytest.raises(ConnectionRefusedError):
        sender.run_once()
    assert states() == [WAITING] * 5
    # The one tried waits out its backoff; the others of the claim are handed back untried.
    assert [bool(email.last_error) for email in Email.select().order_by(Email.id)] == [True] + [False] * 4
    server.start()
    try:
        make_due()
        while sender.run_once():
            pass
        assert states() == [SENT] * 5
        ids = [message["Message-ID"] for message in server.messages]
        assert len(ids) == len(set(ids)) == 5
    finally:
        server.stop()


def test_the_sender_thread_outlives_a_server_that_is_down(make_sender, database, caplog):
    server = SmtpServer()
    sender = make_sender(server.port)
    saved()
    sender.start()
    try:
        wait_until(lambda: Email.get().last_error, 5, "the first attempt to fail", interval=0.05)
        server.start()
        make_due()
        wait_until(lambda: states() == [SENT], 10, "the e-mail sent", interval=0.05)
        assert any("Connection refused" in record.getMessage() for record in caplog.records)
    finally:
        sender.stop()
        sender.join(2)
        server.stop()


def test_two_senders_send_each_email_once(database, database_url, smtp):
    saved(40)
    senders = [mail.Sender(mail_settings(database_url, smtp.port)) for _ in range(2)]
    for sender in senders:
        sender.start()
    try:
        wait_until(lambda: smtp.sink.count >= 40, 30, "40 e-mails")
        wait_until(lambda: states() == [SENT] * 40, 10, "40 e-mails recorded sent", interval=0.05)
    finally:
        for sender in senders:
            sender.stop()
            sender.join(2)
    ids = [message["Message-ID"] for message in smtp.messages]
    assert len(ids) == len(set(ids)) == 40
    assert states() == [SENT] * 40


# -- a stop ---------------------------------------------------------------------------------------------------

def test_a_stop_during_a_conversation_stalled_before_data_returns_at_once_and_hands_the_email_back(
    make_sender, smtp
):
    smtp.sink.mode = "stall-rcpt"
    sender = make_sender(smtp.port)
    saved()
    sender.start()
    assert smtp.sink.in_rcpt.wait(5)  # before DATA, waiting for the server's answer to RCPT
    started = time.monotonic()
    sender.stop()
    sender.join(2)
    assert sender.done.is_set() and time.monotonic() - started < 1
    email = Email.get()
    assert email.state == WAITING and email.due_at <= time.time()  # due again at once, same token


class SilentServer:
    """A raw TCP server that accepts connections and never says a word: a greeting that does not come."""

    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted = threading.Event()
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                self.connections.append(self.listener.accept()[0])
                self.accepted.set()

    def stop(self) -> None:
        self.listener.close()
        for connection in self.connections:
            connection.close()


def test_a_stop_while_the_greeting_is_slow_returns_at_once_and_hands_the_email_back(make_sender):
    server = SilentServer()
    try:
        sender = make_sender(server.port)
        saved()
        sender.start()
        assert server.accepted.wait(5)  # connected; the 220 does not come
        started = time.monotonic()
        sender.stop()
        sender.join(2)
        assert sender.done.is_set() and time.monotonic() - started < 1
        email = Email.get()
        assert (email.state, email.last_error) == (WAITING, "") and email.due_at <= time.time()
    finally:
        server.stop()


def test_a_stop_right_after_the_message_was_sent_waits_for_the_reply_and_records_it_sent_once(make_sender, smtp):
    smtp.sink.reply_delay = 0.5
    sender = make_sender(smtp.port)
    saved(2)
    sender.start()
    assert smtp.sink.in_data.wait(5)  # the message's end was sent; its 250 comes 0.5 s later
    started = time.monotonic()
    sender.stop()
    sender.join(0.1)  # as the worker's grace would be: the reply awaited extends it
    assert sender.done.is_set() and time.monotonic() - started < STOP_REPLY_WAIT + mail.STOP_RECORD_WAIT
    assert sorted(states()) == [SENT, WAITING]  # the other e-mail of the claim was not started, but handed back
    assert smtp.sink.count == 1
    make_due()  # every lease ends: an e-mail sent but left claimed would go again now
    resumed = make_sender(smtp.port)
    smtp.sink.reply_delay = 0.0
    assert resumed.run_once()
    assert states() == [SENT, SENT]
    ids = [message["Message-ID"] for message in smtp.messages]
    assert len(ids) == len(set(ids)) == 2


def test_a_stop_whose_message_is_never_answered_hands_it_back_after_the_reply_wait_saying_so(make_sender, smtp):
    smtp.sink.mode = "stall"
    sender = make_sender(smtp.port)
    saved()
    sender.start()
    assert smtp.sink.in_data.wait(5)  # the message's end was sent; no reply comes
    started = time.monotonic()
    sender.stop()
    sender.join(0.1)
    waited = time.monotonic() - started
    assert sender.done.is_set() and STOP_REPLY_WAIT - 0.1 < waited < STOP_REPLY_WAIT + mail.STOP_RECORD_WAIT
    email = Email.get()
    assert (email.state, email.last_error) == (WAITING, "the worker stopped during DATA and the SMTP server had "
                                                        "not answered 1 s later: it may have the message")
    assert email.due_at <= time.time()  # due again at once, same token: never recorded sent without a 250


# -- without EMAIL_HOST ---------------------------------------------------------------------------------------

def test_without_email_host_each_email_is_logged_with_its_recipient_and_subject(make_sender, caplog):
    saved(company_email="boss@acme.example.com")
    outcomes = []
    with caplog.at_level(logging.INFO, logger="directory_api.mail"):
        make_sender(on_outcome=outcomes.append).run_once()
    [line] = [r.getMessage() for r in caplog.records if "boss@acme.example.com" in r.getMessage()]
    assert "Your company's trade profile" in line and "EMAIL_HOST is not set" in line
    assert states() == [LOGGED] and outcomes == ["logged"]
    assert outbox.counts()["logged"] == 1


def test_without_email_host_a_whole_claim_is_logged_and_recorded_logged(make_sender, caplog):
    saved(count=3)
    with caplog.at_level(logging.INFO, logger="directory_api.mail"):
        make_sender().run_once()
    assert len([r for r in caplog.records if "EMAIL_HOST is not set" in r.getMessage()]) == 3
    assert states() == [LOGGED] * 3


# -- a busy queue ---------------------------------------------------------------------------------------------

def test_a_busy_queue_keeps_the_sender_to_a_small_share_of_a_cpu(make_sender, monkeypatch):
    sender = make_sender()
    waits = []
    monkeypatch.setattr(sender, "_pause", waits.append)
    sender._keep_to_share(0.002)
    sender.queue_busy()
    sender._keep_to_share(0.002)
    assert waits == [pytest.approx(0.002 * (1 / mail.BUSY_SHARE - 1))]


def test_while_the_queue_is_busy_a_whole_pass_counts_against_the_share(make_sender, monkeypatch):
    saved(count=2)
    sender = make_sender()
    shares = []
    monkeypatch.setattr(sender, "_keep_to_share", lambda cpu_seconds: (shares.append(cpu_seconds), sender.stop()))
    sender.queue_busy()
    sender._run()
    assert len(shares) == 1 and shares[0] > 0 and states() == [LOGGED, LOGGED]


# -- in the worker --------------------------------------------------------------------------------------------

def test_work_once_saves_the_enrolments_and_sends_their_emails(database, database_url, smtp, monkeypatch):
    from directory_api import worker as worker_module

    monkeypatch.setattr(worker_module, "ONCE_WAIT", 0)
    settings = mail_settings(database_url, smtp.port, QUEUE_BACKEND="database", SQS_WAIT_TIME="0")
    queues = [DatabaseQueue(settings, name) for name in ("enrolment", "enrolment-invalid")]
    for _ in range(12):
        queues[0].send(enrolment_body())
    shutdown = Shutdown()
    with working(settings, *queues, shutdown=shutdown, metrics=WorkMetrics(), rng=lambda: 0.0) as (worker, sender):
        worker.run(once=True)
        assert shutdown.wait_for(sender.finish(), 30)
    assert Enrolment.select().count() == 12
    assert smtp.sink.count == 12 and states() == [SENT] * 12


def worker_with_one_enrolment(database_url: str, smtp, shutdown: Shutdown) -> threading.Thread:
    """`work` on the database queue, running on a thread until `shutdown`, with one enrolment to save and mail."""
    settings = mail_settings(database_url, smtp.port, QUEUE_BACKEND="database", SQS_WAIT_TIME="20")
    queues = [DatabaseQueue(settings, name) for name in ("enrolment", "enrolment-invalid")]
    queues[0].send(enrolment_body())

    def work():
        with working(settings, *queues, shutdown=shutdown, metrics=WorkMetrics(), rng=lambda: 0.0) as (worker, _):
            worker.run()

    running = threading.Thread(target=work)
    running.start()
    return running


def test_a_worker_stops_within_two_seconds_while_its_sender_is_stalled(database, database_url, smtp):
    smtp.sink.mode = "stall"
    shutdown = Shutdown()
    running = worker_with_one_enrolment(database_url, smtp, shutdown)
    wait_until(lambda: Email.select().where(Email.attempts == 1).exists(), 10, "the first attempt", interval=0.05)
    assert smtp.sink.in_data.wait(5)  # in DATA, waiting for the server's answer
    started = time.monotonic()
    shutdown.request()
    running.join(5)
    assert not running.is_alive() and time.monotonic() - started < 2
    assert Email.get().state == WAITING


def test_a_worker_stopped_while_the_server_answers_the_message_slowly_records_it_sent_within_two_seconds(
    database, database_url, smtp
):
    smtp.sink.reply_delay = 0.8  # longer than the worker's grace for its sender (worker.SENDER_GRACE)
    shutdown = Shutdown()
    running = worker_with_one_enrolment(database_url, smtp, shutdown)
    assert smtp.sink.in_data.wait(10)  # the message's end was sent; its 250 comes 0.8 s later
    started = time.monotonic()
    shutdown.request()
    running.join(5)
    assert not running.is_alive() and time.monotonic() - started < 2
    assert states() == [SENT] and smtp.sink.count == 1


def test_work_once_does_not_wait_out_a_long_backoff_when_the_server_is_down(make_sender, database):
    sender = make_sender(SmtpServer().port)  # nothing listens there
    saved(2)
    sender.failures.count = 6  # the next pause would be 32-64 s
    sender.start()
    try:
        wait_until(lambda: Email.select().where(Email.last_error != "").exists(), 5, "a failed attempt", interval=0.05)
        started = time.monotonic()
        assert sender.finish().wait(5) and time.monotonic() - started < 5
    finally:
        sender.stop()
        sender.join(2)
    assert states() == [WAITING, WAITING]


def test_work_counts_each_email_outcome_in_its_metrics(database, database_url, smtp, monkeypatch):
    from directory_api import worker as worker_module
    from directory_api.metrics import WorkMetrics

    made = []
    monkeypatch.setattr(worker_module, "WorkMetrics", lambda: made.append(WorkMetrics()) or made[-1])
    monkeypatch.setattr(worker_module, "ONCE_WAIT", 0)
    monkeypatch.setattr(worker_module.Shutdown, "install", lambda self: None)
    settings = mail_settings(database_url, smtp.port, QUEUE_BACKEND="database", SQS_WAIT_TIME="0")
    DatabaseQueue(settings, "enrolment").send(enrolment_body())
    worker_module.work(settings, once=True)
    exposed = made[0].registry.collectors
    assert exposed.get_sample_value("directory_api_emails_total", {"outcome": "sent"}) == 1


# -- faults: a database blip after the server's 250, a claim's lease running short ----------------------------

class SlowSink(ObservedSink):
    """Takes `delay` seconds over each message, then accepts it, noting when (time.monotonic())."""

    def __init__(self, delay: float):
        super().__init__()
        self.delay = delay
        self.accepted_at: list[float] = []

    async def handle_DATA(self, server, session, envelope):
        await asyncio.sleep(self.delay)
        self.accepted_at.append(time.monotonic())
        return await super().handle_DATA(server, session, envelope)


class BlipSink(ObservedSink):
    """Runs `blip` once, as it takes the first message and before its 250: the moment a crash may send twice."""

    def __init__(self, blip):
        super().__init__()
        self.blip = blip

    async def handle_DATA(self, server, session, envelope):
        blip, self.blip = self.blip, None
        if blip is not None:
            blip()
        return await super().handle_DATA(server, session, envelope)


@pytest.mark.parametrize("database_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
def test_a_database_blip_between_the_servers_250_and_the_sent_record_does_not_send_the_email_twice(
    make_sender, database, database_url
):
    saved(3)
    server = SmtpServer()
    sender = make_sender(server.port)
    backend = database.connection().get_backend_pid()  # the connection run_once uses: this thread's
    server.sink = BlipSink(lambda: pg_rows(database_url, f"SELECT pg_terminate_backend({backend})"))
    server.start()
    try:
        assert sender.run_once()
        # Every lease ends: an e-mail still claimed, unrecorded, would be sent again now.
        make_due()
        assert not sender.run_once()
        ids = [message["Message-ID"] for message in server.messages]
        assert len(ids) == len(set(ids)) == 3
        assert states() == [SENT] * 3  # the others of the claim were sent too, not left claimed
    finally:
        server.stop()


def test_an_email_is_started_only_when_its_conversation_fits_in_what_is_left_of_the_claims_lease(
    make_sender, monkeypatch
):
    monkeypatch.setattr(outbox, "LEASE", 2.5)
    monkeypatch.setattr("directory_api.smtp.CONVERSATION_LIMIT", 1.0)
    monkeypatch.setattr(mail, "RECORD_MARGIN", 0.25)
    server = SmtpServer()
    server.sink = SlowSink(delay=0.5)
    server.start()
    try:
        saved(5)
        sender = make_sender(server.port)
        claimed_at = time.monotonic()
        assert sender.run_once()
        returned_at = time.monotonic()
        accepted = server.sink.accepted_at
        assert 1 <= len(accepted) < 5 and returned_at - claimed_at < outbox.LEASE
        assert all(at - claimed_at < outbox.LEASE for at in accepted)
        # The rest were handed back: due now, for this sender or another, not when the lease ends.
        waiting = list(Email.select().where(Email.state == WAITING))
        assert len(waiting) == 5 - len(accepted) and all(email.due_at <= time.time() for email in waiting)
    finally:
        server.stop()


# -- the log --------------------------------------------------------------------------------------------------

def test_an_email_sent_after_a_failed_try_is_logged_once_at_info_with_its_try(make_sender, smtp, caplog):
    smtp.sink.mode = "defer"
    sender = make_sender(smtp.port)
    [enrolment_id] = saved(company_email="boss@acme.example.com")
    sender.run_once()
    smtp.sink.mode = "accept"
    make_due()
    with caplog.at_level(logging.INFO, logger="directory_api.mail"):
        sender.run_once()
    [line] = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO and "sent on try" in r.getMessage()]
    assert "to boss@acme.example.com sent on try 2" in line and "451 4.3.0 Try again later" in line
    with caplog.at_level(logging.INFO, logger="directory_api.mail"):
        saved()
        sender.run_once()  # sent at the first try: no INFO line of its own
    assert len([r for r in caplog.records if "sent on try" in r.getMessage()]) == 1

