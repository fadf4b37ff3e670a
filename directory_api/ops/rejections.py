"""The console's lookups of rejections: found by whose enrolment they were, and one rejection's case."""

import dataclasses
import json

import peewee

from directory_api import models
from directory_api.db import is_postgres
from directory_api.enrolment import BIGINT_MAX, COMPANY_NUMBER
from directory_api.models import Rejection
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
    if field == "any":
        if "@" in query:
            field = "email"
        elif query.isdigit():
            return (_conditions(query, "company_number") if len(query) == 8 else []) + _conditions(query, "sso_id")
        elif COMPANY_NUMBER.fullmatch(query.upper()):
            field = "company_number"
        else:
            field = "company_name"
    if field == "company_number":
        return [Rejection.company_number == query.upper()]
    if field == "sso_id":
        return [Rejection.sso_id == int(query)] if query.isdigit() and int(query) <= BIGINT_MAX else []
    if field == "email":
        return [peewee.fn.lower(Rejection.company_email) == query.lower()]
    if field == "company_name":
        return [_name_starts_with(query)]
    raise ValueError(f"unknown search field {field!r}")


def _name_starts_with(prefix: str) -> peewee.Expression:
    """Names starting with `prefix`, any case, by the index on lower(company_name) (as queries.py's for companies)."""
    name = peewee.fn.lower(Rejection.company_name)
    if is_postgres(models.database):
        escaped = prefix.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return peewee.Expression(name, "LIKE", escaped + "%")
    low = "".join(c.lower() if c.isascii() else c for c in prefix)
    return (name >= low) & (name < low + "\U0010ffff")


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
