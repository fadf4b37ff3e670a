"""check: a readable report of configuration, database and queues; True only when all are usable."""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from throwaway_postgres import emptied

from directory_api import check as checking
from directory_api import db, migrations
from directory_api.check import Finding, check, report
from directory_api.queues import sqs
from tests.support.sockets import free_port

REPO = Path(__file__).resolve().parent.parent


def run_check(environ, *, debug=False) -> tuple[bool, list[str]]:
    lines: list[str] = []
    result = check(environ, debug=debug, echo=lines.append)
    return result, lines


def environ_for(database_url: str, **overrides) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "UI_SECRET": "not-a-real-secret",
        "QUEUE_BACKEND": "database",
        "SQS_ENROLMENT_QUEUE_NAME": "enrolment",
        "SQS_INVALID_ENROLMENT_QUEUE_NAME": "enrolment-invalid",
        **overrides,
    }


@pytest.fixture
def migrated_url(database_url) -> str:
    migrations.migrate(db.bind(database_url))
    return database_url


# A good configuration


def test_all_good_on_the_database_backend(migrated_url):
    good, lines = run_check(environ_for(migrated_url))

    assert good
    assert lines[-1] == checking.ALL_GOOD
    assert [line.split()[0] for line in lines[:-1]] == ["ok"] * 7
    assert f"ok       e-mail: {checking.EMAIL_LOGGED_ONLY}" in lines


def test_all_good_on_sqs_creates_the_missing_queues(migrated_url, aws_sqs):
    good, lines = run_check(environ_for(migrated_url, QUEUE_BACKEND="sqs"))

    assert good, lines
    assert "ok       queue enrolment: exists on SQS" in lines
    assert aws_sqs.get_queue_url(QueueName="enrolment-invalid")["QueueUrl"]


def test_debug_defaults_are_a_good_configuration(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    migrations.migrate(db.bind("sqlite:///directory-api-debug.sqlite3"))

    good, lines = run_check({}, debug=True)

    assert good, lines


# Configuration


def test_every_bad_setting_is_a_problem_line_saying_what_to_do():
    good, lines = run_check({"PORT": "eighty", "QUEUE_BACKEND": "rabbit"})

    problems = [line for line in lines if line.startswith("PROBLEM")]
    assert not good
    assert [line.split()[1] for line in problems] == ["configuration:"] * 6
    assert all(line.endswith(f"-> {checking.FIX_SETTING}") for line in problems)
    assert any("PORT" in line for line in problems)
    assert any("UI_SECRET is not set" in line for line in problems)


def test_a_short_ui_secret_is_a_problem_line():
    good, lines = run_check(environ_for("sqlite:///absent.sqlite3", UI_SECRET="a"))

    (problem,) = [line for line in lines if line.startswith("PROBLEM")]
    assert not good
    assert problem.startswith("PROBLEM  configuration: UI_SECRET: too short (length 1): at least 16 characters")


def test_a_short_ops_password_is_a_problem_line_that_never_shows_it():
    good, lines = run_check(environ_for("sqlite:///absent.sqlite3", OPS_PASSWORD="letmein"))

    (problem,) = [line for line in lines if line.startswith("PROBLEM")]
    assert not good
    assert problem.startswith("PROBLEM  configuration: OPS_PASSWORD: too short (length 7): at least 16 characters")
    assert "letmein" not in "\n".join(lines)


def test_a_bad_configuration_skips_database_and_queues():
    _, lines = run_check({})

    assert f"skipped  database: {checking.SKIPPED_FOR_CONFIGURATION}" in lines
    assert f"skipped  e-mail: {checking.SKIPPED_FOR_CONFIGURATION}" in lines
    assert lines[-1] == checking.PROBLEMS.format(count=4)


# Database


def test_a_missing_sqlite_file_is_a_problem_and_is_not_created(tmp_path):
    path = tmp_path / "absent.sqlite3"

    good, lines = run_check(environ_for(f"sqlite:///{path}"))

    assert not good
    assert f"PROBLEM  database: the SQLite file {path} does not exist -> {checking.FIX_SQLITE_MISSING}" in lines
    assert not path.exists()


def test_an_unreachable_database_says_to_check_the_url():
    url = f"postgresql://directory:not-a-real-secret@127.0.0.1:{free_port()}/directory_api"

    good, lines = run_check(environ_for(url))

    (problem,) = [line for line in lines if line.startswith("PROBLEM")]
    assert not good
    assert problem.startswith("PROBLEM  database: cannot connect to postgresql://directory:********@127.0.0.1")
    assert problem.endswith(f"-> {checking.FIX_CONNECT}")


def test_the_report_never_shows_the_database_password():
    url = f"postgresql://directory:not-a-real-secret@127.0.0.1:{free_port()}/directory_api"

    _, lines = run_check(environ_for(url))

    assert "not-a-real-secret" not in "\n".join(lines)


def test_an_old_schema_says_to_run_migrate(database_url):
    db.bind(database_url).connect()  # an empty database: schema version 0

    good, lines = run_check(environ_for(database_url))

    assert not good
    assert (
        f"PROBLEM  database schema: at version 0, this release needs {migrations.LATEST} -> {checking.FIX_MIGRATE}"
        in lines
    )


def test_a_newer_schema_says_to_run_the_newer_release(migrated_url):
    migrations.SchemaVersion.create(version=migrations.LATEST + 1)

    good, lines = run_check(environ_for(migrated_url))

    assert not good
    assert any(line.startswith("PROBLEM  database schema:") and line.endswith(checking.FIX_NEWER) for line in lines)


def test_a_newer_schema_of_additive_steps_is_usable(migrated_url):
    migrations.SchemaVersion.create(version=migrations.LATEST + 1, additive=True)

    good, lines = run_check(environ_for(migrated_url))

    assert good, lines
    assert f"ok       database schema: newer steps all additive (version {migrations.LATEST + 1}, this release " \
           f"{migrations.LATEST})" in lines


@pytest.fixture
def read_only_sqlite_url():
    """A migrated SQLite file its owner may read but not write, in a folder the owner may write (WAL files)."""
    folder = Path(tempfile.mkdtemp(prefix="directory-api-read-only-"))
    path = folder / "data.sqlite3"
    database = db.bind(f"sqlite:///{path}")
    migrations.migrate(database)
    database.close()
    path.chmod(0o444)
    yield f"sqlite:///{path}"
    shutil.rmtree(folder)


# Root writes any file through CAP_DAC_OVERRIDE. Dropping every capability keeps the tests' own user, so the
# process still reads the checkout wherever it was cloned (a 0700 folder included: another user could not).
WITHOUT_CAPABILITIES = ["setpriv", "--inh-caps=-all", "--bounding-set=-all", "--"]


def check_command(environ: dict[str, str]) -> subprocess.CompletedProcess:
    """`directory-api check` as a process, with no capabilities when the tests run as root."""
    argv = [*(WITHOUT_CAPABILITIES if os.geteuid() == 0 else []), sys.executable, "directory_api.py", "check"]
    env = {"PATH": os.environ["PATH"], "HOME": "/tmp", **environ}
    return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=False)


def test_a_read_only_sqlite_file_is_a_problem_not_all_good(read_only_sqlite_url):
    # Regression: reads still worked, so check said "all good" while every enrolment failed to be written.
    result = check_command(environ_for(read_only_sqlite_url))

    assert result.returncode == 1, result.stdout + result.stderr
    assert (
        "PROBLEM  database writes: an enrolment cannot be written: attempt to write a readonly database "
        f"-> {checking.FIX_WRITES}"
    ) in result.stdout.splitlines()


def test_a_full_disk_under_sqlite_is_a_problem_not_all_good(tmp_path, monkeypatch):
    # Regression: check said "all good" while every enrolment failed with "database or disk is full".
    url = f"sqlite:///{tmp_path / 'data.sqlite3'}"
    migrations.migrate(db.bind(url))
    monkeypatch.setattr(db, "free_bytes", lambda folder: 4096)

    good, lines = run_check(environ_for(url))

    assert not good
    assert any(line.startswith("PROBLEM  database writes: an enrolment cannot be written: the disk holding")
               and "is full (4096 bytes free)" in line for line in lines)


@pytest.mark.postgres
def test_a_read_only_postgres_is_a_problem_not_all_good(postgres_url):
    migrations.migrate(db.bind(emptied(postgres_url)))
    database_name = postgres_url.rsplit("/", 1)[1]
    admin = db.database_for(postgres_url.rsplit("/", 1)[0] + "/postgres")
    admin.execute_sql(f'ALTER DATABASE "{database_name}" SET default_transaction_read_only = on')
    try:
        good, lines = run_check(environ_for(postgres_url))
    finally:
        admin.execute_sql(f'ALTER DATABASE "{database_name}" RESET default_transaction_read_only')
        admin.close()

    assert not good
    assert "PROBLEM  database writes: an enrolment cannot be written: cannot execute INSERT in a read-only " \
           f"transaction -> {checking.FIX_WRITES}" in lines


def test_database_queues_are_skipped_while_the_database_is_broken(tmp_path):
    _, lines = run_check(environ_for(f"sqlite:///{tmp_path / 'absent.sqlite3'}"))

    assert f"skipped  queue enrolment: {checking.SKIPPED_FOR_DATABASE}" in lines


# Queues


def test_an_unreachable_sqs_endpoint_says_what_to_check(migrated_url, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    environ = environ_for(migrated_url, QUEUE_BACKEND="sqs", SQS_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}")

    good, lines = run_check(environ)

    problems = [line for line in lines if line.startswith("PROBLEM")]
    assert not good
    assert [line.split()[1:3] for line in problems] == [["queue", "enrolment:"], ["queue", "enrolment-invalid:"]]
    assert all(line.endswith(f"-> {checking.FIX_SQS}") for line in problems)


def test_sqs_is_checked_even_when_the_database_is_broken(tmp_path, aws_sqs):
    _, lines = run_check(environ_for(f"sqlite:///{tmp_path / 'absent.sqlite3'}", QUEUE_BACKEND="sqs"))

    assert "ok       queue enrolment: exists on SQS" in lines


# The report


def test_a_problem_line_says_what_to_do():
    lines = report([Finding("database", checking.PROBLEM, "cannot connect", "check DATABASE_URL")])

    assert lines[0] == "PROBLEM  database: cannot connect -> check DATABASE_URL"


def test_the_summary_counts_problems_not_skipped_parts():
    lines = report(
        [
            Finding("configuration", checking.PROBLEM, "PORT: bad", "fix it"),
            Finding("database", checking.SKIPPED, "not checked"),
        ]
    )

    assert lines[-1] == checking.PROBLEMS.format(count=1)


# E-mail


@pytest.fixture
def smtp_server():
    from tests.smtp import SmtpServer

    made = []

    def make(**options):
        made.append(SmtpServer(**options).start())
        return made[-1]

    yield make
    for server in made:
        server.stop()


def email_environ(database_url, port, **overrides):
    return environ_for(database_url, **{
        "EMAIL_HOST": "127.0.0.1", "EMAIL_PORT": str(port), "EMAIL_USE_TLS": "false",
        "DEFAULT_FROM_EMAIL": "noreply@example.com", "COMPANY_EMAIL_CONFIRMATION_URL": "https://directory.example.com/",
        **overrides})


def test_an_smtp_server_that_takes_the_login_is_ok(migrated_url, smtp_server):
    server = smtp_server(user="mailer", password="not-a-real-password")

    good, lines = run_check(email_environ(migrated_url, server.port, EMAIL_HOST_USER="mailer",
                                          EMAIL_HOST_PASSWORD="not-a-real-password"))

    assert good, lines
    assert f"ok       e-mail: SMTP server 127.0.0.1:{server.port} answers (no TLS, login as mailer)" in lines


def test_a_refused_smtp_login_is_a_problem_naming_the_reply_and_never_the_password(migrated_url, smtp_server):
    server = smtp_server(user="mailer", password="not-a-real-password")

    good, lines = run_check(email_environ(migrated_url, server.port, EMAIL_HOST_USER="mailer",
                                          EMAIL_HOST_PASSWORD="wrong-fake-password"))

    [line] = [line for line in lines if "e-mail:" in line]
    assert not good
    assert line.startswith(f"PROBLEM  e-mail: SMTP server 127.0.0.1:{server.port}: 535")
    assert line.endswith(f"-> {checking.FIX_SMTP}")
    assert "wrong-fake-password" not in "\n".join(lines)


def test_an_unreachable_smtp_server_is_a_problem(migrated_url):
    good, lines = run_check(email_environ(migrated_url, free_port()))

    assert not good
    assert any(line.startswith("PROBLEM  e-mail: SMTP server") and "Connection refused" in line for line in lines)


def test_starttls_to_a_server_with_a_certificate_not_trusted_is_a_problem(migrated_url, smtp_server, tmp_path):
    from tests.smtp import self_signed_certificate

    cert, key = self_signed_certificate(tmp_path)
    server = smtp_server(tls_cert=str(cert), tls_key=str(key))

    good, lines = run_check(email_environ(migrated_url, server.port, EMAIL_USE_TLS="true"))

    assert not good
    assert any("e-mail:" in line and "CERTIFICATE_VERIFY_FAILED" in line for line in lines)


def test_sqs_without_credentials_says_so_on_each_queue(migrated_url, no_aws_credentials, monkeypatch):
    monkeypatch.setattr(sqs, "_clients", {})  # not the client an earlier test made with credentials
    good, lines = run_check(environ_for(migrated_url, QUEUE_BACKEND="sqs"))

    problems = [line for line in lines if line.startswith("PROBLEM")]
    assert not good
    assert [line.split(":")[0] for line in problems] == ["PROBLEM  queue enrolment", "PROBLEM  queue enrolment-invalid"]
    assert all("unusable on SQS: no AWS credentials found: give the machine an IAM role" in line for line in problems)
