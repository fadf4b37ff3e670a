"""Bounded waits: a helper that gives up raises AssertionError with what it saw, so a broken promise fails."""

import threading
import time
from collections.abc import Callable


def wait_until(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.1):
    """Poll `predicate` until it returns something truthy, and return that; fail naming `what` after `timeout` s.

    A predicate that raises counts as not yet (a service still starting answers with errors);
    the last error is in the failure.
    """
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            last = predicate()
        except Exception as error:
            last = error
        else:
            if last:
                return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")
        time.sleep(interval)


def errors_in_threads(target: Callable[[], object], count: int, timeout: float = 30) -> list[Exception]:
    """Run `target` in `count` threads at once and wait up to `timeout` s for them; return what they raised."""
    errors: list[Exception] = []

    def run():
        try:
            target()
        except Exception as error:
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    assert not any(thread.is_alive() for thread in threads), f"a thread still runs after {timeout} s"
    return errors
