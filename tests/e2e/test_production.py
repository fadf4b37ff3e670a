"""docs/production.md followed literally, as root: user, directories, roles, env files, units, one enrolment saved.

The guide's shell blocks marked `<!-- test: NAME -->` run as written, with
only these placeholders substituted: the database host, the role and
database names (the PostgreSQL server is shared), and a path prefix before
/etc, /opt and /var/cache (so that a run leaves the machine as it found it,
but for the system user). systemd does not run here: each unit's
`ExecStart=` runs as the unit's `User=`, with the environment its
`EnvironmentFile=` and `Environment=` lines give, so the units are what is
tested.
"""

import contextlib
import json
import os
import pwd
import re
import shlex
import shutil
import stat
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import psycopg2
import pytest
import requests
import yaml
from dotenv import dotenv_values

from tests.conftest import POSTGRES_ADMIN_URL
from tests.factories import enrolment_payload
from tests.support.checkout import IN_CI
from tests.support.databases import pg_rows
from tests.support.processes import Processes, wait_for_root
from tests.support.signing import signed_get, signed_post
from tests.support.sockets import free_port
from tests.support.sqs import FAKE_AWS
from tests.support.waits import wait_until

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "production.md"
UNITS = ROOT / "docs" / "systemd"
SERVICE_USER = "directory-api"
# What systemd gives a service's environment before its own lines (systemd.exec, "Environment variables").
SYSTEMD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
GUIDE_HOST = "db.internal.example"
PATH_ROOTS = re.compile(r"(?<![\w./-])(/etc/directory-api|/opt/directory-api|/var/cache/directory-api)")
BLOCK = re.compile(r"<!-- test: ([\w-]+) -->\s*\n```\w*\n(.*?)\n```", re.S)
DATABASE_NAME = re.compile(r"\bdirectory_api\b")
# serve's connections a process: --threads // 2 for statuses, and one for the health probe (docs/production.md).
SERVE_CONNECTIONS = 8 // 2 + 1
WORK_CONNECTIONS = 6


def guide_blocks(text: str) -> dict[str, str]:
    """The guide's marked shell blocks by name."""
    return dict(BLOCK.findall(text))


@contextlib.contextmanager
def guide_placeholders() -> Iterator[dict]:
    """What the test writes for the guide's placeholders; the prefix directory goes at the end."""
    suffix = uuid.uuid4().hex[:8]
    prefix = Path(tempfile.mkdtemp(prefix="directory-api-guide-", dir="/tmp"))
    prefix.chmod(0o755)  # the service user must reach its files below it, as below /
    try:
        yield {
            "prefix": prefix,
            "host": urlsplit(POSTGRES_ADMIN_URL).hostname or "127.0.0.1",
            "owner": f"guide_owner_{suffix}",
            "service": f"guide_service_{suffix}",
            "database": f"guide_{suffix}",
        }
    finally:
        shutil.rmtree(prefix, ignore_errors=True)


def substituted(text: str, names: dict) -> str:
    text = text.replace(GUIDE_HOST, names["host"])
    text = text.replace("directory_api_owner", names["owner"]).replace("directory_api_service", names["service"])
    text = DATABASE_NAME.sub(names["database"], text)
    return PATH_ROOTS.sub(lambda match: f"{names['prefix']}{match[1]}", text)


def run_block(name: str, blocks: dict[str, str], names: dict, env: dict, cwd: Path) -> str:
    """Run the guide's block `name` in bash (-e), as root; fail with its output when it fails."""
    script = substituted(blocks[name], names)
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], env=env, cwd=cwd,
                            capture_output=True, text=True, timeout=180, check=False)
    assert result.returncode == 0, f"block {name} exited {result.returncode}:\n{script}\n{result.stdout}{result.stderr}"
    return result.stdout


def unit_service(path: Path, names: dict) -> dict[str, list[str]]:
    """The [Service] section of a unit file: each key's values, in order, placeholders substituted."""
    section: str | None = None
    service: dict[str, list[str]] = {}
    for line in substituted(path.read_text(), names).splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]":
            key, _, value = line.partition("=")
            service.setdefault(key, []).append(value)
    return service


def unit_command(path: Path, names: dict) -> tuple[list[str], dict[str, str]]:
    """A unit's ExecStart= as argv run as its User= and Group= (setpriv), and the environment systemd gives it."""
    service = unit_service(path, names)
    user, group = service["User"][0], service["Group"][0]
    account = pwd.getpwnam(user)
    env = {"PATH": SYSTEMD_PATH, "USER": user, "LOGNAME": user, "HOME": account.pw_dir, "SHELL": account.pw_shell}
    for assignment in service.get("Environment", []):
        for word in shlex.split(assignment):
            key, _, value = word.partition("=")
            env[key] = value
    # Files override Environment=, a later file an earlier one (systemd.exec).
    for env_file in service.get("EnvironmentFile", []):
        env.update({key: value or "" for key, value in dotenv_values(env_file.lstrip("-")).items()})
    (exec_start,) = service["ExecStart"]
    argv = ["setpriv", f"--reuid={user}", f"--regid={group}", "--init-groups", "--", *shlex.split(exec_start)]
    return argv, env


def admin(sql: str) -> None:
    with contextlib.closing(psycopg2.connect(POSTGRES_ADMIN_URL, connect_timeout=5)) as connection:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(sql)


def drop_roles_and_database(names: dict) -> None:
    with contextlib.suppress(psycopg2.Error):
        admin(f'DROP DATABASE IF EXISTS "{names["database"]}" WITH (FORCE)')
    for role in (names["service"], names["owner"]):
        with contextlib.suppress(psycopg2.Error):
            admin(f'DROP ROLE IF EXISTS "{role}"')


def connections_of(role: str) -> int:
    return pg_rows(POSTGRES_ADMIN_URL, f"SELECT count(*) FROM pg_stat_activity WHERE usename = '{role}'")[0][0]


def matched(pattern: str, text: str, flags: int = 0) -> str:
    """The first group of `pattern` in `text`, failing the test when it is not there."""
    match = re.search(pattern, text, flags)
    assert match, f"{pattern!r} not found in {text!r}"
    return match[1]


def uid_of(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(matched(r"^Uid:\s+(\d+)", status, re.M))


@pytest.fixture
def as_root():
    missing = [tool for tool in ("useradd", "runuser", "setpriv", "psql") if not shutil.which(tool)]
    problem = "the guide runs as root" if os.geteuid() != 0 else f"missing {', '.join(missing)}" if missing else ""
    if problem:
        if IN_CI:
            pytest.fail(f"cannot follow docs/production.md: {problem}", pytrace=False)
        pytest.skip(f"cannot follow docs/production.md: {problem}")


@pytest.fixture
def service_user(as_root) -> Iterator[str]:
    """The guide's system user, removed at the end when this test made it."""
    existed = subprocess.run(["id", SERVICE_USER], capture_output=True, check=False).returncode == 0
    yield SERVICE_USER
    if not existed:
        subprocess.run(["userdel", SERVICE_USER], capture_output=True, check=False)


@pytest.mark.postgres
def test_the_guide_followed_literally_saves_a_signed_enrolment_with_a_role_that_cannot_create(
    pyz, service_user, moto_endpoint, tmp_path
):
    blocks = guide_blocks(GUIDE.read_text())
    assert set(blocks) >= {"postgres", "vm-install", "vm-env", "vm-check", "backup", "restore"}, sorted(blocks)
    # The operator's download directory: the pyz, and nothing else.
    download = tmp_path / "download"
    download.mkdir()
    shutil.copy(pyz, download / "directory-api.pyz")
    port, ui_secret = free_port(), f"guide-{uuid.uuid4().hex}"
    home = tmp_path / "root-home"
    home.mkdir()
    shell_env = {
        "PATH": SYSTEMD_PATH, "HOME": str(home), "LANG": "C.UTF-8",
        # The host variables the guide says a CI job or secret store provides, and those for moto instead of AWS.
        "DIRECTORY_API_UI_SECRET": ui_secret, "DIRECTORY_API_PORT": str(port),
        "DIRECTORY_API_SQS_ENDPOINT_URL": moto_endpoint,
        "DIRECTORY_API_AWS_ACCESS_KEY_ID": FAKE_AWS["AWS_ACCESS_KEY_ID"],
        "DIRECTORY_API_AWS_SECRET_ACCESS_KEY": FAKE_AWS["AWS_SECRET_ACCESS_KEY"],
    }
    started = Processes(tmp_path)
    with guide_placeholders() as names:
        try:
            follow_the_guide(blocks, names, shell_env, download, started, port, ui_secret)
        finally:
            started.stop_all()
            drop_roles_and_database(names)


def follow_the_guide(blocks, names, shell_env, download, started: Processes, port: int, ui_secret: str) -> None:
    prefix = names["prefix"]
    run_block("postgres", blocks, names, shell_env, download)
    run_block("vm-install", blocks, names, shell_env, download)
    account = pwd.getpwnam(SERVICE_USER)
    assert not Path(account.pw_dir).exists(), "the service user has a home directory"
    run_block("vm-env", blocks, names, shell_env, download)

    etc = prefix / "etc" / "directory-api"
    service_file, migrate_file = etc / "directory-api.env", etc / "migrate.env"
    assert stat.S_IMODE(service_file.stat().st_mode) == 0o640 and service_file.stat().st_gid == account.pw_gid
    assert stat.S_IMODE(migrate_file.stat().st_mode) == 0o600 and migrate_file.stat().st_uid == 0
    service_url = dotenv_values(service_file)["DATABASE_URL"]
    assert service_url, f"no DATABASE_URL in {service_file}"
    assert urlsplit(service_url).username == names["service"]

    # migrate, as the migrate unit runs it: the owner role's URL wins over the service's.
    argv, env = unit_command(UNITS / "directory-api-migrate.service", names)
    migrated = subprocess.run(argv, env=env, cwd="/", capture_output=True, text=True, timeout=120, check=False)
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    assert "schema migrated to version" in migrated.stdout

    # The service role reads and writes rows, and cannot change the schema.
    with contextlib.closing(psycopg2.connect(service_url, connect_timeout=5)) as connection:
        with connection.cursor() as cursor, pytest.raises(psycopg2.errors.InsufficientPrivilege):
            cursor.execute("CREATE TABLE guide_probe (id integer)")
        connection.rollback()
        with connection.cursor() as cursor, pytest.raises(psycopg2.errors.InsufficientPrivilege):
            cursor.execute("ALTER TABLE enrolment ADD COLUMN guide_probe integer")

    check = run_block("vm-check", blocks, names, shell_env, download)
    assert check.splitlines()[-1] == "all good", check

    argv, env = unit_command(UNITS / "directory-api-work.service", names)
    work = started.start(argv, env, "work", cwd=Path("/"))
    wait_until(lambda: connections_of(names["service"]) > 0 or not work.alive(), 30, "work to connect")
    assert work.alive(), work.log()
    argv, env = unit_command(UNITS / "directory-api-serve.service", names)
    serve = started.start(argv, env, "serve", cwd=Path("/"))
    base_url = f"http://127.0.0.1:{port}"
    wait_for_root(serve, base_url)
    assert {uid_of(work.pid), uid_of(serve.pid)} == {account.pw_uid}

    body = json.dumps(enrolment_payload()).encode()
    posted = signed_post(base_url, body, secret=ui_secret)
    assert posted.status_code == 202, posted.text
    message_id = posted.json()["id"]

    def created():
        answer = signed_get(base_url, f"/enrolment/{message_id}/", secret=ui_secret)
        return answer.json() if answer.json().get("status") == "created" else None

    assert wait_until(created, 60, "the enrolment saved")["enrolment_id"] >= 1
    health = requests.get(f"{base_url}/healthcheck/", timeout=10)
    assert (health.status_code, health.json()) == (200, {"status": "ok", "database": "ok", "queue": "ok"})

    # The sizing table's connections, at their peak: 32 clients asking statuses at once (most get 503 past the
    # limit of --threads // 2 a process), on top of work's and the health probes'.
    with ThreadPoolExecutor(32) as pool:
        asking = [pool.submit(signed_get, base_url, f"/enrolment/{message_id}/", secret=ui_secret) for _ in range(300)]
        peak = 0
        while not all(answer.done() for answer in asking):
            peak = max(peak, connections_of(names["service"]))
    serve_processes = len(serve_children(serve.pid)) or 1
    print(f"service role connections at most {peak} (serve: {serve_processes} processes, work: 1)")
    assert 0 < peak <= serve_processes * SERVE_CONNECTIONS + WORK_CONNECTIONS, serve.log() + work.log()

    # A backup, the database and roles gone, the roles block again, the restore: the enrolment is back, and
    # the service role has its rights on what was restored.
    serve.stop()
    work.stop()
    run_block("backup", blocks, names, shell_env, download)
    drop_roles_and_database(names)
    run_block("postgres", blocks, names, shell_env, download)
    (dump,) = download.glob("*.dump")
    dump.rename(download / matched(r"(\S+\.dump)\s*$", substituted(blocks["restore"], names)))
    run_block("restore", blocks, names, shell_env, download)
    argv, env = unit_command(UNITS / "directory-api-migrate.service", names)
    migrated = subprocess.run(argv, env=env, cwd="/", capture_output=True, text=True, timeout=120, check=False)
    assert migrated.returncode == 0 and "nothing to do" in migrated.stdout, migrated.stdout + migrated.stderr
    check = run_block("vm-check", blocks, names, shell_env, download)
    assert check.splitlines()[-1] == "all good", check
    assert pg_rows(service_url, "SELECT sqs_message_id FROM enrolment") == [(message_id,)]


def serve_children(pid: int) -> list[int]:
    """The child processes of serve --processes N (none with one process)."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in children.read_text().split()] if children.exists() else []


# The guide's IAM policy and the calls the code makes


def iam_action(method: str) -> str:
    """The IAM action that allows a boto3 SQS method: send_message_batch is allowed by sqs:SendMessage."""
    words = method.removesuffix("_batch").split("_")
    return "sqs:" + "".join(word.capitalize() for word in words)


def test_the_guides_iam_policy_allows_exactly_the_sqs_calls_the_code_makes():
    source = "\n".join(path.read_text() for path in (ROOT / "directory_api" / "queues").glob("sqs*.py"))
    called = {iam_action(method) for method in re.findall(r"\bclient\.([a-z]+(?:_[a-z]+)+)\(", source)}
    policy = json.loads(re.search(r"```json\n(\{.*?\"Version\".*?\n\})\n```", GUIDE.read_text(), re.S)[1])
    (statement,) = policy["Statement"]

    assert "sqs:SendMessage" in called and "sqs:ChangeMessageVisibility" in called  # the grep found the calls
    assert set(statement["Action"]) == called


def test_the_units_run_migrate_before_serve_and_work():
    for name in ("serve", "work"):
        unit = (UNITS / f"directory-api-{name}.service").read_text()
        assert re.search(r"^After=.*\bdirectory-api-migrate\.service\b", unit, re.M), name
        assert re.search(r"^Wants=.*\bdirectory-api-migrate\.service\b", unit, re.M), name
        assert "migrate" not in re.search(r"^ExecStart=(.*)$", unit, re.M)[1]
    assert re.search(r"^ExecStart=.* migrate$", (UNITS / "directory-api-migrate.service").read_text(), re.M)


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")
def test_systemd_finds_nothing_wrong_in_the_units():
    units = sorted(str(path) for path in UNITS.glob("*.service"))
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", *units],
                            capture_output=True, text=True, timeout=60, check=False)
    # It also talks of the machine's own units; only lines about ours count.
    ours = [line for line in (result.stdout + result.stderr).splitlines() if "directory-api" in line]
    assert result.returncode == 0 and not ours, result.stdout + result.stderr


def test_compose_runs_migrate_once_before_serve_and_work():
    services = yaml.safe_load((ROOT / "docs" / "compose.yaml").read_text())["services"]

    assert services["migrate"]["command"] == ["migrate"] and services["migrate"]["restart"] == "no"
    assert services["migrate"]["env_file"] == ["directory-api.env", "migrate.env"]
    for name in ("serve", "work"):
        assert services[name]["depends_on"] == {"migrate": {"condition": "service_completed_successfully"}}
