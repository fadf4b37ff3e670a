"""vendored_internals: every private part of waitress and mohawk we use is still there, each checked on its own.

A failure here after an upgrade names what went; directory_api/vendored_internals.py says where it is used.
"""

import importlib.metadata
import inspect
import socket

import mohawk
import pytest

from directory_api import vendored_internals as internals


def hello_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/json")])
    return [b"{}"]


@pytest.fixture(scope="module")
def server():
    """A waitress server made as serve makes one, with one accepted connection."""
    sock = socket.create_server(("127.0.0.1", 0))
    dispatcher = internals.ThreadedTaskDispatcher()
    dispatcher.set_thread_count(1)
    made = internals.tcp_server(internals.TcpWSGIServer, hello_app, {}, sock, dispatcher, internals.Adjustments(
        sockets=[sock], threads=1))
    client = socket.create_connection(sock.getsockname()[:2])
    made.handle_accept()
    yield made
    client.close()
    internals.wasyncore.close_all(internals.socket_map(made))
    dispatcher.shutdown()


@pytest.fixture(scope="module")
def channel(server):
    (accepted,) = server.active_channels.values()
    return accepted


@pytest.fixture(scope="module")
def parser(server):
    parsed = internals.HTTPRequestParser(server.adj)
    parsed.received(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
    return parsed


@pytest.mark.parametrize("package", sorted(internals.CHECKED))
def test_the_installed_version_is_the_one_the_internals_were_checked_against(package):
    installed = importlib.metadata.version(package)
    assert installed == internals.CHECKED[package], (
        f"{package} {installed} is installed; directory_api/vendored_internals.py was checked against "
        f"{internals.CHECKED[package]}: check each use it lists, then raise CHECKED"
    )


@pytest.mark.parametrize("name", internals.SERVER_NAMES)
def test_waitress_server_has(server, name):
    assert hasattr(server, name)


@pytest.mark.parametrize("name", internals.CHANNEL_NAMES)
def test_waitress_channel_has(channel, name):
    assert hasattr(channel, name)


@pytest.mark.parametrize("name", internals.PARSER_NAMES)
def test_waitress_parser_has(parser, name):
    assert hasattr(parser, name)


@pytest.mark.parametrize("task_class", [internals.ErrorTask, internals.WSGITask], ids=lambda cls: cls.__name__)
@pytest.mark.parametrize("name", internals.TASK_NAMES)
def test_waitress_task_has(channel, parser, task_class, name):
    assert hasattr(task_class(channel, parser), name)


@pytest.mark.parametrize("name", internals.ADJUSTMENT_NAMES)
def test_waitress_adjustments_have(server, name):
    assert hasattr(server.adj, name)


@pytest.mark.parametrize("name", internals.WASYNCORE_NAMES)
def test_waitress_wasyncore_has(name):
    assert hasattr(internals.wasyncore, name)


def test_the_map_and_file_descriptor_accessors_find_the_accepted_channel(server, channel):
    assert internals.socket_map(server)[internals.fileno(channel)] is channel


def test_a_waitress_server_takes_a_listening_socket_as_tcp_server_passes_it():
    assert "_sock" in inspect.signature(internals.TcpWSGIServer.__init__).parameters


@pytest.mark.parametrize(
    ("module", "name"), [(module, name) for module, names in internals.MOHAWK_NAMES.items() for name in names],
    ids=lambda value: getattr(value, "__name__", value),
)
def test_mohawk_module_has(module, name):
    assert hasattr(module, name)


def test_mohawk_header_pattern_finds_each_attribute_of_a_header():
    header = mohawk.Sender({"id": "ui", "key": "not-a-real-secret", "algorithm": "sha256"}, "http://x/", "GET",
                           content=b"", content_type="").request_header
    found = {match["key"]: match["value"] for match in internals.header_attributes(header.partition(" ")[2])}
    assert set(found) == {"id", "ts", "nonce", "hash", "mac"}


def test_a_mohawk_sender_signs_as_of_a_given_timestamp():
    assert "_timestamp" in inspect.signature(mohawk.Sender.__init__).parameters
