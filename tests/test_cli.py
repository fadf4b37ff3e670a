"""The CLI: every command has help, bad configuration is one line a variable with exit 2, never a traceback."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main
from dotenv import dotenv_values

from directory_api import __version__, db, migrations
from directory_api.cli import app
from directory_api.envwrite import MISSING_VARIABLE
from directory_api.errors import UserError
from directory_api.release import build_commit
from tests.support.cli import invoke_cli as invoke

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = typer.main.get_group(app).commands


def test_every_spec_command_exists():
    assert set(COMMANDS) == {"serve", "work", "env-write", "migrate", "dev", "check", "status", "redrive", "export",
                             "erase"}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_help_listing_its_options(name):
    result = invoke(name, "--help")

    assert result.exit_code == 0
    for parameter in COMMANDS[name].params:
        for option in parameter.opts:
            if option.startswith("--") and not getattr(parameter, "hidden", False):
                assert option in result.output


@pytest.mark.parametrize("name", sorted(set(COMMANDS) - {"dev"}))
def test_every_command_takes_debug_and_env_file_after_its_name(name):
    options = [option for parameter in COMMANDS[name].params for option in parameter.opts]

    assert "--debug" in options
    assert "--env-file" in options


def test_a_user_error_from_any_command_is_its_lines_on_stderr_and_exit_2_without_a_decorator():
    # The group handles UserError: a command added later cannot forget to, and print a traceback.
    @app.command("fails-for-a-test")
    def fails() -> None:
        raise UserError("SOME_SETTING: wrong\nand a second line")

    try:
        result = invoke("fails-for-a-test", "--debug")
    finally:
        app.registered_commands.pop()

    assert result.exit_code == 2
    assert result.stderr.splitlines() == ["error: SOME_SETTING: wrong", "error: and a second line"]


def test_version():
    result = invoke("--version")

    assert result.exit_code == 0
    # The release, then the commit (from a checkout, git's HEAD: see tests/test_version.py).
    assert result.output == f"directory-api {__version__} (commit {build_commit()})\n"


def test_bad_settings_are_one_error_line_each_with_exit_2():
    result = invoke("migrate", DATABASE_URL="mysql://db/x", PORT="eighty")

    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert [line.split(":")[:2] for line in lines] == [["error", " PORT"], ["error", " DATABASE_URL"]]


def test_bad_settings_through_a_real_process_print_no_traceback(tmp_path):
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "DATABASE_URL": "mysql://db/x", "PORT": "eighty"}

    result = subprocess.run(
        [sys.executable, str(ROOT / "directory_api.py"), "migrate"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) == 2
    assert all(line.startswith("error: ") for line in result.stderr.splitlines())


def test_a_slash_in_the_database_password_is_masked_by_debug_and_never_a_traceback(tmp_path):
    url = "postgres://directory:not-a-real/secret@127.0.0.1:1/directory_api"
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "DATABASE_URL": url}

    result = subprocess.run(
        [sys.executable, str(ROOT / "directory_api.py"), "migrate", "--debug"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )

    assert "DATABASE_URL=postgres://directory:********@127.0.0.1:1/directory_api" in result.stderr
    assert "not-a-real" not in result.stderr and "secret@" not in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("port", ["abc", "70000"])
def test_a_bad_database_port_is_one_error_line_with_exit_2(port):
    result = invoke("migrate", DATABASE_URL=f"postgres://directory:not-a-real-secret@db:{port}/x")

    assert result.exit_code == 2
    assert result.stderr == "error: DATABASE_URL: the port is not a number from 1 to 65535\n"


def test_serve_refuses_a_short_ui_secret_with_exit_2():
    result = invoke(
        "serve", DATABASE_URL="sqlite:///x.sqlite3", UI_SECRET="a", SQS_ENROLMENT_QUEUE_NAME="enrolment",
        SQS_INVALID_ENROLMENT_QUEUE_NAME="enrolment-invalid",
    )

    assert result.exit_code == 2
    assert result.stderr.startswith("error: UI_SECRET: too short (length 1)")


# env-write through the CLI


@pytest.fixture
def config(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "env.json"
    path.write_text(
        json.dumps(
            {
                "host_env_var_prefix": "DIRECTORY_API",
                "file_path": ".env",
                "env_vars": {"required": ["UI_SECRET", "DATABASE_URL"], "optional": ["PORT"]},
            }
        )
    )
    return path


def test_env_write_defaults_to_env_json_and_prints_what_it_wrote(config):
    result = invoke("env-write", DIRECTORY_API_UI_SECRET="not-a-real-secret", DIRECTORY_API_DATABASE_URL="sqlite:///x")

    assert result.exit_code == 0, result.stderr
    assert result.stdout == "wrote .env (2 variables)\n"
    assert dotenv_values(".env") == {"UI_SECRET": "not-a-real-secret", "DATABASE_URL": "sqlite:///x"}


def test_env_write_lists_every_missing_variable_on_stderr_and_exits_2(config):
    result = invoke("env-write", str(config))

    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "error: " + MISSING_VARIABLE.format(host_name="DIRECTORY_API_UI_SECRET", config=config),
        "error: " + MISSING_VARIABLE.format(host_name="DIRECTORY_API_DATABASE_URL", config=config),
        "error: nothing was written",
    ]
    assert not Path(".env").exists()


def test_env_write_ignores_malformed_service_settings(config):
    # env-write only copies variables: a PORT the service would refuse is not its business.
    result = invoke(
        "env-write", DIRECTORY_API_UI_SECRET="debug", DIRECTORY_API_DATABASE_URL="sqlite:///x", PORT="eighty"
    )

    assert result.exit_code == 0, result.stderr


def test_env_write_reads_host_variables_from_an_env_file(config, tmp_path):
    (tmp_path / "host.env").write_text("DIRECTORY_API_UI_SECRET=debug\nDIRECTORY_API_DATABASE_URL=sqlite:///x\n")

    result = invoke("env-write", "--env-file", str(tmp_path / "host.env"))

    assert result.exit_code == 0, result.stderr
    assert dotenv_values(".env") == {"UI_SECRET": "debug", "DATABASE_URL": "sqlite:///x"}


# check through the CLI


def test_check_exits_0_when_all_is_good(tmp_path):
    url = f"sqlite:///{tmp_path / 'ok.sqlite3'}"
    migrations.migrate(db.bind(url))

    result = invoke(
        "check", DATABASE_URL=url, UI_SECRET="not-a-real-secret", QUEUE_BACKEND="database",
        SQS_ENROLMENT_QUEUE_NAME="enrolment", SQS_INVALID_ENROLMENT_QUEUE_NAME="enrolment-invalid",
    )

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == "all good"


def test_check_exits_non_zero_on_a_broken_configuration():
    result = invoke("check")

    assert result.exit_code != 0
    assert "PROBLEM  configuration: DATABASE_URL is not set" in result.stdout
