"""The training config and its presets (``cultureclip/presets/train/*.yaml``).

``batch_size`` is the *global contrastive batch*: the number of examples whose
features meet in one loss, summed over all processes. Under ``torchrun
--nproc_per_node N`` each process loads ``batch_size / N`` examples and the features
are gathered, so the same config trains the same way on 1 or N processes.
``grad_cache_chunk`` bounds how many examples one process encodes with a graph
at once (gradient caching), which is what lets a 2048 batch fit in memory;
``grad_accum_steps`` is plain accumulation and does *not* add in-batch negatives.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from cultureclip.config import Config, ConfigError, deep_merge, load_config, out_field
from cultureclip.core.device import Device
from cultureclip.core.errors import InputError
from cultureclip.models.base import TrainingSettings, TrainMode

Precision = Literal["auto", "fp32", "bf16", "fp16"]


class DataSettings(Config):
    #: a CulTwin file/dir (``cultwin.jsonl``/``.parquet``) or an image–text collection
    #: readable by ``cultureclip.data.collections.load_collection``
    path: str
    #: ``auto`` detects CulTwin sets; ``pairs`` forces plain image–text pairs
    kind: Literal["auto", "twin", "pairs"] = "auto"
    #: split of an image–text collection (e.g. ``train`` of a Chinese-CLIP/CulTi layout)
    split: str | None = None
    #: how a bare concept name becomes the text of the concept term
    concept_template: str = "{concept}"
    shuffle: bool = True
    #: processes that decode and preprocess images; None: min(4, CPUs - 1) when there is
    #: enough to decode, 0 on small data or when every image comes from frozen-tower
    #: features (the top-level ``num_workers``, when above 0, is the default)
    workers: int | None = Field(None, ge=0)
    #: encode frozen (and heads-only) towers once per input and train the heads on the
    #: stored outputs, for backends that support it (``lite:``); false: encode every step
    frozen_features: bool = True
    #: also keep those outputs on disk here, reused by later runs (None: in memory only)
    feature_cache_dir: str | None = None

    #: fields that change how data is loaded, not what is trained (a resume may change them)
    LOADING_FIELDS: ClassVar[frozenset[str]] = frozenset(
        {"workers", "frozen_features", "feature_cache_dir"}
    )


class OptimSettings(Config):
    lr: float = Field(3e-6, gt=0)
    weight_decay: float = Field(0.1, ge=0)
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = Field(1e-6, gt=0)
    #: clip the global gradient norm to this value (None: no clipping)
    max_grad_norm: float | None = Field(None, gt=0)
    #: AdamW's fused kernel: ``auto`` uses it on CUDA only; true/false force it on/off
    fused: bool | Literal["auto"] = "auto"


class ScheduleSettings(Config):
    kind: Literal["linear", "cosine", "constant"] = "linear"
    warmup_steps: int = Field(100, ge=0)


class TrainConfig(Config):
    """Everything one fine-tuning run needs; saved as ``config.yaml`` in the output dir."""

    model: str = "hf:openai/clip-vit-base-patch32"
    context_length: int | None = Field(None, ge=1)
    data: DataSettings
    loss: str = "cultureclip"
    loss_kwargs: dict[str, float] = Field(default_factory=dict)
    training: TrainingSettings = Field(
        default_factory=lambda: TrainingSettings(image=TrainMode.lora, text=TrainMode.lora)
    )
    optim: OptimSettings = Field(default_factory=OptimSettings)
    schedule: ScheduleSettings = Field(default_factory=ScheduleSettings)

    epochs: int = Field(10, ge=1)
    #: stop after this many optimiser steps (overrides ``epochs`` for the schedule length)
    max_steps: int | None = Field(None, ge=1)
    #: global contrastive batch (all processes together) per micro-step
    batch_size: int = Field(128, ge=2)
    grad_accum_steps: int = Field(1, ge=1)
    #: examples encoded with a graph at once per process; None: the whole batch (no caching)
    grad_cache_chunk: int | None = Field(None, ge=1)
    precision: Precision = "auto"
    #: several processes: each computes the loss of its own rows against the gathered
    #: batch (B_local × B_global logits); false: each computes the whole batch's loss
    #: (B_global², the same numbers at N times the loss compute)
    local_loss: bool = True
    #: ``torch.compile`` the towers (CUDA only: an error on CPU)
    compile: bool = False
    #: TF32 for fp32 matmuls/convolutions on CUDA (ignored on CPU)
    tf32: bool = True
    #: auto: cuda (the local rank's GPU) when available, else cpu
    device: Device = "auto"
    seed: int = 42

    out: str = out_field("runs/train", "output_dir")
    checkpoint_every: int = Field(500, ge=1)
    keep_last: int = Field(3, ge=1)
    #: ``latest`` or the path of a checkpoint file to continue from
    resume: str | None = None
    #: start over in an output directory that holds another run (its checkpoints, final
    #: model and metrics are deleted); without it such a directory is refused
    overwrite: bool = False
    #: end the run after this step as if interrupted (time-boxed jobs, tests); resume continues
    stop_at_step: int | None = Field(None, ge=1)
    num_workers: int = Field(0, ge=0)
    log_every: int = Field(10, ge=1)
    progress: bool = True
    tensorboard: bool = False
    wandb: bool = False
    wandb_project: str = "cultureclip"

    #: interpolate the final weights with the base model (WiSE-FT); None: off
    wise_ft_alpha: float | None = Field(None, ge=0.0, le=1.0)
    #: write the self-contained model to ``<out>/export``: the backend's native format,
    #: LoRA merged (the adapter in ``export/adapter``), with a model card
    export: bool = True

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        setup = self.training
        if (
            setup.image is TrainMode.frozen
            and setup.text is TrainMode.frozen
            and not setup.logit_scale
        ):
            raise InputError(
                "training.image and training.text are both frozen: nothing would train"
            )
        if self.resume is not None and self.overwrite:
            raise InputError(
                "resume and overwrite exclude each other: continue the run, or replace it"
            )
        if self.grad_cache_chunk is not None and self.grad_cache_chunk >= self.batch_size:
            # Caching a batch that fits in one chunk only costs a second forward pass.
            raise InputError(
                f"grad_cache_chunk={self.grad_cache_chunk} is not smaller than batch_size="
                f"{self.batch_size}; leave it unset (null) to train without gradient caching"
            )
        return self

    #: fields that may change between an interrupted run and its resumption
    RESUMABLE_CHANGES: ClassVar[frozenset[str]] = frozenset(
        {
            "resume",
            "overwrite",
            "stop_at_step",
            "num_workers",
            "log_every",
            "progress",
            "tensorboard",
            "wandb",
            "wandb_project",
            "checkpoint_every",
            "keep_last",
            "export",
            "wise_ft_alpha",
            "out",
            "device",
            # Speed settings: the same trajectory (to float rounding) either way.
            "local_loss",
            "compile",
            "tf32",
        }
    )

    @property
    def checkpoint_dir(self) -> Path:
        return Path(self.out) / "checkpoints"

    def run_identity(self) -> dict[str, Any]:
        """The fields that define the training trajectory (must match on resume)."""
        exclude: dict[str, Any] = dict.fromkeys(self.RESUMABLE_CHANGES, True)
        exclude["data"] = dict.fromkeys(DataSettings.LOADING_FIELDS, True)
        return self.model_dump(mode="json", exclude=exclude)


def list_presets() -> dict[str, Any]:
    from cultureclip.presets import presets

    return presets("train")


def load_train_config(
    config: str | Path | None = None,
    *,
    preset: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
) -> TrainConfig:
    """A preset, then a config file, then ``key=value`` overrides (last wins)."""
    import yaml

    from cultureclip.config import read_config_file

    data: dict[str, Any] = {}
    if preset is not None:
        presets = list_presets()
        if preset not in presets:
            known = ", ".join(sorted(presets)) or "none found"
            raise ConfigError(f"unknown training preset {preset!r}; available: {known}")
        data = yaml.safe_load(presets[preset].read_text(encoding="utf-8")) or {}
    if config is not None:
        data = deep_merge(data, read_config_file(config))
    return load_config(TrainConfig, None, list(overrides), **data)
