"""Subprocesses: serve, dev and work started for a test and stopped at its end (a pytest plugin)."""

import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
import requests

from tests.support.checkout import REPO, SOURCE_CLI
from tests.support.signing import UI_SECRET
from tests.support.sockets import free_port
from tests.support.waits import wait_until


class Process:
    """A subprocess whose output goes to a log file, so a failing test can show it."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], log_path: Path, cwd: Path | None = None):
        self.argv = list(argv)
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - the process writes to it until stop() closes it
        self.popen = subprocess.Popen(
            self.argv, env=dict(env), cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-6000:]

    def full_log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def signal_and_time(self, signum: int, timeout: float = 10.0) -> tuple[int | None, float]:
        """Send `signum`; return (exit code or None if still running after `timeout`, seconds it took)."""
        started = time.monotonic()
        self.popen.send_signal(signum)
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            code = None
        return code, time.monotonic() - started

    def kill(self) -> None:
        """SIGKILL, as a crash or the OOM killer would."""
        if self.alive():
            self.popen.kill()
        self.popen.wait(10)

    def stop(self) -> None:
        """Clean up at the end of a test: SIGTERM, then SIGKILL if it will not go."""
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        self._log.close()


class Processes:
    """Starts processes for one test and stops every one of them at its end."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.started: list[Process] = []

    def start(self, argv, env, name: str, cwd: Path | None = None) -> Process:
        process = Process(argv, env, self.log_dir / f"{name}-{len(self.started)}.log", cwd=cwd)
        self.started.append(process)
        return process

    def stop_all(self) -> None:
        for process in reversed(self.started):
            process.stop()

    def logs(self) -> str:
        return "\n".join(f"--- {p.log_path.name} (rc={p.popen.poll()}):\n{p.log()}" for p in self.started)


@pytest.fixture
def processes(tmp_path):
    """Every process a test starts, stopped at its end; their logs stay in tmp_path."""
    started = Processes(tmp_path)
    yield started
    started.stop_all()


def wait_for_root(process: Process, base_url: str, timeout: float = 30) -> None:
    """Wait until GET `base_url`/ answers 200, failing with the log if the process exits first."""

    def answers():
        assert process.alive(), f"{process.argv} exited:\n{process.log()}"
        return requests.get(f"{base_url}/", timeout=1).status_code == 200

    wait_until(answers, timeout, f"GET {base_url}/")


def start_serve(processes: Processes, cli: Sequence[str], env: Mapping[str, str], *args: str,
                name: str = "serve", ready: bool = True) -> tuple[Process, str]:
    """`serve` on a free port; returns (process, base URL), once GET / answers 200 unless `ready` is False."""
    port = free_port()
    process = processes.start([*cli, "serve", "--host", "127.0.0.1", "--port", str(port), *args], env, name)
    base_url = f"http://127.0.0.1:{port}"
    if ready:
        wait_for_root(process, base_url)
    return process, base_url


def start_dev(processes: Processes, cli: Sequence[str], env: Mapping[str, str], workdir: Path,
              name: str = "dev", timeout: float = 30) -> tuple[Process, str]:
    """`dev` in `workdir` on a free port; returns (process, base URL) once GET / answers 200."""
    port = free_port()
    process = processes.start([*cli, "dev", "--port", str(port)], env, name, cwd=workdir)
    base_url = f"http://127.0.0.1:{port}"
    wait_for_root(process, base_url, timeout)
    return process, base_url


def start_work(processes: Processes, cli: Sequence[str], env: Mapping[str, str], *args: str,
               name: str = "work") -> Process:
    return processes.start([*cli, "work", *args], env, name)


class Serve:
    """`python directory_api.py serve` from this checkout on a free port, its output in a log file."""

    def __init__(self, processes: Processes, env: Mapping[str, str], *args: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._process = processes.start(
            [*SOURCE_CLI, "serve", "--host", "127.0.0.1", "--port", str(self.port), *args],
            {"PATH": os.environ["PATH"], "UI_SECRET": UI_SECRET, **env}, "serve", cwd=REPO,
        )
        self.process = self._process.popen

    def log(self) -> str:
        return self._process.full_log()

    def wait_ready(self) -> "Serve":
        wait_for_root(self._process, self.url)
        return self

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 15) -> int:
        self.process.send_signal(signum)
        return self.process.wait(timeout)

    def kill(self) -> None:
        self._process.kill()


@pytest.fixture
def serving(processes):
    """Start `serve` from source with settings and arguments; every one is stopped at the end of the test."""

    def start(env: Mapping[str, str], *args: str, ready: bool = True) -> Serve:
        serve = Serve(processes, env, *args)
        return serve.wait_ready() if ready else serve

    return start
