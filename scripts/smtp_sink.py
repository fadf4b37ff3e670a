"""A real SMTP server (aiosmtpd) for the e-mail tests and the benchmark: accepts, refuses, defers or stalls.

    .venv/bin/python scripts/smtp_sink.py --port 8025 --out mails.jsonl           # accept, one JSON line a message
    .venv/bin/python scripts/smtp_sink.py --port 8025 --mode refuse                # 550 every recipient
    .venv/bin/python scripts/smtp_sink.py --port 8025 --tls-cert c.pem --tls-key k.pem   # STARTTLS required

Modes: accept; refuse (550 at RCPT); defer (451 at RCPT); stall (never answers DATA).
It prints "ready" on stdout once it accepts connections.
"""

import argparse
import asyncio
import json
import ssl
import sys
import threading
import time
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

MODES = ("accept", "refuse", "defer", "stall")
REFUSAL = "550 5.1.1 No such user here"
DEFERRAL = "451 4.3.0 Try again later"


class Sink:
    """The aiosmtpd handler: what it does with each message depends on `mode`; accepted ones are kept and counted."""

    def __init__(self, mode: str = "accept", out: str | None = None):
        self.mode = mode
        self.messages: list[dict] = []
        self.count = 0
        self._out = open(out, "a", encoding="utf-8") if out else None  # noqa: SIM115 - open for the server's life
        self._lock = threading.Lock()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.mode == "refuse":
            return REFUSAL
        if self.mode == "defer":
            return DEFERRAL
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.mode == "stall":
            await asyncio.sleep(3600)
        record = {"mail_from": envelope.mail_from, "rcpt_tos": envelope.rcpt_tos,
                  "data": envelope.original_content.decode("utf-8", "replace"), "tls": session.ssl is not None}
        with self._lock:
            self.count += 1
            if self._out is not None:
                self._out.write(json.dumps(record) + "\n")
                self._out.flush()
            else:
                self.messages.append(record)
        return "250 OK: queued"


def authenticator(user: str, password: str):
    """An aiosmtpd authenticator that lets in one user."""
    def check(server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and auth_data.login.decode() == user \
            and auth_data.password.decode() == password
        return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535 itself
    return check


def controller(sink: Sink, port: int, *, tls_cert: str | None = None, tls_key: str | None = None,
               user: str | None = None, password: str | None = None) -> Controller:
    """An aiosmtpd Controller on 127.0.0.1:port (not started); STARTTLS required when given a certificate."""
    kwargs: dict[str, Any] = {}
    if tls_cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(tls_cert, tls_key)
        kwargs.update(tls_context=context, require_starttls=True)
    if user:
        # PLAIN only: smtplib sends LOGIN's user name as an initial response, which aiosmtpd 1.4 ignores, and
        # after a refused PLAIN the two would wait on each other until the timeout.
        kwargs.update(authenticator=authenticator(user, password or ""), auth_require_tls=bool(tls_cert),
                      auth_required=True, auth_exclude_mechanism=["LOGIN"])
    return Controller(sink, hostname="127.0.0.1", port=port, ready_timeout=10, **kwargs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=MODES, default="accept")
    parser.add_argument("--out", help="append each accepted message to this file as a JSON line")
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    parser.add_argument("--user")
    parser.add_argument("--password")
    arguments = parser.parse_args()
    sink = Sink(arguments.mode, arguments.out)
    server = controller(sink, arguments.port, tls_cert=arguments.tls_cert, tls_key=arguments.tls_key,
                        user=arguments.user, password=arguments.password)
    server.start()
    print("ready", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
