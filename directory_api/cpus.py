"""How many CPUs this process may really use: `serve --processes auto`.

os.cpu_count() is the host's core count. A container limited to 2 CPUs on a
64-core host would fork 64 processes that then fight over 2 CPUs' worth of
time slices. What bounds us is the smallest of: the cores the scheduler lets
us run on (affinity, cpuset) and the CFS quota of our cgroup, which docker's
`--cpus`, Kubernetes' CPU limit and systemd's CPUQuota= all set:
cgroup v2's `cpu.max` ("QUOTA PERIOD", or "max PERIOD" for none), or cgroup
v1's `cpu.cfs_quota_us` / `cpu.cfs_period_us` (quota -1 for none).
"""

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def available_cpus(cgroup_root: Path = CGROUP_ROOT) -> int:
    """CPUs this process can use: affinity, capped by the cgroup's CPU quota; at least 1."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = cgroup_cpu_quota(cgroup_root)
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def cgroup_cpu_quota(cgroup_root: Path = CGROUP_ROOT) -> float | None:
    """The CPU quota in CPUs (1.5 for "150000 100000"), or None where there is none or no cgroup."""
    v2 = _read(cgroup_root / "cpu.max")
    if v2 is not None:
        return parse_cpu_max(v2)
    quota = _read(cgroup_root / "cpu" / "cpu.cfs_quota_us")
    period = _read(cgroup_root / "cpu" / "cpu.cfs_period_us")
    if quota is not None and period is not None:
        return parse_cfs(quota, period)
    return None


def parse_cpu_max(text: str) -> float | None:
    """cgroup v2's cpu.max: "max 100000" is no limit, "200000 100000" is 2 CPUs."""
    fields = text.split()
    if len(fields) != 2 or fields[0] == "max":
        return None
    return _ratio(fields[0], fields[1])


def parse_cfs(quota: str, period: str) -> float | None:
    """cgroup v1's cpu.cfs_quota_us and cpu.cfs_period_us: a quota of -1 is no limit."""
    return _ratio(quota.strip(), period.strip())


def _ratio(quota: str, period: str) -> float | None:
    try:
        quota_us, period_us = int(quota), int(period)
    except ValueError:
        return None
    if quota_us <= 0 or period_us <= 0:
        return None
    return quota_us / period_us


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None
