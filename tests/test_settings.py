"""Settings: docs/settings.md's variables, their defaults and --debug defaults, and a message naming each bad one."""

from pathlib import Path

import pytest
from dotenv import dotenv_values

from directory_api.errors import SettingsError
from directory_api.settings import (
    MIN_SECRET_LENGTH,
    NEEDS_ALL,
    NEEDS_DATABASE,
    NEEDS_MAIL,
    NEEDS_QUEUES,
    VARIABLES,
    Settings,
    mask_url,
    split_database_url,
)
from tests.support.cli import invoke_cli

REQUIRED = {
    "DATABASE_URL": "postgres://directory@db:5432/directory_api",
    "UI_SECRET": "not-a-real-secret",
    "SQS_ENROLMENT_QUEUE_NAME": "enrolment",
    "SQS_INVALID_ENROLMENT_QUEUE_NAME": "enrolment-invalid",
}


def problems(environ: dict[str, str], **kwargs) -> list[str]:
    with pytest.raises(SettingsError) as raised:
        Settings.from_environ(environ, **kwargs)
    return str(raised.value).splitlines()


def test_every_spec_setting_is_a_variable():
    assert [variable.name for variable in VARIABLES] == [
        "PORT", "DATABASE_URL", "UI_SECRET", "QUEUE_BACKEND", "SQS_ENROLMENT_QUEUE_NAME",
        "SQS_INVALID_ENROLMENT_QUEUE_NAME", "SQS_REGION_NAME", "SQS_ENDPOINT_URL", "SQS_WAIT_TIME",
        "SQS_MAX_NUMBER_OF_MESSAGES", "SQS_VISIBILITY_TIMEOUT", "SQS_MAX_RECEIVE_COUNT", "SQS_DIRECT",
        "SIGNATURE_LEGACY",
        "EMAIL_HOST", "EMAIL_PORT", "EMAIL_HOST_USER", "EMAIL_HOST_PASSWORD", "EMAIL_USE_TLS", "DEFAULT_FROM_EMAIL",
        "COMPANY_EMAIL_CONFIRMATION_FROM", "COMPANY_EMAIL_CONFIRMATION_SUBJECT", "COMPANY_EMAIL_CONFIRMATION_URL",
        "LOG_FORMAT", "LOG_LEVEL", "METRICS_PORT", "METRICS_HOST",
        "OPS_PASSWORD", "REJECTION_RETENTION_DAYS", "EMAIL_RETENTION_DAYS",
    ]


@pytest.mark.parametrize(
    ("field", "default"),
    [
        ("port", 8000),
        ("queue_backend", "sqs"),
        ("sqs_region", "eu-west-1"),
        ("sqs_endpoint_url", None),
        ("sqs_wait_time", 20),
        ("sqs_max_messages", 10),
        ("sqs_visibility_timeout", 30),
        ("sqs_max_receive_count", 5),
        ("signature_legacy", False),
        ("email_host", None),
        ("email_port", 587),
        ("email_host_user", None),
        ("email_host_password", None),
        ("email_use_tls", True),
        ("default_from_email", None),
        ("confirmation_from", None),
        ("confirmation_subject", "Your company's trade profile"),
        ("confirmation_url", None),
    ],
)
def test_default(field, default):
    assert getattr(Settings.from_environ(REQUIRED), field) == default


@pytest.mark.parametrize(
    ("field", "default"),
    [
        ("port", 8000),
        ("database_url", "sqlite:///directory-api-debug.sqlite3"),
        ("ui_secret", "debug"),
        ("queue_backend", "database"),
        ("enrolment_queue", "enrolment"),
        ("invalid_queue", "enrolment-invalid"),
        ("sqs_region", "eu-west-1"),
        ("sqs_endpoint_url", None),
        ("sqs_wait_time", 20),
        ("sqs_max_messages", 10),
        ("sqs_visibility_timeout", 30),
        ("sqs_max_receive_count", 5),
        ("signature_legacy", False),
        ("email_host", None),
        ("email_port", 587),
        ("email_use_tls", False),
        ("default_from_email", "noreply@localhost"),
        ("confirmation_from", None),
        ("confirmation_subject", "Your company's trade profile"),
        ("confirmation_url", "http://127.0.0.1:8000/"),
    ],
)
def test_debug_default(field, default):
    assert getattr(Settings.from_environ({}, debug=True), field) == default


def test_the_environment_wins_over_debug_defaults():
    settings = Settings.from_environ({"QUEUE_BACKEND": "sqs", "PORT": "9000"}, debug=True)

    assert (settings.queue_backend, settings.port) == ("sqs", 9000)


def test_an_empty_variable_counts_as_unset():
    assert Settings.from_environ({**REQUIRED, "PORT": ""}).port == 8000


def test_every_missing_required_variable_is_named_one_per_line():
    lines = problems({})

    assert [line.split()[0] for line in lines] == list(REQUIRED)
    assert all("is not set" in line for line in lines)


def test_a_command_requires_only_what_it_needs():
    settings = Settings.from_environ({"DATABASE_URL": REQUIRED["DATABASE_URL"]}, require=NEEDS_DATABASE)

    assert settings.ui_secret is None


def test_required_gives_the_value_of_a_variable_the_command_required():
    settings = Settings.from_environ({"DATABASE_URL": REQUIRED["DATABASE_URL"]}, require=NEEDS_DATABASE)

    assert settings.required("DATABASE_URL") == REQUIRED["DATABASE_URL"]


def test_required_names_a_variable_the_command_did_not_require_and_is_unset():
    settings = Settings.from_environ({"DATABASE_URL": REQUIRED["DATABASE_URL"]}, require=NEEDS_DATABASE)

    with pytest.raises(SettingsError, match="^UI_SECRET is not set"):
        settings.required("UI_SECRET")


def test_needs_all_is_every_variable_without_a_default_and_those_required_when_another_is_set():
    assert set(NEEDS_ALL) == set(REQUIRED) | set(NEEDS_MAIL)


def test_with_email_host_the_sender_and_the_link_are_required():
    lines = problems({**REQUIRED, "EMAIL_HOST": "smtp.example.com"})

    assert lines == [
        "DEFAULT_FROM_EMAIL is not set (required when EMAIL_HOST is set: the sender of the confirmation e-mail, "
        "e.g. noreply@example.com)",
        "COMPANY_EMAIL_CONFIRMATION_URL is not set (required when EMAIL_HOST is set: the link the confirmation "
        "e-mail carries)",
    ]


def test_the_smtp_login_needs_both_user_and_password():
    (line,) = problems({**REQUIRED, "EMAIL_HOST_USER": "mailer"})

    assert line.startswith("EMAIL_HOST_PASSWORD is not set (required when EMAIL_HOST_USER is set")


def test_a_command_that_sends_no_email_does_not_ask_for_its_settings():
    environ = {"DATABASE_URL": REQUIRED["DATABASE_URL"], "EMAIL_HOST": "smtp.example.com"}

    assert Settings.from_environ(environ, require=NEEDS_DATABASE).email_host == "smtp.example.com"


def test_work_requires_the_email_settings_when_email_host_is_set():
    environ = {**REQUIRED, "EMAIL_HOST": "smtp.example.com"}

    assert [line.split()[0] for line in problems(environ, require=NEEDS_QUEUES)] == [
        "DEFAULT_FROM_EMAIL", "COMPANY_EMAIL_CONFIRMATION_URL"]


def test_the_confirmation_sender_defaults_to_default_from_email():
    environ = {**REQUIRED, "DEFAULT_FROM_EMAIL": "noreply@example.com"}

    assert Settings.from_environ(environ).confirmation_sender == "noreply@example.com"
    assert Settings.from_environ({**environ, "COMPANY_EMAIL_CONFIRMATION_FROM": "Trade <trade@example.com>"}
                                 ).confirmation_sender == "Trade <trade@example.com>"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("PORT", "eighty", "PORT: 'eighty' is not a whole number"),
        ("PORT", "8000.5", "PORT: '8000.5' is not a whole number"),
        ("PORT", "0", "PORT: 0 is out of range 1-65535"),
        ("PORT", "65536", "PORT: 65536 is out of range 1-65535"),
        ("SQS_WAIT_TIME", "21", "SQS_WAIT_TIME: 21 is out of range 0-20"),
        ("SQS_WAIT_TIME", "-1", "SQS_WAIT_TIME: -1 is out of range 0-20"),
        ("SQS_MAX_NUMBER_OF_MESSAGES", "0", "SQS_MAX_NUMBER_OF_MESSAGES: 0 is out of range 1-10"),
        ("SQS_MAX_NUMBER_OF_MESSAGES", "11", "SQS_MAX_NUMBER_OF_MESSAGES: 11 is out of range 1-10"),
        ("SQS_VISIBILITY_TIMEOUT", "0", "SQS_VISIBILITY_TIMEOUT: 0 is out of range 1-43200"),
        ("SQS_MAX_RECEIVE_COUNT", "0", "SQS_MAX_RECEIVE_COUNT: 0 is out of range 1-1000"),
        ("QUEUE_BACKEND", "rabbitmq", "QUEUE_BACKEND: 'rabbitmq' is not one of sqs, database"),
        ("SIGNATURE_LEGACY", "maybe", "SIGNATURE_LEGACY: 'maybe' is not true or false"),
        ("SQS_ENROLMENT_QUEUE_NAME", "has space", "SQS_ENROLMENT_QUEUE_NAME: 'has space' is not a queue name"),
        ("SQS_INVALID_ENROLMENT_QUEUE_NAME", "x" * 81, "SQS_INVALID_ENROLMENT_QUEUE_NAME: 'xxx"),
        ("SQS_REGION_NAME", "Ireland", "SQS_REGION_NAME: 'Ireland' is not an AWS region name"),
        ("SQS_ENDPOINT_URL", "localhost:9324", "SQS_ENDPOINT_URL: 'localhost:9324' is not an http:// or https:// URL"),
        ("DATABASE_URL", "mysql://db/x", "DATABASE_URL: scheme mysql:// is not supported"),
        ("DATABASE_URL", "directory_api", "DATABASE_URL: scheme (none) is not supported"),
        ("DATABASE_URL", "postgres://db:5432/", "DATABASE_URL: the URL names no database"),
        ("DATABASE_URL", "sqlite://", "DATABASE_URL: a SQLite URL is sqlite:///relative/path"),
        ("EMAIL_HOST", "smtp example", "EMAIL_HOST: 'smtp example' is not a host name"),
        ("EMAIL_PORT", "0", "EMAIL_PORT: 0 is out of range 1-65535"),
        ("EMAIL_USE_TLS", "sometimes", "EMAIL_USE_TLS: 'sometimes' is not true or false"),
        ("DEFAULT_FROM_EMAIL", "noreply", "DEFAULT_FROM_EMAIL: 'noreply' is not an e-mail address"),
        ("DEFAULT_FROM_EMAIL", "a@example.com\nBcc: b@example.com", "DEFAULT_FROM_EMAIL: 'a@example.com\\nBcc"),
        ("COMPANY_EMAIL_CONFIRMATION_FROM", "<>", "COMPANY_EMAIL_CONFIRMATION_FROM: '<>' is not an e-mail address"),
        ("COMPANY_EMAIL_CONFIRMATION_SUBJECT", "Hi\r\nBcc: b@example.com",
         "COMPANY_EMAIL_CONFIRMATION_SUBJECT: holds a line break or another control character"),
        ("COMPANY_EMAIL_CONFIRMATION_SUBJECT", "x" * 201, "COMPANY_EMAIL_CONFIRMATION_SUBJECT: is 201 characters"),
        ("COMPANY_EMAIL_CONFIRMATION_URL", "javascript:alert(1)",
         "COMPANY_EMAIL_CONFIRMATION_URL: 'javascript:alert(1)' is not an http:// or https:// URL"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable(name, value, message):
    (line,) = problems({**REQUIRED, name: value})

    assert line.startswith(message)


def test_a_bad_database_url_message_never_shows_its_password():
    (line,) = problems({**REQUIRED, "DATABASE_URL": "mysql://user:not-a-real-secret@db/x"})

    assert "not-a-real-secret" not in line


@pytest.mark.parametrize("word", ["1", "true", "TRUE", "yes", "on"])
def test_true_words(word):
    assert Settings.from_environ({**REQUIRED, "SIGNATURE_LEGACY": word}).signature_legacy is True


@pytest.mark.parametrize("word", ["0", "false", "False", "no", "off"])
def test_false_words(word):
    assert Settings.from_environ({**REQUIRED, "SIGNATURE_LEGACY": word}).signature_legacy is False


@pytest.mark.parametrize("url", ["postgres://u@h/db", "postgresql://u:p@h:5432/db", "sqlite:///rel.db", "sqlite:////abs.db"])
def test_accepted_database_urls(url):
    assert Settings.from_environ({**REQUIRED, "DATABASE_URL": url}).database_url == url


def test_every_bad_variable_is_reported_at_once():
    lines = problems({**REQUIRED, "PORT": "x", "SQS_WAIT_TIME": "99"})

    assert [line.split(":")[0] for line in lines] == ["PORT", "SQS_WAIT_TIME"]


def test_describe_masks_the_ui_secret():
    described = Settings.from_environ(REQUIRED).describe()

    assert "not-a-real-secret" not in described
    assert "UI_SECRET=********" in described


def test_describe_masks_the_database_password_only():
    environ = {**REQUIRED, "DATABASE_URL": "postgres://directory:not-a-real-secret@db:5432/directory_api"}

    described = Settings.from_environ(environ).describe()

    assert "DATABASE_URL=postgres://directory:********@db:5432/directory_api" in described
    assert "not-a-real-secret" not in described


def test_describe_masks_the_smtp_password():
    described = Settings.from_environ(
        {**REQUIRED, "EMAIL_HOST_USER": "mailer", "EMAIL_HOST_PASSWORD": "not-a-real-password"}).describe()

    assert "not-a-real-password" not in described
    assert "EMAIL_HOST_PASSWORD=********" in described and "EMAIL_HOST_USER=mailer" in described


def test_describe_says_where_each_value_came_from():
    described = Settings.from_environ({"PORT": "9000"}, debug=True).describe()

    assert "PORT=9000  [environment]" in described
    assert "UI_SECRET=********  [debug default]" in described


def test_mask_url_leaves_a_url_without_password_alone():
    assert mask_url("postgres://directory@db/directory_api") == "postgres://directory@db/directory_api"


# A password holding characters a URL reserves, and ports that are not ports (issue 10, item 8)


@pytest.mark.parametrize("password", ["pa/ss", "pa?ss", "pa#ss", "p@ss", "pa:ss"])
def test_a_reserved_character_in_the_database_password_is_part_of_the_password(password):
    parts = split_database_url(f"postgres://directory:{password}@db.example:6543/directory_api")

    assert (parts.user, parts.password, parts.host, parts.port, parts.name) == (
        "directory", password, "db.example", 6543, "directory_api"
    )


@pytest.mark.parametrize("password", ["pa/ss", "pa?ss", "pa#ss", "p@ss"])
def test_a_slash_in_the_database_password_is_masked_whole_under_debug(password):
    url = f"postgres://directory:not-a-real-secret-{password}@db:5432/directory_api"

    described = Settings.from_environ({"DATABASE_URL": url}, debug=True).describe()

    assert "DATABASE_URL=postgres://directory:********@db:5432/directory_api" in described
    assert "not-a-real-secret" not in described and "ss@" not in described


@pytest.mark.parametrize("port", ["abc", "99999", "0", "-1", "5432x", "٥٤٣٢"])
def test_a_bad_database_port_is_one_line_naming_database_url_not_a_traceback(port):
    (line,) = problems({**REQUIRED, "DATABASE_URL": f"postgres://directory:not-a-real-secret@db:{port}/x"})

    assert line == "DATABASE_URL: the port is not a number from 1 to 65535"


def test_an_ipv6_host_needs_brackets():
    assert split_database_url("postgres://u@[::1]:5432/db").host == "::1"
    (line,) = problems({**REQUIRED, "DATABASE_URL": "postgres://u@::1:5432/db"})
    assert line == "DATABASE_URL: the part after the last @ is not host, host:port or [IPv6 address]:port"


def test_a_slash_in_a_password_without_host_never_shows_the_password():
    (line,) = problems({**REQUIRED, "DATABASE_URL": "postgres://directory:pass/word"})

    assert line.startswith("DATABASE_URL: ") and "pass" not in line


def test_mask_url_masks_every_password_it_can_find():
    assert mask_url("postgresql://:p/w@h/db") == "postgresql://:********@h/db"
    assert mask_url("sqlite:///a@b/c.db") == "sqlite:///a@b/c.db"


# UI_SECRET (issue 10, item 9) and OPS_PASSWORD (issue 22, item 5): secrets of at least 16 characters

SECRETS = [("UI_SECRET", "ui_secret"), ("OPS_PASSWORD", "ops_password")]


@pytest.mark.parametrize("variable, attribute", SECRETS)
def test_a_secret_shorter_than_16_characters_is_refused_outside_debug(variable, attribute):
    (line,) = problems({**REQUIRED, variable: "a" * (MIN_SECRET_LENGTH - 1)})

    assert line.startswith(f"{variable}: too short (length 15): at least 16 characters outside --debug")
    assert "aaa" not in line


@pytest.mark.parametrize("variable, attribute", SECRETS)
def test_a_secret_of_16_characters_is_accepted(variable, attribute):
    assert getattr(Settings.from_environ({**REQUIRED, variable: "x" * 16}), attribute) == "x" * 16


@pytest.mark.parametrize("variable, attribute", SECRETS)
def test_a_short_secret_is_allowed_under_debug(variable, attribute):
    assert getattr(Settings.from_environ({variable: "debug"}, debug=True), attribute) == "debug"


def test_the_example_env_file_is_a_complete_production_configuration():
    example = dotenv_values(Path(__file__).parents[1] / "docs" / "directory-api.env.example")

    settings = Settings.from_environ(example)

    assert settings.queue_backend == "sqs"
    # OPS_PASSWORD: the console off
    unset_by_default = {"SQS_ENDPOINT_URL", "LOG_LEVEL", "METRICS_PORT", "METRICS_HOST", "OPS_PASSWORD"}
    assert set(example) == {variable.name for variable in VARIABLES if variable.name not in unset_by_default}


def test_retention_days_default_to_90_and_0_keeps_for_ever():
    default = Settings.from_environ(REQUIRED)
    assert (default.rejection_retention_days, default.email_retention_days) == (90, 90)
    kept = Settings.from_environ({**REQUIRED, "REJECTION_RETENTION_DAYS": "0", "EMAIL_RETENTION_DAYS": "30"})
    assert (kept.rejection_retention_days, kept.email_retention_days) == (0, 30)


def test_negative_retention_days_are_refused_naming_the_variable():
    assert problems({**REQUIRED, "EMAIL_RETENTION_DAYS": "-1"}) == ["EMAIL_RETENTION_DAYS: -1 is out of range 0-36500"]


# OPS_PASSWORD


def test_an_unset_ops_password_leaves_the_console_off_and_is_no_problem():
    assert Settings.from_environ(REQUIRED).ops_password is None


def test_serve_refuses_a_short_ops_password_in_one_line_with_exit_2():
    result = invoke_cli("serve", **{**REQUIRED, "DATABASE_URL": "sqlite:///x.sqlite3", "OPS_PASSWORD": "letmein"})

    assert result.exit_code == 2
    assert result.stderr.startswith("error: OPS_PASSWORD: too short (length 7)")
    assert len(result.stderr.splitlines()) == 1 and "letmein" not in result.stderr
