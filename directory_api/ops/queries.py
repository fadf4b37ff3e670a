"""The console's lookups: search, an enrolment's detail, what became of a message, the rejections' pages."""

import dataclasses
import datetime
from collections.abc import Sequence
from typing import Any

import peewee

from directory_api import models, outbox
from directory_api.db import is_postgres
from directory_api.enrolment import BIGINT_MAX, COMPANY_NUMBER
from directory_api.models import (
    Company,
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


@dataclasses.dataclass(frozen=True)
class Results:
    """A page of search results: by name for a name searched, else newest first."""

    rows: list[Found]
    by_name: bool
    next_page: dict[str, str] | None  # the query parameters of the next page, None on the last


def search(query: str, field: str = "any", before: int | None = None, after: tuple[str, int] | None = None,
           limit: int = PAGE_SIZE) -> Results:
    """Companies matching `query` in `field`, with supplier and enrolment; empty query: all.

    The next page starts from the keyset a page's `next_page` names: `after` (lowered name, id) by name,
    `before` (an id) newest first.
    """
    query = query.strip()
    if not query:
        return _newest_first([True], before, limit)
    fields = fields_searched(query, field)
    if fields == ["company_name"]:
        return _by_name(query, after, limit)
    conditions = [condition for condition in (_condition(field, query) for field in fields) if condition is not None]
    return _newest_first(conditions, before, limit)


def fields_searched(query: str, field: str) -> list[str]:
    """The fields a query is looked up in (of companies and of rejections alike): "any" reads the query's shape."""
    if field not in SEARCH_FIELDS:
        raise ValueError(f"unknown search field {field!r}")
    if field != "any":
        return [field]
    if "@" in query:
        return ["email"]
    if query.isdigit():
        # Eight digits is a company number and could be an sso id: both, each by its unique index.
        return (["company_number"] if len(query) == 8 else []) + ["sso_id"]
    return ["company_number"] if COMPANY_NUMBER.fullmatch(query.upper()) else ["company_name"]


def _condition(field: str, query: str) -> peewee.Expression | None:
    """WHERE on the field's indexed column; None when the query cannot match it."""
    if field == "company_number":
        return Company.number == query.upper()
    if field == "sso_id":
        sso_id = as_sso_id(query)
        return None if sso_id is None else Supplier.sso_id == sso_id
    return peewee.fn.lower(Supplier.company_email) == query.lower()


def as_sso_id(query: str) -> int | None:
    """The sso id a query can be, or None (not digits, or beyond a BIGINT)."""
    return int(query) if query.isdigit() and int(query) <= BIGINT_MAX else None


def _companies(*columns: peewee.Node) -> "peewee.ModelSelect[Company]":
    return (Company.select(Company.id, Company.number, Company.name, Company.created, Supplier.sso_id,
                           Supplier.company_email, *columns)
            .join(Supplier, on=(Supplier.company == Company.id)))  # inner: a planner may then start from either


def _newest_first(conditions: list, before: int | None, limit: int) -> Results:
    rows: dict[int, dict] = {}
    # One query a condition, each on its own index (an OR across the join could use none).
    for condition in conditions:
        select = _companies().order_by(Company.id.desc()).limit(limit + 1)
        if condition is not True:
            select = select.where(condition)
        if before is not None:
            select = select.where(Company.id < before)
        rows.update((row["id"], row) for row in dict_rows(select))
    page = sorted(rows.values(), key=lambda row: row["id"], reverse=True)[:limit + 1]
    more = len(page) > limit
    return Results(_found(page[:limit]), False, {"before": str(page[limit - 1]["id"])} if more else None)


def _by_name(prefix: str, after: tuple[str, int] | None, limit: int) -> Results:
    """Names starting with `prefix`, in order of (lowered name, id), which the index company_name_sorted holds.

    Any page, of a prefix matching three companies or a hundred thousand, reads one page of that index.
    """
    name = _sort_name()
    select = (_companies(name.alias("sort_name")).where(name_starts_with(name, prefix))
              .order_by(name, Company.id).limit(limit + 1))
    if after is not None:
        # The first bound lets SQLite start its index range at the cursor; PostgreSQL uses the row comparison.
        select = select.where((name >= after[0]) & (peewee.Tuple(name, Company.id) > peewee.Tuple(*after)))
    page = list(dict_rows(select))
    more = len(page) > limit
    last = page[limit - 1] if more else None
    return Results(_found(page[:limit]), True,
                   {"after": last["sort_name"], "after_id": str(last["id"])} if last else None)


def _sort_name() -> peewee.ColumnBase:
    """lower(name), ordered by code point: PostgreSQL's LIKE 'prefix%' and ORDER BY then share one index."""
    if is_postgres(models.database):
        return peewee.fn.lower(Company.name).collate('"C"')
    return peewee.fn.lower(Company.name)  # SQLite compares bytes: UTF-8 bytes sort as code points


def name_starts_with(name: peewee.ColumnBase, prefix: str) -> peewee.Expression:
    """`name`, lower() of a column, starting with `prefix`, any case, by an index on that lower()."""
    if is_postgres(models.database):
        escaped = prefix.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return peewee.Expression(name, "LIKE", escaped + "%")
    # SQLite's lower() folds ASCII only; its LIKE cannot use an index on an expression, a range can.
    low = "".join(c.lower() if c.isascii() else c for c in prefix)
    return (name >= low) & (name < low + "\U0010ffff")


def _found(rows: list[dict]) -> list[Found]:
    enrolment_ids = _enrolment_ids([row["number"] for row in rows])
    return [Found(row["id"], row["number"], row["name"], row["created"], row["sso_id"], row["company_email"],
                  enrolment_ids.get(row["number"]))
            for row in rows]


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
    email: str  # its confirmation e-mail's state in words (outbox.state_in_words)


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
    email = outbox.state_in_words(outbox.for_enrolment(enrolment.id))
    return EnrolmentDetail(enrolment, company, supplier, retries, email)


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


def newest_first(query: "peewee.ModelSelect[Any]", before: int | None = None, limit: int = PAGE_SIZE) -> Page:
    """A page of `query`'s rows, newest first by id, those older than the id `before` (a keyset page)."""
    key = query.model._meta.primary_key
    query = query.order_by(key.desc()).limit(limit + 1)
    if before is not None:
        query = query.where(key < before)
    rows = list(query)
    return Page(rows[:limit], rows[limit - 1].get_id() if len(rows) > limit else None)


def rejections_page(before: int | None = None, limit: int = PAGE_SIZE) -> Page:
    """Rejections not re-driven, newest first."""
    return newest_first(waiting_rejections(), before, limit)


def recently_redriven(limit: int = 20) -> list[tuple[Rejection, str, int | None]]:
    """The last rejections re-driven, each with what became of its message since."""
    query = (Rejection.select().where(Rejection.redriven.is_null(False))
             .order_by(Rejection.redriven.desc()).limit(limit))
    return [(rejection, *message_state(rejection.message_id)) for rejection in query]


