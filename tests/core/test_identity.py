"""One content identity (core/identity.py): files by their bytes (hash remembered by path,
size, mtime and inode), folders, in-memory tensors, hub ids by commit."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch

from cultureclip.core import identity
from cultureclip.core.identity import (
    content_hash,
    file_hash,
    module_hash,
    spec_identity,
    weights_identity,
)


def _settle(path: Path) -> None:
    """An mtime a minute ago: the file is not being written any more."""
    past = time.time_ns() - 60 * 10**9
    os.utime(path, ns=(past, past))


def test_a_file_is_known_by_its_bytes_and_rehashed_only_when_its_stat_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "weights.bin"
    path.write_bytes(b"a" * 100)
    _settle(path)
    first = file_hash(path)
    copy = tmp_path / "copy.bin"
    copy.write_bytes(b"a" * 100)
    assert file_hash(copy) == first  # the same bytes elsewhere: the same identity
    reads = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda *a, **k: reads.append(a[0]) or real_open(*a, **k))
    assert file_hash(path) == first and not reads  # remembered
    stat = path.stat()
    path.write_bytes(b"b" * 100)  # same size: the mtime tells
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    assert file_hash(path) != first and reads


def test_a_file_written_just_now_is_not_remembered(tmp_path: Path) -> None:
    """Two rewrites within the clock's granularity may share an mtime ("racy git")."""
    path = tmp_path / "weights.bin"
    path.write_bytes(b"one")
    first = file_hash(path)
    stat = path.stat()
    path.write_bytes(b"two")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # the same mtime, size, inode
    assert file_hash(path) != first


def test_large_file_hashes_are_remembered_on_disk_and_a_corrupt_memo_is_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "big.safetensors"
    path.write_bytes(os.urandom((1 << 20) + 5))
    _settle(path)
    digest = file_hash(path)
    memos = list((identity.cache_root() / "file-hashes").glob("*.txt"))
    memo = next(m for m in memos if m.read_text() == digest)
    identity._memo.clear()  # a new process
    assert file_hash(path) == digest
    memo.write_text("torn")
    identity._memo.clear()
    with caplog.at_level("WARNING"):
        assert file_hash(path) == digest
    assert "corrupt file-hash memo" in caplog.text


def test_a_folder_changes_with_any_file_but_not_with_hidden_ones(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"\x00" * 64)
    before = content_hash(tmp_path / "m")
    (tmp_path / "m" / ".cache").mkdir()
    (tmp_path / "m" / ".cache" / "x").write_text("noise")
    assert content_hash(tmp_path / "m") == before
    (tmp_path / "m" / "model.safetensors").write_bytes(b"\x00" * 63 + b"\x01")
    assert content_hash(tmp_path / "m") != before
    assert content_hash(tmp_path / "missing") == ""


def test_an_in_memory_model_is_known_by_its_tensors() -> None:
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4))
    before = module_hash(module)
    module[1].running_mean.add_(1)  # a buffer counts too
    assert module_hash(module) != before
    half = torch.nn.Linear(4, 4).to(torch.bfloat16)
    assert module_hash(half)  # 16-bit tensors hash as raw words


def test_a_spec_is_known_by_its_weights_not_its_path(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.safetensors").write_bytes(b"same")
    assert spec_identity(f"hf:{tmp_path / 'a'}") == spec_identity(f"hf:{tmp_path / 'b'}")
    assert spec_identity("lite:en?dim=32") == {"spec": "lite:en?dim=32"}
    assert weights_identity(str(tmp_path / "a"))["weights"]


def test_a_hub_id_is_known_by_the_commit_of_its_local_snapshot_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    refs = tmp_path / "models--org--tiny" / "refs"
    refs.mkdir(parents=True)
    (refs / "main").write_text("abc123\n")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    identity.hub_revision.cache_clear()
    try:
        assert spec_identity("hf:org/tiny") == {"spec": "hf:org/tiny", "revision": "abc123"}
        assert identity.hub_revision("org/unknown") is None
    finally:
        identity.hub_revision.cache_clear()


def test_a_local_chat_model_retrained_in_place_is_another_model(tmp_path: Path) -> None:
    from cultureclip.core.llm import LLMSettings

    (tmp_path / "llm").mkdir()
    (tmp_path / "llm" / "model.safetensors").write_bytes(b"one")
    local = LLMSettings(backend="transformers", model=str(tmp_path / "llm"))
    before = local.identity()
    (tmp_path / "llm" / "model.safetensors").write_bytes(b"two!")
    assert local.identity() != before and local.identity()["weights"]
    served = LLMSettings(backend="openai", model="org/model")
    assert "weights" not in served.identity() and "revision" not in served.identity()
