"""Saving received enrolments: idempotent on the queue message id, one transaction per batch.

Queues deliver at least once, so the enrolment row is inserted with
ON CONFLICT (sqs_message_id) DO NOTHING: a message saved before inserts
nothing, and then no company or supplier either. A batch of valid messages,
the usual case, goes in with one multi-row INSERT per table and nothing
else. When that meets a company or supplier already registered, or the batch
holds a message that can never be saved, the careful path takes over: each
message is checked against the database first, so one that cannot be saved
never sinks the others, and when another worker got in first the rest go in
one by one, each under its own savepoint. A message that can never be saved
is recorded as a rejection, or, set aside again after a re-drive, its
rejection gets the fresh reasons. Each new enrolment's confirmation e-mail is
recorded in the same transaction (outbox.py; mail.py sends it later).

A client that retries a POST (after a timeout, say) sends the same payload
in a new message: when a payload meets a registered company and equals the
enrolment saved for it, the message is recorded as that enrolment's retry and
answered with it (Created), writing no new enrolment.
"""

import dataclasses
import datetime
import decimal
import json
from collections.abc import Iterable, Mapping

import peewee

from directory_api import enrolment, outbox
from directory_api.db import is_postgres
from directory_api.models import (
    Audit,
    Company,
    Enrolment,
    EnrolmentRetry,
    Rejection,
    Supplier,
    database,
    enrolment_company_number,
    utcnow,
)

COMPANY_ALREADY_REGISTERED = "A company with this number is already registered."
ALREADY_A_SUPPLIER = "This user is already a supplier."
REDRIVE = "redrive"  # the audit action of a re-drive (ops/audit.py)


@dataclasses.dataclass(frozen=True)
class Created:
    enrolment_id: int


@dataclasses.dataclass(frozen=True)
class Duplicate:
    """The message was saved before: nothing new was written."""


@dataclasses.dataclass(frozen=True)
class Invalid:
    """The message can never be saved; `errors` maps each field to its messages.

    `received` is what the worker could decode of it (the payload, or the body
    as text), kept in its rejection so an operator can tell whose it was.
    """

    errors: Mapping[str, list[str]]
    received: object = dataclasses.field(default=None, compare=False, repr=False)


Outcome = Created | Duplicate | Invalid


def save_batch(entries: Mapping[str, object]) -> dict[str, Outcome]:
    """Save several messages in one transaction: message id -> payload, or an Invalid decided already.

    An Invalid one (not JSON, received too often) is recorded as a rejection
    unless its message was saved before. Database errors propagate: then
    nothing of the batch was written.
    """
    if not entries:
        return {}
    checked = {message_id: _check(entry) for message_id, entry in entries.items()}
    valid = {message_id: entry for message_id, entry in checked.items() if not isinstance(entry, Invalid)}
    if len(valid) == len(checked):
        try:
            if is_postgres(database.obj):
                # One statement, atomic by itself: BEGIN and COMMIT around it would be two more round trips.
                return _insert_all(valid)
            with database.atomic():
                return _insert_all(valid)
        except peewee.IntegrityError:
            pass  # a company or supplier registered already: the careful path finds which
    return _save_carefully(checked)


def _check(entry: object) -> dict | Invalid:
    """The payload when its fields are valid, else an Invalid with their errors."""
    if isinstance(entry, Invalid):
        return entry
    errors = enrolment.validate(entry)
    if not errors and isinstance(entry, dict):  # validate accepts only a JSON object
        return entry
    return Invalid(errors, received=entry)


def _save_carefully(checked: Mapping[str, dict | Invalid]) -> dict[str, Outcome]:
    """Look up what is registered and saved already, then insert what can be and record the rejections."""
    with database.atomic():
        # Registrations first, saved ids second: a message another worker saves
        # between the two queries is then found saved, never "already registered".
        registered = Registered.lookup(entry for entry in checked.values() if not isinstance(entry, Invalid))
        saved_before = _saved_message_ids(checked)
        outcomes: dict[str, Outcome] = {}
        valid: dict[str, dict] = {}
        conflicting: dict[str, tuple[dict, dict]] = {}
        for message_id, entry in checked.items():
            if message_id in saved_before:
                outcomes[message_id] = Duplicate()
            elif isinstance(entry, Invalid):
                outcomes[message_id] = entry
            elif errors := registered.conflicts(entry):
                conflicting[message_id] = (entry, errors)  # or a client's retry: known once the batch is in
            else:
                valid[message_id] = entry
                registered.add(entry)  # a later message of the batch for the same company is a conflict
        outcomes.update(_insert(valid))
        outcomes.update(_retries_or_invalid(conflicting))
        _record_rejections({m: o for m, o in outcomes.items() if isinstance(o, Invalid)})
    return {message_id: outcomes[message_id] for message_id in checked}


def _insert(valid: Mapping[str, dict]) -> dict[str, Outcome]:
    """Insert validated payloads: all at once, or one by one when another worker got in first."""
    if not valid:
        return {}
    try:
        with database.atomic():  # a savepoint, so the fallback starts from a clean transaction
            return _insert_all(valid)
    except peewee.IntegrityError:
        # A company or sso id registered by another worker since the lookups.
        return {message_id: _insert_one(message_id, payload) for message_id, payload in valid.items()}


def _insert_all(valid: Mapping[str, dict]) -> dict[str, Outcome]:
    """Insert the whole batch: enrolments, then companies and suppliers for the enrolments that were new."""
    enrolment_ids = _insert_all_postgres(valid) if is_postgres(database.obj) else _insert_all_portable(valid)
    # Not inserted: saved by another worker since the batch began.
    outcomes: dict[str, Outcome] = {m: Duplicate() for m in valid if m not in enrolment_ids}
    outcomes.update({m: Created(enrolment_id) for m, enrolment_id in enrolment_ids.items()})
    return outcomes


# One statement, one round trip, one parameter: building three peewee multi-row
# INSERTs was about a third of the worker's CPU (py-spy), and each was a round
# trip; then binding a dozen parameters a message was most of what was left of
# the worker's own CPU in saving (cProfile: 340 us a batch of ten, against 60
# for one JSON array that PostgreSQL reads into typed rows itself).
POSTGRES_INSERT_ALL = """
WITH input AS (
    SELECT * FROM jsonb_to_recordset(%(rows)s::jsonb) AS input (
        message_id text, data jsonb, number text, name text, export_status text, date_of_creation date,
        revenue numeric, sso_id bigint, company_email text, mobile_number text, referrer text, email_token text)),
enrolments AS (
    INSERT INTO enrolment (created, data, sqs_message_id)
    SELECT %(now)s, data, message_id FROM input
    ON CONFLICT (sqs_message_id) DO NOTHING
    RETURNING id, sqs_message_id),
companies AS (
    INSERT INTO company (number, name, export_status, date_of_creation, revenue, created, modified)
    SELECT number, name, export_status, date_of_creation, revenue, %(now)s, %(now)s
    FROM input JOIN enrolments ON enrolments.sqs_message_id = input.message_id
    RETURNING id, number),
suppliers AS (
    INSERT INTO supplier (sso_id, company_email, mobile_number, referrer, company_id, created, modified)
    SELECT sso_id, company_email, mobile_number, referrer, companies.id, %(now)s, %(now)s
    FROM input JOIN companies ON companies.number = input.number),
emails AS (
    INSERT INTO email (enrolment_id, recipient, company_name, token, state, due_at, attempts, last_error, created)
    SELECT enrolments.id, company_email, name, email_token, %(email_state)s, %(email_due)s, 0, '', %(now)s
    FROM input JOIN enrolments ON enrolments.sqs_message_id = input.message_id)
SELECT id, sqs_message_id FROM enrolments
"""


def _insert_all_postgres(valid: Mapping[str, dict]) -> dict[str, int]:
    """The batch in one data-modifying statement; message id -> enrolment id of those that were new."""
    rows = [_postgres_input_row(message_id, payload) for message_id, payload in valid.items()]
    cursor = database.execute_sql(POSTGRES_INSERT_ALL, {
        "rows": json.dumps(rows, separators=(",", ":"), ensure_ascii=False),
        "now": utcnow(), "email_state": outbox.WAITING, "email_due": outbox.now(),
    })
    return {message_id: enrolment_id for enrolment_id, message_id in cursor.fetchall()}


def _postgres_input_row(message_id: str, payload: Mapping) -> dict:
    """One row of POSTGRES_INSERT_ALL's input: the validated fields as JSON, typed by PostgreSQL as it reads them.

    A date "YYYY-MM-DD" and a revenue "125000.50" go as the strings received,
    which PostgreSQL reads as date and numeric exactly as from the Python values.
    """
    return {
        "message_id": message_id,
        "data": payload,
        "number": payload["company_number"],
        "name": payload["company_name"],
        "export_status": payload["export_status"],
        "date_of_creation": payload["date_of_creation"],
        "revenue": payload.get("revenue"),
        "sso_id": payload["sso_id"],
        "company_email": payload["company_email"],
        "mobile_number": payload.get("mobile_number", ""),
        "referrer": payload.get("referrer", ""),
        "email_token": outbox.new_token(),
    }


def _insert_all_portable(valid: Mapping[str, dict]) -> dict[str, int]:
    """Three multi-row INSERTs (SQLite has no data-modifying WITH); message id -> enrolment id of the new ones."""
    rows = (
        Enrolment.insert_many([{"data": payload, "sqs_message_id": m} for m, payload in valid.items()])
        .on_conflict(conflict_target=[Enrolment.sqs_message_id], action="NOTHING")
        .returning(Enrolment.id, Enrolment.sqs_message_id)
        .execute()
    )
    enrolment_ids = {row.sqs_message_id: row.id for row in rows}
    new = [valid[m] for m in valid if m in enrolment_ids]
    if new:
        companies = (
            Company.insert_many([_company_fields(payload) for payload in new])
            .returning(Company.id, Company.number)
            .execute()
        )
        company_ids = {row.number: row.id for row in companies}
        Supplier.insert_many(
            [{"company": company_ids[p["company_number"]], **_supplier_fields(p)} for p in new]
        ).execute()
        outbox.record({enrolment_ids[m]: valid[m] for m in valid if m in enrolment_ids})
    return enrolment_ids


def _insert_one(message_id: str, payload: dict) -> Outcome:
    try:
        with database.atomic():  # a savepoint: a failure here undoes this message only
            rows = list(
                Enrolment.insert(data=payload, sqs_message_id=message_id)
                .on_conflict(conflict_target=[Enrolment.sqs_message_id], action="NOTHING")
                .returning(Enrolment.id)
                .execute()
            )
            if not rows:
                return Duplicate()
            company_id = Company.insert(**_company_fields(payload)).execute()
            Supplier.insert(company=company_id, **_supplier_fields(payload)).execute()
            outbox.record({rows[0].id: payload})
    except peewee.IntegrityError:
        errors = Registered.lookup([payload]).conflicts(payload)
        if not errors:
            raise
        return _retries_or_invalid({message_id: (payload, errors)})[message_id]
    return Created(rows[0].id)


def _retries_or_invalid(conflicting: Mapping[str, tuple[dict, dict]]) -> dict[str, Outcome]:
    """For payloads meeting a registered company or sso id: Created when one equals the enrolment saved for its
    company (a client's retry, recorded as such), else Invalid with the conflicts."""
    if not conflicting:
        return {}
    saved = _saved_payloads({payload["company_number"] for payload, _ in conflicting.values()})
    outcomes: dict[str, Outcome] = {}
    for message_id, (payload, errors) in conflicting.items():
        enrolment_id = saved.get(canonical_json(payload))
        outcomes[message_id] = Invalid(errors, received=payload) if enrolment_id is None else Created(enrolment_id)
    retries = [{"message_id": m, "enrolment": o.enrolment_id} for m, o in outcomes.items() if isinstance(o, Created)]
    if retries:
        EnrolmentRetry.insert_many(retries).on_conflict(
            conflict_target=[EnrolmentRetry.message_id], action="NOTHING"
        ).execute()
    return outcomes


def canonical_json(value: object) -> str:
    """One spelling of a JSON value, so two payloads compare equal whatever their key order and whitespace."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _saved_payloads(company_numbers: Iterable[str]) -> dict[str, int]:
    """canonical payload -> enrolment id, of the enrolments saved for these companies (by the index on the number)."""
    query = Enrolment.select(Enrolment.id, Enrolment.data).where(enrolment_company_number().in_(list(company_numbers)))
    return {canonical_json(row.data): row.id for row in query}


def _company_fields(payload: Mapping) -> dict:
    revenue = payload.get("revenue")
    return {
        "number": payload["company_number"],
        "name": payload["company_name"],
        "export_status": payload["export_status"],
        "date_of_creation": datetime.date.fromisoformat(payload["date_of_creation"]),
        "revenue": decimal.Decimal(revenue) if revenue is not None else None,
    }


def _supplier_fields(payload: Mapping) -> dict:
    return {
        "sso_id": payload["sso_id"],
        "company_email": payload["company_email"],
        "mobile_number": payload.get("mobile_number", ""),
        "referrer": payload.get("referrer", ""),
    }


def _saved_message_ids(message_ids: Iterable[str]) -> set[str]:
    """The ids saved before: as an enrolment, or as a client's retry of one."""
    message_ids = list(message_ids)
    saved = Enrolment.select(Enrolment.sqs_message_id.alias("message_id")).where(
        Enrolment.sqs_message_id.in_(message_ids)
    )
    retried = EnrolmentRetry.select(EnrolmentRetry.message_id).where(EnrolmentRetry.message_id.in_(message_ids))
    return {row.message_id for row in (saved | retried).objects()}


@dataclasses.dataclass
class Registered:
    """Company numbers and sso ids already in the database, looked up once per batch."""

    company_numbers: set
    sso_ids: set

    @classmethod
    def lookup(cls, payloads: Iterable[object]) -> "Registered":
        objects = [payload for payload in payloads if isinstance(payload, dict)]
        numbers = [p["company_number"] for p in objects if isinstance(p.get("company_number"), str)]
        sso_ids = [p["sso_id"] for p in objects if isinstance(p.get("sso_id"), int)]
        return cls(
            company_numbers={c.number for c in Company.select(Company.number).where(Company.number.in_(numbers))}
            if numbers else set(),
            sso_ids={s.sso_id for s in Supplier.select(Supplier.sso_id).where(Supplier.sso_id.in_(sso_ids))}
            if sso_ids else set(),
        )

    def conflicts(self, payload: Mapping) -> dict[str, list[str]]:
        errors = {}
        if payload["company_number"] in self.company_numbers:
            errors["company_number"] = [COMPANY_ALREADY_REGISTERED]
        if payload["sso_id"] in self.sso_ids:
            errors["sso_id"] = [ALREADY_A_SUPPLIER]
        return errors

    def add(self, payload: Mapping) -> None:
        self.company_numbers.add(payload["company_number"])
        self.sso_ids.add(payload["sso_id"])


def _record_rejections(rejections: Mapping[str, Invalid]) -> None:
    """Record each rejection with what it holds; a re-driven message set aside again replaces its old record.

    Replaced, not updated: the new row, with the fresh time and reasons, then
    sorts with the newest set aside (by id), waiting for a re-drive once more;
    its re-drives' outcomes go to the audit table (its history).
    """
    if not rejections:
        return
    now = utcnow()
    message_ids = list(rejections)
    Rejection.delete().where(Rejection.message_id.in_(message_ids)).execute()
    (
        Rejection.insert_many([
            {"message_id": m, "errors": dict(o.errors), "created": now, **rejection_fields(o.received)}
            for m, o in rejections.items()
        ])
        # Another worker recording the same message meanwhile (a copy on both queues): the later one wins.
        .on_conflict(conflict_target=[Rejection.message_id], update={
            Rejection.errors: peewee.EXCLUDED.errors, Rejection.created: peewee.EXCLUDED.created,
            Rejection.redriven: None})
        .execute()
    )
    _record_redrive_outcomes(rejections, now)


def _record_redrive_outcomes(rejections: Mapping[str, Invalid], now: datetime.datetime) -> None:
    """The re-drives of these messages still waiting for an outcome: set aside again, when and why."""
    pending = (Audit.select(Audit.subject).where(
        (Audit.action == REDRIVE) & Audit.subject.in_(list(rejections)) & Audit.detail.is_null()).distinct())
    for row in pending:
        detail = {"set_aside": now.isoformat(timespec="seconds"), "errors": dict(rejections[row.subject].errors)}
        Audit.update(detail=detail).where(
            (Audit.action == REDRIVE) & (Audit.subject == row.subject) & Audit.detail.is_null()).execute()


# A rejection keeps at most this many characters of its body (an enrolment is a few hundred; the door allows 256 KiB).
PAYLOAD_LIMIT = 16 * 1024
TRUNCATED = "\n… (truncated: {length} characters received)"


REJECTION_FIELDS = ("payload", "company_number", "company_name", "sso_id", "company_email")


def rejection_fields(received: object) -> dict:
    """A rejection's payload (text, bounded) and the keys of the enrolment it was, where `received` holds them.

    Every field, None where it is not held: a multi-row INSERT takes its columns from its first row.
    """
    fields: dict = dict.fromkeys(REJECTION_FIELDS)
    if received is None:
        return fields
    text = received if isinstance(received, str) else canonical_text(received)
    payload = _storable(text)
    if len(payload) > PAYLOAD_LIMIT:
        payload = payload[:PAYLOAD_LIMIT] + TRUNCATED.format(length=len(payload))
    decoded = received if not isinstance(received, str) else _json_object(text)
    fields["payload"] = payload
    if isinstance(decoded, dict):
        for key in ("company_number", "company_name", "company_email"):
            if isinstance(decoded.get(key), str):
                fields[key] = _storable(decoded[key])[:255]
        sso_id = decoded.get("sso_id")
        if isinstance(sso_id, int) and not isinstance(sso_id, bool) and 1 <= sso_id <= enrolment.BIGINT_MAX:
            fields["sso_id"] = sso_id
    return fields


def canonical_text(value: object) -> str:
    """A decoded payload as JSON text, its keys in the order received."""
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def _storable(text: str) -> str:
    """`text` as both databases store it: no NUL, no unpaired surrogate (an unreadable body may hold them)."""
    return text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "\ufffd")


def _json_object(text: str) -> object:
    """The JSON in a body the worker did not decode (received too often, say), or None."""
    if len(text) > PAYLOAD_LIMIT:
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None
