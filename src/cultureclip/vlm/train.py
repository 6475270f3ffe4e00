"""``cultureclip train-vlm``: supervised fine-tuning of a chat VLM on CultureVerse data.

The data is the chat export of ``build-benchmark`` (``instruct.jsonl``, written by
:func:`cultureclip.synth.builder.export_instruction_data`). Each record becomes a
prompt (user turn: image + question) and a completion (the assistant turn). TRL's
``SFTTrainer`` does the rest: its vision-language collator renders both with the
processor's chat template and labels only the completion's tokens, and the transformers
loop trains. The final model (adapters merged) loads with ``hf-vlm:<out>/model``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from cultureclip.core.config import out_field
from cultureclip.core.device import resolve_device
from cultureclip.core.errors import InputError, MissingInputError, UserError
from cultureclip.core.io import iter_jsonl
from cultureclip.data.pairs import open_image
from cultureclip.models.base import LoraSettings
from cultureclip.train.config import (
    BaseTrainConfig,
    OptimSettings,
    ScheduleSettings,
    check_schedule,
    report_to,
    resolve_precision_name,
)
from cultureclip.train.data import loader_workers

logger = logging.getLogger(__name__)

#: attention and MLP projections of the text model in LLaVA, Qwen2-VL and Idefics3/SmolVLM
LANGUAGE_LORA_TARGETS = (
    r".*(language_model|text_model)\..*\."
    r"(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
)
#: HF scheduler names of the shared ``schedule.kind`` (each warms up first)
SCHEDULERS = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}


class VLMTrainConfig(BaseTrainConfig):
    """One ``train-vlm`` run; saved as ``config.yaml`` in ``out``."""

    #: hub id or directory of an image-text-to-text model with a chat template
    model: str
    #: the CultureVerse chat export (``instruct.jsonl``) or a directory holding it
    data: str
    out: str = out_field("runs/train-vlm", "output_dir", "out_dir")
    method: Literal["lora", "full"] = "lora"
    lora: LoraSettings = Field(default_factory=lambda: LoraSettings(r=16, alpha=32, dropout=0.05))
    #: full fine-tuning: also train the vision tower (default: frozen)
    train_vision_tower: bool = False
    optim: OptimSettings = Field(
        default_factory=lambda: OptimSettings(
            lr=2e-4, weight_decay=0.0, betas=(0.9, 0.999), eps=1e-8, max_grad_norm=1.0
        )
    )
    schedule: ScheduleSettings = Field(
        default_factory=lambda: ScheduleSettings(kind="cosine", warmup_steps=10)
    )
    #: ``answer``: the loss covers the assistant turn's tokens only; ``all``: the whole chat
    loss_on: Literal["answer", "all"] = "answer"
    #: a Jinja chat template file used instead of the processor's own
    chat_template: str | None = None
    #: dtype the weights are loaded in: float32 (mixed-precision master weights) or
    #: bfloat16 (half the memory; for LoRA on large models)
    load_dtype: Literal["float32", "bfloat16"] = "float32"
    gradient_checkpointing: bool = False
    #: LoRA: merge the adapters into the saved ``model`` (else only ``adapter`` is saved)
    merge: bool = True

    FORMER_NAMES = {
        "lr": "optim.lr", "weight_decay": "optim.weight_decay",
        "max_grad_norm": "optim.max_grad_norm", "warmup_ratio": "schedule.warmup_steps",
        "save_steps": "checkpoint_every", "save_total_limit": "keep_last",
        "logging_steps": "log_every",
    }  # fmt: skip


def read_chat_export(path: str | Path) -> Any:
    """The chat export as a ``datasets.Dataset`` of ``prompt``/``completion`` chats and
    ``images`` (opened when a row is read); every image is checked here, before training."""
    from datasets import Dataset

    path = Path(path)
    if path.is_dir():
        path = path / "instruct.jsonl"
    if not path.exists():
        raise MissingInputError(f"chat export not found: {path} (build-benchmark writes it)")
    rows: dict[str, list[Any]] = {"prompt": [], "completion": [], "images": []}
    for number, record in iter_jsonl(path, tolerate_torn_tail=False):
        try:
            (_, prompt), (_, answer) = _two_turns(record["conversations"])
            image = path.parent / str(record["image"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{path}:{number}: not a chat record: {exc}") from None
        if record["image"] == "<inline>":
            raise InputError(f"{path}: records with inline images cannot be trained on")
        if not image.is_file():
            raise MissingInputError(f"{path}:{number}: image not found: {image}")
        rows["prompt"].append([{"role": "user", "content": prompt.replace("<image>", "").strip()}])
        rows["completion"].append([{"role": "assistant", "content": answer}])
        rows["images"].append([str(image)])
    if not rows["prompt"]:
        raise InputError(f"{path} holds no chat records")
    dataset = Dataset.from_dict(rows)
    dataset.set_transform(_open_images)
    return dataset


def _two_turns(turns: list[dict[str, Any]]) -> list[tuple[str, str]]:
    texts = [(str(t.get("from", t.get("role"))), t.get("value", t.get("content"))) for t in turns]
    if len(texts) != 2 or texts[0][0] not in ("human", "user"):
        raise ValueError("expected one human turn then one answer turn")
    if not all(isinstance(text, str) for _, text in texts):
        raise ValueError("conversation turns must hold text ('value')")
    return texts


def _open_images(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
    images = [[open_image(Path(p)) for p in paths] for paths in batch["images"]]
    return {**batch, "images": images}


def _peft_config(config: VLMTrainConfig) -> Any:
    from peft import LoraConfig

    lora = config.lora
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules or LANGUAGE_LORA_TARGETS,
        modules_to_save=lora.modules_to_save or None,
        task_type="CAUSAL_LM",
    )


def _freeze_vision_tower(model: Any) -> None:
    inner = getattr(model, "model", model)
    for name in ("vision_tower", "visual", "vision_model"):
        if getattr(inner, name, None) is not None:
            getattr(inner, name).requires_grad_(False)
            return


def _resume_point(config: VLMTrainConfig, checkpoints: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    if config.resume != "latest":
        if config.resume is not None and not Path(config.resume, "trainer_state.json").exists():
            raise MissingInputError(
                f"not a train-vlm checkpoint (no trainer_state.json): {config.resume}"
            )
        return config.resume
    found = get_last_checkpoint(checkpoints) if checkpoints.is_dir() else None
    if found is None:
        logger.info("no checkpoint in %s yet; starting from the beginning", checkpoints)
    return found


def build_trainer(config: VLMTrainConfig) -> Any:
    """The ``SFTTrainer`` of a run: the shared settings mapped onto TRL's ``SFTConfig``."""
    import torch
    from transformers import PrinterCallback, TrainerCallback

    try:
        from trl import SFTConfig, SFTTrainer
    except ImportError as exc:
        raise UserError("train-vlm runs on TRL, which is missing: pip install 'trl>=1,<2'") from exc

    from cultureclip.models.chat import load_vlm

    per_device = config.per_process_batch(int(os.environ.get("WORLD_SIZE", "1")))
    # a device this machine lacks is an error before any work, not a silent run on the CPU
    device = resolve_device(config.device)
    on_cuda = device.startswith("cuda")
    if ":" in device:  # the Trainer puts each process on its local rank's GPU, not this one
        raise InputError(
            f"train-vlm cannot run on {device}: use device=cuda and pick the GPU with "
            "CUDA_VISIBLE_DEVICES (one process) or torchrun (several)"
        )
    dataset = read_chat_export(config.data)
    precision = resolve_precision_name(config.precision, on_cuda)
    processor, model = load_vlm(config.model, device="cpu", dtype=getattr(torch, config.load_dtype))
    if config.chat_template is not None:
        processor.chat_template = Path(config.chat_template).read_text(encoding="utf-8")
    if config.method == "full" and not config.train_vision_tower:
        _freeze_vision_tower(model)
    optim, schedule = config.optim, config.schedule
    fused = optim.fused is True or (optim.fused == "auto" and on_cuda)
    # transformers 5 renamed gradient checkpointing to activation checkpointing
    checkpointing = (
        "activation" if "activation_checkpointing" in SFTConfig.__dataclass_fields__ else "gradient"
    )
    args = SFTConfig(
        output_dir=str(Path(config.out) / "checkpoints"),
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=config.grad_accum_steps,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1,
        learning_rate=optim.lr,
        weight_decay=optim.weight_decay,
        adam_beta1=optim.betas[0],
        adam_beta2=optim.betas[1],
        adam_epsilon=optim.eps,
        max_grad_norm=optim.max_grad_norm or 0.0,
        optim="adamw_torch_fused" if fused else "adamw_torch",
        lr_scheduler_type=SCHEDULERS[schedule.kind],
        warmup_steps=schedule.warmup_steps,
        save_strategy="steps",
        save_steps=config.checkpoint_every,
        save_total_limit=config.keep_last,
        logging_steps=config.log_every,
        report_to=report_to(config),
        dataloader_num_workers=loader_workers(config.num_workers, dataset),
        seed=config.seed,
        use_cpu=not on_cuda,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        **{
            f"{checkpointing}_checkpointing": config.gradient_checkpointing,
            f"{checkpointing}_checkpointing_kwargs": {"use_reentrant": False},
        },
        completion_only_loss=config.loss_on == "answer",
        # Images are decoded per batch; a length cap would cut image tokens off the prompt.
        max_length=None,
        ddp_find_unused_parameters=False,
        disable_tqdm=True,
    )

    class RunControl(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            check_schedule(schedule, state.max_steps)

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step == config.stop_at_step:
                control.should_save = control.should_training_stop = True

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            if state.is_world_process_zero:
                logger.info("step %d: %s", state.global_step, logs)

    try:
        trainer = SFTTrainer(
            model=model,
            args=args,
            train_dataset=dataset,
            processing_class=processor,
            peft_config=_peft_config(config) if config.method == "lora" else None,
            callbacks=[RunControl()],
        )
    except ValueError as exc:  # peft: targets that match no module of this model
        raise InputError(f"train-vlm cannot train {config.model} this way: {exc}") from exc
    trainer.remove_callback(PrinterCallback)  # library code logs; only the CLI prints
    return trainer


@dataclass
class VLMTrainResult:
    steps: int
    total_steps: int
    final_loss: float | None
    #: None when the run stopped early (``stop_at_step``): continue it with ``resume``
    model_dir: Path | None
    is_main: bool
    log: list[dict[str, Any]]


def train_vlm(config: VLMTrainConfig) -> VLMTrainResult:
    """Fine-tunes ``config.model`` on ``config.data``; returns where the model went."""
    trainer = build_trainer(config)
    out = Path(config.out)
    if trainer.is_world_process_zero():
        out.mkdir(parents=True, exist_ok=True)
        config.save(out)
    output = trainer.train(resume_from_checkpoint=_resume_point(config, out / "checkpoints"))
    completed = trainer.state.global_step >= trainer.state.max_steps
    if completed and trainer.is_world_process_zero():
        from cultureclip.publish import export_vlm

        export_vlm(
            trainer.model,
            trainer.processing_class,
            out,
            base=config.model,
            config=config.model_dump(mode="json"),
            merge=config.merge,
        )
    trainer.accelerator.wait_for_everyone()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    return VLMTrainResult(
        steps=trainer.state.global_step,
        total_steps=trainer.state.max_steps,
        final_loss=losses[-1] if losses else output.training_loss,
        model_dir=out / "model" if completed else None,
        is_main=trainer.is_world_process_zero(),
        log=list(trainer.state.log_history),
    )


#: the stage's entry point under the name every stage uses
run = train_vlm
