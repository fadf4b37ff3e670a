"""Benchmark start-up and footprint: `--help` and `serve` until GET / answers, cold and warm; pyz size; peak RSS.

Cold: the pyz with a fresh SHIV_ROOT (shiv unpacks its site-packages on first
run). Warm: the same SHIV_ROOT again. Each is repeated and the median shown.
From a checkout (no current pyz) cold and warm are the same command, before
and after Python's bytecode caches exist. Peak RSS (VmHWM) is read per process:
`serve --processes auto` under 16 connections of signed load, and `work` (1
process) draining enrolments from the SQS stub into PostgreSQL.

    .venv/bin/python scripts/bench_startup.py          # 7 repeats
    .venv/bin/python scripts/bench_startup.py --quick  # 2 repeats, smaller load
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import benchlib  # noqa: E402
import bench_serve  # noqa: E402
import bench_work  # noqa: E402
import loadgen  # noqa: E402

COLUMNS = [("measure", "measure"), ("state", "state"), ("median", "median"), ("min", "min"), ("max", "max"),
           ("unit", "unit"), ("runs", "runs")]


def time_help(command: list[str], env: dict) -> float:
    started = time.perf_counter()
    subprocess.run([*command, "--help"], env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def time_serve_ready(command: list[str], env: dict, log: Path) -> float:
    """Seconds from exec to the first 200 from GET /."""
    port = benchlib.free_port()
    started = time.perf_counter()
    process = benchlib.start([*command, "serve", "--host", "127.0.0.1", "--port", port], env=env, log=log)
    try:
        benchlib.wait_for_http(f"http://127.0.0.1:{port}/", timeout=30, process=process, interval=0.005)
        return time.perf_counter() - started
    finally:
        benchlib.stop(process)


def summary(measure: str, state: str, values: list[float], unit: str = "s") -> dict:
    return {"measure": measure, "state": state, "median": round(statistics.median(values), 3),
            "min": round(min(values), 3), "max": round(max(values), 3), "unit": unit, "runs": len(values)}


def startup_rows(repeats: int, directory: Path, logs: Path) -> list[dict]:
    command = benchlib.app_command()
    sqlite_url = f"sqlite:///{directory / 'startup.sqlite3'}"
    env = {**os.environ, **bench_serve.serve_env(None, sqlite_url, "database")}
    benchlib.migrate(sqlite_url)
    on_pyz = benchlib.app_kind() == "pyz"
    rows = []
    for measure, timer in (("--help", lambda e: time_help(command, e)),
                           ("serve ready", lambda e: time_serve_ready(command, e, logs / "startup-serve.log"))):
        cold, warm = [], []
        for attempt in range(repeats):
            root = Path(tempfile.mkdtemp(prefix="shiv-root-", dir=directory))
            fresh = {**env, "SHIV_ROOT": str(root)}
            if not on_pyz:
                clear_bytecode()
            cold.append(timer(fresh))
            warm.append(timer(fresh))
            shutil.rmtree(root, ignore_errors=True)
        rows.append(summary(measure, "cold (fresh SHIV_ROOT)" if on_pyz else "cold (no __pycache__)", cold))
        rows.append(summary(measure, "warm", warm))
    return rows


def clear_bytecode() -> None:
    for cache in (benchlib.ROOT / "directory_api").rglob("__pycache__"):
        shutil.rmtree(cache, ignore_errors=True)


def serve_rss(directory: Path, logs: Path, requests: int) -> dict:
    """Peak RSS of each `serve --processes auto` process after signed load at 16 connections."""
    stub, endpoint = benchlib.start_stub()
    try:
        sqlite_url = f"sqlite:///{directory / 'rss.sqlite3'}"
        benchlib.migrate(sqlite_url)
        target = bench_serve.Target("serve-auto", "sqs", [*benchlib.app_command(), "serve", "--host", "127.0.0.1",
                                                          "--port", "{port}", "--processes", "auto"],
                                    bench_serve.serve_env(endpoint, sqlite_url, "sqs"), None)
        target.start(logs / "startup-rss-serve.log")
        try:
            run = loadgen.run(target.port, bench_serve.signed_requests(target.port, 0, requests), 16)
            peaks = benchlib.peak_rss_mib(target.process.pid)
        finally:
            benchlib.stop(target.process)
    finally:
        benchlib.stop(stub)
    return {"measure": "serve RSS (peak, per process)", "state": f"after {len(run.answers)} requests",
            "median": statistics.median(peaks), "min": min(peaks), "max": max(peaks), "unit": "MiB",
            "runs": len(peaks), "per_process": peaks}


def work_rss(logs: Path, messages: int) -> dict | None:
    if not benchlib.postgres_available():
        return None
    stub, endpoint = benchlib.start_stub()
    try:
        row = bench_work.drain("work", "sqs", 1, messages, endpoint, stub, 120.0, logs, "rss")
    finally:
        benchlib.stop(stub)
    peaks = row["peak_rss_mib"]
    return {"measure": "work RSS (peak, per process)", "state": f"draining {messages} messages",
            "median": statistics.median(peaks), "min": min(peaks), "max": max(peaks), "unit": "MiB",
            "runs": len(peaks), "per_process": peaks}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run that checks the script works")
    parser.add_argument("--repeats", type=int, default=7, help="runs of each measure (the median is shown)")
    arguments = parser.parse_args()
    if arguments.quick:
        arguments.repeats = 2
    if not benchlib.is_built("serve"):
        print("serve is not built yet")
        return 1
    info = benchlib.machine()
    print(benchlib.describe_machine(info))
    print(f"directory-api from: {benchlib.app_kind()} ({' '.join(benchlib.app_command())})")
    directory = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    logs = benchlib.RESULTS / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    try:
        rows = startup_rows(arguments.repeats, directory, logs)
        if benchlib.PYZ.exists():
            rows.append({"measure": "pyz size", "state": "dist/directory-api.pyz",
                         "median": round(benchlib.PYZ.stat().st_size / 1024 / 1024, 2), "unit": "MiB", "runs": 1})
        rows.append(serve_rss(directory, logs, 500 if arguments.quick else 4000))
        if benchlib.is_built("work"):
            work = work_rss(logs, 300 if arguments.quick else 5000)
            if work:
                rows.append(work)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    print()
    print(benchlib.table(rows, COLUMNS))
    path = benchlib.write_results("startup", [{**row, "quick": arguments.quick, "app": benchlib.app_kind()}
                                              for row in rows], info)
    print(f"results appended to {path.relative_to(benchlib.ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
