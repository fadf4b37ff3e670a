"""Every part of a dependency that is not its public API, in one place: what we rely on, where, and what proves it.

Checked against the versions in CHECKED, which pyproject.toml pins exactly and
requirements.txt installs. tests/test_vendored_internals.py fails when another
version is installed, when pyproject.toml would allow one, and, naming it, when
one of the names below is missing. Names are not enough (waitress's unreleased
main still has every name, yet would have switched the CL+TE check off), so
each override and reach also names, in PROVEN_BY, the behaviour tests that
prove it still does what we rely on; those tests run against CHECKED. After an
upgrade: run them, read each use again, then raise CHECKED and the pins.

waitress: hardened.py hardens its server, channel, parser and tasks by subclassing them, and
eventloop.py dispatches its channels' events itself. Besides the classes and functions
below (importable, but internal modules), they read or override:
  TcpWSGIServer  _map (through socket_map), the _sock argument (through tcp_server),
                 active_channels, adj, accepting, next_channel_cleanup, task_dispatcher,
                 accept(), fix_addr(), set_socket_options(), maintenance(), pull_trigger(),
                 readable(), handle_accept(), channel_class
  HTTPChannel    _fileno (through fileno), request, requests, total_outbufs_len,
                 will_close, close_when_flushed, last_activity, service(), writable(),
                 send_continue(), handle_close(), error_task_class, task_class, parser_class
  HTTPRequestParser  headers, headers_finished, chunked, version, completed,
                 expect_continue, error (code, reason, body), parse_header()
  ErrorTask, WSGITask  request, channel, response_headers, start_time, status,
                 content_length, execute(), write(), set_close_on_finish(), build_response_header()
  Adjustments    cleanup_interval, connection_limit
  wasyncore      loop(), readwrite(), close_all(), dispatcher.close()

mohawk: signature.py replaces two helpers mohawk looks up in its own modules at call time
(pprint, which formats debug messages even when nobody logs them, and strings_match, a
constant-time comparison in Python) and reads a Hawk header's mac with mohawk's own pattern:
  mohawk.base.pprint, mohawk.util.pprint              (replace_pprint)
  mohawk.base.strings_match, mohawk.util.strings_match  (replace_strings_match)
  mohawk.util.HAWK_HEADER_RE                          (header_attributes)
  mohawk.util.parse_authorization_header
  Sender(_timestamp=...)                              (the tests sign as of a past moment)

botocore: queues/sqs_direct.py sends three SQS calls itself and finds the CA bundle as botocore
  does: botocore.httpsession.get_cert_path (ca_certificates). It also emits the client's events
  with the arguments botocore's client and endpoint give them (before-send, needs-retry with
  request_dict["context"], before-parse, after-call, after-call-error), so that the client's own
  retry handler, quota and error-code hooks decide; the rest is public (SigV4Auth, AWSRequest,
  AWSResponse, convert_to_response_dict, create_parser, the client's config and service model).
peewee: queues/database.py fetches a claim's rows itself and turns driver errors into peewee's
  as peewee's own execute does: peewee.__exception_wrapper__ (peewee_errors).
prometheus_client: metrics.py switches to multiprocess mode after prometheus_client was imported,
  which reads PROMETHEUS_MULTIPROC_DIR once: values.ValueClass, values.get_value_class()
  (reload_value_class).
bottle: access.py labels a mounted app's routes with the mount's prefix, which bottle keeps in
  the mount route's config: Route.config["mountpoint"] (mountpoint).
smtplib (the standard library's, so the Python version is what is checked): smtp.py makes its SMTP
  connection unconnected, so that a stop can cut the greeting too, and has STARTTLS name the server
  (SNI, the certificate's check) as the constructor would have: SMTP._host (name_smtp_server).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from waitress import wasyncore
    from waitress.adjustments import Adjustments
    from waitress.channel import HTTPChannel
    from waitress.parser import HTTPRequestParser, ParsingError
    from waitress.server import TcpWSGIServer
    from waitress.task import ErrorTask, ThreadedTaskDispatcher, WSGITask

CHECKED = {
    "waitress": "3.0.2",
    "mohawk": "1.1.0",
    "botocore": "1.44.8",
    "peewee": "4.5.3",
    "prometheus_client": "0.26.0",
    "bottle": "0.13.4",
}

SERVER_TESTS = "tests/test_server.py::"
# Each override (hardened.py: "Class.method") and reach, and the behaviour tests that prove it.
PROVEN_BY = {
    "JsonErrorTask.execute": [
        SERVER_TESTS + "test_a_body_declared_over_256_kib_gets_a_json_413_from_the_server",
        SERVER_TESTS + "test_a_chunked_body_over_256_kib_gets_a_json_413_from_the_server",
    ],
    "StrictRequestParser.__init__": [
        SERVER_TESTS + "test_a_client_dribbling_its_headers_is_cut_off_after_the_header_deadline",
    ],
    "StrictRequestParser.parse_header": [
        SERVER_TESTS + "test_content_length_with_transfer_encoding_is_refused_and_the_connection_closed",
        SERVER_TESTS + "test_content_length_with_transfer_encoding_is_refused_when_waitress_drops_content_length",
        SERVER_TESTS + "test_transfer_encoding_on_http_1_0_is_refused_and_the_connection_closed",
        SERVER_TESTS + "test_a_chunked_request_alone_is_still_served_on_a_kept_connection",
    ],
    "RecyclingTask.build_response_header": [
        SERVER_TESTS + "test_a_keep_alive_connection_is_closed_after_its_hundredth_answer",
    ],
    "JsonErrorChannel.service": [SERVER_TESTS + "test_a_channel_whose_task_is_sending_its_answer_is_not_writable"],
    "JsonErrorChannel.writable": [
        SERVER_TESTS + "test_a_channel_whose_task_is_sending_its_answer_is_not_writable",
        SERVER_TESTS + "test_an_answer_larger_than_the_output_buffer_reaches_a_slow_reader_whole",
    ],
    "JsonErrorChannel.send_continue": [
        SERVER_TESTS + "test_expect_100_continue_over_the_limit_gets_413_without_100_continue",
        SERVER_TESTS + "test_expect_100_continue_within_the_limit_still_gets_100_continue_then_the_answer",
    ],
    "GuardedServer.channel_class": [SERVER_TESTS + "test_a_body_declared_over_256_kib_gets_a_json_413_from_the_server"],
    "JsonErrorChannel.error_task_class": [
        SERVER_TESTS + "test_a_body_declared_over_256_kib_gets_a_json_413_from_the_server",
    ],
    "JsonErrorChannel.task_class": [SERVER_TESTS + "test_a_keep_alive_connection_is_closed_after_its_hundredth_answer"],
    "JsonErrorChannel.parser_class": [
        SERVER_TESTS + "test_content_length_with_transfer_encoding_is_refused_and_the_connection_closed",
    ],
    "GuardedServer.pull_trigger": [
        SERVER_TESTS + "test_an_answer_larger_than_the_output_buffer_reaches_a_slow_reader_whole",
        SERVER_TESTS + "test_idle_connections_cost_the_loop_nothing_while_another_is_answered",
    ],
    "GuardedServer.readable": [
        SERVER_TESTS + "test_a_client_dribbling_its_headers_is_cut_off_after_the_header_deadline",
    ],
    "GuardedServer.handle_accept": [
        SERVER_TESTS + "test_one_turn_of_the_loop_accepts_every_connection_waiting",
        SERVER_TESTS + "test_more_idle_connections_than_waitress_allows_do_not_keep_a_request_out",
        SERVER_TESTS + "test_at_the_connection_limit_the_quietest_connections_make_room",
        SERVER_TESTS + "test_out_of_files_the_quietest_connections_make_room_for_the_next_turn",
    ],
    "GuardedServer.maintenance": [
        SERVER_TESTS + "test_a_client_dribbling_its_headers_is_cut_off_after_the_header_deadline",
        SERVER_TESTS + "test_a_request_being_answered_is_never_closed_to_make_room",
    ],
    "eventloop (wasyncore.readwrite, fileno)": [
        "tests/test_eventloop.py::test_input_is_dispatched_to_the_channel_that_wants_to_read",
        "tests/test_eventloop.py::test_a_closed_channel_is_forgotten",
        SERVER_TESTS + "test_connections_opened_abandoned_and_reopened_at_once_are_each_answered_right",
    ],
    "replace_pprint": [
        "tests/test_signature.py::test_mohawk_debug_messages_are_not_pretty_printed_when_debug_is_off",
        "tests/test_signature.py::test_mohawk_debug_messages_are_still_complete_under_debug",
    ],
    "replace_strings_match": ["tests/test_signature.py::test_mohawk_compares_macs_as_its_own_comparison_did"],
    "header_attributes": [
        "tests/test_signature.py::test_the_replay_key_is_the_mac_as_mohawk_reads_it",
        "tests/test_vendored_internals.py::test_mohawk_header_pattern_finds_each_attribute_of_a_header",
    ],
    "Sender(_timestamp=...)": [
        "tests/test_signature.py::test_a_signature_more_than_60_seconds_off_is_refused_as_stale",
    ],
    "sqs_direct (botocore's events as its endpoint emits them)": [
        "tests/queues/test_sqs_direct.py::test_a_success_is_the_answer_boto3_gives",
        "tests/queues/test_sqs_direct.py::test_throttling_is_retried_and_raised_as_boto3_does",
        "tests/queues/test_sqs_direct.py::test_x_amz_retry_after_sets_the_pause_as_for_boto3",
        "tests/queues/test_sqs_direct.py::test_transient_errors_are_retried_as_boto3_retries_them",
        "tests/queues/test_sqs_direct.py::test_an_error_answer_is_the_client_error_boto3_raises",
    ],
    "ca_certificates": ["tests/test_vendored_internals.py::test_the_ca_bundle_is_found_as_botocore_finds_it"],
    "peewee_errors": [
        "tests/queues/test_database.py::test_a_claim_whose_fetch_fails_is_queue_unavailable_and_releases_the_write_lock",
        "tests/test_vendored_internals.py::test_peewee_errors_turns_a_driver_error_into_peewees",
    ],
    "reload_value_class": [
        "tests/test_metrics.py::test_the_processes_of_one_serve_are_summed",
        "tests/test_vendored_internals.py::test_prometheus_client_switches_to_files_when_its_value_class_is_reloaded",
    ],
    "mountpoint": [
        "tests/test_access.py::test_a_mounted_apps_routes_are_labelled_with_their_prefix",
        "tests/test_vendored_internals.py::test_a_wsgi_mount_keeps_its_prefix_and_target_in_its_route_config",
    ],
    "name_smtp_server": [
        "tests/test_smtp.py::test_starttls_with_a_self_signed_certificate_the_client_trusts",
        "tests/test_vendored_internals.py::test_starttls_names_the_server_given_to_name_smtp_server",
    ],
}

# waitress's internal classes and modules, imported on first use (module __getattr__ below), and
# every other library inside the function that reaches into it: `work` and the other commands
# import this module too, and must not pay for loading waitress and mohawk at their start.
WAITRESS = {
    "Adjustments": "waitress.adjustments",
    "ErrorTask": "waitress.task",
    "HTTPChannel": "waitress.channel",
    "HTTPRequestParser": "waitress.parser",
    "ParsingError": "waitress.parser",
    "TcpWSGIServer": "waitress.server",
    "ThreadedTaskDispatcher": "waitress.task",
    "WSGITask": "waitress.task",
    "wasyncore": "waitress",
}

__all__ = [
    "Adjustments", "ErrorTask", "HTTPChannel", "HTTPRequestParser", "ParsingError", "TcpWSGIServer",
    "ThreadedTaskDispatcher", "WSGITask", "wasyncore",
]

# What tests/test_vendored_internals.py checks: each name on an instance waitress made itself.
SERVER_NAMES = (
    "_map", "active_channels", "adj", "accepting", "next_channel_cleanup", "task_dispatcher", "accept",
    "fix_addr", "set_socket_options", "maintenance", "pull_trigger", "readable", "handle_accept", "channel_class",
)
CHANNEL_NAMES = (
    "_fileno", "request", "requests", "total_outbufs_len", "will_close", "close_when_flushed", "last_activity",
    "service", "writable", "send_continue", "handle_close", "error_task_class", "task_class", "parser_class",
)
PARSER_NAMES = (
    "headers", "headers_finished", "chunked", "version", "completed", "expect_continue", "error", "parse_header",
)
TASK_NAMES = (
    "request", "channel", "response_headers", "start_time", "status", "content_length", "execute", "write",
    "set_close_on_finish", "build_response_header",
)
ADJUSTMENT_NAMES = ("cleanup_interval", "connection_limit")
WASYNCORE_NAMES = ("loop", "readwrite", "close_all", "dispatcher")
MOHAWK_NAMES = {
    "mohawk.base": ("pprint", "strings_match"),
    "mohawk.util": ("pprint", "strings_match", "HAWK_HEADER_RE", "parse_authorization_header"),
}
OTHER_NAMES = {
    "botocore.httpsession": ("get_cert_path",),
    "peewee": ("__exception_wrapper__",),
    "prometheus_client.values": ("ValueClass", "get_value_class"),
}


def __getattr__(name: str):
    """One of WAITRESS's names, imported the first time it is asked for."""
    if name not in WAITRESS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(WAITRESS[name]), name)
    globals()[name] = value  # asked once: later lookups find it directly
    return value


def socket_map(server: TcpWSGIServer) -> dict:
    """The map of file descriptors to channels (the listener's and its trigger's too) a server was made with."""
    return server._map


def fileno(channel) -> int | None:
    """The file descriptor a wasyncore channel is registered under in its map (None once closed)."""
    return channel._fileno


def tcp_server(server_class: type[TcpWSGIServer], app, channels: dict, sock, dispatcher, adj: Adjustments):
    """A `server_class` on the listening socket `sock`, as waitress.create_server builds one for a single socket."""
    return server_class(
        app,
        channels,
        _sock=sock,
        dispatcher=dispatcher,
        adj=adj,
        bind_socket=False,
        sockinfo=(sock.family, sock.type, sock.proto, sock.getsockname()),
    )


def replace_pprint(replacement) -> None:
    import mohawk.base
    import mohawk.util

    mohawk.base.pprint = mohawk.util.pprint = replacement


def replace_strings_match(replacement) -> None:
    import mohawk.base
    import mohawk.util

    mohawk.base.strings_match = mohawk.util.strings_match = replacement


def authorization_attributes(header: str) -> dict[str, str]:
    """The attributes of a Hawk Authorization header (id, ts, nonce, hash, mac, ...), parsed as mohawk does."""
    import mohawk.util

    return mohawk.util.parse_authorization_header(header)


def header_attributes(attributes: str):
    """Matches of each key="value" attribute of a Hawk header's text after "Hawk ", as mohawk parses it."""
    return _hawk_header_pattern().finditer(attributes)


def _hawk_header_pattern():
    import mohawk.util

    return mohawk.util.HAWK_HEADER_RE


def ca_certificates(ca_bundle: str | None) -> str:
    """The CA bundle botocore verifies TLS with: `ca_bundle` (AWS_CA_BUNDLE, the profile's) or its default."""
    import botocore.httpsession

    return botocore.httpsession.get_cert_path(ca_bundle or True)


def peewee_errors():
    """A context in which a DB-API driver's errors become peewee's, as in peewee's own execute()."""
    import peewee

    return peewee.__exception_wrapper__


def reload_value_class() -> None:
    """Have metrics made from now on use memory or PROMETHEUS_MULTIPROC_DIR's files as the variable now says."""
    from prometheus_client import values

    values.ValueClass = values.get_value_class()


def mountpoint(route) -> dict | None:
    """{"prefix": ..., "target": ...} of a route that mounts an app (Bottle.mount of a WSGI app), else None."""
    # bottle passes {"prefix", "target"} as the route's "mountpoint" option; its ConfigDict keeps them flattened.
    config = route.config
    if "mountpoint.prefix" not in config:
        return None
    return {"prefix": config["mountpoint.prefix"], "target": config["mountpoint.target"]}


def name_smtp_server(smtp, host: str) -> None:
    """Have STARTTLS on an SMTP connection made without a host name `host` (SNI, the certificate's check)."""
    # smtplib keeps the constructor's host for starttls(); connect() does not set it.
    smtp._host = host
