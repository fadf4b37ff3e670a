"""Regression: the first requests of a fresh `serve`, arriving at once, must not fail on the nonce file.

Found by tests/e2e/test_stop.py under load: a POST answered 500 with
sqlite3.OperationalError "database is locked" raised by `PRAGMA journal_mode=WAL`
in NonceStore._connection. Each request thread opens its own connection and
switches the file to WAL; threads racing to switch a new file get SQLITE_BUSY at
once, without the busy timeout. About 2 fresh stores in 100 fail with 6 threads.
"""

import sqlite3
import threading
import time

from directory_api.signature import NonceStore

TRIALS = 300  # at ~2% a trial, the bug shows in all but ~1 run in 400
THREADS = 6


def test_threads_first_using_a_new_nonce_store_at_once_never_fail(tmp_path):
    for trial in range(TRIALS):
        store = NonceStore(str(tmp_path / f"nonces-{trial}.sqlite3"))
        start = threading.Barrier(THREADS)
        errors: list[Exception] = []

        def first_request(number: int) -> None:
            start.wait()
            try:
                store.seen("directory-ui", f"nonce-{number}", str(int(time.time())))
            except sqlite3.OperationalError as error:
                errors.append(error)

        threads = [threading.Thread(target=first_request, args=(n,)) for n in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)

        assert not errors, f"trial {trial}: {errors[0]}"
