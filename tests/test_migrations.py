"""migrate: ordered steps, recorded, idempotent, safe to run concurrently."""

import threading

import pytest

from directory_api import __version__, db, migrations, models
from directory_api.errors import SchemaError
from directory_api.migrations import Release, SchemaVersion, Step
from directory_api.models import ALL_MODELS
from tests.support.waits import errors_in_threads


@pytest.fixture
def bound(database_url):
    database = db.bind(database_url)
    yield database
    database.close()


def test_fresh_database_is_at_version_zero(bound):
    assert migrations.current_version(bound) == 0


def test_migrate_creates_every_table_and_records_the_version(bound):
    assert migrations.migrate(bound) == list(range(1, migrations.LATEST + 1))
    assert migrations.current_version(bound) == migrations.LATEST
    for model in ALL_MODELS:
        assert bound.table_exists(model._meta.table_name)


def test_migrate_again_changes_nothing(bound):
    migrations.migrate(bound)
    assert migrations.migrate(bound) == []
    assert migrations.current_version(bound) == migrations.LATEST


def test_ensure_current_refuses_an_older_schema_and_says_to_migrate(bound):
    with pytest.raises(SchemaError, match="run `directory-api migrate`"):
        migrations.ensure_current(bound, auto_migrate=False)


def test_ensure_current_migrates_by_itself_when_asked(bound):
    migrations.ensure_current(bound, auto_migrate=True)
    assert migrations.current_version(bound) == migrations.LATEST


def test_ensure_current_refuses_a_newer_schema(bound, monkeypatch):
    migrations.migrate(bound)
    mark(bound, migrations.LATEST, additive=False)  # a newer step that is not additive
    monkeypatch.setattr(migrations, "LATEST", migrations.LATEST - 1)
    with pytest.raises(SchemaError, match="newer than this release"):
        migrations.ensure_current(bound, auto_migrate=True)


def test_ensure_current_accepts_the_current_schema(bound):
    migrations.migrate(bound)
    migrations.ensure_current(bound, auto_migrate=False)


def test_concurrent_migrations_all_succeed(database_url):
    # Each thread gets its own connection (peewee connections are per thread).
    database = db.bind(database_url)
    barrier = threading.Barrier(4)

    def run():
        barrier.wait()
        try:
            migrations.migrate(database)
        finally:
            database.close()

    errors = errors_in_threads(run, 4, timeout=60)
    assert errors == []
    assert migrations.current_version(database) == migrations.LATEST
    database.close()


def test_migrate_through_the_models_proxy_hands_each_step_the_database_behind_it(bound, monkeypatch):
    # The worker migrates (--debug) through models.database; a step may ask what database it is.
    seen = []
    step = migrations.Step(migrations.LATEST + 1, "seen", seen.append)
    monkeypatch.setattr(migrations, "STEPS", (*migrations.STEPS, step))
    monkeypatch.setattr(migrations, "LATEST", len(migrations.STEPS))
    migrations.migrate(models.database)
    assert seen == [bound]


def test_steps_are_numbered_from_one_without_gaps():
    assert [step.number for step in migrations.STEPS] == list(range(1, len(migrations.STEPS) + 1))


def mark(database, version: int, *, additive: bool) -> None:
    SchemaVersion.update(additive=additive).where(SchemaVersion.version == version).execute()


def recorded(database) -> dict[int, bool]:
    return {row.version: row.additive for row in SchemaVersion.select()}


def as_1_0_0_left_it(database) -> None:
    """A database migrated by release 1.0.0: steps 1 to 3, a schema_version table without `additive`."""
    migrations.migrate(database)
    database.execute_sql("DELETE FROM schema_version WHERE version > 3")
    database.execute_sql("ALTER TABLE schema_version DROP COLUMN additive")


# The steps after 1.0.0's last (3), and every step recorded additive: what a 1.0.0 database is migrated to.
AFTER_1_0_0 = list(range(4, migrations.LATEST + 1))
ALL_ADDITIVE = dict.fromkeys(range(1, migrations.LATEST + 1), True)


def extra_steps(monkeypatch, *steps: Step) -> None:
    monkeypatch.setattr(migrations, "STEPS", (*migrations.STEPS, *steps))
    monkeypatch.setattr(migrations, "LATEST", len(migrations.STEPS))


def nothing(database) -> None:
    pass


def test_migrate_records_each_step_as_additive_or_not(bound, monkeypatch):
    extra_steps(monkeypatch, Step(migrations.LATEST + 1, "drop_something", nothing, additive=False))
    migrations.migrate(bound, allow_breaking=True)
    assert recorded(bound) == {**{step.number: True for step in migrations.STEPS[:-1]}, migrations.LATEST: False}


def test_a_1_0_0_schema_version_table_gets_the_additive_column_with_a_default(bound):
    as_1_0_0_left_it(bound)
    assert migrations.migrate(bound) == AFTER_1_0_0
    assert recorded(bound) == ALL_ADDITIVE
    # 1.0.0 inserts (version, applied) only: the database default says "breaking", the cautious reading.
    bound.execute_sql("INSERT INTO schema_version (version, applied) VALUES (99, CURRENT_TIMESTAMP)")
    assert recorded(bound)[99] is False


def test_a_1_0_0_database_behind_its_own_last_step_is_migrated_through_to_the_end(bound):
    as_1_0_0_left_it(bound)
    bound.execute_sql("DELETE FROM schema_version WHERE version = 3")  # 3 is safe to apply again
    assert migrations.migrate(bound) == [3, *AFTER_1_0_0]
    assert recorded(bound) == ALL_ADDITIVE


def test_a_newer_schema_of_additive_steps_runs_with_one_warning_naming_both_versions(bound, caplog):
    migrations.migrate(bound)
    newer = migrations.LATEST + 1
    SchemaVersion.create(version=newer, additive=True)
    migrations._warned.clear()
    migrations.ensure_current(bound, auto_migrate=False)
    migrations.ensure_current(bound, auto_migrate=False)  # the worker checks again after each outage
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert f"at version {newer}, newer than this release (directory-api {__version__}, version " \
           f"{migrations.LATEST})" in warnings[0]


def test_a_newer_breaking_step_refuses_in_one_line_naming_it(bound):
    migrations.migrate(bound)
    newer = migrations.LATEST + 1
    SchemaVersion.create(version=newer, additive=True)
    SchemaVersion.create(version=newer + 1, additive=False)
    with pytest.raises(SchemaError) as refused:
        migrations.ensure_current(bound, auto_migrate=True)
    message = str(refused.value)
    assert message == (f"the database schema is at version {newer + 1}, newer than this release "
                       f"({migrations.LATEST}); step {newer + 1} is breaking: run the newer directory-api that "
                       "migrated it")
    assert migrations.current_version(bound) == newer + 1  # --debug never migrates down


def test_migrate_applies_no_step_when_a_breaking_one_is_pending_without_allow_breaking(bound, monkeypatch):
    migrations.migrate(bound)
    before = migrations.LATEST
    extra_steps(monkeypatch, Step(before + 1, "add_thing", nothing),
                Step(before + 2, "drop_thing", nothing, additive=False))
    with pytest.raises(SchemaError) as refused:
        migrations.migrate(bound)
    assert str(refused.value) == (
        f"schema step {before + 2} (drop_thing) is breaking: 1.0.0 can no longer run after it; stop every "
        "process of those releases, then run `directory-api migrate --allow-breaking`")
    assert migrations.current_version(bound) == before
    assert migrations.migrate(bound, allow_breaking=True) == [before + 1, before + 2]


def test_releases_stopped_by_a_step_are_the_older_ones_it_breaks(monkeypatch):
    monkeypatch.setattr(migrations, "RELEASES", (Release("1.0.0", 3, runs_on_additive=False), Release("1.1.0", 4)))
    assert migrations.releases_stopped_by(Step(5, "added", nothing)) == ["1.0.0"]
    assert migrations.releases_stopped_by(Step(5, "dropped", nothing, additive=False)) == ["1.0.0", "1.1.0"]
    assert migrations.releases_stopped_by(Step(4, "known to 1.1.0", nothing, additive=False)) == ["1.0.0"]


def test_a_step_that_fails_leaves_the_steps_before_it_applied_and_itself_not_at_all(bound, monkeypatch):
    def half_then_fail(database):
        database.execute_sql("CREATE TABLE half_made (id INTEGER)")
        raise RuntimeError("the step failed half way")

    before = migrations.LATEST
    extra_steps(monkeypatch, Step(before + 1, "fine", lambda database: database.execute_sql(
        "CREATE TABLE fine (id INTEGER)")), Step(before + 2, "half_then_fail", half_then_fail))
    with pytest.raises(RuntimeError):
        migrations.migrate(bound)
    assert migrations.current_version(bound) == before + 1
    assert bound.table_exists("fine")
    assert not bound.table_exists("half_made")


def test_pending_steps_change_nothing(bound):
    assert [step.number for step in migrations.pending_steps(bound)] == list(range(1, migrations.LATEST + 1))
    assert bound.get_tables() == []


def max_version_as_1_0_0_reads_it(database) -> int:
    return database.execute_sql("SELECT MAX(version) FROM schema_version").fetchone()[0]


def test_compatible_with_1_0_0_keeps_the_rows_of_later_steps_where_1_0_0_does_not_look(bound, caplog):
    as_1_0_0_left_it(bound)
    assert migrations.migrate(bound, compatible_with="1.0.0") == AFTER_1_0_0
    assert max_version_as_1_0_0_reads_it(bound) == 3
    assert migrations.current_version(bound) == migrations.LATEST
    assert migrations.held_steps(bound) == AFTER_1_0_0
    migrations.ensure_current(bound, auto_migrate=False)  # this release reads both tables
    assert migrations.migrate(bound, compatible_with="1.0.0") == []  # again: nothing more to do
    assert max_version_as_1_0_0_reads_it(bound) == 3
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


def test_a_plain_migrate_keeps_the_hold_so_1_0_0_keeps_starting(bound):
    as_1_0_0_left_it(bound)
    migrations.migrate(bound, compatible_with="1.0.0")
    assert migrations.migrate(bound) == []
    assert max_version_as_1_0_0_reads_it(bound) == 3
    assert migrations.held_steps(bound) == AFTER_1_0_0
    assert migrations.hold_in_effect(bound)


def test_a_step_a_plain_migrate_applies_during_a_hold_is_held_too(bound, monkeypatch):
    as_1_0_0_left_it(bound)
    migrations.migrate(bound, compatible_with="1.0.0")
    later = migrations.LATEST + 1
    extra_steps(monkeypatch, Step(later, "add_thing", nothing))
    assert migrations.migrate(bound) == [later]
    assert max_version_as_1_0_0_reads_it(bound) == 3
    assert migrations.held_steps(bound) == [*AFTER_1_0_0, later]
    assert migrations.current_version(bound) == later


def test_a_hold_started_on_an_empty_database_holds_every_step_beyond_1_0_0(bound):
    assert migrations.migrate(bound, compatible_with="1.0.0") == list(range(1, migrations.LATEST + 1))
    assert max_version_as_1_0_0_reads_it(bound) == 3
    assert migrations.held_steps(bound) == AFTER_1_0_0


def test_end_hold_records_the_held_steps_in_schema_version_again(bound):
    as_1_0_0_left_it(bound)
    migrations.migrate(bound, compatible_with="1.0.0")
    assert migrations.migrate(bound, end_hold=True) == []
    assert max_version_as_1_0_0_reads_it(bound) == migrations.LATEST
    assert migrations.held_steps(bound) == []
    assert not bound.table_exists("schema_version_beyond_1_0_0")
    assert recorded(bound) == ALL_ADDITIVE
    assert migrations.migrate(bound) == []  # and a plain migrate after it leaves schema_version so
    assert max_version_as_1_0_0_reads_it(bound) == migrations.LATEST


def test_end_hold_then_applies_the_pending_steps_into_schema_version(bound, monkeypatch):
    as_1_0_0_left_it(bound)
    migrations.migrate(bound, compatible_with="1.0.0")
    later = migrations.LATEST + 1
    extra_steps(monkeypatch, Step(later, "add_thing", nothing))
    assert migrations.migrate(bound, end_hold=True) == [later]
    assert max_version_as_1_0_0_reads_it(bound) == later
    assert not bound.table_exists("schema_version_beyond_1_0_0")


def test_a_breaking_step_during_a_hold_is_refused_even_with_allow_breaking_until_the_hold_ends(bound, monkeypatch):
    as_1_0_0_left_it(bound)
    migrations.migrate(bound, compatible_with="1.0.0")
    breaking = migrations.LATEST + 1
    extra_steps(monkeypatch, Step(breaking, "drop_thing", nothing, additive=False))
    for allow_breaking in (False, True):
        with pytest.raises(SchemaError) as refused:
            migrations.migrate(bound, allow_breaking=allow_breaking)
        assert str(refused.value) == (
            f"schema step {breaking} (drop_thing) is breaking and steps are held for 1.0.0 (migrate "
            "--compatible-with 1.0.0): end the hold first, once no 1.0.0 process is left (`directory-api migrate "
            "--end-compatibility`), then run `directory-api migrate --allow-breaking`")
    assert migrations.current_version(bound) == breaking - 1
    assert migrations.held_steps(bound) == AFTER_1_0_0  # refused before anything changed
    assert migrations.migrate(bound, end_hold=True, allow_breaking=True) == [breaking]
    assert recorded(bound) == {**ALL_ADDITIVE, breaking: False}


def test_compatible_with_and_end_hold_together_are_refused(bound):
    with pytest.raises(SchemaError, match="--compatible-with and --end-compatibility: give one of the two"):
        migrations.migrate(bound, compatible_with="1.0.0", end_hold=True)


def test_ensure_current_under_debug_keeps_the_hold(bound, monkeypatch):
    as_1_0_0_left_it(bound)
    migrations.migrate(bound, compatible_with="1.0.0")
    later = migrations.LATEST + 1
    extra_steps(monkeypatch, Step(later, "add_thing", nothing))
    migrations.ensure_current(bound, auto_migrate=True)
    assert max_version_as_1_0_0_reads_it(bound) == 3
    assert migrations.current_version(bound) == later


def test_compatible_with_1_0_0_refuses_a_breaking_step_beyond_1_0_0_and_applies_nothing(bound, monkeypatch):
    as_1_0_0_left_it(bound)
    breaking = migrations.LATEST + 1
    extra_steps(monkeypatch, Step(breaking, "drop_thing", nothing, additive=False))
    with pytest.raises(SchemaError, match=f"--compatible-with 1.0.0: step {breaking} is breaking, so 1.0.0 cannot run "
                                          "on this schema whatever is recorded"):
        migrations.migrate(bound, allow_breaking=True, compatible_with="1.0.0")
    assert migrations.current_version(bound) == 3


def test_compatible_with_a_release_that_reads_additive_marks_is_refused(bound):
    with pytest.raises(SchemaError, match="only 1.0.0 needs it"):
        migrations.migrate(bound, compatible_with="1.1.0")


def test_steps_are_named_in_the_singular_or_the_plural():
    assert migrations.steps_are([5]) == "step 5 is"
    assert migrations.steps_are([5, 6], "is held") == "steps 5, 6 are held"
