"""vendored_internals: every private part of a dependency we use is still there, pinned, and proven by a behaviour test.

A failure here after an upgrade names what went; directory_api/vendored_internals.py says where it is used.
"""

import ast
import importlib
import importlib.metadata
import inspect
import os
import smtplib
import socket
import sqlite3
import subprocess
import sys
import tomllib

import bottle
import mohawk
import peewee
import pytest
from packaging.requirements import Requirement

from directory_api import hardened
from directory_api import vendored_internals as internals
from tests.support.checkout import REPO


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
    ("module", "name"),
    [(module, name) for table in (internals.MOHAWK_NAMES, internals.OTHER_NAMES) for module, names in table.items()
     for name in names],
)
def test_private_name_is_there(module, name):
    assert hasattr(importlib.import_module(module), name)


def test_mohawk_header_pattern_finds_each_attribute_of_a_header():
    header = mohawk.Sender({"id": "ui", "key": "not-a-real-secret", "algorithm": "sha256"}, "http://x/", "GET",
                           content=b"", content_type="").request_header
    found = {match["key"]: match["value"] for match in internals.header_attributes(header.partition(" ")[2])}
    assert set(found) == {"id", "ts", "nonce", "hash", "mac"}


def test_a_mohawk_sender_signs_as_of_a_given_timestamp():
    assert "_timestamp" in inspect.signature(mohawk.Sender.__init__).parameters


# -- pins: what pyproject.toml allows is what was checked ----------------------------------------------


def pyproject_requirements() -> dict[str, Requirement]:
    with open(REPO / "pyproject.toml", "rb") as file:
        dependencies = tomllib.load(file)["project"]["dependencies"]
    return {Requirement(line).name.replace("-", "_").lower(): Requirement(line) for line in dependencies}


@pytest.mark.parametrize("package", sorted(internals.CHECKED))
def test_pyproject_allows_only_the_version_the_internals_were_checked_against(package):
    requirement = pyproject_requirements()[package.lower()]
    assert str(requirement.specifier) == f"=={internals.CHECKED[package]}", (
        f"pyproject.toml allows {package}{requirement.specifier}; vendored_internals.py was checked against "
        f"{internals.CHECKED[package]} only: pin it there (==) or check the other versions and raise CHECKED"
    )


@pytest.mark.parametrize("package", sorted(internals.CHECKED))
def test_requirements_txt_pins_the_checked_version(package):
    pins = dict(line.split("==") for line in (REPO / "requirements.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    assert pins[package] == internals.CHECKED[package]


# -- behaviour: each override and reach names the tests that prove it -----------------------------------


def functions_in(path: str) -> set[str]:
    tree = ast.parse((REPO / path).read_text())
    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")}


@pytest.mark.parametrize("reach", sorted(internals.PROVEN_BY))
def test_each_override_and_reach_names_behaviour_tests_that_exist(reach):
    proofs = internals.PROVEN_BY[reach]
    assert proofs, f"{reach} names no behaviour test"
    for proof in proofs:
        path, _, name = proof.partition("::")
        assert name in functions_in(path), f"{reach}: {proof} is not a test"


def waitress_overrides() -> list[str]:
    """Each "Class.method" of hardened.py that replaces a method of the waitress class it extends."""
    overrides = []
    for class_name, cls in vars(hardened).items():
        if not isinstance(cls, type) or cls.__module__ != hardened.__name__:
            continue
        waitress_base = next((base for base in cls.__mro__[1:] if base.__module__.startswith("waitress.")), None)
        if waitress_base is None:
            continue
        overrides += [f"{class_name}.{name}" for name, value in vars(cls).items()
                      if callable(value) and hasattr(waitress_base, name)]
    return overrides


def test_every_override_of_waitress_in_hardened_names_its_behaviour_test():
    overrides = waitress_overrides()
    assert "StrictRequestParser.parse_header" in overrides  # the search finds them
    assert sorted(set(overrides) - set(internals.PROVEN_BY)) == []


def test_commands_other_than_serve_do_not_load_waitress_or_mohawk_through_vendored_internals():
    code = ("import sys; import directory_api.vendored_internals, directory_api.queues.database, "
            "directory_api.metrics, directory_api.access; print(sorted({'waitress', 'mohawk'} & set(sys.modules)))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)}).stdout.strip()
    assert loaded == "[]"


def test_the_ca_bundle_is_found_as_botocore_finds_it(tmp_path):
    given = str(tmp_path / "bundle.pem")
    assert internals.ca_certificates(given) == given
    default = internals.ca_certificates(None)
    with open(default) as bundle:
        assert bundle.read().count("BEGIN CERTIFICATE") > 10


def test_peewee_errors_turns_a_driver_error_into_peewees():
    with pytest.raises(peewee.OperationalError), internals.peewee_errors():
        raise sqlite3.OperationalError("the fetch failed")


def test_prometheus_client_switches_to_files_when_its_value_class_is_reloaded(tmp_path, monkeypatch):
    from prometheus_client import values

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setattr(values, "ValueClass", values.ValueClass)  # restored after the test
    internals.reload_value_class()
    assert values.ValueClass is not values.MutexValue
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
    internals.reload_value_class()
    assert values.ValueClass is values.MutexValue


def test_a_wsgi_mount_keeps_its_prefix_and_target_in_its_route_config():
    top = bottle.Bottle()

    def mounted(environ, start_response):
        return []

    top.mount("/ops/", mounted)
    assert internals.mountpoint(top.routes[0]) == {"prefix": "/ops/", "target": mounted}
    plain = bottle.Bottle()
    plain.route("/")(lambda: "")
    assert internals.mountpoint(plain.routes[0]) is None


def test_starttls_names_the_server_given_to_name_smtp_server():
    class Recording:
        def wrap_socket(self, sock, server_hostname=None):
            self.named = server_hostname
            return sock

    smtp = smtplib.SMTP()  # unconnected, as smtp.py makes it
    internals.name_smtp_server(smtp, "mail.example.com")
    smtp.ehlo_resp, smtp.esmtp_features = b"mail.example.com", {"starttls": ""}  # as after an EHLO
    smtp.docmd = lambda command, args="": (220, b"ready")
    smtp.sock = socket.socket()
    context = Recording()
    try:
        smtp.starttls(context=context)
    finally:
        smtp.sock.close()
    assert context.named == "mail.example.com"
