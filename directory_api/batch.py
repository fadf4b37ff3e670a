"""The pure per-batch functions of the worker: decode each message, key it for saving, tally what became of it.

No I/O here: worker.py receives, saves, sets aside and deletes; these only
decide and describe, so each is tested without a queue or a database.
"""

import json
from collections.abc import Mapping, Sequence

from directory_api import enrolment, logs, saving
from directory_api.enrolment import NON_FIELD_ERRORS
from directory_api.queues import ORIGINAL_MESSAGE_ID, Message, message_size, original_id
from directory_api.saving import Created, Duplicate, Invalid

RECEIVED_TOO_OFTEN = "Received {count} times without being saved (SQS_MAX_RECEIVE_COUNT is {limit})."
# Opens the reasons a set-aside message carries when all of them would not fit the invalid queue's size limit.
TRIMMED = "Reasons trimmed to fit the invalid queue's message size limit; all are recorded (GET /enrolment/<id>/): "


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


def outcomes_by_message(messages: Sequence[Message], outcomes: Mapping) -> dict[str, saving.Outcome]:
    """Each message's outcome by its own id: the first of an original id gets it, the others are Duplicate."""
    by_message: dict[str, saving.Outcome] = {}
    seen: set[str] = set()
    for message in messages:
        key = original_id(message)
        by_message[message.id] = Duplicate() if key in seen else outcomes[key]
        seen.add(key)
    return by_message


def rejected(messages: Sequence[Message], outcomes: Mapping[str, saving.Outcome]) -> list[Message]:
    """The messages of a batch that can never be saved: they go to the invalid queue."""
    return [message for message in messages if isinstance(outcomes[message.id], Invalid)]


def tally(outcomes: Mapping[str, saving.Outcome]) -> dict[str, int]:
    """How many of a batch were saved, found saved before, and set aside."""
    kinds = [type(outcome) for outcome in outcomes.values()]
    return {"saved": kinds.count(Created), "duplicate": kinds.count(Duplicate), "set_aside": kinds.count(Invalid)}


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


def request_id_of(message: Message) -> str | None:
    """The id of the request that queued `message`, when it carries a safe one (anyone may send to a queue)."""
    return logs.safe_request_id(message.attributes.get(logs.REQUEST_ID_ATTRIBUTE))


def about(message: Message) -> tuple[str, dict]:
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


def ids(messages: Sequence[Message]) -> str:
    return ", ".join(message.id for message in messages)
