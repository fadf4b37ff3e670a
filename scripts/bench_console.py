"""Benchmark the ops console: response times of its pages at 100,000 enrolments, through a real `serve`.

Fills a database with 100,000 enrolments, companies and suppliers (straight
with SQL), starts `serve` (one process, the database queue, OPS_PASSWORD
set) and asks each page one request at a time over one keep-alive
connection, as an operator's browser does: search by company number (the
figure the closing note gives), by sso id, by the start of a company name,
by e-mail, an enrolment's detail, the rejections page and the overview.
Every answer is checked to be 200 and to show what was asked for.

    .venv/bin/python scripts/bench_console.py            # 100,000 enrolments, 1,000 requests a page,
                                                         # PostgreSQL and SQLite
    .venv/bin/python scripts/bench_console.py --quick    # 5,000 enrolments, 100 requests a page
"""

import argparse
import os
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import benchlib

PASSWORD = "not-a-real-ops-password"
COLUMNS = [("database", "database"), ("page", "page"), ("enrolments", "enrolments"), ("requests", "requests"),
           ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"), ("max_ms", "max ms")]

POSTGRES_FILL = """
INSERT INTO enrolment (created, data, sqs_message_id)
SELECT now() at time zone 'utc' - make_interval(secs => %(rows)s - n),
       jsonb_build_object(
           'sso_id', n, 'company_number', lpad(n::text, 8, '0'), 'company_name', 'Console Bench ' || n || ' Ltd',
           'company_email', 'bench' || n || '@example.com', 'export_status', 'YES', 'date_of_creation', '2010-06-15'),
       'bench-' || n
FROM generate_series(1, %(rows)s) AS n;
INSERT INTO company (number, name, export_status, date_of_creation, created, modified)
SELECT lpad(n::text, 8, '0'), 'Console Bench ' || n || ' Ltd', 'YES', '2010-06-15', now(), now()
FROM generate_series(1, %(rows)s) AS n;
INSERT INTO supplier (sso_id, company_email, mobile_number, referrer, company_id, created, modified)
SELECT c.id, 'bench' || c.id || '@example.com', '', 'bench', c.id, now(), now() FROM company c;
INSERT INTO rejection (message_id, errors, created)
SELECT 'rejected-' || n, '{"company_number": ["A company with this number is already registered."]}', now()
FROM generate_series(1, %(rows)s / 100) AS n;
ANALYZE;
"""
SQLITE_FILL = [
    """WITH RECURSIVE numbers(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM numbers WHERE n < :rows)
       INSERT INTO enrolment (created, data, sqs_message_id)
       SELECT datetime('now', '-' || (:rows - n) || ' seconds'),
              json_object('sso_id', n, 'company_number', printf('%08d', n),
                          'company_name', 'Console Bench ' || n || ' Ltd',
                          'company_email', 'bench' || n || '@example.com', 'export_status', 'YES',
                          'date_of_creation', '2010-06-15'),
              'bench-' || n
       FROM numbers""",
    """WITH RECURSIVE numbers(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM numbers WHERE n < :rows)
       INSERT INTO company (number, name, export_status, date_of_creation, created, modified)
       SELECT printf('%08d', n), 'Console Bench ' || n || ' Ltd', 'YES', '2010-06-15', datetime('now'), datetime('now')
       FROM numbers""",
    """INSERT INTO supplier (sso_id, company_email, mobile_number, referrer, company_id, created, modified)
       SELECT id, 'bench' || id || '@example.com', '', 'bench', id, datetime('now'), datetime('now') FROM company""",
    """WITH RECURSIVE numbers(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM numbers WHERE n < :rows / 100)
       INSERT INTO rejection (message_id, errors, created)
       SELECT 'rejected-' || n, '{"company_number": ["A company with this number is already registered."]}',
              datetime('now')
       FROM numbers""",
    "ANALYZE",
]


def fill_postgres(url: str, rows: int) -> None:
    import psycopg2

    with psycopg2.connect(url) as connection, connection.cursor() as cursor:
        cursor.execute(POSTGRES_FILL, {"rows": rows})


def fill_sqlite(url: str, rows: int) -> None:
    with sqlite3.connect(url.removeprefix("sqlite:///")) as connection:
        for statement in SQLITE_FILL:
            connection.execute(statement, {"rows": rows})


def pages(rows: int, rng: random.Random) -> dict:
    """Each page measured: a function of nothing giving (path, text the answer must show)."""

    def number() -> int:
        return rng.randint(1, rows)

    def by_number():
        n = number()
        return f"/ops/enrolments?q={n:08d}&by=company_number", f">{n:08d}</a>"

    def by_sso_id():
        n = number()
        return f"/ops/enrolments?q={n}&by=sso_id", f">{n}</td>"

    def by_name():
        n = number()
        return f"/ops/enrolments?q=console+bench+{n}+l&by=company_name", f"Console Bench {n} Ltd"

    def by_email():
        n = number()
        return f"/ops/enrolments?q=BENCH{n}@example.com&by=email", f"bench{n}@example.com"

    def detail():
        n = number()  # enrolment ids run 1..rows in the order filled
        return f"/ops/enrolments/{n}", f"bench-{n}"

    return {
        "search by company number": by_number,
        "search by sso id": by_sso_id,
        "search by company name (prefix)": by_name,
        "search by e-mail": by_email,
        "enrolment detail": detail,
        "rejections": lambda: ("/ops/rejections", "rejected-"),
        "overview": lambda: ("/ops/", f"<td class=\"number\">{rows:,}</td>"),
    }


def measure(database: str, database_url: str, rows: int, repeats: int, logs: Path) -> list[dict]:
    port = benchlib.free_port()
    env = {"DATABASE_URL": database_url, "QUEUE_BACKEND": "database", "UI_SECRET": benchlib.FAKE_SECRET,
           "SQS_ENROLMENT_QUEUE_NAME": "enrolment", "SQS_INVALID_ENROLMENT_QUEUE_NAME": "enrolment-invalid",
           "OPS_PASSWORD": PASSWORD}
    server = benchlib.start([*benchlib.app_command(), "serve", "--host", "127.0.0.1", "--port", str(port)], env=env,
                            log=logs / f"console-{database}.log")
    results = []
    try:
        base = f"http://127.0.0.1:{port}"
        benchlib.wait_for_http(f"{base}/", timeout=30, process=server)
        session = requests.Session()
        session.auth = ("ops", PASSWORD)
        rng = random.Random(12)
        for name, next_request in pages(rows, rng).items():
            for _ in range(max(5, repeats // 20)):  # warm: connections, caches, the first template render
                session.get(base + next_request()[0], timeout=30)
            times = []
            for _ in range(repeats):
                path, expected = next_request()
                started = time.perf_counter()
                answer = session.get(base + path, timeout=30)
                times.append((time.perf_counter() - started) * 1000)
                if answer.status_code != 200 or expected not in answer.text:
                    raise AssertionError(f"{path}: {answer.status_code}, {expected!r} not in the page")
            times.sort()
            results.append({
                "database": database, "page": name, "enrolments": rows, "requests": repeats,
                "p50_ms": round(statistics.median(times), 1),
                "p99_ms": round(times[min(len(times) - 1, int(len(times) * 0.99))], 1),
                "max_ms": round(times[-1], 1),
            })
            print(f"  {name}: p50 {results[-1]['p50_ms']} ms, p99 {results[-1]['p99_ms']} ms", flush=True)
    finally:
        benchlib.stop(server)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5,000 enrolments, 100 requests a page")
    parser.add_argument("--enrolments", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=1_000, help="requests a page")
    arguments = parser.parse_args()
    if arguments.quick:
        arguments.enrolments, arguments.requests = 5_000, 100
    info = benchlib.begin()
    directory = Path(tempfile.mkdtemp(prefix="bench-console-"))
    logs = benchlib.logs_folder()
    rows = []
    try:
        if benchlib.postgres_available():
            with benchlib.throwaway_postgres("console") as postgres_url:
                benchlib.migrate(postgres_url)
                print(f"PostgreSQL: filling {arguments.enrolments:,} enrolments", flush=True)
                fill_postgres(postgres_url, arguments.enrolments)
                rows += measure("PostgreSQL", postgres_url, arguments.enrolments, arguments.requests, logs)
        else:
            print(f"PostgreSQL at {benchlib.POSTGRES_ADMIN_URL} cannot be reached: its rows are left out")
        sqlite_url = f"sqlite:///{directory / 'console.sqlite3'}"
        benchlib.migrate(sqlite_url)
        print(f"SQLite: filling {arguments.enrolments:,} enrolments", flush=True)
        fill_sqlite(sqlite_url, arguments.enrolments)
        rows += measure("SQLite", sqlite_url, arguments.enrolments, arguments.requests, logs)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    benchlib.report("console", rows, COLUMNS, info, quick=arguments.quick, app=benchlib.app_kind())
    return 0


if __name__ == "__main__":
    sys.exit(main())
