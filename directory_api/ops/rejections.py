"""The console's lookups of rejections: found by whose enrolment they were, and one rejection's case."""

import dataclasses
import json

import peewee

from directory_api.models import Rejection
from directory_api.ops import queries
from directory_api.ops.audit import Redrive, history

SEARCH_LIMIT = 20


def search(query: str, field: str = "any", limit: int = SEARCH_LIMIT) -> list[Rejection]:
    """Rejections whose payload held `query` in `field` (as the enrolment search reads it), newest first."""
    conditions = _conditions(query.strip(), field)
    if not conditions:
        return []
    found: dict[int, Rejection] = {}
    for condition in conditions:  # one query a condition, each on its own index
        for rejection in Rejection.select().where(condition).order_by(Rejection.id.desc()).limit(limit):
            found[rejection.id] = rejection
    return sorted(found.values(), key=lambda rejection: rejection.id, reverse=True)[:limit]


def _conditions(query: str, field: str) -> list[peewee.Expression]:
    if not query:
        return []
    conditions = (_condition(field, query) for field in queries.fields_searched(query, field))
    return [condition for condition in conditions if condition is not None]


def _condition(field: str, query: str) -> peewee.Expression | None:
    """WHERE on the rejection's indexed column for `field`; None when the query cannot match it."""
    if field == "company_number":
        return Rejection.company_number == query.upper()
    if field == "sso_id":
        sso_id = queries.as_sso_id(query)
        return None if sso_id is None else Rejection.sso_id == sso_id
    if field == "email":
        return peewee.fn.lower(Rejection.company_email) == query.lower()
    return queries.name_starts_with(peewee.fn.lower(Rejection.company_name), query)


@dataclasses.dataclass(frozen=True)
class Case:
    """One rejection as an operator solves it: reasons, whose it was, the payload, and its re-drives."""

    rejection: Rejection
    payload: str | None  # indented when it is JSON, else as kept
    history: list[Redrive]


def case(message_id: str) -> Case | None:
    rejection = Rejection.get_or_none(Rejection.message_id == message_id)
    if rejection is None:
        return None
    return Case(rejection, readable(rejection.payload), history(message_id))


def readable(payload: str | None) -> str | None:
    """A kept payload for reading: JSON indented, keys in the order received; anything else as kept."""
    if payload is None:
        return None
    try:
        return json.dumps(json.loads(payload), indent=2, ensure_ascii=False)
    except (ValueError, RecursionError):
        return payload
