"""Shared fixtures. Tests never reach a model hub: tiny checkpoints are built here."""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The per-user cache (file-hash memos, shared frozen-tower features) of this test session
os.environ.setdefault("CULTURECLIP_CACHE", tempfile.mkdtemp(prefix="cultureclip-cache-"))

from pathlib import Path

import pytest

from cultureclip.testing import TINY_VLM_FAMILIES


@pytest.fixture
def empty_feature_store():
    """The process-wide frozen-tower store, empty before and after the test."""
    from cultureclip.models.feature_cache import shared_store

    shared_store().clear()
    yield
    shared_store().clear()


@pytest.fixture(scope="session")
def tiny_hf_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny random clip / chinese_clip / siglip checkpoints written with save_pretrained."""
    from cultureclip.testing import build_tiny_hf_model

    root = tmp_path_factory.mktemp("tiny_hf")
    return {
        kind: build_tiny_hf_model(root / kind, kind) for kind in ("clip", "chinese_clip", "siglip")
    }


@pytest.fixture(scope="session")
def tiny_vlm_dirs(tmp_path_factory: pytest.TempPathFactory):
    """``build(family)``: a tiny random image-text-to-text model of a real family, built once
    per session (tests only read it), in a folder named after the family."""
    from cultureclip.testing import build_tiny_vlm

    root = tmp_path_factory.mktemp("tiny_vlm")
    built: dict[str, Path] = {}

    def build(family: str) -> Path:
        if family not in built:
            built[family] = build_tiny_vlm(root / family, family=family)
        return built[family]

    return build


@pytest.fixture(scope="session")
def tiny_vlm(tiny_vlm_dirs) -> Path:
    """A tiny LLaVA (CLIP vision tower + Llama) with its processor."""
    return tiny_vlm_dirs("llava")


@pytest.fixture(scope="session", params=TINY_VLM_FAMILIES)
def any_vlm(request: pytest.FixtureRequest, tiny_vlm_dirs) -> Path:
    """A tiny VLM of each family (their processors expand images differently)."""
    return tiny_vlm_dirs(request.param)


@pytest.fixture(scope="session")
def tiny_clip_dir(tiny_hf_dirs: dict[str, Path]) -> Path:
    return tiny_hf_dirs["clip"]


@pytest.fixture
def tiny_model(tiny_clip_dir: Path):
    """A fresh tiny hf CLIP backend (spec ``hf:<dir>``)."""
    from cultureclip.models.registry import create_model

    return create_model(f"hf:{tiny_clip_dir}")


@pytest.fixture
def toy_cultwin(tmp_path: Path) -> Path:
    """A small synthetic CulTwin JSONL with images beside it."""
    from cultureclip.testing import write_toy_cultwin

    return write_toy_cultwin(tmp_path / "toy_cultwin", n_pairs=8)
