"""Failed logins to the ops console, slowed down per client address, in bounded memory.

A few failures are free (a mistyped password); after them each failure makes
the address wait twice as long as the last, up to MAX_WAIT_SECONDS, during
which every request from it is refused unchecked, so a guesser gets about
one try a MAX_WAIT_SECONDS. The cap keeps the real operator's wait short
when they share an address with a guesser (a NAT, a proxy in front of
serve). An address is forgotten after a success, after FORGET_SECONDS
without a failure, or when MAX_ADDRESSES others failed since (the oldest
goes first). IPv6 addresses count by their /64, the block one client holds.
Each serve process keeps its own count.
"""

import collections
import dataclasses
import ipaddress
import threading
import time
from collections.abc import Callable

FREE_FAILURES = 5
FIRST_WAIT_SECONDS = 1.0
MAX_WAIT_SECONDS = 30.0
FORGET_SECONDS = 15 * 60
MAX_ADDRESSES = 10_000


@dataclasses.dataclass
class _Failures:
    count: int
    last: float  # when the last one came (the clock's time)
    until: float  # no try before this


def client_key(address: str) -> str:
    """What failures are counted under: the address, or its /64 for IPv6 (one client holds a whole /64)."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.ip_network(f"{parsed}/64", strict=False))
    return str(parsed)


def wait_after(failures: int) -> float:
    """How long an address waits after its `failures`-th failure in a row."""
    if failures <= FREE_FAILURES:
        return 0.0
    return min(MAX_WAIT_SECONDS, FIRST_WAIT_SECONDS * 2 ** min(failures - FREE_FAILURES - 1, 32))


class LoginThrottle:
    """Failed logins by client address: how long one must wait before its next try is checked."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, max_addresses: int = MAX_ADDRESSES):
        self.clock = clock
        self.max_addresses = max_addresses
        self._failures: collections.OrderedDict[str, _Failures] = collections.OrderedDict()  # oldest first
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._failures)

    def wait(self, address: str) -> float:
        """Seconds before `address` may try again (0: now)."""
        now = self.clock()
        with self._lock:
            failures = self._failures.get(client_key(address))
            return max(0.0, failures.until - now) if failures else 0.0

    def failed(self, address: str) -> tuple[int, float]:
        """Count a failure of `address`: (failures in a row, seconds it must now wait)."""
        now = self.clock()
        key = client_key(address)
        with self._lock:
            self._forget_old(now)
            failures = self._failures.pop(key, None) or _Failures(0, now, now)
            failures.count += 1
            failures.last = now
            wait = wait_after(failures.count)
            failures.until = now + wait
            self._failures[key] = failures  # now the newest
            while len(self._failures) > self.max_addresses:
                self._failures.popitem(last=False)
            return failures.count, wait

    def succeeded(self, address: str) -> None:
        with self._lock:
            self._failures.pop(client_key(address), None)

    def _forget_old(self, now: float) -> None:
        # Oldest first, so the first one still recent ends the sweep.
        while self._failures:
            oldest = next(iter(self._failures.values()))
            if now - oldest.last < FORGET_SECONDS:
                return
            self._failures.popitem(last=False)
