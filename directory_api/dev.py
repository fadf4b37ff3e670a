"""`dev`: serve and work in one process on the embedded defaults, so a newcomer starts one command.

The HTTP API runs in a thread, the worker in the main thread (signals are
delivered there); both share one enrolment queue object, so on the database
queue a POST wakes the waiting worker at once. One Ctrl-C stops both.
"""

import logging
import threading

from directory_api import access, metrics, server, web
from directory_api.queues import open_enrolment_queues
from directory_api.settings import Settings
from directory_api.signature import NonceStore
from directory_api.worker import stoppable, working

log = logging.getLogger(__name__)

HTTP_THREADS = 4
# The worker stops within 2 s; the API gets this long to finish requests in flight.
DRAIN_SECONDS = 2.0


def dev(settings: Settings, *, host: str, port: int) -> None:
    """Serve and work until SIGINT/SIGTERM; blocks."""
    with stoppable() as shutdown:
        server.open_database(settings)
        enrolments, invalid = open_enrolment_queues(settings)
        app = web.make_app(
            settings, enrolments, nonce_store=NonceStore.temporary(),
            database_requests=HTTP_THREADS // 2,
        )
        # One registry for both: /metrics on the one port shows the requests and the worker's messages.
        registry = metrics.Registry()
        http = server.create_server(access.observed(app, registry), host=host, port=port, threads=HTTP_THREADS)
        stopping = threading.Event()
        serving = threading.Thread(
            target=server.run, args=(http, stopping), kwargs={"drain_seconds": DRAIN_SECONDS}, name="serve"
        )
        serving.start()
        address = http.socket.getsockname()
        log.info("dev: serving on http://%s:%s and working queue %s (%s backend); Ctrl-C stops both",
                 address[0], address[1], settings.enrolment_queue, settings.queue_backend)
        try:
            work_metrics = metrics.WorkMetrics(registry)
            with working(settings, enrolments, invalid, shutdown=shutdown, metrics=work_metrics) as (worker, _):
                worker.run()
        finally:
            stopping.set()
            serving.join(DRAIN_SECONDS + 2)
    log.info("dev: stopped")
