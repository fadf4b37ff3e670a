"""threads: the stop flag, calls in the background, lanes, retrying until done, visibility keep-alives."""

import threading
import time

import pytest

from directory_api.queues import Message, QueueUnavailable
from directory_api.threads import (
    Background,
    Failures,
    Keepalive,
    Lane,
    Shutdown,
    Stop,
    StopNow,
    beside,
    retry_until_done,
)
from tests.support.clocks import ManualClock


def test_an_abandoned_receive_hands_back_its_messages_when_it_returns():
    handed_back = []
    answer, handed = threading.Event(), threading.Event()
    pending = Background(lambda: answer.wait(5) and ["message"], lambda result: (handed_back.extend(result),
                                                                                 handed.set()))
    pending.abandon()
    answer.set()
    assert handed.wait(5)  # handed over after `done` is set, on the call's thread: wait for it, not a while
    assert handed_back == ["message"]


class ExtendingQueue:
    def __init__(self):
        self.extended = []

    def extend(self, message, seconds):
        self.extended.append((message, seconds))


def test_the_visibility_of_messages_whose_handling_runs_long_is_extended_each_half_timeout():
    queue, message, clock = ExtendingQueue(), Message(id="m-1", body="{}", receipt="r-1"), ManualClock()
    with Keepalive(queue, visibility_timeout=1, clock=clock, sleep=clock.sleep).watch([message]):
        clock.wait_for_sleepers()
        clock.advance(1.3)
    assert queue.extended == [(message, 1), (message, 1)]  # at 0.5 s and 1.0 s


def test_a_batch_handled_quickly_is_never_extended():
    queue, message, clock = ExtendingQueue(), Message(id="m-1", body="{}", receipt="r-1"), ManualClock()
    keepalive = Keepalive(queue, visibility_timeout=1, clock=clock, sleep=clock.sleep)
    with keepalive.watch([message]):
        pass
    clock.wait_for_sleepers()
    clock.advance(1.3)
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
    shutdown, released = Shutdown(), threading.Event()

    def hang():
        shutdown.request()  # the stop comes while the call hangs
        released.wait(10)

    try:
        assert retry_until_done(hang, retry_on=(QueueUnavailable,), shutdown=shutdown,
                                delay=lambda attempt: 0.0, on_retry=lambda error, seconds: None) is False
    finally:
        released.set()


def test_a_stop_runs_the_callbacks_once_on_the_thread_that_waits_not_in_the_signal_handler():
    shutdown, called = Shutdown(), []
    shutdown.when_requested(lambda: called.append(threading.get_ident()))
    shutdown.on_signal(15, None)
    assert called == []  # the handler only sets the flag
    assert not shutdown.sleep(1) and not shutdown.wait_for(threading.Event())
    assert called == [threading.get_ident()]


def test_a_stop_ends_a_pause_on_it_at_once_and_a_wake_ends_one_pause_only():
    stop = Stop()
    stop.wake()
    started = time.monotonic()
    assert stop.sleep(5)  # woken: it goes on
    threading.Timer(0.05, stop.request).start()
    assert not stop.sleep(5)
    assert time.monotonic() - started < 2


def test_failures_back_off_from_their_count_and_start_afresh_once_reset():
    failures = Failures(first=1, longest=8, rng=lambda: 1.0)
    assert failures.pause() == 1
    assert [failures.failed() for _ in range(5)] == [1, 2, 4, 8, 8]
    failures.reset()
    assert failures.pause() == 1 and failures.delay(3) == 4


class Service:
    def __init__(self):
        self.calls = []

    def start(self):
        self.calls.append("start")

    def stop(self):
        self.calls.append("stop")

    def join(self, timeout):
        self.calls.append(("join", timeout))


def test_a_service_beside_starts_when_told_stops_when_a_stop_is_seen_and_is_joined_at_the_end_of_the_block():
    shutdown, service = Shutdown(), Service()
    with beside(shutdown, service, grace=0.5) as start:
        assert service.calls == []
        start()
        shutdown.request()
        shutdown.sleep(1)
        assert service.calls == ["start", "stop"]
    assert service.calls == ["start", "stop", "stop", ("join", 0.5)]


def test_a_service_beside_never_started_is_neither_stopped_nor_joined():
    service = Service()
    with beside(Shutdown(), service, grace=0.5):
        pass
    assert service.calls == []
