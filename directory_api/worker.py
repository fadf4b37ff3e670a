"""The queue worker's policy: receive a batch, save it in one transaction, set aside what can never be saved, delete.

The loop reads as a list of states, after rq's worker: waiting for the
database, opening the queues, receiving, handling, stopping. A signal only
sets a flag; every call that may block runs off the main thread (threads.py),
which looks at the flag every tick, so SIGTERM ends even a 20 s long poll
within two seconds.
"""

import contextlib
import enum
import functools
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence

import peewee

from directory_api import db, enrolment, jobs, logs, mail, migrations, models, saving
from directory_api.backoff import backoff
from directory_api.db import drop_connection
from directory_api.enrolment import NON_FIELD_ERRORS
from directory_api.errors import UserError, first_line
from directory_api.metrics import WorkMetrics, serve_metrics_http
from directory_api.queues import (
    ORIGINAL_MESSAGE_ID,
    Message,
    MessageRefused,
    Queue,
    QueueUnavailable,
    message_size,
    open_pipeline,
    original_id,
    poll_intervals,
)
from directory_api.saving import Created, Duplicate, Invalid
from directory_api.settings import Settings
from directory_api.threads import Background, Keepalive, Lane, Shutdown, StatementLane, StopNow, retry_until_done

log = logging.getLogger(__name__)

# At a stop, how long a receive cut short gets to return, so its messages go back at once.
RELEASE_GRACE = 0.5
# At a stop, how long the batch in hand gets to finish saving before its statement is cancelled,
# and then how long the cancelled transaction gets to roll back: all within the 2 s SPEC allows.
SAVE_GRACE = 0.5
CANCEL_GRACE = 0.2
# `--once` long-polls a second, not 0: a short poll samples only some SQS servers and may miss messages.
ONCE_WAIT = 1

RECEIVED_TOO_OFTEN = "Received {count} times without being saved (SQS_MAX_RECEIVE_COUNT is {limit})."
# Opens the reasons a set-aside message carries when all of them would not fit the invalid queue's size limit.
TRIMMED = "Reasons trimmed to fit the invalid queue's message size limit; all are recorded (GET /enrolment/<id>/): "


class Outcome(enum.Enum):
    """What became of a batch given to Worker.handle."""

    SAVED = "saved"  # every message saved, found saved before, or set aside; the delete is under way
    DATABASE_DOWN = "database down"  # nothing saved: the batch stays on the queue and comes back
    QUEUE_DOWN = "queue down"  # saved, but the invalid queue did not take some: they stay and come back
    STOPPED = "stopped"  # a stop cut the save short: nothing saved, the batch handed back
    FAILED = "failed"  # a bug kept the batch from being saved: it stays on the queue and comes back


class SaveCancelled(Exception):
    """A stop came while the batch was being saved and it did not finish in time: its transaction was cancelled."""


def decode(message: Message, max_receive_count: int) -> object:
    """The payload a message carries, or Invalid when it can never be saved."""
    if message.unreadable:
        return Invalid({NON_FIELD_ERRORS: [message.unreadable]}, received=message.body)
    if message.receive_count > max_receive_count:
        reason = RECEIVED_TOO_OFTEN.format(count=message.receive_count, limit=max_receive_count)
        return Invalid({NON_FIELD_ERRORS: [reason]}, received=message.body)
    try:
        return enrolment.parse(message.body.encode("utf-8", "surrogatepass"))
    except enrolment.BodyError as error:
        return Invalid({NON_FIELD_ERRORS: [str(error)]}, received=message.body)


def set_aside_attributes(message: Message, errors, size_limit: int | None = None) -> dict[str, str]:
    """What the invalid queue learns of a message besides its body: why, which message and request it was.

    The body is kept whole. When body and reasons together pass the queue's
    size limit, the reasons are trimmed to what fits, behind a marker, or left
    off when not even the marker fits; the rejection record keeps them all.
    """
    identity = {ORIGINAL_MESSAGE_ID: original_id(message)}
    request_id = request_id_of(message)
    if request_id:
        identity[logs.REQUEST_ID_ATTRIBUTE] = request_id
    reasons = json.dumps(errors, ensure_ascii=False)
    if size_limit is None:
        return {"errors": reasons, **identity}
    room = size_limit - message_size(message.body, {**identity, "errors": ""})
    trimmed = reasons if len(reasons.encode()) <= room else trim_reasons(reasons, room)
    return {"errors": trimmed, **identity} if trimmed else identity


def trim_reasons(reasons: str, room: int) -> str | None:
    """The longest `{"non_field_errors": [TRIMMED + start of reasons + "…"]}` of at most `room` bytes, or None."""

    def trimmed(length: int) -> str:
        return json.dumps({NON_FIELD_ERRORS: [TRIMMED + reasons[:length] + "…"]}, ensure_ascii=False)

    if len(trimmed(0).encode()) > room:
        return None
    shortest, longest = 0, len(reasons)  # trimmed(shortest) fits; find the longest that does
    while shortest < longest:
        middle = (shortest + longest + 1) // 2
        if len(trimmed(middle).encode()) <= room:
            shortest = middle
        else:
            longest = middle - 1
    return trimmed(shortest)


def verdicts_of(messages: Sequence[Message], max_receive_count: int) -> dict[str, object]:
    """What to save, keyed by each message's original_id: a re-driven message is saved under its original id.

    Two messages of one batch under one id (a re-drive repeated after a crash,
    say) are saved once, as the first of them.
    """
    verdicts: dict[str, object] = {}
    for message in messages:
        if original_id(message) not in verdicts:
            verdicts[original_id(message)] = decode(message, max_receive_count)
    return verdicts


def outcomes_by_message(messages: Sequence[Message], outcomes: dict) -> dict[str, saving.Outcome]:
    """Each message's outcome by its own id: the first of an original id gets it, the others are Duplicate."""
    by_message: dict[str, saving.Outcome] = {}
    seen: set[str] = set()
    for message in messages:
        key = original_id(message)
        by_message[message.id] = Duplicate() if key in seen else outcomes[key]
        seen.add(key)
    return by_message


def request_id_of(message: Message) -> str | None:
    """The id of the request that queued `message`, when it carries a safe one (anyone may send to a queue)."""
    return logs.safe_request_id(message.attributes.get(logs.REQUEST_ID_ATTRIBUTE))


class Worker:
    def __init__(
        self,
        settings: Settings,
        enrolments: Queue,
        invalid: Queue,
        *,
        shutdown: Shutdown | None = None,
        rng: Callable[[], float] = random.random,
        sender: mail.Sender | None = None,
        metrics: WorkMetrics | None = None,
    ):
        self.settings = settings
        self.enrolments = enrolments
        self.invalid = invalid
        self.shutdown = shutdown or Shutdown()
        self.rng = rng
        self.metrics = (metrics or WorkMetrics()).worker
        self.failures = 0  # consecutive; sets the backoff; changed on the main thread only
        self.keepalive = Keepalive(enrolments, settings.sqs_visibility_timeout)
        # The delete of the last batch (its messages, and the call), in flight while the next batch is saved.
        self.deleting: tuple[Sequence[Message], Background[list[Message]]] | None = None
        self.sender = sender  # the confirmation e-mails, sent on a thread of their own

    @functools.cached_property
    def receive_lane(self) -> Lane:
        return Lane("receive")

    @functools.cached_property
    def delete_lane(self) -> Lane:
        return Lane("delete")

    @functools.cached_property
    def save_lane(self) -> StatementLane:
        """Saves run here, not on the main thread, which must stay free to see a stop and cancel a hung statement."""
        return StatementLane("save", models.database)

    @property
    def stopping(self) -> bool:
        return self.shutdown.requested

    def run(self, *, once: bool = False) -> None:
        """Work until a signal (or, with once, until the queue is empty)."""
        if not self.wait_for_database() or not self.open_queues():
            return
        wait_seconds = ONCE_WAIT if once else self.settings.sqs_wait_time
        pending: Background[list[Message]] | None = None
        if self.sender:
            self.sender.start()
        idle = poll_intervals()  # pauses between empty receives, afresh once messages come
        try:
            while not self.stopping:
                pending = pending or self.start_receive(wait_seconds)
                if not self.wait_for(pending.done):
                    break
                messages, error, took, pending = pending.result, pending.error, pending.duration, None
                if error is not None:
                    self.note_failure(error, "receive", [])
                    self.sleep(self.failure_pause())
                    continue
                if not messages:
                    self.failures = 0
                    if once:
                        break
                    # A short SQS_WAIT_TIME (0 included) answers an empty queue at once: pause rather than spin.
                    self.sleep(next(idle) - took)
                    continue
                idle = poll_intervals()
                if len(messages) == self.settings.sqs_max_messages:
                    # A full batch: the queue is busy, so the next receive overlaps this batch's save.
                    pending = self.start_receive(wait_seconds)
                    if self.sender:
                        self.sender.queue_busy()
                outcome = self.handle(messages)
                if outcome is not Outcome.SAVED:
                    if pending:
                        pending.abandon()
                        pending = None
                    if self.sleep(self.failure_pause()) and outcome is not Outcome.QUEUE_DOWN:
                        self.wait_for_database()
            if once and self.sender:
                self.wait_for(self.sender.finish())  # the e-mails due now, then exit
        finally:
            self.stop(pending)

    def failure_pause(self) -> float:
        """Seconds to pause after the failures counted so far."""
        return backoff(max(1, self.failures), self.rng)

    def wait_for_database(self) -> bool:
        """Return once the database answers with the current schema (False when told to stop first)."""
        log.debug("worker: waiting for the database")
        return retry_until_done(
            self.probe_database,
            retry_on=db.DATABASE_ERRORS,  # anything else, a SchemaError say, is for the user to fix
            shutdown=self.shutdown,
            delay=lambda attempt: backoff(attempt, self.rng),
            on_retry=lambda error, seconds: log.warning(
                "database unreachable (%s); trying again in %.1f s", first_line(error), seconds),
        )

    def probe_database(self) -> None:
        """Connect, check the schema and that a batch could be written; closes its thread's connection.

        A database that answers but cannot take a write (locked, read-only,
        out of space) is waited for too: receiving meanwhile would only turn
        good messages into poison.
        """
        try:
            migrations.ensure_current(models.database, auto_migrate=self.settings.debug)
            problem = db.write_problem(models.database)
            if problem:
                raise peewee.OperationalError(f"it cannot be written: {problem}")
        finally:
            drop_connection(models.database)

    def open_queues(self) -> bool:
        """Return once both queues exist, creating them when missing (False when told to stop first)."""
        log.debug("worker: opening the queues")

        def open_both() -> None:
            self.enrolments.ensure_exists()
            self.invalid.ensure_exists()

        return retry_until_done(
            open_both,
            retry_on=(QueueUnavailable,),
            shutdown=self.shutdown,
            delay=lambda attempt: backoff(attempt, self.rng),
            on_retry=lambda error, seconds: log.warning("%s; trying again in %.1f s", error, seconds),
        )

    def start_receive(self, wait_seconds: float) -> Background[list[Message]]:
        max_messages = self.settings.sqs_max_messages
        log.debug("worker: receiving up to %d messages, waiting up to %s s", max_messages, wait_seconds)

        def receive() -> list[Message]:
            return self.enrolments.receive(max_messages, wait_seconds)

        return Background(receive, self.release, lane=self.receive_lane)

    def handle(self, messages: Sequence[Message]) -> Outcome:
        """Save and set aside one batch, then start its delete in the background; what became of the batch.

        The delete runs while the caller receives and saves the next batch;
        the next handle (or the stop) waits for it and counts its failure.
        """
        started = time.perf_counter()
        verdicts = verdicts_of(messages, self.settings.sqs_max_receive_count)
        with self.keepalive.watch(messages):
            try:
                outcomes = outcomes_by_message(messages, self.save(verdicts))
            except SaveCancelled:
                log.warning("messages %s: stopped while saving; the transaction was rolled back and they are "
                            "handed back", ids(messages))
                Background(lambda: self.release(messages)).done.wait(RELEASE_GRACE)
                return Outcome.STOPPED
            except db.DATABASE_ERRORS as error:
                self.note_failure(error, "save", messages)
                return Outcome.DATABASE_DOWN
            except Exception:  # a bug must not lose the batch or stop the worker
                log.exception("messages %s: not saved; they stay on the queue", ids(messages))
                self.failures += 1
                self.metrics.count("retried", len(messages))
                return Outcome.FAILED
            log_outcomes(messages, outcomes)
            rejected = [m for m in messages if isinstance(outcomes[m.id], Invalid)]
            kept = self.set_aside(rejected, outcomes)
        self.count(outcomes, rejected, kept, time.perf_counter() - started)
        if not kept:
            self.failures = 0
        self.finish_deleting()
        handled = [m for m in messages if m not in kept]
        if handled:
            self.start_delete(handled)
        return Outcome.QUEUE_DOWN if kept else Outcome.SAVED

    def save(self, verdicts: dict) -> dict:
        """saving.save_batch on the save lane; at a stop it gets SAVE_GRACE to finish, then its statement is cancelled.

        Raises SaveCancelled then (nothing of the batch was written), and
        passes on what save_batch raised.
        """
        saving_call = self.save_lane.run(lambda: saving.save_batch(verdicts))
        try:
            finished = self.wait_for(saving_call.done) or saving_call.done.wait(SAVE_GRACE)
        except StopNow:
            self.save_lane.cancel()
            raise
        if not finished:
            log.info("stopping: cancelling the statement saving the batch in hand")
            self.save_lane.cancel()
            saving_call.done.wait(CANCEL_GRACE)
            raise SaveCancelled()
        return saving_call.returned()

    def start_delete(self, handled: Sequence[Message]) -> None:
        """Delete handled messages on the delete lane; a failed one comes back and is then found saved (or rejected)."""
        self.deleting = (handled, Background(lambda: self.enrolments.delete(handled), lane=self.delete_lane))

    def count(self, outcomes: dict, rejected: Sequence[Message], kept: Sequence[Message], seconds: float) -> None:
        """A saved batch in the metrics: its outcomes and how long saving and setting aside took."""
        kinds = [type(outcome) for outcome in outcomes.values()]
        self.metrics.count("saved", kinds.count(Created))
        self.metrics.count("duplicate", kinds.count(Duplicate))
        self.metrics.count("set_aside", len(rejected) - len(kept))
        self.metrics.batch_duration.observe(seconds)

    def finish_deleting(self, timeout: float | None = None) -> None:
        """Wait for the delete in flight, if any (until a stop, or `timeout`), and note how it went."""
        if self.deleting is None:
            return
        (handled, deleting), self.deleting = self.deleting, None
        finished = self.wait_for(deleting.done) if timeout is None else deleting.done.wait(timeout)
        if not finished:
            return  # its messages come back after the visibility timeout and are found saved
        if deleting.error is not None:
            self.note_failure(deleting.error, "delete", handled)
            return
        for message in deleting.result or ():
            log.warning("message %s: handled but not deleted; it will come back and be deleted then", message.id)

    def set_aside(self, rejected: Sequence[Message], outcomes) -> list[Message]:
        """Send rejected messages to the invalid queue; return those it did not take but may take later."""
        kept = []
        size_limit = self.invalid.message_size_limit() if rejected else None
        for message in rejected:
            attributes = set_aside_attributes(message, outcomes[message.id].errors, size_limit)
            try:
                self.invalid.send(message.body, attributes)
            except MessageRefused as error:
                # Kept, it would come back every visibility timeout for ever. Its
                # rejection, with every reason, was recorded when the batch was saved.
                log.error("message %s: the invalid queue refuses it (%s); deleted without being set aside, "
                          "its %d-byte body is lost; its rejection and reasons are recorded",
                          message.id, first_line(error), len(message.body.encode("utf-8", "surrogatepass")))
            except QueueUnavailable as error:
                self.note_failure(error, "set aside", [message])
                kept.append(message)
        return kept

    def release(self, messages: Sequence[Message]) -> None:
        """Hand messages never started back to the queue at once."""
        if not messages:
            return
        try:
            self.enrolments.release(messages)
            log.info("messages %s: handed back unhandled", ids(messages))
        except QueueUnavailable as error:
            log.warning("messages %s: not handed back (%s); they return after the visibility timeout",
                        ids(messages), error)

    def note_failure(self, error: BaseException, action: str, messages: Sequence[Message]) -> None:
        """Count a failure (for the backoff; messages left on the queue as retried) and log it; main thread only."""
        self.failures += 1
        if action in ("save", "set aside"):
            self.metrics.count("retried", len(messages))
        which = f"messages {ids(messages)}: " if messages else ""
        log.warning("%s%s failed, left on the queue: %s", which, action, first_line(error))

    def stop(self, pending: Background[list[Message]] | None) -> None:
        log.debug("worker: stopping")
        if self.sender:
            self.sender.stop()  # at once, beside the rest: an e-mail cut short is sent again later
        # The delete in flight, the receive cut short and the sender share one grace: they run at the same time.
        deadline = time.monotonic() + RELEASE_GRACE
        if pending is not None:
            self.enrolments.interrupt()
        self.finish_deleting(RELEASE_GRACE)  # one not done by then comes back and is found saved
        if pending is not None:
            pending.done.wait(max(0.0, deadline - time.monotonic()))
            pending.abandon()
        if self.sender:
            # An e-mail it has not handed back by then is claimed again when its lease ends.
            self.sender.join(max(0.1, deadline - time.monotonic()))

    def sleep(self, seconds: float) -> bool:
        """Wait `seconds`, or less when told to stop; False when told to stop."""
        return self.shutdown.sleep(seconds)

    def wait_for(self, event: threading.Event) -> bool:
        """Wait for `event`, or until told to stop; True when it was set."""
        return self.shutdown.wait_for(event)


def serve_metrics(work_metrics: WorkMetrics, port: int) -> None:
    try:
        serve_metrics_http(work_metrics.registry, port)
    except OSError as error:
        reason = error.strerror or error
        raise UserError(f"METRICS_PORT (--metrics-port) {port}: cannot listen there: {reason}") from None
    log.info("metrics on http://0.0.0.0:%d/metrics", port)


def ids(messages: Sequence[Message]) -> str:
    return ", ".join(message.id for message in messages)


def log_outcomes(messages: Sequence[Message], outcomes) -> None:
    """One INFO line a batch (a line a message would cost more than saving it); each message at DEBUG."""
    kinds = [type(outcomes[message.id]) for message in messages]
    counts = {"saved": kinds.count(Created), "duplicate": kinds.count(Duplicate), "set_aside": kinds.count(Invalid)}
    log.info("batch of %d: %d saved, %d saved before, %d set aside", len(messages),
             counts["saved"], counts["duplicate"], counts["set_aside"], extra={"messages": len(messages), **counts})
    debug = log.isEnabledFor(logging.DEBUG)
    for message in messages:
        outcome = outcomes[message.id]
        if not debug and not isinstance(outcome, Invalid):
            continue
        request, fields = _about(message)
        message_id = fields["message_id"]  # the original id, re-driven or not
        if isinstance(outcome, Invalid):
            errors = json.dumps(outcome.errors)
            log.info("message %s%s: cannot be saved, set aside: %s", message_id, request, errors, extra=fields)
        elif isinstance(outcome, Created):
            log.debug("message %s%s: saved as enrolment %d", message_id, request, outcome.enrolment_id, extra=fields)
        else:
            log.debug("message %s%s: saved before; deleted", message_id, request, extra=fields)


def _about(message: Message) -> tuple[str, dict]:
    """The text after a message's (original) id in its lines (its request id, if any), and the fields of its JSON lines.

    A re-driven message goes by its original id, as everywhere else; the id it came back under is added.
    """
    request_id = request_id_of(message)
    fields = {"message_id": original_id(message)}
    about = []
    if message.id != fields["message_id"]:
        fields["redriven_as"] = message.id
        about.append(f"re-driven as {message.id}")
    if request_id is not None:
        fields["request_id"] = request_id
        about.append(f"request_id={request_id}")
    return (f" ({', '.join(about)})" if about else ""), fields


@contextlib.contextmanager
def stoppable() -> Iterator[Shutdown]:
    """What `work` and `dev` run under: SIGTERM/SIGINT handled from the first moment, a second signal
    (StopNow) ending the block without a traceback, and the database connection dropped after it."""
    shutdown = Shutdown()
    shutdown.install()  # first, so a signal during start-up is a clean stop too
    try:
        yield shutdown
    except StopNow:
        log.info("stopped now; messages in hand come back after SQS_VISIBILITY_TIMEOUT")
    finally:
        if db.bound() is not None:
            drop_connection(models.database)


def work(settings: Settings, *, once: bool = False, metrics_port: int | None = None) -> None:
    """The `work` command: run a worker until SIGTERM/SIGINT (or, with once, until the queue is empty).

    With `metrics_port`, its metrics are served at http://0.0.0.0:PORT/metrics.
    """
    with stoppable() as shutdown:
        work_metrics = WorkMetrics()
        if metrics_port:
            serve_metrics(work_metrics, metrics_port)
        enrolments, invalid = open_pipeline(settings)
        worker = Worker(
            settings,
            enrolments,
            invalid,
            shutdown=shutdown,
            sender=mail.Sender(settings, on_outcome=work_metrics.emails.count),
            metrics=work_metrics,
        )
        scheduler = jobs.start(settings)  # the periodic jobs (retention), on a thread of their own
        try:
            worker.run(once=once)
        finally:
            scheduler.stop()
