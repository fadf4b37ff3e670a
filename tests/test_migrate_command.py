"""The `migrate` command, driven through the CLI."""

import os
import subprocess
import sys

import pytest

from directory_api import db, migrations
from tests.support.checkout import REPO
from tests.support.cli import invoke_cli
from tests.support.waits import wait_until


def test_migrate_creates_the_schema_and_says_so(database_url):
    result = invoke_cli("migrate", DATABASE_URL=database_url)
    assert result.exit_code == 0, result.output
    assert f"schema migrated to version {migrations.LATEST}" in result.output
    assert migrations.current_version(db.bind(database_url)) == migrations.LATEST


def test_migrate_of_an_empty_database_warns_of_no_release(database_url):
    result = invoke_cli("migrate", DATABASE_URL=database_url)
    assert "warning" not in result.output


def test_migrate_twice_says_nothing_to_do(database_url):
    invoke_cli("migrate", DATABASE_URL=database_url)
    result = invoke_cli("migrate", DATABASE_URL=database_url)
    assert result.exit_code == 0
    assert "nothing to do" in result.output


def test_migrate_without_database_url_names_the_variable():
    result = invoke_cli("migrate", DATABASE_URL="")
    assert result.exit_code == 2
    assert "DATABASE_URL is not set" in result.output


def test_migrate_on_an_unreachable_database_is_one_line_and_exit_2():
    result = invoke_cli("migrate", DATABASE_URL="postgres://postgres@127.0.0.1:1/nothing")
    assert result.exit_code == 2
    assert result.output.startswith("error: DATABASE_URL: cannot migrate")
    assert "Traceback" not in result.output


def as_1_0_0_left_it(url: str) -> None:
    """A database migrated by release 1.0.0: steps 1 to 3, a schema_version table without `additive`."""
    database = db.bind(url)
    migrations.migrate(database)
    database.execute_sql("DELETE FROM schema_version WHERE version > 3")
    database.execute_sql("ALTER TABLE schema_version DROP COLUMN additive")
    database.close()


# The steps after 1.0.0's last (3): what a 1.0.0 database is migrated through.
AFTER_1_0_0 = [step for step in migrations.STEPS if step.number > 3]
APPLIED = ", ".join(str(step.number) for step in AFTER_1_0_0)


def test_dry_run_lists_each_step_it_would_apply_marked_additive_and_changes_nothing(database_url):
    as_1_0_0_left_it(database_url)
    result = invoke_cli("migrate", "--dry-run", DATABASE_URL=database_url)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        f"schema at version 3; migrate would apply {len(AFTER_1_0_0)} step(s), in this order:",
        *(f"  step {step.number} {step.name}: additive; 1.0.0 can no longer start after it (unless migrate "
          "--compatible-with 1.0.0)" for step in AFTER_1_0_0),
        "nothing was changed (--dry-run)",
    ]
    database = db.bind(database_url)
    assert migrations.current_version(database) == 3
    assert "additive" not in {column.name for column in database.get_columns("schema_version")}


def test_dry_run_on_an_empty_database_lists_every_step_and_creates_nothing(database_url):
    result = invoke_cli("migrate", "--dry-run", DATABASE_URL=database_url)
    assert result.exit_code == 0, result.output
    listed = [line.split(":")[0].strip() for line in result.output.splitlines() if line.startswith("  step ")]
    assert listed == [f"step {step.number} {step.name}" for step in migrations.STEPS]
    assert db.bind(database_url).get_tables() == []


def test_dry_run_on_a_current_schema_has_nothing_to_apply(database_url):
    invoke_cli("migrate", DATABASE_URL=database_url)
    result = invoke_cli("migrate", "--dry-run", DATABASE_URL=database_url)
    assert result.output == f"schema at version {migrations.LATEST}: nothing to apply\n"


def test_migrate_of_a_1_0_0_database_warns_that_1_0_0_can_no_longer_start(database_url):
    as_1_0_0_left_it(database_url)
    result = invoke_cli("migrate", DATABASE_URL=database_url)
    assert result.exit_code == 0, result.output
    assert "warning: schema step 4 (schema_version_additive, additive): 1.0.0 can no longer start once it is " \
           "applied" in result.output
    assert f"schema migrated to version {migrations.LATEST} (applied steps {APPLIED})" in result.output


def breaking_step(monkeypatch):
    step = migrations.Step(migrations.LATEST + 1, "drop_old_column", lambda database: None, additive=False)
    monkeypatch.setattr(migrations, "STEPS", (*migrations.STEPS, step))
    monkeypatch.setattr(migrations, "LATEST", step.number)
    return step


def test_migrate_refuses_a_breaking_step_in_one_line_without_allow_breaking(database_url, monkeypatch):
    invoke_cli("migrate", DATABASE_URL=database_url)
    step = breaking_step(monkeypatch)
    dry = invoke_cli("migrate", "--dry-run", DATABASE_URL=database_url)
    assert f"  step {step.number} drop_old_column: breaking (needs --allow-breaking); 1.0.0 can no longer start " \
           "after it" in dry.output
    result = invoke_cli("migrate", DATABASE_URL=database_url)
    assert result.exit_code == 2
    assert result.output == (
        f"error: schema step {step.number} (drop_old_column) is breaking: 1.0.0 can no longer run after it; stop "
        "every process of those releases, then run `directory-api migrate --allow-breaking`\n")
    assert migrations.current_version(db.bind(database_url)) == step.number - 1


def test_migrate_with_allow_breaking_names_the_releases_then_applies_it(database_url, monkeypatch):
    invoke_cli("migrate", DATABASE_URL=database_url)
    step = breaking_step(monkeypatch)
    result = invoke_cli("migrate", "--allow-breaking", DATABASE_URL=database_url)
    assert result.exit_code == 0, result.output
    warning = result.output.index(f"warning: schema step {step.number} (drop_old_column, breaking): 1.0.0 can no "
                                  "longer start once it is applied")
    assert warning < result.output.index(f"schema migrated to version {step.number}")
    assert migrations.newer_steps(db.bind(database_url)) == {}
    assert migrations.current_version(db.bind(database_url)) == step.number


# `migrate` with one more step, which creates a table and then (with "hang") waits to be killed.
MIGRATE_WITH_A_SLOW_STEP = """
import sys, time
from pathlib import Path
from directory_api import cli, migrations

started, hang = Path(sys.argv[1]), sys.argv[2] == "hang"

def slow(database):
    database.execute_sql("CREATE TABLE made_by_the_slow_step (id INTEGER)")
    if hang:
        started.touch()
        time.sleep(60)

step = migrations.Step(migrations.LATEST + 1, "slow", slow)
migrations.STEPS, migrations.LATEST = (*migrations.STEPS, step), step.number
sys.argv[1:] = ["migrate"]
cli.main()
"""


@pytest.mark.parametrize("hold", [False, True], ids=["plain", "during-a-hold"])
def test_a_migrate_killed_in_the_middle_of_a_step_leaves_nothing_of_it_and_the_next_finishes(
        database_url, tmp_path, hold):
    as_1_0_0_left_it(database_url)
    if hold:
        assert invoke_cli("migrate", "--compatible-with", "1.0.0", DATABASE_URL=database_url).exit_code == 0
    started = tmp_path / "started"
    env = {"PATH": os.environ["PATH"], "DATABASE_URL": database_url}
    migrate = [sys.executable, "-c", MIGRATE_WITH_A_SLOW_STEP, str(started)]
    killed = subprocess.Popen([*migrate, "hang"], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_until(started.exists, timeout=30, what="the slow step to start")
    finally:
        killed.kill()  # SIGKILL: no handler, no rollback by the process itself
        killed.wait(10)
    database = db.bind(database_url)
    # The steps before it committed before the slow step began.
    assert migrations.current_version(database) == migrations.LATEST
    assert not database.table_exists("made_by_the_slow_step")
    database.close()

    again = subprocess.run([*migrate, "run"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
                           check=False)

    assert again.returncode == 0, again.stdout + again.stderr
    slow = migrations.LATEST + 1
    assert f"schema migrated to version {slow} (applied steps {slow})" in again.stdout
    database = db.bind(database_url)
    assert database.table_exists("made_by_the_slow_step")
    assert migrations.current_version(database) == slow
    if hold:
        assert max_version_as_1_0_0_reads_it(database) == 3
        assert migrations.held_steps(database) == [*NUMBERS, slow]
    database.close()


def max_version_as_1_0_0_reads_it(database) -> int:
    return database.execute_sql("SELECT MAX(version) FROM schema_version").fetchone()[0]


NUMBERS = [step.number for step in AFTER_1_0_0]
HELD_LINE = (f"{migrations.steps_are(NUMBERS, 'is held')} for 1.0.0 in schema_version_beyond_1_0_0, where it does "
             "not look, so it still starts: once no 1.0.0 process is left, end the hold with `directory-api migrate "
             "--end-compatibility`")


def held_for_1_0_0(url: str) -> None:
    as_1_0_0_left_it(url)
    result = invoke_cli("migrate", "--compatible-with", "1.0.0", DATABASE_URL=url)
    assert result.exit_code == 0, result.output


def test_migrate_compatible_with_1_0_0_says_the_steps_are_held_and_how_to_end_the_hold(database_url):
    as_1_0_0_left_it(database_url)
    result = invoke_cli("migrate", "--compatible-with", "1.0.0", DATABASE_URL=database_url)
    assert result.exit_code == 0, result.output
    assert "warning" not in result.output
    assert result.output.splitlines()[-2:] == [
        f"schema migrated to version {migrations.LATEST} (applied steps {APPLIED})", HELD_LINE]


def test_dry_run_during_a_hold_shows_it_and_what_ending_it_would_do(database_url):
    held_for_1_0_0(database_url)
    dry = invoke_cli("migrate", "--dry-run", DATABASE_URL=database_url)
    assert dry.output.splitlines() == [
        f"schema at version {migrations.LATEST}: nothing to apply",
        f"{migrations.steps_are(NUMBERS, 'is held')} for 1.0.0 (migrate --compatible-with 1.0.0), so it still "
        "starts; migrate keeps them held; migrate --end-compatibility would record them in schema_version again, "
        "after which 1.0.0 no longer starts",
    ]


def test_dry_run_during_a_hold_says_a_pending_additive_step_will_be_held_too(database_url, monkeypatch):
    held_for_1_0_0(database_url)
    step = migrations.Step(migrations.LATEST + 1, "add_thing", lambda database: None)
    monkeypatch.setattr(migrations, "STEPS", (*migrations.STEPS, step))
    monkeypatch.setattr(migrations, "LATEST", step.number)
    dry = invoke_cli("migrate", "--dry-run", DATABASE_URL=database_url)
    assert f"  step {step.number} add_thing: additive; held for 1.0.0, which still starts" in dry.output.splitlines()


def test_a_plain_migrate_during_a_hold_keeps_it_and_says_how_to_end_it(database_url):
    held_for_1_0_0(database_url)
    plain = invoke_cli("migrate", DATABASE_URL=database_url)
    assert plain.exit_code == 0, plain.output
    assert plain.output.splitlines() == [f"schema already at version {migrations.LATEST}: nothing to do", HELD_LINE]
    database = db.bind(database_url)
    assert max_version_as_1_0_0_reads_it(database) == 3
    assert migrations.held_steps(database) == NUMBERS


def test_the_migrate_units_command_during_a_hold_keeps_1_0_0_starting(database_url):
    """docs/systemd/directory-api-migrate.service runs at every start of a machine's units, mid-upgrade too."""
    unit = (REPO / "docs" / "systemd" / "directory-api-migrate.service").read_text()
    command = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    arguments = command.split(".pyz", 1)[1].split()
    assert arguments == ["migrate"]
    held_for_1_0_0(database_url)
    for _ in range(2):  # a reboot, another machine
        result = invoke_cli(*arguments, DATABASE_URL=database_url)
        assert result.exit_code == 0, result.output
    # 1.0.0 starts when MAX(schema_version.version) is at most its own last step.
    assert max_version_as_1_0_0_reads_it(db.bind(database_url)) == 3


def test_migrate_end_compatibility_warns_then_records_the_held_steps_in_schema_version(database_url):
    held_for_1_0_0(database_url)
    result = invoke_cli("migrate", "--end-compatibility", DATABASE_URL=database_url)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        f"warning: schema {migrations.steps_are(NUMBERS, 'is recorded')} in schema_version again: 1.0.0 can no "
        "longer start",
        f"schema already at version {migrations.LATEST}: nothing to do",
        f"{migrations.steps_are(NUMBERS, 'is recorded')} in schema_version again: the hold for 1.0.0 is ended",
    ]
    database = db.bind(database_url)
    assert max_version_as_1_0_0_reads_it(database) == migrations.LATEST
    assert migrations.held_steps(database) == []
    again = invoke_cli("migrate", "--end-compatibility", DATABASE_URL=database_url)
    assert again.output.splitlines()[-1] == "no step was held for 1.0.0: nothing to end"


def test_migrate_refuses_a_breaking_step_during_a_hold_saying_to_end_it_first(database_url, monkeypatch):
    held_for_1_0_0(database_url)
    step = breaking_step(monkeypatch)
    dry = invoke_cli("migrate", "--dry-run", DATABASE_URL=database_url)
    assert f"  step {step.number} drop_old_column: breaking (needs --end-compatibility, then --allow-breaking); " \
           "1.0.0 can no longer start after it" in dry.output.splitlines()
    result = invoke_cli("migrate", "--allow-breaking", DATABASE_URL=database_url)
    assert result.exit_code == 2
    assert result.output == (
        f"error: schema step {step.number} (drop_old_column) is breaking and steps are held for 1.0.0 (migrate "
        "--compatible-with 1.0.0): end the hold first, once no 1.0.0 process is left (`directory-api migrate "
        "--end-compatibility`), then run `directory-api migrate --allow-breaking`\n")
    assert migrations.held_steps(db.bind(database_url)) == NUMBERS


def test_migrate_compatible_with_and_end_compatibility_together_is_one_line_and_exit_2(database_url):
    result = invoke_cli("migrate", "--compatible-with", "1.0.0", "--end-compatibility", DATABASE_URL=database_url)
    assert result.exit_code == 2
    assert result.output == "error: --compatible-with and --end-compatibility: give one of the two\n"


def test_migrate_compatible_with_a_release_that_does_not_need_it_is_one_line_and_exit_2(database_url):
    result = invoke_cli("migrate", "--compatible-with", "1.1.0", DATABASE_URL=database_url)
    assert result.exit_code == 2
    assert result.output == ("error: --compatible-with 1.1.0: only 1.0.0 needs it (later releases run on additive "
                             "steps by themselves)\n")
