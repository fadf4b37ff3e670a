"""The console's lookups: search, an enrolment's detail, what became of a message, the rejections' pages."""

import dataclasses
import datetime
from collections.abc import Sequence

import peewee

from directory_api import models
from directory_api.db import is_postgres
from directory_api.enrolment import BIGINT_MAX, COMPANY_NUMBER
from directory_api.models import (
    Company,
    Email,
    Enrolment,
    EnrolmentRetry,
    Rejection,
    Supplier,
    dict_rows,
    enrolment_company_number,
)

PAGE_SIZE = 50


@dataclasses.dataclass(frozen=True)
class Page:
    rows: list
    next_before: int | None  # the keyset of the next (older) page, None on the last


SEARCH_FIELDS = ("any", "company_number", "company_name", "sso_id", "email")


@dataclasses.dataclass(frozen=True)
class Found:
    """One search result: a company, its supplier and the enrolment that made them."""

    company_id: int
    company_number: str
    company_name: str
    created: datetime.datetime
    sso_id: int | None
    company_email: str | None
    enrolment_id: int | None


def search(query: str, field: str = "any", before: int | None = None, limit: int = PAGE_SIZE) -> Page:
    """Companies matching `query` in `field` (newest first), with supplier and enrolment; empty query: all."""
    rows: dict[int, dict] = {}
    # One query a condition, each on its own index (an OR across the join could use none).
    for condition, order in _search_conditions(query.strip(), field):
        select = (
            Company.select(Company.id, Company.number, Company.name, Company.created, Supplier.sso_id,
                           Supplier.company_email)
            .join(Supplier, on=(Supplier.company == Company.id))  # inner: a planner may then start from either
            .order_by(order.desc())
            .limit(limit + 1)
        )
        if condition is not True:
            select = select.where(condition)
        if before is not None:
            select = select.where(Company.id < before)
        rows.update((row["id"], row) for row in dict_rows(select))
    page = sorted(rows.values(), key=lambda row: row["id"], reverse=True)[:limit + 1]
    more = len(page) > limit
    page = page[:limit]
    enrolment_ids = _enrolment_ids([row["number"] for row in page])
    found = [
        Found(row["id"], row["number"], row["name"], row["created"], row["sso_id"], row["company_email"],
              enrolment_ids.get(row["number"]))
        for row in page
    ]
    return Page(found, page[-1]["id"] if more else None)


def _search_conditions(query: str, field: str) -> list[tuple]:
    """(WHERE on an indexed column, ORDER BY) for the field searched: WHERE True for all, [] when nothing can match."""
    if not query:
        return [(True, Company.id)]
    if field == "any":
        if "@" in query:
            field = "email"
        elif query.isdigit():
            # Eight digits is a company number and could be an sso id: both, each by its unique index.
            return (_search_conditions(query, "company_number") if len(query) == 8 else []) + \
                _search_conditions(query, "sso_id")
        elif COMPANY_NUMBER.fullmatch(query.upper()):
            field = "company_number"
        else:
            field = "company_name"
    if field == "company_number":
        return [(Company.number == query.upper(), Company.id)]
    if field == "sso_id":
        return [(Supplier.sso_id == int(query), Company.id)] if query.isdigit() and int(query) <= BIGINT_MAX else []
    if field == "email":
        return [(peewee.fn.lower(Supplier.company_email) == query.lower(), Company.id)]
    if field == "company_name":
        # A prefix may match many rows, and a planner would rather walk the primary key newest first and filter
        # (no sort), unbounded when few match: "id + 0" is not the key, so the index on the name is used.
        return [(_name_starts_with(query), Company.id + 0)]
    raise ValueError(f"unknown search field {field!r}")


def _name_starts_with(prefix: str) -> peewee.Expression:
    """Company names starting with `prefix`, any case, by the index on lower(name)."""
    if is_postgres(models.database):
        escaped = prefix.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return peewee.Expression(peewee.fn.lower(Company.name), "LIKE", escaped + "%")
    # SQLite's lower() folds ASCII only; its LIKE cannot use an index on an expression, a range can.
    low = "".join(c.lower() if c.isascii() else c for c in prefix)
    return (peewee.fn.lower(Company.name) >= low) & (peewee.fn.lower(Company.name) < low + "\U0010ffff")


def _enrolment_ids(company_numbers: Sequence[str]) -> dict[str, int]:
    if not company_numbers:
        return {}
    number = enrolment_company_number()
    query = Enrolment.select(Enrolment.id, number.alias("number")).where(number.in_(list(company_numbers)))
    return {row["number"]: row["id"] for row in dict_rows(query)}


@dataclasses.dataclass(frozen=True)
class EnrolmentDetail:
    enrolment: Enrolment
    company: Company | None
    supplier: Supplier | None
    retries: list[str]  # message ids of the client's retries of it
    email: dict


def enrolment_detail(enrolment_id: int) -> EnrolmentDetail | None:
    enrolment = Enrolment.get_or_none(Enrolment.id == enrolment_id)
    if enrolment is None:
        return None
    number = enrolment.data.get("company_number") if isinstance(enrolment.data, dict) else None
    company = Company.get_or_none(Company.number == number) if isinstance(number, str) else None
    supplier = Supplier.get_or_none(Supplier.company == company.id) if company else None
    retries = [row.message_id for row in
               EnrolmentRetry.select(EnrolmentRetry.message_id).where(EnrolmentRetry.enrolment == enrolment.id)
               .order_by(EnrolmentRetry.id).limit(PAGE_SIZE)]
    return EnrolmentDetail(enrolment, company, supplier, retries, enrolment_email(enrolment.id))


def enrolment_email(enrolment_id: int) -> dict:
    """The confirmation e-mail's state for one enrolment (by the outbox's index on enrolment_id).

    state None: none recorded.
    """
    email = Email.select().where(Email.enrolment == enrolment_id).order_by(Email.id.desc()).first()
    if email is None:
        return {"state": None, "detail": None}
    sent = f"at {email.sent:%Y-%m-%d %H:%M} UTC" if email.sent else None
    return {"state": email.state, "detail": email.last_error or sent}


def message_state(message_id: str) -> tuple[str, int | None]:
    """What became of a message.

    ("created", enrolment id), ("rejected", None), ("redriven", None) or ("unknown", None).
    """
    saved = Enrolment.get_or_none(Enrolment.sqs_message_id == message_id)
    if saved is not None:
        return "created", saved.id
    retry = EnrolmentRetry.get_or_none(EnrolmentRetry.message_id == message_id)
    if retry is not None:
        return "created", retry.enrolment_id
    rejection = Rejection.get_or_none(Rejection.message_id == message_id)
    if rejection is not None:
        return ("redriven" if rejection.redriven else "rejected"), None
    return "unknown", None


def waiting_rejections() -> "peewee.ModelSelect[Rejection]":
    """Recorded rejections not re-driven since (the partial index rejection_waiting)."""
    return Rejection.select().where(Rejection.redriven.is_null())


def rejections_page(before: int | None = None, limit: int = PAGE_SIZE) -> Page:
    """Rejections not re-driven, newest first."""
    query = waiting_rejections().order_by(Rejection.id.desc()).limit(limit + 1)
    if before is not None:
        query = query.where(Rejection.id < before)
    rows = list(query)
    more = len(rows) > limit
    return Page(rows[:limit], rows[limit - 1].id if more else None)


def recently_redriven(limit: int = 20) -> list[tuple[Rejection, str, int | None]]:
    """The last rejections re-driven, each with what became of its message since."""
    query = (Rejection.select().where(Rejection.redriven.is_null(False))
             .order_by(Rejection.redriven.desc()).limit(limit))
    return [(rejection, *message_state(rejection.message_id)) for rejection in query]


