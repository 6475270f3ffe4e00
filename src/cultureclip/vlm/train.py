"""``cultureclip train-vlm``: supervised fine-tuning of a chat VLM on CultureVerse data.

The data is the chat export of ``build-benchmark`` (``instruct.jsonl``, written by
:func:`cultureclip.synth.builder.export_instruction_data`). Each record becomes a user
turn (image + prompt) and an assistant turn, rendered by the processor's chat template;
the loss covers only the assistant turn's tokens. The loop, checkpoints, resuming,
mixed precision and multi-GPU are transformers' ``Trainer``; this module adds the data,
the answer-only labels, LoRA (peft) targeting and the final model (adapters merged, so
``<out>/model`` loads with ``hf-vlm:<dir>``). Checkpoints are safetensors + JSON; the
``Trainer`` reads optimiser/scheduler/RNG state back with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from cultureclip.config import Config, out_field
from cultureclip.core.device import Device
from cultureclip.core.errors import InputError, MissingInputError
from cultureclip.utils.io import iter_jsonl

logger = logging.getLogger(__name__)

#: attention and MLP projections of the text model in LLaVA, Qwen2-VL and Idefics3/SmolVLM
LANGUAGE_LORA_TARGETS = (
    r".*(language_model|text_model)\..*\."
    r"(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
)


class LoraSettings(Config):
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)
    #: ``language``: attention + MLP projections of the text model; ``all-linear``: every
    #: linear layer (vision tower and projector too); or a peft regex / module name list
    target_modules: str | list[str] = "language"
    #: modules trained in full beside the adapters (e.g. ``multi_modal_projector`` of
    #: LLaVA, ``connector`` of Idefics3)
    modules_to_save: list[str] = Field(default_factory=list)


class VLMTrainConfig(Config):
    """One ``train-vlm`` run; saved as ``config.yaml`` in the output dir."""

    #: hub id or directory of an image-text-to-text model with a chat template
    model: str
    #: the CultureVerse chat export (``instruct.jsonl``) or a directory holding it
    data: str
    out: str = out_field("runs/train-vlm", "output_dir")
    method: Literal["lora", "full"] = "lora"
    lora: LoraSettings = Field(default_factory=LoraSettings)
    #: full fine-tuning: also train the vision tower (default: frozen)
    train_vision_tower: bool = False
    epochs: float = Field(1.0, gt=0)
    #: stop after this many optimiser steps (overrides ``epochs``)
    max_steps: int | None = Field(None, ge=1)
    #: examples per device per micro-step
    batch_size: int = Field(4, ge=1)
    grad_accum_steps: int = Field(1, ge=1)
    lr: float = Field(2e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    schedule: Literal["cosine", "linear", "constant", "constant_with_warmup"] = "cosine"
    max_grad_norm: float = Field(1.0, gt=0)
    #: dtype the weights are loaded in: float32 (mixed-precision master weights) or
    #: bfloat16 (half the memory; for LoRA on large models)
    load_dtype: Literal["float32", "bfloat16"] = "float32"
    #: ``auto``: bf16 mixed precision on a GPU that has it, fp32 elsewhere
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    gradient_checkpointing: bool = False
    save_steps: int = Field(200, ge=1)
    save_total_limit: int | None = Field(2, ge=1)
    logging_steps: int = Field(10, ge=1)
    num_workers: int = Field(0, ge=0)
    seed: int = 0
    #: ``latest`` (the newest checkpoint in ``<out>/checkpoints``) or a checkpoint dir
    resume: str | None = None
    #: LoRA: merge the adapters into the saved ``model`` (else only ``adapter`` is saved)
    merge: bool = True
    #: ``cpu`` forces the CPU; ``auto``: what accelerate picks (the local rank's GPU)
    device: Device = "auto"


# ---- data ------------------------------------------------------------------------------------
@dataclass
class ChatExample:
    image: str
    prompt: str
    answer: str


def _turn_text(turn: dict[str, Any]) -> tuple[str, str]:
    role = str(turn.get("from", turn.get("role", "")))
    value = turn.get("value", turn.get("content", ""))
    if not isinstance(value, str):
        raise InputError("conversation turns must hold text ('value')")
    return role, value


def read_chat_export(path: str | Path) -> tuple[list[ChatExample], Path]:
    """The examples of a chat export and the folder its image paths are relative to."""
    path = Path(path)
    if path.is_dir():
        path = path / "instruct.jsonl"
    if not path.exists():
        raise MissingInputError(f"chat export not found: {path} (build-benchmark writes it)")
    examples = []
    for number, record in iter_jsonl(path, tolerate_torn_tail=False):
        try:
            turns = [_turn_text(t) for t in record["conversations"]]
            if len(turns) != 2 or turns[0][0] not in ("human", "user"):
                raise InputError("expected one human turn then one answer turn")
            prompt = turns[0][1].replace("<image>", "").strip()
            examples.append(ChatExample(str(record["image"]), prompt, turns[1][1]))
        except (KeyError, TypeError, InputError) as exc:
            raise InputError(f"{path}:{number}: not a chat record: {exc}") from None
    if not examples:
        raise InputError(f"{path} holds no chat records")
    if any(e.image == "<inline>" for e in examples):
        raise InputError(f"{path}: records with inline images cannot be trained on; export files")
    return examples, path.parent


@dataclass
class ChatDataset:
    """Map-style dataset of :class:`ChatExample` s (images opened lazily)."""

    examples: list[ChatExample]
    root: Path

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        from cultureclip.data.pairs import load_image

        example = self.examples[index]
        return {"image": load_image(example.image, self.root), "example": example}


@dataclass
class AnswerOnlyCollator:
    """Renders chats with the processor and labels only the assistant turn's tokens."""

    processor: Any

    def answer_suffix(self, prompt: str, answer: str) -> tuple[str, str]:
        """``(full text, the part of it the loss covers)``."""
        from cultureclip.vlm.chat import assistant_turn, render, user_turn

        asked = render(self.processor, [user_turn(prompt)], generation_prompt=True)
        full = render(
            self.processor, [user_turn(prompt), assistant_turn(answer)], generation_prompt=False
        )
        if full.startswith(asked):
            return full, full[len(asked) :]
        # templates whose generation prompt is not a prefix of the answered chat
        start = full.rfind(answer)
        if start < 0:
            raise InputError("the chat template dropped the answer text")
        return full, full[start:]

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        from cultureclip.vlm.chat import encode, n_tokens

        tokenizer = self.processor.tokenizer
        texts, n_answer = [], []
        for row in rows:
            full, suffix = self.answer_suffix(row["example"].prompt, row["example"].answer)
            texts.append(full)
            n_answer.append(n_tokens(tokenizer, suffix))
        tokenizer.padding_side = "right"
        batch = encode(self.processor, texts, [row["image"] for row in rows], "cpu")
        labels = batch["input_ids"].clone()
        lengths = batch["attention_mask"].sum(dim=1)
        for row, (length, n) in enumerate(zip(lengths.tolist(), n_answer, strict=True)):
            labels[row, : length - n] = -100
            labels[row, length:] = -100
        batch["labels"] = labels
        return dict(batch)


# ---- model -----------------------------------------------------------------------------------
def _prepare_model(config: VLMTrainConfig, model: Any) -> Any:
    if config.method == "full":
        if not config.train_vision_tower:
            tower = _vision_tower(model)
            if tower is not None:
                tower.requires_grad_(False)
        return model
    from peft import LoraConfig, get_peft_model

    targets = config.lora.target_modules
    if targets == "language":
        targets = LANGUAGE_LORA_TARGETS
    lora = LoraConfig(
        r=config.lora.r,
        lora_alpha=config.lora.alpha,
        lora_dropout=config.lora.dropout,
        target_modules=targets,
        modules_to_save=config.lora.modules_to_save or None,
        task_type="CAUSAL_LM",
    )
    try:
        return get_peft_model(model, lora)
    except ValueError as exc:
        raise InputError(f"LoRA does not fit this model: {exc}") from exc


def _vision_tower(model: Any) -> Any:
    inner = getattr(model, "model", model)
    for name in ("vision_tower", "visual", "vision_model"):
        tower = getattr(inner, name, None)
        if tower is not None:
            return tower
    return None


def _precision(config: VLMTrainConfig, on_cuda: bool) -> dict[str, bool]:
    import torch

    precision = config.precision
    if precision == "auto":
        precision = "bf16" if on_cuda and torch.cuda.is_bf16_supported() else "fp32"
    if precision != "fp32" and not on_cuda:
        raise InputError(f"precision={precision} needs a GPU; use precision=fp32 on a CPU")
    return {"bf16": precision == "bf16", "fp16": precision == "fp16"}


def _resume_point(config: VLMTrainConfig, checkpoints: Path) -> str | None:
    if config.resume is None:
        return None
    if config.resume == "latest":
        from transformers.trainer_utils import get_last_checkpoint

        found = get_last_checkpoint(checkpoints) if checkpoints.is_dir() else None
        if found is None:
            logger.info("no checkpoint in %s yet; starting from the beginning", checkpoints)
        return found
    path = Path(config.resume)
    if not (path / "trainer_state.json").exists():
        raise MissingInputError(f"not a train-vlm checkpoint (no trainer_state.json): {path}")
    return str(path)


@dataclass
class VLMTrainResult:
    steps: int
    final_loss: float | None
    model_dir: Path
    is_main: bool
    log: list[dict[str, Any]]


def train_vlm(config: VLMTrainConfig) -> VLMTrainResult:
    """Fine-tunes ``config.model`` on ``config.data``; returns where the model went."""
    import torch
    from transformers import Trainer, TrainingArguments

    from cultureclip.vlm.chat import load_vlm

    examples, root = read_chat_export(config.data)
    dataset = ChatDataset(examples, root)
    on_cuda = config.device != "cpu" and torch.cuda.is_available()
    precision = _precision(config, on_cuda)
    processor, model = load_vlm(config.model, device="cpu", dtype=getattr(torch, config.load_dtype))
    model = _prepare_model(config, model)
    out = Path(config.out)
    checkpoints = out / "checkpoints"
    args = TrainingArguments(
        output_dir=str(checkpoints),
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum_steps,
        learning_rate=config.lr,
        weight_decay=config.weight_decay,
        warmup_steps=_warmup_steps(config, len(dataset)),
        lr_scheduler_type=config.schedule,
        max_grad_norm=config.max_grad_norm,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        logging_steps=config.logging_steps,
        report_to=[],
        remove_unused_columns=False,
        dataloader_num_workers=config.num_workers,
        seed=config.seed,
        use_cpu=not on_cuda,
        ddp_find_unused_parameters=False,
        disable_tqdm=True,
        **precision,
        **_checkpointing(config.gradient_checkpointing),
    )
    trainer = Trainer(
        model=model, args=args, train_dataset=dataset, data_collator=AnswerOnlyCollator(processor)
    )
    if trainer.is_world_process_zero():
        out.mkdir(parents=True, exist_ok=True)
        config.save(out)
    output = trainer.train(resume_from_checkpoint=_resume_point(config, checkpoints))
    model_dir = out / "model"
    if trainer.is_world_process_zero():
        from cultureclip.publish import export_vlm

        export_vlm(
            trainer.model,
            processor,
            out,
            base=config.model,
            config=config.model_dump(mode="json"),
            merge=config.merge,
        )
    trainer.accelerator.wait_for_everyone()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    return VLMTrainResult(
        steps=trainer.state.global_step,
        final_loss=losses[-1] if losses else output.training_loss,
        model_dir=model_dir,
        is_main=trainer.is_world_process_zero(),
        log=list(trainer.state.log_history),
    )


def _checkpointing(enabled: bool) -> dict[str, Any]:
    """Gradient (activation) checkpointing arguments under the installed transformers' names."""
    from transformers import TrainingArguments

    if not enabled:
        return {}
    new = "activation_checkpointing" in TrainingArguments.__dataclass_fields__
    prefix = "activation" if new else "gradient"
    return {
        f"{prefix}_checkpointing": True,
        f"{prefix}_checkpointing_kwargs": {"use_reentrant": False},
    }


def _warmup_steps(config: VLMTrainConfig, n_examples: int) -> int:
    if config.max_steps:
        total = config.max_steps
    else:
        per_step = config.batch_size * config.grad_accum_steps
        total = math.ceil(config.epochs * math.ceil(n_examples / per_step))
    return round(config.warmup_ratio * total)


#: the stage's entry point under the name every stage uses
run = train_vlm
