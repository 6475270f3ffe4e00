"""The shipped retrieval configs load into their config classes."""

from __future__ import annotations

from pathlib import Path

import pytest

from cultureclip.core.config import load_config
from cultureclip.retrieval import IndexConfig, RetrievalEvalConfig

PRESETS = Path(__file__).resolve().parents[2] / "src" / "cultureclip" / "presets"
CONFIGS = [*(PRESETS / "index").glob("*.yaml"), *(PRESETS / "retrieval-eval").glob("*.yaml")]


@pytest.mark.parametrize("path", sorted(CONFIGS), ids=lambda p: p.name)
def test_config_loads(path: Path) -> None:
    cls = IndexConfig if "index" in path.name else RetrievalEvalConfig
    config = load_config(cls, path, ["model=runs/x/final"])
    assert config.model == "runs/x/final"
    if isinstance(config, RetrievalEvalConfig):
        assert len(config.grid()) > 1
    else:
        assert config.laclip is not None and config.laclip.k == 8
