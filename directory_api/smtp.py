"""Composing the confirmation e-mail and sending it over SMTP, one bounded conversation at a time.

Every header comes from the settings or from validated fields: the To address
is the validated company_email (checked again here), the company name goes
in the body only, escaped in the HTML. Each conversation is bounded
(CONVERSATION_LIMIT) however steadily the server writes. A stop cuts it at
once, except from DATA on: the server may have the message then, so its
reply is waited for (STOP_REPLY_WAIT) first. What went wrong is told in
plain words (plain_error), and a refusal for good (is_permanent) from one
worth trying again.
"""

import contextlib
import dataclasses
import functools
import html
import re
import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from email.headerregistry import Address, HeaderRegistry
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import formatdate, parseaddr

from directory_api import enrolment
from directory_api.errors import SettingsError, first_line
from directory_api.models import Email
from directory_api.settings import Settings
from directory_api.vendored_internals import name_smtp_server

SMTP_TIMEOUT = 10.0  # seconds any one socket operation of the SMTP conversation may take
# Seconds one e-mail's whole conversation (connect, EHLO, STARTTLS, login, MAIL, RCPT, DATA) may take, however
# steadily the server writes: a relay answers in well under a second; this is well inside the lease.
CONVERSATION_LIMIT = 60.0
# Seconds a stop waits for the reply to a message whose end may have been sent (the server may hold it by then):
# with the record of the outcome after it (mail.STOP_RECORD_WAIT), within `work`'s 2-second stop.
STOP_REPLY_WAIT = 1.0
TOKEN = re.compile(r"[0-9a-f]{1,32}")

TEXT_BODY = """\
Hello,

You recently registered a trade profile for your company, {company_name}, on the Export Directory.

To confirm your company e-mail address and publish your profile, open this link:

{url}

If you did not register, you can ignore this e-mail.
"""

HTML_BODY = """\
<!DOCTYPE html>
<html lang="en">
<body style="font-family: Arial, sans-serif; font-size: 16px; color: #0b0c0c;">
<p>Hello,</p>
<p>You recently registered a trade profile for your company, <strong>{company_name}</strong>, \
on the Export Directory.</p>
<p>To confirm your company e-mail address and publish your profile:</p>
<p><a href="{url}" style="display: inline-block; padding: 10px 16px; background-color: #00703c; \
color: #ffffff; font-weight: bold; text-decoration: none;">Confirm your company e-mail</a></p>
<p>Or copy this link into your browser: {url}</p>
<p>If you did not register, you can ignore this e-mail.</p>
</body>
</html>
"""


# -- composing ------------------------------------------------------------------------------------------------

class _CachedHeaderRegistry(HeaderRegistry):
    # The stock registry builds a new header class on every lookup: a third of the time
    # composing an e-mail took (cProfile). The classes depend on the name only.
    def __init__(self) -> None:
        super().__init__()
        self._classes: dict[str, type] = {}

    def __getitem__(self, name):
        key = name.lower()
        if key not in self._classes:
            self._classes[key] = super().__getitem__(name)
        return self._classes[key]


POLICY = SMTP_POLICY.clone(header_factory=_CachedHeaderRegistry())


@dataclasses.dataclass(frozen=True)
class MailSettings:
    """What composing and sending need, taken once from the Settings."""

    host: str | None
    port: int
    user: str | None
    password: str | None
    use_tls: bool
    sender_name: str
    sender_address: str
    subject: str
    url: str

    @classmethod
    def from_settings(cls, settings: Settings) -> "MailSettings":
        name, address = parseaddr(settings.confirmation_sender or "noreply@localhost")
        return cls(
            host=settings.email_host, port=settings.email_port, user=settings.email_host_user,
            password=settings.email_host_password, use_tls=settings.email_use_tls, sender_name=name,
            sender_address=address, subject=settings.confirmation_subject,
            url=settings.confirmation_url or "http://127.0.0.1:8000/",
        )

    @property
    def sender_domain(self) -> str:
        return self.sender_address.rpartition("@")[2]


class Unsendable(Exception):
    """A recorded e-mail that can never be sent as it is (an address or token older code let through)."""


def ascii_recipient(address: str) -> str:
    """The validated company_email with its domain in IDNA, as SMTP and the To header carry it."""
    if not enrolment.is_email_address(address):
        raise Unsendable(f"recipient {address!r} is not a valid e-mail address")
    local, _, domain = address.rpartition("@")
    return f"{local}@{domain.encode('idna').decode('ascii')}"


def message_id(email: Email, config: MailSettings) -> str:
    if not TOKEN.fullmatch(email.token):
        raise Unsendable(f"token {email.token!r} is not hexadecimal")
    return f"<{email.token}@{config.sender_domain}>"


def compose(email: Email, config: MailSettings) -> EmailMessage:
    """The confirmation e-mail: text with an HTML alternative; headers from the settings and validated fields only."""
    message = EmailMessage(policy=POLICY)
    message["Subject"] = config.subject
    message["From"] = Address(display_name=config.sender_name, addr_spec=config.sender_address)
    message["To"] = Address(addr_spec=ascii_recipient(email.recipient))
    message["Date"] = email_date()
    message["Message-ID"] = message_id(email, config)
    message.set_content(TEXT_BODY.format(company_name=email.company_name, url=config.url))
    message.add_alternative(
        HTML_BODY.format(company_name=html.escape(email.company_name), url=html.escape(config.url)), subtype="html"
    )
    return message


def email_date() -> str:
    return formatdate(usegmt=True)


# -- sending --------------------------------------------------------------------------------------------------

# Refusals of one message; the connection goes on. Anything else ends the connection.
MESSAGE_REFUSALS = (smtplib.SMTPRecipientsRefused, smtplib.SMTPSenderRefused, smtplib.SMTPDataError)


class ConversationTooLong(TimeoutError):
    """The SMTP conversation of one e-mail passed CONVERSATION_LIMIT: it was cut, however steadily the server wrote."""


CUT_BY_A_STOP = "the SMTP conversation was cut short by a stop"


class Unanswered(ConnectionAbortedError):
    """A stop cut the conversation after DATA began and before the reply came: the server may have the message."""


def reply_of(error: BaseException) -> tuple[int | None, str]:
    """The SMTP reply code and text behind an error, or (None, what happened) when the server did not answer."""
    reply: bytes | str
    if isinstance(error, smtplib.SMTPRecipientsRefused) and error.recipients:
        code, reply = next(iter(error.recipients.values()))
    elif isinstance(error, smtplib.SMTPResponseException):
        code, reply = error.smtp_code, error.smtp_error
    else:
        return None, f"{type(error).__name__}: {first_line(error)}"
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    return code, f"{code} {' '.join(text.split())}"


# What went wrong, in words an operator reads on the console, for errors where the server gave no reply.
PLAIN_WORDS: tuple[tuple[type[BaseException], str], ...] = (
    (ConversationTooLong, "timed out: the SMTP conversation took longer than {limit:g} s"),
    (ConnectionRefusedError, "the SMTP server refused the connection"),
    (ConnectionResetError, "the SMTP server reset the connection"),
    (smtplib.SMTPServerDisconnected, "the SMTP server closed the connection"),
    (ssl.SSLCertVerificationError, "the SMTP server's TLS certificate is not trusted"),
    (ssl.SSLError, "the TLS handshake with the SMTP server failed"),
    (socket.gaierror, "the SMTP server's name was not found"),
    (TimeoutError, "timed out waiting for the SMTP server"),
)


def plain_error(error: BaseException) -> str:
    """What went wrong, in plain words: "the SMTP server refused the connection", or the server's own reply."""
    code, reply = reply_of(error)
    if code is not None:
        return reply  # "451 4.3.0 Try again later": the server's words, which name the problem best
    for kind, words in PLAIN_WORDS:
        if isinstance(error, kind):
            return words.format(limit=CONVERSATION_LIMIT)
    reason = getattr(error, "strerror", None) or first_line(error) or type(error).__name__
    return f"the SMTP server could not be reached: {reason}"


def is_permanent(error: BaseException) -> bool:
    """A 5xx refusal of the message itself: it will never be accepted, so it is not tried again."""
    code, _ = reply_of(error)
    return isinstance(error, MESSAGE_REFUSALS) and code is not None and 500 <= code < 600


@functools.cache
def local_hostname() -> str:
    # smtplib looks it up (DNS) on every connection otherwise.
    return socket.getfqdn()


class Conversation(smtplib.SMTP):
    """smtplib's SMTP connection, telling its SmtpTransport before each reply is read and while DATA runs."""

    def __init__(self, transport: "SmtpTransport", **options):
        super().__init__(**options)
        self.transport = transport

    # smtplib reads every reply, the greeting included, with getreply(), and sends every message with data():
    # the stop tests prove it still does.
    def getreply(self):
        self.transport.reading_reply()
        return super().getreply()

    def data(self, msg):
        with self.transport.sending_data():
            return super().data(msg)


class SmtpTransport:
    """One SMTP connection at a time, opened when there is something to send.

    Each e-mail's conversation (connecting included) is cut at
    CONVERSATION_LIMIT however steadily the server writes: the socket timeout
    bounds each read only, and a server that dribbles a line every few
    seconds would hold the sender, and outlive the claim's lease. interrupt()
    (a stop, from another thread) cuts it at once before DATA; from DATA on,
    the server may have the message, so a stop waits STOP_REPLY_WAIT for its
    reply before it cuts.
    """

    def __init__(self, config: MailSettings, tls_context: ssl.SSLContext | None = None):
        if config.host is None:
            raise SettingsError("EMAIL_HOST is not set: there is no SMTP server to send through")
        self.host = config.host
        self.config = config
        self.tls_context = tls_context
        self._smtp: smtplib.SMTP | None = None
        self._lock = threading.Lock()
        self._interrupted = False
        self._in_data = False
        self._reply_timer: threading.Timer | None = None
        self._unanswered = False
        self.stop_deadline: float | None = None  # (monotonic) when a stop that came during DATA cuts it

    def send(self, message: EmailMessage, recipient: str) -> None:
        """Send one message; Unanswered when a stop cut it after DATA began, before the reply came."""
        with self._bounded(CONVERSATION_LIMIT):
            smtp = self._smtp or self.connect()
            try:
                smtp.send_message(message, from_addr=self.config.sender_address, to_addrs=[recipient])
            except OSError as error:
                if self._unanswered:
                    raise Unanswered(f"the worker stopped during DATA and the SMTP server had not answered "
                                     f"{STOP_REPLY_WAIT:g} s later: it may have the message") from error
                raise

    def connect(self) -> smtplib.SMTP:
        """Open the connection: EHLO, STARTTLS when EMAIL_USE_TLS, the login when EMAIL_HOST_USER is set."""
        smtp = Conversation(self, timeout=SMTP_TIMEOUT, local_hostname=local_hostname())
        # Made unconnected, so that a cut reaches the greeting too; STARTTLS must still name the server.
        name_smtp_server(smtp, self.host)
        with self._lock:
            self._smtp = smtp  # before connecting, so that a cut reaches the greeting too
            interrupted = self._interrupted
        try:
            if interrupted:  # interrupt() came before there was anything to cut
                raise ConnectionAbortedError(CUT_BY_A_STOP)
            smtp.connect(self.host, self.config.port)
            smtp.ehlo()
            if self.config.use_tls:
                smtp.starttls(context=self.tls_context or ssl.create_default_context())
                smtp.ehlo()
            if self.config.user:
                smtp.login(self.config.user, self.config.password or "")
        except BaseException:
            self.close()
            raise
        return smtp

    def close(self) -> None:
        with self._lock:
            smtp, self._smtp = self._smtp, None
        if smtp is None:
            return
        try:
            with self._bounded(SMTP_TIMEOUT):  # a QUIT answered a line at a time must not hold the sender either
                smtp.quit()
        except (smtplib.SMTPException, OSError):
            smtp.close()

    def interrupt(self) -> None:
        """A stop: no conversation starts; the one in progress is cut at once, or STOP_REPLY_WAIT after, in DATA."""
        with self._lock:
            first, self._interrupted = not self._interrupted, True
            if self._in_data:
                if first:
                    self.stop_deadline = time.monotonic() + STOP_REPLY_WAIT
                    self._reply_timer = threading.Timer(STOP_REPLY_WAIT, self._cut_unanswered)
                    self._reply_timer.daemon = True
                    self._reply_timer.start()
                return
        self._cut()

    def reading_reply(self) -> None:
        """Before each reply: a stop that came while connecting, when there was no socket to cut yet, ends it here."""
        with self._lock:
            if self._interrupted and not self._in_data:
                raise ConnectionAbortedError(CUT_BY_A_STOP)

    @contextlib.contextmanager
    def sending_data(self) -> Iterator[None]:
        """DATA, the message, its end and the reply: a stop that comes meanwhile waits for the reply (interrupt)."""
        with self._lock:
            if self._interrupted:  # the stop came first: the message is not started
                raise ConnectionAbortedError(CUT_BY_A_STOP)
            self._in_data = True
        try:
            yield
        finally:
            with self._lock:
                self._in_data = False
                timer, self._reply_timer = self._reply_timer, None
                interrupted = self._interrupted
            if timer is not None:
                timer.cancel()
            if interrupted:
                self._cut()  # answered: nothing more is said (not even a RSET after a refusal) once stopped

    def _cut_unanswered(self) -> None:
        with self._lock:
            if not self._in_data:
                return  # answered in time
            self._unanswered = True
        self._cut()

    @contextlib.contextmanager
    def _bounded(self, seconds: float) -> Iterator[None]:
        """Cut the conversation if the block runs past `seconds`; it then raises ConversationTooLong."""
        overran = threading.Event()

        def overrun() -> None:
            overran.set()
            self._cut()

        timer = threading.Timer(seconds, overrun)
        timer.daemon = True
        timer.start()
        try:
            yield
        except OSError as error:  # smtplib's errors are OSErrors too
            if overran.is_set():
                raise ConversationTooLong(f"the SMTP conversation took longer than {seconds:g} s") from error
            raise
        finally:
            timer.cancel()

    def _cut(self) -> None:
        with self._lock:
            smtp = self._smtp
        sock = getattr(smtp, "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def check_login(settings: Settings, tls_context: ssl.SSLContext | None = None) -> str:
    """Connect, STARTTLS and log in as `work` would, then quit; what was checked. Raises what went wrong."""
    config = MailSettings.from_settings(settings)
    transport = SmtpTransport(config, tls_context)
    try:
        with transport._bounded(CONVERSATION_LIMIT):  # as `work` would: a dribbling server must not hold `check`
            transport.connect()
    finally:
        transport.close()
    steps = ["STARTTLS" if config.use_tls else "no TLS", f"login as {config.user}" if config.user else "no login"]
    return f"{config.host}:{config.port} answers ({', '.join(steps)})"
