"""What the pyz leaves out is not needed: every SQS call and boto3's credential chain run through it (moto server).

build.sh packs only the botocore data of SQS and of the services the credential
chain calls, no boto3 resource models, and typer without rich. The probe
(pyz_probe.py) runs inside the pyz with only those packages.
"""

import hashlib
import http.server
import json
import re
import shutil
import subprocess
import sys
import threading
import uuid
import zipfile
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT
from tests.support.sqs import REGION

pytestmark = pytest.mark.e2e

PROBE = Path(__file__).with_name("pyz_probe.py")
# The interpreter under the test's virtualenv: the pyz must find nothing but its own packages (rich is in the venv).
BARE_PYTHON = getattr(sys, "_base_executable", sys.executable)
ROLE_ARN = "arn:aws:iam::123456789012:role/directory-api"
# build.sh's BOTOCORE_DATA. A botocore upgrade whose SQS client or credential chain needs more fails the probes
# below; this list then grows here and there together.
BOTOCORE_DATA = {
    "_retry.json",
    "endpoints.json",
    "partitions.json",
    "sdk-default-configuration.json",
    "signin",
    "sqs",
    "sso",
    "sso-oidc",
    "sts",
}


def packed(pyz: Path) -> list[str]:
    with zipfile.ZipFile(pyz) as archive:
        return archive.namelist()


def probe(pyz: Path, env: dict[str, str]) -> dict:
    """Run pyz_probe.py inside the pyz on a queue of its own; what it printed."""
    result = subprocess.run(
        [BARE_PYTHON, "-I", str(pyz), str(PROBE), f"probe-{uuid.uuid4().hex[:12]}"],
        env={**env, "SHIV_INTERPRETER": "1"}, capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


@pytest.fixture
def aws_env(pyz_env, moto_endpoint, tmp_path) -> dict[str, str]:
    """No credentials of any kind; SQS and STS at the moto server."""
    return {
        **pyz_env,
        "SQS_ENDPOINT_URL": moto_endpoint,
        "SQS_REGION_NAME": REGION,
        "AWS_ENDPOINT_URL_STS": moto_endpoint,
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def service_sqs_operations() -> set[str]:
    """Every SQS client method the service's code calls."""
    calls = set()
    for path in (ROOT / "directory_api").rglob("*.py"):
        calls |= set(re.findall(r"\bclient\.([a-z][a-z_]*)\(", path.read_text()))  # public methods: no _
    return calls


# What is packed


def test_the_pyz_holds_only_the_listed_botocore_data(pyz):
    data = {name.split("/")[3] for name in packed(pyz) if name.startswith("site-packages/botocore/data/")}

    assert data == BOTOCORE_DATA


def test_the_pyz_holds_no_boto3_resource_models_and_no_rich(pyz):
    top = {name.split("/")[1] for name in packed(pyz) if name.startswith("site-packages/")}
    names = packed(pyz)

    assert not any(name.startswith("site-packages/boto3/data/") for name in names)
    assert not top & {"rich", "pygments", "markdown_it", "mdurl"}


@pytest.mark.parametrize("command", ["", "serve", "work", "env-write", "migrate", "dev", "check"])
def test_the_help_without_rich_is_the_checkouts_help(pyz, pyz_env, command):
    # The checkout's virtualenv has rich installed; the pyz does not. The CLI must not tell them apart.
    args = [*command.split(), "--help"]
    checkout = subprocess.run([sys.executable, "directory_api.py", *args], cwd=ROOT, env={**pyz_env, "COLUMNS": "80"},
                              capture_output=True, text=True, timeout=60, check=True)
    from_pyz = subprocess.run([BARE_PYTHON, "-I", str(pyz), *args], env={**pyz_env, "COLUMNS": "80"},
                              capture_output=True, text=True, timeout=120, check=True)

    assert from_pyz.stdout.replace("directory-api.pyz", "directory_api.py") == checkout.stdout


def test_a_usage_error_without_rich_is_the_checkouts(pyz, pyz_env):
    checkout = subprocess.run([sys.executable, "directory_api.py", "serve", "--bogus"], cwd=ROOT, env=pyz_env,
                              capture_output=True, text=True, timeout=60, check=False)
    from_pyz = subprocess.run([BARE_PYTHON, "-I", str(pyz), "serve", "--bogus"], env=pyz_env,
                              capture_output=True, text=True, timeout=120, check=False)

    assert from_pyz.returncode == checkout.returncode == 2
    assert from_pyz.stderr.replace("directory-api.pyz", "directory_api.py") == checkout.stderr


# Every SQS call, through the pyz


def test_every_sqs_call_of_the_service_runs_through_the_pyz(pyz, aws_env):
    env = {**aws_env, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}

    result = probe(pyz, env)

    assert set(result["operations"]) >= service_sqs_operations(), "pyz_probe.py misses a call the service makes"
    assert result["direct"]
    assert result["size_limit"] >= 256 * 1024
    assert result["sent"]
    assert result["attributes"] == {"original_message_id": "probe"}
    assert (result["received"], result["back_after_release"], result["not_deleted"], result["left"]) == (13, 12, 0, 0)
    assert result["credentials"] == "env"


# boto3's credential chain, through the pyz


def test_credentials_from_web_identity(pyz, aws_env, tmp_path):
    token = tmp_path / "token"
    token.write_text("not-a-real.web-identity.token")
    env = {**aws_env, "AWS_ROLE_ARN": ROLE_ARN, "AWS_WEB_IDENTITY_TOKEN_FILE": str(token),
           "AWS_ROLE_SESSION_NAME": "directory-api"}

    result = probe(pyz, env)

    assert result["credentials"] == "assume-role-with-web-identity"
    assert result["access_key"].startswith("ASIA")  # issued by (moto's) STS


def test_credentials_from_an_assumed_role_profile(pyz, aws_env, tmp_path):
    config = tmp_path / "aws-config"
    config.write_text(
        "[profile directory-api]\n"
        f"role_arn = {ROLE_ARN}\n"
        "source_profile = base\n"
        "[profile base]\n"
        "aws_access_key_id = AKIAFAKEFAKEFAKEFAKE\n"
        "aws_secret_access_key = not-a-real-secret\n"
    )
    env = {**aws_env, "AWS_CONFIG_FILE": str(config), "AWS_PROFILE": "directory-api"}

    result = probe(pyz, env)

    assert result["credentials"] == "assume-role"
    assert result["access_key"].startswith("ASIA")


class SsoPortal(http.server.BaseHTTPRequestHandler):
    """The SSO portal's GetRoleCredentials (moto has none): a role's credentials for the cached token."""

    def do_GET(self):
        known = self.headers.get("x-amz-sso_bearer_token") == "not-a-real-sso-token"
        body = json.dumps({"roleCredentials": {
            "accessKeyId": "ASIAFAKESSOFAKESSO00", "secretAccessKey": "not-a-real-secret",
            "sessionToken": "not-a-real-session-token", "expiration": 4102444800000,
        }} if known and self.path.startswith("/federation/credentials?") else {"message": "unknown"}).encode()
        self.send_response(200 if known else 401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def sso_portal():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SsoPortal)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_credentials_from_an_sso_profile(pyz, aws_env, sso_portal, tmp_path):
    start_url = "https://example.invalid/start"
    config = tmp_path / "aws-config"
    config.write_text(
        "[profile directory-api]\n"
        f"sso_start_url = {start_url}\n"
        f"sso_region = {REGION}\n"
        "sso_account_id = 123456789012\n"
        "sso_role_name = directory-api\n"
    )
    # What `aws sso login` leaves behind, under the name botocore looks for.
    cache = Path(aws_env["HOME"]) / ".aws" / "sso" / "cache"
    cache.mkdir(parents=True)
    (cache / f"{hashlib.sha1(start_url.encode()).hexdigest()}.json").write_text(json.dumps({
        "startUrl": start_url, "region": REGION, "accessToken": "not-a-real-sso-token",
        "expiresAt": "2099-01-01T00:00:00Z",
    }))
    env = {**aws_env, "AWS_CONFIG_FILE": str(config), "AWS_PROFILE": "directory-api",
           "AWS_ENDPOINT_URL_SSO": sso_portal}

    result = probe(pyz, env)

    assert result["credentials"] == "sso"
    assert result["access_key"] == "ASIAFAKESSOFAKESSO00"


# -- one pyz for Linux x86_64 and aarch64 (issue 22.4) -----------------------------------------------

ELF_MACHINES = {0x3E: "x86_64", 0xB7: "aarch64"}
PYTHON_MINORS = (11, 12, 13, 14)  # build.sh's EXTRA_PYTHON_VERSIONS


def elf_machine(data: bytes) -> str:
    assert data[:4] == b"\x7fELF" and data[4] == 2 and data[5] == 1, "not a 64-bit little-endian ELF file"
    return ELF_MACHINES.get(int.from_bytes(data[18:20], "little"), "other")


@pytest.mark.parametrize("cpu", ["x86_64", "aarch64"])
def test_the_pyz_carries_psycopg2_for_each_python_on_x86_64_and_aarch64(pyz, cpu):
    names = set(packed(pyz))

    for minor in PYTHON_MINORS:
        assert f"site-packages/psycopg2/_psycopg.cpython-3{minor}-{cpu}-linux-gnu.so" in names


def test_every_shared_library_in_the_pyz_is_for_one_of_the_two_cpus(pyz):
    with zipfile.ZipFile(pyz) as archive:
        libraries = [name for name in archive.namelist() if re.search(r"\.so(\.|$)", name)]
        machines = {name: elf_machine(archive.read(name)) for name in libraries}

    assert set(machines.values()) == {"x86_64", "aarch64"}, machines
    for name, machine in machines.items():
        if "_psycopg.cpython" in name:
            assert name.endswith(f"-{machine}-linux-gnu.so"), (name, machine)


@pytest.mark.skipif(not shutil.which("readelf"), reason="needs readelf (binutils)")
def test_every_library_the_psycopg2_extensions_need_is_packed_for_their_cpu(pyz, tmp_path):
    with zipfile.ZipFile(pyz) as archive:
        archive.extractall(tmp_path, [name for name in archive.namelist() if "psycopg2" in name])
    site = tmp_path / "site-packages"
    libraries = {path.name: path for path in (site / "psycopg2_binary.libs").iterdir()}
    # What manylinux lets a wheel take from the system, and zlib, which every python3 has.
    system = re.compile(
        r"(libc|libm|libdl|libpthread|librt|libresolv|libutil|libnsl|libgcc_s|libstdc\+\+|libz|ld-linux-[\w-]+)"
        r"\.so\.\d+$"
    )

    def needed(path: Path) -> list[str]:
        dynamic = subprocess.run(["readelf", "-d", str(path)], capture_output=True, text=True, check=True).stdout
        return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dynamic)

    for extension in (site / "psycopg2").glob("_psycopg.cpython-*.so"):
        machine = elf_machine(extension.read_bytes()[:20])
        todo, seen = [extension], set()
        while todo:
            for name in needed(todo.pop()):
                if system.match(name) or name in seen:
                    continue
                assert name in libraries, f"{extension.name} needs {name}, which the pyz does not carry"
                assert elf_machine(libraries[name].read_bytes()[:20]) == machine, (extension.name, name)
                seen.add(name)
                todo.append(libraries[name])
