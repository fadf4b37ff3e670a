"""The confirmation e-mail: a transactional outbox that `work` sends over SMTP on a thread of its own.

Its rows (outbox.py) are recorded in the transaction that saves their
enrolment, so an e-mail exists exactly when its enrolment does. The Sender
claims waiting rows for a lease (outbox.LEASE), sends each with smtplib and
records the outcome at once: sent; a temporary
failure (connection refused, timeout, 4xx) due again after a jittered backoff
of at most 60 s, its reason in plain words; a permanent refusal (5xx) failed,
with the server's reply. Each conversation is bounded (CONVERSATION_LIMIT)
and started only when it fits in what is left of its lease, so a lease never
ends while its e-mail is being sent. The record of an e-mail the server
accepted is retried on a fresh connection until the database takes it: only
a crash between the two may send it again, with the same Message-ID, when
its lease ends. A stop starts no new conversation and cuts the one in hand,
except from DATA on: the server may have the message then, so its reply is
waited for (STOP_REPLY_WAIT, inside `work`'s 2-second stop) and recorded.
Without EMAIL_HOST the Sender logs each e-mail instead and
records it as logged.

Every header comes from the settings or from validated fields: the To address
is the validated company_email (checked again here), the company name goes
in the body only, escaped in the HTML.
"""

import contextlib
import dataclasses
import functools
import html
import itertools
import logging
import re
import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from email.headerregistry import Address, HeaderRegistry
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import formatdate, parseaddr

from directory_api import enrolment, outbox
from directory_api.db import DATABASE_ERRORS, drop_connection
from directory_api.errors import SettingsError, first_line
from directory_api.models import Email
from directory_api.settings import Settings
from directory_api.threads import Failures, Stop
from directory_api.vendored_internals import name_smtp_server

log = logging.getLogger(__name__)

RETRIED = "retried"  # an outcome (for on_outcome), not a state: the e-mail is waiting again

SMTP_TIMEOUT = 10.0  # seconds any one socket operation of the SMTP conversation may take
# Seconds one e-mail's whole conversation (connect, EHLO, STARTTLS, login, MAIL, RCPT, DATA) may take, however
# steadily the server writes: a relay answers in well under a second; this is well inside the lease.
CONVERSATION_LIMIT = 60.0
CLAIM_SIZE = 10
RECORD_MARGIN = 30.0  # seconds kept after a conversation for the record of its outcome
# Seconds a stop waits for the reply to a message whose end may have been sent (the server may hold it by then),
# and then for the record of the outcome: within `work`'s 2-second stop, with the tick that sees the signal
# (0.1 s) and the process's own exit to spare on a loaded machine.
STOP_REPLY_WAIT = 1.0
STOP_RECORD_WAIT = 0.3
FIRST_RETRY = 1.0
LONGEST_RETRY = 60.0
# While the worker drains a backlog the sender takes at most this share of a CPU
# (it shares the GIL with the worker), then catches up once the backlog is gone.
BUSY_SHARE = 0.05
BUSY_HOLD = 1.0  # seconds a full batch counts as "busy"
IDLE_POLLS = (0.2, 0.4, 0.8, 1.0)  # an empty outbox is looked at less and less often, then every second
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


def retry_failures(rng: Callable[[], float] | None = None) -> Failures:
    """The e-mail sender's failure count and backoff: from FIRST_RETRY, doubling to LONGEST_RETRY."""
    return Failures(first=FIRST_RETRY, longest=LONGEST_RETRY, rng=rng)


class Sender:
    """Sends the outbox on a daemon thread of its own until stop(); without EMAIL_HOST it logs the e-mails instead.

    `on_outcome` is called with "sent", "failed", "retried" or "logged" for each
    e-mail (for metrics); the worker calls queue_busy() when it receives a full
    batch, and the sender then keeps to BUSY_SHARE of a CPU for a while. Its
    pauses are on a threads.Stop, its backoff a threads.Failures; the worker's
    `working` starts and stops it (threads.beside).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        transport: SmtpTransport | None = None,
        tls_context: ssl.SSLContext | None = None,
        on_outcome: Callable[[str], None] = lambda outcome: None,
        rng: Callable[[], float] | None = None,
    ):
        self.config = MailSettings.from_settings(settings)
        self.database = Email._meta.database
        self.transport = transport or (SmtpTransport(self.config, tls_context) if self.config.host else None)
        self.on_outcome = on_outcome
        # Consecutive connection or database failures; they set the pause before the next pass.
        self.failures = retry_failures(rng)
        self.stopping = Stop()  # finish() wakes it too: a pause after a failure ends then
        self._until_idle = False
        self._busy_until = 0.0
        self.done = threading.Event()
        self._thread: threading.Thread | None = None

    # -- its life: started, told the queue is busy, finished (--once) or stopped ------------------------------

    def start(self) -> None:
        if self.transport is None:
            log.info("EMAIL_HOST is not set: confirmation e-mails are recorded and logged, not sent")
        self._thread = threading.Thread(target=self._run, name="mail", daemon=True)
        self._thread.start()

    def queue_busy(self) -> None:
        self._busy_until = time.monotonic() + BUSY_HOLD

    def finish(self) -> threading.Event:
        """Send what is due now, then stop (work --once); the event is set when done (at once, if never started)."""
        if self._thread is None:
            self.done.set()
        self._until_idle = True
        self.stopping.wake()  # a pause after a failure ends now: one more try, then it stops
        return self.done

    def stop(self) -> None:
        """Stop soon: no e-mail is started; the one in hand is cut and handed back, unless its DATA has begun:
        then its reply is waited for (STOP_REPLY_WAIT) and recorded."""
        self.stopping.request()
        if self.transport is not None:
            self.transport.interrupt()

    def join(self, timeout: float) -> None:
        """Wait `timeout` for the thread to end, or longer when a stop waits for the reply to a message (stop)."""
        if self._thread is None:
            return
        deadline = self.transport.stop_deadline if self.transport is not None else None
        if deadline is not None:
            timeout = max(timeout, deadline + STOP_RECORD_WAIT - time.monotonic())
        self._thread.join(timeout)

    # -- the thread ---------------------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            polls = iter(IDLE_POLLS)
            while not self.stopping.requested:
                started = time.thread_time()
                worked = self._pass()
                if worked:
                    polls = iter(IDLE_POLLS)
                    self._keep_to_share(time.thread_time() - started)
                elif worked is None:
                    continue  # failed, and paused since
                elif self._until_idle:
                    break
                else:
                    self._close_idle()
                    self._pause(next(polls, IDLE_POLLS[-1]))
        finally:
            self._close_idle()
            drop_connection(self.database)
            self.done.set()

    def _pass(self) -> bool | None:
        """run_once; None when it failed (the pause after the failure is over then)."""
        try:
            return self.run_once()
        except Exception as error:  # the sender must outlive any failure
            if not self.stopping.requested:
                self._pause_after(error)
            return None

    def _close_idle(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _pause_after(self, error: BaseException) -> None:
        what = self._failure_of(error)
        if self._until_idle and not isinstance(error, DATABASE_ERRORS):
            log.warning("e-mails: %s; those waiting are sent by the next `work`", what)
            self.stopping.request()  # --once
            return
        delay = self.failures.failed()
        log.warning("e-mails: %s; trying again in %.1f s", what, delay)
        self._pause(delay)

    def _failure_of(self, error: BaseException) -> str:
        """A failure of a whole pass, for its log line."""
        if isinstance(error, DATABASE_ERRORS):
            drop_connection(self.database)
            return f"database unreachable ({first_line(error)})"
        if isinstance(error, (smtplib.SMTPException, OSError)):
            return f"SMTP server {self.config.host}:{self.config.port}: {plain_error(error)} ({reply_of(error)[1]})"
        log.error("e-mail sender: unexpected error", exc_info=error)
        return "unexpected error"

    # -- one pass: claim, deliver, record -------------------------------------------------------------------------

    def run_once(self) -> bool:
        """Claim a batch and deliver it; False when nothing was due. A connection failure is raised after the
        claimed e-mails are rescheduled."""
        lease_ends = time.monotonic() + outbox.LEASE  # taken before the claim: the lease may only end later than this
        emails = outbox.claim(CLAIM_SIZE)
        if not emails:
            return False
        if self.transport is None:
            self.log_all(emails)
            return True
        self.deliver_claim(emails, self.transport, lease_ends)
        self.failures.reset()
        return True

    def deliver_claim(self, emails: Sequence[Email], transport: SmtpTransport, lease_ends: float) -> None:
        """Deliver claimed e-mails one by one; those that cannot be, in time or after a failure, are handed back.

        An e-mail is started only when its whole conversation (CONVERSATION_LIMIT)
        and its record fit in what is left of the lease: a lease never ends while
        its e-mail is being sent, so another sender never sends it too.
        """
        for index, email in enumerate(emails):
            if self.stopping.requested or time.monotonic() + CONVERSATION_LIMIT + RECORD_MARGIN > lease_ends:
                self._hand_back(emails[index:])
                return
            try:
                self.deliver(email, transport)
            except BaseException:
                self._hand_back(emails[index + 1:])
                raise

    def log_all(self, emails: Sequence[Email]) -> None:
        """Without EMAIL_HOST: one INFO line an e-mail, then all recorded as logged at once."""
        for email in emails:
            log.info("e-mail to %s, subject %r: logged, not sent (EMAIL_HOST is not set)", email.recipient,
                     self.config.subject)
        outbox.mark_logged(emails)
        for _ in emails:
            self.on_outcome(outbox.LOGGED)
        self.failures.reset()

    def deliver(self, email: Email, transport: SmtpTransport) -> None:
        """Send one claimed e-mail and record the outcome; connection failures are raised."""
        try:
            message = compose(email, self.config)
            transport.send(message, ascii_recipient(email.recipient))
        except Unsendable as error:
            self._failed(email, str(error))
        except MESSAGE_REFUSALS as error:
            if is_permanent(error):
                self._failed(email, reply_of(error)[1])
            else:
                self._retry(email, reply_of(error)[1])
        except Unanswered as error:
            transport.close()
            self._unanswered(email, message["Message-ID"], str(error))
            raise
        except (smtplib.SMTPException, OSError) as error:
            transport.close()
            if self.stopping.requested:
                outbox.release([email])  # cut by stop() before DATA: the server never had it
            else:
                self._retry(email, plain_error(error))
            raise
        else:
            self._sent(email, message["Message-ID"])

    def _sent(self, email: Email, message_id: str) -> None:
        """Record an e-mail the server accepted; a database that fails then is reconnected to until it answers.

        Left unrecorded, the e-mail would be sent again when its lease ends:
        only a crash (or a stop) before the record may do that.
        """
        if not self._until_recorded(lambda: outbox.mark_sent(email)):
            log.error("e-mail %d to %s was sent as %s but the stop came before it could be recorded; it may be "
                      "sent again, with the same Message-ID", email.id, email.recipient, message_id)
            return
        if email.last_error:
            log.info("e-mail %d to %s sent on try %d (the last try had failed: %s)", email.id, email.recipient,
                     email.attempts, email.last_error)
        else:
            log.debug("e-mail %d to %s sent as %s", email.id, email.recipient, message_id)
        self.on_outcome(outbox.SENT)

    def _unanswered(self, email: Email, message_id: str, reason: str) -> None:
        """Hand back an e-mail whose message a stop cut before its reply came: the server may have it, or not."""
        # What the server did is unknown, as after a crash between its acceptance and the record: the one case
        # where the contract lets an e-mail go twice (same Message-ID), and `work` must still exit within 2 s. Recorded
        # sent without a 250, it would be lost whenever the server had not taken it, and the contract promises it goes;
        # so it is due again at once, and goes twice only if the server had taken it. Holding the claim until
        # its lease ends would not make that less likely (a server that took the message keeps it), only delay
        # an e-mail it had not; our side of that conversation is closed, so no sender sends it alongside it.
        log.warning("e-mail %d to %s (%s): %s; it is sent again, and may arrive twice", email.id, email.recipient,
                    message_id, reason)
        try:
            outbox.retry_later(email, reason, 0.0)
        except DATABASE_ERRORS as error:
            drop_connection(self.database)
            log.warning("e-mail %d: not handed back (%s); it is sent again once its lease ends", email.id,
                        first_line(error))

    def _until_recorded(self, write: Callable[[], object]) -> bool:
        """Run `write` until the database takes it, reconnecting each time; False when stopped first."""
        for attempt in itertools.count():
            try:
                write()
                return True
            except DATABASE_ERRORS as error:
                drop_connection(self.database)  # the next try opens a fresh connection
                delay = self.failures.delay(attempt) if attempt else 0.0  # at once first: a blip is over already
                log.warning("e-mails: the database did not take the record of a sent e-mail (%s); trying again "
                            "in %.1f s", first_line(error), delay)
                if not self.stopping.sleep(delay) and attempt:
                    return False
        raise AssertionError("unreachable")

    def _hand_back(self, emails: Sequence[Email]) -> None:
        """Release unsent claimed e-mails, on a fresh connection if need be (else they return when the lease ends)."""
        if not emails:
            return
        try:
            outbox.release(emails)
        except DATABASE_ERRORS:
            drop_connection(self.database)
            try:
                outbox.release(emails)
            except DATABASE_ERRORS as error:
                drop_connection(self.database)
                log.warning("e-mails %s: not handed back (%s); they are sent once their lease ends",
                            ", ".join(str(email.id) for email in emails), first_line(error))

    def _failed(self, email: Email, reason: str) -> None:
        outbox.mark(email, outbox.FAILED, reason)
        log.warning("e-mail %d to %s failed, not tried again: %s", email.id, email.recipient, reason)
        self.on_outcome(outbox.FAILED)

    def _retry(self, email: Email, reason: str) -> None:
        delay = self.failures.delay(email.attempts)
        outbox.retry_later(email, reason, delay)
        log.info("e-mail %d to %s not sent (%s); trying again in %.1f s", email.id, email.recipient, reason, delay)
        self.on_outcome(RETRIED)

    def _keep_to_share(self, cpu_seconds: float) -> None:
        # While the worker drains a backlog, wait long enough after a pass (claim, sends, records)
        # that this thread's CPU stays within BUSY_SHARE.
        if time.monotonic() < self._busy_until:
            self._pause(cpu_seconds * (1 / BUSY_SHARE - 1))

    def _pause(self, seconds: float) -> None:
        self.stopping.sleep(seconds)
