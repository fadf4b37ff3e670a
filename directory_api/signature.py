"""Request signatures: the Hawk header sigauth writes, the 2016 scheme, and the nonce store.

sigauth's RequestSigner signs the path with its query string (no scheme or
host), the method, the raw body and the Content-Type ("text/plain" when there
is none); `verify` checks exactly those against the request as received.
"""

import contextlib
import dataclasses
import hashlib
import hmac
import logging
import os
import pprint
import sqlite3
import threading
import time
import weakref
from urllib.parse import quote, urlsplit

import mohawk
from mohawk.exc import AlreadyProcessed, HawkFail, MissingAuthorization, TokenExpired

from directory_api import tempdirs, vendored_internals

log = logging.getLogger(__name__)


class _PprintWhenDebugging:
    """Stands in for `pprint` inside mohawk, which pretty-prints its debug messages even when
    DEBUG is off: about 300 µs a request, most of a verification. Formats only when they are shown."""

    _mohawk_log = logging.getLogger("mohawk")

    @classmethod
    def pformat(cls, value, *args, **kwargs) -> str:
        if cls._mohawk_log.isEnabledFor(logging.DEBUG):
            return pprint.pformat(value, *args, **kwargs)
        return "(not formatted)"


vendored_internals.replace_pprint(_PprintWhenDebugging)


def _strings_match(ours: bytes | str, theirs: bytes | str) -> bool:
    """mohawk's constant-time comparison of MACs and hashes, done in C by hmac: mohawk's own walks
    both strings through Python generators, 7 µs a call and two calls a request."""
    return hmac.compare_digest(_as_bytes(ours), _as_bytes(theirs))


def _as_bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8")


vendored_internals.replace_strings_match(_strings_match)

HEADER_ENVIRON_KEY = "HTTP_X_SIGNATURE"
ALGORITHM = "sha256"
SKEW_SECONDS = 60
DEFAULT_CONTENT_TYPE = "text/plain"  # what sigauth signs when the request has no Content-Type

MISSING = "Authentication credentials were not provided: sign the request (X-Signature header)."
INCORRECT = "Incorrect authentication credentials."
STALE = "The signature has expired: its timestamp is more than 60 seconds from the server's clock."
REPLAYED = "The signature has been used before: sign every request afresh."

# Temporary nonce stores live in directories named so, in the temporary directory (see tempdirs).
TEMPORARY_PREFIX = "directory-api-nonces-"
STORE_FILE = "nonces.sqlite3"
# Marks the store of a serve, which outlives it: the next serve on the machine takes its entries over.
HANDED_ON = "handed-on"


class SignatureError(Exception):
    """The request is not signed as it must be; the message is safe to show the client."""

    def __init__(self, detail: str, www_authenticate: str = "Hawk"):
        super().__init__(detail)
        self.detail = detail
        self.www_authenticate = www_authenticate


@dataclasses.dataclass(frozen=True)
class SignedRequest:
    """What a signature covers, taken from the request as received."""

    method: str
    path: str  # path plus "?query" when there is a query, as the client wrote it
    content_type: str
    body: bytes
    header: str | None


def signed_request(environ: dict, body: bytes) -> SignedRequest:
    """The parts of a WSGI request that a signature covers."""
    return SignedRequest(
        method=environ["REQUEST_METHOD"],
        path=_path_with_query(environ),
        # Some servers (wsgiref) give "" for a missing header; sigauth signs "text/plain" then.
        content_type=environ.get("CONTENT_TYPE") or DEFAULT_CONTENT_TYPE,
        body=body,
        header=environ.get(HEADER_ENVIRON_KEY),
    )


def _path_with_query(environ: dict) -> str:
    # waitress passes the request target untouched: the bytes the client signed.
    raw = environ.get("REQUEST_URI")
    if raw:
        parts = urlsplit(raw)
        return parts.path + (f"?{parts.query}" if parts.query else "")
    # Other servers: re-quote the decoded path, as Django's get_full_path does for sigauth.
    path = (environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")).encode("latin-1")
    query = environ.get("QUERY_STRING", "")
    return quote(path, safe="/:@&+$,-_.!~*'()") + (f"?{query}" if query else "")


class NonceStore:
    """Signed requests seen within the clock skew, in a SQLite file every process of a `serve` shares.

    A request is remembered by its MAC (with its timestamp, for expiry): the
    MAC covers everything signed (timestamp, nonce, method, path, body hash),
    so a replay repeats it whatever it changes outside, the Hawk id included,
    while two different requests never share one. An entry is kept only
    until its timestamp is too old to pass the skew check anyway.
    """

    PRUNE_EVERY_SECONDS = 1.0
    _owner: int | None = None  # the lock of a handed-on store's directory (tempdirs)

    def __init__(self, path: str, *, clock=time.time):
        self.path = path
        self._clock = clock
        self._local = threading.local()
        self._next_prune = 0.0
        self._prune_lock = threading.Lock()
        self._prepare_file()

    def _prepare_file(self) -> None:
        # Once, before any request: threads racing to switch a new file to WAL
        # get SQLITE_BUSY at once, without waiting on the busy timeout.
        with contextlib.closing(sqlite3.connect(self.path, timeout=5, isolation_level=None)) as connection:
            # WAL lets processes read while one writes; it is a property of the file, kept from now on.
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute(
                "CREATE TABLE IF NOT EXISTS nonce (key TEXT PRIMARY KEY, expires INTEGER NOT NULL) WITHOUT ROWID"
            )

    @classmethod
    def handed_on(cls, parent: str | None = None, **kwargs) -> "NonceStore":
        """serve's store: a new one holding what the stores of the serves that ended on this machine still hold.

        A signature stays valid for SKEW_SECONDS, longer than a restart takes (a deploy, a crash, a
        supervisor's restart): a store that died with its serve would let a captured request in
        again. So serve's store outlives it (its directory is kept at exit), and the next serve
        copies the entries that have not expired yet, then removes the old directory. A store
        still in use (another serve running) is left alone.
        """
        directory, owner = tempdirs.make(TEMPORARY_PREFIX, parent)
        open(os.path.join(directory, HANDED_ON), "w").close()
        store = cls(os.path.join(directory, STORE_FILE), **kwargs)
        store._owner = owner  # held, never closed: the lock goes with the last process of this serve
        taken = tempdirs.remove_abandoned(TEMPORARY_PREFIX, parent, before_removing=store._take_over)
        if taken:
            log.info("took over the signatures seen by %d ended serve(s)", len(taken))
        return store

    def _take_over(self, directory: str) -> bool:
        """Copy the unexpired entries of an ended serve's store in `directory`; True: remove it."""
        if not _handed_on(directory):
            return True  # a temporary store: nothing to hand on
        previous = os.path.join(directory, STORE_FILE)
        try:
            with contextlib.closing(sqlite3.connect(self.path, timeout=5, isolation_level=None)) as connection:
                connection.execute("ATTACH DATABASE ? AS previous", (previous,))
                connection.execute("INSERT OR IGNORE INTO nonce SELECT key, expires FROM previous.nonce "
                                   "WHERE expires >= ?", (int(self._clock()),))
                connection.execute("DETACH DATABASE previous")
        except sqlite3.DatabaseError as error:
            log.warning("%s: unreadable (%s); the signatures it saw are not taken over", previous, error)
        return True

    @classmethod
    def temporary(cls, **kwargs) -> "NonceStore":
        """A store in a new private directory, removed when the store is garbage collected or at exit.

        A process killed outright (SIGKILL) cannot remove its directory, so the directories of stores
        whose processes are all gone are removed first.
        """
        removed = remove_abandoned_stores()
        if removed:
            plural = "y" if len(removed) == 1 else "ies"
            log.info("removed %d nonce director%s left by killed processes", len(removed), plural)
        directory, owner = tempdirs.make(TEMPORARY_PREFIX)
        store = cls(os.path.join(directory, STORE_FILE), **kwargs)
        weakref.finalize(store, tempdirs.remove, directory, owner)
        return store

    def _connection(self) -> sqlite3.Connection:
        # One connection per thread (sqlite3 connections are not shared across threads)
        # and per process: one opened before a fork is never used after it.
        connection = getattr(self._local, "connection", None)
        if connection is None or self._local.pid != os.getpid():
            connection = sqlite3.connect(self.path, timeout=5, isolation_level=None)
            # Nonces need not survive a crash, so no fsync.
            connection.execute("PRAGMA synchronous=OFF")
            self._local.connection = connection
            self._local.pid = os.getpid()
        return connection

    def seen(self, mac: str, timestamp: str) -> bool:
        """Record the request's MAC; True when it was recorded before (a replay). Stale timestamps are not kept."""
        now = self._clock()
        try:
            ts = int(timestamp)
        except ValueError:
            return False  # mohawk refuses the timestamp next
        if abs(ts - now) > SKEW_SECONDS:
            return False  # mohawk refuses it as expired next; nothing worth remembering
        connection = self._connection()
        self._prune(connection, now)
        key = f"{mac}\n{ts}"
        try:
            connection.execute("INSERT INTO nonce (key, expires) VALUES (?, ?)", (key, ts + SKEW_SECONDS + 1))
        except sqlite3.IntegrityError:
            return True
        return False

    def _prune(self, connection: sqlite3.Connection, now: float) -> None:
        if now < self._next_prune or not self._prune_lock.acquire(blocking=False):
            return
        try:
            self._next_prune = now + self.PRUNE_EVERY_SECONDS
            connection.execute("DELETE FROM nonce WHERE expires < ?", (int(now),))
        finally:
            self._prune_lock.release()


def remove_abandoned_stores(parent: str | None = None) -> list[str]:
    """Remove temporary store directories in `parent` (the temporary directory) whose processes are all gone.

    An ended serve's store is left for the next serve, which takes it over (NonceStore.handed_on).
    """
    return tempdirs.remove_abandoned(TEMPORARY_PREFIX, parent, before_removing=lambda path: not _handed_on(path))


def _handed_on(directory: str) -> bool:
    """Whether a store directory is a serve's, kept for the next serve."""
    return os.path.exists(os.path.join(directory, HANDED_ON))


@dataclasses.dataclass(frozen=True)
class Verifier:
    """Checks request signatures against UI_SECRET."""

    secret: str
    nonces: NonceStore
    legacy: bool = False

    def verify(self, request: SignedRequest) -> None:
        """Return when the request is signed with the secret; raise SignatureError otherwise."""
        if not request.header:
            raise SignatureError(MISSING)
        if self.legacy and not request.header.lstrip().lower().startswith("hawk "):
            self._verify_legacy(request, request.header)
        else:
            self._verify_hawk(request, request.header)

    def _verify_hawk(self, request: SignedRequest, header: str) -> None:
        try:
            # mohawk offers seen_nonce only the Hawk id, which no MAC covers, besides nonce and timestamp:
            # the replay key is the MAC itself, which mohawk has checked before it asks.
            mohawk.Receiver(
                self._credentials,
                header,
                request.path,
                request.method,
                content=request.body,
                content_type=request.content_type,
                seen_nonce=lambda _sender_id, _nonce, timestamp: self.nonces.seen(_mac(header), timestamp),
                timestamp_skew_in_seconds=SKEW_SECONDS,
            )
        except TokenExpired as error:
            # Its WWW-Authenticate carries the server's time, signed, so a client can correct its clock.
            raise SignatureError(STALE, error.www_authenticate) from None
        except AlreadyProcessed:
            raise SignatureError(REPLAYED) from None
        except MissingAuthorization:
            raise SignatureError(MISSING) from None
        except (HawkFail, ValueError, KeyError) as error:
            log.info("refused a request signature: %s", error)
            raise SignatureError(INCORRECT) from None

    def _credentials(self, sender_id: str) -> dict:
        # Every sender shares UI_SECRET; the sender id only names the client.
        return {"id": sender_id, "key": self.secret, "algorithm": ALGORITHM}

    def _verify_legacy(self, request: SignedRequest, header: str) -> None:
        expected = legacy_signature(self.secret, request.path, request.body)
        if not hmac.compare_digest(expected.encode("ascii"), header.strip().lower().encode("utf-8")):
            raise SignatureError(INCORRECT)


def _mac(header: str) -> str:
    """The mac attribute of a Hawk header that mohawk has parsed and accepted.

    Read with mohawk's own pattern, which matches such a header's attributes
    one after another, but without a second full parse (a tenth of the app's
    CPU a request).
    """
    _, _, attributes = header.partition(" ")
    for attribute in vendored_internals.header_attributes(attributes):
        if attribute["key"] == "mac":
            return attribute["value"]
    return ""


def legacy_signature(secret: str, path_with_query: str, body: bytes) -> str:
    """The 2016 scheme: hex(sha256(path_with_query + body + UI_SECRET))."""
    return hashlib.sha256(path_with_query.encode("utf-8") + body + secret.encode("utf-8")).hexdigest()
