"""A Sender made for a test, and a real SMTP server that tells the test where its conversation is (a pytest plugin)."""

import asyncio
import threading

import pytest
import smtp_sink

from tests.smtp import SmtpServer


class ObservedSink(smtp_sink.Sink):
    """The sink, telling the test when a conversation reaches DATA (where "stall" holds it) or RCPT.

    Mode "stall-rcpt" holds the conversation at RCPT, before the message is
    sent; `reply_delay` seconds pass between the message's end and its reply.
    """

    def __init__(self):
        super().__init__()
        self.in_rcpt = threading.Event()
        self.in_data = threading.Event()
        self.reply_delay = 0.0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        self.in_rcpt.set()
        if self.mode == "stall-rcpt":
            await asyncio.sleep(3600)
        return await super().handle_RCPT(server, session, envelope, address, rcpt_options)

    async def handle_DATA(self, server, session, envelope):
        self.in_data.set()  # the whole message, its end included, is in: the client waits for the reply
        await asyncio.sleep(self.reply_delay)
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def smtp():
    """A real SMTP server (tests/smtp.py's) on 127.0.0.1 for the test, its sink an ObservedSink."""
    server = SmtpServer()
    server.sink = ObservedSink()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def make_sender(database, database_url):
    """Make a mail.Sender on the test's database: through the SMTP server on `port`, or without one, logging."""
    from directory_api import mail
    from tests.factories import mail_settings

    def make(port=None, **options):
        environ = options.pop("environ", {})
        return mail.Sender(mail_settings(database_url, port, **environ), rng=lambda: 0.0, **options)

    return make
