"""waitress hardened against hostile clients: the server, channel, parser and tasks serve runs in each process.

GuardedServer and the classes it uses always accept, making room by closing
the quietest connections past CONNECTION_LIMIT, cut off requests that arrive
too slowly, close connections whose framing is ambiguous, and answer
waitress's own errors as JSON. Each override of waitress reaches into its
internals through vendored_internals.py, which names the test that proves it.
`run` drives one such server until a stop, then drains it.
"""

import errno
import heapq
import json
import logging
import resource
import socket
import threading
import time

from directory_api import access, logs, web
from directory_api.errors import UserError
from directory_api.eventloop import ChannelMap, EventLoop
from directory_api.vendored_internals import (
    Adjustments,
    ErrorTask,
    HTTPChannel,
    HTTPRequestParser,
    ParsingError,
    TcpWSGIServer,
    ThreadedTaskDispatcher,
    WSGITask,
    socket_map,
    tcp_server,
    wasyncore,
)

log = logging.getLogger(__name__)

# Under Docker's default 10 s between SIGTERM and SIGKILL.
DRAIN_SECONDS = 8.0
# How soon the loop notices a stop; a signal handler only sets a flag (see run()).
LOOP_SECONDS = 0.25
DRAIN_LOOP_SECONDS = 0.02
BACKLOG = 1024

# Connections one process holds at most. Past it the longest-quiet connections that are not being
# answered are closed to make room, so idle or dribbling clients can never lock a real request out
# (waitress itself stops accepting at its limit, 100 by default). Every connection costs a little
# work on each turn of the event loop, hence a bound at all.
CONNECTION_LIMIT = 4096
# At the limit, this fraction of it is closed in one sweep: a flood of new connections then costs
# one sweep over the open ones per batch, not one per connection.
EVICT_FRACTION = 16
# File descriptors a process keeps for the database, the queue, the nonce file and logs.
FD_RESERVE = 64
# A request's headers must arrive within HEADER_SECONDS of its first byte, and all of it within
# REQUEST_SECONDS (256 KiB in 60 s is 4.4 KB/s): a client sending a byte now and then is cut off.
HEADER_SECONDS = 10
REQUEST_SECONDS = 60
# An idle keep-alive connection is closed after this long: longer than a load balancer's own idle
# timeout (60 s on AWS ALB), so that it is the balancer that closes first and never reuses a connection
# this end is closing.
KEEPALIVE_SECONDS = 75
# Connections accepted at most in one turn of the event loop.
ACCEPTS_PER_TURN = 256
# How often the deadlines above are enforced.
CLEANUP_SECONDS = 1
# A keep-alive connection is closed after answering this many requests: the client opens a new one,
# which the least busy process of a `serve --processes N` is the likeliest to accept, so a small
# pool of long-lived connections cannot keep all its traffic on one process.
REQUESTS_PER_CONNECTION = 100

# The channel a task thread is answering, so that the loop knows whom the thread wakes it for.
_answering = threading.local()


class JsonErrorTask(ErrorTask):
    """waitress's own error answers (malformed request, body too large) as JSON, like the app's."""

    def execute(self):
        error = self.request.error
        message = web.TOO_LARGE if error.code == 413 else f"{error.reason}: {error.body}"
        body = json.dumps({"detail": message}).encode("utf-8")
        self.status = f"{error.code} {error.reason}"
        self.response_headers.append(("Content-Type", web.JSON_TYPE))
        # A request refused while its head was parsed may have no headers, method or path yet.
        request = self.request
        request_id = logs.request_id_for(getattr(request, "headers", {}).get("X_REQUEST_ID"))
        self.response_headers.append((logs.REQUEST_ID_HEADER, request_id))
        access.log_access(getattr(request, "command", None) or "-", getattr(request, "path", None) or "-",
                          error.code, time.time() - self.start_time, request_id)
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class StrictRequestParser(HTTPRequestParser):
    """waitress's parser, refusing ambiguous framing (RFC 9112 6.1) and remembering when the request began."""

    def __init__(self, adj):
        super().__init__(adj)
        self.started = time.monotonic()

    def parse_header(self, header_plus):
        super().parse_header(header_plus)
        # waitress reads an HTTP/1.1 body by Transfer-Encoding (and drops that header) even when a
        # Content-Length says otherwise, and keeps the connection: a proxy that went by the length
        # would have a second request smuggled in. HTTP/1.0 knows no Transfer-Encoding at all.
        # The 400 closes the connection (JsonErrorTask) and drops whatever came after on it.
        # The head as received decides, not the headers waitress keeps: it drops Transfer-Encoding,
        # and its unreleased main drops Content-Length too when the body is chunked.
        framing = framing_headers(header_plus)
        if b"transfer-encoding" in framing and (b"content-length" in framing or self.version == "1.0"):
            raise ParsingError(
                "the request's length is ambiguous (Transfer-Encoding with Content-Length or on HTTP/1.0)"
            )

    def overdue(self, now: float) -> bool:
        """True when the request has taken longer to arrive than a real client ever takes."""
        return now - self.started > (REQUEST_SECONDS if self.headers_finished else HEADER_SECONDS)


def framing_headers(header_plus: bytes) -> set[bytes]:
    """Which of Content-Length and Transfer-Encoding a request's head (request line and headers) carries."""
    lowered = header_plus.lower()
    if b"transfer-encoding" not in lowered:
        return set()  # nearly every request: nothing ambiguous, no need to look closer
    names = {line.partition(b":")[0] for line in lowered.split(b"\r\n")[1:] if line[:1] not in (b" ", b"\t")}
    return names & {b"content-length", b"transfer-encoding"}


class RecyclingTask(WSGITask):
    """waitress's task for the app, closing the connection after its REQUESTS_PER_CONNECTION-th answer."""

    def build_response_header(self):
        if self.channel.answered >= REQUESTS_PER_CONNECTION:
            self.set_close_on_finish()
        return super().build_response_header()


class JsonErrorChannel(HTTPChannel):
    error_task_class = JsonErrorTask
    task_class = RecyclingTask
    parser_class = StrictRequestParser
    answered = 0
    # Set when the task answering woke the loop for this channel: its output may need the loop's help.
    woke_loop = False

    def service(self):
        """Answer the next request (in a task thread)."""
        self.answered += 1
        self.woke_loop = False
        _answering.channel = self
        try:
            super().service()
        finally:
            _answering.channel = None

    def writable(self):
        # waitress says writable whenever output is buffered, also while the task answering is sending
        # it itself (write_soon flushes at once, holding the buffer's lock): handle_write then cannot
        # send, and the loop spins on an always-writable socket, starving that very task of the GIL.
        # A task that leaves output the socket would not take wakes the loop (see woke_loop).
        if self.will_close or self.close_when_flushed:
            return True
        return bool(self.total_outbufs_len) and (not self.requests or self.woke_loop)

    def send_continue(self):
        # waitress sends "100 Continue" even for a request it has already refused (a declared body
        # over the limit), and then reads the body it refused: answer at once instead, reading no further.
        if self.request.completed:
            self.request.expect_continue = False
            return
        super().send_continue()

    def answering(self) -> bool:
        """True while a request of this connection is being answered, or its answer is still being sent."""
        return bool(self.requests or self.total_outbufs_len)


class GuardedServer(TcpWSGIServer):
    """waitress's TCP server that always accepts: at the connection limit it makes room instead of waiting.

    Also enforces the header and request deadlines, which waitress lacks (its idle timeout is reset by
    every byte received).
    """

    channel_class = JsonErrorChannel
    overflowing = False

    def pull_trigger(self):
        """Wake the loop (from a task thread), telling it which channel to look at again."""
        channel = getattr(_answering, "channel", None)
        if channel is not None:
            channel.woke_loop = True
            socket_map(self).changed.append(channel)
        super().pull_trigger()

    def readable(self):
        now = time.time()
        if now >= self.next_channel_cleanup:
            self.next_channel_cleanup = now + self.adj.cleanup_interval
            self.maintenance(now)
        return self.accepting

    def handle_accept(self):
        # waitress accepts one connection a turn of the loop, and a turn costs more the more connections
        # are open: at a few thousand, a burst of new ones would wait in the backlog for seconds.
        for _ in range(ACCEPTS_PER_TURN):
            if len(self.active_channels) >= self.adj.connection_limit:
                self._make_room()
            try:
                accepted = self.accept()
                if accepted is None:
                    return  # none waiting
                sock, address = accepted
                self.set_socket_options(sock)  # TCP_NODELAY
            except OSError as error:
                # As waitress: a client gone before its options could be set must not stop the server.
                log.warning("could not accept a connection: %s", error)
                if error.errno in (errno.EMFILE, errno.ENFILE):
                    self._make_room()  # out of files after all: the next turn accepts into the room made
                return
            if len(self.active_channels) >= self.adj.connection_limit:
                # Every connection is being answered: one more would only push the process past its file limit.
                sock.close()
                continue
            self.channel_class(self, sock, self.fix_addr(address), self.adj, map=socket_map(self))

    def _make_room(self) -> None:
        quiet = [channel for channel in self.active_channels.values() if not channel.answering()]
        count = max(1, self.adj.connection_limit // EVICT_FRACTION)
        if not self.overflowing:
            log.warning(
                "%d connections open, the limit of this process: closing the %d quietest (of %d not being answered)",
                len(self.active_channels), min(count, len(quiet)), len(quiet),
            )
            self.overflowing = True
        for channel in heapq.nsmallest(count, quiet, key=lambda channel: channel.last_activity):
            channel.handle_close()

    def maintenance(self, now):
        super().maintenance(now)  # closes connections idle past channel_timeout
        if len(self.active_channels) < self.adj.connection_limit // 2:
            self.overflowing = False
        monotonic_now = time.monotonic()
        for channel in self.active_channels.values():
            if channel.request is not None and not channel.answering() and channel.request.overdue(monotonic_now):
                channel.will_close = True
        # Connections closing above (and waitress's idle ones) now want to be written to: the loop must ask them.
        socket_map(self).changed.extend(self.active_channels.values())


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port; UserError naming the option when it cannot be had."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError as error:
        raise UserError(f"--host {host} --port {port}: cannot listen there: {error.strerror or error}") from None
    return sock


def create_server(app, *, host: str = "127.0.0.1", port: int = 0, threads: int = 8, sock: socket.socket | None = None):
    """A waitress server for `app` on `sock` (or a new socket on host:port), not yet running.

    Run it with run(server, stopping) for a graceful stop, or server.run() / server.close().
    """
    sock = sock or bind_socket(host, port)
    adjustments = Adjustments(
        sockets=[sock],
        threads=threads,
        ident="directory-api",
        # waitress refuses a longer declared body before reading it; the app checks the rest.
        max_request_body_size=web.MAX_BODY_BYTES + 1,
        asyncore_use_poll=True,  # select() cannot watch more than 1,024 connections
        backlog=BACKLOG,
        connection_limit=connection_limit(resource.getrlimit(resource.RLIMIT_NOFILE)[0], threads),
        channel_timeout=KEEPALIVE_SECONDS,
        cleanup_interval=CLEANUP_SECONDS,
    )
    dispatcher = ThreadedTaskDispatcher()
    dispatcher.set_thread_count(threads)
    return tcp_server(GuardedServer, app, ChannelMap(), sock, dispatcher, adjustments)


def connection_limit(open_files: int, threads: int) -> int:
    """CONNECTION_LIMIT, or fewer when the process may not open that many files."""
    if open_files == resource.RLIM_INFINITY:
        return CONNECTION_LIMIT
    return max(1, min(CONNECTION_LIMIT, open_files - FD_RESERVE - 4 * threads))


def channels_of(server) -> ChannelMap:
    """The ChannelMap create_server made `server` with (waitress keeps it as the server's socket map)."""
    channels = socket_map(server)
    if not isinstance(channels, ChannelMap):
        raise TypeError("not a server create_server made: its socket map is not a ChannelMap")
    return channels


def run(server, stopping: threading.Event, *, drain_seconds: float = DRAIN_SECONDS) -> None:
    """Serve until `stopping` is set; then stop accepting, finish the requests in flight and close."""
    # The listener is asked every turn: its readable() runs the maintenance when due.
    loop = EventLoop(channels_of(server), every_turn=[server])
    try:
        while not stopping.is_set():
            loop.turn(LOOP_SECONDS)
        # The listening socket goes, the trigger stays: it wakes the loop when a response is ready.
        wasyncore.dispatcher.close(server)
        unfinished = _drain(loop, time.monotonic() + drain_seconds)
        if unfinished:
            log.warning("stopped with %d request(s) unfinished after %.0f s", unfinished, drain_seconds)
        server.task_dispatcher.shutdown(cancel_pending=True, timeout=1)
        wasyncore.close_all(socket_map(server))
    finally:
        loop.close()


def _drain(loop: EventLoop, deadline: float) -> int:
    """Run the loop until no connection has a request in flight; return how many still do at the deadline."""
    channels = loop.channels
    while True:
        busy = 0
        for channel in list(channels.values()):
            if not isinstance(channel, HTTPChannel):
                continue
            if channel.requests or channel.total_outbufs_len or (channel.request and channel.request.headers_finished):
                busy += 1
            else:
                # An idle keep-alive connection, or one whose request has not even sent its headers
                # (a client dribbling bytes would otherwise hold the stop to its deadline).
                channel.handle_close()
        if not busy or time.monotonic() >= deadline:
            return busy
        loop.turn(DRAIN_LOOP_SECONDS)
