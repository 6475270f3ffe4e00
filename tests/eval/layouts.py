"""Helpers for the released-layout tests: a colour-oracle model and hub-layout writers.

The oracle (``colour:oracle``) embeds an image as the one-hot of its nearest palette
colour and a text as the one-hot of the first colour word in it (or a slot no image
has), so which option wins is known by hand: the option naming the image's colour wins;
no such option means a tie, and ties are wrong.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor, nn

from cultureclip.models.base import VisionLanguageModel
from cultureclip.models.registry import MODELS

PALETTE = {
    "red": (200, 30, 30),
    "green": (30, 200, 30),
    "blue": (30, 30, 200),
    "yellow": (200, 200, 30),
    "cyan": (30, 200, 200),
    "magenta": (200, 30, 200),
}
NAMES = list(PALETTE)
WORD = re.compile(r"\b(" + "|".join(NAMES) + r")\b", re.IGNORECASE)


class ColourOracle(VisionLanguageModel):
    """Image: nearest palette colour; text: first colour word. Deterministic, no weights."""

    backend = "colour"

    def __init__(self, spec: str = "oracle", context_length: int = 77) -> None:
        super().__init__(f"colour:{spec}", context_length)
        self.embed_dim = len(NAMES) + 1
        self._scale = nn.Parameter(torch.tensor(math.log(100.0)))

    def preprocess(self, images: Sequence[Image.Image]) -> Tensor:
        return torch.tensor(
            [list(image.convert("RGB").resize((4, 4)).getpixel((1, 1))) for image in images],
            dtype=torch.float32,
        )

    def tokenize(self, texts: Sequence[str]) -> dict[str, Tensor]:
        ids = []
        for text in texts:
            match = WORD.search(text)
            ids.append(NAMES.index(match.group(1).lower()) if match else len(NAMES))
        return {"input_ids": torch.tensor(ids)}

    def _encode_image(self, pixel_values: Tensor) -> Tensor:
        palette = torch.tensor(list(PALETTE.values()), dtype=torch.float32)
        nearest = torch.cdist(pixel_values.float(), palette).argmin(dim=1)
        if self.spec == "colour:weak":  # a weaker model: sees blue as green
            nearest = torch.where(nearest == NAMES.index("blue"), NAMES.index("green"), nearest)
        return nn.functional.one_hot(nearest, self.embed_dim).float()

    def _encode_text(self, tokens: Mapping[str, Tensor]) -> Tensor:
        return nn.functional.one_hot(tokens["input_ids"], self.embed_dim).float()

    def tower(self, name: str) -> nn.Module:
        return nn.Identity()

    def head_parameters(self, name: str) -> list[nn.Parameter]:
        return []

    @property
    def logit_scale_param(self) -> nn.Parameter:
        return self._scale


if "colour" not in MODELS:
    MODELS.register("colour", help="test oracle: colours")(ColourOracle)


def jpeg(colour: str, size: int = 24) -> bytes:
    """A JPEG of one palette colour (kept byte for byte by the loaders)."""
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), PALETTE[colour]).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def image_struct(colour: str, name: str) -> dict[str, Any]:
    return {"bytes": jpeg(colour), "path": name}


def write_hub_layout(
    folder: Path, rows: list[dict[str, Any]], features: Any, split: str = "test"
) -> Path:
    """A folder exactly as a hub dataset repo: README.md (dataset_info, configs) + data/*.parquet."""
    import datasets
    import yaml

    dataset = datasets.Dataset.from_list(rows, features=features, split=datasets.Split(split))
    (folder / "data").mkdir(parents=True, exist_ok=True)
    dataset.to_parquet(str(folder / "data" / f"{split}-00000-of-00001.parquet"))
    info = dataset.info._to_yaml_dict()
    info["splits"] = [{"name": split, "num_bytes": 0, "num_examples": len(rows)}]
    card = {
        "dataset_info": info,
        "configs": [
            {
                "config_name": "default",
                "data_files": [{"split": split, "path": f"data/{split}-*"}],
            }
        ],
    }
    (folder / "README.md").write_text(
        "---\n" + yaml.safe_dump(card, sort_keys=False) + "---\n# test dataset\n"
    )
    return folder


def write_plain_parquet(path: Path, rows: list[dict[str, Any]], features: Any) -> Path:
    """The same rows as one plain parquet file (Image columns stay ``{bytes, path}`` structs)."""
    import datasets

    path.parent.mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_list(rows, features=features).to_parquet(str(path))
    return path
