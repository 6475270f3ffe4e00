"""``open_clip:<arch>/<pretrained>``: models of the open_clip library (specs: docs/models.md).

Models are always built with a separate text module (open_clip's ``force_custom_text``)
so the text tower is one module that LoRA and "full" mode can target; open_clip converts
standard checkpoints to that layout when loading.

LoRA defaults to the MLP projections ``c_fc`` and ``c_proj`` of every residual block.
open_clip's attention is ``nn.MultiheadAttention``: its q/k/v projection is one fused
``in_proj_weight`` parameter (no module for peft to wrap), and its ``out_proj`` weight is
read directly by ``F.multi_head_attention_forward``, so an adapter wrapped around
``out_proj`` would never run. The MLP linears are ordinary modules called normally.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor, nn

from cultureclip.core.io import atomic_path, atomic_write_json
from cultureclip.models.base import BackendError, VisionLanguageModel
from cultureclip.models.registry import MODELS

SCHEMAS = ("hf-hub:", "local-dir:")
EXPORT_CONFIG = "open_clip_config.json"
EXPORT_WEIGHTS = "open_clip_model.safetensors"
RANDOM_INIT_SEED = 0


def parse_open_clip_spec(argument: str) -> tuple[str, str | None]:
    """``"ViT-B-32/laion2b_s34b_b79k"`` → ``("ViT-B-32", "laion2b_s34b_b79k")``.

    Everything after the first ``/`` is the pretrained tag or checkpoint path (so
    absolute paths work: ``ViT-B-32//data/ckpt.pt``). Schema names are kept whole.
    """
    if argument.startswith(SCHEMAS):
        return argument, None
    arch, _, pretrained = argument.partition("/")
    if not arch:
        raise BackendError(
            f"open_clip:{argument}: the architecture name is empty (e.g. open_clip:ViT-B-32/openai)"
        )
    return arch, pretrained or None


@MODELS.register(
    "open_clip", help="open_clip models (open_clip:<arch>/<pretrained tag or checkpoint>)"
)
class OpenCLIPBackend(VisionLanguageModel):
    """An open_clip ``CustomTextCLIP`` behind the cultureclip interface."""

    backend = "open_clip"
    native_library = "open_clip"
    default_lora_targets = {"image": ("c_fc", "c_proj"), "text": ("c_fc", "c_proj")}

    def __init__(self, argument: str, context_length: int | None = None) -> None:
        try:
            import open_clip
        except ImportError as exc:
            raise BackendError(
                "the open_clip backend needs open_clip_torch: pip install 'cultureclip[open_clip]'"
            ) from exc

        arch, pretrained = parse_open_clip_spec(argument)
        try:
            # Seeded so that a spec without weights ("open_clip:ViT-B-32") names one fixed
            # random model: saved fine-tunes store only what trained and rebuild the rest.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(RANDOM_INIT_SEED)
                model, _, preprocess = open_clip.create_model_and_transforms(
                    arch, pretrained=pretrained, force_custom_text=True
                )
            tokenizer = open_clip.get_tokenizer(arch)
        except (RuntimeError, FileNotFoundError, ValueError) as exc:
            raise BackendError(
                f"open_clip cannot build {arch!r} with pretrained={pretrained!r}: {exc}. Known architectures: "
                "open_clip.list_models(); tags: open_clip.list_pretrained()"
            ) from exc
        native_context = int(getattr(model.text, "context_length", 77))
        if context_length is not None and context_length != native_context:
            # open_clip's causal mask and positional table are sized for the native
            # length; silently using another length would change the model.
            raise BackendError(
                f"open_clip:{argument} has a fixed context length of {native_context}; "
                f"got context_length={context_length}"
            )
        super().__init__(f"open_clip:{argument}", context_length=native_context)
        self.arch = arch
        self.model = model
        self.tokenizer = tokenizer
        self._preprocess = preprocess
        output_dim = getattr(model.text, "output_dim", None) or getattr(
            model.visual, "output_dim", None
        )
        if output_dim is None:
            raise BackendError(
                f"open_clip:{argument}: cannot tell the embedding size of this model"
            )
        self.embed_dim = int(output_dim)

    # ---- inputs ---------------------------------------------------------------------
    def preprocess(self, images: Sequence[Image.Image]) -> Tensor:
        if not images:
            raise ValueError("preprocess needs at least one image")
        return torch.stack([self._preprocess(image.convert("RGB")) for image in images])

    def tokenize(self, texts: Sequence[str]) -> dict[str, Tensor]:
        return {"input_ids": self.tokenizer(list(texts))}

    # ---- towers ---------------------------------------------------------------------
    def _encode_image(self, pixel_values: Tensor) -> Tensor:
        return self.model.encode_image(pixel_values.to(self._dtype))

    def _encode_text(self, tokens: Mapping[str, Tensor]) -> Tensor:
        return self.model.encode_text(tokens["input_ids"])

    def _encode_image_patches(self, pixel_values: Tensor) -> Tensor:
        from open_clip.transformer import VisionTransformer

        visual = self.model.visual
        if (
            not isinstance(visual, VisionTransformer)
            or visual.attn_pool is not None
            or visual.proj is None
        ):
            raise BackendError(
                f"patch features need a plain open_clip ViT image tower; {self.arch!r} has "
                f"{type(visual).__name__}{' with attention pooling' if getattr(visual, 'attn_pool', None) else ''}"
            )
        hidden = visual.transformer(visual._embeds(pixel_values.to(self._dtype)))
        # Without the class token; the same norm as the pooled path.
        return visual.ln_post(hidden[:, 1:]) @ visual.proj

    def tower(self, name: str) -> nn.Module:
        return {"image": self.model.visual, "text": self.model.text}[name]

    def head_parameters(self, name: str) -> list[nn.Parameter]:
        tower = self.tower(name)
        if name == "image":  # a ViT's proj, a timm tower's head, a ModifiedResNet's attnpool
            attnpool = getattr(tower, "attnpool", None)
            candidates = [getattr(tower, "proj", None), getattr(tower, "head", None)]
            candidates.append(getattr(attnpool, "c_proj", None))
        else:  # a TextTransformer's text_projection, an HF text tower's proj
            candidates = [getattr(tower, "text_projection", None), getattr(tower, "proj", None)]
        head = next((part for part in candidates if part is not None), None)
        if head is None:
            raise BackendError(f"{self.arch!r}: no {name} projection head found for 'heads' mode")
        return [head] if isinstance(head, nn.Parameter) else list(head.parameters())

    @property
    def logit_scale_param(self) -> nn.Parameter:
        return self.model.logit_scale

    def native_module(self) -> nn.Module:
        return self.model

    # ---- export ---------------------------------------------------------------------
    def model_config(self) -> dict[str, Any]:
        """The open_clip model config this model was built from (with ``custom_text`` set)."""
        import open_clip

        if self.arch.startswith("local-dir:"):
            config = json.loads(
                (Path(self.arch.removeprefix("local-dir:")) / EXPORT_CONFIG).read_text()
            )["model_cfg"]
        elif self.arch.startswith("hf-hub:"):
            from open_clip.factory import _get_hf_config

            config = _get_hf_config(self.arch.removeprefix("hf-hub:"))["model_cfg"]
        else:
            config = open_clip.get_model_config(self.arch)
        if config is None:
            raise BackendError(f"no open_clip model config found for {self.arch!r}")
        return {**config, "custom_text": True}

    def export(self, path: str | Path) -> Path:
        """Merges LoRA and writes an open_clip local dir: ``open_clip:local-dir:<path>`` loads it."""
        from open_clip import get_model_preprocess_cfg
        from safetensors.torch import save_file

        self.merge_lora()
        path = Path(path)
        state = {
            name: tensor.detach().cpu().contiguous()
            for name, tensor in self.model.state_dict().items()
        }
        with atomic_path(path / EXPORT_WEIGHTS) as tmp:
            save_file(state, str(tmp))
        atomic_write_json(
            path / EXPORT_CONFIG,
            {
                "model_cfg": self.model_config(),
                "preprocess_cfg": get_model_preprocess_cfg(self.model),
            },
        )
        return path
