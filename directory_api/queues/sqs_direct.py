"""The three SQS calls every enrolment makes, signed by botocore, sent over kept connections without boto3's call path.

Each enrolment is one share of a SendMessageBatch (serve), of a ReceiveMessage
and of a DeleteMessageBatch (work). Through a boto3 client each call costs about
1 ms of CPU on a 2-core benchmark machine (event hooks, parameter validation,
urllib3's pool, response shapes): a quarter of serve's CPU a request, half of
work's (py-spy, issue 16). These calls are small JSON documents, so DirectClient
sends them itself: the request is signed with botocore's SigV4Auth and the
credentials the boto3 session found (refreshed as boto3 refreshes them), goes
to the client's own endpoint (region, FIPS, dual-stack, SQS_ENDPOINT_URL), and
an error comes back as the botocore ClientError boto3 would raise, codes
included. Every other call, and every call when a proxy applies to the
endpoint, goes through boto3 unchanged.

Hooks registered on `before-send` (moto's in-process mock among them) still
answer in place of the network, as they do for boto3.
"""

import http.client
import json
import os
import random
import socket
import ssl
import threading
import time
import urllib.parse
import urllib.request
import weakref
from collections.abc import Callable, Mapping

import botocore
import botocore.auth
import botocore.awsrequest
import botocore.exceptions
import botocore.httpsession

# As CLIENT_CONFIG in sqs.py: fail fast on a dead endpoint, wait out the longest long poll.
CONNECT_TIMEOUT = 2.0
READ_TIMEOUT = 30.0
# As boto3's standard retry mode with total_max_attempts=2: one more try for a 5xx, throttling
# or a broken connection, after a random pause of up to a second.
RETRY_PAUSE = 1.0
RETRIED_STATUSES = (500, 502, 503, 504)
THROTTLING_CODES = ("Throttling", "ThrottlingException", "RequestThrottled", "RequestThrottledException",
                    "AWS.SimpleQueueService.RequestThrottled")
# A kept connection the server closed while idle fails like this on its next request,
# before the request was read: sent again at once on a new connection.
STALE_CONNECTION = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, ConnectionAbortedError)
IDLE_CONNECTIONS = 32  # as max_pool_connections in sqs.py
USER_AGENT = f"directory-api Botocore/{botocore.__version__} (direct SQS calls)"

# An answer's headers: http.client's, or those a before-send hook (moto) answered with.
Headers = Mapping[str, str] | http.client.HTTPMessage

# boto3 method name -> SQS JSON protocol operation
OPERATIONS = {
    "send_message_batch": "SendMessageBatch",
    "receive_message": "ReceiveMessage",
    "delete_message_batch": "DeleteMessageBatch",
}


class DirectClient:
    """A boto3 SQS client whose send_message_batch, receive_message and delete_message_batch skip boto3's call path.

    Everything else (get_queue_url, exceptions, meta, ...) is the boto3 client's.
    """

    def __init__(self, client, credentials, *, ca_bundle: str | None = None, rng: Callable[[], float] = random.random):
        self.boto3_client = client
        self._credentials = credentials
        self._region = client.meta.region_name
        self._endpoint = urllib.parse.urlsplit(client.meta.endpoint_url)
        self._path = self._endpoint.path or "/"  # an SQS-compatible endpoint's URL may have a path
        self._url = f"{self._endpoint.scheme}://{self._endpoint.netloc}{self._path}"
        self._events = client.meta.events
        self._rng = rng
        self._tls = (ssl.create_default_context(cafile=botocore.httpsession.get_cert_path(ca_bundle or True))
                     if self._endpoint.scheme == "https" else None)
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self.direct = not proxied(self._endpoint)
        _made.add(self)
        for method, operation in OPERATIONS.items():
            setattr(self, method, self._caller(method, operation))

    def __getattr__(self, name: str):
        return getattr(self.boto3_client, name)

    def _caller(self, method: str, operation: str) -> Callable[..., dict]:
        if not self.direct:
            return getattr(self.boto3_client, method)
        return lambda **params: self.call(operation, params)

    def call(self, operation: str, params: Mapping) -> dict:
        """One SQS call: its parsed answer, or the botocore exception boto3 would raise."""
        body = json.dumps(params, separators=(",", ":")).encode()
        try:
            return self._attempt(operation, body)
        except botocore.exceptions.ClientError as error:
            if not retried(error):
                raise
        except (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError):
            pass
        time.sleep(self._rng() * RETRY_PAUSE)
        return self._attempt(operation, body)

    def _attempt(self, operation: str, body: bytes) -> dict:
        request = self._signed(operation, body)
        _, hooked = self._events.emit_until_response(f"before-send.sqs.{operation}", request=request)
        if hooked is not None:
            status, headers, content = hooked.status_code, hooked.headers, hooked.content
        else:
            status, headers, content = self._send(request)
        if status == 200:
            return json.loads(content) if content else {}
        response = error_response(status, headers, content)
        error = response["Error"]
        raise self.boto3_client.exceptions.from_code(error.get("QueryErrorCode") or error["Code"])(response, operation)

    def _signed(self, operation: str, body: bytes) -> botocore.awsrequest.AWSPreparedRequest:
        credentials = self._credentials.get_frozen_credentials() if self._credentials else None
        if credentials is None:
            raise botocore.exceptions.NoCredentialsError()
        request = botocore.awsrequest.AWSRequest(method="POST", url=self._url, data=body, headers={
            "Content-Type": "application/x-amz-json-1.0",
            "X-Amz-Target": f"AmazonSQS.{operation}",
            # SQS then answers errors with the codes of its query protocol, as boto3 asks it to.
            "x-amzn-query-mode": "true",
            "User-Agent": USER_AGENT,
        })
        botocore.auth.SigV4Auth(credentials, "sqs", self._region).add_auth(request)
        return request.prepare()

    def _send(self, request: botocore.awsrequest.AWSPreparedRequest) -> tuple[int, Headers, bytes]:
        """Status, headers and body of the answer, over a kept connection (or a new one when a kept one went stale)."""
        headers = dict(request.headers.items())
        while True:
            connection, kept = self._connection()
            try:
                connection.request("POST", self._path, request.body, headers)
                response = connection.getresponse()
                content = response.read()
            except STALE_CONNECTION as error:
                connection.close()
                if kept:
                    continue
                raise botocore.exceptions.ConnectionClosedError(endpoint_url=self._url, error=error) from error
            except TimeoutError as error:
                connection.close()
                raise botocore.exceptions.ReadTimeoutError(endpoint_url=self._url, error=error) from error
            except (OSError, http.client.HTTPException) as error:
                connection.close()
                raise botocore.exceptions.HTTPClientError(error=error) from error
            if response.will_close:
                connection.close()
            else:
                self._keep(connection)
            return response.status, response.headers, content

    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        """A kept connection (True), else a new one (False)."""
        with self._lock:
            if self._idle:
                return self._idle.pop(), True
        host, port = self._endpoint.hostname, self._endpoint.port
        if self._tls is not None:
            connection: http.client.HTTPConnection = http.client.HTTPSConnection(
                host, port, timeout=CONNECT_TIMEOUT, context=self._tls)
        else:
            connection = http.client.HTTPConnection(host, port, timeout=CONNECT_TIMEOUT)
        try:
            connection.connect()
        except OSError as error:
            connection.close()
            raise botocore.exceptions.EndpointConnectionError(endpoint_url=self._url, error=error) from error
        connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connection.sock.settimeout(READ_TIMEOUT)
        return connection, False

    def _forget_connections(self) -> None:
        self._idle = []  # dropped, not closed: the parent process still talks on them
        self._lock = threading.Lock()  # in case another thread of the parent held it at the fork

    def _keep(self, connection: http.client.HTTPConnection) -> None:
        with self._lock:
            if len(self._idle) < IDLE_CONNECTIONS:
                self._idle.append(connection)
                return
        connection.close()


# Every DirectClient of this process, so that a forked child starts with no kept connection of its parent's.
_made: "weakref.WeakSet[DirectClient]" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for client in list(_made):
        client._forget_connections()


os.register_at_fork(after_in_child=_after_fork_in_child)


def proxied(endpoint: urllib.parse.SplitResult) -> bool:
    """Whether a proxy (HTTPS_PROXY, HTTP_PROXY, not bypassed by NO_PROXY) applies to the endpoint, as for botocore."""
    return endpoint.scheme in urllib.request.getproxies() and not urllib.request.proxy_bypass(endpoint.hostname or "")


def retried(error: botocore.exceptions.ClientError) -> bool:
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return status in RETRIED_STATUSES or error.response.get("Error", {}).get("Code") in THROTTLING_CODES


def error_response(status: int, headers: Headers, content: bytes) -> dict:
    """What boto3 makes of an SQS JSON error answer (ClientError.response): the query protocol's code where given."""
    try:
        body = json.loads(content) if content else {}
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    code = str(body.get("__type") or status).split(":", 1)[0].rsplit("#", 1)[-1]
    query_code, _, kind = (headers.get("x-amzn-query-error") or "").partition(";")
    error = {"Code": query_code or code, "Message": body.get("message", body.get("Message", ""))}
    if query_code:
        error.update(QueryErrorCode=code, Type=kind)
    metadata = {"HTTPStatusCode": status, "HTTPHeaders": {name.lower(): value for name, value in headers.items()}}
    if headers.get("x-amzn-requestid"):
        metadata["RequestId"] = headers["x-amzn-requestid"]
    return {"Error": error, "ResponseMetadata": metadata}
