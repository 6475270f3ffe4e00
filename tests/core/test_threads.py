"""Threads follow the CPUs this process may use, or the user's choice."""

from __future__ import annotations

import pytest
import torch

from cultureclip.core import threads


@pytest.fixture(autouse=True)
def _restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_the_pool_shrinks_to_the_cpus_this_process_may_use(monkeypatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("CULTURECLIP_THREADS", raising=False)
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0})
    torch.set_num_threads(4)
    assert threads.available_cpus() == 1
    assert threads.configure_threads() == 1 and torch.get_num_threads() == 1


def test_a_cgroup_quota_caps_the_count(monkeypatch) -> None:
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: set(range(64)))
    monkeypatch.setattr(threads, "_cgroup_quota", lambda: 2.5)
    assert threads.available_cpus() == 2


def test_the_users_choice_wins(monkeypatch) -> None:
    monkeypatch.setenv("CULTURECLIP_THREADS", "3")
    torch.set_num_threads(1)
    assert threads.configure_threads() == 3 and torch.get_num_threads() == 3


def test_before_torch_is_imported_the_environment_is_set_instead(monkeypatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("CULTURECLIP_THREADS", raising=False)
    monkeypatch.delitem(threads.sys.modules, "torch")
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0})
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 8)
    assert threads.configure_threads() == 1
    assert threads.os.environ["OMP_NUM_THREADS"] == "1"
    assert "torch" not in threads.sys.modules  # nothing imported it


def test_an_unlimited_process_keeps_torchs_own_default(monkeypatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("CULTURECLIP_THREADS", raising=False)
    monkeypatch.delitem(threads.sys.modules, "torch")
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: set(range(8)))
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 8)
    monkeypatch.setattr(threads, "_cgroup_quota", lambda: None)
    threads.configure_threads()
    assert "OMP_NUM_THREADS" not in threads.os.environ
