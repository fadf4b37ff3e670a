"""The docs keep up with the code: every setting, command and module is documented (after sqlite-utils' test_docs).

Each test is parametrized by what the code has, found by walking it, so a setting, command or module added
without its line in the docs fails here by name.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import click
import plot_bench
import pytest
import typer

from directory_api import cli, settings
from tests.support.checkout import SOURCE_CLI
from tests.support.processes import start_dev

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "directory_api"
README = ROOT / "README.md"
DOCS = ROOT / "docs"


def section(markdown: str, heading: str) -> str:
    """The text under `## heading`, up to the next heading of that level."""
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", markdown, re.MULTILINE | re.DOTALL)
    assert match, f"no '## {heading}' section"
    return match.group(1)


def first_cells(markdown: str) -> list[str]:
    """The first cell of each table row, header and rule rows left out."""
    rows = [line for line in markdown.splitlines() if line.startswith("|")]
    cells = [row.split("|")[1].strip() for row in rows]
    return [cell for index, cell in enumerate(cells) if not set(cell) <= set("-: ") and not _is_header(rows, index)]


def _is_header(rows: list[str], index: int) -> bool:
    return index + 1 < len(rows) and set(rows[index + 1].replace("|", "").strip()) <= set("-: ")


def code_spans(texts: list[str]) -> list[str]:
    return [span for text in texts for span in re.findall(r"`([^`]+)`", text)]


def modules() -> list[str]:
    """Every module of the package, as its path under directory_api/ (`queues/sqs.py`)."""
    return sorted(path.relative_to(PACKAGE).as_posix() for path in PACKAGE.rglob("*.py")
                  if "__pycache__" not in path.parts)


def commands(group: click.Group, prefix: str = "") -> list[str]:
    """Every command of the CLI, a group's subcommands as `group sub`."""
    found = []
    for name, command in sorted(group.commands.items()):
        found.append(prefix + name)
        if isinstance(command, click.Group):
            found += commands(command, f"{prefix}{name} ")
    return found


def test_the_walks_find_what_is_there():
    assert {"cli.py", "queues/sqs.py", "vendored_internals.py"} <= set(modules())
    assert {"serve", "work", "env-write"} <= set(commands(typer.main.get_group(cli.app)))


@pytest.mark.parametrize("module", modules())
def test_every_module_is_in_the_readme_architecture_table(module):
    documented = code_spans(first_cells(section(README.read_text(), "Architecture")))

    assert module in documented, f"directory_api/{module} has no row in README.md's Architecture table"


@pytest.mark.parametrize("command", commands(typer.main.get_group(cli.app)))
def test_every_command_is_in_the_readme_commands_table(command):
    documented = code_spans(first_cells(section(README.read_text(), "Commands")))

    assert any(span == command or span.startswith(command + " ") for span in documented), (
        f"`{command}` has no row in README.md's Commands table"
    )


@pytest.mark.parametrize("variable", [variable.name for variable in settings.VARIABLES])
def test_every_setting_is_in_the_settings_guide(variable):
    documented = code_spans(first_cells((DOCS / "settings.md").read_text()))

    assert variable in documented, f"{variable} has no row in docs/settings.md"


def tracked_text_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    paths = [ROOT / name for name in listed.decode().split("\0") if name]
    return [path for path in paths if path.is_file() and b"\0" not in path.read_bytes()[:4096]]


# Files a reader of the repository cannot open: the team's contract and design notes, a folder beside it.
OUTSIDE = re.compile(r"\bSPEC(\.md)?\b|\bDESIGN\.md\b|/work/shared")


@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="needs the git checkout")
def test_nothing_refers_to_files_outside_the_repository():
    found = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
             for path in tracked_text_files() if path != Path(__file__).resolve()
             for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
             if OUTSIDE.search(line)]

    assert not found, "\n".join(found)


@pytest.mark.parametrize("page", [README, *sorted(DOCS.rglob("*.md"))], ids=lambda page: page.name)
def test_every_relative_link_of_the_docs_is_a_file_in_the_repository(page):
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text())
    local = [target for target in targets if not re.match(r"[a-z]+:", target)]

    broken = [target for target in local
              if not (page.parent / target).resolve().is_relative_to(ROOT) or not (page.parent / target).exists()]

    assert not broken, f"{page.relative_to(ROOT)} links to what the repository does not hold: {broken}"


# The README's example


def readme_example() -> str:
    """The Python the README's first snippet feeds to .venv/bin/python."""
    match = re.search(r"\.venv/bin/python - <<'EOF'\n(.*?)\nEOF\n", README.read_text(), re.DOTALL)
    assert match, "README.md has no `.venv/bin/python - <<'EOF'` example"
    return match.group(1)


def test_the_readme_example_sees_its_enrolment_created_against_dev(processes, tmp_path):
    # Regression: the example asked for the status at once and printed `unknown` 4 times out of 4.
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("DATABASE_", "SQS_", "QUEUE_", "UI_", "PORT", "LOG_", "OPS_", "EMAIL_"))}
    _, base_url = start_dev(processes, SOURCE_CLI, env, tmp_path)
    example = readme_example().replace("http://127.0.0.1:8000", base_url)

    first = subprocess.run([sys.executable, "-c", example], capture_output=True, text=True, timeout=60, check=False)
    again = subprocess.run([sys.executable, "-c", example], capture_output=True, text=True, timeout=60, check=False)

    assert first.returncode == 0, first.stderr
    queued, status = first.stdout.splitlines()
    assert "'status': 'queued'" in queued
    assert "'status': 'created', 'enrolment_id': 1}" in status
    assert again.stdout.splitlines()[-1].endswith("'status': 'created', 'enrolment_id': 1}"), again.stderr


# Performance: one results file, its tables and its plot


def test_the_performance_tables_are_those_of_the_results_file():
    page = plot_bench.PAGE.read_text()

    assert plot_bench.fill(page, plot_bench.read_results()) == page, (
        "docs/performance.md's tables differ from docs/performance.jsonl: run `make plots`"
    )


def test_the_plot_was_drawn_from_the_results_file():
    assert plot_bench.digest().encode() in plot_bench.PNG.read_bytes(), (
        "docs/bench.png was not drawn from docs/performance.jsonl as it is: run `make plots`"
    )


def test_the_results_hold_every_connection_count_the_guide_promises():
    promised = re.search(r"at ([\d, ]+) and (\d+)\s+connections", plot_bench.PAGE.read_text())
    assert promised, "docs/performance.md no longer says at which connection counts serve is measured"
    levels = {int(level) for level in re.findall(r"\d+", promised.group(1) + " " + promised.group(2))}

    for target, rows in plot_bench.serve_lines(plot_bench.read_results()["serve"]).items():
        assert {row["connections"] for row in rows} == levels, target


def test_the_console_results_bear_out_every_page_within_its_target_at_a_million_rows():
    console = plot_bench.read_results()["console"]
    assert {(row["database"], row["enrolments"]) for row in console} == {("PostgreSQL", 1_000_000),
                                                                         ("SQLite", 100_000)}
    assert [row["page"] for row in console if not row["within"]] == [], (
        "docs/operating.md and the README say every console page is within its target: correct them"
    )
    assert any("short name prefix" in row["page"] for row in console)


def test_the_operating_guide_lists_the_new_rejection_export_columns_in_their_order():
    from directory_api.ops.export import EXPORTS

    guide = " ".join((Path(__file__).parents[1] / "docs" / "operating.md").read_text().split())
    said = re.search(r"`export rejections` carries, after the old columns, (.+?), then `erased`", guide)
    assert said, "docs/operating.md no longer says which columns `export rejections` adds"
    columns = EXPORTS["rejections"].columns
    assert re.findall(r"`(\w+)`", said.group(1)) + ["erased"] == list(columns[columns.index("company_number"):])


def test_the_readme_gives_the_slowest_console_page_and_search_of_the_results_file():
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    said = re.search(r"every page within 300 ms p99 \(the slowest ([\d.]+) ms\), every search within 100 ms "
                     r"\(the slowest ([\d.]+) ms\)", readme)
    assert said, "the README no longer gives the console's figures at a million rows"
    rows = [row for row in plot_bench.read_results()["console"] if row["database"] == "PostgreSQL"]
    searches = [row["p99_ms"] for row in rows if row["page"].startswith("search")]
    pages = [row["p99_ms"] for row in rows if not row["page"].startswith(("search", "status"))]
    assert (float(said.group(1)), float(said.group(2))) == (max(pages), max(searches)), (
        "the README's console figures differ from docs/performance.jsonl")
