"""Crash: a worker killed with SIGKILL mid-stream loses nothing and saves nothing twice."""

import time

import pytest

from tests.e2e.harness import assert_saved_exactly_once, saved_message_ids, service_env, wait_all_saved
from tests.factories import enrolment_bodies
from tests.support.processes import start_work
from tests.support.waits import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

MESSAGES = 300
VISIBILITY_TIMEOUT = 2
# While the kill is aimed, every call to SQS is held back this long, so a batch
# just committed is still waiting for its DeleteMessageBatch when the kill lands.
SLOW_QUEUE = 1.0


def test_kill_9_between_save_and_delete_then_restart_saves_each_message_exactly_once(
    cli, base_env, pg, sqs, moto_endpoint, queues, processes, proxy_to
):
    sent = sqs.send_batch(queues[0], enrolment_bodies(MESSAGES))
    proxy = proxy_to(moto_endpoint)
    env = service_env(
        base_env, database_url=pg, sqs_endpoint=f"http://{proxy.address}", queues=queues,
        SQS_VISIBILITY_TIMEOUT=VISIBILITY_TIMEOUT,
    )
    worker = start_work(processes, cli, env)
    wait_until(lambda: len(saved_message_ids(pg)) >= 30, 60, "the first 30 enrolments", interval=0.02)
    proxy.delay = SLOW_QUEUE
    before = len(saved_message_ids(pg))
    wait_until(lambda: len(saved_message_ids(pg)) > before, 30, "the next batch to be committed", interval=0.01)

    worker.kill()
    # Bytes the dead worker left in the proxy must die with it, as they would with the machine.
    proxy.down()
    time.sleep(SLOW_QUEUE + 0.5)
    proxy.delay = 0.0
    proxy.up()

    saved = len(saved_message_ids(pg))
    assert saved < MESSAGES, "the worker finished before the kill: nothing was proved"
    assert saved + sqs.total(queues[0]) > MESSAGES, "the kill did not land between a save and its delete"
    start_work(processes, cli, env, name="work-restarted")
    wait_all_saved(pg, sqs, queues[0], sent, timeout=90, processes=processes)
    # Drained means nothing is in flight either, so nothing can come back after the visibility timeout.
    assert_saved_exactly_once(pg, sent)
    assert sqs.total(queues[1]) == 0, "a message saved before the crash came back and was set aside as invalid"
