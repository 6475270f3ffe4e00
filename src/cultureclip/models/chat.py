"""Chat inputs for transformers image-text-to-text models (any family with a chat template).

One user turn holds the image and the prompt text; the processor's chat template renders
it and the processor expands the image placeholder (LLaVA, Qwen2-VL, Idefics3/SmolVLM …
each in their own way).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from cultureclip.core.errors import InputError, MissingInputError


def user_turn(text: str) -> dict[str, Any]:
    return {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}


def load_vlm(source: str | Path, *, device: str, dtype: Any) -> tuple[Any, Any]:
    """``(processor, model)`` from a hub id or a directory, in eval mode (``Trainer`` switches
    to train mode at every step)."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    source = str(source)
    local = Path(source).expanduser()
    if (local.exists() or source.startswith((".", "/", "~"))) and not (
        local / "config.json"
    ).exists():
        hint = (
            "; it holds LoRA adapters: use the merged model train-vlm saved beside it (model/)"
            if (local / "adapter_config.json").exists()
            else ""
        )
        raise MissingInputError(
            f"{source} is not a saved transformers model (no config.json){hint}"
        )
    try:
        processor = AutoProcessor.from_pretrained(source)
        if getattr(processor, "chat_template", None) is None:
            raise InputError(
                f"{source}: the processor has no chat template; use an instruct/chat model"
            )
        model = AutoModelForImageTextToText.from_pretrained(source, dtype=dtype)
    except OSError as exc:  # not on the hub, offline, no access
        raise MissingInputError(f"cannot load the VLM {source!r}: {exc}") from exc
    return processor, model.to(device)


def render(processor: Any, conversation: list[dict[str, Any]], *, generation_prompt: bool) -> str:
    return processor.apply_chat_template(
        conversation, add_generation_prompt=generation_prompt, tokenize=False
    )


def encode(
    processor: Any, texts: Sequence[str], images: Sequence[Image.Image], device: Any
) -> dict[str, Any]:
    """Tokenises rendered chats with one image each (padded on the tokenizer's side)."""
    batch = processor(
        text=list(texts),
        images=[[image.convert("RGB")] for image in images],
        padding=True,
        return_tensors="pt",
    )
    return batch.to(device)


def first_token_ids(tokenizer: Any, text: str) -> list[int]:
    """The token ids a reply starting with ``text`` may begin with (with/without a space).

    ``"A"`` and ``" A"`` tokenise differently per family (``A``, ``ĠA``, ``▁A``, or
    ``▁`` + ``A``); the ids kept are those of the piece that carries the letter.
    """
    ids = set()
    for variant in (text, " " + text):
        for token in tokenizer.encode(variant, add_special_tokens=False):
            if tokenizer.decode([token]).strip() == text.strip():
                ids.add(token)
                break
    if not ids:
        raise InputError(
            f"the tokenizer has no single token for {text!r}; use likelihood_target=text"
        )
    return sorted(ids)


def n_tokens(tokenizer: Any, text: str) -> int:
    return len(tokenizer.encode(text, add_special_tokens=False))
