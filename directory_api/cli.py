"""The typer CLI: one thin function per command; heavy imports happen inside them."""

import dataclasses
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from typer.core import TyperGroup

from directory_api import __version__, logs
from directory_api.errors import SettingsError, UserError, first_line
from directory_api.ops import EXPORT_TABLES
from directory_api.release import build_commit
from directory_api.settings import BY_NAME, NEEDS_ALL, NEEDS_DATABASE, NEEDS_QUEUES, Settings


@dataclasses.dataclass
class GlobalOptions:
    """--debug and --env-file, given before the command's name or after it."""

    debug: bool = False
    env_file: Path | None = None


def _remember(ctx: click.Context, param: click.Parameter, value) -> None:
    if value:
        setattr(ctx.ensure_object(GlobalOptions), param.name, value)


def _debug_option() -> click.Option:
    return click.Option(
        ["--debug"], is_flag=True, expose_value=False, callback=_remember,
        help="Give every setting a working local default, log at DEBUG, print the settings chosen.",
    )


def _env_file_option() -> click.Option:
    return click.Option(
        ["--env-file"], type=click.Path(dir_okay=False, path_type=Path), expose_value=False, callback=_remember,
        help="Load variables from this .env file first; real environment variables win.",
    )


# Commands that always run as under --debug, so take no --debug of their own.
ALWAYS_DEBUG = frozenset({"dev"})


class Commands(TyperGroup):
    """The command group: every command takes --debug and --env-file after its name too, and a UserError
    raised by any command is its message, one line a line, and its exit code, never a traceback."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.params[:0] = [_debug_option(), _env_file_option()]
        for name, command in self.commands.items():
            shared = [_env_file_option()] if name in ALWAYS_DEBUG else [_debug_option(), _env_file_option()]
            command.params.extend(shared)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except UserError as error:
            for line in str(error).splitlines():
                logs.error(line)
            raise typer.Exit(error.exit_code) from None


app = typer.Typer(
    name="directory-api",
    cls=Commands,
    help="The Export Directory enrolment service: HTTP API, queue worker and tools.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

Host = Annotated[str, typer.Option(help="Address to listen on.")]
Port = Annotated[int | None, typer.Option(help="Port to listen on (default: $PORT, else 8000).", min=1, max=65535)]


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"directory-api {__version__} (commit {build_commit()})")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool, typer.Option("--version", help="Print the version and exit.", callback=_print_version, is_eager=True)
    ] = False,
) -> None:
    """The Export Directory enrolment service: HTTP API, queue worker and tools.

    Every command also takes --debug and --env-file after its name.
    """


def load_env_file(path: Path) -> None:
    """Load a .env file into the environment; variables already set win."""
    from dotenv import load_dotenv

    if not path.is_file():
        raise UserError(f"--env-file {path}: no such file")
    try:
        load_dotenv(path, override=False)
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"--env-file {path}: cannot be read ({error})") from None


def configure_logging(debug: bool) -> None:
    """Logging from LOG_FORMAT and LOG_LEVEL, read before the other settings so that their errors obey it."""
    problems: list[str] = []
    chosen: dict[str, Any] = {}  # what each variable's parse gave: LOG_FORMAT a str, LOG_LEVEL a str or None
    for name in ("LOG_FORMAT", "LOG_LEVEL"):
        variable, raw = BY_NAME[name], os.environ.get(name, "")
        try:
            chosen[name] = variable.parse(raw) if raw else variable.default
        except ValueError as error:
            problems.append(f"{name}: {error}")
            chosen[name] = variable.default
    logs.configure(debug=debug, log_format=chosen["LOG_FORMAT"], level=chosen["LOG_LEVEL"])
    if problems:
        raise SettingsError("\n".join(problems))


def prepare_environment(ctx: typer.Context, *, always_debug: bool = False) -> bool:
    """Load the env file and set up logging; return whether --debug is on (given before or after the command)."""
    options = ctx.ensure_object(GlobalOptions)
    debug = always_debug or options.debug
    if options.env_file:
        load_env_file(options.env_file)
    configure_logging(debug)
    return debug


def prepare(ctx: typer.Context, *, require, always_debug: bool = False) -> Settings:
    """Everything a command does before its work: env file, logging, settings."""
    debug = prepare_environment(ctx, always_debug=always_debug)
    settings = Settings.from_environ(os.environ, debug=debug, require=require)
    if debug:
        logs.emit(logging.INFO, f"settings (--debug):\n{settings.describe()}", "settings (--debug)",
                  settings=settings.shown())
    return settings


def parse_processes(value: str) -> int:
    if value == "auto":
        from directory_api.cpus import available_cpus

        return available_cpus()
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise UserError(f"--processes: {value!r} is not a whole number >= 1 or 'auto'")
    return number


@app.command()
def serve(
    ctx: typer.Context,
    host: Host = "0.0.0.0",
    port: Port = None,
    threads: Annotated[int, typer.Option(help="Request threads per process.", min=1, max=256)] = 8,
    processes: Annotated[
        str,
        typer.Option(
            help="Processes sharing one listening socket; 'auto' is one per CPU this process may use "
            "(its CPU affinity, capped by its cgroup's CPU quota)."
        ),
    ] = "1",
    bare: Annotated[
        bool,
        typer.Option("--bare", hidden=True, help="No request ids, access lines or /metrics (to measure their cost)."),
    ] = False,
) -> None:
    """Run the HTTP API on waitress.

    Example: directory-api serve --port 8000 --processes auto
    """
    number_of_processes = parse_processes(processes)
    settings = prepare(ctx, require=NEEDS_ALL)
    from directory_api.server import serve as run_server

    run_server(settings, host=host, port=port or settings.port, threads=threads, processes=number_of_processes,
               observe=not bare)


@app.command()
def work(
    ctx: typer.Context,
    once: Annotated[bool, typer.Option("--once", help="Drain what is queued now, then exit.")] = False,
    metrics_port: Annotated[
        int | None,
        typer.Option("--metrics-port", min=1, max=65535,
                     help="Serve Prometheus /metrics on this port (default: $METRICS_PORT, else none; "
                          "with --once, only when given here)."),
    ] = None,
    metrics_host: Annotated[
        str | None,
        typer.Option("--metrics-host",
                     help="Address to serve /metrics on (default: $METRICS_HOST, else 0.0.0.0; 127.0.0.1 "
                          "under --debug)."),
    ] = None,
) -> None:
    """Save queued enrolments to the database, setting aside what can never be saved.

    Example: directory-api work --debug --metrics-port 9100
    """
    settings = prepare(ctx, require=NEEDS_QUEUES)
    from directory_api.worker import metrics_address
    from directory_api.worker import work as run_worker

    port, host = metrics_address(settings, once=once, port=metrics_port, host=metrics_host)
    run_worker(settings, once=once, metrics_port=port, metrics_host=host)


@app.command("env-write")
def env_write(
    ctx: typer.Context,
    configs: Annotated[
        list[Path] | None,
        typer.Argument(help="env-write config files (default: env.json, else a built-in one).", dir_okay=False),
    ] = None,
) -> None:
    """Write .env files from DIRECTORY_API_-prefixed host variables.

    Example: DIRECTORY_API_PORT=8000 directory-api env-write env.json
    """
    prepare_environment(ctx)
    from directory_api.envwrite import default_configs
    from directory_api.envwrite import env_write as write_files

    write_files(configs or default_configs(), os.environ)


@app.command()
def migrate(
    ctx: typer.Context,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List the steps it would apply (additive or breaking); change nothing.")
    ] = False,
    allow_breaking: Annotated[
        bool, typer.Option("--allow-breaking", help="Also apply breaking steps, which stop older releases.")
    ] = False,
    compatible_with: Annotated[
        str | None,
        typer.Option("--compatible-with", metavar="RELEASE",
                     help="Start a hold: keep 1.0.0 (which refuses any newer schema) starting on the additive "
                     "steps applied, now and by every later migrate, until --end-compatibility."),
    ] = None,
    end_compatibility: Annotated[
        bool,
        typer.Option("--end-compatibility",
                     help="End the hold: record the steps held for 1.0.0 in schema_version again; from then on "
                     "1.0.0 can no longer start."),
    ] = False,
) -> None:
    """Create or upgrade the database schema; safe to run again and from several machines.

    Example: DATABASE_URL=postgres://localhost/directory_api directory-api migrate --dry-run
    """
    settings = prepare(ctx, require=NEEDS_DATABASE)
    from directory_api import db, migrations

    if compatible_with and end_compatibility:
        raise UserError("--compatible-with and --end-compatibility: give one of the two")
    # No statement timeout: a schema step on a large table may rightly run long; an operator watches it.
    if compatible_with:
        migrations.compatible_release(compatible_with)
    database = db.bind(settings.required("DATABASE_URL"), timeout=None)
    try:
        version = migrations.current_version(database)
        pending = migrations.pending_steps(database)
        held = migrations.held_steps(database)
        holding = migrations.hold_in_effect(database)
        if dry_run:
            for line in migrations.dry_run_lines(version, pending, held, holding):
                typer.echo(line)
            return
        for line in migrations.warning_lines(pending, version, held, holding=holding, allow_breaking=allow_breaking,
                                             compatible_with=compatible_with, end_hold=end_compatibility):
            logs.emit(logging.WARNING, f"warning: {line}", line)
        applied = migrations.migrate(database, allow_breaking=allow_breaking, compatible_with=compatible_with,
                                     end_hold=end_compatibility)
        ended = held if end_compatibility else None
        held = migrations.held_steps(database)
    except UserError:
        raise
    except Exception as error:  # any driver error is the user's database problem
        raise UserError(f"DATABASE_URL: cannot migrate: {first_line(error)}") from None
    finally:
        database.close()
    for line in migrations.summary_lines(applied, version, held, ended):
        typer.echo(line)


@app.command()
def dev(
    ctx: typer.Context,
    host: Host = "127.0.0.1",
    port: Port = None,
) -> None:
    """Run serve and work together in one process on the embedded defaults.

    Example: directory-api dev, then POST signed enrolments to http://127.0.0.1:8000/enrolment/
    """
    settings = prepare(ctx, require=NEEDS_ALL, always_debug=True)
    from directory_api.dev import dev as run_dev

    run_dev(settings, host=host, port=port or settings.port)


@app.command()
def check(ctx: typer.Context) -> None:
    """Check configuration, database and queues; exit 0 only when all are usable.

    Example: directory-api check --env-file /etc/directory-api.env
    """
    debug = prepare_environment(ctx)
    from directory_api.check import check as run_check

    if not run_check(os.environ, debug=debug):
        raise typer.Exit(1)


@app.command()
def status(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of text.")] = False,
) -> None:
    """Show what the queues and the database hold now; exit 1 when a part does not answer.

    Example: directory-api status --json --env-file /etc/directory-api.env
    """
    settings = prepare(ctx, require=NEEDS_QUEUES)
    from directory_api.ops.status import status_command

    if not status_command(settings, as_json=as_json, out=typer.echo, err=logs.error):
        raise typer.Exit(1)


@app.command()
def redrive(
    ctx: typer.Context,
    ids: Annotated[
        list[str] | None, typer.Argument(help="Original message ids to move back.", show_default=False)
    ] = None,
    all_messages: Annotated[bool, typer.Option("--all", help="Move every message of the invalid queue.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be moved; move nothing.")] = False,
) -> None:
    """Move set-aside messages from the invalid queue back to the enrolment queue.

    Example: directory-api redrive --dry-run --all, then directory-api redrive ID ...
    """
    if bool(ids) == all_messages:
        raise typer.BadParameter("give message ids or --all (one of the two)", param_hint="IDS / --all")
    settings = prepare(ctx, require=NEEDS_QUEUES)
    from directory_api.ops.redrive import redrive_command

    if not redrive_command(settings, ids or [], dry_run=dry_run, out=typer.echo, err=logs.error):
        raise typer.Exit(1)


@app.command()
def export(
    ctx: typer.Context,
    table: Annotated[
        str, typer.Argument(help="What to export.", click_type=click.Choice(EXPORT_TABLES, case_sensitive=False))
    ],
    since: Annotated[str | None, typer.Option(help="Only rows created on or after this day (YYYY-MM-DD, UTC).")] = None,
    output: Annotated[Path | None, typer.Option(help="Write to this file (atomically) instead of stdout.",
                                                   dir_okay=False)] = None,
    raw: Annotated[bool, typer.Option("--raw", help="Write text exactly as stored, even where a spreadsheet would "
                                      "run it as a formula (by default such a cell starts with ').")] = False,
) -> None:
    """Write a table as CSV (RFC 4180, UTF-8, header row, oldest first), streamed.

    Text that a spreadsheet would run as a formula (starting with = + - @, a tab or a CR) is written with a
    leading ' unless --raw.

    Example: directory-api export enrolments --since 2026-01-01 --output enrolments.csv
    """
    settings = prepare(ctx, require=NEEDS_DATABASE)
    from directory_api.ops.export import export_command

    count = export_command(settings, table, since=since, output=output, stdout=sys.stdout.buffer, raw=raw)
    if output is not None:
        logs.emit(logging.INFO, f"{count} rows written to {output}", rows=count, output=str(output))


@app.command()
def erase(
    ctx: typer.Context,
    company_number: Annotated[str | None, typer.Option("--company-number", help="The company's number.")] = None,
    sso_id: Annotated[int | None, typer.Option("--sso-id", min=1, help="The supplier's sso id.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be removed; remove nothing.")] = False,
) -> None:
    """Remove one supplier's personal data (company, supplier, payloads, e-mail recipient, rejections).

    Example: directory-api erase --company-number SC123456 --dry-run
    """
    if (company_number is None) == (sso_id is None):
        raise typer.BadParameter("give --company-number or --sso-id (one of the two)",
                                 param_hint="--company-number / --sso-id")
    if company_number is not None and not 1 <= len(company_number.strip()) <= 255:
        raise typer.BadParameter("a company number is 1 to 255 characters", param_hint="--company-number")
    settings = prepare(ctx, require=NEEDS_DATABASE)
    from directory_api.ops.erase import erase_command

    erase_command(settings, company_number=company_number and company_number.strip().upper(), sso_id=sso_id,
                  dry_run=dry_run, out=typer.echo)


def main() -> None:
    app(prog_name="directory-api")
