"""`serve`: the HTTP API on waitress, in one process or several sharing one socket.

A stop (SIGTERM, SIGINT) closes the listening socket, lets the requests in
flight finish (at most DRAIN_SECONDS) and exits 0. With --processes N the
parent binds the socket and forks N children, each a whole server on the
inherited socket; the parent forwards signals and waits.
"""

import json
import logging
import os
import signal
import socket
import sys
import threading
import time

import peewee
import waitress
from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.task import ErrorTask

from directory_api import access, db, logs, metrics, migrations, queues, web
from directory_api.errors import UserError, first_line
from directory_api.queues.batching import GroupSender
from directory_api.settings import Settings, mask_url
from directory_api.signature import NonceStore

log = logging.getLogger(__name__)

# Under Docker's default 10 s between SIGTERM and SIGKILL.
DRAIN_SECONDS = 8.0
# How soon the loop notices a stop; a signal handler only sets a flag (see run()).
LOOP_SECONDS = 0.25
DRAIN_LOOP_SECONDS = 0.02
BACKLOG = 1024


class JsonErrorTask(ErrorTask):
    """waitress's own error answers (malformed request, body too large) as JSON, like the app's."""

    def execute(self):
        error = self.request.error
        if error.code == 413:
            message = web.TOO_LARGE
        else:
            message = f"{error.reason}: {error.body}"
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


class JsonErrorChannel(HTTPChannel):
    error_task_class = JsonErrorTask


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
    server = waitress.create_server(
        app,
        sockets=[sock or bind_socket(host, port)],
        threads=threads,
        ident="directory-api",
        # waitress refuses a longer declared body before reading it; the app checks the rest.
        max_request_body_size=web.MAX_BODY_BYTES + 1,
        asyncore_use_poll=True,
        backlog=BACKLOG,
    )
    server.channel_class = JsonErrorChannel
    return server


def run(server, stopping: threading.Event, *, drain_seconds: float = DRAIN_SECONDS) -> None:
    """Serve until `stopping` is set; then stop accepting, finish the requests in flight and close."""
    while not stopping.is_set():
        wasyncore.loop(timeout=LOOP_SECONDS, map=server._map, use_poll=True, count=1)
    # The listening socket goes, the trigger stays: it wakes the loop when a response is ready.
    wasyncore.dispatcher.close(server)
    unfinished = _drain(server._map, time.monotonic() + drain_seconds)
    if unfinished:
        log.warning("stopped with %d request(s) unfinished after %.0f s", unfinished, drain_seconds)
    server.task_dispatcher.shutdown(cancel_pending=True, timeout=1)
    wasyncore.close_all(server._map)


def _drain(channels: dict, deadline: float) -> int:
    """Run the loop until no connection has a request in flight; return how many still do at the deadline."""
    while True:
        busy = 0
        for channel in list(channels.values()):
            if not isinstance(channel, HTTPChannel):
                continue
            if channel.requests or channel.total_outbufs_len or channel.request is not None:
                busy += 1
            else:
                channel.handle_close()  # an idle keep-alive connection: nothing in flight to finish
        if not busy or time.monotonic() >= deadline:
            return busy
        wasyncore.loop(timeout=DRAIN_LOOP_SECONDS, map=channels, use_poll=True, count=1)


def serve(
    settings: Settings, *, host: str, port: int, threads: int, processes: int = 1, observe: bool = True
) -> None:
    """Run the HTTP API until SIGTERM or SIGINT; blocks.

    `observe` off leaves out request ids, access lines and /metrics: only to measure what they cost.
    """
    database = open_database(settings)
    sock = bind_socket(host, port)
    address = sock.getsockname()
    log.info(
        "serving on http://%s:%s (%d process%s x %d threads, queue backend %s)",
        address[0], address[1], processes, "" if processes == 1 else "es", threads, settings.queue_backend,
    )
    # One nonce file for every process of this serve, so a replay to a sibling process is caught too;
    # made before any fork, so the file is prepared once and each process opens its own connections.
    # Its directory goes with the store (children end with os._exit, which runs no finalizer).
    nonces = NonceStore.temporary()
    try:
        if processes == 1:
            serve_process(settings, database, sock, threads, nonces, metrics.Registry() if observe else None)
        else:
            # One metrics directory for the children, made before they fork: /metrics sums them all.
            with metrics.shared_between_processes() as directory:
                log.debug("metrics of the %d processes are summed in %s", processes, directory)
                code = run_children(
                    processes,
                    lambda: serve_process(
                        settings, database, sock, threads, nonces, metrics.Registry(directory) if observe else None
                    ),
                    sock,
                    on_exit=lambda pid: metrics.mark_process_dead(directory, pid),
                )
            if code:
                raise UserError(f"a serve process exited with code {code} (see its log above); all stopped")
    finally:
        sock.close()
    log.info("stopped")


def open_database(settings: Settings) -> peewee.Database:
    """Bind the models and check the schema when the database answers.

    On SQS, serve accepts enrolments without the database, so one that does
    not answer is only logged; the database queue cannot work without it.
    """
    database = db.bind(settings.database_url)
    try:
        database.connect()
    except peewee.OperationalError as error:
        reason = first_line(error)
        if settings.queue_backend == "database":
            raise UserError(f"DATABASE_URL: cannot connect to {mask_url(settings.database_url)}: {reason}") from None
        log.warning("the database does not answer (%s); enrolments are still accepted onto SQS", reason)
        return database
    try:
        migrations.ensure_current(database, auto_migrate=settings.debug)
    except peewee.PeeweeException as error:
        reason = first_line(error)
        raise UserError(f"DATABASE_URL: cannot check the schema: {reason}") from None
    finally:
        # Each process (and thread) opens its own connection when it first needs one.
        database.close()
    return database


def serve_process(
    settings: Settings,
    database: peewee.Database,
    sock: socket.socket,
    threads: int,
    nonces: NonceStore,
    registry: metrics.Registry | None = None,
) -> None:
    """One process of serve: the queue, the app and waitress on `sock`, until a stop signal.

    With a `registry`, every request gets an id, an access line and its metrics, and /metrics answers.
    """
    queue = queues.open_queue(settings, settings.enrolment_queue)
    try:
        queue.ensure_exists()
    except queues.QueueUnavailable as error:
        log.warning("the enrolment queue does not answer (%s); it is created when it first does", error)
    # Concurrent requests share SendMessageBatch calls: one round trip for up to ten enrolments.
    app = web.make_app(settings, GroupSender(queue), database=database, nonce_store=nonces)
    if registry is not None:
        app = access.observed(app, registry)
    server = create_server(app, threads=threads, sock=sock)
    stopping = threading.Event()
    on_stop_signal(lambda: stopping.set())
    run(server, stopping)


def on_stop_signal(stop) -> None:
    def handler(signum, frame):
        log.info("%s: stopping; requests in flight finish first", signal.Signals(signum).name)
        stop()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def run_children(count: int, child_main, sock: socket.socket, on_exit=lambda pid: None) -> int:
    """Fork `count` children running child_main; forward stop signals; return the first failing exit code, else 0.

    `on_exit(pid)` runs in the parent as each child is reaped.
    """
    children: set[int] = set()
    stopping = False

    def stop_children():
        nonlocal stopping
        stopping = True
        for pid in children:
            _kill(pid, signal.SIGTERM)

    on_stop_signal(stop_children)
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    for _ in range(count):
        # Blocked across the fork: a child must never run the parent's handler, which kills siblings.
        signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
        pid = os.fork()
        if pid == 0:
            for signum in stop_signals:
                signal.signal(signum, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, stop_signals)
            os._exit(_child(child_main))
        signal.pthread_sigmask(signal.SIG_UNBLOCK, stop_signals)
        children.add(pid)
    sock.close()  # the children hold the socket; when the last closes it, nothing more is accepted
    failure = 0
    while children:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        children.discard(pid)
        on_exit(pid)
        code = os.waitstatus_to_exitcode(status)
        if code and not stopping:
            # Fail whole rather than run short: the supervisor restarts serve.
            log.error("serve process %d exited with code %d; stopping the others", pid, code)
            failure = code if code > 0 else 1
            stop_children()
    return failure


def _child(child_main) -> int:
    """Run one child to its end and return its exit code; never returns into the parent's stack."""
    try:
        child_main()
        return 0
    except UserError as error:
        for line in str(error).splitlines():
            logs.error(line)
        return error.exit_code
    except BaseException:
        log.exception("serve process %d failed", os.getpid())
        return 1
    finally:
        logging.shutdown()
        sys.stderr.flush()


def _kill(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass
