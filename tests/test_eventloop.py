"""eventloop: waitress's socket map polled with one registration per socket.

Each is asked again only when it may have changed.
"""

import socket

import pytest

from directory_api.eventloop import ChannelMap, EventLoop
from directory_api.vendored_internals import fileno, wasyncore


class Channel(wasyncore.dispatcher):
    """One end of a socket pair that wants what the test says, and counts what it is asked and sent."""

    def __init__(self, sock, channels, *, read=True, write=False):
        super().__init__(sock, map=channels)
        self.wants_read, self.wants_write = read, write
        self.asked = self.reads = self.writes = 0

    def readable(self):
        self.asked += 1
        return self.wants_read

    def writable(self):
        return self.wants_write

    def handle_read(self):
        self.reads += 1
        self.recv(4096)

    def handle_write(self):
        self.writes += 1


@pytest.fixture
def channels():
    made = ChannelMap()
    yield made
    wasyncore.close_all(made)


@pytest.fixture
def loop(channels):
    made = EventLoop(channels)
    yield made
    made.close()


def pair(channels, **wants) -> tuple[Channel, socket.socket]:
    """A Channel in `channels` and the peer socket that talks to it."""
    ours, theirs = socket.socketpair()
    return Channel(ours, channels, **wants), theirs


def test_input_is_dispatched_to_the_channel_that_wants_to_read(channels, loop):
    channel, peer = pair(channels)
    peer.sendall(b"x")
    loop.turn(1)
    assert channel.reads == 1
    peer.close()


def test_a_turn_with_nothing_changed_asks_no_channel_again(channels, loop):
    # Regression: waitress's poll2 asked every connection readable() and writable() on every turn.
    idle = [pair(channels) for _ in range(100)]
    loop.turn(0)
    assert all(channel.asked == 1 for channel, _ in idle)
    loop.turn(0)
    loop.turn(0)
    assert all(channel.asked == 1 for channel, _ in idle)
    for _, peer in idle:
        peer.close()


def test_a_channel_marked_changed_is_asked_again_and_gets_the_events_it_now_wants(channels, loop):
    channel, peer = pair(channels, read=False)
    loop.turn(0)
    channel.wants_write = True
    loop.turn(0)
    assert channel.writes == 0  # nobody said it changed
    channels.changed.append(channel)
    loop.turn(0)
    assert channel.writes == 1
    peer.close()


class WritesOnce(Channel):
    def handle_write(self):
        super().handle_write()
        self.wants_write = False


def test_a_channel_that_stops_wanting_to_write_gets_no_more_write_events(channels, loop):
    ours, peer = socket.socketpair()
    channel = WritesOnce(ours, channels, read=False, write=True)
    for _ in range(3):
        loop.turn(0)
    assert channel.writes == 1
    peer.close()


def test_a_socket_closed_and_its_number_reused_within_a_turn_is_watched_afresh(channels, loop):
    old, old_peer = pair(channels)
    loop.turn(0)
    number = fileno(old)
    old.close()
    old_peer.close()
    new, new_peer = pair(channels)
    if fileno(new) != number:
        pytest.skip("the kernel did not reuse the number")
    new_peer.sendall(b"x")
    loop.turn(1)
    assert new.reads == 1
    new_peer.close()


def test_the_channels_given_as_every_turn_are_asked_on_each_turn(channels):
    listener, peer = pair(channels)
    loop = EventLoop(channels, every_turn=[listener])
    try:
        for _ in range(3):
            loop.turn(0)
    finally:
        loop.close()
    assert listener.asked == 4  # on arrival, then once a turn
    peer.close()


def test_a_closed_channel_is_forgotten(channels, loop):
    channel, peer = pair(channels)
    loop.turn(0)
    channel.close()
    peer.close()
    loop.turn(0)
    assert loop.watched == {}


class Listener(wasyncore.dispatcher):
    def readable(self):
        return True


def test_a_listener_another_process_still_holds_raises_no_events_once_closed_here(channels, loop):
    # Regression: epoll keeps a closed socket registered while another process (a sibling of
    # serve --processes N) holds it, and a closed number can no longer be unregistered: the
    # draining loop was woken at once, every turn, by connections meant for the siblings.
    sock = socket.create_server(("127.0.0.1", 0))
    address = sock.getsockname()
    sibling = sock.dup()
    listener = Listener(sock, map=channels)
    listener.accepting = True
    loop.turn(0)
    listener.close()
    with socket.create_connection(address):
        loop.turn(0)
        assert loop.poller.poll(0) == []
    sibling.close()


def test_a_channel_closed_behind_the_loops_back_is_registered_afresh_on_the_next_turn(channels, loop):
    channel, peer = pair(channels, read=False)
    loop.turn(0)
    channel.wants_read = True
    loop.poller.register(fileno(channel), 1)  # as if registered by another thread meanwhile
    channels.changed.append(channel)
    loop.turn(0)  # the loop's own register fails: no exception out of the loop
    peer.sendall(b"x")
    loop.turn(1)
    assert channel.reads == 1
    peer.close()
