"""What the benchmark scripts share: the machine, CPU accounting, processes, ports, results and tables."""

import contextlib
import datetime
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable, Sequence
from pathlib import Path

from throwaway_postgres import ThrowawayPostgres
from throwaway_postgres import reachable as throwaway_postgres_reachable

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench-results"
PYZ = ROOT / "dist" / "directory-api.pyz"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
FAKE_SECRET = "not-a-real-secret"
# boto3 insists on credentials even for a local endpoint; these name no account.
FAKE_AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "eu-west-1"}
POSTGRES_ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


# -- the machine ---------------------------------------------------------------------------------

def enrolment(number: int, *, first_sso_id: int, first_company: int, **fields) -> str:
    """A valid enrolment body as JSON, unique by sso_id and company number; `fields` add or override."""
    return json.dumps({
        "sso_id": first_sso_id + number,
        "company_number": f"{(first_company + number) % 10**8:08d}",
        "company_name": f"Bench Company {number} Ltd",
        "company_email": f"bench{number}@example.com",
        "export_status": "YES",
        "date_of_creation": "2010-06-15",
        "referrer": "bench",
        **fields,
    })


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict:
    """Cores, CPU model, memory, load average and versions: what a figure needs to be compared."""
    memory_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            memory_kib = int(line.split()[1])
    return {
        "cores": os.cpu_count(),
        "cpu_model": cpu_model(),
        "memory_gib": round(memory_kib / 1024 / 1024, 1),
        "load_average": os.getloadavg(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "hostname": socket.gethostname(),
    }


def describe_machine(info: dict) -> str:
    load = " ".join(f"{value:.2f}" for value in info["load_average"])
    return (f"machine: {info['cores']} cores, {info['cpu_model']}, {info['memory_gib']} GiB, "
            f"python {info['python']}, load average {load}")


# -- CPU accounting ------------------------------------------------------------------------------

def machine_cpu_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of the whole machine since boot, from /proc/stat."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return total - idle, total


def process_cpu_ticks(pid: int) -> int:
    """User + system ticks of one process, its reaped children included."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    fields = text.rsplit(")", 1)[1].split()
    # After the ")" field 3 is state; utime, stime, cutime, cstime are fields 14-17 of stat.
    return sum(int(value) for value in fields[11:15])


def descendants(pid: int) -> list[int]:
    """pid and every process under it."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                children = Path(f"/proc/{current}/task/{task}/children").read_text().split()
                todo.extend(int(child) for child in children)
        except OSError:
            continue
    return found


class CpuMeter:
    """CPU used during a window: by the whole machine, and by each named group of our processes.

    Call sample() now and then during the window (processes that exit between
    samples lose their last ticks, so sample just before stopping them).
    "other" is what the machine did besides our processes: other people's work.
    """

    def __init__(self, groups: dict[str, list[int]]):
        self.groups = groups
        self.start_busy, self.start_total = machine_cpu_ticks()
        self.start_time = time.monotonic()
        self.first: dict[int, int] = {}
        self.last: dict[int, int] = {}
        self.group_of: dict[int, str] = {}
        self.opening = True
        self.sample()
        self.opening = False

    def sample(self) -> None:
        for name, pids in self.groups.items():
            for root in pids:
                for pid in descendants(root):
                    ticks = process_cpu_ticks(pid)
                    self.group_of.setdefault(pid, name)  # the first group to name a process owns it
                    # A process born during the window started from zero ticks.
                    self.first.setdefault(pid, ticks if self.opening else 0)
                    self.last[pid] = max(ticks, self.last.get(pid, 0))

    def result(self) -> dict:
        self.sample()
        busy, total = machine_cpu_ticks()
        elapsed = time.monotonic() - self.start_time
        cores = os.cpu_count() or 1
        seconds = dict.fromkeys(self.groups, 0.0)
        for pid, name in self.group_of.items():
            seconds[name] += (self.last[pid] - self.first[pid]) / CLOCK_TICKS
        machine_busy = (busy - self.start_busy) / CLOCK_TICKS
        ours = sum(seconds.values())
        return {
            "elapsed_s": round(elapsed, 3),
            "machine_busy_pct": round(100 * machine_busy / (elapsed * cores), 1) if elapsed else 0.0,
            "other_work_pct": round(100 * max(machine_busy - ours, 0) / (elapsed * cores), 1) if elapsed else 0.0,
            **{f"cpu_s_{name}": round(value, 3) for name, value in seconds.items()},
        }


def cpu_meter_for(**groups: list[int]) -> CpuMeter:
    return CpuMeter(groups)


def pids_named(name: str) -> list[int]:
    """Processes whose command name is `name` (e.g. the PostgreSQL backends the benchmark keeps busy)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if Path(f"/proc/{entry}/comm").read_text().strip() == name:
                    found.append(int(entry))
            except OSError:
                continue
    return found


def peak_rss_mib(pid: int) -> list[float]:
    """VmHWM (peak resident set) of pid and each of its descendants, in MiB."""
    peaks = []
    for each in descendants(pid):
        try:
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks.append(round(int(line.split()[1]) / 1024, 1))
        except OSError:
            continue
    return peaks


# -- processes and ports -------------------------------------------------------------------------

def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, timeout: float = 15.0, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process {process.args!r} exited with {process.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def wait_for_http(url: str, timeout: float = 15.0, process: subprocess.Popen | None = None,
                  interval: float = 0.01) -> float:
    """Seconds until GET url answers 200."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if process is not None and process.poll() is not None:
            assert isinstance(process.args, list), "a process of start(), which passes a list"
            raise RuntimeError(f"{' '.join(map(str, process.args))} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as answer:
                if answer.status == 200:
                    return time.monotonic() - started
        except OSError:
            time.sleep(interval)
    raise TimeoutError(f"{url} did not answer 200 within {timeout} s")


def start(command: Sequence[str | Path | int], env: dict | None = None, log: Path | None = None,
          **kwargs) -> subprocess.Popen:
    """Start `command`, each part made a str, in its own session (so stop() reaches its children), output to a log."""
    output = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - the child owns it
    environment = {**os.environ, **(env or {})}
    return subprocess.Popen([str(part) for part in command], env=environment, stdout=output,
                            stderr=subprocess.STDOUT, start_new_session=True, **kwargs)


def stop(process: subprocess.Popen, timeout: float = 10.0) -> int | None:
    """SIGTERM the process's group, then SIGKILL what is left after timeout."""
    if process.poll() is None:
        _signal_group(process, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            _signal_group(process, signal.SIGKILL)
            process.wait()
    return process.returncode


def _signal_group(process: subprocess.Popen, number: int) -> None:
    try:
        os.killpg(process.pid, number)
    except ProcessLookupError:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(number)  # not a group leader: the process alone


def start_stub(log: Path | None = None) -> tuple[subprocess.Popen, str]:
    """The in-memory SQS stub in its own process; returns it and its endpoint URL."""
    port = free_port()
    process = start([sys.executable, ROOT / "scripts" / "sqs_stub.py", "--port", port], log=log)
    wait_for_port(port, process=process)
    return process, f"http://127.0.0.1:{port}"


def sqs_client(endpoint: str):
    import boto3
    import botocore.config

    config = botocore.config.Config(retries={"max_attempts": 2, "mode": "standard"}, max_pool_connections=20)
    return boto3.client("sqs", endpoint_url=endpoint, region_name="eu-west-1", aws_access_key_id="testing",
                        aws_secret_access_key="testing", config=config)


def stub_message_ids(endpoint: str, queue: str) -> set[str]:
    """Ids of every message on a stub queue, visible or in flight, without receiving them."""
    with urllib.request.urlopen(f"{endpoint}/_stub/queues/{queue}", timeout=30) as answer:
        return set(json.load(answer)["ids"])


def pyz_is_current() -> bool:
    """Whether dist/directory-api.pyz exists and is newer than every source file it packs."""
    if not PYZ.exists():
        return False
    built = PYZ.stat().st_mtime
    return all(source.stat().st_mtime <= built for source in (ROOT / "directory_api").rglob("*.py"))


def app_command() -> list[str]:
    """The directory-api command: the pyz when it is built from the current sources, else the checkout.

    BENCH_APP (e.g. "python /tmp/other/directory_api.py") measures another build instead, such as a
    prototype of a change, in the same harness.
    """
    if os.environ.get("BENCH_APP"):
        return os.environ["BENCH_APP"].split()
    if pyz_is_current():
        return [sys.executable, str(PYZ)]
    return [sys.executable, str(ROOT / "directory_api.py")]


def app_kind() -> str:
    if os.environ.get("BENCH_APP"):
        return f"BENCH_APP={os.environ['BENCH_APP']}"
    if pyz_is_current():
        return "pyz"
    return "checkout (dist/directory-api.pyz is older than the sources)" if PYZ.exists() else "checkout"


# -- PostgreSQL ------------------------------------------------------------------------------------

def throwaway_postgres(label: str) -> ThrowawayPostgres:
    """A fresh database on the benchmark's PostgreSQL server (`with ... as url`), dropped on exit."""
    return ThrowawayPostgres(f"bench_{label}", POSTGRES_ADMIN_URL)


def postgres_available() -> bool:
    return throwaway_postgres_reachable(POSTGRES_ADMIN_URL)


def migrate(database_url: str) -> None:
    """Create the schema with the project's own migrate command."""
    subprocess.run([*app_command(), "migrate"], env={**os.environ, "DATABASE_URL": database_url},
                   check=True, stdout=subprocess.DEVNULL)


def best_of(rows: list[dict], key: tuple[str, ...]) -> list[dict]:
    """One row per key: the repeat with the highest rate (other work on the machine only ever slows a run),
    with every repeat's rate kept under "rates"; correctness fields must hold in every repeat."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row[name] for name in key), []).append(row)
    best = []
    for group in groups.values():
        fastest = max(group, key=lambda row: row.get("rate") or 0)
        chosen = dict(fastest)
        chosen["rates"] = [row.get("rate") for row in group]
        for check in ("missing_from_queue", "rejected", "left_on_queue"):
            if check in chosen:
                chosen[check] = max(row[check] for row in group)
        if "exactly_once" in chosen:
            chosen["exactly_once"] = all(row["exactly_once"] for row in group)
        if "replays_refused" in chosen:
            chosen["replays_refused"] = min(row["replays_refused"] for row in group)
        best.append(chosen)
    return best


# -- results ---------------------------------------------------------------------------------------

def write_results(benchmark: str, rows: list[dict], info: dict) -> Path:
    """Append one JSON line per row to bench-results/BENCHMARK.jsonl, each with the machine and time."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{benchmark}.jsonl"
    stamp = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    with path.open("a") as output:
        for row in rows:
            output.write(json.dumps({"benchmark": benchmark, "at": stamp, "machine": info, **row}) + "\n")
    return path


def begin() -> dict:
    """How every benchmark begins: the machine described and the directory-api measured named; the machine's info."""
    info = machine()
    print(describe_machine(info))
    print(f"directory-api from: {app_kind()} ({' '.join(app_command())})")
    return info


def logs_folder() -> Path:
    """bench-results/logs, made if missing: where the processes a benchmark starts write their output."""
    folder = RESULTS / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def report(benchmark: str, rows: list[dict], columns: list[tuple[str, str]], info: dict, /, *,
           notes: Iterable[str] = (), **fields) -> None:
    """How every benchmark ends: its rows as a table, then `notes` a line each; then the rows, each with `fields`,
    appended to bench-results/BENCHMARK.jsonl (write_results), and the file named."""
    print()
    print(table(rows, columns))
    for note in notes:
        print(note)
    path = write_results(benchmark, [{**row, **fields} for row in rows], info)
    print(f"results appended to {path.relative_to(ROOT)}")


def read_latest(benchmark: str) -> list[dict]:
    """The rows of the latest run of a benchmark (those sharing the last timestamp)."""
    path = RESULTS / f"{benchmark}.jsonl"
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    latest = rows[-1]["at"] if rows else None
    return [row for row in rows if row["at"] == latest]


def table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    """A Markdown table (also readable in a terminal) of rows under (key, heading) columns."""

    def cell(value) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:,.1f}" if abs(value) >= 10 else f"{value:.2f}"
        if isinstance(value, int) and not isinstance(value, bool):
            return f"{value:,}"
        return str(value)

    cells = [[cell(row.get(key)) for key, _ in columns] for row in rows]
    widths = [max([len(heading)] + [len(line[index]) for line in cells]) for index, (_, heading) in enumerate(columns)]

    def table_row(values: list[str]) -> str:
        return "| " + " | ".join(value.ljust(width) for value, width in zip(values, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (width + 2) for width in widths) + "|"
    lines = [table_row([heading for _, heading in columns]), rule] + [table_row(values) for values in cells]
    return "\n".join(lines)

