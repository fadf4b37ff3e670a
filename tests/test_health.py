"""health: GET /healthcheck/'s parts, probed on one kept connection at most once a second, never lying."""

import threading
import time

import peewee
import pytest

from directory_api import db, health, migrations
from directory_api.health import Health
from tests.database_locks import writes_locked
from tests.support import ManualClock


class FakeQueue:
    name = "enrolment"

    def __init__(self):
        self.calls = 0

    def ensure_exists(self) -> None:
        self.calls += 1


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    url = f"sqlite:///{tmp_path / 'data.sqlite3'}"
    database = db.bind(url)
    migrations.migrate(database)
    database.close()
    return url


def test_a_writable_database_and_an_answering_queue_are_ok(database):
    assert Health(database, FakeQueue()).parts() == {"database": "ok", "queue": "ok"}


def test_no_database_is_unavailable():
    assert Health(None, FakeQueue()).parts() == {"database": "unavailable", "queue": "ok"}


def test_a_read_only_sqlite_database_is_not_writable(sqlite_url, monkeypatch):
    # Regression: reads still worked, so health said ok while every enrolment got 503.
    # (query_only fails a write as a read-only file does, with the same error, for a root test run too.)
    monkeypatch.setitem(db.SQLITE_PRAGMAS, "query_only", 1)
    assert Health(db.database_for(sqlite_url), FakeQueue()).parts()["database"] == "not writable"


def test_a_full_disk_under_sqlite_is_not_writable(sqlite_url, monkeypatch):
    # Regression: health said ok while every enrolment failed with "database or disk is full".
    monkeypatch.setattr(db, "free_bytes", lambda folder: 0)
    assert Health(db.database_for(sqlite_url), FakeQueue()).parts()["database"] == "not writable"


def test_a_locked_database_is_not_writable_within_the_probe_timeout(database, database_url):
    # Regression: with the enrolment table locked /healthcheck/ waited as long as the lock, past the client's patience.
    probe = Health(database, FakeQueue())
    with writes_locked(database_url):
        started = time.monotonic()
        assert probe.parts()["database"] == "not writable"
        assert time.monotonic() - started < health.PROBE_TIMEOUT + 1


def count_connects(monkeypatch, database: peewee.Database) -> list:
    connects = []
    original = type(database)._connect

    def counting(self):
        connects.append(self)
        return original(self)

    monkeypatch.setattr(type(database), "_connect", counting)
    return connects


def test_probes_from_many_threads_share_one_kept_connection(database, monkeypatch):
    # Regression: each /healthcheck/ opened a PostgreSQL connection of its own (250 a second under a flood).
    probe = Health(database, FakeQueue(), cache_seconds=0)
    connects = count_connects(monkeypatch, database)
    threads = [threading.Thread(target=lambda: [probe.parts() for _ in range(10)]) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(connects) == 1


def test_the_kept_connection_serves_request_threads_that_live_on(database):
    # waitress's threads live as long as the server: a connection made in one is used from the others.
    probe = Health(database, FakeQueue(), cache_seconds=0)
    first_done, answers = threading.Event(), []

    def first():
        answers.append(probe.parts())
        first_done.set()
        time.sleep(0.5)  # alive while the other probes, so the two threads are told apart

    def second():
        first_done.wait(5)
        answers.append(probe.parts())

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert answers == [{"database": "ok", "queue": "ok"}] * 2


def test_a_flood_of_health_checks_probes_once_a_cache_period(database, monkeypatch):
    clock, queue = ManualClock(start=1000.0), FakeQueue()
    probes = []
    monkeypatch.setattr(db, "write_problem", lambda database: probes.append(1))
    probe = Health(database, queue, clock=clock)
    for _ in range(100):
        probe.parts()
    assert (len(probes), queue.calls) == (1, 1)
    clock.now += health.CACHE_SECONDS
    probe.parts()
    assert (len(probes), queue.calls) == (2, 2)


def test_while_one_request_probes_the_others_get_the_last_answer_at_once(database, monkeypatch):
    clock = ManualClock(start=1000.0)
    probe = Health(database, FakeQueue(), clock=clock)
    probe.parts()
    clock.now += health.CACHE_SECONDS
    slow = threading.Event()
    monkeypatch.setattr(db, "write_problem", lambda database: slow.wait(5) and None)
    probing = threading.Thread(target=probe.parts)
    probing.start()
    time.sleep(0.1)
    started = time.monotonic()
    assert probe.parts() == {"database": "ok", "queue": "ok"}
    assert time.monotonic() - started < 0.5
    slow.set()
    probing.join(5)


@pytest.mark.postgres
def test_a_kept_connection_the_server_dropped_is_replaced_without_a_false_alarm(postgres_database):
    database = postgres_database
    probe = Health(database, FakeQueue(), cache_seconds=0)
    assert probe.parts()["database"] == "ok"
    database.execute_sql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid()"
    )
    assert probe.parts()["database"] == "ok"
