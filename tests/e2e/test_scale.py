"""Scale: several workers draining one queue together save every message once."""

import pytest

from tests.e2e.harness import assert_saved_exactly_once, service_env, wait_all_saved
from tests.factories import enrolment_bodies
from tests.support.processes import start_work

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

MESSAGES = 1000
WORKERS = 3


def test_three_workers_on_one_queue_save_each_of_1000_messages_once(
    cli, base_env, pg, sqs, moto_endpoint, queues, processes
):
    sent = sqs.send_batch(queues[0], enrolment_bodies(MESSAGES))
    env = service_env(base_env, database_url=pg, sqs_endpoint=moto_endpoint, queues=queues)
    workers = [start_work(processes, cli, env, name=f"work{n}") for n in range(WORKERS)]

    wait_all_saved(pg, sqs, queues[0], sent, timeout=180, processes=processes)

    assert_saved_exactly_once(pg, sent)
    assert sqs.total(queues[1]) == 0, "a good message was set aside as invalid"
    assert all(worker.alive() for worker in workers), processes.logs()
