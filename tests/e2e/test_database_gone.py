"""Database gone: while PostgreSQL is unreachable the worker deletes nothing, stays up, and catches up after."""

import time

import pytest

from tests.e2e.harness import assert_saved_exactly_once, proxied_url, saved_message_ids, service_env, wait_all_saved
from tests.factories import enrolment_bodies
from tests.support.processes import start_work

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

OUTAGE = 8  # seconds: longer than the visibility timeout, so redeliveries happen during it


def test_messages_arriving_while_postgres_is_down_are_kept_and_saved_once_it_is_back(
    cli, base_env, pg, sqs, moto_endpoint, queues, processes, proxy_to
):
    proxy = proxy_to(pg)
    env = service_env(
        base_env, database_url=proxied_url(pg, proxy), sqs_endpoint=moto_endpoint, queues=queues,
        SQS_VISIBILITY_TIMEOUT=2, SQS_MAX_RECEIVE_COUNT=2,
    )
    worker = start_work(processes, cli, env)
    before = sqs.send_batch(queues[0], enrolment_bodies(20))
    wait_all_saved(pg, sqs, queues[0], before, timeout=30, processes=processes)

    proxy.down()
    during = sqs.send_batch(queues[0], enrolment_bodies(50, start=20))
    time.sleep(OUTAGE)

    assert worker.alive(), f"the worker died while the database was down:\n{worker.log()}"
    assert sqs.total(queues[0]) == len(during), "messages were deleted while the database was down"
    # A receive count of 2 would turn good messages into poison if the worker kept receiving.
    assert sqs.total(queues[1]) == 0, "good messages were set aside as invalid during the outage"
    assert sorted(saved_message_ids(pg)) == sorted(before)

    proxy.up()
    wait_all_saved(pg, sqs, queues[0], before + during, timeout=45, processes=processes)
    assert_saved_exactly_once(pg, before + during)
    assert sqs.total(queues[1]) == 0
    assert worker.alive()


def test_a_worker_started_while_postgres_is_down_waits_for_it(
    cli, base_env, pg, sqs, moto_endpoint, queues, processes, proxy_to
):
    proxy = proxy_to(pg)
    proxy.down()
    sent = sqs.send_batch(queues[0], enrolment_bodies(10))
    env = service_env(base_env, database_url=proxied_url(pg, proxy), sqs_endpoint=moto_endpoint, queues=queues)
    worker = start_work(processes, cli, env)
    time.sleep(4)
    assert worker.alive(), f"the worker gave up on an unreachable database:\n{worker.log()}"
    assert sqs.total(queues[0]) == len(sent)

    proxy.up()
    wait_all_saved(pg, sqs, queues[0], sent, timeout=45, processes=processes)
    assert_saved_exactly_once(pg, sent)
