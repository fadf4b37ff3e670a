"""How long to wait before trying again: doubling, capped, jittered (the worker and the e-mail sender share it)."""

import random
from collections.abc import Callable


def backoff(attempt: int, rng: Callable[[], float] = random.random, *, first: float = 0.5,
            longest: float = 30.0) -> float:
    """Seconds to wait before try `attempt` (1, 2, ...).

    Doubling from `first` to `longest`, jittered to half-to-all of it.
    """
    # The exponent is capped: past about a thousand tries (a day-long outage) 2 ** n overflows a float.
    ceiling = min(longest, first * 2 ** min(attempt - 1, 64))
    return ceiling / 2 + rng() * ceiling / 2
