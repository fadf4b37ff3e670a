"""cpus: `serve --processes auto` fits the CPU quota of its container, not the host's core count."""

import os

import pytest

from directory_api import cpus


def cgroup_v2(root, cpu_max: str):
    (root / "cpu.max").write_text(cpu_max + "\n")
    return root


def cgroup_v1(root, quota: str, period: str):
    (root / "cpu").mkdir()
    (root / "cpu" / "cpu.cfs_quota_us").write_text(quota + "\n")
    (root / "cpu" / "cpu.cfs_period_us").write_text(period + "\n")
    return root


@pytest.fixture
def host_cpus(monkeypatch):
    """Pretend the host lets this process run on 64 cores."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    return 64


def test_a_cgroup_v2_quota_of_two_cpus_gives_two_processes(tmp_path, host_cpus):
    assert cpus.available_cpus(cgroup_v2(tmp_path, "200000 100000")) == 2


def test_a_fractional_quota_rounds_up(tmp_path, host_cpus):
    assert cpus.available_cpus(cgroup_v2(tmp_path, "150000 100000")) == 2


def test_a_quota_under_one_cpu_still_gives_one_process(tmp_path, host_cpus):
    assert cpus.available_cpus(cgroup_v2(tmp_path, "50000 100000")) == 1


def test_cgroup_v2_without_a_limit_gives_every_core(tmp_path, host_cpus):
    assert cpus.available_cpus(cgroup_v2(tmp_path, "max 100000")) == host_cpus


def test_a_cgroup_v1_quota_is_read_when_there_is_no_v2_file(tmp_path, host_cpus):
    assert cpus.available_cpus(cgroup_v1(tmp_path, "300000", "100000")) == 3


def test_cgroup_v1_without_a_limit_gives_every_core(tmp_path, host_cpus):
    assert cpus.available_cpus(cgroup_v1(tmp_path, "-1", "100000")) == host_cpus


def test_no_cgroup_files_gives_every_core(tmp_path, host_cpus):
    assert cpus.available_cpus(tmp_path) == host_cpus


def test_a_quota_above_the_cores_allowed_gives_the_cores(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    assert cpus.available_cpus(cgroup_v2(tmp_path, "800000 100000")) == 2


@pytest.mark.parametrize("text", ["", "garbage", "abc 100000", "100000 0", "1 2 3"])
def test_an_unreadable_cpu_max_means_no_limit(text):
    assert cpus.parse_cpu_max(text) is None


def test_serve_processes_auto_is_the_cpus_this_process_may_use(monkeypatch):
    from directory_api.cli import parse_processes

    monkeypatch.setattr(cpus, "available_cpus", lambda: 3)
    assert parse_processes("auto") == 3
