"""Write docs/performance.md's tables and docs/bench.png from one results file, docs/performance.jsonl.

Text and picture come from the same rows, so they cannot disagree: the tables
go between the markers of docs/performance.md, and the PNG carries the results
file's sha256 (tests/test_docs.py checks both).

    .venv/bin/python scripts/plot_bench.py             # redraw from docs/performance.jsonl (make plots)
    .venv/bin/python scripts/plot_bench.py --collect   # first take the latest run of each bench_*.py in
                                                       # bench-results/ in place of its rows (make bench)
"""

import argparse
import hashlib
import json
import os
import re
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import benchlib

DOCS = benchlib.ROOT / "docs"
RESULTS = DOCS / "performance.jsonl"
PAGE = DOCS / "performance.md"
PNG = DOCS / "bench.png"
BENCHMARKS = ("serve", "work", "startup", "console")

# What the guide shows of each row (the results file keeps every field bench_*.py wrote).
COLUMNS = {
    "serve": [
        ("target", "target"), ("queue", "queue"), ("connections", "conns"), ("rate", "req/s"),
        ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"), ("server_cpu_ms", "server CPU ms/req"),
        ("vs_floor", "x floor"), ("other_work_pct", "other work %"), ("rates", "req/s of each round"),
    ],
    "work": [
        ("drain", "drain"), ("queue", "queue"), ("workers", "workers"), ("emails", "e-mail"),
        ("messages", "messages"), ("rate", "msg/s"), ("email_rate", "e-mails/s"),
        ("worker_cpu_ms", "worker CPU ms/msg"), ("postgres_cpu_ms", "postgres CPU ms/msg"),
        ("vs_batch_floor", "x batch floor"),
        ("vs_one", "x one-at-a-time"), ("exactly_once", "exactly once"), ("other_work_pct", "other work %"),
    ],
    "startup": [
        ("measure", "measure"), ("state", "state"), ("median", "median"), ("min", "min"), ("max", "max"),
        ("unit", "unit"), ("runs", "runs"),
    ],
    "console": [
        ("database", "database"), ("page", "page"), ("enrolments", "enrolments"), ("requests", "requests"),
        ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"), ("target_ms", "p99 target ms"), ("within", "within"),
    ],
}


def read_results(path: Path = RESULTS) -> dict[str, list[dict]]:
    """The rows of the results file by benchmark."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {benchmark: [row for row in rows if row["benchmark"] == benchmark] for benchmark in BENCHMARKS}


def collect(path: Path = RESULTS) -> None:
    """The latest run of each benchmark in bench-results/ replaces that benchmark's rows; the others stay."""
    kept = read_results(path) if path.exists() else dict.fromkeys(BENCHMARKS, [])
    latest = {benchmark: benchlib.read_latest(benchmark) for benchmark in BENCHMARKS}
    if not any(latest.values()):
        sys.exit("no results in bench-results/ yet: run the bench_*.py scripts first (make bench)")
    rows = [row for benchmark in BENCHMARKS for row in latest[benchmark] or kept[benchmark]]
    path.write_text("".join(json.dumps(row, sort_keys=True) + "\n" for row in rows))


def digest(path: Path = RESULTS) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def section(benchmark: str, rows: list[dict]) -> str:
    """One benchmark's generated block: when and where it ran, then its table."""
    if not rows:
        return f"(no {benchmark} rows in docs/performance.jsonl)"
    first = rows[0]
    quick = " (--quick)" if first.get("quick") else ""
    return (f"{benchlib.describe_machine(first['machine'])} at the start; results written at {first['at']}{quick}.\n\n"
            + benchlib.table(rows, COLUMNS[benchmark]))


def begin_marker(benchmark: str) -> str:
    return f"<!-- {benchmark}: written by scripts/plot_bench.py from docs/performance.jsonl -->"


def end_marker(benchmark: str) -> str:
    return f"<!-- end of {benchmark} -->"


def fill(page: str, results: dict[str, list[dict]]) -> str:
    """The page with each benchmark's block between its markers replaced by the one made from `results`."""
    for benchmark in BENCHMARKS:
        begin, end = begin_marker(benchmark), end_marker(benchmark)
        pattern = re.compile(re.escape(begin) + r"\n.*?" + re.escape(end), re.DOTALL)
        match = pattern.search(page)
        if match is None:
            sys.exit(f"docs/performance.md has no '{begin}' ... '{end}' block")
        block = f"{begin}\n{section(benchmark, results[benchmark])}\n{end}"
        page = page[:match.start()] + block + page[match.end():]
    return page


def serve_lines(rows: list[dict]) -> dict[str, list[dict]]:
    """Each serve target's rows, by connections: one line of the plot each."""
    lines: dict[str, list[dict]] = {}
    for row in rows:
        lines.setdefault(row["target"], []).append(row)
    return {target: sorted(found, key=lambda row: row["connections"]) for target, found in lines.items()}


def plot(results: dict[str, list[dict]], path: Path, results_digest: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display on a server or in CI
    import matplotlib.pyplot as plt

    serve_rows, work_rows = results["serve"], results["work"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    for target, rows in serve_lines(serve_rows).items():
        left.plot([row["connections"] for row in rows], [row["rate"] for row in rows], marker="o",
                  linestyle="--" if target == "floor" else "-", label=f"{target} ({rows[0]['queue']})")
    left.set_xscale("log", base=2)
    levels = sorted({row["connections"] for row in serve_rows})
    left.set_xticks(levels, [str(level) for level in levels])
    left.set_xlabel("connections")
    left.set_ylabel("signed enrolments / s (202)")
    left.set_title("serve")
    # Headroom above the highest point for the legend, so it hides no line.
    left.set_ylim(0, 1.45 * max(row["rate"] for row in serve_rows))
    left.grid(alpha=0.3)
    left.legend(fontsize="small", loc="upper left", ncol=2)

    def line_of(row: dict) -> tuple:
        return row["drain"], row["queue"], row.get("emails", "off")

    finished = [row for row in work_rows if row["rate"]]  # a drain that gave up has no rate to draw
    for drain, queue, emails in dict.fromkeys(line_of(row) for row in finished):
        rows = sorted((row for row in finished if line_of(row) == (drain, queue, emails)),
                      key=lambda row: row["workers"])
        sending = ", e-mail sent" if emails == "on" else ""
        label = {"one": "one at a time", "batch": "batch floor"}.get(drain, f"work, {queue} queue{sending}")
        if drain == "work":
            right.plot([row["workers"] for row in rows], [row["rate"] for row in rows], marker="o", label=label)
        else:
            right.axhline(rows[0]["rate"], linestyle="--", color="grey" if drain == "one" else "black",
                          label=f"{label} ({queue}, 1 process)")
    right.set_xticks(sorted({row["workers"] for row in work_rows}))
    right.set_xlabel("work processes")
    right.set_ylabel("messages saved / s (PostgreSQL)")
    right.set_title("work")
    right.set_ylim(0, 1.45 * max(row["rate"] for row in finished))
    right.grid(alpha=0.3)
    right.legend(fontsize="small", loc="upper left", ncol=2)

    machine = (serve_rows or work_rows)[0]["machine"]
    figure.suptitle(f"directory-api on {machine['cores']} cores ({machine['cpu_model']}), "
                    f"{(serve_rows or work_rows)[0]['at'][:10]}: docs/performance.jsonl", fontsize="medium")
    figure.tight_layout()
    # The results file's hash rides in the PNG, so a test can tell the picture was drawn from these rows.
    figure.savefig(path, dpi=100, metadata={"Source": f"docs/performance.jsonl sha256 {results_digest}"})
    plt.close(figure)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--collect", action="store_true",
                        help="first put the latest run of each benchmark in bench-results/ into docs/performance.jsonl")
    arguments = parser.parse_args()
    if arguments.collect:
        collect()
    results = read_results()
    PAGE.write_text(fill(PAGE.read_text(), results))
    plot(results, PNG, digest())
    print(f"wrote {PAGE.relative_to(benchlib.ROOT)} and {PNG.relative_to(benchlib.ROOT)} "
          f"from {RESULTS.relative_to(benchlib.ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
