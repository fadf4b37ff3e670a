"""Benchmark `serve`: signed enrolments/s and latency at 1, 16, 64 and 256 connections, beside the single-process floor.

Targets, each in its own processes: the floor (scripts/floor_app.py: mohawk +
json + boto3 on waitress, one process), `serve --processes 1` and
`serve --processes auto` on SQS (the in-memory stub, scripts/sqs_stub.py),
and `serve --processes auto` on the database queue (SQLite; PostgreSQL when
127.0.0.1:5432 answers). Every request is signed with sigauth before the timed
window, each with its own nonce. Afterwards every 202's id must be on the
queue, and replayed signatures, sent on fresh connections that the kernel
spreads over the processes, must all be refused with 401.

    .venv/bin/python scripts/bench_serve.py            # full run, a few minutes
    .venv/bin/python scripts/bench_serve.py --quick    # does it work? ~30 s
    .venv/bin/python scripts/bench_serve.py --targets floor,serve-1   # one serve process against the floor
    # what request ids, access lines and metrics cost (each against serve --bare):
    .venv/bin/python scripts/bench_serve.py --targets serve-1,serve-1-bare,serve-auto,serve-auto-bare --repeats 3
"""

import argparse
import contextlib
import datetime
import os
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import benchlib
import loadgen

QUEUE = "bench-enrolment"
INVALID_QUEUE = "bench-enrolment-invalid"
SENDER_ID = "bench"
REPLAYS = 64
COLUMNS = [
    ("target", "target"), ("queue", "queue"), ("connections", "conns"), ("requests", "requests"),
    ("rate", "req/s"), ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"), ("not_202", "not 202"),
    ("server_cpu_ms", "server CPU ms/req"), ("client_cpu_us", "client CPU us/req"),
    ("machine_busy_pct", "machine busy %"), ("other_work_pct", "other work %"),
]
# The table printed: the measures, then how they compare (docs/performance.md shows some of them).
TABLE_COLUMNS = COLUMNS + [("vs_floor", "x floor"), ("rates", "req/s of each round")]


def payload(number: int) -> bytes:
    """A valid enrolment, unique by sso_id and company_number."""
    return benchlib.enrolment(number, first_sso_id=1_000_000, first_company=0, mobile_number="07700900000").encode()


def signed_requests(port: int, first: int, count: int) -> list[bytes]:
    """`count` signed POST /enrolment/ requests, ready to send; every nonce distinct."""
    from sigauth.helpers import RequestSigner

    signer = RequestSigner(secret=benchlib.FAKE_SECRET, sender_id=SENDER_ID)
    url = f"http://127.0.0.1:{port}/enrolment/"
    requests: list[bytes] = []
    nonces: set[str] = set()
    number = first
    while len(requests) < count:
        body = payload(number)
        header = signer.get_signature_headers(url, body, "POST", "application/json")["X-Signature"]
        nonce = header.rsplit('nonce="', 1)[1].split('"', 1)[0]
        if nonce in nonces:
            continue  # a 6-character nonce repeats now and then; a repeat would be a replay
        nonces.add(nonce)
        requests.append(loadgen.build_request("POST", "/enrolment/", port, {
            "Content-Type": "application/json", "X-Signature": header}, body))
        number += 1
    return requests


class Target:
    """A server under test: how to start it and how to read back what reached its queue."""

    # Given by make_target: what the caller enters around the run, and the database `migrate` prepares first.
    database: contextlib.AbstractContextManager
    migrate_url: str | None

    def __init__(self, name: str, queue: str, command: Sequence[str | Path], env: dict, queue_ids):
        self.name, self.queue, self.command, self.env, self.queue_ids = name, queue, command, env, queue_ids
        self.process: subprocess.Popen | None = None
        self.port = benchlib.free_port()

    def start(self, log: Path) -> None:
        command = [str(part).format(port=self.port) for part in self.command]
        self.process = benchlib.start(command, env=self.env, log=log)
        try:
            if "floor" in self.name:
                benchlib.wait_for_port(self.port, timeout=60, process=self.process)
            else:
                benchlib.wait_for_http(f"http://127.0.0.1:{self.port}/", timeout=60, process=self.process)
        except BaseException:
            benchlib.stop(self.process)  # the caller stops only a target that started
            raise


def serve_env(endpoint: str | None, database_url: str, backend: str) -> dict:
    env = {**benchlib.FAKE_AWS, "UI_SECRET": benchlib.FAKE_SECRET, "DATABASE_URL": database_url,
           "QUEUE_BACKEND": backend, "SQS_ENROLMENT_QUEUE_NAME": QUEUE,
           "SQS_INVALID_ENROLMENT_QUEUE_NAME": INVALID_QUEUE}
    if endpoint:
        env["SQS_ENDPOINT_URL"] = endpoint
    return env


def database_queue_ids(database_url: str):
    """A function that reads the ids on the database queue (the queue_message table)."""

    def read() -> set[str]:
        if database_url.startswith("sqlite"):
            connection = sqlite3.connect(database_url.split(":///", 1)[1])
            marker = "?"
        else:
            import psycopg2

            connection = psycopg2.connect(database_url)
            marker = "%s"
        try:
            cursor = connection.cursor()
            cursor.execute(f"SELECT id FROM queue_message WHERE queue = {marker}", (QUEUE,))
            return {row[0] for row in cursor.fetchall()}
        finally:
            connection.close()

    return read


def measure(target: Target, levels: list[tuple[int, int]], max_seconds: float, first: int, stub) -> list[dict]:
    """Run each (connections, requests) level against a started target; check the queue and replays."""
    assert target.process is not None
    rows, accepted, used = [], [], []
    number = first
    postgres_pids = benchlib.pids_named("postgres")
    # Warm-up: connections, imports and caches, outside every timed window; its ids are checked too.
    warm = loadgen.run(target.port, signed_requests(target.port, number, 100), 16, max_seconds)
    number += 100
    accepted += loadgen.accepted_ids(warm)
    for connections, count in levels:
        requests = signed_requests(target.port, number, count)
        number += count
        groups = {"server": [target.process.pid], "stub": [stub.pid] if stub else [],
                  "postgres": postgres_pids, "client": [os.getpid()]}
        meter = benchlib.CpuMeter(groups)
        run = loadgen.run(target.port, requests, connections, max_seconds)
        cpu = meter.result()
        accepted += loadgen.accepted_ids(run)
        answered = zip(requests, run.answers, strict=False)
        used += [request for request, answer in answered if answer.status == 202][:REPLAYS]
        done = len(run.answers) or 1
        rows.append({
            "target": target.name, "queue": target.queue, "connections": connections, "requests": len(run.answers),
            "rate": round(run.rate, 1), "p50_ms": round(1000 * run.percentile(0.5), 2),
            "p99_ms": round(1000 * run.percentile(0.99), 2),
            "not_202": len(run.answers) - sum(1 for answer in run.answers if answer.status == 202),
            "statuses": {str(code): n for code, n in run.statuses().items()}, "closed_connections": run.failures,
            "server_cpu_ms": round(1000 * cpu["cpu_s_server"] / done, 3),
            "client_cpu_us": round(1e6 * cpu["cpu_s_client"] / done, 1),
            "stub_cpu_us": round(1e6 * cpu["cpu_s_stub"] / done, 1),
            "postgres_cpu_ms": round(1000 * cpu["cpu_s_postgres"] / done, 3),
            "machine_busy_pct": cpu["machine_busy_pct"], "other_work_pct": cpu["other_work_pct"],
            "load_average": os.getloadavg(),
        })
    # Replays: signatures already accepted, each on its own fresh connection.
    replay = loadgen.run(target.port, used[:REPLAYS], connections=len(used[:REPLAYS]) or 1, max_seconds=max_seconds)
    replay_statuses = replay.statuses()
    on_queue = target.queue_ids()
    missing = set(accepted) - on_queue
    peak_rss = benchlib.peak_rss_mib(target.process.pid)
    for row in rows:
        row.update({
            "accepted_total": len(accepted), "missing_from_queue": len(missing),
            "replays_sent": len(replay.answers), "replays_refused": replay_statuses.get(401, 0),
            "peak_rss_mib": peak_rss,
        })
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run that checks the script works")
    parser.add_argument("--connections", default="1,16,64,256", help="comma-separated connection counts")
    parser.add_argument("--requests", type=int, default=4000, help="requests per level (1 connection: a quarter)")
    parser.add_argument("--max-seconds", type=float, default=20.0,
                        help="cap on each timed window (signatures are valid for 60 s)")
    parser.add_argument("--repeats", type=int,
                        help="rounds over every target (default 2, 1 with --quick); the table shows each level's best")
    parser.add_argument("--targets", default="floor,serve-1,serve-auto,serve-auto-sqlite,serve-auto-postgres",
                        help="which of floor, serve-1, serve-auto, serve-auto-sqlite, serve-auto-postgres to run; "
                             "serve-1-bare and serve-auto-bare run without request ids, access lines and metrics")
    arguments = parser.parse_args()
    if arguments.repeats is None:
        arguments.repeats = 1 if arguments.quick else 2
    if arguments.quick:
        arguments.requests, arguments.max_seconds = 300, 10.0
    connection_counts = [int(value) for value in arguments.connections.split(",")]
    levels = [(c, max(arguments.requests // 4, 50) if c == 1 else arguments.requests) for c in connection_counts]
    wanted = arguments.targets.split(",")

    info = benchlib.begin()

    work_directory = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    logs = benchlib.logs_folder()
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    stub, endpoint = benchlib.start_stub(log=logs / f"serve-{stamp}-stub.log")
    app = benchlib.app_command()
    rows = []
    try:
        for index, name in [(r * len(wanted) + i, name) for r in range(arguments.repeats)
                            for i, name in enumerate(wanted)]:
            target = make_target(name, app, endpoint, work_directory)
            if target is None:
                print(f"{name}: skipped (PostgreSQL at 127.0.0.1:5432 does not answer)")
                continue
            with target.database:
                if target.migrate_url:
                    benchlib.migrate(target.migrate_url)
                target.start(logs / f"serve-{stamp}-{name}.log")
                assert target.process is not None
                try:
                    rows += measure(target, levels, arguments.max_seconds, first=index * 1_000_000, stub=stub)
                finally:
                    benchlib.stop(target.process)
            print(f"{name}: done")
    finally:
        benchlib.stop(stub)

    rows = benchlib.best_of(rows, ("target", "connections"))
    add_ratios(rows)
    totals = []
    for name in dict.fromkeys(row["target"] for row in rows):
        row = next(row for row in rows if row["target"] == name)
        totals.append(f"{name}: {row['accepted_total']} accepted, {row['missing_from_queue']} missing from the queue; "
                      f"replays refused {row['replays_refused']}/{row['replays_sent']}; "
                      f"peak RSS MiB {row['peak_rss_mib']}")
    benchlib.report("serve", rows, TABLE_COLUMNS, info, notes=["", *totals, *observing_cost(rows)],
                    quick=arguments.quick)
    failed = [row for row in rows if row["missing_from_queue"] or row["replays_refused"] != row["replays_sent"]]
    return 1 if failed else 0


def add_ratios(rows: list[dict]) -> None:
    """Each row's req/s over the floor's at the same number of connections."""
    floor = {row["connections"]: row["rate"] for row in rows if row["target"] == "floor"}
    for row in rows:
        base = floor.get(row["connections"])
        row["vs_floor"] = round(row["rate"] / base, 2) if base else None


def observing_cost(rows: list[dict]) -> list[str]:
    """What request ids, access lines and metrics cost: each target against its -bare twin, level by level."""
    bare = {(row["target"].removesuffix("-bare"), row["connections"]): row for row in rows
            if row["target"].endswith("-bare")}
    lines = []
    for row in rows:
        twin = bare.get((row["target"], row["connections"]))
        if twin is None or row["target"].endswith("-bare") or not twin["rate"]:
            continue
        lines.append(
            f"observing cost, {row['target']} at {row['connections']} connections: "
            f"{row['rate']} vs {twin['rate']} req/s ({100 * (row['rate'] / twin['rate'] - 1):+.1f}%), "
            f"server CPU {row['server_cpu_ms']} vs {twin['server_cpu_ms']} ms/req "
            f"({row['server_cpu_ms'] - twin['server_cpu_ms']:+.3f} ms)"
        )
    return lines


def make_target(name: str, app: list[str], endpoint: str, directory: Path) -> Target | None:
    """The target called `name`, with the database it needs (entered by the caller)."""
    sqlite_url = f"sqlite:///{directory / (name + '.sqlite3')}"
    serve = [*app, "serve", "--host", "127.0.0.1", "--port", "{port}", "--processes"]
    if name == "floor":
        target = Target(name, "sqs", [sys.executable, benchlib.ROOT / "scripts" / "floor_app.py", "--port", "{port}",
                                      "--queue", QUEUE], {**benchlib.FAKE_AWS, "UI_SECRET": benchlib.FAKE_SECRET,
                                                          "SQS_ENDPOINT_URL": endpoint},
                        lambda: benchlib.stub_message_ids(endpoint, QUEUE))
        target.database, target.migrate_url = contextlib.nullcontext(), None
        return target
    if name.removesuffix("-bare") in ("serve-1", "serve-auto"):
        processes = "1" if name.startswith("serve-1") else "auto"
        # -bare: without request ids, access lines and metrics, to measure what they cost.
        bare = ["--bare"] if name.endswith("-bare") else []
        target = Target(name, "sqs", serve + [processes] + bare, serve_env(endpoint, sqlite_url, "sqs"),
                        lambda: benchlib.stub_message_ids(endpoint, QUEUE))
        target.database, target.migrate_url = contextlib.nullcontext(), sqlite_url
        return target
    if name == "serve-auto-sqlite":
        target = Target(name, "sqlite", serve + ["auto"], serve_env(None, sqlite_url, "database"),
                        database_queue_ids(sqlite_url))
        target.database, target.migrate_url = contextlib.nullcontext(), sqlite_url
        return target
    if name == "serve-auto-postgres":
        if not benchlib.postgres_available():
            return None
        database = benchlib.throwaway_postgres("serve")
        target = Target(name, "postgres", serve + ["auto"], serve_env(None, database.url, "database"),
                        database_queue_ids(database.url))
        target.database, target.migrate_url = database, database.url
        return target
    raise SystemExit(f"--targets: unknown target {name!r}")


if __name__ == "__main__":
    sys.exit(main())
