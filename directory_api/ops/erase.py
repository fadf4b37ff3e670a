"""`erase`: one supplier's personal data removed, on request (the right to erasure), by company number or sso id.

What goes: the company and supplier rows; the personal fields of the
enrolment's stored payload (the row stays, with its id, times and message id,
marked erased); the recipient of its e-mail record; and the payloads and keys
of its rejections: those holding its sso id, or its company number and no
other person's sso id (_rejections_of). The payload keeps only NON_PERSONAL
fields, so a later enrolment of the same company is a new one, never taken
for a client's retry of the erased one. One transaction; one audit row
naming the enrolments by id, never the number or sso id.
"""

import dataclasses
import logging
from collections.abc import Callable

import peewee

from directory_api import migrations, models, outbox
from directory_api.db import DATABASE_ERRORS, bind
from directory_api.errors import UserError, first_line
from directory_api.models import Company, Email, Enrolment, Rejection, Supplier, enrolment_company_number, utcnow
from directory_api.ops import Unanswered
from directory_api.ops.audit import ERASE, command_source, record
from directory_api.retention import strip_emails, strip_rejections
from directory_api.settings import Settings

log = logging.getLogger(__name__)

# What an erased enrolment's payload keeps: nothing that names or reaches a person or company.
NON_PERSONAL = ("export_status",)
# What a waiting e-mail of an erased enrolment becomes: never sent, and why.
NOT_SENT = "not sent: its enrolment was erased"
# The tables erase touches, in the order it reports them.
TABLES = ("company", "supplier", "enrolment", "email", "rejection")


class NothingMatches(UserError):
    exit_code = 1


@dataclasses.dataclass(frozen=True)
class Erasure:
    """What an erase removed (or would remove): rows a table, and the enrolments whose payload it stripped."""

    removed: dict[str, int]
    enrolment_ids: list[int]

    @property
    def empty(self) -> bool:
        return not any(self.removed.values())


@dataclasses.dataclass(frozen=True)
class _Found:
    companies: list[int]
    suppliers: list[int]
    enrolments: list[Enrolment]
    emails: int
    rejections: peewee.Expression | None
    rejection_count: int


def _find(company_number: str | None, sso_id: int | None) -> _Found:
    """Everything holding the supplier's personal data: by the number and sso id given, and each other's."""
    numbers = {company_number} if company_number else set()
    sso_ids = {sso_id} if sso_id is not None else set()
    # Two lookups, each on its own index: an OR of the two (a subquery on one side) scans every supplier.
    numbered = [c.id for c in Company.select(Company.id).where(Company.number.in_(list(numbers)))] if numbers else []
    columns = (Supplier.id, Supplier.sso_id, Supplier.company)
    by_sso_id = list(Supplier.select(*columns).where(Supplier.sso_id.in_(list(sso_ids)))) if sso_ids else []
    by_number = list(Supplier.select(*columns).where(Supplier.company.in_(numbered))) if numbered else []
    suppliers = list({supplier.id: supplier for supplier in by_sso_id + by_number}.values())
    company_ids = {s.company_id for s in suppliers}
    companies = list(Company.select(Company.id, Company.number).where(
        Company.id.in_(list(company_ids)) | Company.number.in_(list(numbers))))
    numbers |= {c.number for c in companies}
    sso_ids |= {s.sso_id for s in suppliers}
    enrolments = list(Enrolment.select(Enrolment.id, Enrolment.data).where(
        enrolment_company_number().in_(list(numbers)) & Enrolment.erased.is_null())) if numbers else []
    enrolment_ids = [e.id for e in enrolments]
    emails = Email.select().where(Email.enrolment.in_(enrolment_ids) & (Email.recipient != "")).count() \
        if enrolment_ids else 0
    condition = _rejections_of(numbers, sso_ids) if numbers or sso_ids else None
    rejection_count = Rejection.select().where(condition & Rejection.erased.is_null()).count() \
        if condition is not None else 0
    return _Found([c.id for c in companies], [s.id for s in suppliers], enrolments, emails, condition,
                  rejection_count)


def _rejections_of(numbers: set[str], sso_ids: set[int]) -> peewee.Expression:
    """The supplier's rejections: holding one of its sso ids, or one of its numbers and no other sso id.

    A rejection under the same company number with another sso id is another person's attempt (the supplier
    the company was registered to by mistake, say, whose rejection the operator is about to re-drive): its
    personal data is theirs, not this supplier's. With no sso id known, every rejection of the number goes.
    """
    by_number = Rejection.company_number.in_(list(numbers))
    if not sso_ids:
        return by_number
    mine = Rejection.sso_id.in_(list(sso_ids))
    return mine | (by_number & (Rejection.sso_id.is_null() | mine))


def erase(company_number: str | None = None, sso_id: int | None = None, *, dry_run: bool = False,
          source: str = "") -> Erasure:
    """Remove (or, dry run, count) one supplier's personal data, in one transaction, audited."""
    if not company_number and sso_id is None:
        raise ValueError("erase needs a company number or an sso id")
    with models.database.atomic():
        found = _find(company_number, sso_id)
        erasure = Erasure(
            {"company": len(found.companies), "supplier": len(found.suppliers), "enrolment": len(found.enrolments),
             "email": found.emails, "rejection": found.rejection_count},
            sorted(e.id for e in found.enrolments))
        if dry_run or erasure.empty:
            return erasure
        now = utcnow()
        Supplier.delete().where(Supplier.id.in_(found.suppliers)).execute()
        Company.delete().where(Company.id.in_(found.companies)).execute()
        for enrolment in found.enrolments:
            kept = {k: v for k, v in enrolment.data.items() if k in NON_PERSONAL} \
                if isinstance(enrolment.data, dict) else {}
            Enrolment.update(data=kept, erased=now).where(Enrolment.id == enrolment.id).execute()
        ids = erasure.enrolment_ids
        if ids:
            Email.update(state=outbox.FAILED, last_error=NOT_SENT).where(
                Email.enrolment.in_(ids) & (Email.state == outbox.WAITING)).execute()
            strip_emails(Email.enrolment.in_(ids))
        if found.rejections is not None:
            strip_rejections(found.rejections, now)
        subject = "enrolment " + ", ".join(map(str, ids)) if ids else "no enrolment"
        record(ERASE, [subject], source, {"removed": erasure.removed}, at=now)
    log.info("erase (%s): removed %s", source, removed_text(erasure.removed), extra={"removed": erasure.removed})
    return erasure


def removed_text(removed: dict[str, int]) -> str:
    """"company 1, supplier 1, …" in TABLES order."""
    return ", ".join(f"{table} {removed[table]}" for table in TABLES)


LABELS = {
    "company": "company rows deleted",
    "supplier": "supplier rows deleted",
    "enrolment": "enrolment payloads stripped of personal fields (rows kept, marked erased)",
    "email": "e-mail records' recipients removed",
    "rejection": "rejections' payloads and keys removed",
}


def erase_command(settings: Settings, *, company_number: str | None, sso_id: int | None, dry_run: bool,
                  out: Callable[[str], None]) -> Erasure:
    """Run `erase`, printing what it removed by table; NothingMatches (exit 1) when nothing holds that key."""
    bind(settings.required("DATABASE_URL"))
    try:
        migrations.ensure_current(models.database, auto_migrate=settings.debug)
        erasure = erase(company_number, sso_id, dry_run=dry_run, source=command_source("erase"))
    except DATABASE_ERRORS as error:
        raise Unanswered(f"DATABASE_URL: cannot erase: {first_line(error)}") from None
    finally:
        models.database.close()
    key = f"company number {company_number}" if company_number else f"sso id {sso_id}"
    if erasure.empty:
        raise NothingMatches(f"nothing to erase: no company, supplier, enrolment or rejection holds {key}")
    out(f"{'would remove (dry run)' if dry_run else 'removed'} for {key}:")
    for table in TABLES:
        out(f"  {table}: {erasure.removed[table]} {LABELS[table]}")
    if erasure.enrolment_ids:
        out(f"  enrolments: {', '.join(map(str, erasure.enrolment_ids))}")
    return erasure
