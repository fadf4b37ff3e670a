"""backoff: doubling, capped, jittered waits shared by the worker and the e-mail sender."""

from directory_api.backoff import backoff


def test_the_wait_doubles_from_the_first():
    assert [backoff(attempt, lambda: 1.0) for attempt in (1, 2, 3)] == [0.5, 1.0, 2.0]


def test_the_wait_is_jittered_to_half_to_all_of_it():
    assert backoff(3, lambda: 0.0) == 1.0


def test_the_wait_never_passes_the_longest():
    assert backoff(20, lambda: 1.0) == 30.0


def test_a_thousand_and_more_tries_wait_the_longest_rather_than_overflow():
    assert backoff(1025, lambda: 1.0) == 30.0
    assert backoff(10**6, lambda: 1.0, longest=60.0) == 60.0
