"""serve killed and restarted, as a supervisor does it: no orphan keeps the port, no replay gets through the restart."""

import json
import os
import signal
import socket

import pytest
import requests

from tests.factories import enrolment_payload
from tests.support.processes import start_serve, wait_for_root
from tests.support.signing import UI_SECRET, signed_headers
from tests.support.waits import wait_until

pytestmark = [pytest.mark.e2e]


@pytest.fixture
def env(base_env, tmp_path) -> dict[str, str]:
    # The nonce store is per machine, in the temporary directory: this test's own.
    database = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    return {**base_env, "DATABASE_URL": database, "TMPDIR": str(tmp_path), "UI_SECRET": UI_SECRET}


def restart(processes, cli, env, base_url: str, *args: str):
    """serve again on the port of `base_url`, once it answers."""
    port = base_url.rsplit(":", 1)[1]
    again = processes.start([*cli, "serve", "--host", "127.0.0.1", "--port", port, *args], env, "serve-again")
    wait_for_root(again, base_url)
    return again


def children_of(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as listing:
        return [int(child) for child in listing.read().split()]


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rpartition(")")[2].split()[0] == "Z"


def refused(base_url: str) -> bool:
    host, port = base_url.removeprefix("http://").split(":")
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
    except OSError:
        return True
    return False


def test_a_sigkilled_serve_parent_takes_its_children_with_it_and_the_next_serve_binds_the_port(
    cli, env, processes
):
    serve, base_url = start_serve(processes, cli, env, "--debug", "--processes", "2")
    children = children_of(serve.pid)
    assert len(children) == 2
    serve.popen.send_signal(signal.SIGKILL)  # the parent alone: an OOM kill, or KillMode=process
    serve.popen.wait(10)
    wait_until(lambda: all(gone(child) for child in children), 10, "the children to end")
    wait_until(lambda: refused(base_url), 5, "the port to be free")
    restart(processes, cli, env, base_url, "--debug", "--processes", "2")


def test_a_signed_request_replayed_after_a_restart_is_still_refused(cli, env, processes):
    serve, base_url = start_serve(processes, cli, env, "--debug", "--processes", "2")
    url = f"{base_url}/enrolment/"
    body = json.dumps(enrolment_payload(7)).encode()
    headers = {**signed_headers(url, body), "Connection": "close"}

    def post() -> int:
        return requests.post(url, data=body, headers=headers, timeout=10).status_code

    assert [post(), post()] == [202, 401]
    serve.popen.send_signal(signal.SIGTERM)
    assert serve.popen.wait(15) == 0
    restart(processes, cli, env, base_url, "--debug")
    assert post() == 401
