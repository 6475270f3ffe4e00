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
