"""Requests signed as directory-ui signs them (Hawk, by sigauth and mohawk), and sent over HTTP."""

import time

import requests
from mohawk import Sender
from sigauth.helpers import RequestSigner

UI_SECRET = "not-a-real-secret"


def signed_headers(url: str, body: bytes = b"", method: str = "POST", content_type: str | None = "application/json",
                   secret: str = UI_SECRET) -> dict[str, str]:
    """Headers of a request signed as directory-ui signs it, with sigauth."""
    headers = RequestSigner(secret=secret, sender_id="directory-ui").get_signature_headers(
        url, body, method, content_type
    )
    if content_type is not None:
        headers["Content-Type"] = content_type
    return headers


def stale_headers(path: str, body: bytes, seconds_old: int, content_type: str = "application/json") -> dict[str, str]:
    """A correct Hawk signature made `seconds_old` seconds ago."""
    sender = Sender(
        {"id": "directory-ui", "key": UI_SECRET, "algorithm": "sha256"},
        path,
        "POST",
        content=body,
        content_type=content_type,
        _timestamp=int(time.time()) - seconds_old,
    )
    return {"X-Signature": sender.request_header, "Content-Type": content_type}


def signed_post(base_url: str, body: bytes, path: str = "/enrolment/", secret: str = UI_SECRET, timeout: float = 10,
                **kwargs) -> requests.Response:
    """POST `body` to `base_url``path`, signed; keyword arguments go to requests (headers are added to)."""
    url = f"{base_url}{path}"
    headers = {**signed_headers(url, body, secret=secret), **kwargs.pop("headers", {})}
    return requests.post(url, data=body, headers=headers, timeout=timeout, **kwargs)


def signed_get(base_url: str, path: str, secret: str = UI_SECRET, timeout: float = 10) -> requests.Response:
    url = f"{base_url}{path}"
    return requests.get(url, headers=signed_headers(url, b"", "GET", None, secret=secret), timeout=timeout)
