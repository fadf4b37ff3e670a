"""check: configuration, database and queues, as a report with what to do about each problem."""

import dataclasses
import os
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING

from directory_api.errors import SettingsError, first_line
from directory_api.queues.sqs_reasons import why_unusable
from directory_api.settings import NEEDS_ALL, Settings, mask_url, split_database_url

if TYPE_CHECKING:
    import peewee  # imported when a check runs, as `check --help` needs no database driver

OK, PROBLEM, SKIPPED = "ok", "PROBLEM", "skipped"

FIX_SETTING = "set it in the environment or in the file given to --env-file"
FIX_CONNECT = "check DATABASE_URL, that the database server is running and that it lets this user in"
FIX_SQLITE_MISSING = "run `directory-api migrate` to create it, or correct DATABASE_URL"
FIX_MIGRATE = "run `directory-api migrate`"
FIX_NEWER = "run the newer directory-api that migrated it"
FIX_WRITES = (
    "for SQLite, make the file and its directory writable by this user and free some disk space; "
    "for PostgreSQL, connect to the primary as a user that may insert, and look for a session holding a lock"
)
FIX_SQS = (
    "check SQS_ENDPOINT_URL, SQS_REGION_NAME and the AWS credentials; they must allow "
    "sqs:GetQueueUrl, sqs:CreateQueue, sqs:GetQueueAttributes, sqs:SendMessage, sqs:ReceiveMessage, "
    "sqs:DeleteMessage and sqs:ChangeMessageVisibility (docs/production.md has the policy)"
)
FIX_DATABASE_QUEUE = "fix the database first (QUEUE_BACKEND=database keeps the queues in it)"
FIX_SMTP = (
    "check EMAIL_HOST, EMAIL_PORT, EMAIL_USE_TLS, EMAIL_HOST_USER and EMAIL_HOST_PASSWORD, and that the SMTP "
    "server lets this machine in (unset EMAIL_HOST to record and log the e-mails instead)"
)
EMAIL_LOGGED_ONLY = "EMAIL_HOST is not set: confirmation e-mails are recorded and logged, not sent"
SKIPPED_FOR_CONFIGURATION = "not checked until the configuration is fixed"
SKIPPED_FOR_DATABASE = "not checked until the database is fixed (QUEUE_BACKEND=database)"
ALL_GOOD = "all good"
PROBLEMS = "{count} problem(s): fix them and run `directory-api check` again"


@dataclasses.dataclass(frozen=True)
class Finding:
    part: str
    state: str
    detail: str
    fix: str = ""


def check(environ: Mapping[str, str], *, debug: bool, echo: Callable[[str], None] = print) -> bool:
    """Print the report; True only when every part is usable."""
    findings = list(findings_for(environ, debug=debug))
    for line in report(findings):
        echo(line)
    return all(finding.state == OK for finding in findings)


def report(findings: list[Finding]) -> list[str]:
    """One line a finding (a problem's line says what to do), then a summary."""
    lines = []
    for finding in findings:
        line = f"{finding.state:<8} {finding.part}: {finding.detail}"
        lines.append(f"{line} -> {finding.fix}" if finding.fix else line)
    problems = sum(finding.state == PROBLEM for finding in findings)
    lines.append(PROBLEMS.format(count=problems) if problems else ALL_GOOD)
    return lines


def findings_for(environ: Mapping[str, str], *, debug: bool) -> Iterator[Finding]:
    try:
        settings = Settings.from_environ(environ, debug=debug, require=NEEDS_ALL)
    except SettingsError as error:
        for line in str(error).splitlines():
            yield Finding("configuration", PROBLEM, line, FIX_SETTING)
        yield Finding("database", SKIPPED, SKIPPED_FOR_CONFIGURATION)
        yield Finding("queues", SKIPPED, SKIPPED_FOR_CONFIGURATION)
        yield Finding("e-mail", SKIPPED, SKIPPED_FOR_CONFIGURATION)
        return
    yield Finding("configuration", OK, f"valid (QUEUE_BACKEND={settings.queue_backend}{', --debug' if debug else ''})")

    database = None
    try:
        database, database_findings = check_database(settings)
        yield from database_findings
        database_ok = all(finding.state == OK for finding in database_findings)
        for name in (settings.required("SQS_ENROLMENT_QUEUE_NAME"),
                     settings.required("SQS_INVALID_ENROLMENT_QUEUE_NAME")):
            if settings.queue_backend == "database" and not database_ok:
                yield Finding(f"queue {name}", SKIPPED, SKIPPED_FOR_DATABASE)
            else:
                yield check_queue(settings, name)
        yield check_email(settings)
    finally:
        if database is not None:
            database.close()


def check_database(settings: Settings) -> tuple["peewee.Database | None", list[Finding]]:
    """The bound Database (None when not opened) and its findings: reachable, then schema current."""
    from directory_api import db, migrations

    url = settings.required("DATABASE_URL")
    shown = mask_url(url)
    missing = missing_sqlite_file(url)
    if missing:
        # Connecting would create an empty file and hide the mistake.
        return None, [Finding("database", PROBLEM, f"the SQLite file {missing} does not exist", FIX_SQLITE_MISSING)]
    database = db.bind(url)
    try:
        database.connect(reuse_if_open=True)
        version = migrations.current_version(database)
    except Exception as error:  # any driver error means "cannot reach it"
        return database, [Finding("database", PROBLEM, f"cannot connect to {shown}: {first_line(error)}", FIX_CONNECT)]
    findings = [Finding("database", OK, f"reachable ({shown})")]
    newer = migrations.newer_steps(database) if version > migrations.LATEST else {}
    problem = migrations.schema_problem(version, newer)
    if problem:
        fix = FIX_MIGRATE if version < migrations.LATEST else FIX_NEWER
        findings.append(Finding("database schema", PROBLEM, problem, fix))
    else:
        state = f"newer steps all additive (version {version}, this release {migrations.LATEST})" if newer \
            else f"current (version {version})"
        findings.append(Finding("database schema", OK, state))
        findings.append(check_writes(database))
    return database, findings


def check_writes(database) -> Finding:
    """An enrolment could be written now: not read-only, not locked, not out of disk space."""
    from directory_api import db

    try:
        problem = db.write_problem(database)
    except Exception as error:  # the connection was lost since it answered
        problem = first_line(error)
    if problem:
        return Finding("database writes", PROBLEM, f"an enrolment cannot be written: {problem}", FIX_WRITES)
    return Finding("database writes", OK, "an enrolment can be written")


def check_queue(settings: Settings, name: str) -> Finding:
    """The queue exists (created when missing) and answers."""
    from directory_api.queues import open_queue

    where = "SQS" if settings.queue_backend == "sqs" else "the database"
    try:
        open_queue(settings, name).ensure_exists()
    except Exception as error:  # QueueUnavailable, or a credentials error before any call
        if settings.queue_backend == "sqs":
            return Finding(f"queue {name}", PROBLEM, f"unusable on SQS: {why_unusable(error, name)}", FIX_SQS)
        return Finding(f"queue {name}", PROBLEM, f"unusable on {where}: {first_line(error)}", FIX_DATABASE_QUEUE)
    return Finding(f"queue {name}", OK, f"exists on {where}")


def check_email(settings: Settings) -> Finding:
    """With EMAIL_HOST, the SMTP server answers and takes the login (STARTTLS first when EMAIL_USE_TLS)."""
    if not settings.email_host:
        return Finding("e-mail", OK, EMAIL_LOGGED_ONLY)
    from directory_api import smtp

    try:
        detail = smtp.check_login(settings)
    except Exception as error:  # refused, timed out, TLS, a 5xx to the login: all the user's to fix
        where = f"{settings.email_host}:{settings.email_port}"
        return Finding("e-mail", PROBLEM, f"SMTP server {where}: {smtp.reply_of(error)[1]}", FIX_SMTP)
    return Finding("e-mail", OK, f"SMTP server {detail}")


def missing_sqlite_file(url: str) -> str | None:
    """The path of a SQLite DATABASE_URL whose file does not exist, else None."""
    parts = split_database_url(url)
    if parts.scheme != "sqlite":
        return None
    return None if os.path.exists(parts.name) else parts.name
