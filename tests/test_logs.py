"""logs: text or JSON lines, our loggers at DEBUG under --debug and third-party ones at INFO, request ids."""

import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from directory_api import logs
from tests.support.cli import invoke_cli as invoke

ROOT = Path(__file__).resolve().parents[1]
THIRD_PARTY = ("mohawk", "botocore", "boto3", "urllib3", "waitress", "peewee", "s3transfer")


@pytest.fixture(autouse=True)
def restore_logging(monkeypatch):
    """configure() changes process-wide logging: put back what pytest had."""
    monkeypatch.setattr(logs, "_format", logs._format)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    names = (logs.OUR_LOGGER, *THIRD_PARTY, *logs.SILENCED_LOGGERS)
    levels = {name: logging.getLogger(name).level for name in names}
    hooks = sys.excepthook
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, old in levels.items():
        logging.getLogger(name).setLevel(old)
    sys.excepthook = hooks
    logging.captureWarnings(False)


def configured_lines(monkeypatch, write, **options) -> list[str]:
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    logs.configure(**options)
    write()
    return stream.getvalue().splitlines()


@pytest.mark.parametrize("raw", ["abc", "A-z_0.9", "x" * 200, "3f0c1f5e-2d1b-4a43-9d2e-0b4a1c0e9f11"])
def test_a_safe_request_id_is_kept(raw):
    assert logs.request_id_for(raw) == raw


@pytest.mark.parametrize("raw", [None, "", "with space", "new\nline", "x" * 201, "x" * 10_240, "é", "a;b", "a\x00"])
def test_an_unsafe_or_missing_request_id_is_replaced_by_a_new_one(raw):
    made = logs.request_id_for(raw)

    assert made != raw and logs.safe_request_id(made) == made and len(made) == 32


def test_new_request_ids_differ():
    assert len({logs.new_request_id() for _ in range(100)}) == 100


def test_a_json_line_has_time_in_utc_level_logger_message_and_the_fields_given(monkeypatch):
    def write():
        logging.getLogger("directory_api.worker").info(
            "message %s: saved", "m-1", extra={"message_id": "m-1", "request_id": "r-1"})

    [line] = configured_lines(monkeypatch, write, debug=False, log_format="json")
    entry = json.loads(line)

    assert entry == {"time": entry["time"], "level": "INFO", "logger": "directory_api.worker",
                     "message": "message m-1: saved", "message_id": "m-1", "request_id": "r-1"}
    assert entry["time"].endswith("Z") and entry["time"][10] == "T"


def test_a_json_line_with_a_traceback_or_a_newline_is_still_one_line(monkeypatch):
    def write():
        try:
            raise ValueError("first\nsecond")
        except ValueError:
            logging.getLogger("directory_api").exception("failed:\n%s", "detail")

    [line] = configured_lines(monkeypatch, write, debug=False, log_format="json")
    entry = json.loads(line)

    assert entry["message"] == "failed:\ndetail"
    assert "ValueError: first" in entry["exception"]


def test_third_party_lines_are_json_too(monkeypatch):
    def write():
        logging.getLogger("waitress").info("Serving on http://127.0.0.1:1")

    [line] = configured_lines(monkeypatch, write, debug=True, log_format="json")

    assert json.loads(line)["logger"] == "waitress"


def test_text_keeps_the_format_of_before(monkeypatch):
    def write():
        logging.getLogger("directory_api.server").info("serving")

    [line] = configured_lines(monkeypatch, write, debug=False, log_format="text")

    assert line.endswith(" INFO directory_api.server serving")


def test_debug_logs_this_service_at_debug_and_third_party_libraries_at_info(monkeypatch):
    logs.configure(debug=True)

    assert logging.getLogger("directory_api.worker").isEnabledFor(logging.DEBUG)
    for name in THIRD_PARTY:
        assert not logging.getLogger(name).isEnabledFor(logging.DEBUG), name
        assert logging.getLogger(name).isEnabledFor(logging.INFO), name


def test_without_debug_this_service_logs_at_info():
    logs.configure(debug=False)

    assert not logging.getLogger("directory_api.worker").isEnabledFor(logging.DEBUG)
    assert logging.getLogger("directory_api.worker").isEnabledFor(logging.INFO)
    assert not logging.getLogger("botocore").isEnabledFor(logging.INFO)


def test_log_level_debug_shows_third_party_debug_lines_too():
    logs.configure(debug=True, level="DEBUG")

    for name in THIRD_PARTY:
        assert logging.getLogger(name).isEnabledFor(logging.DEBUG), name


def test_a_configuration_error_under_log_format_json_is_one_json_object_a_variable():
    result = invoke("migrate", LOG_FORMAT="json", DATABASE_URL="mysql://db/x", PORT="eighty")

    assert result.exit_code == 2
    entries = [json.loads(line) for line in result.stderr.splitlines()]
    assert [(entry["level"], entry["message"].split(":")[0]) for entry in entries] == [
        ("ERROR", "PORT"), ("ERROR", "DATABASE_URL")]


def test_a_bad_log_format_is_a_configuration_error_naming_it():
    result = invoke("migrate", LOG_FORMAT="xml")

    assert result.exit_code == 2
    assert result.stderr.splitlines()[0] == "error: LOG_FORMAT: 'xml' is not one of text, json"


def test_the_settings_debug_prints_are_one_json_object_under_log_format_json(tmp_path):
    result = invoke("migrate", "--debug", LOG_FORMAT="json", DATABASE_URL=f"sqlite:///{tmp_path / 'x.sqlite3'}",
                    UI_SECRET="not-a-real-secret")

    assert result.exit_code == 0, result.stderr
    entries = [json.loads(line) for line in result.stderr.splitlines()]
    settings = next(entry["settings"] for entry in entries if entry["message"] == "settings (--debug)")
    assert settings["UI_SECRET"] == "********" and settings["LOG_FORMAT"] == "json"


def test_every_stderr_line_of_a_failing_cli_process_parses_as_json(tmp_path):
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "LOG_FORMAT": "json",
           "DATABASE_URL": "mysql://db/x", "PORT": "eighty"}

    result = subprocess.run([sys.executable, str(ROOT / "directory_api.py"), "work"],
                            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)

    assert result.returncode == 2
    entries = [json.loads(line) for line in result.stderr.splitlines()]
    assert [entry["message"].split(":")[0].split()[0] for entry in entries] == [
        "PORT", "DATABASE_URL", "SQS_ENROLMENT_QUEUE_NAME", "SQS_INVALID_ENROLMENT_QUEUE_NAME"]
    assert {entry["level"] for entry in entries} == {"ERROR"}
