"""Benchmark what observing costs a request, in process: CPU µs a request with and without the access middleware.

The same app (serve's Bottle app, GET /) is called through WSGI directly, bare
and wrapped by access.observed: metrics in memory (serve --processes 1) or in
a multiprocess directory (serve --processes N), the access line as text or
JSON, written to a file as serve writes to its stderr. CPU time, not wall
time, so other work on the machine matters less; the best of the rounds.
bench_serve.py measures the same end to end (serve-1 against serve-1-bare).

    .venv/bin/python scripts/bench_observing.py
"""

import argparse
import io
import logging
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from directory_api import access, logs, metrics, web
from directory_api.settings import Settings
from directory_api.signature import NonceStore


class NoQueue:
    name = "enrolment"

    def ensure_exists(self):
        return None


def environ() -> dict:
    return {
        "REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": "/", "QUERY_STRING": "",
        "SERVER_NAME": "bench", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""), "wsgi.errors": sys.stderr, "CONTENT_LENGTH": "0",
        "HTTP_X_REQUEST_ID": "bench-request-1",
    }


def start_response(status, headers, exc_info=None):
    return None


def cpu_us_per_request(app, requests: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        for _ in range(requests):
            b"".join(app(environ(), start_response))
        best = min(best, (time.process_time() - started) / requests)
    return best * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    arguments = parser.parse_args()
    directory = tempfile.mkdtemp(prefix="bench-observing-")
    settings = Settings.from_environ({"UI_SECRET": "not-a-real-secret"}, debug=True)
    app = web.make_app(settings, NoQueue(), nonce_store=NonceStore(os.path.join(directory, "nonces.sqlite3")))
    log_file = os.path.join(directory, "stderr.log")
    results = {}
    with open(log_file, "w") as stream:
        sys.stderr, real_stderr = stream, sys.stderr
        try:
            logs.configure(debug=False, log_format="text")
            results["bare"] = cpu_us_per_request(app, arguments.requests, arguments.rounds)
            results["observed, text line, metrics in memory"] = cpu_us_per_request(
                access.observed(app), arguments.requests, arguments.rounds)
            logs.configure(debug=False, log_format="json")
            results["observed, JSON line, metrics in memory"] = cpu_us_per_request(
                access.observed(app), arguments.requests, arguments.rounds)
            with metrics.shared_between_processes() as shared:
                results["observed, JSON line, multiprocess metrics"] = cpu_us_per_request(
                    access.observed(app, metrics.Registry(shared)), arguments.requests, arguments.rounds)
            logging.getLogger("directory_api.access").setLevel(logging.WARNING)
            results["observed, no access line (level off), metrics in memory"] = cpu_us_per_request(
                access.observed(app), arguments.requests, arguments.rounds)
        finally:
            sys.stderr = real_stderr
            shutil.rmtree(directory, ignore_errors=True)
    base = results["bare"]
    print(f"GET / through serve's app, {arguments.requests} requests, best of {arguments.rounds} rounds (CPU time)")
    for name, value in results.items():
        extra = "" if name == "bare" else f"  (+{value - base:.1f} µs = +{(value - base) / 1000:.3f} ms)"
        print(f"  {name:58} {value:7.1f} µs/request{extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
