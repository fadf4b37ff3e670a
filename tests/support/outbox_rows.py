"""The outbox's rows as the e-mail tests make and read them: saved with their enrolments, their states, made due."""

import time

from directory_api import saving
from directory_api.models import Email
from directory_api.outbox import WAITING
from tests.factories import enrolment_payload


def saved(count=1, **overrides) -> list[int]:
    """Save `count` enrolments as the worker does; their enrolment ids."""
    outcomes = saving.save_batch({f"message-{time.monotonic_ns()}-{n}": enrolment_payload(**overrides)
                                  for n in range(count)})
    enrolment_ids = []
    for outcome in outcomes.values():
        assert isinstance(outcome, saving.Created), outcome  # only a new enrolment has an id
        enrolment_ids.append(outcome.enrolment_id)
    return enrolment_ids


def states() -> list[str]:
    """Every e-mail's state, in the order they were recorded."""
    return [email.state for email in Email.select().order_by(Email.id)]


def make_due() -> None:
    """Every waiting e-mail due now, as when its backoff or its claim's lease has run out."""
    Email.update(due_at=0).where(Email.state == WAITING).execute()
