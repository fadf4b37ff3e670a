"""The queue worker: receive a batch, save it in one transaction, set aside what can never be saved, delete.

The loop reads as a list of states, after rq's worker: waiting for the
database, opening the queues, receiving, handling, stopping. A signal only
sets a flag; the main thread never blocks on the queue itself (a receive runs
in a background thread and the main thread looks at the flag every tick), so
SIGTERM ends even a 20 s long poll within two seconds.
"""

import contextlib
import functools
import itertools
import json
import logging
import queue
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence

import peewee

from directory_api import db, enrolment, migrations, saving
from directory_api.db import drop_connection
from directory_api.enrolment import NON_FIELD_ERRORS
from directory_api.errors import first_line
from directory_api.queues import (
    Message, MessageRefused, Queue, QueueUnavailable, message_size, open_queue, poll_intervals,
)
from directory_api.saving import Created, Duplicate, Invalid
from directory_api.settings import Settings

log = logging.getLogger(__name__)

TICK = 0.1  # how often the main thread looks at the stop flag while it waits
FIRST_BACKOFF = 0.5
LONGEST_BACKOFF = 30.0
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

# The failures after which a message stays on its queue and comes back.
TRANSIENT = (QueueUnavailable, *db.DATABASE_ERRORS)


class StopNow(BaseException):
    """A second signal: stop without finishing the batch in hand (it comes back after the visibility timeout)."""


class SaveCancelled(Exception):
    """A stop came while the batch was being saved and it did not finish in time: its transaction was cancelled."""


def backoff(attempt: int, rng: Callable[[], float] = random.random) -> float:
    """Seconds to wait before try `attempt` (1, 2, ...): doubling from 0.5 s to 30 s, jittered to half-to-all of it."""
    ceiling = min(LONGEST_BACKOFF, FIRST_BACKOFF * 2 ** (attempt - 1))
    return ceiling / 2 + rng() * ceiling / 2


def read(message: Message, max_receive_count: int) -> object:
    """The payload a message carries, or Invalid when it can never be saved."""
    if message.unreadable:
        return Invalid({NON_FIELD_ERRORS: [message.unreadable]})
    if message.receive_count > max_receive_count:
        reason = RECEIVED_TOO_OFTEN.format(count=message.receive_count, limit=max_receive_count)
        return Invalid({NON_FIELD_ERRORS: [reason]})
    try:
        return enrolment.parse(message.body.encode("utf-8", "surrogatepass"))
    except enrolment.BodyError as error:
        return Invalid({NON_FIELD_ERRORS: [str(error)]})


def set_aside_attributes(message: Message, errors, size_limit: int | None = None) -> dict[str, str]:
    """What the invalid queue learns of a message besides its body: why, and which message it was.

    The body is kept whole. When body and reasons together pass the queue's
    size limit, the reasons are trimmed to what fits, behind a marker, or left
    off when not even the marker fits; the rejection record keeps them all.
    """
    identity = {"original_message_id": message.id}
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


class Shutdown:
    """SIGTERM/SIGINT: the first asks the worker to stop after the batch in hand, a second stops it now."""

    def __init__(self):
        self.requested = False

    def install(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self.on_signal)

    def on_signal(self, signum, frame) -> None:
        # Only a flag (rq does the same): the main thread acts on it at its next tick.
        if self.requested:
            raise StopNow()
        log.info("%s: stopping after the batch in hand (signal again to stop now)", signal.Signals(signum).name)
        self.requested = True


class Lane:
    """A daemon thread that runs the calls put to it one after another, for the worker's life.

    Receives and deletes each run on a lane of their own, so on the database
    queue each keeps one connection rather than opening one a batch.
    """

    def __init__(self, name: str):
        self._calls: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._serve, name=name, daemon=True).start()

    def put(self, call: Callable[[], None]) -> None:
        self._calls.put(call)

    def _serve(self) -> None:
        while True:
            self._calls.get()()


class Background:
    """One blocking call (a receive, a delete, a connection attempt) off the main thread, so it can stop waiting.

    The call runs on `lane` when one is given, else in a daemon thread of its own.
    """

    def __init__(
        self,
        call: Callable[[], list],
        on_abandoned: Callable[[list], None] = lambda result: None,
        *,
        lane: Lane | None = None,
    ):
        self.done = threading.Event()
        self.result: list = []
        self.error: BaseException | None = None
        self.duration = 0.0  # seconds the call took
        self._call = call
        self._on_abandoned = on_abandoned
        self._abandoned = False
        self._lock = threading.Lock()
        if lane is None:
            threading.Thread(target=self._run, name="background", daemon=True).start()
        else:
            lane.put(self._run)

    def _run(self) -> None:
        started = time.monotonic()
        try:
            result, error = self._call(), None
        except Exception as exception:  # noqa: BLE001 - handed to the main thread
            result, error = [], exception
        with self._lock:
            self.result, self.error, self.duration = result, error, time.monotonic() - started
            self.done.set()
            abandoned = self._abandoned
        if abandoned and result:
            self._on_abandoned(result)

    def abandon(self) -> None:
        """Nobody will handle the result: give it to on_abandoned now, or when the call returns."""
        with self._lock:
            self._abandoned = True
            result, self.result = (self.result, []) if self.done.is_set() else ([], [])
        if result:
            self._on_abandoned(result)


class Keepalive:
    """One thread for the worker's life that extends the visibility of the batch in hand while its handling runs long.

    A batch is extended once half the visibility timeout has passed since it
    was received or last extended; the thread looks four times a timeout.
    """

    def __init__(self, queue: Queue, visibility_timeout: int, *, clock: Callable[[], float] = time.monotonic):
        self.queue, self.visibility_timeout, self.clock = queue, visibility_timeout, clock
        self._lock = threading.Lock()
        self._in_hand: Sequence[Message] = ()
        self._due = 0.0
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def watch(self, messages: Sequence[Message]) -> Iterator[None]:
        """Keep `messages` hidden for as long as the block runs."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="keepalive", daemon=True)
            self._thread.start()
        with self._lock:
            self._in_hand, self._due = messages, self.clock() + self.visibility_timeout / 2
        try:
            yield
        finally:
            with self._lock:
                self._in_hand = ()

    def _run(self) -> None:
        while True:
            time.sleep(self.visibility_timeout / 4)
            with self._lock:
                in_hand, due = self._in_hand, self._due
            if not in_hand or self.clock() < due:
                continue
            for message in in_hand:
                with self._lock:
                    if self._in_hand is not in_hand:
                        break  # the batch is finished: its messages may be deleted already
                try:
                    self.queue.extend(message, self.visibility_timeout)
                    log.info("message %s: handling runs long, visibility extended", message.id)
                except QueueUnavailable as error:
                    log.warning("message %s: visibility not extended: %s", message.id, error)
            with self._lock:
                if self._in_hand is in_hand:
                    self._due = self.clock() + self.visibility_timeout / 2


class Worker:
    def __init__(
        self,
        settings: Settings,
        database: peewee.Database,
        enrolments: Queue,
        invalid: Queue,
        *,
        shutdown: Shutdown | None = None,
        rng: Callable[[], float] = random.random,
    ):
        self.settings = settings
        self.database = database
        self.enrolments = enrolments
        self.invalid = invalid
        self.shutdown = shutdown or Shutdown()
        self.rng = rng
        self.failures = 0  # consecutive; sets the backoff
        self.keepalive = Keepalive(enrolments, settings.sqs_visibility_timeout)
        # The delete of the last batch, in flight while the next batch is saved.
        self.deleting: Background | None = None
        # The save lane's connection, for a stop to cancel the statement it runs.
        self.saving_connection = None

    @functools.cached_property
    def receive_lane(self) -> Lane:
        return Lane("receive")

    @functools.cached_property
    def delete_lane(self) -> Lane:
        return Lane("delete")

    @functools.cached_property
    def save_lane(self) -> Lane:
        """Saves run here, not on the main thread, which must stay free to see a stop and cancel a hung statement."""
        return Lane("save")

    @property
    def stopping(self) -> bool:
        return self.shutdown.requested

    def run(self, *, once: bool = False) -> None:
        """Work until a signal (or, with once, until the queue is empty)."""
        if not self.wait_for_database() or not self.open_queues():
            return
        wait_seconds = ONCE_WAIT if once else self.settings.sqs_wait_time
        pending: Background | None = None
        idle = poll_intervals()  # pauses between empty receives, afresh once messages come
        try:
            while not self.stopping:
                pending = pending or self.start_receive(wait_seconds)
                if not self.wait_for(pending.done):
                    break
                messages, error, took, pending = pending.result, pending.error, pending.duration, None
                if error is not None:
                    self.failed(error, "receive", [])
                    self.sleep(backoff(self.failures, self.rng))
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
                if not self.handle(messages, delete_in_background=True):
                    if pending:
                        pending.abandon()
                        pending = None
                    if self.sleep(backoff(self.failures, self.rng)):
                        self.wait_for_database()
        finally:
            self.stop(pending)

    def wait_for_database(self) -> bool:
        """Return once the database answers with the current schema (False when told to stop first)."""
        log.debug("worker: waiting for the database")
        for attempt in itertools.count(1):
            check = Background(self.check_database)
            if not self.wait_for(check.done):
                return False  # told to stop while a connection attempt hung
            if check.error is None:
                return True
            if not isinstance(check.error, db.DATABASE_ERRORS):
                raise check.error  # SchemaError: the user must run migrate
            delay = backoff(attempt, self.rng)
            log.warning("database unreachable (%s); trying again in %.1f s", first_line(check.error), delay)
            if not self.sleep(delay):
                return False
        raise AssertionError("unreachable")

    def check_database(self) -> list:
        """Connect, check the schema and that a batch could be written; run in a background thread, whose connection it closes.

        A database that answers but cannot take a write (locked, read-only,
        out of space) is waited for too: receiving meanwhile would only turn
        good messages into poison.
        """
        try:
            migrations.ensure_current(self.database, auto_migrate=self.settings.debug)
            problem = db.write_problem(self.database)
            if problem:
                raise peewee.OperationalError(f"it cannot be written: {problem}")
        finally:
            drop_connection(self.database)
        return []

    def open_queues(self) -> bool:
        """Return once both queues exist, creating them when missing (False when told to stop first)."""
        log.debug("worker: opening the queues")
        for attempt in itertools.count(1):
            opening = Background(lambda: [self.enrolments.ensure_exists(), self.invalid.ensure_exists()])
            if not self.wait_for(opening.done):
                return False  # told to stop while a connection attempt hung
            if opening.error is None:
                return True
            if not isinstance(opening.error, QueueUnavailable):
                raise opening.error
            delay = backoff(attempt, self.rng)
            log.warning("%s; trying again in %.1f s", opening.error, delay)
            if not self.sleep(delay):
                return False
        raise AssertionError("unreachable")

    def start_receive(self, wait_seconds: float) -> Background:
        max_messages = self.settings.sqs_max_messages
        log.debug("worker: receiving up to %d messages, waiting up to %s s", max_messages, wait_seconds)
        return Background(lambda: self.enrolments.receive(max_messages, wait_seconds), self.release, lane=self.receive_lane)

    def handle(self, messages: Sequence[Message], *, delete_in_background: bool = False) -> bool:
        """Save, set aside and delete one batch; False when a transient failure left messages on the queue.

        With delete_in_background, the delete runs while the caller receives
        and saves the next batch; it counts at the next handle, or at the stop.
        """
        verdicts = {message.id: read(message, self.settings.sqs_max_receive_count) for message in messages}
        with self.keepalive.watch(messages):
            try:
                outcomes = self.save(verdicts)
            except SaveCancelled:
                log.warning("messages %s: stopped while saving; the transaction was rolled back and they are "
                            "handed back", ids(messages))
                Background(lambda: [self.release(messages)]).done.wait(RELEASE_GRACE)
                return False
            except TRANSIENT as error:
                self.failed(error, "save", messages)
                return False
            except Exception:  # noqa: BLE001 - a bug must not lose the batch or stop the worker
                log.exception("messages %s: not saved; they stay on the queue", ids(messages))
                self.failures += 1
                return False
            log_outcomes(messages, outcomes)
            kept = self.set_aside([m for m in messages if isinstance(outcomes[m.id], Invalid)], outcomes)
        handled = [m for m in messages if m not in kept]
        last_deleted = self.finish_deleting()
        if delete_in_background:
            self.deleting = Background(lambda: [self.delete(handled)], lane=self.delete_lane)
            deleted = True
        else:
            deleted = self.delete(handled)
        if kept or not deleted or not last_deleted:
            return False
        self.failures = 0
        return True

    def save(self, verdicts: dict) -> dict:
        """saving.save_batch on the save lane; at a stop it gets SAVE_GRACE to finish, then its statement is cancelled.

        Raises SaveCancelled then (nothing of the batch was written), and
        passes on what save_batch raised.
        """

        def call() -> list:
            # Kept so the main thread can cancel what runs on it; the lane keeps one connection for good.
            self.saving_connection = self.database.connection()
            try:
                return [saving.save_batch(verdicts)]
            except TRANSIENT:
                drop_connection(self.database)
                raise

        saving_call = Background(call, lane=self.save_lane)
        try:
            finished = self.wait_for(saving_call.done) or saving_call.done.wait(SAVE_GRACE)
        except StopNow:
            self.cancel_statement()
            raise
        if not finished:
            self.cancel_statement()
            saving_call.done.wait(CANCEL_GRACE)
            raise SaveCancelled()
        if saving_call.error is not None:
            raise saving_call.error
        return saving_call.result[0]

    def cancel_statement(self) -> None:
        """Cancel the statement of the batch being saved (from a thread of its own: a cancel may block)."""
        connection = self.saving_connection
        if connection is not None:
            log.info("stopping: cancelling the statement saving the batch in hand")
            threading.Thread(target=db.cancel, args=(self.database, connection), name="cancel", daemon=True).start()

    def finish_deleting(self, timeout: float | None = None) -> bool:
        """Wait for the delete in flight, if any; False when it failed or did not end in time."""
        deleting, self.deleting = self.deleting, None
        if deleting is None:
            return True
        return deleting.done.wait(timeout) and deleting.result == [True]

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
                self.failed(error, "set aside", [message])
                kept.append(message)
        return kept

    def delete(self, messages: Sequence[Message]) -> bool:
        """Delete handled messages; a failed one comes back and is then found saved (or rejected) before."""
        try:
            for message in self.enrolments.delete(messages):
                log.warning("message %s: handled but not deleted; it will come back and be deleted then", message.id)
        except QueueUnavailable as error:
            self.failed(error, "delete", messages)
            return False
        return True

    def release(self, messages: Sequence[Message]) -> None:
        """Hand messages never started back to the queue at once."""
        try:
            self.enrolments.release(messages)
            log.info("messages %s: handed back unhandled", ids(messages))
        except QueueUnavailable as error:
            log.warning("messages %s: not handed back (%s); they return after the visibility timeout",
                        ids(messages), error)

    def failed(self, error: BaseException, action: str, messages: Sequence[Message]) -> None:
        self.failures += 1
        which = f"messages {ids(messages)}: " if messages else ""
        log.warning("%s%s failed, left on the queue: %s", which, action, first_line(error))

    def stop(self, pending: Background | None) -> None:
        log.debug("worker: stopping")
        # The delete in flight and the receive cut short share one grace: they run at the same time.
        deadline = time.monotonic() + RELEASE_GRACE
        if pending is not None:
            self.enrolments.interrupt()
        self.finish_deleting(RELEASE_GRACE)  # one not done by then comes back and is found saved
        if pending is None:
            return
        pending.done.wait(max(0.0, deadline - time.monotonic()))
        pending.abandon()

    def sleep(self, seconds: float) -> bool:
        """Wait `seconds` (none when not positive), or less when told to stop; False when told to stop."""
        if seconds > 0:
            self.wait_for(threading.Event(), seconds)
        return not self.stopping

    def wait_for(self, event: threading.Event, timeout: float | None = None) -> bool:
        """Wait for `event` in ticks, so a signal is seen at once; True when it was set."""
        waited = 0.0
        while not self.stopping:
            if event.wait(TICK):
                return True
            waited += TICK
            if timeout is not None and waited >= timeout:
                return False
        return False


def ids(messages: Sequence[Message]) -> str:
    return ", ".join(message.id for message in messages)


def log_outcomes(messages: Sequence[Message], outcomes) -> None:
    """One INFO line a batch (a line a message would cost more than saving it); each message at DEBUG."""
    kinds = [type(outcomes[message.id]) for message in messages]
    log.info("batch of %d: %d saved, %d saved before, %d set aside", len(messages),
             kinds.count(Created), kinds.count(Duplicate), kinds.count(Invalid))
    for message in messages:
        outcome = outcomes[message.id]
        if isinstance(outcome, Created):
            log.debug("message %s: saved as enrolment %d", message.id, outcome.enrolment_id)
        elif isinstance(outcome, Duplicate):
            log.debug("message %s: saved before; deleted", message.id)
        else:
            log.info("message %s: cannot be saved, set aside: %s", message.id, json.dumps(outcome.errors))


def work(settings: Settings, *, once: bool = False) -> None:
    """The `work` command: run a worker until SIGTERM/SIGINT (or, with once, until the queue is empty)."""
    shutdown = Shutdown()
    shutdown.install()  # first, so a signal during start-up is a clean stop too
    database = db.bind(settings.database_url)
    worker = Worker(
        settings,
        database,
        open_queue(settings, settings.enrolment_queue),
        open_queue(settings, settings.invalid_queue),
        shutdown=shutdown,
    )
    try:
        worker.run(once=once)
    except StopNow:
        log.info("stopped now; messages in hand come back after SQS_VISIBILITY_TIMEOUT")
    finally:
        drop_connection(database)
