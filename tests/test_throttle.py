"""throttle: failed console logins slowed down per client address, in bounded memory."""

from directory_api import throttle
from directory_api.throttle import FREE_FAILURES, MAX_WAIT_SECONDS, LoginThrottle


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_few_failures_are_free_then_each_doubles_the_wait_up_to_the_cap():
    logins = LoginThrottle(Clock())
    waits = [logins.failed("192.0.2.1")[1] for _ in range(FREE_FAILURES + 8)]
    assert waits[:FREE_FAILURES] == [0.0] * FREE_FAILURES
    assert waits[FREE_FAILURES:] == [1.0, 2.0, 4.0, 8.0, 16.0, MAX_WAIT_SECONDS, MAX_WAIT_SECONDS, MAX_WAIT_SECONDS]


def test_the_wait_runs_down_with_the_clock_and_concerns_only_that_address():
    clock = Clock()
    logins = LoginThrottle(clock)
    for _ in range(FREE_FAILURES + 2):
        logins.failed("192.0.2.1")
    assert logins.wait("192.0.2.1") == 2.0
    assert logins.wait("192.0.2.2") == 0.0
    clock.now += 1.5
    assert logins.wait("192.0.2.1") == 0.5
    clock.now += 0.5
    assert logins.wait("192.0.2.1") == 0.0


def test_a_success_forgets_the_address():
    logins = LoginThrottle(Clock())
    for _ in range(FREE_FAILURES):
        logins.failed("192.0.2.1")
    logins.succeeded("192.0.2.1")
    assert logins.failed("192.0.2.1") == (1, 0.0)


def test_an_address_without_a_failure_for_a_while_is_forgotten():
    clock = Clock()
    logins = LoginThrottle(clock)
    for _ in range(FREE_FAILURES + 1):
        logins.failed("192.0.2.1")
    clock.now += throttle.FORGET_SECONDS
    assert logins.failed("192.0.2.2") == (1, 0.0)
    assert len(logins) == 1
    assert logins.failed("192.0.2.1") == (1, 0.0)


def test_memory_is_bounded_by_forgetting_the_oldest_address():
    logins = LoginThrottle(Clock(), max_addresses=100)
    for n in range(1000):
        logins.failed(f"10.0.{n // 256}.{n % 256}")
    assert len(logins) == 100
    assert logins.failed("10.0.0.0") == (1, 0.0)  # long gone
    assert logins.failed("10.0.3.231")[0] == 2  # the newest, still counted


def test_an_ipv6_client_counts_by_its_64_and_a_mapped_ipv4_as_ipv4():
    assert throttle.client_key("2001:db8:1:2:aaaa::1") == throttle.client_key("2001:db8:1:2:bbbb::2") == \
        "2001:db8:1:2::/64"
    assert throttle.client_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert throttle.client_key("not an address") == "not an address"
