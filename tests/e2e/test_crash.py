"""Crash: a worker killed with SIGKILL mid-stream loses nothing and saves nothing twice."""

import pytest

from tests.e2e.harness import (  # noqa: F401 - fixtures
    assert_saved_exactly_once,
    base_env,
    bodies,
    cli,
    moto_endpoint,
    pg,
    processes,
    queues,
    saved_message_ids,
    service_env,
    sqs,
    start_work,
    wait_all_saved,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

MESSAGES = 300
VISIBILITY_TIMEOUT = 2


def test_kill_9_mid_stream_then_restart_saves_each_message_exactly_once(
    cli, base_env, pg, sqs, moto_endpoint, queues, processes
):
    sent = sqs.send_batch(queues[0], bodies(MESSAGES))
    env = service_env(
        base_env, database_url=pg, sqs_endpoint=moto_endpoint, queues=queues,
        SQS_VISIBILITY_TIMEOUT=VISIBILITY_TIMEOUT,
    )
    worker = start_work(processes, cli, env)
    wait_until(lambda: len(saved_message_ids(pg)) >= 30, 60, "the worker to save its first 30 enrolments",
               interval=0.02)
    worker.kill()
    assert len(saved_message_ids(pg)) < MESSAGES, "the worker finished before the kill: nothing was proved"

    start_work(processes, cli, env, name="work-restarted")
    wait_all_saved(pg, sqs, queues[0], sent, timeout=90, processes=processes)

    # Drained means nothing is in flight either, so nothing can come back after the visibility timeout.
    assert_saved_exactly_once(pg, sent)
    assert sqs.total(queues[1]) == 0, "a good message was set aside as invalid"
