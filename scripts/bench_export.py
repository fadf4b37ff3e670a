"""Benchmark `export`'s memory: peak RSS of `export enrolments` over a table of 1,000 and of 1,000,000 rows.

export streams (a server-side cursor on PostgreSQL, SQLite's own stepping),
so its peak resident set should not grow with the table. Each size is filled
straight with SQL (realistic payloads of about 300 bytes), exported with
`directory-api export enrolments --output FILE` as a child process, and the
child's peak RSS read from wait4's rusage; the file's rows are counted.

    .venv/bin/python scripts/bench_export.py            # 1,000 and 1,000,000 rows, PostgreSQL and SQLite
    .venv/bin/python scripts/bench_export.py --quick    # 1,000 and 20,000 rows
"""

import argparse
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import benchlib

COLUMNS = [("database", "database"), ("rows", "rows"), ("peak_rss_mib", "peak RSS MiB"), ("seconds", "seconds"),
           ("rows_per_second", "rows/s"), ("csv_mib", "CSV MiB"), ("rows_in_csv", "rows in CSV")]

# One enrolment payload as the worker stores it, built by the database itself from n.
POSTGRES_FILL = """
INSERT INTO enrolment (created, data, sqs_message_id)
SELECT now() at time zone 'utc' - make_interval(secs => %(rows)s - n),
       jsonb_build_object(
           'sso_id', n, 'company_number', lpad(n::text, 8, '0'), 'company_name', 'Export Bench Company ' || n || ' Ltd',
           'company_email', 'bench' || n || '@example.com', 'export_status', 'YES', 'date_of_creation', '2010-06-15',
           'mobile_number', '07700900000', 'referrer', 'bench', 'revenue', '125000.50'),
       'bench-' || n
FROM generate_series(1, %(rows)s) AS n
"""
SQLITE_FILL = """
WITH RECURSIVE numbers(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM numbers WHERE n < :rows)
INSERT INTO enrolment (created, data, sqs_message_id)
SELECT datetime('now', '-' || (:rows - n) || ' seconds'),
       json_object(
           'sso_id', n, 'company_number', printf('%08d', n), 'company_name', 'Export Bench Company ' || n || ' Ltd',
           'company_email', 'bench' || n || '@example.com', 'export_status', 'YES', 'date_of_creation', '2010-06-15',
           'mobile_number', '07700900000', 'referrer', 'bench', 'revenue', '125000.50'),
       'bench-' || n
FROM numbers
"""


def fill_postgres(url: str, rows: int) -> None:
    import psycopg2

    with psycopg2.connect(url) as connection, connection.cursor() as cursor:
        cursor.execute("TRUNCATE enrolment CASCADE")
        cursor.execute(POSTGRES_FILL, {"rows": rows})
        cursor.execute("ANALYZE enrolment")


def fill_sqlite(url: str, rows: int) -> None:
    with sqlite3.connect(url.removeprefix("sqlite:///")) as connection:
        connection.execute("DELETE FROM enrolment")
        connection.execute(SQLITE_FILL, {"rows": rows})


def count_rows(path: Path) -> int:
    """Data rows of the CSV (lines less the header; no value of these rows holds a line break)."""
    lines = 0
    with path.open("rb") as csv_file:
        while chunk := csv_file.read(1 << 20):
            lines += chunk.count(b"\n")  # not CRLF: a chunk may end between the two
    return lines - 1


def export_once(database_url: str, directory: Path) -> dict:
    """Run `export enrolments --output` as a child; its peak RSS (wait4's ru_maxrss), time and output."""
    output = directory / "enrolments.csv"
    env = {**os.environ, "DATABASE_URL": database_url}
    started = time.monotonic()
    child = subprocess.Popen([*benchlib.app_command(), "export", "enrolments", "--output", str(output)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.monotonic() - started
    assert child.stderr is not None
    stderr = child.stderr.read().decode(errors="replace")
    child.stderr.close()
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise RuntimeError(f"export exited {child.returncode}: {stderr}")
    result = {"peak_rss_mib": round(usage.ru_maxrss / 1024, 1), "seconds": round(seconds, 1),
              "csv_mib": round(output.stat().st_size / 1024 / 1024, 1), "rows_in_csv": count_rows(output)}
    output.unlink()
    return result


def measure(database: str, database_url: str, fill, sizes: list[int], directory: Path) -> list[dict]:
    rows = []
    for size in sizes:
        print(f"{database}: filling {size:,} enrolments", flush=True)
        fill(database_url, size)
        print(f"{database}: exporting {size:,} enrolments", flush=True)
        result = export_once(database_url, directory)
        assert result["rows_in_csv"] == size, f"exported {result['rows_in_csv']:,} rows of {size:,}"
        rows.append({"database": database, "rows": size, **result,
                     "rows_per_second": round(size / result["seconds"]) if result["seconds"] else None})
        print(f"  peak RSS {result['peak_rss_mib']} MiB, {result['seconds']} s", flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 and 20,000 rows: checks the script works")
    parser.add_argument("--rows", type=int, default=1_000_000, help="the large table's rows")
    arguments = parser.parse_args()
    sizes = [1_000, 20_000 if arguments.quick else arguments.rows]
    info = benchlib.begin()
    directory = Path(tempfile.mkdtemp(prefix="bench-export-"))
    rows = []
    try:
        sqlite_url = f"sqlite:///{directory / 'export.sqlite3'}"
        benchlib.migrate(sqlite_url)
        rows += measure("SQLite", sqlite_url, fill_sqlite, sizes, directory)
        if benchlib.postgres_available():
            with benchlib.throwaway_postgres("export") as postgres_url:
                benchlib.migrate(postgres_url)
                rows += measure("PostgreSQL", postgres_url, fill_postgres, sizes, directory)
        else:
            print(f"PostgreSQL at {benchlib.POSTGRES_ADMIN_URL} cannot be reached: its rows are left out")
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    benchlib.report("export", rows, COLUMNS, info, quick=arguments.quick, app=benchlib.app_kind())
    return 0


if __name__ == "__main__":
    sys.exit(main())
