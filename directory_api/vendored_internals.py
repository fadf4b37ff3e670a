"""The parts of waitress and mohawk that are not their public API, in one place: what we rely on and where.

Checked against waitress 3.0.2 and mohawk 1.1.0 (CHECKED below). tests/test_vendored_internals.py
fails, naming the one missing, when an upgrade removes or renames any of them; after an upgrade
that passes, read each use again and raise CHECKED.

waitress: server.py hardens its server, channel, parser and tasks by subclassing them, and
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
"""

import mohawk.base
import mohawk.util
from waitress import wasyncore
from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser, ParsingError
from waitress.server import TcpWSGIServer
from waitress.task import ErrorTask, ThreadedTaskDispatcher, WSGITask

CHECKED = {"waitress": "3.0.2", "mohawk": "1.1.0"}

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
    mohawk.base: ("pprint", "strings_match"),
    mohawk.util: ("pprint", "strings_match", "HAWK_HEADER_RE", "parse_authorization_header"),
}


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
    mohawk.base.pprint = mohawk.util.pprint = replacement


def replace_strings_match(replacement) -> None:
    mohawk.base.strings_match = mohawk.util.strings_match = replacement


def authorization_attributes(header: str) -> dict[str, str]:
    """The attributes of a Hawk Authorization header (id, ts, nonce, hash, mac, ...), parsed as mohawk does."""
    return mohawk.util.parse_authorization_header(header)


def header_attributes(attributes: str):
    """Matches of each key="value" attribute of a Hawk header's text after "Hawk ", as mohawk parses it."""
    return mohawk.util.HAWK_HEADER_RE.finditer(attributes)
