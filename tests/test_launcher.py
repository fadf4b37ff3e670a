"""The launcher: the one-line refusal of an old Python, and where the pyz unpacks when the home cannot be written."""

import ast
import json
import os
import stat
import zipfile
from pathlib import Path

import pytest

from directory_api import launcher


def test_a_python_of_3_11_or_newer_is_not_refused():
    assert launcher.too_old((3, 11, 0, "final", 0), "/usr/bin/python3", "x.pyz") is None
    assert launcher.too_old((3, 14, 1), "/usr/bin/python3", "x.pyz") is None


def test_an_older_python_gets_one_line_naming_both_versions_what_to_install_and_the_unit_line():
    message = launcher.too_old((3, 9, 18, "final", 0), "/usr/bin/python3", "/opt/directory-api/directory-api.pyz")

    assert message is not None and "\n" not in message
    assert "needs Python 3.11 or newer, and /usr/bin/python3 is Python 3.9.18" in message
    assert "Debian/Ubuntu: apt-get install python3.11" in message
    assert "Amazon Linux 2023, RHEL 9: dnf install python3.11" in message
    assert "ExecStart=/usr/bin/python3.11 /opt/directory-api/directory-api.pyz serve" in message


@pytest.mark.parametrize("feature_version", [6, 7])
def test_the_launcher_compiles_on_python_3_6_and_3_7(feature_version):
    # ast with feature_version rejects what those grammars lack (f-string details aside); the e2e test runs them.
    source = Path(launcher.__file__).read_text(encoding="utf-8")

    ast.parse(source, feature_version=(3, feature_version))


def test_the_launcher_imports_the_standard_library_alone():
    tree = ast.parse(Path(launcher.__file__).read_text(encoding="utf-8"))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}

    assert imported <= {"errno", "json", "os", "stat", "sys", "time", "zipfile", "_bootstrap"}


def test_fallbacks_are_xdg_cache_home_then_a_private_directory_in_tmp():
    assert launcher.fallback_roots({"XDG_CACHE_HOME": "/var/cache/me"}, 998) == [
        ("/var/cache/me/directory-api", False),
        ("/tmp/directory-api-998", True),
    ]


def test_a_relative_xdg_cache_home_is_ignored():
    assert launcher.fallback_roots({"XDG_CACHE_HOME": "cache"}, 998) == [("/tmp/directory-api-998", True)]


def test_a_private_directory_is_made_for_this_user_alone(tmp_path):
    path = tmp_path / "private"

    assert launcher.private_directory_problem(str(path), os.getuid()) is None
    assert stat.S_IMODE(path.stat().st_mode) == 0o700


def open_to_others(path: Path) -> None:
    path.mkdir()
    path.chmod(0o755)


def another_users(path: Path) -> None:
    path.mkdir(mode=0o700)
    os.chown(path, 12345, 12345)


@pytest.mark.parametrize("make", [
    open_to_others,
    another_users,
    lambda path: path.symlink_to(path.parent),
    lambda path: path.write_text(""),
], ids=["open to others", "another user's", "a symlink", "a file"])
def test_a_directory_someone_else_could_have_planted_is_refused(tmp_path, make):
    path = tmp_path / "planted"
    make(path)

    assert launcher.private_directory_problem(str(path), os.getuid()) is not None


def test_an_unexpanded_home_is_no_home(tmp_path):
    assert launcher.unpack_problem("~/.shiv", "x") == "no home directory"


def test_a_root_under_a_file_cannot_be_used(tmp_path):
    (tmp_path / "file").write_text("")

    assert launcher.unpack_problem(str(tmp_path / "file" / ".shiv"), "x") is not None


def test_a_root_that_already_holds_the_unpacked_copy_is_used_as_it_is(tmp_path):
    (tmp_path / "root" / "app.pyz_abc" / "site-packages").mkdir(parents=True)

    assert launcher.unpack_problem(str(tmp_path / "root"), "app.pyz_abc") is None


@pytest.fixture
def archive(tmp_path):
    path = tmp_path / "app.pyz"
    with zipfile.ZipFile(path, "w") as zipped:
        zipped.writestr("environment.json", json.dumps({"build_id": "abc"}))
        zipped.writestr("site-packages/module.py", "")
    return path


def test_a_writable_home_is_left_to_shiv(archive, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    environ = {}

    launcher.choose_unpack_root(str(archive), environ, os.getuid())

    assert environ == {}


def test_a_home_it_cannot_write_falls_back_to_xdg_cache_home(archive, tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("HOME", str(tmp_path / "file"))
    environ = {"XDG_CACHE_HOME": str(tmp_path / "cache")}

    launcher.choose_unpack_root(str(archive), environ, os.getuid())

    assert environ["SHIV_ROOT"] == str(tmp_path / "cache" / "directory-api")


def test_a_copy_missing_files_is_named_and_exits_2(archive, tmp_path, monkeypatch, capsys):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("HOME", str(tmp_path / "file"))
    (tmp_path / "cache" / "directory-api" / "app.pyz_abc" / "site-packages").mkdir(parents=True)

    with pytest.raises(SystemExit) as exited:
        launcher.choose_unpack_root(str(archive), {"XDG_CACHE_HOME": str(tmp_path / "cache")}, os.getuid())

    assert exited.value.code == 2
    assert "is missing files" in capsys.readouterr().err


def test_a_complete_copy_is_used(archive, tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("HOME", str(tmp_path / "file"))
    site_packages = tmp_path / "cache" / "directory-api" / "app.pyz_abc" / "site-packages"
    site_packages.mkdir(parents=True)
    (site_packages / "module.py").write_text("")
    environ = {"XDG_CACHE_HOME": str(tmp_path / "cache")}

    launcher.choose_unpack_root(str(archive), environ, os.getuid())

    assert environ["SHIV_ROOT"] == str(tmp_path / "cache" / "directory-api")


def test_the_failure_line_is_json_under_log_format_json(monkeypatch, capsys):
    monkeypatch.setenv("LOG_FORMAT", "json")

    with pytest.raises(SystemExit):
        launcher.fail("a problem")

    line = json.loads(capsys.readouterr().err)
    assert line["level"] == "ERROR" and line["message"] == "a problem" and line["time"].endswith("Z")
