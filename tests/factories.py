"""The one place test payloads and settings are built: valid enrolments (as dicts, bodies and batches), Settings,
and one message saved as the worker saves it."""

import itertools
import json

from directory_api import saving
from directory_api.settings import Settings
from tests.support.signing import UI_SECRET

# Unnumbered payloads count from here, clear of the small numbers tests pass on purpose.
_numbers = itertools.count(1_000_000)


# One fixed enrolment, for tests that spell out what is sent or stored.
ENROLMENT = {
    "sso_id": 7,
    "company_number": "SC123456",
    "company_name": "Acme Exports Ltd",
    "company_email": "enquiries@acme.example.com",
    "export_status": "NOT_YET",
    "date_of_creation": "2012-04-02",
}


def enrolment_payload(n: int | None = None, **overrides) -> dict:
    """The n-th valid enrolment (the next unused one without n): distinct n give distinct sso_id and company_number."""
    if n is None:
        n = next(_numbers)
    payload = {
        "sso_id": n + 1,
        "company_number": f"{n:08d}",
        "company_name": f"Company {n}",
        "company_email": f"company{n}@example.com",
        "export_status": "YES",
        "date_of_creation": "2001-02-03",
        "mobile_number": "07700900000",
        "referrer": "google",
        "revenue": "125000.50",
    }
    payload.update(overrides)
    return payload


def enrolment_body(n: int | None = None, **overrides) -> str:
    return json.dumps(enrolment_payload(n, **overrides))


def deeply_nested_body(levels: int, n: int | None = None) -> str:
    """A valid enrolment (the n-th, or the next unused) with an extra field of arrays `levels` deep."""
    return enrolment_body(n)[:-1] + ', "extra": ' + "[" * levels + "]" * levels + "}"


def enrolment_bodies(count: int, start: int = 0) -> list[str]:
    """The bodies of enrolments start .. start + count - 1."""
    return [enrolment_body(n) for n in range(start, start + count)]


def worker_settings(database_url: str, **environ) -> Settings:
    """Settings as `work` builds them, from a few variables."""
    base = {
        "DATABASE_URL": database_url,
        "SQS_ENROLMENT_QUEUE_NAME": "enrolment",
        "SQS_INVALID_ENROLMENT_QUEUE_NAME": "enrolment-invalid",
    }
    return Settings.from_environ({**base, **environ}, require=())


# The link the confirmation e-mail carries; its query string has an "&", which the HTML part must escape.
CONFIRMATION_URL = "https://directory.example.com/confirm/?a=1&b=2"


def mail_settings(database_url: str, port: int | None = None, **environ: str) -> Settings:
    """Settings as `work` builds them with e-mail set up: through the SMTP server on `port`, or without one, logged."""
    variables = {"DEFAULT_FROM_EMAIL": "Export Directory <noreply@example.com>",
                 "COMPANY_EMAIL_CONFIRMATION_URL": CONFIRMATION_URL, "EMAIL_USE_TLS": "false"}
    if port:
        variables.update(EMAIL_HOST="127.0.0.1", EMAIL_PORT=str(port))
    return worker_settings(database_url, **{**variables, **environ})


def web_settings(**environ) -> Settings:
    """Settings as `serve --debug` builds them, signed with tests/support/signing.py's UI_SECRET."""
    return Settings.from_environ({"UI_SECRET": UI_SECRET, **environ}, debug=True)


def save_one(message_id: str, payload: object) -> saving.Outcome:
    """Save one message in one transaction, as the worker saves a batch of one."""
    return saving.save_batch({message_id: payload})[message_id]
