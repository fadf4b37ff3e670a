"""A clock the test moves by hand, for threads that would otherwise be waited on with real sleeps."""

import threading


class ManualClock:
    """A monotonic clock and a sleep that move only when the test says: `advance` instead of real sleeps.

    A thread given `clock` and `clock.sleep` runs one step each time the test
    advances past its wake-up time; `advance` returns once each thread it woke
    sleeps again, so what the step did is done. Plain `clock.now = ...` moves it too.
    """

    def __init__(self, start: float = 1000.0, settle: float = 5.0):
        self.now = start
        self.settle = settle
        self._changed = threading.Condition()
        self._asleep = 0
        self._woken = 0
        self._wakes: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self._changed:
            wake = self.now + seconds
            self._wakes.append(wake)
            self._asleep += 1
            self._changed.notify_all()
            self._changed.wait_for(lambda: self.now >= wake)
            self._wakes.remove(wake)
            self._asleep -= 1
            self._woken += 1
            self._changed.notify_all()

    def wait_for_sleepers(self, count: int = 1) -> None:
        """Block until `count` threads sleep on this clock."""
        with self._changed:
            assert self._changed.wait_for(lambda: self._asleep >= count, self.settle), "no thread sleeps on the clock"

    def advance(self, seconds: float) -> None:
        """Move time forward by `seconds`, one sleeper's wake-up at a time, letting each step run."""
        target = self.now + seconds
        with self._changed:
            while due := [wake for wake in self._wakes if wake <= target]:
                asleep, woken = self._asleep, self._woken
                self.now = min(due)
                self._changed.notify_all()
                # The woken thread runs its step and sleeps again.
                stepped = lambda woken=woken, asleep=asleep: self._woken > woken and self._asleep >= asleep  # noqa: E731
                assert self._changed.wait_for(stepped, self.settle), "a thread woken by the clock did not sleep again"
            self.now = target
