"""plot_bench's results file: a benchmark's latest run replaces its rows, and only its rows."""

import json

import benchlib
import plot_bench


def write_rows(path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def test_collect_replaces_the_rows_of_the_benchmarks_that_ran_and_keeps_the_others(tmp_path, monkeypatch):
    monkeypatch.setattr(benchlib, "RESULTS", tmp_path / "bench-results")
    benchlib.RESULTS.mkdir()
    results = tmp_path / "performance.jsonl"
    write_rows(results, [{"benchmark": "serve", "at": "old", "rate": 1},
                         {"benchmark": "console", "at": "old", "page": "overview"}])
    write_rows(benchlib.RESULTS / "console.jsonl", [{"benchmark": "console", "at": "first", "page": "overview"},
                                                   {"benchmark": "console", "at": "new", "page": "overview"},
                                                   {"benchmark": "console", "at": "new", "page": "search"}])

    plot_bench.collect(results)

    collected = plot_bench.read_results(results)
    assert collected["serve"] == [{"benchmark": "serve", "at": "old", "rate": 1}]
    assert [(row["at"], row["page"]) for row in collected["console"]] == [("new", "overview"), ("new", "search")]
