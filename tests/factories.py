"""Test data shared by the worker's tests: valid enrolment payloads and settings."""

import itertools
import json

from directory_api.settings import Settings

_numbers = itertools.count(1)


def enrolment_payload(**overrides) -> dict:
    """A valid enrolment payload, unique in its company number and sso_id unless overridden."""
    number = next(_numbers)
    payload = {
        "sso_id": number,
        "company_number": f"{number:08d}",
        "company_name": f"Company {number}",
        "company_email": f"company{number}@example.com",
        "export_status": "YES",
        "date_of_creation": "2001-02-03",
        "mobile_number": "07700900000",
        "referrer": "google",
        "revenue": "125000.50",
    }
    payload.update(overrides)
    return payload


def enrolment_body(**overrides) -> str:
    return json.dumps(enrolment_payload(**overrides))


def worker_settings(database_url: str, **environ) -> Settings:
    """Settings as `work` builds them, from a few variables."""
    base = {
        "DATABASE_URL": database_url,
        "SQS_ENROLMENT_QUEUE_NAME": "enrolment",
        "SQS_INVALID_ENROLMENT_QUEUE_NAME": "enrolment-invalid",
    }
    return Settings.from_environ({**base, **environ}, require=())
