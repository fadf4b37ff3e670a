"""The pyz as a system user whose home does not exist or cannot be written (issue 22.3).

shiv unpacks into ~/.shiv by default; such a user gets a private directory of its own instead, or one line
naming SHIV_ROOT. Run as a spare uid (setpriv, as root) with HOME as `useradd --system` leaves it.
"""

import os
import pwd
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

# Debian's python3: a user other than root can run it (pyenv's lives under /root).
SYSTEM_PYTHON = "/usr/bin/python3"

if os.geteuid() != 0 or not shutil.which("setpriv") or not os.access(SYSTEM_PYTHON, os.X_OK):
    pytest.skip(f"needs root, setpriv and {SYSTEM_PYTHON} to run as another user", allow_module_level=True)


def spare_uid() -> int:
    """A uid no account has and no earlier run left a fallback directory for."""
    for uid in range(61000, 62000):
        try:
            pwd.getpwuid(uid)
        except KeyError:
            if not os.path.lexists(f"/tmp/directory-api-{uid}"):
                return uid
    raise AssertionError("no spare uid in 61000-61999")


@pytest.fixture
def uid() -> Iterator[int]:
    uid = spare_uid()
    yield uid
    shutil.rmtree(f"/tmp/directory-api-{uid}", ignore_errors=True)


@pytest.fixture
def install(pyz, uid) -> Iterator[Path]:
    """The pyz copied into a fresh 0755 directory, with a data directory the user owns beside it."""
    directory = Path(tempfile.mkdtemp(prefix="directory-api-e2e-"))
    directory.chmod(0o755)
    shutil.copy2(pyz, directory / "directory-api.pyz")
    data = directory / "data"
    data.mkdir()
    os.chown(data, uid, uid)
    yield directory
    shutil.rmtree(directory)


def service_env(install: Path, home: str, **extra: str) -> dict[str, str]:
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": home,
        "LANG": "C.UTF-8",
        "DATABASE_URL": f"sqlite:///{install}/data/directory-api.sqlite3",
        "QUEUE_BACKEND": "database",
        "UI_SECRET": "not-a-real-secret-0123456789",
        "SQS_ENROLMENT_QUEUE_NAME": "enrolment",
        "SQS_INVALID_ENROLMENT_QUEUE_NAME": "enrolment-invalid",
        **extra,
    }


def run_as(uid: int, install: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    argv = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
            SYSTEM_PYTHON, "-I", str(install / "directory-api.pyz"), *args]
    return subprocess.run(argv, env=env, cwd=install / "data", capture_output=True, text=True, timeout=120,
                          check=False)


def assert_private_to(path: Path, uid: int) -> None:
    status = path.lstat()
    assert stat.S_ISDIR(status.st_mode) and status.st_uid == uid and stat.S_IMODE(status.st_mode) == 0o700


@pytest.mark.parametrize("home", ["/nonexistent", "/"], ids=["home does not exist", "home not writable"])
def test_help_migrate_and_check_work_as_a_user_without_a_writable_home(install, uid, home):
    env = service_env(install, home)

    for args in (["--help"], ["migrate"], ["check"]):
        result = run_as(uid, install, env, *args)
        assert result.returncode == 0, (args, result.stderr)
        assert "Traceback" not in result.stderr

    # It unpacked into a directory of this user's alone.
    assert_private_to(Path(f"/tmp/directory-api-{uid}"), uid)


def test_xdg_cache_home_comes_before_tmp(install, uid):
    cache = install / "data" / "cache"
    env = service_env(install, "/nonexistent", XDG_CACHE_HOME=str(cache))

    result = run_as(uid, install, env, "--help")

    assert result.returncode == 0, result.stderr
    assert (cache / "directory-api").is_dir()
    assert not os.path.lexists(f"/tmp/directory-api-{uid}")


def test_a_tmp_directory_another_user_made_is_not_used_and_the_line_names_shiv_root(install, uid):
    planted = Path(f"/tmp/directory-api-{uid}")
    planted.mkdir(mode=0o777)  # root's, open to all: unpacking there would run what anyone put in it

    result = run_as(uid, install, service_env(install, "/nonexistent"), "--help")

    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: directory-api cannot unpack itself into /nonexistent/.shiv")
    assert "set SHIV_ROOT to a writable directory" in line
    assert list(planted.iterdir()) == []


def test_a_shiv_root_it_cannot_write_is_named_in_one_line(install, uid):
    result = run_as(uid, install, service_env(install, "/nonexistent", SHIV_ROOT="/"), "--help")

    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "error: SHIV_ROOT=/: directory-api cannot unpack itself there (Permission denied); "
        "set SHIV_ROOT to a writable directory"
    ]


def test_a_shiv_root_it_can_write_is_used_as_is(install, uid):
    shiv_root = install / "data" / "shiv"
    result = run_as(uid, install, service_env(install, "/nonexistent", SHIV_ROOT=str(shiv_root)), "--help")

    assert result.returncode == 0, result.stderr
    assert any(shiv_root.glob("directory-api.pyz_*/site-packages"))
    assert not os.path.lexists(f"/tmp/directory-api-{uid}")


def test_an_unpacked_copy_a_tmp_cleaner_thinned_out_is_named_not_a_traceback(install, uid):
    env = service_env(install, "/nonexistent")
    assert run_as(uid, install, env, "--help").returncode == 0
    (unpacked,) = Path(f"/tmp/directory-api-{uid}").glob("directory-api.pyz_*")
    (unpacked / "site-packages" / "directory_api" / "cli.py").unlink()

    result = run_as(uid, install, env, "--help")

    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"error: directory-api's unpacked copy in {unpacked} is missing files"), line
