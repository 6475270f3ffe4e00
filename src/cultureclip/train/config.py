"""The two trainers' configs: :class:`BaseTrainConfig`, the settings ``train``
(contrastive) and ``train-vlm`` (generative) share under one name each, then ``train``'s own.

``batch_size`` is *global* in both trainers: the examples of one micro-step summed
over all processes (each of N processes loads ``batch_size / N``), so one config
trains the same way, with the same schedule, on 1 or N processes. For contrastive
training it is the batch whose features meet in one loss; ``grad_cache_chunk`` bounds
how many examples one process encodes with a graph at once (gradient caching), and
``grad_accum_steps`` is plain accumulation that does *not* add in-batch negatives.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from cultureclip.core.config import Config, ConfigError, merge_layers, out_field
from cultureclip.core.device import DeviceSettings, resolve_precision
from cultureclip.core.errors import InputError
from cultureclip.core.identity import data_identity, references_hash, spec_identity
from cultureclip.models.base import TrainingSettings, TrainMode

logger = logging.getLogger(__name__)


class OptimSettings(Config):
    """AdamW; biases, norms and the temperature get no weight decay."""

    lr: float = Field(3e-6, gt=0)
    weight_decay: float = Field(0.1, ge=0)
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = Field(1e-6, gt=0)
    #: clip the global gradient norm to this value (None: no clipping)
    max_grad_norm: float | None = Field(None, gt=0)
    #: AdamW's fused kernel: ``auto`` uses it on CUDA only; true/false force it on/off
    fused: bool | Literal["auto"] = "auto"


class ScheduleSettings(Config):
    """``warmup_steps`` optimiser steps of linear warmup, then ``kind`` to the end."""

    kind: Literal["linear", "cosine", "constant"] = "linear"
    warmup_steps: int = Field(100, ge=0)


class BaseTrainConfig(DeviceSettings):
    """The settings both trainers share, under one name each (``device`` and ``precision``:
    :class:`~cultureclip.core.device.DeviceSettings`, as in every stage)."""

    out: str = out_field("runs/train", "output_dir", "out_dir")
    #: seeds python, numpy and torch (transformers.set_seed) in both trainers
    seed: int = Field(42, ge=0, lt=2**32)
    #: examples per micro-step, all processes together (each loads batch_size / N)
    batch_size: int = Field(8, ge=1)
    grad_accum_steps: int = Field(1, ge=1)
    epochs: int = Field(1, ge=1)
    #: stop after this many optimiser steps (overrides ``epochs`` for the schedule length)
    max_steps: int | None = Field(None, ge=1)
    optim: OptimSettings = Field(default_factory=OptimSettings)
    schedule: ScheduleSettings = Field(default_factory=ScheduleSettings)
    checkpoint_every: int = Field(500, ge=1)
    #: checkpoints kept (the newest); older ones are deleted
    keep_last: int = Field(3, ge=1)
    #: ``latest`` or a checkpoint (file for ``train``, folder for ``train-vlm``)
    resume: str | None = None
    #: end the run after this step as if interrupted (time-boxed jobs, tests); resume continues
    stop_at_step: int | None = Field(None, ge=1)
    #: processes that load (decode) data; None: min(4, CPUs - 1) when there is enough to
    #: decode, none on small data or when every input comes from stored tower outputs
    num_workers: int | None = Field(None, ge=0)
    log_every: int = Field(10, ge=1)
    #: auto: TensorBoard when it is installed (the ``tracking`` extra), else a note
    tensorboard: bool | Literal["auto"] = "auto"
    wandb: bool = False
    wandb_project: str = "cultureclip"

    #: fields that may change between an interrupted run and its resumption
    RESUMABLE_CHANGES: ClassVar[frozenset[str]] = frozenset({
        "resume", "stop_at_step", "num_workers", "log_every", "tensorboard", "wandb",
        "wandb_project", "checkpoint_every", "keep_last", "out", "device",
    })  # fmt: skip

    def per_process_batch(self, world_size: int) -> int:
        if self.batch_size % world_size:
            raise ConfigError(
                f"batch_size={self.batch_size} does not split evenly over {world_size} processes"
            )
        return self.batch_size // world_size


def resolve_precision_name(precision: str, on_cuda: bool) -> str:
    """``fp32``, ``bf16`` or ``fp16``; half precision off CUDA is an error, not a silent fp32 run."""
    import torch

    if precision == "auto":
        return "bf16" if on_cuda and torch.cuda.is_bf16_supported() else "fp32"
    if precision != "fp32" and not on_cuda:
        raise ConfigError(
            f"precision={precision} needs a CUDA device but this run is on the CPU; "
            "use precision=fp32 (or auto, which picks fp32 on CPU)"
        )
    try:
        return resolve_precision(precision, "cuda")
    except InputError as exc:
        raise ConfigError(str(exc)) from None


def report_to(config: BaseTrainConfig) -> list[str]:
    """The trackers a run writes to; asking for one that is not installed is an error, and
    ``tensorboard: auto`` without it is a one-line note."""
    trackers = []
    for name, wanted in (("tensorboard", config.tensorboard), ("wandb", config.wandb)):
        installed = importlib.util.find_spec(name) is not None
        if wanted is True and not installed:
            raise ConfigError(f"{name}=true but {name} is not installed: pip install {name}")
        if wanted == "auto" and not installed:
            logger.info("no TensorBoard logs: pip install 'cultureclip[tracking]' to write them")
        if wanted and installed:
            trackers.append(name)
    return trackers


def check_schedule(schedule: ScheduleSettings, total_steps: int) -> None:
    """Logs the schedule's length; a warmup longer than the run is a one-line warning."""
    logger.info("schedule: %d optimiser steps, warmup %d", total_steps, schedule.warmup_steps)
    if schedule.warmup_steps > total_steps:
        logger.warning(
            "schedule.warmup_steps=%d is longer than the whole run (%d steps): the lr never "
            "reaches optim.lr; lower schedule.warmup_steps",
            schedule.warmup_steps,
            total_steps,
        )


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
    #: encode frozen (and heads-only) towers once per input and train the heads on the
    #: stored outputs, for backends that support it (``lite:``); false: encode every step
    frozen_features: bool = True
    #: also keep those outputs on disk here, reused by later runs (None: in memory only)
    feature_cache_dir: str | None = None

    FORMER_NAMES = {"workers": "num_workers (top level)"}
    #: fields that change how data is loaded, not what is trained (a resume may change them)
    LOADING_FIELDS: ClassVar[frozenset[str]] = frozenset({"frozen_features", "feature_cache_dir"})


class TrainConfig(BaseTrainConfig):
    """Contrastive fine-tuning (``cultureclip train``); saved as ``config.yaml`` in ``out``."""

    model: str = "hf:openai/clip-vit-base-patch32"
    context_length: int | None = Field(None, ge=1)
    data: DataSettings
    loss: str = "cultureclip"
    loss_kwargs: dict[str, float] = Field(default_factory=dict)
    training: TrainingSettings = Field(
        default_factory=lambda: TrainingSettings(image=TrainMode.lora, text=TrainMode.lora)
    )
    epochs: int = Field(10, ge=1)
    #: the contrastive batch: every example is a negative of every other one
    batch_size: int = Field(128, ge=2)
    #: examples encoded with a graph at once per process; None: the whole batch (no caching)
    grad_cache_chunk: int | None = Field(None, ge=1)
    #: several processes: each computes the loss of its own rows against the gathered
    #: batch (B_local × B_global logits); false: each computes the whole batch's loss
    #: (B_global², the same numbers at N times the loss compute)
    local_loss: bool = True
    #: ``torch.compile`` the towers (CUDA only: an error on CPU)
    compile: bool = False
    #: TF32 for fp32 matmuls/convolutions on CUDA (ignored on CPU)
    tf32: bool = True
    #: start over in an output directory that holds another run (its checkpoints, final
    #: model and metrics are deleted); without it such a directory is refused
    overwrite: bool = False
    progress: bool = True
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
        if setup.lora.modules_to_save:
            raise InputError(
                "training.lora.modules_to_save is for train-vlm; train a projection with heads"
            )
        if self.grad_cache_chunk is not None and self.grad_cache_chunk >= self.batch_size:
            # Caching a batch that fits in one chunk only costs a second forward pass.
            raise InputError(
                f"grad_cache_chunk={self.grad_cache_chunk} is not smaller than batch_size="
                f"{self.batch_size}; leave it unset (null) to train without gradient caching"
            )
        return self

    RESUMABLE_CHANGES = BaseTrainConfig.RESUMABLE_CHANGES | {
        "overwrite", "progress", "export", "wise_ft_alpha",
        # Speed settings: the same trajectory (to float rounding) either way.
        "local_loss", "compile", "tf32",
    }  # fmt: skip

    @property
    def checkpoint_dir(self) -> Path:
        return Path(self.out) / "checkpoints"

    def run_identity(self) -> dict[str, Any]:
        """The fields that define the training trajectory (must match on resume)."""
        exclude: dict[str, Any] = dict.fromkeys(self.RESUMABLE_CHANGES, True)
        exclude["data"] = dict.fromkeys(DataSettings.LOADING_FIELDS, True)
        return self.model_dump(mode="json", exclude=exclude)

    def content_identity(self) -> dict[str, Any]:
        """What the names in :meth:`run_identity` stand for: the base model's weights and
        the data's bytes (a resume onto a model or data changed in place is refused)."""
        from cultureclip.train.data import referenced_images

        data = data_identity(self.data.path, exclude=Path(self.out))
        images = referenced_images(self.data)
        if images:  # a data file's images lie beside it
            data["images"] = references_hash(images)
        return {"model": spec_identity(self.model), "data": data}


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
    from cultureclip.core.config import read_config_file, validate
    from cultureclip.presets import read_preset

    layers = [] if preset is None else [read_preset("train", preset)]
    layers += [] if config is None else [read_config_file(config)]
    return validate(TrainConfig, merge_layers(TrainConfig, *layers, overrides=overrides))
