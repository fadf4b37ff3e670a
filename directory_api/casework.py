"""The console's pages for solving a case: erasing a supplier's personal data, and the audit of what was done.

Routed by console.py (`routes`), behind its authentication, headers and
CSRF/same-origin guard; the queries are ops/erase.py's and ops/audit.py's.
"""

from urllib.parse import urlencode

import bottle

from directory_api.models import Audit, Enrolment, Rejection
from directory_api.ops import audit, erase


def routes(app: bottle.Bottle, console) -> None:
    app.route("/enrolments/<enrolment_id:int>/erase", "GET", lambda enrolment_id: confirm_erase(console, enrolment_id))
    app.route("/enrolments/<enrolment_id:int>/erase", "POST",
              console.guarded(lambda enrolment_id: erase_now(console, enrolment_id)))
    app.route("/audit", "GET", audit_list)


def keys_of(enrolment: Enrolment) -> tuple[str | None, int | None]:
    """The company number and sso id an enrolment's payload holds (None once erased)."""
    data = enrolment.data if isinstance(enrolment.data, dict) and enrolment.erased is None else {}
    number = data.get("company_number") if isinstance(data.get("company_number"), str) else None
    sso_id = data.get("sso_id") if isinstance(data.get("sso_id"), int) and not isinstance(data.get("sso_id"), bool) \
        else None
    return number, sso_id


def _enrolment(enrolment_id: int) -> Enrolment:
    enrolment = Enrolment.get_or_none(Enrolment.id == enrolment_id)
    if enrolment is None:
        raise bottle.HTTPError(404)
    return enrolment


def confirm_erase(console, enrolment_id: int) -> str:
    from directory_api.console import page

    enrolment = _enrolment(enrolment_id)
    number, sso_id = keys_of(enrolment)
    found = erase.erase(number, sso_id, dry_run=True) if number or sso_id is not None else erase.Erasure(
        dict.fromkeys(erase.TABLES, 0), [])
    return page("erase", title=f"Erase the personal data of enrolment {enrolment_id}", section="enrolments",
                enrolment=enrolment, company_number=number, sso_id=sso_id, erasure=found, tables=erase.TABLES,
                labels=erase.LABELS, csrf_token=console.csrf.new())


def erase_now(console, enrolment_id: int):
    enrolment = _enrolment(enrolment_id)
    number, sso_id = keys_of(enrolment)
    done = erase.erase(number, sso_id, source=audit.console_source(bottle.request.environ)) \
        if number or sso_id is not None else None
    removed = done.removed if done is not None else dict.fromkeys(erase.TABLES, 0)
    # Post/Redirect/Get: the enrolment's page says what went; reloading it erases nothing again.
    query = urlencode([("erased", "1")] + [(table, str(count)) for table, count in removed.items()])
    from directory_api.console import redirect_to_path

    redirect_to_path(f"{bottle.request.script_name}enrolments/{enrolment_id}?{query}", 303)


def erased_notice(query, enrolment: Enrolment) -> str | None:
    """The enrolment page's notice after an erase, from the redirect's query; none on an enrolment not erased."""
    if not query.get("erased") or enrolment.erased is None:  # a crafted link cannot claim an erase
        return None
    counts = [f"{table} {int(query.get(table))}" for table in erase.TABLES
              if (query.get(table) or "").isdigit() and len(query.get(table)) < 10]
    return "Erased: " + (", ".join(counts) if counts else "nothing was left to erase") + "."


def describe(row: Audit) -> str:
    """An audit row's outcome in words."""
    detail: dict = row.detail if isinstance(row.detail, dict) else {}
    if row.action == audit.ERASE:
        removed: dict = detail["removed"] if isinstance(detail.get("removed"), dict) else {}
        return "removed " + ", ".join(f"{table} {removed.get(table, 0)}" for table in erase.TABLES)
    if "set_aside" in detail:
        return f"set aside again at {str(detail['set_aside']).replace('T', ' ')}"
    saved = audit.saved_as(row.subject)
    return f"saved as enrolment {saved}" if saved is not None else "-"


def audit_list() -> str:
    from directory_api.console import _positive, page

    found = audit.audit_page(before=_positive(bottle.request.query.get("before")))
    return page("audit", title="Audit", section="audit", page=found, describe=describe)


def search_query(rejection: Rejection) -> str:
    """The enrolment search for what is registered under a rejection's company number (else its sso id)."""
    if rejection.company_number:
        return urlencode({"q": rejection.company_number, "by": "company_number"})
    return urlencode({"q": str(rejection.sso_id), "by": "sso_id"})


def history_html(message_id: str) -> str:
    """A message's re-drives and their outcomes, for a rejection's page and an enrolment's."""
    from directory_api.console import template

    return template("history").render(base=bottle.request.script_name, history=audit.history(message_id))
