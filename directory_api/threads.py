"""The threads behind the worker: stops, failure counts, lanes, calls in the background, keep-alives, a service beside.

The worker's main thread never blocks on the queue or the database: each
blocking call runs here, off it, and the main thread waits in ticks, looking
at the stop flag between them, so a signal is acted on within one tick. A
thread of its own (the e-mail sender) pauses on a Stop, which ends its pause
at once, and counts its failures for the backoff with Failures.
"""

import contextlib
import itertools
import logging
import queue
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Generic, TypeVar, cast

from directory_api import db
from directory_api.backoff import backoff
from directory_api.queues import Message, Queue, QueueUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

TICK = 0.1  # how often a waiting main thread looks at the stop flag


class StopNow(BaseException):
    """A second signal: stop without finishing the batch in hand (it comes back after the visibility timeout)."""


class Shutdown:
    """SIGTERM/SIGINT: the first asks to stop after the batch in hand, a second stops now; and waits a stop ends."""

    def __init__(self) -> None:
        self.requested = False
        self._on_request: list[Callable[[], None]] = []
        self._told = False

    def install(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self.on_signal)

    def on_signal(self, signum, frame) -> None:
        # Only a flag (rq does the same): the main thread acts on it at its next tick.
        if self.requested:
            raise StopNow()
        log.info("%s: stopping after the batch in hand (signal again to stop now)", signal.Signals(signum).name)
        self.request()

    def request(self) -> None:
        """Ask to stop, as the first signal does; every wait below sees it within a tick."""
        # A flag and nothing more: this runs inside a signal handler, where taking a lock could deadlock.
        self.requested = True

    def when_requested(self, callback: Callable[[], None]) -> None:
        """Call `callback` once, on the waiting thread, at the first wait that sees the stop (never in the handler)."""
        self._on_request.append(callback)

    def seen(self) -> bool:
        """Whether a stop was asked for; the first time it is, the when_requested callbacks run."""
        if self.requested and not self._told:
            self._told = True
            for callback in self._on_request:
                callback()
        return self.requested

    def wait_for(self, event: threading.Event, timeout: float | None = None) -> bool:
        """Wait for `event` in ticks, so a stop is seen at once; True when it was set."""
        waited = 0.0
        while not self.seen():
            if event.wait(TICK):
                return True
            waited += TICK
            if timeout is not None and waited >= timeout:
                return False
        return False

    def sleep(self, seconds: float) -> bool:
        """Wait `seconds` (none when not positive), or less when told to stop; False when told to stop."""
        if seconds > 0:
            self.wait_for(threading.Event(), seconds)
        return not self.seen()


class Stop:
    """A stop one thread asks of another that pauses on it: the pause ends at once (no ticks: no signal handler here).

    wake() ends the pause in progress, or the next one, without stopping.
    """

    def __init__(self) -> None:
        self.requested = False
        self._wake = threading.Event()

    def request(self) -> None:
        self.requested = True
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    def sleep(self, seconds: float) -> bool:
        """Pause `seconds`, less when woken or told to stop; False when told to stop."""
        if seconds > 0 and not self.requested and self._wake.wait(seconds):
            self._wake.clear()
        return not self.requested


class Failures:
    """Consecutive failures of one thread's work, and the pause they call for: doubling, capped, jittered (backoff)."""

    def __init__(self, *, first: float = 0.5, longest: float = 30.0, rng: Callable[[], float] | None = None):
        self.first, self.longest, self.rng = first, longest, rng or random.random
        self.count = 0

    def failed(self) -> float:
        """Count one more failure; the seconds to pause before the next try."""
        self.count += 1
        return self.pause()

    def pause(self) -> float:
        """Seconds to pause after the failures counted so far (as after one, when none are)."""
        return self.delay(max(1, self.count))

    def delay(self, attempt: int) -> float:
        """Seconds to wait before try `attempt` + 1 of something tried `attempt` times."""
        return backoff(attempt, self.rng, first=self.first, longest=self.longest)

    def reset(self) -> None:
        self.count = 0


class Lane:
    """A daemon thread that runs the calls put to it one after another, for the worker's life.

    Receives, saves and deletes each run on a lane of their own, so each
    keeps one database connection rather than opening one a batch.
    """

    def __init__(self, name: str):
        self._calls: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._serve, name=name, daemon=True).start()

    def put(self, call: Callable[[], None]) -> None:
        self._calls.put(call)

    def _serve(self) -> None:
        while True:
            self._calls.get()()


class Background(Generic[T]):
    """A blocking call (a receive, a save, a delete, a connection attempt) off the main thread, which can stop waiting.

    The call runs on `lane` when one is given, else in a daemon thread of its
    own. Once done, `result` holds what it returned, or `error` what it raised.
    """

    def __init__(
        self,
        call: Callable[[], T],
        on_abandoned: Callable[[T], None] | None = None,
        *,
        lane: Lane | None = None,
    ):
        self.done = threading.Event()
        self.result: T | None = None
        self.error: Exception | None = None
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
        result: T | None = None
        error: Exception | None = None
        try:
            result = self._call()
        except Exception as exception:  # handed to the main thread
            error = exception
        with self._lock:
            self.result, self.error, self.duration = result, error, time.monotonic() - started
            self.done.set()
            abandoned = self._abandoned
        if abandoned:
            self._hand_over(result, error)

    def returned(self) -> T:
        """What the call returned, once done; raises what it raised."""
        if self.error is not None:
            raise self.error
        return cast(T, self.result)

    def abandon(self) -> None:
        """Nobody will read the result: give it to on_abandoned now, or when the call returns."""
        with self._lock:
            self._abandoned = True
            done, result, error = self.done.is_set(), self.result, self.error
        if done:
            self._hand_over(result, error)

    def _hand_over(self, result: T | None, error: Exception | None) -> None:
        if self._on_abandoned is not None and error is None:
            self._on_abandoned(cast(T, result))


def retry_until_done(
    call: Callable[[], object],
    *,
    retry_on: tuple[type[Exception], ...],
    shutdown: Shutdown,
    delay: Callable[[int], float],
    on_retry: Callable[[Exception, float], None],
) -> bool:
    """Run `call` in the background until it raises nothing; True then, False when told to stop first.

    After a failure in `retry_on` it waits `delay(attempt)` seconds (told
    through `on_retry`) and tries again; any other error is raised.
    """
    for attempt in itertools.count(1):
        trying: Background[object] = Background(call)
        if not shutdown.wait_for(trying.done):
            return False  # told to stop while the call hung
        if trying.error is None:
            return True
        if not isinstance(trying.error, retry_on):
            raise trying.error
        seconds = delay(attempt)
        on_retry(trying.error, seconds)
        if not shutdown.sleep(seconds):
            return False
    raise AssertionError("unreachable")


class StatementLane(Lane):
    """A lane whose calls use the database, and whose running statement a stop may cancel from another thread."""

    def __init__(self, name: str, database: db.Handle):
        super().__init__(name)
        self.database = database
        self._connection = None  # the lane's connection, kept so cancel() can reach it

    def run(self, call: Callable[[], T]) -> Background[T]:
        """`call` on the lane; its connection is dropped after a database error, so the next call opens a fresh one."""

        def on_lane() -> T:
            self._connection = self.database.connection()
            try:
                return call()
            except db.DATABASE_ERRORS:
                db.drop_connection(self.database)
                raise
            finally:
                self._connection = None  # nothing to cancel; and the lane must not keep the connection alive

        return Background(on_lane, lane=self)

    def cancel(self) -> None:
        """Cancel the statement running on the lane, if any (from a thread of its own: a cancel may block)."""
        connection = self._connection
        if connection is not None:
            threading.Thread(target=db.cancel, args=(self.database, connection), name="cancel", daemon=True).start()


class Keepalive:
    """One thread for the worker's life that extends the visibility of the batch in hand while its handling runs long.

    A batch is extended once half the visibility timeout has passed since it
    was received or last extended; the thread looks four times a timeout.
    """

    def __init__(self, queue: Queue, visibility_timeout: int, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.queue, self.visibility_timeout, self.clock, self.sleep = queue, visibility_timeout, clock, sleep
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
            self.sleep(self.visibility_timeout / 4)
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


@contextlib.contextmanager
def beside(shutdown: Shutdown, service, grace: float) -> Iterator[Callable[[], None]]:
    """Run `service` (start, stop, join) on its thread for the block, from when the block calls what it is given.

    A stop asked of `shutdown` stops it at once; at the end of the block,
    however it ends, it is stopped and given `grace` seconds to finish (a
    daemon thread still busy then ends with the process).
    """
    started = False

    def start() -> None:
        nonlocal started
        if not started:
            started = True
            service.start()

    shutdown.when_requested(service.stop)
    try:
        yield start
    finally:
        if started:
            service.stop()
            service.join(grace)
