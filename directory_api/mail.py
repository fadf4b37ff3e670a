"""The confirmation e-mail: a transactional outbox that `work` sends over SMTP on a thread of its own.

Its rows (outbox.py) are recorded in the transaction that saves their
enrolment, so an e-mail exists exactly when its enrolment does. The Sender
claims waiting rows for a lease (outbox.LEASE), sends each (smtp.py) and
records the outcome at once: sent; a temporary failure (connection refused,
timeout, 4xx) due again after a jittered backoff of at most 60 s, its reason
in plain words; a permanent refusal (5xx) failed, with the server's reply.
Each conversation is bounded (smtp.CONVERSATION_LIMIT) and started only
when it fits in what is left of its lease, so a lease never ends while its
e-mail is being sent. The record of an e-mail the server accepted is retried
on a fresh connection until the database takes it: only a crash between the
two may send it again, with the same Message-ID, when its lease ends. A stop
starts no new conversation and cuts the one in hand, except from DATA on:
the server may have the message then, so its reply is waited for
(smtp.STOP_REPLY_WAIT, inside `work`'s 2-second stop) and recorded. Without
EMAIL_HOST the Sender logs each e-mail instead and records it as logged.
"""

import itertools
import logging
import smtplib
import ssl
import threading
import time
from collections.abc import Callable, Sequence

from directory_api import outbox, smtp
from directory_api.db import DATABASE_ERRORS, drop_connection
from directory_api.errors import first_line
from directory_api.models import Email
from directory_api.settings import Settings
from directory_api.threads import Failures, Stop

log = logging.getLogger(__name__)

RETRIED = "retried"  # an outcome (for on_outcome), not a state: the e-mail is waiting again

CLAIM_SIZE = 10
RECORD_MARGIN = 30.0  # seconds kept after a conversation for the record of its outcome
# Seconds a stop waits, after the reply to a message (smtp.STOP_REPLY_WAIT), for the record of the outcome: the two
# within `work`'s 2-second stop, with the tick that sees the signal (0.1 s) and the process's own exit to spare on
# a loaded machine.
STOP_RECORD_WAIT = 0.3
FIRST_RETRY = 1.0
LONGEST_RETRY = 60.0
# While the worker drains a backlog the sender takes at most this share of a CPU
# (it shares the GIL with the worker), then catches up once the backlog is gone.
BUSY_SHARE = 0.05
BUSY_HOLD = 1.0  # seconds a full batch counts as "busy"
IDLE_POLLS = (0.2, 0.4, 0.8, 1.0)  # an empty outbox is looked at less and less often, then every second


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
        transport: smtp.SmtpTransport | None = None,
        tls_context: ssl.SSLContext | None = None,
        on_outcome: Callable[[str], None] = lambda outcome: None,
        rng: Callable[[], float] | None = None,
    ):
        self.config = smtp.MailSettings.from_settings(settings)
        self.database = Email._meta.database
        self.transport = transport or (smtp.SmtpTransport(self.config, tls_context) if self.config.host else None)
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
        then its reply is waited for (smtp.STOP_REPLY_WAIT) and recorded."""
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
            server = f"{self.config.host}:{self.config.port}"
            return f"SMTP server {server}: {smtp.plain_error(error)} ({smtp.reply_of(error)[1]})"
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

    def deliver_claim(self, emails: Sequence[Email], transport: smtp.SmtpTransport, lease_ends: float) -> None:
        """Deliver claimed e-mails one by one; those that cannot be, in time or after a failure, are handed back.

        An e-mail is started only when its whole conversation
        (smtp.CONVERSATION_LIMIT) and its record fit in what is left of the
        lease: a lease never ends while its e-mail is being sent, so another
        sender never sends it too.
        """
        for index, email in enumerate(emails):
            if self.stopping.requested or time.monotonic() + smtp.CONVERSATION_LIMIT + RECORD_MARGIN > lease_ends:
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

    def deliver(self, email: Email, transport: smtp.SmtpTransport) -> None:
        """Send one claimed e-mail and record the outcome; connection failures are raised."""
        try:
            message = smtp.compose(email, self.config)
            transport.send(message, smtp.ascii_recipient(email.recipient))
        except smtp.Unsendable as error:
            self._failed(email, str(error))
        except smtp.MESSAGE_REFUSALS as error:
            if smtp.is_permanent(error):
                self._failed(email, smtp.reply_of(error)[1])
            else:
                self._retry(email, smtp.reply_of(error)[1])
        except smtp.Unanswered as error:
            transport.close()
            self._unanswered(email, message["Message-ID"], str(error))
            raise
        except (smtplib.SMTPException, OSError) as error:
            transport.close()
            if self.stopping.requested:
                outbox.release([email])  # cut by stop() before DATA: the server never had it
            else:
                self._retry(email, smtp.plain_error(error))
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
