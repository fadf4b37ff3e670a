"""A locked database, on the built pyz: serve keeps taking enrolments and answering, work stops within 2 s.

Another session holds LOCK TABLE enrolment IN ACCESS EXCLUSIVE MODE, as an
operator's forgotten transaction or a long migration would: every statement
on the table waits for it.
"""

import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.database_locks import lock_waits, postgres_table_locked, sqlite_write_locked
from tests.e2e.harness import assert_saved_exactly_once, get_signed, post_enrolment, service_env, wait_all_saved
from tests.factories import enrolment_bodies, enrolment_payload
from tests.support.databases import pg_rows
from tests.support.processes import start_serve, start_work
from tests.support.waits import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

EXIT_WITHIN = 2.0


def query(url: str, sql: str):
    return pg_rows(url, sql)[0][0]


def sessions_opened(url: str) -> int:
    """Sessions ever opened on the test database (PostgreSQL 14+ counts them)."""
    return query(url, "SELECT sessions FROM pg_stat_database WHERE datname = current_database()")


def test_serve_takes_enrolments_and_answers_health_while_status_requests_wait_on_a_locked_table(
    cli, base_env, pg, moto_endpoint, queues, sqs, processes
):
    # Regression: signed GET /enrolment/<id>/ requests took all 8 request threads, so signed POSTs
    # (which only need SQS) and /healthcheck/ timed out after 30 s.
    env = service_env(base_env, database_url=pg, sqs_endpoint=moto_endpoint, queues=queues)
    _, base_url = start_serve(processes, cli, env)
    with postgres_table_locked(pg), ThreadPoolExecutor(16) as pool:
        statuses = [pool.submit(get_signed, base_url, f"/enrolment/m-{n}/", timeout=30) for n in range(16)]
        wait_until(lambda: lock_waits(pg) >= 1, 10, "status requests waiting on the lock")

        started = time.monotonic()
        posted = post_enrolment(base_url, enrolment_payload(1), timeout=5)
        assert posted.status_code == 202, posted.text
        assert time.monotonic() - started < 1

        started = time.monotonic()
        health = requests.get(f"{base_url}/healthcheck/", timeout=10)
        assert (health.status_code, health.json()["database"]) == (503, "not writable")
        assert time.monotonic() - started < 4

        answers = [future.result() for future in statuses]
    # Each wait ends at the lock timeout; those beyond the database's share of threads are refused at once.
    assert {answer.status_code for answer in answers} == {503}
    assert all(answer.headers.get("Retry-After") for answer in answers)
    assert sqs.total(queues[0]) == 1


def test_a_health_check_flood_opens_no_database_session_per_check(cli, base_env, pg, moto_endpoint, queues, processes):
    # Regression: each /healthcheck/ opened a PostgreSQL connection (250 a second under a flood).
    env = service_env(base_env, database_url=pg, sqs_endpoint=moto_endpoint, queues=queues)
    _, base_url = start_serve(processes, cli, env)
    time.sleep(1.5)  # PostgreSQL's statistics lag up to a second
    before = sessions_opened(pg)
    with requests.Session() as session:
        for _ in range(200):
            assert session.get(f"{base_url}/healthcheck/", timeout=5).status_code == 200
    time.sleep(1.5)
    assert sessions_opened(pg) - before <= 5  # the kept connection and this test's own queries; before: one a check


def wait_for_receiving(worker, sqs, queues) -> None:
    """Return once the worker has checked the database and receives (it creates its queues in between)."""
    wait_until(lambda: sqs.exists(queues[0]), 30, "the worker to create its queue")
    time.sleep(1)
    assert worker.alive(), worker.log()


@pytest.fixture
def worker_saving_against_a_lock(cli, base_env, pg, sqs, moto_endpoint, queues, processes):
    """A worker whose first batch waits on the locked enrolment table; yields (worker, sent message ids)."""
    env = service_env(
        base_env, database_url=pg, sqs_endpoint=moto_endpoint, queues=queues, SQS_VISIBILITY_TIMEOUT=60,
    )
    worker = start_work(processes, cli, env)
    wait_for_receiving(worker, sqs, queues)
    with postgres_table_locked(pg):
        sent = sqs.send_batch(queues[0], enrolment_bodies(5))
        wait_until(lambda: lock_waits(pg) >= 1, 15, "the worker's batch to wait on the lock")
        yield worker, sent


def assert_clean_exit(process, code, seconds):
    assert code == 0, f"exit code {code} after {seconds:.2f}s (None: still running):\n{process.log()}"
    assert seconds <= EXIT_WITHIN, f"took {seconds:.2f}s to exit after SIGTERM:\n{process.log()}"


def test_sigterm_while_a_batch_waits_on_a_locked_table_exits_0_within_2_s_and_hands_the_batch_back(
    worker_saving_against_a_lock, pg, sqs, queues
):
    # Regression: `work` hung on its batch and neither a first nor a second SIGTERM stopped it.
    worker, sent = worker_saving_against_a_lock

    code, seconds = worker.signal_and_time(signal.SIGTERM)

    assert_clean_exit(worker, code, seconds)
    wait_until(lambda: lock_waits(pg) == 0, 2, "the batch's statement to be cancelled")
    # Handed back at once: visible again long before the 60 s visibility timeout.
    wait_until(lambda: sqs.counts(queues[0]) == (len(sent), 0), 5, "the batch back on the queue")


def test_a_second_sigterm_while_a_batch_waits_on_a_locked_table_stops_at_once(worker_saving_against_a_lock, pg):
    worker, _ = worker_saving_against_a_lock

    worker.popen.send_signal(signal.SIGTERM)
    time.sleep(0.1)
    code, seconds = worker.signal_and_time(signal.SIGTERM)

    assert code == 0, worker.log()
    assert seconds < 1, f"took {seconds:.2f}s to exit after a second SIGTERM:\n{worker.log()}"
    wait_until(lambda: lock_waits(pg) == 0, 2, "the batch's statement to be cancelled")


def test_a_table_locked_for_longer_than_the_receive_limit_turns_no_good_message_into_poison(
    cli, base_env, pg, sqs, moto_endpoint, queues, processes
):
    # While the table is locked the worker waits for the database (its check runs the write probe) rather
    # than receive again and again: three receives would exceed SQS_MAX_RECEIVE_COUNT=2.
    env = service_env(base_env, database_url=pg, sqs_endpoint=moto_endpoint, queues=queues, SQS_MAX_RECEIVE_COUNT=2)
    worker = start_work(processes, cli, env)
    wait_for_receiving(worker, sqs, queues)
    with postgres_table_locked(pg):
        sent = sqs.send_batch(queues[0], enrolment_bodies(20))
        time.sleep(15)  # three lock timeouts, five visibility timeouts
        assert worker.alive(), worker.log()
    wait_all_saved(pg, sqs, queues[0], sent, timeout=60, processes=processes)
    assert_saved_exactly_once(pg, sent)
    assert sqs.total(queues[1]) == 0, "good messages were set aside as poison while the table was locked"


def test_sigterm_while_a_batch_waits_for_sqlites_write_lock_exits_0_within_2_s_and_hands_the_batch_back(
    cli, base_env, sqs, moto_endpoint, queues, processes, tmp_path
):
    # SQLite's equivalent: another connection holds the write lock (BEGIN EXCLUSIVE); the save waits on the busy
    # timeout.
    from directory_api import db, migrations

    path = tmp_path / "data.sqlite3"
    database = db.bind(f"sqlite:///{path}")
    migrations.migrate(database)
    database.close()
    env = service_env(base_env, database_url=f"sqlite:///{path}", sqs_endpoint=moto_endpoint, queues=queues,
                      SQS_VISIBILITY_TIMEOUT=60)
    worker = start_work(processes, cli, env)
    wait_for_receiving(worker, sqs, queues)
    with sqlite_write_locked(str(path)):
        sent = sqs.send_batch(queues[0], enrolment_bodies(5))
        wait_until(lambda: sqs.counts(queues[0]) == (0, len(sent)), 15, "the worker to receive the batch")
        time.sleep(0.5)  # its save now waits for the write lock

        code, seconds = worker.signal_and_time(signal.SIGTERM)

        assert_clean_exit(worker, code, seconds)
        wait_until(lambda: sqs.counts(queues[0]) == (len(sent), 0), 5, "the batch back on the queue")
