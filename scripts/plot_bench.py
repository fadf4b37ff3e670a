"""Draw the latest benchmark results: docs/bench.png (throughput plots) and docs/bench.md (the tables).

Reads the last run of each of bench-results/{serve,work,startup}.jsonl.

    .venv/bin/python scripts/plot_bench.py
"""

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_serve
import bench_startup
import bench_work
import benchlib

DOCS = benchlib.ROOT / "docs"


def plot(serve_rows: list[dict], work_rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display on a server or in CI
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    for target in dict.fromkeys(row["target"] for row in serve_rows):
        rows = sorted((row for row in serve_rows if row["target"] == target), key=lambda row: row["connections"])
        left.plot([row["connections"] for row in rows], [row["rate"] for row in rows], marker="o",
                  linestyle="--" if target == "floor" else "-", label=f"{target} ({rows[0]['queue']})")
    left.set_xscale("log", base=2)
    levels = sorted({row["connections"] for row in serve_rows})
    left.set_xticks(levels, [str(level) for level in levels])
    left.set_xlabel("connections")
    left.set_ylabel("signed enrolments / s (202)")
    left.set_title("serve")
    left.set_ylim(bottom=0)
    left.grid(alpha=0.3)
    left.legend(fontsize="small")

    def line_of(row: dict) -> tuple:
        return row["drain"], row["queue"], row.get("emails", "off")

    for drain, queue, emails in dict.fromkeys(line_of(row) for row in work_rows):
        rows = sorted((row for row in work_rows if line_of(row) == (drain, queue, emails)),
                      key=lambda row: row["workers"])
        sending = ", e-mail sent" if emails == "on" else ""
        label = {"one": "one-at-a-time baseline", "batch": "batch floor"}.get(drain, f"work ({queue} queue{sending})")
        if drain == "work":
            right.plot([row["workers"] for row in rows], [row["rate"] or 0 for row in rows], marker="o", label=label)
        else:
            right.axhline(rows[0]["rate"] or 0, linestyle="--", color="grey" if drain == "one" else "black",
                          label=f"{label} ({queue}, 1 process)")
    right.set_xticks(sorted({row["workers"] for row in work_rows}))
    right.set_xlabel("work processes")
    right.set_ylabel("messages saved / s (PostgreSQL)")
    right.set_title("work")
    right.set_ylim(bottom=0)
    right.grid(alpha=0.3)
    right.legend(fontsize="small", loc="center right")

    machine = (serve_rows or work_rows)[0]["machine"]
    figure.suptitle(f"directory-api on {machine['cores']} cores ({machine['cpu_model']})", fontsize="medium")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def markdown(serve_rows: list[dict], work_rows: list[dict], startup_rows: list[dict]) -> str:
    parts = ["# Benchmarks", "",
             "Made by `make bench` (scripts/bench_*.py, then scripts/plot_bench.py); "
             "raw rows in bench-results/*.jsonl.", ""]
    for title, rows, columns in (
        ("serve: signed POST /enrolment/", serve_rows, bench_serve.TABLE_COLUMNS),
        ("work: drain into PostgreSQL", work_rows, bench_work.TABLE_COLUMNS),
        ("start-up and footprint", startup_rows, bench_startup.COLUMNS),
    ):
        if not rows:
            continue
        first = rows[0]
        parts += [f"## {title}", "", f"{benchlib.describe_machine(first['machine'])}; run at {first['at']}"
                  f"{' (--quick)' if first.get('quick') else ''}.", "", benchlib.table(rows, columns), ""]
    return "\n".join(parts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--png", type=Path, default=DOCS / "bench.png")
    parser.add_argument("--markdown", type=Path, default=DOCS / "bench.md")
    arguments = parser.parse_args()
    serve_rows, work_rows = benchlib.read_latest("serve"), benchlib.read_latest("work")
    startup_rows = benchlib.read_latest("startup")
    if not (serve_rows or work_rows):
        print("no results in bench-results/ yet: run the bench_*.py scripts first")
        return 1
    plot(serve_rows, work_rows, arguments.png)
    arguments.markdown.write_text(markdown(serve_rows, work_rows, startup_rows))
    print(f"wrote {arguments.png} and {arguments.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
