"""The contrastive fine-tuning loop, in plain PyTorch: :class:`TrainStep` runs one
optimiser step; :func:`train` runs steps and checkpoints every ``checkpoint_every``.

Resuming restores weights, optimiser, scheduler, every RNG and the :class:`Cursor`
(the position inside the epoch), so the continued run is the uninterrupted one. An
output directory that already holds a run is resumed, replaced (``overwrite``), or
refused with a message; it is never trained into from scratch.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader
from transformers import set_seed

from cultureclip.core.config import ConfigError
from cultureclip.core.device import resolve_device
from cultureclip.core.io import append_jsonl, read_jsonl, remove_stale_temp_files, write_jsonl
from cultureclip.core.progress import progress
from cultureclip.core.store import changed_fields
from cultureclip.core.threads import worker_init
from cultureclip.data.pairs import PairCollection
from cultureclip.data.twin_dataset import TwinBatch
from cultureclip.models.base import VisionLanguageModel
from cultureclip.train import distributed
from cultureclip.train.checkpoint import (
    CheckpointError,
    checkpoint_step,
    list_checkpoints,
    load_resume_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from cultureclip.train.config import (
    OptimSettings,
    ScheduleSettings,
    TrainConfig,
    check_schedule,
    report_to,
    resolve_precision_name,
)
from cultureclip.train.data import (
    EncoderInputs,
    EpochItems,
    ResumableSampler,
    build_dataset,
    encoder_inputs,
    frozen_feature_data,
    loader_workers,
)
from cultureclip.train.distributed import DistInfo
from cultureclip.train.gradcache import Encoder, FeatureEncoder, contrastive_backward
from cultureclip.train.losses import ContrastiveLoss, DataKind, create_loss
from cultureclip.train.wise_ft import wise_ft

logger = logging.getLogger(__name__)

AutocastFactory = Callable[[], AbstractContextManager[object]]
METRICS_NAME = "metrics.jsonl"


@dataclass
class TrainResult:
    output_dir: Path
    #: ``create_model(final_model_dir)`` loads the trained model; None if the run stopped early
    final_model_dir: Path | None
    export_dir: Path | None
    metrics_path: Path
    last_checkpoint: Path | None
    steps: int
    total_steps: int
    final_loss: float | None
    completed: bool
    #: False on the non-zero ranks of a distributed run (which write nothing)
    is_main: bool = True
    #: the step this run continued from (None: started from scratch)
    resumed_from_step: int | None = None
    model: VisionLanguageModel | None = field(default=None, repr=False)


# ---- set-up helpers -------------------------------------------------------------------
def resolve_precision(precision: str, device: torch.device) -> tuple[AutocastFactory, bool]:
    """(autocast factory, needs a GradScaler). ``auto``: fp32 on CPU, bf16 autocast on CUDA."""
    precision = resolve_precision_name(precision, device.type == "cuda")
    if precision == "fp32":
        return contextlib.nullcontext, False
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return lambda: torch.autocast("cuda", dtype=dtype), precision == "fp16"


def resolve_fused(fused: bool | str, device: torch.device) -> bool:
    """Whether AdamW runs its fused kernel: ``auto`` means on CUDA only."""
    if fused == "auto":
        if device.type != "cuda":
            logger.info("optim.fused=auto: the fused AdamW kernel is used on CUDA only")
        return device.type == "cuda"
    return bool(fused)


def build_optimizer(model: VisionLanguageModel, config: OptimSettings) -> torch.optim.AdamW:
    """AdamW; biases, norms and the temperature get no weight decay (as in open_clip)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        exempt = param.ndim < 2 or name.endswith(".bias") or "logit_scale" in name
        (no_decay if exempt else decay).append(param)
    if not decay and not no_decay:
        raise ConfigError("no parameter trains: check the training modes of both towers")
    groups = [
        {"params": params, "weight_decay": wd}
        for params, wd in ((decay, config.weight_decay), (no_decay, 0.0))
        if params
    ]
    fused = resolve_fused(config.fused, model.device)
    return torch.optim.AdamW(
        groups, lr=config.lr, betas=config.betas, eps=config.eps, fused=fused or None
    )


def resolve_compile(compile_model: bool, device: torch.device) -> bool:
    """``compile=true`` is for CUDA runs; on a CPU it is an error, not a silent eager run."""
    if compile_model and device.type != "cuda":
        raise ConfigError(
            f"compile=true compiles the towers for CUDA but this run is on {device.type}; "
            "use compile=false (the default) on CPU"
        )
    return compile_model


@contextlib.contextmanager
def tf32_matmuls(enabled: bool, device: torch.device):
    """TF32 for fp32 CUDA matmuls and convolutions while training (restored afterwards)."""
    if device.type != "cuda":
        if enabled:
            logger.info("tf32=true applies to CUDA matmuls only; ignored on %s", device.type)
        yield False
        return
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    saved = (matmul.fp32_precision, conv.fp32_precision)
    value = "tf32" if enabled else "ieee"
    matmul.fp32_precision = conv.fp32_precision = value
    try:
        yield enabled
    finally:
        matmul.fp32_precision, conv.fp32_precision = saved


def lr_factor(step: int, config: ScheduleSettings, total_steps: int) -> float:
    """Multiplier of the base lr before optimiser step ``step`` (0-based)."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    if config.kind == "constant":
        return 1.0
    progress = min(1.0, (step - config.warmup_steps) / max(1, total_steps - config.warmup_steps))
    if config.kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0 - progress


# ---- one optimiser step ---------------------------------------------------------------
@dataclass
class Cursor:
    """Where a run stands: what a checkpoint saves and a resume continues from."""

    step: int = 0
    epoch: int = 0
    micro_in_epoch: int = 0


@dataclass
class StepBatches:
    """The loader's micro-batches, ``grad_accum_steps`` per optimiser step, from any cursor."""

    loader: DataLoader
    sampler: ResumableSampler
    per_rank_batch: int
    grad_accum_steps: int

    @property
    def micro_per_epoch(self) -> int:
        return self.sampler.num_samples // self.per_rank_batch

    @property
    def steps_per_epoch(self) -> int:
        # Micro-batches left after an epoch's last whole step are skipped.
        return self.micro_per_epoch // self.grad_accum_steps

    def until(self, stop_step: int, cursor: Cursor) -> Iterator[list[TwinBatch | EncoderInputs]]:
        """Each step's micro-batches up to ``stop_step``; ``cursor`` moves past a step
        before its batches are yielded (so the step's checkpoint resumes after it)."""
        accum = self.grad_accum_steps
        while cursor.step < stop_step:
            self.sampler.set_epoch(cursor.epoch, start=cursor.micro_in_epoch * self.per_rank_batch)
            epoch_batches = iter(self.loader)
            steps_left = self.steps_per_epoch - cursor.micro_in_epoch // accum
            for _ in range(min(steps_left, stop_step - cursor.step)):
                micro_batches = list(itertools.islice(epoch_batches, accum))
                cursor.step += 1
                cursor.micro_in_epoch += accum
                if cursor.micro_in_epoch >= self.steps_per_epoch * accum:
                    cursor.epoch, cursor.micro_in_epoch = cursor.epoch + 1, 0
                yield micro_batches


@dataclass
class StepOutput:
    loss: float
    parts: dict[str, float]
    lr: float


class TrainStep:
    """Micro-batches → gradients (cached, gathered, averaged by DDP in the backward of the
    last chunk of the last micro-batch) → one optimiser update; the loss it reports is
    the whole batch's, on every process."""

    def __init__(
        self,
        model: VisionLanguageModel,
        loss_fn: ContrastiveLoss,
        config: TrainConfig,
        *,
        kind: DataKind,
        total_steps: int,
        dist_info: DistInfo | None = None,
    ) -> None:
        self.model = model
        self.loss_fn = loss_fn
        self.config = config
        self.optimizer = build_optimizer(model, config.optim)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(step, config.schedule, total_steps)
        )
        self.features = loss_fn.required_features(kind)
        self.dist = dist_info or DistInfo()
        self.autocast, needs_scaler = resolve_precision(config.precision, model.device)
        # A disabled scaler passes everything through unchanged (fp32 and bf16).
        self.scaler = torch.amp.GradScaler("cuda", enabled=needs_scaler)
        self.parameters = model.trainable_parameters()
        if self.dist.enabled and config.local_loss and not loss_fn.supports_local:
            logger.info(
                "loss %r computes no local loss: every process computes the whole batch's loss",
                loss_fn.name,
            )
        self.local_loss = self.dist.enabled and config.local_loss and loss_fn.supports_local
        encoder: torch.nn.Module = FeatureEncoder(model)
        self._no_sync: Callable[[], AbstractContextManager[object]] = contextlib.nullcontext
        if self.dist.enabled:
            ddp = distributed.wrap_ddp(encoder, model.device)
            self._no_sync = ddp.no_sync
            encoder = ddp
        if resolve_compile(config.compile, model.device):
            encoder = torch.compile(encoder)
        self.encoder: Encoder = encoder

    def update(self) -> float:
        """Clips, steps optimiser and schedule; returns the lr used (gradients are averaged already)."""
        self.scaler.unscale_(self.optimizer)
        if self.config.optim.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.parameters, self.config.optim.max_grad_norm)
        lr = float(self.optimizer.param_groups[0]["lr"])
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return lr

    def checkpoint(self, cursor: Cursor) -> Path | None:
        """Rank 0 writes the checkpoint of ``cursor.step``, with every rank's RNG states."""
        states = distributed.all_gather_object(rng_state(self.model.device), self.dist)
        path = None
        if self.dist.is_main:
            trainable = {
                n: p.detach().cpu().clone()
                for n, p in self.model.named_parameters()
                if p.requires_grad
            }
            payload = {
                "epoch": cursor.epoch,
                "micro_in_epoch": cursor.micro_in_epoch,
                "model": trainable,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "grad_scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
                "config": self.config.model_dump(mode="json"),
                "content": self.content_identity(),
                "rng": states,
            }
            path = save_checkpoint(
                self.config.checkpoint_dir, cursor.step, payload, self.config.keep_last
            )
        distributed.barrier(self.dist)
        return path

    def content_identity(self) -> dict[str, Any]:
        """The base model's and data's content (hashed at the first checkpoint of a run)."""
        if getattr(self, "_content", None) is None:
            self._content = self.config.content_identity()
        return self._content

    def resume(self, state: dict[str, Any]) -> Cursor:
        """Restores what :meth:`checkpoint` saved; returns where the run continues."""
        trainable = {n for n, p in self.model.named_parameters() if p.requires_grad}
        saved = set(state["model"])
        if saved != trainable:
            raise CheckpointError(
                f"checkpoint holds {len(saved)} trainable tensors, the model {len(trainable)}; "
                f"first differences: {sorted(saved ^ trainable)[:5]}"
            )
        self.model.load_state_dict(state["model"], strict=False)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("grad_scaler") is not None:
            self.scaler.load_state_dict(state["grad_scaler"])
        set_rng_state(state["rng"][self.dist.rank], self.model.device)
        return Cursor(state["step"], state["epoch"], state["micro_in_epoch"])

    def __call__(self, batches: Sequence[TwinBatch | EncoderInputs]) -> StepOutput:
        """One optimiser step over ``grad_accum_steps`` micro-batches, their losses averaged."""
        rows: list[Tensor] = []
        names: list[str] = []
        for index, batch in enumerate(batches):
            inputs = encoder_inputs(batch).select(self.features).to(self.model.device)
            # Gradients stay local (DDP no_sync) until the last micro-batch's backward.
            last = index == len(batches) - 1
            with contextlib.nullcontext() if last else self._no_sync():
                out = contrastive_backward(
                    self.model,
                    self.loss_fn,
                    inputs,
                    chunk_size=self.config.grad_cache_chunk,
                    autocast=self.autocast,
                    dist=self.dist,
                    local_loss=self.local_loss,
                    loss_multiplier=1.0 / len(batches),
                    backward=lambda t: self.scaler.scale(t).backward(),
                    encoder=self.encoder,
                    no_sync=self._no_sync,
                )
            names = list(out.parts)
            rows.append(torch.stack([out.loss, *out.parts.values()]))
        lr = self.update()
        # One small all-reduce per step turns the processes' local losses into the batch's.
        means = torch.stack(rows).mean(dim=0)
        if self.local_loss:
            means = distributed.all_reduce_mean(means, self.dist)
        values = means.tolist()
        return StepOutput(values[0], dict(zip(names, values[1:], strict=True)), lr)


# ---- logging --------------------------------------------------------------------------
class MetricsLogger:
    """metrics.jsonl always; TensorBoard and W&B as :func:`report_to` decides."""

    def __init__(self, config: TrainConfig, output_dir: Path, enabled: bool) -> None:
        self.path = output_dir / METRICS_NAME
        self.enabled = enabled
        self.tensorboard: Any = None
        self.wandb: Any = None
        trackers = report_to(config) if enabled else []
        if "tensorboard" in trackers:
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(str(output_dir / "tensorboard"))
        if "wandb" in trackers:
            import wandb

            self.wandb = wandb.init(
                project=config.wandb_project,
                dir=str(output_dir),
                config=config.model_dump(mode="json"),
            )

    def truncate(self, last_step: int) -> None:
        """Drops records after ``last_step`` (written after the checkpoint a run resumes from)."""
        if self.enabled and self.path.exists():
            write_jsonl(
                self.path, [r for r in read_jsonl(self.path) if r.get("step", 0) <= last_step]
            )

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        append_jsonl(self.path, [record])
        step = record["step"]
        scalars = {k: v for k, v in record.items() if isinstance(v, int | float) and k != "step"}
        if self.tensorboard is not None:
            for key, value in scalars.items():
                self.tensorboard.add_scalar(f"train/{key}", value, step)
        if self.wandb is not None:
            self.wandb.log({f"train/{k}": v for k, v in scalars.items()}, step=step)

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.wandb is not None:
            self.wandb.finish()


# ---- the loop ---------------------------------------------------------------------------
def train(config: TrainConfig, *, collection: PairCollection | None = None) -> TrainResult:
    """Fine-tunes ``config.model`` on ``config.data`` (or on ``collection``, an in-memory
    image–text collection). Under ``torchrun``/``accelerate launch`` every process calls
    this; only rank 0 writes files."""
    on_cuda = resolve_device(config.device).startswith("cuda")
    dist_info = distributed.init_distributed("cuda" if on_cuda else "cpu")
    try:
        device = torch.device(resolve_device(config.device, dist_info.local_rank))
        with tf32_matmuls(config.tf32, device):
            return _train(config, device, dist_info, collection)
    finally:
        if dist_info.owns_group:
            torch.distributed.destroy_process_group()


def _load_resume_state(config: TrainConfig, dist_info: DistInfo) -> tuple[Path, dict[str, Any]]:
    path, state = load_resume_checkpoint(config.resume, config.checkpoint_dir)
    saved = TrainConfig.model_validate(state["config"]).run_identity()
    changed = changed_fields(saved, config.run_identity())
    if changed:
        raise CheckpointError(
            f"{path} was written by a run with different settings for {changed}; resuming would not "
            "continue that run (start a new out, or restore those settings)"
        )
    stored = state.get("content")
    if not stored:
        raise CheckpointError(
            f"{path} was written by an older cultureclip that did not record its model's and "
            "data's content, so resuming cannot be checked; start a new out"
        )
    changed = changed_fields(stored, config.content_identity())
    if changed:
        raise CheckpointError(
            f"{path} was written from other content ({' and '.join(changed)} changed since); "
            "resuming would not continue that run (start a new out)"
        )
    if len(state["rng"]) != dist_info.world_size:
        raise CheckpointError(
            f"{path} was written by {len(state['rng'])} process(es); resume with the same number "
            f"(now {dist_info.world_size})"
        )
    return path, state


def _train(
    config: TrainConfig,
    device: torch.device,
    dist_info: DistInfo,
    collection: PairCollection | None,
) -> TrainResult:
    output_dir = Path(config.out)
    per_rank_batch = _per_rank_batch(config, dist_info.world_size, device)  # fails before loading
    resume_path, state = _open_output_dir(config, output_dir, dist_info)

    # Same seed → same LoRA initialisation on every rank and in every (re)start.
    set_seed(config.seed)
    model = _create_model(config)
    model.configure_training(config.training)
    model.to(device)

    loss_fn = create_loss(config.loss, **config.loss_kwargs)
    kind, batches = _training_data(config, model, loss_fn, collection, per_rank_batch, dist_info)
    total_steps = config.max_steps or config.epochs * batches.steps_per_epoch
    check_schedule(config.schedule, total_steps)
    stepper = TrainStep(
        model, loss_fn, config, kind=kind, total_steps=total_steps, dist_info=dist_info
    )
    metrics = MetricsLogger(config, output_dir, enabled=dist_info.is_main)

    if state is None:
        # Dropout differs per rank, as independent data-parallel workers would have it.
        torch.manual_seed(config.seed + dist_info.rank)
        cursor = Cursor()
    else:
        cursor = stepper.resume(state)
        logger.info("resumed from step %d (%s)", cursor.step, resume_path)
        metrics.truncate(cursor.step)

    last_checkpoint = resume_path
    # a twin record holds two images (and four texts), a pair record one
    images_per_example = 2 if kind == "twin" else 1
    examples_per_step = config.batch_size * config.grad_accum_steps
    last_loss: float | None = None
    stop_step = min(total_steps, config.stop_at_step or total_steps)
    model.train()
    last_time = time.perf_counter()
    enabled = config.progress and dist_info.is_main
    with progress("train", total_steps, completed=cursor.step, enabled=enabled) as task:
        for micro_batches in batches.until(stop_step, cursor):
            out = stepper(micro_batches)
            last_loss = out.loss
            now = time.perf_counter()
            examples_per_s = examples_per_step / max(now - last_time, 1e-9)
            images_per_s = examples_per_s * images_per_example
            last_time = now
            if cursor.step % config.log_every == 0 or cursor.step == stop_step:
                position = cursor.epoch + cursor.micro_in_epoch / batches.micro_per_epoch
                metrics.log({
                    "step": cursor.step, "epoch": round(position, 4), "loss": out.loss,
                    **{f"loss_{k}": v for k, v in out.parts.items()}, "lr": out.lr,
                    "examples_per_s": round(examples_per_s, 3),
                    "images_per_s": round(images_per_s, 3),
                })  # fmt: skip
            task.update(
                completed=cursor.step,
                stats=f"loss {out.loss:.4f}  lr {out.lr:.2e}  {images_per_s:.1f} images/s",
            )
            if cursor.step % config.checkpoint_every == 0 or cursor.step == stop_step:
                last_checkpoint = stepper.checkpoint(cursor) or last_checkpoint
    metrics.close()

    completed = cursor.step >= total_steps
    final_model, final_dir, export_dir = model, None, None
    if completed and dist_info.is_main:
        final_model, final_dir, export_dir = _save_final(config, model, output_dir)
    distributed.barrier(dist_info)
    return TrainResult(
        output_dir=output_dir,
        final_model_dir=final_dir,
        export_dir=export_dir,
        metrics_path=output_dir / METRICS_NAME,
        last_checkpoint=last_checkpoint,
        steps=cursor.step,
        total_steps=total_steps,
        final_loss=last_loss,
        completed=completed,
        is_main=dist_info.is_main,
        model=final_model,
        resumed_from_step=None if state is None else state["step"],
    )


def _create_model(config: TrainConfig) -> VisionLanguageModel:
    from cultureclip.models.registry import create_model

    kwargs = {"context_length": config.context_length} if config.context_length else {}
    return create_model(config.model, **kwargs)


def _per_rank_batch(config: TrainConfig, world: int, device: torch.device) -> int:
    """This process's share of the batch, after every check that needs no model or data."""
    per_rank_batch = config.per_process_batch(world)
    if config.grad_cache_chunk is not None and config.grad_cache_chunk >= per_rank_batch:
        raise ConfigError(
            f"grad_cache_chunk={config.grad_cache_chunk} ≥ the per-process batch {per_rank_batch}: "
            "unset it, or lower it below the per-process batch"
        )
    resolve_precision(config.precision, device)
    resolve_compile(config.compile, device)
    return per_rank_batch


def _open_output_dir(
    config: TrainConfig, output_dir: Path, dist_info: DistInfo
) -> tuple[Path | None, dict[str, Any] | None]:
    """The checkpoint to resume from (if asked), with the output dir claimed and ready."""
    resume_path, state = _load_resume_state(config, dist_info) if config.resume else (None, None)
    if dist_info.is_main:
        if state is None:
            _claim_output_dir(config, output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_files(config.checkpoint_dir, "step_*.pt")
        config.save(output_dir)
    distributed.barrier(dist_info)
    return resume_path, state


def _training_data(
    config: TrainConfig,
    model: VisionLanguageModel,
    loss_fn: ContrastiveLoss,
    collection: PairCollection | None,
    per_rank_batch: int,
    dist_info: DistInfo,
) -> tuple[DataKind, StepBatches]:
    """The data's kind and this process's step batches; fixed towers' outputs are computed
    once here and their heads train on the stored rows."""
    kind, dataset, collate = build_dataset(
        config.data,
        transform=model.preprocess,
        tokenize=model.tokenize,
        seed=config.seed,
        collection=collection,
    )
    loss_fn.required_features(kind)  # a loss that cannot use this data fails here, not mid-run
    frozen = frozen_feature_data(
        model,
        kind,
        dataset,
        config.data,
        workers=config.num_workers,
        batch_size=max(per_rank_batch, 32),
        show_progress=config.progress and dist_info.is_main,
    )
    if frozen is not None:
        dataset, collate = frozen
    workers = loader_workers(config.num_workers, dataset)
    sampler = ResumableSampler(
        len(dataset),
        rank=dist_info.rank,
        world_size=dist_info.world_size,
        seed=config.seed,
        shuffle=config.data.shuffle,
    )
    loader = DataLoader(
        EpochItems(dataset),
        batch_size=per_rank_batch,
        sampler=sampler,
        drop_last=True,
        collate_fn=collate,
        num_workers=workers,
        # Workers start once per run, not once per epoch.
        persistent_workers=workers > 0,
        worker_init_fn=worker_init if workers else None,
        pin_memory=model.device.type == "cuda",
        # A private generator: worker seeds must not consume the global RNG,
        # or a run resumed mid-epoch would draw different dropout masks.
        generator=torch.Generator().manual_seed(config.seed),
    )
    batches = StepBatches(loader, sampler, per_rank_batch, config.grad_accum_steps)
    if batches.steps_per_epoch == 0:
        raise ConfigError(
            f"{len(dataset)} training examples do not fill one step of batch_size={config.batch_size} × "
            f"grad_accum_steps={config.grad_accum_steps}; lower the batch size or add data"
        )
    return kind, batches


def _save_final(
    config: TrainConfig, model: VisionLanguageModel, output_dir: Path
) -> tuple[VisionLanguageModel, Path, Path | None]:
    """Saves the finished model (WiSE-FT'd when asked) and its export."""
    model.eval()
    final_model = model
    if config.wise_ft_alpha is not None:
        model.save(output_dir / "finetuned")
        base = _create_model(config).to(model.device)
        final_model = wise_ft(base, model, config.wise_ft_alpha)
    final_dir = final_model.save(output_dir / "final")
    export_dir = None
    if config.export:
        from cultureclip.publish import export_model

        export_dir = export_model(
            final_model,
            output_dir / "export",
            base=config.model,
            config=config.model_dump(mode="json"),
        )
    return final_model, final_dir, export_dir


#: what a training run writes in its output directory (all removed by ``overwrite``)
RUN_OUTPUTS = ("checkpoints", "final", "finetuned", "export", "tensorboard", METRICS_NAME)


def _claim_output_dir(config: TrainConfig, output_dir: Path) -> None:
    """Makes sure a fresh run never mixes with another run's files in ``output_dir``."""
    checkpoints = list_checkpoints(config.checkpoint_dir)
    finished = (output_dir / "final").exists()
    if config.overwrite:
        for target in (output_dir / name for name in RUN_OUTPUTS):
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
        return
    if checkpoints or finished:
        held = (
            f"a finished run ({output_dir / 'final'})"
            if finished
            else f"a run checkpointed at step {checkpoint_step(checkpoints[-1])}"
        )
        raise ConfigError(
            f"{output_dir} already holds {held}; continue it with --resume latest, start over "
            "with --overwrite, or choose another output directory"
        )
    if (output_dir / METRICS_NAME).exists():
        logger.warning(
            "%s holds the log of a run killed before its first checkpoint; starting over",
            output_dir,
        )
        (output_dir / METRICS_NAME).unlink()
