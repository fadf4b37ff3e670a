"""migrate: ordered steps, recorded, idempotent, safe to run concurrently."""

import threading

import pytest

from directory_api import db, migrations, models
from directory_api.errors import SchemaError
from directory_api.models import ALL_MODELS
from tests.support import errors_in_threads


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
