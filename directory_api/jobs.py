"""The periodic jobs of `work`: each runs once an interval across all workers, whichever gets there first.

A job's last run is recorded in the database (job_run), so the schedule
survives restarts, and it runs inside one transaction under a lock: a
PostgreSQL advisory lock (a worker that does not get it at once leaves the
job to the one that has it), or SQLite's write lock, taken at BEGIN. The
second worker then finds the job's last run recent and skips it. A job is a
name, an interval and a function of (settings, now); the next one is a
`Job(...)` appended to `jobs_for`.
"""

import dataclasses
import datetime
import logging
import threading
import zlib
from collections.abc import Callable, Sequence

from directory_api import migrations, models, retention
from directory_api.db import DATABASE_ERRORS, drop_connection, is_postgres
from directory_api.errors import first_line
from directory_api.models import JobRun, utcnow
from directory_api.settings import Settings

log = logging.getLogger(__name__)

# pg_try_advisory_xact_lock's first key: ours ("dir-job" in ASCII); the second is the job's name as a number.
ADVISORY_LOCK_CLASS = 0x6469722D6A6F62 & 0x7FFFFFFF
# How often `work` looks for a job that is due: each job's own interval sets how often it runs.
CHECK_EVERY = 60.0


@dataclasses.dataclass(frozen=True)
class Job:
    name: str
    every: datetime.timedelta
    run: Callable[[Settings, datetime.datetime], None]


def retention_pass(settings: Settings, now: datetime.datetime) -> None:
    """Remove personal data past REJECTION_RETENTION_DAYS and EMAIL_RETENTION_DAYS; one INFO line."""
    removed = retention.remove(settings.rejection_retention_days, settings.email_retention_days, now)
    log.info("retention: removed the personal data of %d rejection(s) older than %s days and the recipient of "
             "%d e-mail record(s) older than %s days", removed.rejections,
             settings.rejection_retention_days or "(never: 0)", removed.emails,
             settings.email_retention_days or "(never: 0)",
             extra={"job": "retention", "rejections": removed.rejections, "emails": removed.emails})


def jobs_for(settings: Settings) -> list[Job]:
    """The periodic jobs `work` runs."""
    return [Job("retention", datetime.timedelta(hours=1), retention_pass)]


def run_due(jobs: Sequence[Job], settings: Settings, clock: Callable[[], datetime.datetime] = utcnow) -> list[str]:
    """Run each job whose interval has passed since its last run by any worker; the names of those run here.

    A job that raises is rolled back (its last run too) and passes the error on.
    """
    ran = []
    for job in jobs:
        with models.database.atomic():
            if not _locked(job.name):
                continue  # another worker is running it now
            last = JobRun.get_or_none(JobRun.name == job.name)
            now = clock()
            if last is not None and now - last.last_run < job.every:
                continue
            job.run(settings, now)
            (JobRun.insert(name=job.name, last_run=now)
             .on_conflict(conflict_target=[JobRun.name], update={JobRun.last_run: now}).execute())
            ran.append(job.name)
    return ran


def _locked(name: str) -> bool:
    """Take this job's lock for the transaction: False when another worker holds it (PostgreSQL)."""
    if not is_postgres(models.database):
        return True  # the transaction's BEGIN IMMEDIATE holds SQLite's one write lock already
    key = zlib.crc32(name.encode()) & 0x7FFFFFFF
    cursor = models.database.execute_sql("SELECT pg_try_advisory_xact_lock(%s, %s)", (ADVISORY_LOCK_CLASS, key))
    return bool(cursor.fetchone()[0])


class Scheduler:
    """Runs the due jobs on a daemon thread of its own, every CHECK_EVERY seconds, until `stopped` is set."""

    def __init__(self, jobs: Sequence[Job], settings: Settings, *, check_every: float = CHECK_EVERY,
                 clock: Callable[[], datetime.datetime] = utcnow):
        self.jobs, self.settings, self.check_every, self.clock = jobs, settings, check_every, clock
        self.stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "Scheduler":
        self._thread = threading.Thread(target=self._run, name="jobs", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopped.set()

    def check(self) -> list[str]:
        """One look for due jobs; a database that does not answer, or a job that fails, is logged and tried later."""
        try:
            if migrations.current_version(models.database) != migrations.LATEST:
                log.debug("periodic jobs: the schema is not this release's (yet); trying again later")
                return []
            return run_due(self.jobs, self.settings, self.clock)
        except DATABASE_ERRORS as error:
            log.warning("periodic jobs: the database does not answer (%s); trying again in %.0f s",
                        first_line(error), self.check_every)
        except Exception:  # a bug in one job must not end the worker
            log.exception("periodic jobs: a job failed; trying again in %.0f s", self.check_every)
        finally:
            drop_connection(models.database)
        return []

    def _run(self) -> None:
        while not self.stopped.is_set():
            self.check()
            self.stopped.wait(self.check_every)


def start(settings: Settings) -> Scheduler:
    """`work`'s periodic jobs, started on a thread of their own (a daemon: a stop never waits for it)."""
    return Scheduler(jobs_for(settings), settings).start()
