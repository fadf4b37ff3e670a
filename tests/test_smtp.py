"""The confirmation e-mail composed and sent over SMTP to a real (aiosmtpd) server.

Its parts and headers, its recipient, TLS, the bounds of a conversation, and what went wrong in plain words.
"""

import contextlib
import smtplib
import socket
import ssl
import threading
import time

import pytest

from directory_api.models import Email
from directory_api.outbox import FAILED, SENT, WAITING
from directory_api.smtp import ConversationTooLong, MailSettings, SmtpTransport, is_permanent, plain_error, reply_of
from directory_api.threads import Background
from tests.factories import CONFIRMATION_URL, mail_settings
from tests.smtp import SmtpServer, parts, self_signed_certificate
from tests.support.outbox_rows import saved, states

# -- composing ------------------------------------------------------------------------------------------------

def test_an_email_is_delivered_with_a_text_and_an_html_part_carrying_the_link(make_sender, smtp):
    saved(company_name="Acme Widgets Ltd", company_email="boss@acme.example.com")
    assert make_sender(smtp.port).run_once()
    [message] = smtp.messages
    assert message["To"] == "boss@acme.example.com"
    assert message["From"] == "Export Directory <noreply@example.com>"
    assert message["Subject"] == "Your company's trade profile"
    assert message["Message-ID"].endswith("@example.com>")
    bodies = parts(message)
    assert set(bodies) == {"text/plain", "text/html"}
    assert "You recently registered a trade profile for your company, Acme Widgets Ltd" in bodies["text/plain"]
    assert CONFIRMATION_URL in bodies["text/plain"]
    assert 'href="https://directory.example.com/confirm/?a=1&amp;b=2"' in bodies["text/html"]
    assert smtp.sink.messages[0]["rcpt_tos"] == ["boss@acme.example.com"]
    assert smtp.sink.messages[0]["mail_from"] == "noreply@example.com"
    assert states() == [SENT]


def test_the_company_name_cannot_add_a_header(make_sender, smtp):
    saved(company_name="Evil Ltd\r\nBcc: victim@example.org\r\nSubject: pwned")
    make_sender(smtp.port).run_once()
    [record] = smtp.sink.messages
    [message] = smtp.messages
    assert record["rcpt_tos"] == [message["To"]]
    assert message["Bcc"] is None and message.get_all("Subject") == ["Your company's trade profile"]
    headers = record["data"].split("\r\n\r\n", 1)[0].split("\n\n", 1)[0]
    assert "victim@example.org" not in headers and "pwned" not in headers
    assert "Bcc: victim@example.org" in parts(message)["text/plain"]


def test_the_html_part_escapes_the_company_name(make_sender, smtp):
    saved(company_name='<script>alert("x")</script> & Sons')
    make_sender(smtp.port).run_once()
    html = parts(smtp.messages[0])["text/html"]
    assert "<script>" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; Sons" in html


def test_a_recipient_that_is_not_a_valid_address_is_failed_and_never_sent(make_sender, smtp):
    saved()
    Email.update(recipient="someone@example.com>\r\nBcc: victim@example.org").execute()
    make_sender(smtp.port).run_once()
    assert smtp.sink.messages == []
    assert states() == [FAILED]
    assert "is not a valid e-mail address" in Email.get().last_error


def test_an_international_domain_is_sent_in_idna(make_sender, smtp):
    saved(company_email="info@bücher.example")
    make_sender(smtp.port).run_once()
    assert smtp.sink.messages[0]["rcpt_tos"] == ["info@xn--bcher-kva.example"]


# -- the transport: TLS, a stop while connecting, a server that dribbles --------------------------------------

def test_starttls_with_a_self_signed_certificate_the_client_trusts(make_sender, tmp_path):
    cert, key = self_signed_certificate(tmp_path)
    server = SmtpServer(tls_cert=str(cert), tls_key=str(key), user="mailer", password="not-a-real-password").start()
    try:
        trusting = ssl.create_default_context(cafile=str(cert))
        sender = make_sender(server.port, tls_context=trusting, environ={
            "EMAIL_USE_TLS": "true", "EMAIL_HOST_USER": "mailer", "EMAIL_HOST_PASSWORD": "not-a-real-password"})
        saved()
        sender.run_once()
        assert states() == [SENT]
        assert server.sink.messages[0]["tls"] is True
    finally:
        server.stop()


def test_a_certificate_the_client_does_not_trust_is_a_temporary_failure(make_sender, tmp_path):
    cert, key = self_signed_certificate(tmp_path)
    server = SmtpServer(tls_cert=str(cert), tls_key=str(key)).start()
    try:
        sender = make_sender(server.port, environ={"EMAIL_USE_TLS": "true"})
        saved()
        with pytest.raises(ssl.SSLCertVerificationError):
            sender.run_once()
        assert states() == [WAITING] and server.sink.messages == []
    finally:
        server.stop()


def test_a_stop_while_connecting_cuts_the_conversation_as_soon_as_it_opens(database_url, smtp):
    transport = SmtpTransport(MailSettings.from_settings(mail_settings(database_url, smtp.port)))
    transport.interrupt()  # nothing to cut yet
    with pytest.raises(ConnectionAbortedError):
        transport.connect()


class DribblingServer:
    """A raw SMTP server that writes one reply a line at a time, `every` seconds apart, for ever.

    `at` is "greeting" (the 220 never ends) or "data" (each command answered
    at once, then the reply to the message never ends).
    """

    def __init__(self, at: str, every: float):
        self.at, self.every = at, every
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.stopped = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                connection, _ = self.listener.accept()
                threading.Thread(target=self._converse, args=(connection,), daemon=True).start()

    def _converse(self, connection: socket.socket) -> None:
        with connection, contextlib.suppress(OSError):
            if self.at == "data":
                self._answer_until_the_message(connection)
            code = b"220" if self.at == "greeting" else b"250"
            while not self.stopped.wait(self.every):
                connection.sendall(code + b"-still working on it\r\n")

    @staticmethod
    def _answer_until_the_message(connection: socket.socket) -> None:
        reader = connection.makefile("rb")
        connection.sendall(b"220 dribbler ready\r\n")
        while line := reader.readline():
            command = line[:4].upper()
            if command == b"EHLO":
                connection.sendall(b"250-dribbler\r\n250 8BITMIME\r\n")
            elif command == b"DATA":
                connection.sendall(b"354 go ahead\r\n")
                while reader.readline() not in (b".\r\n", b""):
                    pass
                return
            else:
                connection.sendall(b"250 OK\r\n")

    def stop(self) -> None:
        self.stopped.set()
        self.listener.close()


@pytest.mark.parametrize("at", ["greeting", "data"])
def test_a_server_that_dribbles_a_reply_line_by_line_holds_the_sender_no_longer_than_the_conversation_limit(
    make_sender, monkeypatch, at
):
    monkeypatch.setattr("directory_api.smtp.CONVERSATION_LIMIT", 1.0)
    # Each line comes sooner than the socket's timeout: only the whole-conversation bound cuts.
    monkeypatch.setattr("directory_api.smtp.SMTP_TIMEOUT", 0.6)
    server = DribblingServer(at, every=0.2)
    try:
        saved()
        sender = make_sender(server.port)
        trying = Background(sender.run_once)
        assert trying.done.wait(5), "the sender is still held by the dribbling server"
        assert isinstance(trying.error, ConversationTooLong)
        email = Email.get()
        assert (email.state, email.last_error) == (WAITING, "timed out: the SMTP conversation took longer than 1 s")
        assert email.due_at < time.time() + 60  # tried again after a backoff, not after the 5-minute lease
    finally:
        server.stop()


# -- what went wrong, in plain words --------------------------------------------------------------------------

def test_reply_of_names_the_code_and_text():
    refused = smtplib.SMTPRecipientsRefused({"a@example.com": (550, b"5.1.1 No such\n user")})
    assert reply_of(refused) == (550, "550 5.1.1 No such user")
    assert is_permanent(refused)
    assert not is_permanent(smtplib.SMTPDataError(451, b"later"))
    assert not is_permanent(smtplib.SMTPAuthenticationError(535, b"bad login"))
    assert reply_of(ConnectionRefusedError(111, "Connection refused"))[0] is None


def test_a_refused_connection_is_recorded_in_plain_words(make_sender):
    saved()
    with pytest.raises(ConnectionRefusedError):
        make_sender(SmtpServer().port).run_once()  # nothing listens there
    assert Email.get().last_error == "the SMTP server refused the connection"


@pytest.mark.parametrize(("error", "words"), [
    (ConnectionRefusedError(111, "Connection refused"), "the SMTP server refused the connection"),
    (ConversationTooLong("cut"), "timed out: the SMTP conversation took longer than 60 s"),
    (TimeoutError("timed out"), "timed out waiting for the SMTP server"),
    (smtplib.SMTPServerDisconnected("Connection unexpectedly closed"), "the SMTP server closed the connection"),
    (socket.gaierror(-2, "Name or service not known"), "the SMTP server's name was not found"),
    (OSError(113, "No route to host"), "the SMTP server could not be reached: No route to host"),
    (smtplib.SMTPDataError(451, b"4.3.0 Try again later"), "451 4.3.0 Try again later"),
])
def test_a_failure_is_recorded_in_plain_words(error, words):
    assert plain_error(error) == words

