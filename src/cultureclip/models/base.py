"""The one interface every model backend implements.

A backend is a two-tower (image, text) ``nn.Module``. Training, evaluation and
retrieval only ever talk to this interface, so any registered backend (``hf:``,
``open_clip:``, ``lite:``) can be fine-tuned, evaluated and indexed.

Conventions:
- ``encode_image`` / ``encode_text`` return L2-normalised features by default, as
  CLIP does (the CultureCLIP reference code forgot to normalise; we do not).
- ``logit_scale`` is the multiplier ``s = exp(t)`` (a tensor that carries grad when
  the temperature trains).
- Saving writes ``cultureclip_model.json`` plus the weights that differ from the
  base checkpoint (everything that trained, LoRA adapters included), so a LoRA
  fine-tune of a hub model is a few MB; :meth:`export` merges LoRA and writes the
  backend's native format.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar

import torch
from PIL import Image
from pydantic import Field
from torch import Tensor, nn

from cultureclip.core.config import Config
from cultureclip.core.device import autocast
from cultureclip.core.errors import UserError
from cultureclip.core.io import atomic_path, atomic_write_json
from cultureclip.models.feature_cache import shared_tower_features

MODEL_CONFIG_NAME = "cultureclip_model.json"
WEIGHTS_NAME = "weights.safetensors"
TOWERS = ("image", "text")
#: token-dict key of precomputed text-tower outputs (see :meth:`VisionLanguageModel.tower_namespace`)
TOWER_FEATURES = "tower_features"


def by_length(texts: Sequence[str]) -> list[int]:
    """Indices of ``texts`` from shortest to longest (stable): batches that pad little."""
    return sorted(range(len(texts)), key=lambda i: len(texts[i]))


class TrainMode(StrEnum):
    """How one tower trains."""

    frozen = "frozen"  # nothing in the tower trains
    heads = "heads"  # only the projection head(s) of the tower
    lora = "lora"  # LoRA adapters on the tower's attention projections (peft)
    full = "full"  # every parameter of the tower


class LoraSettings(Config):
    """LoRA adapters (peft), the same keys for ``train`` and ``train-vlm``."""

    r: int = Field(4, ge=1)
    alpha: float = Field(16.0, gt=0)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    #: None: the model's defaults (q_proj/v_proj of CLIP-style towers; the text model's
    #: attention and MLP projections of a chat VLM); a peft regex, ``all-linear`` or names
    target_modules: str | list[str] | None = None
    #: modules trained in full beside the adapters (a chat VLM's projector, e.g.
    #: ``multi_modal_projector`` of LLaVA); contrastive towers train heads with ``heads``
    modules_to_save: list[str] = Field(default_factory=list)


class TrainingSettings(Config):
    image: TrainMode = TrainMode.frozen
    text: TrainMode = TrainMode.frozen
    logit_scale: bool = False
    lora: LoraSettings = LoraSettings()


class BackendError(UserError, RuntimeError):
    """A backend cannot do what was asked (unsupported mode, missing feature, bad spec)."""


class VisionLanguageModel(nn.Module, ABC):
    """Base class of model backends. Subclasses fill in the abstract members."""

    #: registry prefix, e.g. ``"hf"``
    backend: str = ""
    #: default LoRA target module names per tower
    default_lora_targets: Mapping[str, Sequence[str]] = {
        "image": ("q_proj", "v_proj"),
        "text": ("q_proj", "v_proj"),
    }
    #: the library that loads this backend's :meth:`export` folder without cultureclip
    #: (the model card's ``library_name``)
    native_library: ClassVar[str] = "cultureclip"
    #: training modes each tower supports
    supported_modes: Mapping[str, Sequence[TrainMode]] = {
        "image": tuple(TrainMode),
        "text": tuple(TrainMode),
    }

    def __init__(self, spec: str, context_length: int = 77) -> None:
        super().__init__()
        self.spec = spec  # what create_model() was given; reloads the base weights
        self.context_length = context_length
        self.training_setup = TrainingSettings()
        self.embed_dim = 0  # set by the subclass
        self._lora_towers: set[str] = set()
        # True once weights outside the heads may differ from the base checkpoint
        # (full training, merged LoRA, WiSE-FT): save() then stores the whole state.
        self.weights_diverged = False

    # ---- abstract: what a backend must provide --------------------------------------
    @abstractmethod
    def preprocess(self, images: Sequence[Image.Image]) -> Tensor:
        """PIL images → a float tensor batch ready for :meth:`encode_image`."""

    @abstractmethod
    def tokenize(self, texts: Sequence[str]) -> dict[str, Tensor]:
        """Texts → token tensors (truncated to ``context_length``)."""

    @abstractmethod
    def _encode_image(self, pixel_values: Tensor) -> Tensor:
        """Unnormalised image embeddings ``[B, D]``."""

    @abstractmethod
    def _encode_text(self, tokens: Mapping[str, Tensor]) -> Tensor:
        """Unnormalised text embeddings ``[B, D]``."""

    @abstractmethod
    def tower(self, name: str) -> nn.Module:
        """The module holding the ``image`` or ``text`` tower (LoRA is applied inside it)."""

    @abstractmethod
    def head_parameters(self, name: str) -> list[nn.Parameter]:
        """Parameters of the projection head of tower ``name`` (trainable in ``heads`` mode)."""

    @property
    @abstractmethod
    def logit_scale_param(self) -> nn.Parameter:
        """The log-temperature parameter ``t`` (``s = exp(t)``)."""

    # ---- optional -------------------------------------------------------------------
    def _encode_image_patches(self, pixel_values: Tensor) -> Tensor:
        raise BackendError(f"backend {self.backend!r} does not expose patch features")

    def export(self, path: str | Path) -> Path:
        """Writes a merged model in the backend's native format (default: cultureclip format)."""
        self.merge_lora()
        return self.save(path)

    def native_module(self) -> nn.Module | None:
        """The wrapped model of the backend's native library (what :meth:`export` writes),
        or None when the backend has none: a LoRA adapter is saved in peft's format
        relative to this module, so peft loads it onto the native base model."""
        return None

    # ---- optional: frozen-tower features ---------------------------------------------
    # A backend whose towers split into (tower → pooled features → head) can let callers
    # compute a fixed tower's outputs once per input and feed the head from them: the
    # training data path does so for frozen/heads towers (cultureclip.train.data).
    #: True when the backend implements the tower-output methods below
    splits_towers: ClassVar[bool] = False

    def tower_namespace(self, name: str) -> str | None:
        """A fingerprint of tower ``name``'s weights *and* input preprocessing while its
        outputs are a pure function of the input (the tower is frozen or heads-only, in
        eval mode); None when they are not, or the backend cannot split its towers."""
        return None

    def image_tower_features(self, pixel_values: Tensor) -> Tensor:
        """The image tower's pooled outputs ``[B, F]`` (what the head projects), no grad."""
        raise BackendError(f"backend {self.backend!r} does not expose tower features")

    def text_tower_features(self, texts: Sequence[str]) -> Tensor:
        """The text tower's pooled outputs ``[B, F]`` for raw texts, no grad."""
        raise BackendError(f"backend {self.backend!r} does not expose tower features")

    def _encode_from_tower(self, name: str, features: Tensor) -> Tensor:
        """Unnormalised embeddings from tower ``name``'s pooled outputs (its head only)."""
        raise BackendError(f"backend {self.backend!r} cannot encode from tower features")

    def _towers_changed(self) -> None:
        """Called when tower weights may have changed behind the tensors' version counters."""

    # ---- shared behaviour -----------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def _dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def logit_scale(self) -> Tensor:
        return self.logit_scale_param.exp()

    def encode_image(self, pixel_values: Tensor, normalize: bool = True) -> Tensor:
        """Pixels ``[B, C, H, W]``, or a fixed image tower's outputs ``[B, F]`` (heads only)."""
        inputs = pixel_values.to(self.device)
        # Only a backend that splits its towers reads [B, F] as tower outputs: another
        # backend's preprocessing may well make 2-D pixel tensors of its own.
        if inputs.ndim == 2 and self.splits_towers:
            features = self._encode_from_tower("image", inputs)
        else:
            features = self._encode_image(inputs)
        return nn.functional.normalize(features, dim=-1) if normalize else features

    def encode_text(self, tokens: Mapping[str, Tensor], normalize: bool = True) -> Tensor:
        """Token tensors, or ``{TOWER_FEATURES: [B, F]}`` from a fixed text tower (heads only)."""
        inputs = {k: v.to(self.device) for k, v in tokens.items()}
        if TOWER_FEATURES in inputs:
            features = self._encode_from_tower("text", inputs[TOWER_FEATURES])
        else:
            features = self._encode_text(inputs)
        return nn.functional.normalize(features, dim=-1) if normalize else features

    def encode_image_patches(self, pixel_values: Tensor, normalize: bool = True) -> Tensor:
        """Projected patch/token features ``[B, P, D]`` in the joint space (for local alignment)."""
        features = self._encode_image_patches(pixel_values.to(self.device))
        return nn.functional.normalize(features, dim=-1) if normalize else features

    def forward(
        self, pixel_values: Tensor, tokens: Mapping[str, Tensor]
    ) -> tuple[Tensor, Tensor, Tensor]:
        return self.encode_image(pixel_values), self.encode_text(tokens), self.logit_scale

    #: the precision inference (``embed_images``, ``embed_texts``, :meth:`inference`) runs
    #: in: ``bf16``/``fp16`` under autocast on the model's device; set by
    #: ``create_model(..., precision=)``. Training autocasts on its own.
    inference_precision: str = "fp32"

    @contextlib.contextmanager
    def inference(self) -> Iterator[None]:
        """Eval mode and :attr:`inference_precision` for the block, restored after; a model
        already in eval mode is left alone (switching every submodule costs ~3% of a small
        zero-shot run)."""
        was_training = self.training
        if was_training:
            self.eval()
        try:
            with autocast(self.device, self.inference_precision):
                yield
        finally:
            if was_training:
                self.train()

    @torch.no_grad()
    def embed_images(self, images: Sequence[Image.Image], batch_size: int = 64) -> Tensor:
        """Normalised embeddings of PIL images, on the CPU, in inference mode (a fixed image
        tower's outputs come from the store shared across checkpoints and runs)."""
        with self.inference():
            stored = shared_tower_features(self, "image", images, batch_size) if images else None
            out = [
                self.encode_image(
                    stored[i : i + batch_size]
                    if stored is not None
                    else self.preprocess(images[i : i + batch_size])
                )
                .float()
                .cpu()
                for i in range(0, len(images), batch_size)
            ]
        return torch.cat(out) if out else torch.empty(0, self.embed_dim)

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str], batch_size: int = 256) -> Tensor:
        """Normalised embeddings of texts, on the CPU, in inference mode.

        Texts of more than one batch are batched by length, so a batch pads to its own
        longest text rather than to a long one drawn at random (1.5-2x less text-tower
        work on captions; each row is the same up to float rounding)."""
        order = by_length(texts) if len(texts) > batch_size else list(range(len(texts)))
        with self.inference():
            stored = shared_tower_features(self, "text", texts, batch_size) if texts else None
            if stored is not None:  # a fixed text tower's outputs, shared: only the head runs
                return torch.cat(
                    [
                        self.encode_text({TOWER_FEATURES: stored[i : i + batch_size]}).float().cpu()
                        for i in range(0, len(texts), batch_size)
                    ]
                )
            out = [
                self.encode_text(self.tokenize([texts[j] for j in order[i : i + batch_size]]))
                .float()
                .cpu()
                for i in range(0, len(texts), batch_size)
            ]
        if not out:
            return torch.empty(0, self.embed_dim)
        rows = torch.empty(len(texts), out[0].shape[1])
        rows[torch.as_tensor(order)] = torch.cat(out)  # back in the texts' order
        return rows

    # ---- training modes -------------------------------------------------------------
    def configure_training(
        self, setup: TrainingSettings | None = None, **kwargs: Any
    ) -> TrainingSettings:
        """Sets which parameters train; LoRA adapters are injected with peft where asked.

        ``configure_training(image="lora", text="lora")`` or pass a :class:`TrainingSettings`.
        Calling it again re-applies from scratch (LoRA layers already injected stay).
        """
        setup = setup or TrainingSettings.model_validate(kwargs)
        for name in TOWERS:
            mode = getattr(setup, name)
            if mode not in self.supported_modes[name]:
                allowed = ", ".join(m.value for m in self.supported_modes[name])
                raise BackendError(
                    f"backend {self.backend!r} cannot train its {name} tower in mode {mode.value!r}; "
                    f"supported: {allowed}"
                )
        for param in self.parameters():
            param.requires_grad_(False)
        for name in TOWERS:
            mode = getattr(setup, name)
            if mode is TrainMode.full:
                self.weights_diverged = True
                for param in self.tower(name).parameters():
                    param.requires_grad_(True)
            elif mode is TrainMode.heads:
                for param in self.head_parameters(name):
                    param.requires_grad_(True)
            elif mode is TrainMode.lora:
                self._inject_lora(name, setup.lora)
                for pname, param in self.tower(name).named_parameters():
                    if "lora_" in pname:
                        param.requires_grad_(True)
        self.logit_scale_param.requires_grad_(setup.logit_scale)
        self.training_setup = setup
        self._towers_changed()
        # New LoRA adapters start in training mode (an eval-mode model would apply their
        # dropout at inference), and a backend's train() may keep towers of some modes in
        # eval mode: re-apply the model's mode under the new setup.
        self.train(self.training)
        return setup

    def _inject_lora(self, tower_name: str, settings: LoraSettings) -> None:
        if tower_name in self._lora_towers:
            return
        from peft import LoraConfig, inject_adapter_in_model

        targets = settings.target_modules or list(self.default_lora_targets[tower_name])
        config = LoraConfig(
            r=settings.r,
            lora_alpha=settings.alpha,
            lora_dropout=settings.dropout,
            target_modules=targets,
        )
        try:
            inject_adapter_in_model(config, self.tower(tower_name))
        except ValueError as exc:
            raise BackendError(f"LoRA on the {tower_name} tower of {self.spec!r}: {exc}") from exc
        self._lora_towers.add(tower_name)

    def merge_lora(self) -> None:
        """Folds LoRA adapters into the base weights and removes the adapter layers."""
        from peft.tuners.tuners_utils import BaseTunerLayer

        for tower_name in list(self._lora_towers):
            tower = self.tower(tower_name)
            for name, module in list(tower.named_modules()):
                if isinstance(module, BaseTunerLayer):
                    module.merge()
                    parent_name, _, child = name.rpartition(".")
                    parent = tower.get_submodule(parent_name) if parent_name else tower
                    setattr(parent, child, module.get_base_layer())
            self._lora_towers.discard(tower_name)
            self.weights_diverged = True
            self._towers_changed()  # peft merges through ``weight.data``, unseen by versions
        merged = {
            t: TrainMode.frozen for t in TOWERS if getattr(self.training_setup, t) is TrainMode.lora
        }
        self.training_setup = self.training_setup.model_copy(update=merged)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def trainable_state_dict(self) -> dict[str, Tensor]:
        """Every tensor that can differ from the base checkpoint: trained params + LoRA."""
        if self.weights_diverged:
            names = {n for n, _ in self.named_parameters()}
        else:
            heads = {id(p) for tower in TOWERS for p in self.head_parameters(tower)}
            heads.add(id(self.logit_scale_param))
            names = {
                n
                for n, p in self.named_parameters()
                if p.requires_grad or "lora_" in n or id(p) in heads
            }
        return {
            n: t.detach().cpu().contiguous() for n, t in self.state_dict().items() if n in names
        }

    # ---- persistence ----------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Saves to a directory loadable by ``create_model(path)`` (atomic per file)."""
        from safetensors.torch import save_file

        path = Path(path)
        with atomic_path(path / WEIGHTS_NAME) as tmp:  # creates the directory
            save_file(self.trainable_state_dict(), str(tmp))
        atomic_write_json(
            path / MODEL_CONFIG_NAME,
            {
                "backend": self.backend,
                "base": self.spec,
                "context_length": self.context_length,
                "embed_dim": self.embed_dim,
                "lora_towers": sorted(self._lora_towers),
                "training_setup": self.training_setup.model_dump(mode="json"),
            },
        )
        return path

    def load_saved_weights(self, path: Path, meta: Mapping[str, Any]) -> None:
        """Loads what :meth:`save` wrote to ``path`` (``meta``: its model config)."""
        from safetensors.torch import load_file

        setup = TrainingSettings.model_validate(meta["training_setup"])
        for tower_name in meta.get("lora_towers", []):
            self._inject_lora(tower_name, setup.lora)
        state = load_file(str(path / WEIGHTS_NAME))
        unexpected = self.load_state_dict(state, strict=False).unexpected_keys
        if unexpected:
            raise BackendError(f"saved weights do not fit {self.spec!r}: {sorted(unexpected)[:5]}")
        # Diverged weights were saved whole: every parameter (a backend may add buffers).
        self.weights_diverged = {n for n, _ in self.named_parameters()} <= set(state)
        self.configure_training(setup)
