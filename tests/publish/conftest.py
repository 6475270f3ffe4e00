"""Fixtures of the publishing tests: tiny models of each family, built in the test's folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.models.conftest import TINY_OPEN_CLIP, TINY_OPEN_CLIP_CONFIG

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_open_clip_arch(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Registers the tiny open_clip architecture of tests/models and returns its name."""
    import open_clip

    directory = tmp_path_factory.mktemp("open_clip_configs")
    (directory / f"{TINY_OPEN_CLIP}.json").write_text(json.dumps(TINY_OPEN_CLIP_CONFIG))
    open_clip.add_model_config(directory)
    return TINY_OPEN_CLIP


def run_fresh(code: str, cwd: Path) -> dict:
    """Runs ``code`` in a new Python process (offline, nothing cached from this one) and
    returns the JSON it prints last."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(SRC)}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])
