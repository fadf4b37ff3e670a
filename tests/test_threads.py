"""threads: the stop flag, calls in the background, lanes, retrying until done, visibility keep-alives."""

import threading
import time

import pytest

from directory_api.queues import Message, QueueUnavailable
from directory_api.threads import Background, Keepalive, Lane, Shutdown, StopNow, retry_until_done


def test_an_abandoned_receive_hands_back_its_messages_when_it_returns():
    handed_back = []
    answer = threading.Event()
    pending = Background(lambda: answer.wait(5) and ["message"], handed_back.extend)
    pending.abandon()
    answer.set()
    pending.done.wait(5)
    time.sleep(0.05)
    assert handed_back == ["message"]


class ExtendingQueue:
    def __init__(self):
        self.extended = []

    def extend(self, message, seconds):
        self.extended.append((message, seconds))


def test_the_visibility_of_messages_whose_handling_runs_long_is_extended():
    queue, message = ExtendingQueue(), Message(id="m-1", body="{}", receipt="r-1")
    with Keepalive(queue, visibility_timeout=1).watch([message]):
        time.sleep(1.3)
    assert queue.extended[:2] == [(message, 1), (message, 1)]


def test_a_batch_handled_quickly_is_never_extended():
    queue, message = ExtendingQueue(), Message(id="m-1", body="{}", receipt="r-1")
    keepalive = Keepalive(queue, visibility_timeout=1)
    with keepalive.watch([message]):
        pass
    time.sleep(1.3)
    assert queue.extended == []


def test_a_second_signal_stops_at_once():
    shutdown = Shutdown()
    shutdown.on_signal(15, None)
    with pytest.raises(StopNow):
        shutdown.on_signal(15, None)


def test_a_background_call_carries_whatever_it_returns_or_raises():
    returned = Background(lambda: {"any": "type"})
    raised = Background(lambda: 1 / 0)
    assert returned.done.wait(5) and raised.done.wait(5)
    assert (returned.result, returned.error) == ({"any": "type"}, None)
    assert isinstance(raised.error, ZeroDivisionError)


def test_an_abandoned_call_that_raised_hands_nothing_over():
    handed_back = []
    failing = Background(lambda: 1 / 0, handed_back.append)
    failing.done.wait(5)
    failing.abandon()
    assert handed_back == []


def test_calls_on_a_lane_run_one_after_another_on_one_thread():
    lane, threads = Lane("test"), []
    calls = [Background(lambda: threads.append(threading.get_ident()), lane=lane) for _ in range(3)]
    assert all(call.done.wait(5) for call in calls)
    assert len(set(threads)) == 1 and threading.get_ident() not in threads


def test_retry_until_done_tries_again_after_a_failure_it_may_retry():
    attempts, retries = [], []

    def flaky():
        attempts.append(1)
        if len(attempts) < 3:
            raise QueueUnavailable("not yet")

    done = retry_until_done(flaky, retry_on=(QueueUnavailable,), shutdown=Shutdown(), delay=lambda attempt: 0.0,
                            on_retry=lambda error, seconds: retries.append(str(error)))
    assert done is True
    assert retries == ["not yet", "not yet"]


def test_retry_until_done_raises_a_failure_it_may_not_retry():
    with pytest.raises(ZeroDivisionError):
        retry_until_done(lambda: 1 / 0, retry_on=(QueueUnavailable,), shutdown=Shutdown(), delay=lambda attempt: 0.0,
                         on_retry=lambda error, seconds: None)


def test_retry_until_done_returns_false_when_told_to_stop_while_the_call_hangs():
    shutdown = Shutdown()
    threading.Timer(0.2, lambda: setattr(shutdown, "requested", True)).start()
    assert retry_until_done(lambda: time.sleep(10), retry_on=(QueueUnavailable,), shutdown=shutdown,
                            delay=lambda attempt: 0.0, on_retry=lambda error, seconds: None) is False
