"""The `migrate` command, driven through the CLI."""

from directory_api import db, migrations
from tests.support import invoke_cli


def test_migrate_creates_the_schema_and_says_so(database_url):
    result = invoke_cli("migrate", DATABASE_URL=database_url)
    assert result.exit_code == 0, result.output
    assert f"schema migrated to version {migrations.LATEST}" in result.output
    assert migrations.current_version(db.bind(database_url)) == migrations.LATEST


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
