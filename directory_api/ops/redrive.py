"""`redrive`: set-aside messages moved from the invalid queue back to the enrolment queue."""

import contextlib
import dataclasses
import datetime
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping

from directory_api import models
from directory_api.db import DATABASE_ERRORS
from directory_api.errors import first_line
from directory_api.models import Rejection, utcnow
from directory_api.ops import Unanswered
from directory_api.queues import (
    ORIGINAL_MESSAGE_ID,
    Message,
    MessageRefused,
    Queue,
    QueueUnavailable,
    open_pipeline,
    original_id,
)
from directory_api.saving import rejection_fields

log = logging.getLogger(__name__)

# Long-polled receives of the invalid queue: a short poll samples only some SQS servers and may miss messages.
REDRIVE_WAIT_SECONDS = 1


# redrive's `mark`: given a message's original id, what to do around its send to the enrolment queue.
Marker = Callable[[str], contextlib.AbstractContextManager[None]]


def redrive_wait(settings) -> float:
    """How long a receive of the invalid queue waits: the database queue answers exactly at once, SQS may not."""
    return 0 if settings.queue_backend == "database" else REDRIVE_WAIT_SECONDS


@dataclasses.dataclass
class Redriven:
    moved: list[str] = dataclasses.field(default_factory=list)  # original ids, one a message moved (or listed)
    missing: list[str] = dataclasses.field(default_factory=list)  # ids asked for and not on the invalid queue
    # original id -> why the enrolment queue refused it
    refused: dict[str, str] = dataclasses.field(default_factory=dict)


def redrive(
    invalid: Queue,
    enrolments: Queue,
    ids: Iterable[str] | None,
    *,
    dry_run: bool = False,
    on_message: Callable[[Message], None] = lambda message: None,
    mark: Marker = lambda original: contextlib.nullcontext(),
    wait_seconds: float = REDRIVE_WAIT_SECONDS,
) -> Redriven:
    """Move set-aside messages back to the enrolment queue: those whose original id is in `ids`, or all (None).

    Each message is sent to the enrolment queue before it is deleted from the
    invalid queue, so a crash at any moment leaves it on one or both, never
    neither; a copy on both is saved once (the worker saves under the original
    id). The send runs inside `mark(original id)`, which records the re-drive
    (mark_redriven, audit.redrive_marker) on both sides of it: a worker may
    set the message aside again before the send even returns. Messages
    received and not moved go back at the end. An original id is moved once
    a run, so a worker setting one aside again during the run does not keep
    it going round.
    """
    wanted = None if ids is None else set(ids)
    result = Redriven()
    held: list[Message] = []
    seen: set[str] = set()
    try:
        while wanted is None or not wanted <= seen:
            batch = invalid.receive(10, wait_seconds)
            if not batch:
                break
            for message in batch:
                original = original_id(message)
                if (wanted is not None and original not in wanted) or original in seen:
                    held.append(message)
                    continue
                seen.add(original)
                if dry_run:
                    held.append(message)
                else:
                    try:
                        _move(message, invalid, enrolments, mark)
                    except MessageRefused as error:
                        held.append(message)  # stays set aside; the others still go
                        result.refused[original] = first_line(error)
                        continue
                result.moved.append(original)
                on_message(message)
    finally:
        if held:
            invalid.release(held)
    if wanted is not None:
        result.missing = sorted(wanted - seen)
    return result


def _move(message: Message, invalid: Queue, enrolments: Queue, mark: Marker) -> None:
    original = original_id(message)
    with mark(original):
        # Body unchanged; the reasons stay behind (a message set aside again gets fresh ones).
        enrolments.send(message.body, {ORIGINAL_MESSAGE_ID: original})
    for left in invalid.delete([message]):
        # Now on both queues: the worker saves it once; the next redrive moves this copy too.
        log.warning("message %s: re-driven but not deleted from the invalid queue %s", left.id, invalid.name)


@contextlib.contextmanager
def mark_redriven(original: str) -> Iterator[None]:
    """redrive's `mark`: the message's rejection as it is before the send is marked re-driven after it.

    A worker that sets the message aside again meanwhile replaces the rejection
    with a new one, which stays waiting for a re-drive. A send that raises
    marks nothing; a database that does not answer only logs.
    """
    before = _rejection_now(original)
    yield
    if before is None:
        return
    row_id, created = before
    try:
        with models.database.connection_context():
            # The time as well as the id: SQLite gives the id of a deleted last row to the next one inserted.
            Rejection.update(redriven=utcnow()).where(
                (Rejection.id == row_id) & (Rejection.created == created)).execute()
    except DATABASE_ERRORS as error:
        log.warning("message %s: re-driven, but not marked so in the database: %s", original, first_line(error))


def _rejection_now(original: str) -> tuple[int, datetime.datetime] | None:
    """The id and time of a message's rejection; None when it has none or the database does not answer (logged)."""
    try:
        with models.database.connection_context():
            return (Rejection.select(Rejection.id, Rejection.created)
                    .where(Rejection.message_id == original).tuples().first())
    except DATABASE_ERRORS as error:
        log.warning("message %s: its rejection cannot be read, so a re-drive is not marked in the database: %s",
                    original, first_line(error))
        return None


def whose(body: str) -> str:
    """ " (company number, name, e-mail)" as far as a message's body holds them, so an operator can tell whose."""
    fields = rejection_fields(body)
    held = [fields[key] for key in ("company_number", "company_name", "company_email") if fields[key]]
    return f" ({', '.join(held)})" if held else ""


def errors_of(message: Message) -> Mapping:
    """The reasons a set-aside message carries (an empty mapping when they cannot be read)."""
    try:
        errors = json.loads(message.attributes.get("errors", "{}"))
    except ValueError:
        return {}
    return errors if isinstance(errors, dict) else {}




def redrive_command(settings, ids: list[str], *, dry_run: bool, out: Callable[[str], None],
                    err: Callable[[str], None]) -> bool:
    """Run `redrive` (ids, or all when empty); True when every id asked for was found and moved."""
    enrolments, invalid = open_pipeline(settings)

    def show(message: Message) -> None:
        reasons = json.dumps(errors_of(message), ensure_ascii=False)
        out(f"{'would move' if dry_run else 'moved'} {original_id(message)}{whose(message.body)} {reasons}")

    from directory_api.ops.audit import command_source, redrive_marker  # audit builds on this module

    try:
        result = redrive(invalid, enrolments, ids or None, dry_run=dry_run, on_message=show,
                         mark=redrive_marker(command_source("redrive")), wait_seconds=redrive_wait(settings))
    except QueueUnavailable as error:
        raise Unanswered(f"{error} (nothing after the last line above was moved)") from None
    finally:
        models.database.close()
    count = len(result.moved)
    out(f"{count} message{'' if count == 1 else 's'} {'would be moved (dry run)' if dry_run else 'moved'}")
    for missing in result.missing:
        err(f"{missing}: not on the invalid queue {settings.invalid_queue} (or in flight there now)")
    for refused, why in result.refused.items():
        err(f"{refused}: the enrolment queue refuses it ({why}); it stays on the invalid queue")
    return not result.missing and not result.refused
