"""Test-only helpers: data and model tweaks that only this suite needs (not part of the package)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def teach_fixed_answer(
    path: str | Path,
    conversations: list[list[dict[str, Any]]],
    answer: str,
    *,
    steps: int = 60,
    lr: float = 3e-3,
) -> Path:
    """Trains the chat LM in ``path`` to answer ``answer`` to these conversations; saves it.

    A few seconds on a CPU turn the random tiny model into one that emits a known (e.g.
    valid JSON) answer, so tests can reach the success path of a real local backend.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    model.train()
    examples = []
    for conversation in conversations:
        prompt = tokenizer.apply_chat_template(conversation, add_generation_prompt=True)
        if isinstance(prompt, dict) or hasattr(prompt, "keys"):
            prompt = prompt["input_ids"]
        target = tokenizer.encode(answer + "<|im_end|>", add_special_tokens=False)
        ids = torch.tensor([list(prompt) + target])
        labels = ids.clone()
        labels[0, : len(prompt)] = -100
        examples.append((ids, labels))
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr)
    for step in range(steps):
        ids, labels = examples[step % len(examples)]
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        optimiser.step()
        optimiser.zero_grad()
    model.eval()
    model.save_pretrained(path)
    return Path(path)


#: (id, question, reference answers, country, category) of :func:`write_open_items`
OPEN_QUESTIONS = [
    ("q1", "What is this dish called?", ["jollof rice", "jollof"], "NG", "Cuisine"),
    ("q2", "What is this garment?", ["kimono"], "JP", "Clothing"),
    ("q3", "Which festival is shown?", ["Diwali", "Deepavali"], "IN", "Festival"),
    ("q4", "What instrument is this?", ["erhu"], "CN", "Art"),
]


def write_open_items(directory: str | Path) -> Path:
    """Writes four open-ended questions (plus one malformed line) for the ``openended`` benchmark."""
    import json

    from PIL import Image

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    lines = []
    for index, (item_id, question, answers, country, category) in enumerate(OPEN_QUESTIONS):
        Image.new("RGB", (24, 24), (40 * index, 80, 120)).save(directory / f"{item_id}.png")
        row = {
            "id": item_id,
            "image": f"{item_id}.png",
            "question": question,
            "answers": answers,
            "country": country,
            "category": category,
        }
        lines.append(json.dumps(row))
    lines.append(json.dumps({"id": "bad", "image": "x.png", "question": "?", "answers": []}))
    path = directory / "items.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
