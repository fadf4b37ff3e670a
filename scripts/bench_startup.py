"""Benchmark start-up and footprint: `--help` and `serve` until GET / answers, cold and warm; pyz size; peak RSS.

Cold: the pyz with a fresh SHIV_ROOT (shiv unpacks its site-packages on first
run). Warm: the same SHIV_ROOT again. Each is repeated and the median shown.
From a checkout (no current pyz) cold and warm are the same command, before
and after Python's bytecode caches exist. Peak RSS (VmHWM) is read per process:
`serve --processes auto` under 16 connections of signed load, and `work` (1
process) draining enrolments from the SQS stub into PostgreSQL.

With --base COMMIT it compares instead, in one run: it builds this tree's pyz
(./build.sh) and COMMIT's (its own build.sh, in a temporary clone), then times
both side by side, each repeat running one after the other under the same load,
both as `python3 -I directory-api.pyz` on the interpreter under this
virtualenv, and prints this build's figures over the base's (no RSS rows).

    .venv/bin/python scripts/bench_startup.py                  # 7 repeats
    .venv/bin/python scripts/bench_startup.py --quick          # 2 repeats, smaller load
    .venv/bin/python scripts/bench_startup.py --base cb20297   # this build against cb20297's
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

import bench_serve
import bench_work
import benchlib
import loadgen

COLUMNS = [("build", "build"), ("measure", "measure"), ("state", "state"), ("median", "median"), ("min", "min"),
           ("max", "max"), ("unit", "unit"), ("runs", "runs"), ("target", "target")]
# The targets of a comparison (issue 15): this build's figure over the base's, or the pyz's size.
PYZ_TARGET_MIB = 8.0
COLD_TARGET = 0.35
WARM_TARGET = 1.0


def time_help(command: list[str], env: dict) -> float:
    """Seconds from exec to exit of `--help`."""
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


def startup_rows(repeats: int, directory: Path, logs: Path,
                 targets: dict[str, list[str]] | None = None) -> list[dict]:
    """Cold and warm `--help` and `serve` ready of each target (label: command), interleaved repeat by repeat."""
    on_pyz = targets is not None or benchlib.app_kind() == "pyz"
    targets = targets or {"this": benchlib.app_command()}
    envs = {}
    for index, (label, command) in enumerate(targets.items()):
        sqlite_url = f"sqlite:///{directory / f'startup-{index}.sqlite3'}"
        envs[label] = {**os.environ, **bench_serve.serve_env(None, sqlite_url, "database")}
        # Each build migrates its own database: a base commit's code may expect an older schema.
        migrate = {**envs[label], "SHIV_ROOT": str(directory / f"migrate-{index}")}
        subprocess.run([*command, "migrate"], env=migrate, check=True, stdout=subprocess.DEVNULL)
    timers = (("--help", time_help), ("serve ready", lambda command, env: time_serve_ready(
        command, env, logs / "startup-serve.log")))
    rows = []
    for measure, timer in timers:
        cold: dict[str, list[float]] = {label: [] for label in targets}
        warm: dict[str, list[float]] = {label: [] for label in targets}
        for _ in range(repeats):
            for label, command in targets.items():
                root = Path(tempfile.mkdtemp(prefix="shiv-root-", dir=directory))
                fresh = {**envs[label], "SHIV_ROOT": str(root)}
                if not on_pyz:
                    clear_bytecode()
                cold[label].append(timer(command, fresh))
                warm[label].append(timer(command, fresh))
                shutil.rmtree(root, ignore_errors=True)
        for label in targets:
            rows.append({"build": label, **summary(measure, "cold (fresh SHIV_ROOT)" if on_pyz else
                                                   "cold (no __pycache__)", cold[label])})
            rows.append({"build": label, **summary(measure, "warm", warm[label])})
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
        assert target.process is not None
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


def run_logged(command: list, log: Path, **kwargs) -> None:
    """Run a build step, its output to `log`; on failure show the end of it."""
    with log.open("ab") as output:
        result = subprocess.run([str(part) for part in command], stdout=output, stderr=subprocess.STDOUT,
                                check=False, **kwargs)
    if result.returncode != 0:
        sys.exit(f"{' '.join(map(str, command))} failed ({result.returncode}):\n" + log.read_text()[-2000:])


def build_this(log: Path) -> Path:
    """dist/directory-api.pyz from this tree as it is, by its ./build.sh."""
    run_logged(["./build.sh"], log, cwd=benchlib.ROOT)
    return benchlib.PYZ


def build_base(commit: str, directory: Path, log: Path) -> Path:
    """COMMIT's pyz, built by COMMIT's own build.sh in a temporary clone."""
    checkout = directory / "base"
    run_logged(["git", "clone", "--quiet", "--no-checkout", benchlib.ROOT, checkout], log)
    run_logged(["git", "-C", checkout, "checkout", "--quiet", commit], log)
    # A build.sh from before requirements-build.txt used $PYTHON's own shiv: give it a python that has the pin.
    tools = directory / "build-tools"
    run_logged([sys.executable, "-m", "venv", tools], log)
    run_logged([tools / "bin" / "python", "-m", "pip", "install", "--quiet", "--no-deps", "-r",
                benchlib.ROOT / "requirements-build.txt"], log)
    run_logged(["./build.sh"], log, cwd=checkout, env={**os.environ, "PYTHON": str(tools / "bin" / "python")})
    return checkout / "dist" / "directory-api.pyz"


def this_label() -> str:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=benchlib.ROOT, capture_output=True,
                          text=True, check=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=benchlib.ROOT,
                           capture_output=True, text=True, check=True).stdout.strip()
    return f"this ({head}{' + changes' if dirty else ''})"


def size_row(label: str, pyz: Path) -> dict:
    return {"build": label, "measure": "pyz size", "state": "", "median": round(pyz.stat().st_size / 2**20, 2),
            "unit": "MiB", "runs": 1}


def ratio_rows(rows: list[dict], this: str, base: str) -> list[dict]:
    """This build's figures over the base's, against the targets."""
    medians = {(row["build"], row["measure"], row["state"]): row["median"] for row in rows}
    ratios = []
    for measure in ("pyz size", "--help", "serve ready"):
        for state in ("",) if measure == "pyz size" else ("cold (fresh SHIV_ROOT)", "warm"):
            ratio = medians[(this, measure, state)] / medians[(base, measure, state)]
            target = {"": None, "warm": WARM_TARGET}.get(state, COLD_TARGET)
            ratios.append({"build": "this / base", "measure": measure, "state": state, "median": round(ratio, 3),
                           "unit": "x", "target": f"<= {target}" if target else None,
                           "met": None if target is None else ratio <= target})
    size = medians[(this, "pyz size", "")]
    ratios.append({"build": this, "measure": "pyz size", "state": "", "median": size, "unit": "MiB",
                   "target": f"<= {PYZ_TARGET_MIB}", "met": size <= PYZ_TARGET_MIB})
    return ratios


def compare(base: str, repeats: int, directory: Path, logs: Path) -> list[dict]:
    log = logs / "startup-builds.log"
    print(f"building this tree and {base} (log: {log.relative_to(benchlib.ROOT)})", flush=True)
    this, base_label = this_label(), f"base {base}"
    pyzs = {this: build_this(log), base_label: build_base(base, directory, log)}
    python = getattr(sys, "_base_executable", sys.executable)
    rows = [size_row(label, pyz) for label, pyz in pyzs.items()]
    rows += startup_rows(repeats, directory, logs, {label: [python, "-I", str(pyz)] for label, pyz in pyzs.items()})
    rows += ratio_rows(rows, this, base_label)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run that checks the script works")
    parser.add_argument("--repeats", type=int, default=7, help="runs of each measure (the median is shown)")
    parser.add_argument("--base", metavar="COMMIT", help="compare this build with COMMIT's, built in this run")
    arguments = parser.parse_args()
    if arguments.quick:
        arguments.repeats = 2
    info = benchlib.machine()
    print(benchlib.describe_machine(info))
    directory = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    logs = benchlib.logs_folder()
    try:
        if arguments.base:
            rows = compare(arguments.base, arguments.repeats, directory, logs)
        else:
            rows = own_rows(arguments.quick, arguments.repeats, directory, logs)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    missed = [row for row in rows if row.get("met") is False]
    verdict = []
    if arguments.base:
        verdict.append("\nevery target met" if not missed else
                       "\ntargets missed: " + ", ".join(f"{row['measure']} {row['state']}".strip() for row in missed))
    benchlib.report("startup", rows, COLUMNS, info, notes=verdict, quick=arguments.quick, app=benchlib.app_kind(),
                    base=arguments.base)
    return 0


def own_rows(quick: bool, repeats: int, directory: Path, logs: Path) -> list[dict]:
    """This build alone (the pyz when current, else the checkout), with peak RSS under load."""
    print(f"directory-api from: {benchlib.app_kind()} ({' '.join(benchlib.app_command())})")
    rows = startup_rows(repeats, directory, logs)
    if benchlib.PYZ.exists():
        rows.append({"measure": "pyz size", "state": "dist/directory-api.pyz",
                     "median": round(benchlib.PYZ.stat().st_size / 1024 / 1024, 2), "unit": "MiB", "runs": 1})
    rows.append(serve_rss(directory, logs, 500 if quick else 4000))
    work = work_rss(logs, 300 if quick else 5000)
    if work:
        rows.append(work)
    return rows


if __name__ == "__main__":
    sys.exit(main())
