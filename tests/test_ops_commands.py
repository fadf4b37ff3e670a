"""`status`, `redrive` and `export` as real processes (python directory_api.py ...), on both queue backends."""

import csv
import io
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from directory_api.models import Company, Enrolment, Rejection, Supplier
from directory_api.queues import open_enrolment_queues
from tests.factories import enrolment_body, enrolment_payload, save_one, worker_settings
from tests.support.checkout import REPO
from tests.support.sqs import FAKE_AWS, queue_names
from tests.support.waits import wait_until


@pytest.fixture(params=["sqs", "database"])
def environ(request, database, database_url):
    """The variables of every command of the test: its database, its queues on each backend."""
    names = queue_names()
    env = {
        **os.environ, **FAKE_AWS,
        "DATABASE_URL": database_url,
        "QUEUE_BACKEND": request.param,
        "SQS_ENROLMENT_QUEUE_NAME": names[0],
        "SQS_INVALID_ENROLMENT_QUEUE_NAME": names[1],
        "SQS_WAIT_TIME": "1",
        "SQS_VISIBILITY_TIMEOUT": "2",
    }
    if request.param == "sqs":
        env["SQS_ENDPOINT_URL"] = request.getfixturevalue("moto_endpoint")
    for name in FAKE_AWS:
        os.environ.setdefault(name, FAKE_AWS[name])
    return env


@pytest.fixture
def queues(environ):
    settings = worker_settings(environ["DATABASE_URL"], **{
        name: environ[name] for name in environ if name.startswith(("SQS_", "QUEUE_"))})
    enrolments, invalid = open_enrolment_queues(settings)
    enrolments.ensure_exists()
    invalid.ensure_exists()
    return enrolments, invalid


def run(environ, *args, timeout=60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "directory_api.py", *args], cwd=REPO, env=environ,
                          capture_output=True, text=True, timeout=timeout)


def set_aside(environ, queues, *bodies) -> list[str]:
    ids = [queues[0].send(body) for body in bodies]
    assert run(environ, "work", "--once").returncode == 0
    return ids


# status


def test_status_json_has_exactly_the_keys_spec_lists(environ, queues):
    save_one("saved", enrolment_payload())
    set_aside(environ, queues, enrolment_body(export_status="MAYBE"))
    done = run(environ, "status", "--json")
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    emails = figures.pop("emails")
    assert set(emails) == {"waiting", "sent", "failed", "logged"}
    # Added by issue 23, beside the documented keys: the oldest rejection and e-mail record still holding personal data.
    assert set(figures.pop("personal_data")) == {"oldest_rejection", "oldest_email"}
    assert all(value is None or isinstance(value, int) for value in emails.values())
    assert figures == {
        "queues": {"enrolment": {"waiting": 0, "in_flight": 0}, "invalid": {"waiting": 1, "in_flight": 0}},
        "database": {"enrolments": 1, "enrolments_last_24h": 1, "companies": 1, "suppliers": 1, "rejections": 1},
    }


def test_status_as_text_shows_each_part(environ, queues):
    done = run(environ, "status")
    assert done.returncode == 0, done.stderr
    assert "enrolment queue:   0 waiting, 0 in flight" in done.stdout
    assert "database:          0 enrolments (0 in the last 24 hours)" in done.stdout


def test_status_exits_1_naming_the_database_when_it_does_not_answer(environ):
    environ = {**environ, "DATABASE_URL": "postgres://postgres@127.0.0.1:1/nothing_here"}
    done = run(environ, "status", "--json")
    assert done.returncode == 1
    assert json.loads(done.stdout)["database"] == dict.fromkeys(
        ["enrolments", "enrolments_last_24h", "companies", "suppliers", "rejections"])
    assert "error: database: " in done.stderr
    assert "Traceback" not in done.stderr


# redrive


def test_redrive_without_ids_or_all_is_a_usage_error(environ):
    done = run(environ, "redrive")
    assert done.returncode == 2
    assert "give message ids or --all" in done.stderr


def test_redrive_dry_run_lists_whose_each_message_is_and_moves_nothing(environ, queues):
    [message_id] = set_aside(environ, queues, enrolment_body(
        company_number="SC123456", company_name="Acme Ltd", company_email="acme@example.com", export_status="MAYBE"))
    done = run(environ, "redrive", "--all", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "1 message would be moved (dry run)"
    assert done.stdout.startswith(f"would move {message_id} (SC123456, Acme Ltd, acme@example.com) {{")
    assert queues[1].depth().waiting == 1 and queues[0].depth().waiting == 0


def test_redrive_moves_the_ids_given_names_the_missing_one_and_exits_1(environ, queues):
    save_one("earlier", enrolment_payload(company_number="01234567"))
    [message_id] = set_aside(environ, queues, enrolment_body(company_number="01234567"))
    Company.delete().where(Company.number == "01234567").execute()  # the cause, put right
    done = run(environ, "redrive", message_id, "no-such-id")
    assert done.returncode == 1
    assert done.stdout.splitlines()[-1] == "1 message moved"
    assert "error: no-such-id: not on the invalid queue" in done.stderr
    assert run(environ, "work", "--once").returncode == 0
    assert Enrolment.get(sqs_message_id=message_id)


HANG_BETWEEN_SEND_AND_DELETE = textwrap.dedent("""
    import contextlib, pathlib, sys, time
    from directory_api import cli
    from directory_api.ops import redrive

    marker = pathlib.Path(sys.argv[1])

    @contextlib.contextmanager
    def hang(original):
        yield
        marker.write_text(original)  # sent to the enrolment queue, not yet deleted from the invalid one
        time.sleep(600)

    redrive.mark_redriven = hang
    sys.argv = ["directory-api", "redrive", "--all"]
    cli.main()
""")


def test_a_redrive_killed_between_send_and_delete_then_run_again_saves_each_enrolment_once(environ, queues, tmp_path):
    for n in range(3):
        save_one(f"blocker-{n}", enrolment_payload(company_number=f"SC00000{n}"))
    ids = set_aside(environ, queues, *(enrolment_body(company_number=f"SC00000{n}") for n in range(3)))
    assert Rejection.select().count() == 3
    Supplier.delete().execute()
    Company.delete().execute()
    Enrolment.delete().execute()  # the cause, put right

    marker = tmp_path / "sent"
    hanging = subprocess.Popen([sys.executable, "-c", HANG_BETWEEN_SEND_AND_DELETE, str(marker)], cwd=REPO,
                               env={**environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    wait_until(lambda: marker.exists() or hanging.poll() is not None, 30, "redrive to send its first message")
    assert hanging.poll() is None, hanging.communicate()
    hanging.send_signal(signal.SIGKILL)
    hanging.wait(10)
    [first] = marker.read_text().split()
    assert queues[0].depth().waiting == 1  # the first message is on both queues now

    # What the killed redrive held comes back after the visibility timeout; then it is run again.
    wait_until(lambda: queues[1].depth().in_flight == 0, 30, "the killed redrive's messages to come back")
    done = run(environ, "redrive", "--all")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "3 messages moved"
    assert run(environ, "work", "--once").returncode == 0
    saved = sorted(e.sqs_message_id for e in Enrolment.select())
    assert saved == sorted(ids)
    assert first in ids
    assert (Company.select().count(), Supplier.select().count()) == (3, 3)
    assert queues[0].depth().waiting == 0


# export


def test_export_writes_csv_to_stdout(environ):
    save_one("m-1", enrolment_payload(company_name="Ünïcode & Sons"))
    done = run(environ, "export", "companies")
    assert done.returncode == 0, done.stderr
    rows = list(csv.reader(io.StringIO(done.stdout, newline="")))
    assert rows[0][:3] == ["id", "number", "name"]
    assert rows[1][2] == "Ünïcode & Sons"


def test_export_to_a_file_with_since(environ, tmp_path):
    save_one("m-1", enrolment_payload())
    (tmp_path / "out").mkdir()
    output = tmp_path / "out" / "enrolments.csv"
    done = run(environ, "export", "enrolments", "--since", "2000-01-01", "--output", str(output))
    assert done.returncode == 0, done.stderr
    assert "1 rows written to" in done.stderr
    assert output.read_bytes().startswith(b"id,created,sqs_message_id,data\r\n")
    assert list(output.parent.iterdir()) == [output]  # no temporary file left


def test_export_neutralises_formulas_and_raw_writes_them_as_stored(environ):
    save_one("m-1", enrolment_payload(company_name="=1+1"))
    for args, expected in ((), "'=1+1"), (("--raw",), "=1+1"):
        done = run(environ, "export", "companies", *args)
        assert done.returncode == 0, done.stderr
        assert list(csv.reader(io.StringIO(done.stdout, newline="")))[1][2] == expected


@pytest.mark.parametrize("args, message", [
    (["export", "nothing"], "Invalid value for 'TABLE:{enrolments|companies|suppliers|rejections}'"),
    (["export", "enrolments", "--since", "yesterday"], "--since 'yesterday': not a date of the form YYYY-MM-DD"),
])
def test_export_refuses_a_bad_table_or_date_with_exit_2(environ, args, message):
    done = run(environ, *args)
    assert done.returncode == 2
    assert message in done.stderr


def test_export_to_a_directory_that_does_not_exist_is_one_line_naming_the_file_exit_2(environ, tmp_path):
    output = tmp_path / "no" / "such" / "dir" / "x.csv"
    done = run(environ, "export", "companies", "--output", str(output))
    assert done.returncode == 2
    assert done.stderr == f"error: --output {output}: cannot write it: No such file or directory\n"


@pytest.mark.parametrize("since", ["20261201", "2026-W48-1", "2026-12-01T00:00:00", "2026-1-1", "٢٠٢٦-١٢-٠١"])
def test_export_since_takes_only_yyyy_mm_dd(environ, since):
    done = run(environ, "export", "enrolments", "--since", since)
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: --since {since!r}: not a date of the form YYYY-MM-DD"


def test_a_long_since_is_not_echoed_whole(environ):
    done = run(environ, "export", "enrolments", "--since", "9" * 100_000)
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: --since {'9' * 40!r}…: not a date of the form YYYY-MM-DD"


def test_with_log_format_json_every_stderr_line_of_status_is_a_json_object(environ):
    environ = {**environ, "DATABASE_URL": "postgres://postgres@127.0.0.1:1/nothing_here", "LOG_FORMAT": "json"}
    done = run(environ, "status")
    assert done.returncode == 1
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    assert any(line["level"] == "ERROR" and line["message"].startswith("database: ") for line in lines)
