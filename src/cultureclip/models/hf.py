"""``hf:<hub id or directory>``: transformers CLIPModel, ChineseCLIPModel, SiglipModel."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor, nn

from cultureclip.models.base import BackendError, VisionLanguageModel
from cultureclip.models.registry import MODELS

SUPPORTED_MODEL_TYPES = ("clip", "chinese_clip", "siglip")
TOKEN_KEYS = ("input_ids", "attention_mask", "token_type_ids")  # what the text towers read


def _pooled(output: Any) -> Tensor:
    """transformers 5 returns an output object from ``get_*_features``; 4.x a tensor."""
    return output if isinstance(output, Tensor) else output.pooler_output


@MODELS.register("hf", help="transformers CLIP / Chinese-CLIP / SigLIP (hf:<hub id or local dir>)")
class HFBackend(VisionLanguageModel):
    backend = "hf"
    native_library = "transformers"

    def __init__(self, name_or_path: str, context_length: int | None = None) -> None:
        from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoTokenizer

        config = AutoConfig.from_pretrained(name_or_path)
        if config.model_type not in SUPPORTED_MODEL_TYPES:
            raise BackendError(
                f"hf:{name_or_path} is a {config.model_type!r} model; the hf backend supports "
                f"{', '.join(SUPPORTED_MODEL_TYPES)}"
            )
        max_positions = config.text_config.max_position_embeddings
        super().__init__(
            f"hf:{name_or_path}", context_length=min(context_length or 77, max_positions)
        )
        self.model_type = config.model_type
        self.model = AutoModel.from_pretrained(name_or_path, dtype=torch.float32)
        self.tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        self.image_processor = AutoImageProcessor.from_pretrained(name_or_path)
        self.embed_dim = int(
            getattr(config, "projection_dim", None) or config.text_config.hidden_size
        )
        if self.model_type == "chinese_clip":  # a BERT text tower
            self.default_lora_targets = {"image": ("q_proj", "v_proj"), "text": ("query", "value")}

    # ---- inputs ---------------------------------------------------------------------
    def preprocess(self, images: Sequence[Image.Image]) -> Tensor:
        rgb = [image.convert("RGB") for image in images]
        return self.image_processor(images=rgb, return_tensors="pt")["pixel_values"]

    def tokenize(self, texts: Sequence[str]) -> dict[str, Tensor]:
        padding = "max_length" if self.model_type == "siglip" else "longest"
        tokens = self.tokenizer(
            list(texts),
            padding=padding,
            truncation=True,
            max_length=self.context_length,
            return_tensors="pt",
        )
        return {k: v for k, v in tokens.items() if k in TOKEN_KEYS}

    # ---- towers ---------------------------------------------------------------------
    def _encode_image(self, pixel_values: Tensor) -> Tensor:
        return _pooled(self.model.get_image_features(pixel_values=pixel_values.to(self._dtype)))

    def _encode_text(self, tokens: Mapping[str, Tensor]) -> Tensor:
        if self.model_type == "siglip":
            tokens = {k: v for k, v in tokens.items() if k == "input_ids"}
        return _pooled(self.model.get_text_features(**tokens))

    def _encode_image_patches(self, pixel_values: Tensor) -> Tensor:
        vision = self.model.vision_model
        hidden = vision(pixel_values=pixel_values.to(self._dtype)).last_hidden_state
        if self.model_type == "siglip":
            return hidden  # already post-layernormed, same space as the pooled head input
        patches = vision.post_layernorm(hidden[:, 1:, :])
        return self.model.visual_projection(patches)

    def tower(self, name: str) -> nn.Module:
        return {"image": self.model.vision_model, "text": self.model.text_model}[name]

    def head_parameters(self, name: str) -> list[nn.Parameter]:
        if self.model_type == "siglip":
            return list(self.tower(name).head.parameters())
        projection = self.model.visual_projection if name == "image" else self.model.text_projection
        return list(projection.parameters())

    @property
    def logit_scale_param(self) -> nn.Parameter:
        return self.model.logit_scale

    def native_module(self) -> nn.Module:
        return self.model

    def export(self, path: str | Path) -> Path:
        """Merges LoRA and writes a transformers checkpoint (``AutoModel.from_pretrained(path)``)."""
        self.merge_lora()
        path = Path(path)
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        self.image_processor.save_pretrained(path)
        return path
