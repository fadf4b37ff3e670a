"""`work`'s periodic jobs (jobs.py) and the first of them, retention: run once an interval across workers."""

import datetime
import logging
import threading
import time

import psycopg2
import pytest

from directory_api import jobs, outbox, retention, saving
from directory_api.jobs import Job
from directory_api.models import Email, Enrolment, JobRun, Rejection
from tests.factories import enrolment_payload, save_one, worker_settings
from tests.support.waits import errors_in_threads

START = datetime.datetime(2026, 12, 1, 9, 0)
HOUR = datetime.timedelta(hours=1)


class Clock:
    """Database time the test moves by hand."""

    def __init__(self, now: datetime.datetime = START):
        self.now = now

    def __call__(self) -> datetime.datetime:
        return self.now


@pytest.fixture
def settings(database_url):
    return worker_settings(database_url)


def test_a_job_runs_when_due_and_not_again_before_its_interval(database, settings):
    calls: list = []
    job = Job("counting", HOUR, lambda settings, now: calls.append(now))
    clock = Clock()
    assert jobs.run_due([job], settings, clock) == ["counting"]
    clock.now += datetime.timedelta(minutes=59)
    assert jobs.run_due([job], settings, clock) == []
    clock.now += datetime.timedelta(minutes=1)
    assert jobs.run_due([job], settings, clock) == ["counting"]
    assert calls == [START, START + HOUR]
    assert JobRun.get_by_id("counting").last_run == START + HOUR


def test_the_schedule_survives_a_restart(database, settings):
    calls: list = []
    job = Job("counting", HOUR, lambda settings, now: calls.append(now))
    jobs.run_due([job], settings, Clock())
    # A new scheduler, as a restarted worker makes, on the same database.
    restarted = jobs.Scheduler([job], settings, clock=Clock(START + datetime.timedelta(minutes=30)))
    assert restarted.check() == []
    assert calls == [START]


def test_a_failing_job_is_not_recorded_as_run_and_is_tried_at_the_next_check(database, settings, caplog):
    def fail(settings, now):
        Rejection.create(message_id="written by the failing job", errors={})
        raise RuntimeError("boom")

    scheduler = jobs.Scheduler([Job("failing", HOUR, fail)], settings, clock=Clock())
    assert scheduler.check() == []
    assert "periodic jobs: a job failed" in caplog.text
    assert not JobRun.select().exists()
    assert not Rejection.select().exists()  # its transaction rolled back


def test_workers_checking_at_once_run_a_job_once(database, settings):
    calls: list = []
    job = Job("counting", HOUR, lambda settings, now: (calls.append(now), time.sleep(0.2)))
    assert errors_in_threads(lambda: jobs.run_due([job], settings, Clock()), 4) == []
    assert len(calls) == 1


def test_a_job_another_worker_is_running_is_left_to_it(postgres_database, postgres_url):
    calls: list = []
    job = Job("counting", HOUR, lambda settings, now: calls.append(now))
    other = psycopg2.connect(postgres_url)
    try:
        with other.cursor() as cursor:  # psycopg2 opens a transaction by itself
            key = jobs.zlib.crc32(b"counting") & 0x7FFFFFFF
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", (jobs.ADVISORY_LOCK_CLASS, key))
            started = time.monotonic()
            assert jobs.run_due([job], worker_settings(postgres_url), Clock()) == []
            assert time.monotonic() - started < 1  # not waiting for the other
    finally:
        other.rollback()  # the lock goes with the other's transaction, at once (a close ends it a little later)
        other.close()
    assert calls == []
    assert jobs.run_due([job], worker_settings(postgres_url), Clock()) == ["counting"]


def test_a_database_that_does_not_answer_is_logged_and_tried_later(settings, caplog, tmp_path):
    from directory_api import db

    db.bind(f"sqlite:///{tmp_path / 'missing' / 'no.sqlite3'}")
    scheduler = jobs.Scheduler(jobs.jobs_for(settings), settings)
    assert scheduler.check() == []
    assert "periodic jobs: the database does not answer" in caplog.text


def test_the_scheduler_thread_checks_at_start_and_stops_when_told(database, settings):
    calls: list = []
    ran = threading.Event()
    job = Job("counting", HOUR, lambda settings, now: (calls.append(now), ran.set()))
    scheduler = jobs.Scheduler([job], settings, check_every=0.05).start()
    try:
        assert ran.wait(10)
    finally:
        scheduler.stop()
        scheduler._thread.join(5)
    assert not scheduler._thread.is_alive()
    assert len(calls) == 1  # checked again and again, run once: the interval is an hour


# -- retention


def rejection(message_id: str, created: datetime.datetime) -> Rejection:
    save_one(message_id, enrolment_payload(export_status="MAYBE", company_name=f"{message_id} Ltd"))
    Rejection.update(created=created).where(Rejection.message_id == message_id).execute()
    return Rejection.get(message_id=message_id)


def email(message_id: str, created: datetime.datetime, state: str) -> Email:
    outcome = save_one(message_id, enrolment_payload())
    assert isinstance(outcome, saving.Created)  # for mypy: only a new enrolment has an id
    Email.update(created=created, state=state).where(Email.enrolment == outcome.enrolment_id).execute()
    return Email.get(Email.enrolment == outcome.enrolment_id)


def test_retention_removes_personal_data_past_the_days_and_keeps_ids_reasons_and_times(database, settings, caplog):
    old = rejection("old", START - datetime.timedelta(days=91))
    recent = rejection("recent", START - datetime.timedelta(days=89))
    sent_long_ago = email("sent", START - datetime.timedelta(days=91), outbox.SENT)
    waiting_long_ago = email("waiting", START - datetime.timedelta(days=91), outbox.WAITING)
    logged_lately = email("logged", START - datetime.timedelta(days=1), outbox.LOGGED)
    caplog.set_level(logging.INFO, logger="directory_api.jobs")

    assert jobs.run_due(jobs.jobs_for(settings), settings, Clock()) == ["retention"]

    stripped = Rejection.get_by_id(old.id)
    assert (stripped.payload, stripped.company_number, stripped.company_name, stripped.sso_id,
            stripped.company_email) == (None,) * 5
    assert (stripped.message_id, stripped.errors, stripped.created) == (old.message_id, old.errors, old.created)
    assert stripped.erased == START
    assert Rejection.get_by_id(recent.id).payload is not None
    assert Email.get_by_id(sent_long_ago.id).recipient == ""
    assert Email.get_by_id(waiting_long_ago.id).recipient != ""  # still to be sent
    assert Email.get_by_id(logged_lately.id).recipient != ""
    assert Enrolment.select().count() == 3  # enrolments are kept whole
    lines = [r.getMessage() for r in caplog.records if r.name == "directory_api.jobs"]
    assert len(lines) == 1
    assert "1 rejection(s) older than 90 days" in lines[0] and "1 e-mail record(s) older than 90 days" in lines[0]


def test_zero_days_keep_personal_data_for_ever(database, database_url):
    rejection("old", START - datetime.timedelta(days=3650))
    email("sent", START - datetime.timedelta(days=3650), outbox.SENT)
    settings = worker_settings(database_url, REJECTION_RETENTION_DAYS="0", EMAIL_RETENTION_DAYS="0")
    jobs.run_due(jobs.jobs_for(settings), settings, Clock())
    assert Rejection.get(message_id="old").payload is not None
    assert Email.get().recipient != ""


def test_the_oldest_records_still_holding_personal_data(database):
    assert retention.oldest_personal() == {"rejection": None, "email": None}
    rejection("oldest", START - datetime.timedelta(days=200))
    rejection("newer", START - datetime.timedelta(days=20))
    email("sent", START - datetime.timedelta(days=30), outbox.SENT)
    assert retention.oldest_personal() == {"rejection": START - datetime.timedelta(days=200),
                                           "email": START - datetime.timedelta(days=30)}
    retention.remove(100, 10, START)
    assert retention.oldest_personal() == {"rejection": START - datetime.timedelta(days=20), "email": None}


def test_work_runs_the_periodic_jobs_beside_the_worker_and_stops_them_with_it(database, database_url, monkeypatch):
    from directory_api import worker

    events = []

    class Recorded:
        def stop(self):
            events.append("stopped")

    def start(settings):
        events.append(("started", settings.rejection_retention_days))
        return Recorded()

    monkeypatch.setattr(jobs, "start", start)
    monkeypatch.setattr(worker, "ONCE_WAIT", 0)
    worker.work(worker_settings(database_url, QUEUE_BACKEND="database", SQS_WAIT_TIME="0"), once=True)
    assert events == [("started", 90), "stopped"]


def test_status_shows_the_oldest_records_still_holding_personal_data(database):
    from directory_api.ops import status

    assert status.personal_data_figures() == {"oldest_rejection": None, "oldest_email": None}
    rejection("old", START - datetime.timedelta(days=200))
    email("sent", START - datetime.timedelta(days=30), outbox.SENT)
    figures = status.personal_data_figures()
    assert figures == {"oldest_rejection": "2026-05-15T09:00:00Z", "oldest_email": "2026-11-01T09:00:00Z"}
    assert status.personal_data_line({"personal_data": figures}) == (
        "personal data:     oldest rejection holding it 2026-05-15 09:00:00 UTC,"
        " oldest e-mail record 2026-11-01 09:00:00 UTC")


def test_status_personal_data_figures_are_null_when_the_database_does_not_answer(database):
    from directory_api.ops import status

    database.execute_sql("DROP TABLE email")
    assert status.personal_data_figures() == {"oldest_rejection": None, "oldest_email": None}


def test_a_backlog_is_stripped_in_bounded_chunks_and_the_rest_left_to_the_next_pass(database, monkeypatch):
    monkeypatch.setattr(retention, "CHUNK", 2)
    monkeypatch.setattr(retention, "CHUNKS_A_PASS", 2)
    for n in range(5):
        rejection(f"old-{n}", START - datetime.timedelta(days=100))
    assert retention.remove(90, 90, START).rejections == 4
    assert retention.remove(90, 90, START).rejections == 1
    assert Rejection.select().where(Rejection.erased.is_null()).count() == 0
