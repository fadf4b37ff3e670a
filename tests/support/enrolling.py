"""A signed enrolment sent to a running `dev` and followed through its status, as the front end does."""

import json

import requests

from tests.support.signing import signed_headers
from tests.support.waits import wait_until

DEBUG_SECRET = "debug"  # UI_SECRET's and OPS_PASSWORD's --debug defaults, which dev uses


def post_enrolment(base_url: str, payload: dict, timeout: float = 10) -> str:
    """POST `payload` signed; returns the id of the queued message (asserts a 202)."""
    body = json.dumps(payload).encode()
    url = f"{base_url}/enrolment/"
    answer = requests.post(url, data=body, headers=signed_headers(url, body, secret=DEBUG_SECRET), timeout=timeout)
    assert answer.status_code == 202, answer.text
    return answer.json()["id"]


def enrolment_status(base_url: str, message_id: str, timeout: float = 10) -> dict:
    url = f"{base_url}/enrolment/{message_id}/"
    headers = signed_headers(url, b"", "GET", None, secret=DEBUG_SECRET)
    return requests.get(url, headers=headers, timeout=timeout).json()


def wait_created(base_url: str, message_id: str, timeout: float) -> dict:
    """The status answer once the message's enrolment is created."""
    return wait_until(lambda: (seen := enrolment_status(base_url, message_id, timeout))["status"] == "created"
                      and seen, timeout, f"enrolment {message_id} to be created")
