"""Upgrading while enrolments keep arriving (docs/production.md, "Upgrading"), from the previous release's own pyz.

The previous release is built from its commit by its own build.sh, once, into build/ (gitignored).
"""

import contextlib
import itertools
import shutil
import signal
import subprocess
import sys
import threading
import time

import psycopg2
import pytest
import requests
from throwaway_postgres import emptied

from directory_api import __version__, migrations
from tests.e2e.conftest import ROOT, build
from tests.e2e.harness import assert_saved_exactly_once, post_enrolment, saved_message_ids, service_env
from tests.e2e.test_mail import SinkProcess
from tests.factories import enrolment_bodies, enrolment_payload
from tests.support.databases import pg_rows
from tests.support.processes import Process, start_serve, start_work, wait_for_root
from tests.support.sockets import free_port
from tests.support.waits import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

# Release 1.0.0: main before the wave of issues 20-24. Once 1.1.0 is published, the next release's
# upgrade test starts from 1.1.0's commit instead.
PREVIOUS_COMMIT = "b69e331"
PREVIOUS_VERSION = "1.0.0"
PREVIOUS_LAST_STEP = 3
CACHE = ROOT / "build" / f"release-{PREVIOUS_VERSION}-{PREVIOUS_COMMIT}"
PYTHON = getattr(sys, "_base_executable", sys.executable)
# A steady stream: one signed enrolment every STREAM_PAUSE seconds, every CONFLICT_EVERY-th set aside.
STREAM_PAUSE = 0.1
CONFLICT_EVERY = 6


@pytest.fixture(scope="session")
def previous_cli(tmp_path_factory) -> list[str]:
    """The argv prefix that runs the previous release's pyz, built from its commit when not cached in build/."""
    pyz = CACHE / "directory-api.pyz"
    if not pyz.exists():
        source = tmp_path_factory.mktemp("previous") / "directory-api"
        source.mkdir()
        archive = subprocess.run(["git", "archive", "--format=tar", PREVIOUS_COMMIT], cwd=ROOT, capture_output=True,
                                 check=False, timeout=120)
        if archive.returncode != 0:  # a shallow clone, say
            pytest.fail(f"git archive {PREVIOUS_COMMIT} (release {PREVIOUS_VERSION}) failed: "
                        f"{archive.stderr.decode(errors='replace').strip()}", pytrace=False)
        subprocess.run(["tar", "-x", "-C", str(source)], input=archive.stdout, check=True, timeout=120)
        built = build(source)
        CACHE.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(built, CACHE / "building.pyz")
        (CACHE / "building.pyz").rename(pyz)  # whole or not at all, should this run be stopped
    return [PYTHON, str(pyz)]


def run(cli: list[str], env: dict, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*cli, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False)


class Stream:
    """Signed enrolments posted one after another to whichever `serve` is `target` now, until stopped.

    Every CONFLICT_EVERY-th names the company registered before the stream began, so the worker sets it aside.
    """

    def __init__(self, target: str, taken_company_number: str):
        self.target = target
        self.taken = taken_company_number
        self.accepted: dict[str, bool] = {}  # queue message id -> whether it will be set aside
        self.answers: list[tuple[int, str]] = []  # (status, base URL) of every answer
        self.failures: list[str] = []  # requests that got no answer at all
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "Stream":
        self._thread.start()
        return self

    def _run(self) -> None:
        for n in itertools.count(1000):
            if self._stop.wait(STREAM_PAUSE):
                return
            conflict = n % CONFLICT_EVERY == 0
            payload = enrolment_payload(n, company_number=self.taken) if conflict else enrolment_payload(n)
            target = self.target
            try:
                response = post_enrolment(target, payload)
            except requests.RequestException as error:
                self.failures.append(f"{target}: {error}")
                continue
            self.answers.append((response.status_code, target))
            if response.status_code == 202:
                self.accepted[response.json()["id"]] = conflict

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def count(self) -> int:
        return len(self.answers)

    def wait_for_more(self, count: int, timeout: float = 60) -> None:
        """Let `count` more enrolments be answered."""
        goal = self.count() + count
        wait_until(lambda: self.count() >= goal, timeout, f"{count} more enrolments answered")

    @property
    def to_save(self) -> set[str]:
        return {message_id for message_id, conflict in self.accepted.items() if not conflict}

    @property
    def to_set_aside(self) -> set[str]:
        return {message_id for message_id, conflict in self.accepted.items() if conflict}


def rejections(database_url: str) -> dict[str, str]:
    """message id -> its reasons, of every recorded rejection."""
    return {row[0]: str(row[1]) for row in pg_rows(database_url, "SELECT message_id, errors FROM rejection")}


def pg_execute(url: str, sql: str) -> None:
    with contextlib.closing(psycopg2.connect(url, connect_timeout=5)) as connection, connection:
        connection.cursor().execute(sql)


def sent_emails(database_url: str) -> int:
    return pg_rows(database_url, "SELECT count(*) FROM email WHERE state = 'sent'")[0][0]


def assert_each_email_sent_once(url: str, sink: SinkProcess, previous_release_stops: int) -> set[str]:
    """Every saved enrolment's e-mail reached the SMTP server under its own Message-ID, and no other e-mail did.

    Sent once, with one known exception, 1.0.0's: stopping its `work` cuts
    the SMTP conversation in hand and hands the e-mail back; when the cut
    falls after the server took the message but before its 250 was read, it
    is sent again, with the same Message-ID. So a Message-ID may come twice,
    at most once a stop of a 1.0.0 worker. This release's stop waits for the
    reply to a message's DATA (mail.Sender.stop): its stops allow none. The
    Message-IDs that came twice.
    """
    expected = {f"<{row[0]}@example.com>" for row in pg_rows(url, "SELECT token FROM email")}
    received = sink.message_ids()
    assert set(received) == expected, f"missing {sorted(expected - set(received))[:5]}, " \
                                      f"unexpected {sorted(set(received) - expected)[:5]}"
    again = [message_id for message_id in set(received) if received.count(message_id) > 1]
    assert all(received.count(message_id) == 2 for message_id in again), again
    assert len(again) <= previous_release_stops, \
        f"{len(again)} e-mails sent twice, with {previous_release_stops} stops of 1.0.0 workers: {again}"
    return set(again)


def replace(old: Process, start_new) -> Process:
    """SIGTERM `old`, which must exit 0 in time, then start its replacement."""
    code, _ = old.signal_and_time(signal.SIGTERM, timeout=15)
    assert code == 0, f"{old.argv} exited {code}:\n{old.log()}"
    return start_new()


def started(process: Process, settle: float = 2.0) -> Process:
    """`process`, once it has run `settle` seconds without exiting (a refusal to start exits at once)."""
    time.sleep(settle)
    assert process.alive(), f"{process.argv} refused to start or died:\n{process.log()}"
    return process


# The two orders docs/production.md gives for leaving 1.0.0: migrate --compatible-with 1.0.0 first (1.0.0
# processes keep starting), or a plain migrate (1.0.0 processes keep running until each is replaced).
BRIDGED = ("migrate", "--compatible-with", PREVIOUS_VERSION)


@pytest.mark.parametrize("migrate", [BRIDGED, ("migrate",)], ids=["compatible-with-1.0.0", "plain"])
def test_a_rolling_upgrade_from_the_previous_release_loses_and_duplicates_nothing(
        migrate, previous_cli, cli, base_env, postgres_url, moto_endpoint, sqs, queues, processes, tmp_path):
    url = emptied(postgres_url)
    sink = SinkProcess(processes, tmp_path)
    env = service_env(base_env, database_url=url, sqs_endpoint=moto_endpoint, queues=queues, **{
        "EMAIL_HOST": "127.0.0.1", "EMAIL_PORT": sink.port, "EMAIL_USE_TLS": "false",
        "DEFAULT_FROM_EMAIL": "noreply@example.com", "COMPANY_EMAIL_CONFIRMATION_URL": "https://example.com/c/"})
    assert run(previous_cli, env, "--version").stdout.strip() == f"directory-api {PREVIOUS_VERSION}"
    assert run(previous_cli, env, "migrate").returncode == 0

    # The previous release runs the fleet: serve with two processes, two workers.
    old_serve, old_url = start_serve(processes, previous_cli, env, "--processes", "2", name="old-serve")
    old_workers = [started(start_work(processes, previous_cli, env, name=f"old-work-{n}")) for n in (1, 2)]
    taken = enrolment_payload(1)
    first = post_enrolment(old_url, taken)
    assert first.status_code == 202
    wait_until(lambda: saved_message_ids(url) == [first.json()["id"]], 30, "the first enrolment saved")

    stream = Stream(old_url, taken["company_number"]).start()
    try:
        stream.wait_for_more(20)
        dry = run(cli, env, "migrate", "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert f"schema at version {PREVIOUS_LAST_STEP}; migrate would apply" in dry.stdout
        migrated = run(cli, env, *migrate)
        assert migrated.returncode == 0, migrated.stderr
        assert f"schema migrated to version {migrations.LATEST}" in migrated.stdout
        stream.wait_for_more(20)
        for process in (old_serve, *old_workers):
            assert process.alive(), f"{process.argv} stopped after the migration:\n{process.log()}"
        if migrate == BRIDGED:
            # The migrate unit of a machine starting its new units runs a plain migrate: the hold stays.
            assert run(cli, env, "migrate").returncode == 0
            assert max_version_as_1_0_0_reads_it(url) == PREVIOUS_LAST_STEP
            # A 1.0.0 worker restarted mid-upgrade (a crash, a reboot, systemd's Restart=) starts again.
            old_workers[0] = started(replace(old_workers[0], lambda: start_work(
                processes, previous_cli, env, name="old-work-restarted")))
            stream.wait_for_more(10)

        # One machine at a time: each worker, then serve (the new one takes the traffic before the old one stops).
        new_workers = []
        for n, old in enumerate(old_workers, 1):
            new_workers.append(started(replace(old, lambda n=n: start_work(processes, cli, env, name=f"new-work-{n}"))))
            stream.wait_for_more(20)
        new_serve, new_url = start_serve(processes, cli, env, "--processes", "2", name="new-serve")
        stream.target = new_url
        time.sleep(1)  # requests already sent to the old serve are answered before it goes
        code, _ = old_serve.signal_and_time(signal.SIGTERM, timeout=15)
        assert code == 0, old_serve.log()
        stream.wait_for_more(30)
    finally:
        stream.stop()

    statuses = {status for status, _ in stream.answers}
    assert statuses == {202}, f"answers other than 202: {sorted(statuses)}; {stream.failures[:5]}"
    assert not stream.failures, stream.failures[:5]
    assert {target for _, target in stream.answers} == {old_url, new_url}
    assert stream.to_set_aside, "the stream set nothing aside"
    wait_until(lambda: set(saved_message_ids(url)) >= stream.to_save
               and set(rejections(url)) >= stream.to_set_aside and sqs.total(queues[0]) == 0,
               90, "every accepted enrolment saved or set aside")
    assert_saved_exactly_once(url, {first.json()["id"], *stream.to_save})
    assert set(rejections(url)) == stream.to_set_aside
    assert all("company_number" in reasons for reasons in rejections(url).values())
    assert sqs.total(queues[1]) == len(stream.to_set_aside)  # each set aside once, with its reasons
    saved = len(stream.to_save) + 1
    wait_until(lambda: sent_emails(url) == saved, 60, f"{saved} e-mails sent")
    resent = assert_each_email_sent_once(url, sink, previous_release_stops=3 if migrate == BRIDGED else 2)
    for process in (new_serve, *new_workers):
        assert process.alive(), process.log()
        assert "WARNING" not in process.full_log(), process.full_log()

    # The rollback: the previous release's work on the migrated schema.
    for process in new_workers:
        code, _ = process.signal_and_time(signal.SIGTERM, timeout=15)
        assert code == 0, process.log()
    rollback_ids = [post_enrolment(new_url, enrolment_payload(n)).json()["id"] for n in range(5000, 5005)]
    if migrate != BRIDGED:
        # 1.0.0 reads MAX(schema_version.version) and refuses anything past its own last step, additive or not.
        refused = run(previous_cli, env, "work", timeout=60)
        assert refused.returncode == 2
        assert refused.stderr.strip().splitlines() == [
            f"error: the database schema is at version {migrations.LATEST}, newer than this release "
            f"({PREVIOUS_LAST_STEP}): run the newer directory-api"]
        # What lets it start: the new release keeps the rows of its additive steps where 1.0.0 does not look.
        bridged = run(cli, env, *BRIDGED)
        assert bridged.returncode == 0, bridged.stderr
    rolled_back = started(start_work(processes, previous_cli, env, name="rolled-back-work"))
    rollback_ids += [post_enrolment(new_url, enrolment_payload(n)).json()["id"] for n in range(5005, 5010)]
    wait_until(lambda: set(saved_message_ids(url)) >= set(rollback_ids) and sqs.total(queues[0]) == 0, 60,
               "the rolled-back worker to drain")
    assert_saved_exactly_once(url, {first.json()["id"], *stream.to_save, *rollback_ids})
    saved += len(rollback_ids)
    wait_until(lambda: sent_emails(url) == saved, 60, f"{saved} e-mails sent")
    # Only this release's two workers were stopped since: none of its e-mails went twice.
    assert assert_each_email_sent_once(url, sink, previous_release_stops=3 if migrate == BRIDGED else 2) == resent

    # Forward again: a plain migrate keeps the hold; --end-compatibility records the steps in schema_version;
    # the new release's work drains the rest.
    assert run(cli, env, "migrate").returncode == 0
    assert max_version_as_1_0_0_reads_it(url) == PREVIOUS_LAST_STEP
    ended = run(cli, env, "migrate", "--end-compatibility")
    assert ended.returncode == 0, ended.stderr
    assert max_version_as_1_0_0_reads_it(url) == migrations.LATEST
    code, _ = rolled_back.signal_and_time(signal.SIGTERM, timeout=15)
    assert code == 0, rolled_back.log()
    forward = started(start_work(processes, cli, env, name="forward-again-work"))
    last = post_enrolment(new_url, enrolment_payload(6000)).json()["id"]
    wait_until(lambda: last in saved_message_ids(url), 30, "the last enrolment saved")
    assert_saved_exactly_once(url, {first.json()["id"], *stream.to_save, *rollback_ids, last})
    assert "WARNING" not in forward.full_log()
    assert new_serve.alive()


def max_version_as_1_0_0_reads_it(url: str) -> int:
    """What release 1.0.0 compares with its own last step at start: MAX(schema_version.version)."""
    return pg_rows(url, "SELECT MAX(version) FROM schema_version")[0][0]


def drop_connections(url: str) -> None:
    """End the service's PostgreSQL connections to this database, as a failover or a restart of PostgreSQL would."""
    name = url.rsplit("/", 1)[1]
    pg_rows(url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                 f"WHERE datname = '{name}' AND application_name = 'directory-api'")


@pytest.mark.parametrize("migrate", [("migrate",), ("migrate", "--compatible-with", PREVIOUS_VERSION)],
                         ids=["plain", "compatible-with-1.0.0"])
def test_a_running_previous_release_worker_after_the_migration_and_a_lost_connection(
        migrate, previous_cli, cli, base_env, postgres_url, moto_endpoint, sqs, queues, processes):
    """1.0.0's work checks the schema again whenever it waits for the database, after any database error."""
    url = emptied(postgres_url)
    env = service_env(base_env, database_url=url, sqs_endpoint=moto_endpoint, queues=queues)
    assert run(previous_cli, env, "migrate").returncode == 0
    worker = started(start_work(processes, previous_cli, env, name="old-work"))
    before = sqs.send_batch(queues[0], enrolment_bodies(3))
    wait_until(lambda: set(saved_message_ids(url)) == set(before), 30, "3 enrolments saved")
    assert run(cli, env, *migrate).returncode == 0

    drop_connections(url)
    after = sqs.send_batch(queues[0], enrolment_bodies(3, start=10))

    if "--compatible-with" in migrate:
        wait_until(lambda: set(saved_message_ids(url)) == {*before, *after}, 60, "3 more enrolments saved")
        assert worker.alive()
    else:
        wait_until(lambda: not worker.alive(), 60, "the 1.0.0 worker to exit")
        assert worker.popen.returncode == 2
        assert worker.full_log().strip().splitlines()[-1] == (
            f"error: the database schema is at version {migrations.LATEST}, newer than this release "
            f"({PREVIOUS_LAST_STEP}): run the newer directory-api")
        assert sqs.total(queues[0]) == 3  # nothing lost: the next worker saves them


def test_a_newer_additive_step_lets_serve_and_work_start_with_a_warning_and_a_breaking_one_stops_them(
        cli, base_env, postgres_url, moto_endpoint, queues, processes):
    url = emptied(postgres_url)
    env = service_env(base_env, database_url=url, sqs_endpoint=moto_endpoint, queues=queues)
    assert run(cli, env, "migrate").returncode == 0
    newer = migrations.LATEST + 1
    pg_execute(url, f"INSERT INTO schema_version (version, applied, additive) VALUES ({newer}, now(), true)")
    warning = (f"WARNING directory_api.migrations the database schema is at version {newer}, newer than this "
               f"release (directory-api {__version__}, version {migrations.LATEST}); its newer steps are all "
               "additive, so this release runs on it")

    port = free_port()
    serve = processes.start([*cli, "serve", "--host", "127.0.0.1", "--port", str(port), "--processes", "2"], env,
                            "serve")
    wait_for_root(serve, f"http://127.0.0.1:{port}")
    work = started(start_work(processes, cli, env))
    for process in (serve, work):
        lines = [line for line in process.full_log().splitlines() if "WARNING" in line]
        assert len(lines) == 1 and lines[0].endswith(warning), process.full_log()
        code, _ = process.signal_and_time(signal.SIGTERM, timeout=15)
        assert code == 0, process.log()

    pg_execute(url, f"UPDATE schema_version SET additive = false WHERE version = {newer}")
    refusal = (f"error: the database schema is at version {newer}, newer than this release ({migrations.LATEST}); "
               f"step {newer} is breaking: run the newer directory-api that migrated it")
    for command in ("serve", "work"):
        refused = run(cli, env, command, timeout=60)
        assert refused.returncode == 2, refused.stderr
        assert (refused.stdout + refused.stderr).strip().splitlines() == [refusal]


def test_the_previous_release_pyz_is_the_previous_release(previous_cli, base_env):
    assert run(previous_cli, base_env, "--version").stdout == f"directory-api {PREVIOUS_VERSION}\n"


