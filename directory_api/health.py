"""GET /healthcheck/'s answer: can the database be written, does the queue answer.

Load balancers call it often, and a flood of it must not load the database:
the answer is kept for CACHE_SECONDS, one probe runs at a time (threads
arriving meanwhile get the last answer), and the database probe runs on one
connection kept for the life of the process, with its own short timeouts.

The queue probe runs on a thread of its own and is waited for at most
PROBE_TIMEOUT: an SQS endpoint that takes connections but never answers would
otherwise hold the answer for the client's read timeout (30 s, twice), past
any load balancer's patience. While a probe hangs, no second one is started.
"""

import logging
import threading
import time
from collections.abc import Callable

import peewee

from directory_api import db
from directory_api.errors import first_line
from directory_api.queues import Queue
from directory_api.queues.sqs_reasons import why_unusable
from directory_api.threads import Background, Lane

log = logging.getLogger(__name__)

OK, UNAVAILABLE, NOT_WRITABLE = "ok", "unavailable", "not writable"
CACHE_SECONDS = 1.0
# Each database call of a probe: a health check answers in seconds or says the database does not.
PROBE_TIMEOUT = 2.0
# How long serve waits at start to say why the queue cannot be used; it starts anyway (SPEC: created when it answers).
START_PROBE_SECONDS = 5.0


class Health:
    """The parts' states, probed at most once a `cache_seconds`; safe to call from every request thread."""

    def __init__(
        self,
        database: peewee.Database | None,
        queue: Queue,
        *,
        cache_seconds: float = CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._database = database
        self._queue = queue
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._probe_database: peewee.Database | None = None  # made at the first probe, then kept
        self._queue_lane: Lane | None = None  # the queue probe's own thread, made at the first probe
        self._queue_probe: Background | None = None  # the last queue probe, perhaps still waiting for its answer
        self._probing = threading.Lock()
        self._answer: dict[str, str] | None = None
        self._expires = 0.0

    def parts(self) -> dict[str, str]:
        """{"database": state, "queue": state}, each "ok" or what is wrong."""
        answer = self._answer
        if answer is not None and self._clock() < self._expires:
            return answer
        # Only the first caller waits for a probe in flight; later ones take the last answer.
        if answer is None:
            self._probing.acquire()
        elif not self._probing.acquire(blocking=False):
            return answer
        try:
            if self._answer is not None and self._clock() < self._expires:
                return self._answer
            answer = {"database": self._database_state(), "queue": self._queue_state()}
            self._answer, self._expires = answer, self._clock() + self._cache_seconds
            return answer
        finally:
            self._probing.release()

    def _database_state(self) -> str:
        if self._database is None:
            return UNAVAILABLE
        if self._probe_database is None:
            self._probe_database = db.one_connection(self._database, timeout=PROBE_TIMEOUT)
        database = self._probe_database
        try:
            problem = _probe(database, kept=not database.is_closed())
        except db.DATABASE_ERRORS as error:
            log.warning("healthcheck: the database does not answer: %s", first_line(error))
            db.drop_connection(database)
            return UNAVAILABLE
        if problem:
            log.warning("healthcheck: the database cannot be written: %s", problem)
            return NOT_WRITABLE
        return OK

    def _queue_state(self) -> str:
        problem = self._queue_problem()
        if problem:
            log.warning("healthcheck: the queue %s cannot be used: %s", self._queue.name, problem)
            return UNAVAILABLE
        return OK

    def _queue_problem(self) -> str | None:
        if self._queue_probe is not None and not self._queue_probe.done.is_set():
            return f"no answer yet to the probe begun at least {PROBE_TIMEOUT:g} s ago"
        if self._queue_lane is None:
            self._queue_lane = Lane("healthcheck queue probe")
        self._queue_probe = Background(self._queue.ensure_exists, lane=self._queue_lane)
        return problem_of(self._queue_probe, self._queue.name, PROBE_TIMEOUT)


def warn_if_queue_unusable(queue: Queue, timeout: float = START_PROBE_SECONDS) -> bool:
    """At start: a WARNING saying why the queue cannot be used (False), waiting at most `timeout` for it to answer."""
    problem = problem_of(Background(queue.ensure_exists), queue.name, timeout)
    if problem:
        log.warning(
            "the enrolment queue %s cannot be used: %s; /healthcheck/ and every enrolment answer 503 until it can "
            "(a missing queue is created once the endpoint answers)", queue.name, problem,
        )
    return problem is None


def problem_of(probe: Background, queue_name: str, timeout: float) -> str | None:
    """Why the probed queue cannot be used (None: it can), waiting at most `timeout` for the probe's answer."""
    if not probe.done.wait(timeout):
        return f"no answer within {timeout:g} s"
    try:
        probe.returned()
    except Exception as error:  # QueueUnavailable, or whatever else keeps the queue from answering
        return why_unusable(error, queue_name)
    return None


def _probe(database: peewee.Database, *, kept: bool) -> str | None:
    """What keeps a write out (None: nothing), on the kept connection or a new one; raises when none answers."""
    try:
        database.connect(reuse_if_open=True)
        return db.write_problem(database)
    except db.DATABASE_ERRORS:
        if not kept:
            raise
        # The server may have dropped the kept connection since (a restart, an idle timeout): once more, fresh.
        db.drop_connection(database)
        return _probe(database, kept=False)
