"""waitress's event loop with every socket registered once: a turn costs what changed, not every connection.

waitress's poll2 asks each of the N connections readable() and writable() and
registers it in a new poll set on every turn, then polls them all; a turn costs
O(N) in Python however little happened. EventLoop keeps one epoll (poll where
there is none) registration per socket and asks a channel again only when
something may have changed its answer: an event of its own, a task thread
waking the loop for it (ChannelMap.changed), its socket arriving or leaving
(the map notes both), or the server's maintenance (the caller marks those).
What each answer means is waitress's: readable() watches for input and urgent
data, writable() for room to send (never on a listening socket), and events are
dispatched by wasyncore.readwrite.
"""

import collections
import contextlib
import select
from collections.abc import Callable

from directory_api.vendored_internals import fileno, wasyncore

READ = select.POLLIN | select.POLLPRI
WRITE = select.POLLOUT


class ChannelMap(dict):
    """A wasyncore socket map that notes which file descriptors came or went since the loop last looked.

    `changed` holds the channels whose readable()/writable() something outside the loop may have
    changed; any thread may append to it (a deque's append is atomic). `leaving` is called with
    a file descriptor as it leaves the map, which wasyncore does before closing the socket.
    """

    def __init__(self) -> None:
        super().__init__()
        self.touched: set[int] = set()
        self.changed: collections.deque = collections.deque()
        self.leaving: Callable[[int], None] | None = None

    def __setitem__(self, fd, channel):
        super().__setitem__(fd, channel)
        self.touched.add(fd)

    def __delitem__(self, fd):
        super().__delitem__(fd)
        if self.leaving is not None:
            self.leaving(fd)
        self.touched.add(fd)


class EventLoop:
    """Turns of the loop over a ChannelMap.

    `every_turn` are asked on each turn (a listener whose readable() keeps time).
    """

    def __init__(self, channels: ChannelMap, every_turn=()):
        self.channels = channels
        self.every_turn = list(every_turn)
        self.poller: select.epoll | select.poll
        if hasattr(select, "epoll"):
            self.poller, self.timeout_unit = select.epoll(), 1.0
        else:  # pragma: no cover (not Linux)
            self.poller, self.timeout_unit = select.poll(), 1000.0
        self.watched: dict[int, int] = {}  # fd -> the events it is registered for (never 0)
        channels.touched.update(channels)
        # Out of epoll while the number still names the socket: once closed it cannot be taken out, and
        # epoll keeps reporting a socket another process still holds (a listener shared by --processes).
        channels.leaving = self._forget

    def turn(self, timeout: float) -> None:
        """Register what changed, wait at most `timeout` seconds for events, and dispatch them."""
        self._update()
        events = self.poller.poll(timeout * self.timeout_unit)
        channels, touched = self.channels, self.channels.touched
        for fd, flags in events:
            channel = channels.get(fd)
            if channel is None or fd in touched:
                continue  # closed during this turn, its number perhaps reused already: the event was the old socket's
            wasyncore.readwrite(channel, flags)
            if channels.get(fd) is channel and fd not in touched:
                self._watch(fd, channel)

    def close(self) -> None:
        self.channels.leaving = None
        if hasattr(self.poller, "close"):  # epoll holds a file descriptor; poll (not Linux) has no close
            self.poller.close()
        self.watched.clear()

    def _update(self) -> None:
        channels = self.channels
        # First the sockets that came or went: a number in `watched` may belong to a closed socket.
        touched = channels.touched
        for _ in range(len(touched)):  # what _watch adds back waits for the next turn
            fd = touched.pop()
            self._forget(fd, surely=True)
            channel = channels.get(fd)
            if channel is not None:
                self._watch(fd, channel)
        for channel in self.every_turn:
            self._recheck(channel)
        changed = channels.changed
        while changed:
            self._recheck(changed.popleft())

    def _forget(self, fd: int, surely: bool = False) -> None:
        """Take `fd` out of the poller; `surely`: even if the books say it is not in."""
        if self.watched.pop(fd, 0) or surely:
            # Closed already, which took it out of epoll if no other process holds it.
            with contextlib.suppress(OSError, KeyError):
                self.poller.unregister(fd)

    def _recheck(self, channel) -> None:
        fd = fileno(channel)
        if fd is not None and self.channels.get(fd) is channel and fd not in self.channels.touched:
            self._watch(fd, channel)

    def _watch(self, fd: int, channel) -> None:
        """Register `fd` for what `channel` wants now, touching the poller only when that differs."""
        events = 0
        if channel.readable():
            events |= READ
        if channel.writable() and not channel.accepting:
            events |= WRITE
        registered = self.watched.get(fd, 0)
        if events == registered:
            return
        try:
            if not events:
                # Unregistered, as poll2 leaves it out: a hang-up is noticed when the channel next wants to read
                # or write.
                del self.watched[fd]
                self.poller.unregister(fd)
                return
            if registered:
                self.poller.modify(fd, events)
            else:
                self.poller.register(fd, events)
        except (OSError, KeyError):
            # A task thread closed the channel meanwhile (a failed send): the next turn starts this number afresh.
            self.watched.pop(fd, None)
            self.channels.touched.add(fd)
            return
        self.watched[fd] = events
