"""Benchmark `work`: messages/s to drain valid enrolments into PostgreSQL, beside two hand-written drains.

For each run a fresh PostgreSQL database is migrated, N valid enrolments
(unique sso_id and company_number) are preloaded on the queue, the drain is
started and timed until the enrolment table holds N rows, then stopped.
Runs: `work` at 1 and 3 workers on SQS (the in-memory stub) and on the
database queue (PostgreSQL), each with the confirmation e-mail off (no
EMAIL_HOST: recorded and logged) and on (sent over SMTP to
scripts/smtp_sink.py, an aiosmtpd sink); the one-at-a-time baseline (receive
1, save it in its own transaction, delete it) and the batch floor (receive 10,
insert them with one statement, commit once, DeleteMessageBatch), both
written here with boto3 + psycopg2. Each run is checked: N rows, N distinct
message ids, exactly the ids sent, nothing left on the queue, nothing set
aside, and N e-mails sent (or logged), each Message-ID once at the sink.
The drain's rate and CPU are timed from the first enrolment saved to the last
(start-up left out); the e-mails' rate from the first enrolment saved to the
last e-mail sent. Ratios compare drains of the same round (median over rounds).

    .venv/bin/python scripts/bench_work.py            # 5,000 messages a run
    .venv/bin/python scripts/bench_work.py --quick    # 300, to check it works
    .venv/bin/python scripts/bench_work.py --queues sqs --workers 1 --repeats 3   # e-mail off and on, 1 worker
    .venv/bin/python scripts/bench_work.py --drains batch,work --queues sqs --emails off --messages 20000
"""

import argparse
import contextlib
import dataclasses
import datetime
import json
import os
import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import benchlib

QUEUE = "bench-work"
INVALID_QUEUE = "bench-work-invalid"
SINK = Path(__file__).resolve().parent / "smtp_sink.py"
COLUMNS = [
    ("drain", "drain"), ("queue", "queue"), ("workers", "workers"), ("emails", "e-mail"), ("messages", "messages"),
    ("rate", "msg/s"), ("seconds", "s"), ("vs_email_off", "x e-mail off"), ("email_rate", "e-mails/s"),
    ("emails_by_drain_end", "e-mails done at drain end"), ("worker_cpu_ms", "worker CPU ms/msg"),
    ("postgres_cpu_ms", "postgres CPU ms/msg"), ("exactly_once", "exactly once"),
    ("machine_busy_pct", "machine busy %"), ("other_work_pct", "other work %"),
]
# The table printed: the measures, then how they compare (docs/performance.md shows some of them).
TABLE_COLUMNS = COLUMNS + [("vs_batch_floor", "x batch floor"), ("vs_one", "x one-at-a-time"),
                           ("rates", "msg/s of each round"), ("floor_ratios", "x batch floor of each round")]


def payload(number: int) -> str:
    # Numbers apart from bench_serve's, so the two can share a database without colliding.
    return benchlib.enrolment(number, first_sso_id=5_000_000, first_company=50_000_000,
                              export_status="ONE_TWO_YEARS_AGO")


# -- the two hand-written drains (run as `bench_work.py --drain one|batch ...` child processes) ------------

def drain_one_at_a_time(client, queue_url: str, connection) -> None:
    """Receive 1, save it (enrolment, company, supplier) in its own transaction, delete it; until stopped."""
    while True:
        for message in client.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=1,
                                              WaitTimeSeconds=1).get("Messages", []):
            data = json.loads(message["Body"])
            with connection, connection.cursor() as cursor:
                cursor.execute(
                    "INSERT INTO company (number, name, export_status, date_of_creation, created, modified) "
                    "VALUES (%s, %s, %s, %s, now(), now()) RETURNING id",
                    (data["company_number"], data["company_name"], data["export_status"], data["date_of_creation"]))
                company_id = cursor.fetchone()[0]
                cursor.execute(
                    "INSERT INTO supplier (sso_id, company_email, mobile_number, referrer, company_id, created, "
                    "modified) VALUES (%s, %s, '', %s, %s, now(), now())",
                    (data["sso_id"], data["company_email"], data.get("referrer", ""), company_id))
                cursor.execute("INSERT INTO enrolment (created, data, sqs_message_id) VALUES (now(), %s, %s)",
                               (message["Body"], message["MessageId"]))
            client.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])


# One statement writes all three tables for a batch (data-modifying CTEs).
BATCH_INSERT = """
WITH input (message_id, body, number, name, export_status, date_of_creation, sso_id, email, referrer) AS (VALUES %s),
company_rows AS (
    INSERT INTO company (number, name, export_status, date_of_creation, created, modified)
    SELECT number, name, export_status, date_of_creation::date, now(), now() FROM input RETURNING id, number),
supplier_rows AS (
    INSERT INTO supplier (sso_id, company_email, mobile_number, referrer, company_id, created, modified)
    SELECT input.sso_id::bigint, input.email, '', input.referrer, company_rows.id, now(), now()
    FROM input JOIN company_rows ON company_rows.number = input.number)
INSERT INTO enrolment (created, data, sqs_message_id) SELECT now(), body::jsonb, message_id FROM input
"""


def drain_in_batches(client, queue_url: str, connection) -> None:
    """Receive 10, insert them with one statement, commit once, delete them with one DeleteMessageBatch."""
    from psycopg2.extras import execute_values

    while True:
        messages = client.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10,
                                          WaitTimeSeconds=1).get("Messages", [])
        if not messages:
            continue
        rows = []
        for message in messages:
            data = json.loads(message["Body"])
            rows.append((message["MessageId"], message["Body"], data["company_number"], data["company_name"],
                         data["export_status"], data["date_of_creation"], data["sso_id"], data["company_email"],
                         data.get("referrer", "")))
        with connection, connection.cursor() as cursor:
            execute_values(cursor, BATCH_INSERT, rows, page_size=len(rows))
        answer = client.delete_message_batch(QueueUrl=queue_url, Entries=[
            {"Id": str(index), "ReceiptHandle": message["ReceiptHandle"]} for index, message in enumerate(messages)])
        if answer.get("Failed"):
            raise SystemExit(f"DeleteMessageBatch failed for {answer['Failed']}")


def run_drain(kind: str, endpoint: str, database_url: str) -> None:
    import psycopg2

    client = benchlib.sqs_client(endpoint)
    queue_url = client.get_queue_url(QueueName=QUEUE)["QueueUrl"]
    connection = psycopg2.connect(database_url)
    with contextlib.suppress(KeyboardInterrupt):
        (drain_one_at_a_time if kind == "one" else drain_in_batches)(client, queue_url, connection)


# -- preloading and checking ---------------------------------------------------------------------------------

def preload_sqs(endpoint: str, count: int) -> set[str]:
    client = benchlib.sqs_client(endpoint)
    for name in (QUEUE, INVALID_QUEUE):
        client.create_queue(QueueName=name)
    url = client.get_queue_url(QueueName=QUEUE)["QueueUrl"]
    client.purge_queue(QueueUrl=url)
    ids = set()
    for start in range(0, count, 10):
        entries = [{"Id": str(n), "MessageBody": payload(n)} for n in range(start, min(start + 10, count))]
        ids |= {entry["MessageId"] for entry in client.send_message_batch(QueueUrl=url, Entries=entries)["Successful"]}
    return ids


def preload_database(database_url: str, count: int) -> set[str]:
    """Through the project's own database queue, as serve would have put them there."""
    sys.path.insert(0, str(benchlib.ROOT))
    from directory_api import db
    from directory_api.queues.database import DatabaseQueue
    from directory_api.settings import Settings

    settings = Settings.from_environ({**work_env(None, database_url, "database")}, require=())
    database = db.bind(database_url)
    try:
        queue = DatabaseQueue(settings, QUEUE)
        ids: set[str] = set()
        for start in range(0, count, 500):
            taken = queue.send_batch([payload(n) for n in range(start, min(start + 500, count))])
            # The ids the queue took, as preload_sqs keeps the Successful: a refusal leaves the drain short of count.
            ids |= {message_id for message_id in taken if message_id is not None}
        return ids
    finally:
        database.close()


def scalar(database_url: str, statement: str, parameters=()):
    import psycopg2

    connection = psycopg2.connect(database_url)
    try:
        with connection.cursor() as cursor:
            cursor.execute(statement, parameters)
            return cursor.fetchall()
    finally:
        connection.close()


def check(database_url: str, sent: set[str], remaining_on_queue: int) -> dict:
    saved = [row[0] for row in scalar(database_url, "SELECT sqs_message_id FROM enrolment")]
    rejected = scalar(database_url, "SELECT count(*) FROM rejection")[0][0]
    companies = scalar(database_url, "SELECT count(*) FROM company")[0][0]
    suppliers = scalar(database_url, "SELECT count(*) FROM supplier")[0][0]
    exactly_once = (len(saved) == len(set(saved)) == len(sent) and set(saved) == sent
                    and companies == suppliers == len(sent) and not rejected and remaining_on_queue == 0)
    return {"saved_rows": len(saved), "distinct_ids": len(set(saved)), "same_ids_as_sent": set(saved) == sent,
            "companies": companies, "suppliers": suppliers, "rejected": rejected,
            "left_on_queue": remaining_on_queue, "exactly_once": exactly_once}


def work_env(endpoint: str | None, database_url: str, backend: str, smtp_port: int | None = None) -> dict:
    env = {**benchlib.FAKE_AWS, "DATABASE_URL": database_url, "QUEUE_BACKEND": backend,
           "SQS_ENROLMENT_QUEUE_NAME": QUEUE, "SQS_INVALID_ENROLMENT_QUEUE_NAME": INVALID_QUEUE}
    if endpoint:
        env["SQS_ENDPOINT_URL"] = endpoint
    if smtp_port:
        env.update(EMAIL_HOST="127.0.0.1", EMAIL_PORT=str(smtp_port), EMAIL_USE_TLS="false",
                   DEFAULT_FROM_EMAIL="noreply@example.com",
                   COMPANY_EMAIL_CONFIRMATION_URL="https://directory.example.com/confirm/")
    return env


def start_sink(out: Path, log: Path):
    """scripts/smtp_sink.py on a free port, each message it accepts a JSON line in `out`; (process, port)."""
    port = benchlib.free_port()
    process = benchlib.start([sys.executable, SINK, "--port", port, "--out", out], log=log)
    deadline = time.monotonic() + 15
    while "ready" not in (log.read_text() if log.exists() else ""):
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the SMTP sink did not start: {log.read_text() if log.exists() else ''}")
        time.sleep(0.05)
    return process, port


def emails_done(database_url: str) -> int:
    return scalar(database_url, "SELECT count(*) FROM email WHERE state IN ('sent', 'logged')")[0][0]


def sink_message_id(data: str) -> str:
    """The Message-ID header of a message as the sink recorded it."""
    found = re.search(r"^Message-ID: (\S+)", data, re.M)
    assert found, data
    return found.group(1)


def check_emails(database_url: str, count: int, sink_out: Path | None) -> dict:
    """Every enrolment's e-mail done (sent, or logged with e-mail off), and at the sink each Message-ID once."""
    done = emails_done(database_url)
    at_sink = None
    if sink_out is not None:
        records = [json.loads(line) for line in sink_out.read_text().splitlines() if line.strip()]
        ids = [sink_message_id(record["data"]) for record in records]
        at_sink = {"received": len(ids), "distinct": len(set(ids))}
    once = done == count and (at_sink is None or at_sink["received"] == at_sink["distinct"] == count)
    return {"emails_done": done, "emails_at_sink": at_sink, "emails_once": once}


@dataclasses.dataclass
class Timing:
    """When a drain saved its first row and its last, and when the e-mails caught up (monotonic seconds)."""

    started: float
    first_row_at: float | None = None
    done_at: float | None = None
    saved: int = 0
    cpu: dict = dataclasses.field(default_factory=dict)
    emails_at_drain_end: int | None = None
    emails_done_at: float | None = None


def drain(name: str, queue: str, workers: int, count: int, endpoint: str, stub, max_seconds: float, logs: Path,
          stamp: str, emails: str = "off") -> dict:
    """One timed drain of `count` messages into a fresh database; the row for the table."""
    sink, sink_port, sink_out = None, None, None
    if name == "work" and emails == "on":
        sink_out = logs / f"work-{stamp}-{queue}-{workers}-{time.monotonic_ns()}-mails.jsonl"
        sink, sink_port = start_sink(sink_out, logs / f"work-{stamp}-smtp.log")
    with benchlib.throwaway_postgres("work") as database_url, contextlib.ExitStack() as cleanup:
        if sink is not None:
            cleanup.callback(benchlib.stop, sink)
        benchlib.migrate(database_url)
        sent = preload_sqs(endpoint, count) if queue == "sqs" else preload_database(database_url, count)
        command = drain_command(name, endpoint, database_url)
        env = work_env(endpoint if queue == "sqs" else None, database_url, "sqs" if queue == "sqs" else "database",
                       sink_port)
        postgres = benchlib.pids_named("postgres")
        timing = Timing(started=time.monotonic())
        processes = [benchlib.start(command, env=env, log=logs / f"work-{stamp}-{name}-{queue}-{workers}.log")
                     for _ in range(workers)]
        groups = {"worker": [p.pid for p in processes], "stub": [stub.pid] if queue == "sqs" else [],
                  "postgres": postgres, "smtp": [sink.pid] if sink else []}
        try:
            watch_drain(timing, database_url, count, processes, groups, max_seconds)
            if name == "work" and timing.done_at is not None:
                wait_for_emails(timing, database_url, count, max_seconds)
            rss = [peak for process in processes for peak in benchlib.peak_rss_mib(process.pid)]
        finally:
            codes = [benchlib.stop(process) for process in processes]
        time.sleep(0.2)
        checked = check(database_url, sent, left_on_queue(queue, endpoint, database_url))
        if name == "work":
            checked.update(check_emails(database_url, count, sink_out))
            checked["exactly_once"] = checked["exactly_once"] and checked["emails_once"]
    return drain_row(name, queue, workers, emails, count, timing) | {
        "peak_rss_mib": rss, "exit_codes": codes, "load_average": os.getloadavg(), **checked,
    }


def drain_command(name: str, endpoint: str, database_url: str) -> list:
    """`work` from the app under test, or this script as one of the hand-written drains."""
    if name == "work":
        return [*benchlib.app_command(), "work"]
    return [sys.executable, os.path.abspath(__file__), "--drain", name, "--endpoint", endpoint,
            "--database-url", database_url]


def watch_drain(timing: Timing, database_url: str, count: int, processes: list, groups: dict,
                max_seconds: float) -> None:
    """Poll the enrolment table until it holds `count` rows (or a drain exits, or time runs out), into `timing`."""
    # CPU is metered over the window the rate is timed in (first row to last), so start-up is left out.
    meter = None
    while time.monotonic() - timing.started < max_seconds:
        timing.saved = scalar(database_url, "SELECT count(*) FROM enrolment")[0][0]
        now = time.monotonic()
        if timing.saved and timing.first_row_at is None:
            timing.first_row_at, meter = now, benchlib.CpuMeter(groups)
        if timing.saved >= count:
            timing.done_at = now
            break
        if any(process.poll() is not None for process in processes):
            break
        if meter:
            meter.sample()
        time.sleep(0.02)
    timing.cpu = (meter or benchlib.CpuMeter(groups)).result()


def wait_for_emails(timing: Timing, database_url: str, count: int, max_seconds: float) -> None:
    """The e-mails catch up once the queue is drained: timed separately, after the drain's figures."""
    timing.emails_at_drain_end = emails_done(database_url)
    while time.monotonic() - timing.started < max_seconds:
        if emails_done(database_url) >= count:
            timing.emails_done_at = time.monotonic()
            break
        time.sleep(0.05)


def left_on_queue(queue: str, endpoint: str, database_url: str) -> int:
    if queue == "sqs":
        return len(benchlib.stub_message_ids(endpoint, QUEUE))
    return scalar(database_url, "SELECT count(*) FROM queue_message WHERE queue = %s", (QUEUE,))[0][0]


def drain_row(name: str, queue: str, workers: int, emails: str, count: int, timing: Timing) -> dict:
    """The drain's figures for the table: rates from the first row saved, CPU per message."""
    first_row_at, done_at, emails_done_at, cpu = timing.first_row_at, timing.done_at, timing.emails_done_at, timing.cpu
    seconds = (done_at - first_row_at) if done_at and first_row_at else None
    email_seconds = (emails_done_at - first_row_at) if emails_done_at and first_row_at else None
    return {
        "drain": name, "queue": queue, "workers": workers, "emails": emails if name == "work" else "-",
        "messages": count,
        "rate": round(count / seconds, 1) if seconds else None,
        "email_rate": round(count / email_seconds, 1) if email_seconds else None,
        "emails_by_drain_end": timing.emails_at_drain_end,
        "seconds": round(seconds, 2) if seconds else None,
        "seconds_from_start": round(done_at - timing.started, 2) if done_at else None,
        "saved_before_timeout": timing.saved,
        "worker_cpu_ms": round(1000 * cpu["cpu_s_worker"] / count, 3),
        "stub_cpu_ms": round(1000 * cpu["cpu_s_stub"] / count, 3),
        "postgres_cpu_ms": round(1000 * cpu["cpu_s_postgres"] / count, 3),
        "smtp_cpu_ms": round(1000 * cpu["cpu_s_smtp"] / count, 3),
        "machine_busy_pct": cpu["machine_busy_pct"], "other_work_pct": cpu["other_work_pct"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run that checks the script works")
    parser.add_argument("--messages", type=int, default=5000, help="messages preloaded for each run")
    parser.add_argument("--drains", default="one,batch,work",
                        help="which drains: one (one at a time), batch (the floor), work; ratios need their drain")
    parser.add_argument("--workers", default="1,3", help="comma-separated numbers of `work` processes")
    parser.add_argument("--queues", default="sqs,database", help="sqs and/or database (PostgreSQL)")
    parser.add_argument("--emails", default="off,on",
                        help="the confirmation e-mail off (recorded and logged) and/or on (sent to an aiosmtpd sink)")
    parser.add_argument("--repeats", type=int,
                        help="rounds over every drain (default 2, 1 with --quick); the table shows each drain's "
                             "best round, and ratios as the median of those within each round")
    parser.add_argument("--max-seconds", type=float, default=120.0, help="give up on a drain after this long")
    parser.add_argument("--drain", choices=("one", "batch"), help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    parser.add_argument("--database-url", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.repeats is None:
        arguments.repeats = 1 if arguments.quick else 2
    if arguments.drain:
        run_drain(arguments.drain, arguments.endpoint, arguments.database_url)
        return 0
    if arguments.quick:
        arguments.messages, arguments.max_seconds = 300, 60.0

    info = benchlib.begin()
    if not benchlib.postgres_available():
        print(f"PostgreSQL at {benchlib.POSTGRES_ADMIN_URL} does not answer: nothing to measure")
        return 1
    drains = arguments.drains.split(",")
    runs = [(name, "sqs", 1, "-") for name in ("one", "batch") if name in drains]
    if "work" in drains:
        runs += [("work", queue, int(workers), emails) for queue in arguments.queues.split(",")
                 for workers in arguments.workers.split(",") for emails in arguments.emails.split(",")]
    logs = benchlib.logs_folder()
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    stub, endpoint = benchlib.start_stub(log=logs / f"work-{stamp}-stub.log")
    rows = []
    try:
        for name, queue, workers, emails in runs * arguments.repeats:
            rows.append(drain(name, queue, workers, arguments.messages, endpoint, stub, arguments.max_seconds,
                              logs, stamp, emails))
            email = f", e-mail {emails}: {rows[-1]['email_rate']} e-mails/s" if name == "work" else ""
            print(f"{name} on {queue} x{workers}: {rows[-1]['rate']} msg/s{email}, "
                  f"exactly once: {rows[-1]['exactly_once']}")
    finally:
        benchlib.stop(stub)
    rows = ratios_by_median(rows, len(runs))
    benchlib.report("work", rows, TABLE_COLUMNS, info, quick=arguments.quick)
    return 0 if all(row["exactly_once"] for row in rows) else 1


KEY = ("drain", "queue", "workers", "emails")
RATIOS = ("vs_one", "vs_batch_floor", "vs_email_off")


def ratios_by_median(rows: list[dict], runs: int) -> list[dict]:
    """Each drain's best round, its ratios the median of those taken within each round (`runs` rows a round).

    The machine's speed drifts between rounds (the floor's rate varied by 1.4x from one round to
    the next), so a ratio compares drains of the same round, never one round's best with another's.
    """
    for start in range(0, len(rows), runs):
        add_ratios(rows[start:start + runs])
    by_key: dict[tuple, list[dict]] = {}
    for row in rows:
        by_key.setdefault(tuple(row[name] for name in KEY), []).append(row)
    best = benchlib.best_of(rows, KEY)
    for row in best:
        rounds = by_key[tuple(row[name] for name in KEY)]
        for ratio in RATIOS:
            values = [each[ratio] for each in rounds if each[ratio] is not None]
            row[ratio] = round(statistics.median(values), 3) if values else None
        row["floor_ratios"] = [each["vs_batch_floor"] for each in rounds]
    return best


def add_ratios(rows: list[dict]) -> None:
    one = next((row["rate"] for row in rows if row["drain"] == "one"), None)
    batch = next((row["rate"] for row in rows if row["drain"] == "batch"), None)
    email_off = {(row["queue"], row["workers"]): row["rate"] for row in rows
                 if row["drain"] == "work" and row["emails"] == "off"}
    for row in rows:
        row["vs_one"] = round(row["rate"] / one, 2) if one and row["rate"] else None
        row["vs_batch_floor"] = round(row["rate"] / batch, 2) if batch and row["rate"] else None
        off = email_off.get((row["queue"], row["workers"])) if row["drain"] == "work" else None
        row["vs_email_off"] = round(row["rate"] / off, 3) if off and row["rate"] else None


if __name__ == "__main__":
    sys.exit(main())
