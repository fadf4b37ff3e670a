"""`serve`: the HTTP API in one process or several sharing one socket.

A stop (SIGTERM, SIGINT) closes the listening socket, lets the requests in
flight finish (at most DRAIN_SECONDS) and exits 0. With --processes N the
parent binds the socket and forks N children, each a whole server on the
inherited socket; the parent forwards signals and waits. A child ends when
its parent does, however the parent ended (see `_end_with_parent`).

Each process runs waitress as hardened.py hardens it against hostile clients.
"""

import contextlib
import ctypes
import logging
import os
import resource
import signal
import socket
import sys
import threading
import time

from directory_api import access, db, health, logs, metrics, migrations, queues, web
from directory_api.errors import UserError, first_line
from directory_api.hardened import CONNECTION_LIMIT, FD_RESERVE, bind_socket, connection_limit, create_server, run
from directory_api.queues.batching import GroupSender
from directory_api.settings import Settings, mask_url
from directory_api.signature import NonceStore

log = logging.getLogger(__name__)

# prctl's option for the signal a process gets when its parent dies (linux/prctl.h).
PR_SET_PDEATHSIG = 1
# Where prctl is missing, how often a child checks that its parent is still there.
PARENT_WATCH_SECONDS = 1.0


def raise_open_file_limit(needed: int) -> None:
    """Raise this process's soft RLIMIT_NOFILE towards `needed`, as far as the hard limit allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < needed:
        log.warning(
            "the open file limit (ulimit -n) is %d: each serve process holds at most %d connections instead of %d",
            target, connection_limit(target, 0), CONNECTION_LIMIT,
        )


def serve(
    settings: Settings, *, host: str, port: int, threads: int, processes: int = 1, observe: bool = True
) -> None:
    """Run the HTTP API until SIGTERM or SIGINT; blocks.

    `observe` off leaves out request ids, access lines and /metrics: only to measure what they cost.
    """
    raise_open_file_limit(CONNECTION_LIMIT + FD_RESERVE + 4 * threads)
    open_database(settings)
    sock = bind_socket(host, port)
    address = sock.getsockname()
    log.info(
        "serving on http://%s:%s (%d process%s x %d threads, queue backend %s)",
        address[0], address[1], processes, "" if processes == 1 else "es", threads, settings.queue_backend,
    )
    # One nonce file for every process of this serve, so a replay to a sibling process is caught too,
    # holding what the serves before it on this machine saw, so a replay after a restart is caught
    # as well; made before any fork, so the file is prepared once and each process opens its own
    # connections. It outlives this serve, for the next (children end with os._exit anyway).
    nonces = NonceStore.handed_on()
    try:
        if processes == 1:
            serve_process(settings, sock, threads, nonces, metrics.Registry() if observe else None)
        else:
            # One metrics directory for the children, made before they fork: /metrics sums them all.
            with metrics.shared_between_processes() as directory:
                log.debug("metrics of the %d processes are summed in %s", processes, directory)
                code = run_children(
                    processes,
                    lambda: serve_process(
                        settings, sock, threads, nonces, metrics.Registry(directory) if observe else None
                    ),
                    sock,
                    on_exit=lambda pid: metrics.mark_process_dead(directory, pid),
                )
            if code:
                raise UserError(f"a serve process exited with code {code} (see its log above); all stopped")
    finally:
        sock.close()
    log.info("stopped")


def open_database(settings: Settings) -> None:
    """Bind the models (db.bind) and check the schema when the database answers.

    On SQS, serve accepts enrolments without the database, so one that does
    not answer is only logged; the database queue cannot work without it.
    """
    url = settings.required("DATABASE_URL")
    database = db.bind(url)
    try:
        database.connect()
    except db.DATABASE_ERRORS as error:
        reason = first_line(error)
        if settings.queue_backend == "database":
            raise UserError(f"DATABASE_URL: cannot connect to {mask_url(url)}: {reason}") from None
        log.warning("the database does not answer (%s); enrolments are still accepted onto SQS", reason)
        return
    try:
        migrations.ensure_current(database, auto_migrate=settings.debug)
    except db.DATABASE_ERRORS as error:
        reason = first_line(error)
        raise UserError(f"DATABASE_URL: cannot check the schema: {reason}") from None
    finally:
        # Each process (and thread) opens its own connection when it first needs one.
        database.close()


def serve_process(
    settings: Settings,
    sock: socket.socket,
    threads: int,
    nonces: NonceStore,
    registry: metrics.Registry | None = None,
) -> None:
    """One process of serve: the queue, the app and waitress on `sock`, until a stop signal.

    With a `registry`, every request gets an id, an access line and its metrics, and /metrics answers.
    """
    queue = queues.open_queue(settings, settings.required("SQS_ENROLMENT_QUEUE_NAME"))
    health.warn_if_queue_unusable(queue)  # bounded: serve starts anyway, and says why it will answer 503
    # Concurrent requests share SendMessageBatch calls: one round trip for up to ten enrolments.
    app = web.make_app(
        settings, GroupSender(queue), nonce_store=nonces, database_requests=max(1, threads // 2)
    )
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
    parent = os.getpid()
    for _ in range(count):
        # Blocked across the fork: a child must never run the parent's handler, which kills siblings.
        signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
        pid = os.fork()
        if pid == 0:
            for signum in stop_signals:
                signal.signal(signum, signal.SIG_DFL)
            _end_with_parent(parent)
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


def _end_with_parent(parent: int) -> None:
    """Have this child stopped (SIGTERM) when its parent dies, even by SIGKILL, or end it now if it already has.

    Otherwise a parent killed alone (the OOM killer; a supervisor that signals only the main PID) leaves
    its children serving for ever, holding the port the supervisor's restart then cannot bind.
    """
    if not _kernel_signals_parent_death():
        threading.Thread(target=_watch_parent, args=(parent,), name="parent-watch", daemon=True).start()
    # The parent may have died between the fork and the request above, before the kernel would tell us.
    if os.getppid() != parent:
        log.warning("serve process %d: the parent process is gone; stopping", os.getpid())
        os._exit(0)


def _kernel_signals_parent_death() -> bool:
    """Ask Linux to send SIGTERM when the parent dies (prctl PR_SET_PDEATHSIG); False where it cannot."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return False  # not Linux
    return prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) == 0


def _watch_parent(parent: int) -> None:
    """Where the kernel cannot tell us: a child whose parent died is adopted, so its parent id changes."""
    while os.getppid() == parent:
        time.sleep(PARENT_WATCH_SECONDS)
    os.kill(os.getpid(), signal.SIGTERM)


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
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)
