"""The queue worker's policy: receive a batch, save it in one transaction, set aside what can never be saved, delete.

The loop reads as a list of steps, after rq's work(): get ready (the
database, the queues), receive, pause while idle, work on a batch, recover
from a failure, stop. A signal only sets a flag; every call that may block
runs off the main thread (threads.py), which looks at the flag every tick, so
SIGTERM ends even a 20 s long poll within two seconds. What to save and what
to say about it is decided by the pure functions of batch.py; the e-mail
sender runs beside the worker (`working`), never inside it.
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

from directory_api import db, jobs, mail, migrations, models, saving
from directory_api.batch import about, ids, outcomes_by_message, rejected, set_aside_attributes, tally, verdicts_of
from directory_api.db import drop_connection
from directory_api.errors import UserError, first_line
from directory_api.metrics import WorkMetrics, serve_metrics_http
from directory_api.queues import (
    Message,
    MessageRefused,
    Queue,
    QueueUnavailable,
    open_pipeline,
    poll_intervals,
)
from directory_api.saving import Created, Invalid
from directory_api.settings import BY_NAME, Settings
from directory_api.threads import (
    Background,
    Failures,
    Keepalive,
    Lane,
    Shutdown,
    StatementLane,
    StopNow,
    beside,
    retry_until_done,
)

log = logging.getLogger(__name__)

# At a stop, how long a receive cut short gets to return, so its messages go back at once.
RELEASE_GRACE = 0.5
# At a stop, how long the batch in hand gets to finish saving before its statement is cancelled,
# and then how long the cancelled transaction gets to roll back: all within the 2 s docs/worker.md promises.
SAVE_GRACE = 0.5
CANCEL_GRACE = 0.2
# At a stop, how long the e-mail sender (stopped at the same moment as the worker) gets to hand its claim back.
SENDER_GRACE = 0.5
# `--once` long-polls a second, not 0: a short poll samples only some SQS servers and may miss messages.
ONCE_WAIT = 1


class BatchOutcome(enum.Enum):
    """What became of a batch given to Worker.handle."""

    SAVED = "saved"  # every message saved, found saved before, or set aside; the delete is under way
    DATABASE_DOWN = "database down"  # nothing saved: the batch stays on the queue and comes back
    QUEUE_DOWN = "queue down"  # saved, but the invalid queue did not take some: they stay and come back
    STOPPED = "stopped"  # a stop cut the save short: nothing saved, the batch handed back
    FAILED = "failed"  # a bug kept the batch from being saved: it stays on the queue and comes back


class SaveCancelled(Exception):
    """A stop came while the batch was being saved and it did not finish in time: its transaction was cancelled."""


class Worker:
    """Drains the enrolment queue into the database until told to stop; see the module's docstring."""

    def __init__(
        self,
        settings: Settings,
        enrolments: Queue,
        invalid: Queue,
        *,
        shutdown: Shutdown | None = None,
        rng: Callable[[], float] = random.random,
        metrics: WorkMetrics | None = None,
        on_full_batch: Callable[[], None] = lambda: None,
        when_ready: Callable[[], None] = lambda: None,
    ):
        self.settings = settings
        self.enrolments = enrolments
        self.invalid = invalid
        self.shutdown = shutdown or Shutdown()
        self.rng = rng
        self.metrics = (metrics or WorkMetrics()).messages
        self.failures = Failures(rng=rng)  # consecutive; sets the backoff; changed on the main thread only
        self.keepalive = Keepalive(enrolments, settings.sqs_visibility_timeout)
        self.on_full_batch = on_full_batch  # the queue is busy: told to the e-mail sender, which then holds back
        self.when_ready = when_ready  # the database answers with the current schema and the queues are open
        self.wait_seconds: float = settings.sqs_wait_time
        # The receive under way (started ahead while a full batch is saved), and the pauses between empty receives.
        self.pending: Background[list[Message]] | None = None
        self.idle = poll_intervals()
        self.took = 0.0  # seconds the last empty receive took (an idle pause is that much shorter)
        # The delete of the last batch (its messages, and the call), in flight while the next batch is saved.
        self.deleting: tuple[Sequence[Message], Background[list[Message]]] | None = None

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
        return self.shutdown.seen()

    # -- the loop, as steps -------------------------------------------------------------------------------------

    def run(self, *, once: bool = False) -> None:
        """Work until a signal (or, with once, until the queue is empty)."""
        if not self.get_ready():
            return
        self.when_ready()
        self.wait_seconds = ONCE_WAIT if once else self.settings.sqs_wait_time
        try:
            while not self.stopping:
                messages = self.receive_batch()
                if messages is None:
                    continue  # the receive failed (paused since) or was cut by a stop
                if messages:
                    self.work_on(messages)
                elif once:
                    break
                else:
                    self.pause_while_idle()
        finally:
            self.stop()

    def get_ready(self) -> bool:
        """Wait for the database, then open the queues; False when told to stop first."""
        return self.wait_for_database() and self.open_queues()

    def receive_batch(self) -> list[Message] | None:
        """The next batch (the one received ahead, if any); [] when the queue is empty; None after a failure or stop."""
        pending, self.pending = self.pending or self.start_receive(self.wait_seconds), None
        if not self.wait_for(pending.done):
            self.pending = pending  # cut by a stop: stop() hands its messages back
            return None
        if pending.error is not None:
            self.note_failure(pending.error, "receive", [])
            self.sleep(self.failures.pause())
            return None
        if not pending.result:
            self.failures.reset()
            self.took = pending.duration
        return pending.result or []

    def pause_while_idle(self) -> None:
        """A short SQS_WAIT_TIME (0 included) answers an empty queue at once: pause rather than spin."""
        self.sleep(next(self.idle) - self.took)

    def work_on(self, messages: Sequence[Message]) -> None:
        """Handle a batch; a full one means a busy queue, so the next receive starts now, beside the save."""
        self.idle = poll_intervals()  # the pauses start afresh once messages come
        if len(messages) == self.settings.sqs_max_messages:
            self.pending = self.start_receive(self.wait_seconds)
            self.on_full_batch()
        outcome = self.handle(messages)
        if outcome is not BatchOutcome.SAVED:
            self.recover_from(outcome)

    def recover_from(self, outcome: BatchOutcome) -> None:
        """After a batch that was not saved: give up the receive ahead, back off, and wait for the database."""
        if self.pending:
            self.pending.abandon()
            self.pending = None
        if self.sleep(self.failures.pause()) and outcome is not BatchOutcome.QUEUE_DOWN:
            self.wait_for_database()

    # -- the steps' parts ---------------------------------------------------------------------------------------

    def wait_for_database(self) -> bool:
        """Return once the database answers with the current schema (False when told to stop first)."""
        log.debug("worker: waiting for the database")
        return retry_until_done(
            self.probe_database,
            retry_on=db.DATABASE_ERRORS,  # anything else, a SchemaError say, is for the user to fix
            shutdown=self.shutdown,
            delay=self.failures.delay,
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
            delay=self.failures.delay,
            on_retry=lambda error, seconds: log.warning("%s; trying again in %.1f s", error, seconds),
        )

    def start_receive(self, wait_seconds: float) -> Background[list[Message]]:
        max_messages = self.settings.sqs_max_messages
        log.debug("worker: receiving up to %d messages, waiting up to %s s", max_messages, wait_seconds)

        def receive() -> list[Message]:
            return self.enrolments.receive(max_messages, wait_seconds)

        return Background(receive, self.release, lane=self.receive_lane)

    def handle(self, messages: Sequence[Message]) -> BatchOutcome:
        """Save and set aside one batch, then start its delete in the background; what became of the batch.

        The delete runs while the caller receives and saves the next batch;
        the next handle (or the stop) waits for it and counts its failure.
        """
        started = time.perf_counter()
        verdicts = verdicts_of(messages, self.settings.sqs_max_receive_count)
        with self.keepalive.watch(messages):
            try:
                outcomes = outcomes_by_message(messages, self.save(verdicts))
            except Exception as error:  # SaveCancelled, a database error, or a bug: see not_saved
                return self.not_saved(messages, error)
            log_outcomes(messages, outcomes)
            refused = rejected(messages, outcomes)
            kept = self.set_aside(refused, outcomes)
        self.count(outcomes, refused, kept, time.perf_counter() - started)
        if not kept:
            self.failures.reset()
        self.finish_deleting()
        handled = [m for m in messages if m not in kept]
        if handled:
            self.start_delete(handled)
        return BatchOutcome.QUEUE_DOWN if kept else BatchOutcome.SAVED

    def not_saved(self, messages: Sequence[Message], error: Exception) -> BatchOutcome:
        """A batch whose save did not happen: it stays on the queue (or goes back at once, after a stop)."""
        if isinstance(error, SaveCancelled):
            log.warning("messages %s: stopped while saving; the transaction was rolled back and they are "
                        "handed back", ids(messages))
            Background(lambda: self.release(messages)).done.wait(RELEASE_GRACE)
            return BatchOutcome.STOPPED
        if isinstance(error, db.DATABASE_ERRORS):
            self.note_failure(error, "save", messages)
            return BatchOutcome.DATABASE_DOWN
        # A bug must not lose the batch or stop the worker.
        log.error("messages %s: not saved; they stay on the queue", ids(messages), exc_info=error)
        self.failures.failed()
        self.metrics.count("retried", len(messages))
        return BatchOutcome.FAILED

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

    def count(self, outcomes: dict, refused: Sequence[Message], kept: Sequence[Message], seconds: float) -> None:
        """A saved batch in the metrics: its outcomes and how long saving and setting aside took."""
        counts = tally(outcomes)
        self.metrics.count("saved", counts["saved"])
        self.metrics.count("duplicate", counts["duplicate"])
        self.metrics.count("set_aside", len(refused) - len(kept))
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

    def set_aside(self, refused: Sequence[Message], outcomes) -> list[Message]:
        """Send refused messages to the invalid queue; return those it did not take but may take later."""
        kept = []
        size_limit = self.invalid.message_size_limit() if refused else None
        for message in refused:
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
        self.failures.failed()
        if action in ("save", "set aside"):
            self.metrics.count("retried", len(messages))
        which = f"messages {ids(messages)}: " if messages else ""
        log.warning("%s%s failed, left on the queue: %s", which, action, first_line(error))

    def stop(self) -> None:
        """Finish the delete in flight and hand back what a receive cut short took, within RELEASE_GRACE."""
        log.debug("worker: stopping")
        pending, self.pending = self.pending, None
        # The delete in flight and the receive cut short share one grace: they run at the same time.
        deadline = time.monotonic() + RELEASE_GRACE
        if pending is not None:
            self.enrolments.interrupt()
        self.finish_deleting(RELEASE_GRACE)  # one not done by then comes back and is found saved
        if pending is not None:
            pending.done.wait(max(0.0, deadline - time.monotonic()))
            pending.abandon()

    def sleep(self, seconds: float) -> bool:
        """Wait `seconds`, or less when told to stop; False when told to stop."""
        return self.shutdown.sleep(seconds)

    def wait_for(self, event: threading.Event) -> bool:
        """Wait for `event`, or until told to stop; True when it was set."""
        return self.shutdown.wait_for(event)


def log_outcomes(messages: Sequence[Message], outcomes) -> None:
    """One INFO line a batch (a line a message would cost more than saving it); each message at DEBUG."""
    counts = tally({message.id: outcomes[message.id] for message in messages})
    log.info("batch of %d: %d saved, %d saved before, %d set aside", len(messages),
             counts["saved"], counts["duplicate"], counts["set_aside"], extra={"messages": len(messages), **counts})
    debug = log.isEnabledFor(logging.DEBUG)
    for message in messages:
        outcome = outcomes[message.id]
        if debug or isinstance(outcome, Invalid):
            log_outcome(message, outcome)


def log_outcome(message: Message, outcome: saving.Outcome) -> None:
    request, fields = about(message)
    message_id = fields["message_id"]  # the original id, re-driven or not
    if isinstance(outcome, Invalid):
        errors = json.dumps(outcome.errors)
        log.info("message %s%s: cannot be saved, set aside: %s", message_id, request, errors, extra=fields)
    elif isinstance(outcome, Created):
        log.debug("message %s%s: saved as enrolment %d", message_id, request, outcome.enrolment_id, extra=fields)
    else:
        log.debug("message %s%s: saved before; deleted", message_id, request, extra=fields)


# -- what `work` and `dev` run ------------------------------------------------------------------------------------

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


@contextlib.contextmanager
def working(
    settings: Settings, enrolments: Queue, invalid: Queue, *, shutdown: Shutdown, metrics: WorkMetrics,
    rng: Callable[[], float] = random.random, when_ready: Callable[[], None] = lambda: None,
) -> Iterator[tuple[Worker, mail.Sender]]:
    """The one way `work` and `dev` make a worker: with the e-mail sender running beside it for the block.

    The sender starts once the worker is ready (the database answers with the
    current schema), then `when_ready` runs; a stop asked of `shutdown` stops
    the sender at the same moment as the worker, and at the end of the block
    it gets SENDER_GRACE to hand its claim back.
    """
    sender = mail.Sender(settings, on_outcome=metrics.emails.count, rng=rng)
    with beside(shutdown, sender, SENDER_GRACE) as start_sender:

        def ready() -> None:
            start_sender()
            when_ready()

        yield Worker(settings, enrolments, invalid, shutdown=shutdown, rng=rng, metrics=metrics,
                     on_full_batch=sender.queue_busy, when_ready=ready), sender


def metrics_address(settings: Settings, *, once: bool, port: int | None, host: str | None) -> tuple[int | None, str]:
    """Where `work` serves /metrics: (port, or None for nowhere; host).

    --metrics-port and --metrics-host win over METRICS_PORT and METRICS_HOST;
    `work --once` serves none unless --metrics-port asks for it: a drain that
    exits in seconds is no scrape target, and its port would clash with the
    long-running worker's on the same machine.
    """
    if host is not None:
        try:
            host = str(BY_NAME["METRICS_HOST"].parse(host))
        except ValueError as error:
            raise UserError(f"--metrics-host: {error}") from None
    chosen_port = port if port is not None or once else settings.metrics_port
    return chosen_port, host or settings.metrics_host


def serve_metrics(work_metrics: WorkMetrics, host: str, port: int) -> None:
    try:
        serve_metrics_http(work_metrics.registry, port, host)
    except OSError as error:
        reason = error.strerror or error
        raise UserError(f"METRICS_HOST/METRICS_PORT (--metrics-host/--metrics-port) {host}:{port}: "
                        f"cannot listen there: {reason}") from None
    log.info("metrics on http://%s:%d/metrics", host, port)


def work(settings: Settings, *, once: bool = False, metrics_port: int | None = None,
         metrics_host: str = "0.0.0.0") -> None:
    """The `work` command: run a worker until SIGTERM/SIGINT (or, with once, until the queue is empty).

    With `metrics_port`, its metrics are served at http://HOST:PORT/metrics
    once the worker is ready to work (the database answers with the current
    schema and the queues are open).
    """
    with stoppable() as shutdown:
        work_metrics = WorkMetrics()
        enrolments, invalid = open_pipeline(settings)
        ready = functools.partial(serve_metrics, work_metrics, metrics_host, metrics_port) if metrics_port \
            else (lambda: None)
        with working(settings, enrolments, invalid, shutdown=shutdown, metrics=work_metrics,
                     when_ready=ready) as (worker, sender):
            scheduler = jobs.start(settings)  # the periodic jobs (retention), on a thread of their own
            try:
                worker.run(once=once)
            finally:
                scheduler.stop()
            if once:
                shutdown.wait_for(sender.finish())  # the e-mails due now, then exit
