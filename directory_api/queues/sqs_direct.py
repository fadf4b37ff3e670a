"""The three SQS calls every enrolment makes, signed by botocore, sent over kept connections without boto3's call path.

Each enrolment is one share of a SendMessageBatch (serve), of a ReceiveMessage
and of a DeleteMessageBatch (work). Through a boto3 client each call costs about
1 ms of CPU on a 2-core benchmark machine (parameter validation, serialising and
parsing by shape, a dozen event hooks, urllib3's pool): 25-30% of serve's CPU a
request, half of work's (py-spy, issue 16). These calls are small JSON
documents, so DirectClient sends them itself, treating botocore as the vendored
code it is: everything it can take from the boto3 client, it takes, and reads
at run time rather than copying:
  - the endpoint (region, FIPS, dual-stack, SQS_ENDPOINT_URL) and the service model;
  - credentials from the boto3 session (refreshed as boto3 refreshes them), signed by SigV4Auth;
  - connect and read timeouts, max_pool_connections and tcp_keepalive from client.meta.config;
  - retries whole: the client's own needs-retry handler decides (botocore's standard mode:
    every throttling and transient code and status, connection errors, max attempts from
    the config, the retry quota shared with the client's other calls, x-amz-retry-after,
    its backoff), as botocore's endpoint asks it;
  - errors parsed by botocore's own parser for the protocol, the client's after-call hooks
    run (SQS's query-compatible error codes among them), raised as the client's exception;
  - before-send hooks answer in place of the network, as for boto3 (moto's mock, the
    adaptive retry mode's rate limiter).
What differs from a boto3 call, and why:
  - No parameter validation or serialisation by shape: sqs.py builds these three calls
    itself, of strings and integers, which json.dumps writes as boto3's serialiser does.
  - A successful answer is json.loads'ed, not parsed by shape (most of boto3's cost on
    ReceiveMessage): keys the model does not know are kept, and it carries no
    ResponseMetadata (nothing reads it). The retry handlers are not asked about a success
    (botocore's never retry one); an error answer is parsed, retried and raised as boto3's.
  - Of the client's events only before-send, needs-retry, after-call and after-call-error
    are emitted: a tracer or botocore's Stubber hooked on before-call or
    before-parameter-build does not see these three calls. SQS_DIRECT=false sends them
    through boto3.
  - No amz-sdk-invocation-id or amz-sdk-request headers, and our own User-Agent.
  - A kept connection the server closed while idle is replaced at once, not counted as an
    attempt (urllib3 under botocore checks a pooled connection before reusing it, too).
  - Where botocore would use a proxy (HTTPS_PROXY/HTTP_PROXY for the endpoint, or the
    config's proxies) or a client certificate (client_cert), every call goes through
    boto3: DirectClient speaks only straight to the endpoint.
"""

import http.client
import json
import os
import socket
import ssl
import threading
import time
import urllib.parse
import urllib.request
import weakref
from collections.abc import Iterable, Mapping

import botocore
import botocore.auth
import botocore.awsrequest
import botocore.endpoint
import botocore.exceptions
import botocore.hooks
import botocore.parsers

from directory_api import vendored_internals

# A kept connection the server closed while idle fails like this on its next request,
# before the request was read: sent again at once on a new connection.
STALE_CONNECTION = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, ConnectionAbortedError)
USER_AGENT = f"directory-api Botocore/{botocore.__version__} (direct SQS calls)"

# An answer's headers: http.client's, or those a before-send hook (moto) answered with.
Headers = Mapping[str, str] | http.client.HTTPMessage

# The SQS JSON protocol operations sent directly.
DIRECT_OPERATIONS = ("SendMessageBatch", "ReceiveMessage", "DeleteMessageBatch")


class DirectClient:
    """The SQS client the queues use: the three enrolment calls sent directly, every other through boto3, by name.

    With `direct` False (SQS_DIRECT=false), or where botocore would use a proxy or a client
    certificate, the three go through boto3 as well.
    """

    def __init__(self, client, credentials, *, ca_bundle: str | None = None, direct: bool = True):
        self.boto3_client = client
        self._credentials = credentials
        config = client.meta.config
        self._region = client.meta.region_name
        self._endpoint = urllib.parse.urlsplit(client.meta.endpoint_url)
        self._path = self._endpoint.path or "/"  # an SQS-compatible endpoint's URL may have a path
        self._url = f"{self._endpoint.scheme}://{self._endpoint.netloc}{self._path}"
        self.direct = direct and not proxied(self._endpoint) and not config.proxies and not config.client_cert
        self._connect_timeout = config.connect_timeout
        self._read_timeout = config.read_timeout
        self._idle_limit = config.max_pool_connections
        self._keepalive = bool(config.tcp_keepalive)
        self._events = client.meta.events
        service = client.meta.service_model
        self._service_id = service.service_id.hyphenize()
        self._models = {name: service.operation_model(name) for name in DIRECT_OPERATIONS}
        self._service = service
        self._parser = botocore.parsers.create_parser(service.resolved_protocol)
        self._tls = (ssl.create_default_context(cafile=vendored_internals.ca_certificates(ca_bundle))
                     if self._endpoint.scheme == "https" else None)
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        _made.add(self)
        if not self.direct:
            # The boto3 client's own methods, so that a tracer or a Stubber sees exactly boto3's calls.
            self.send_message_batch = client.send_message_batch  # type: ignore[method-assign]
            self.receive_message = client.receive_message  # type: ignore[method-assign]
            self.delete_message_batch = client.delete_message_batch  # type: ignore[method-assign]

    # -- the three calls of every enrolment: direct --------------------------------------------

    def send_message_batch(self, **params) -> dict:
        return self.call("SendMessageBatch", params)

    def receive_message(self, **params) -> dict:
        return self.call("ReceiveMessage", params)

    def delete_message_batch(self, **params) -> dict:
        return self.call("DeleteMessageBatch", params)

    # -- once a queue, or a message released or set aside: through boto3 -----------------------

    def get_queue_url(self, **params) -> dict:
        return self.boto3_client.get_queue_url(**params)

    def create_queue(self, **params) -> dict:
        return self.boto3_client.create_queue(**params)

    def get_queue_attributes(self, **params) -> dict:
        return self.boto3_client.get_queue_attributes(**params)

    def send_message(self, **params) -> dict:
        return self.boto3_client.send_message(**params)

    def change_message_visibility(self, **params) -> dict:
        return self.boto3_client.change_message_visibility(**params)

    def change_message_visibility_batch(self, **params) -> dict:
        return self.boto3_client.change_message_visibility_batch(**params)

    @property
    def meta(self):
        return self.boto3_client.meta

    @property
    def exceptions(self):
        return self.boto3_client.exceptions

    # -- a direct call, as botocore's client and endpoint make one ------------------------------

    def call(self, operation: str, params: Mapping) -> dict:
        """One SQS call, retried as the client's retry handler says: its answer, or the exception boto3 raises."""
        model = self._models[operation]
        body = json.dumps(params, separators=(",", ":")).encode()
        context: dict = {}
        attempts = 1
        while True:
            request = self._signed(operation, body)  # without credentials: NoCredentialsError, never retried
            caught: Exception | None = None
            answer: tuple[botocore.awsrequest.AWSResponse, dict] | None = None
            try:
                answer = self._attempt(operation, model, request)
            except Exception as error:  # as botocore's endpoint: whether to try again is the retry handler's call
                caught = error
            if answer is not None and answer[0].status_code < 300:
                break  # botocore's retry handlers never retry a success: not asked, to save the call
            if not self._retry_after(operation, model, attempts, context, answer, caught):
                break
            attempts += 1
        if answer is None:
            self._events.emit(f"after-call-error.{self._service_id}.{operation}", exception=caught, context=context)
            raise caught  # type: ignore[misc]  # no answer means an exception was caught
        http_response, parsed = answer
        if "ResponseMetadata" in parsed:
            parsed["ResponseMetadata"]["RetryAttempts"] = attempts - 1
        self._events.emit(f"after-call.{self._service_id}.{operation}", http_response=http_response, parsed=parsed,
                          model=model, context=context)
        if http_response.status_code >= 300:
            code = context.get("error_code_override") or parsed.get("Error", {}).get("Code")
            raise self.boto3_client.exceptions.from_code(code)(parsed, operation)
        return parsed

    def _retry_after(self, operation: str, model, attempts: int, context: dict, answer, caught) -> bool:
        """Ask the client's needs-retry handlers as botocore's endpoint does; sleep as told; whether to retry."""
        responses = self._events.emit(
            f"needs-retry.{self._service_id}.{operation}", response=answer, endpoint=None, operation=model,
            attempts=attempts, caught_exception=caught, request_dict={"context": context},
        )
        delay = botocore.hooks.first_non_none_response(responses)
        if delay is None or delay is False:
            return False
        time.sleep(delay)
        return True

    def _attempt(self, operation: str, model, request) -> tuple[botocore.awsrequest.AWSResponse, dict]:
        _, hooked = self._events.emit_until_response(f"before-send.{self._service_id}.{operation}", request=request)
        if hooked is not None:
            http_response = hooked
        else:
            status, headers, content = self._send(request)
            http_response = botocore.awsrequest.AWSResponse(
                self._url, status, botocore.awsrequest.HeadersDict(headers.items()), _Read(content))
        return http_response, self._parsed(http_response, model)

    def _parsed(self, http_response: botocore.awsrequest.AWSResponse, model) -> dict:
        if http_response.status_code < 300:
            content = http_response.content
            return json.loads(content) if content else {}
        # An error: parsed as botocore's endpoint parses one, the modeled error's fields included.
        response = botocore.endpoint.convert_to_response_dict(http_response, model)
        customized: dict = {}
        self._events.emit(f"before-parse.{self._service_id}.{model.name}", operation_model=model,
                          response_dict=response, customized_response_dict=customized)
        parsed = self._parser.parse(response, model.output_shape)
        parsed.update(customized)
        error_shape = self._service.shape_for_error_code(parsed.get("Error", {}).get("Code"))
        if error_shape is not None:
            parsed.update(self._parser.parse(response, error_shape))
        return parsed

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
                host, port, timeout=self._connect_timeout, context=self._tls)
        else:
            connection = http.client.HTTPConnection(host, port, timeout=self._connect_timeout)
        try:
            connection.connect()
        except OSError as error:
            connection.close()
            raise botocore.exceptions.EndpointConnectionError(endpoint_url=self._url, error=error) from error
        connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._keepalive:
            connection.sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        connection.sock.settimeout(self._read_timeout)
        return connection, False

    def _forget_connections(self) -> None:
        self._idle = []  # dropped, not closed: the parent process still talks on them
        self._lock = threading.Lock()  # in case another thread of the parent held it at the fork

    def _keep(self, connection: http.client.HTTPConnection) -> None:
        with self._lock:
            if len(self._idle) < self._idle_limit:
                self._idle.append(connection)
                return
        connection.close()


class _Read:
    """The body of an answer already read, as AWSResponse reads its raw stream."""

    def __init__(self, content: bytes):
        self._content = content

    def stream(self, **kwargs) -> Iterable[bytes]:
        return (self._content,)


# Every DirectClient of this process, so that a forked child starts with no kept connection of its parent's.
_made: "weakref.WeakSet[DirectClient]" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for client in list(_made):
        client._forget_connections()


os.register_at_fork(after_in_child=_after_fork_in_child)


def proxied(endpoint: urllib.parse.SplitResult) -> bool:
    """Whether a proxy (HTTPS_PROXY, HTTP_PROXY, not bypassed by NO_PROXY) applies to the endpoint, as for botocore."""
    return endpoint.scheme in urllib.request.getproxies() and not urllib.request.proxy_bypass(endpoint.hostname or "")
