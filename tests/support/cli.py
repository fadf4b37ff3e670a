"""The CLI in this process, through typer's test runner."""

from typer.testing import CliRunner


def invoke_cli(*args: str, **env: str):
    """Run `directory-api ARGS` in this process, of the variables it reads only `env` set; a crash fails the test."""
    from directory_api.cli import app
    from directory_api.settings import VARIABLES

    # Every variable the CLI reads, unset, so the developer's own environment cannot leak in.
    unset = {variable.name: None for variable in VARIABLES} | {f"DIRECTORY_API_{v.name}": None for v in VARIABLES}
    return CliRunner().invoke(app, list(args), env={**unset, **env}, catch_exceptions=False)
