"""Fixtures of the synth tests: a scripted stand-in LLM on loopback and small configs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cultureclip.core.io import stable_hash
from cultureclip.synth.config import SynthConfig
from cultureclip.synth.standin import Reply, StandInLLMServer, SynthScript, prompt_name, user_text

# Real emoji concepts, so the glyph backend draws real artwork for every side.
CONCEPTS = {
    "JP/Cuisine": [
        ("sushi", "slice of raw fish on rice"),
        ("rice ball", "triangle of rice with seaweed"),
    ],
    "JP/Clothing": [("kimono", "robe with wide sleeves and sash"), ("bad twin", "plain cloth")],
    "CN/Cuisine": [
        ("dumpling", "pleated dough parcel"),
        ("moon cake", "round pastry with pressed pattern"),
    ],
    "CN/Clothing": [
        ("person with skullcap", "round cap with a button"),
        ("woman with headscarf", "scarf over hair"),
    ],
}
TWINS = {
    "sushi": ("bento box", "KR", "boxed rice with fish"),
    "rice ball": ("taco", "MX", "folded tortilla with filling"),
    "kimono": ("sari", "IN", "draped cloth over shoulder"),
    "dumpling": ("fortune cookie", "US", "folded crescent cookie"),
    "moon cake": ("pie", "GB", "round pastry with crust"),
    "person with skullcap": ("cowboy hat face", "US", "wide brimmed hat"),
    "woman with headscarf": ("person wearing turban", "IN", "cloth wound around the head"),
}


def faulty_script(base: SynthScript) -> Any:
    """The scripted answers plus the faults a real server produces.

    - captions of 'sushi': first answer malformed JSON, then too long, then fine;
    - twin of 'bad twin': always empty neg_features (the reference code's bug) -> failure;
    - the judge gives every image of 'taco' a 1 for fidelity (its twin pair is rejected);
    - about one request in five gets one HTTP 500 first (retried by the transport).
    """
    state = {"sushi": 0}
    overloaded: set[str] = set()

    def respond(request: dict[str, Any]) -> Reply:
        body = stable_hash(request)
        if int(body, 16) % 5 == 0 and body not in overloaded:
            overloaded.add(body)
            return Reply('{"error": "overloaded"}', 500)
        name, text = prompt_name(request), user_text(request)
        if name == "twins" and "Concept: bad twin" in text:
            return Reply(
                json.dumps(
                    {
                        "neg_concept": "good twin",
                        "neg_country": "FR",
                        "neg_context": "x",
                        "neg_features": "",
                    }
                )
            )
        if name == "captions" and text.startswith("Concept: sushi"):
            state["sushi"] += 1
            if state["sushi"] == 1:
                return Reply('{"captions": ["sushi with raw fish", ')
            if state["sushi"] == 2:
                long = "sushi with a slice of raw fish " + "and many other words " * 4
                return Reply(json.dumps({"captions": [long] * 10}))
        if name == "judge" and "Concept: taco" in text:
            return Reply(json.dumps({"authenticity": 5, "consistency": 5, "fidelity": 1}))
        return base(request)

    return respond


@pytest.fixture
def script() -> SynthScript:
    return SynthScript(concepts=CONCEPTS, twins=TWINS)


@pytest.fixture
def standin(script: SynthScript) -> Iterator[StandInLLMServer]:
    with StandInLLMServer(faulty_script(script)) as server:
        yield server


@pytest.fixture
def make_config() -> Any:
    return synth_config


def synth_config(out_dir: Path, base_url: str, **sections: Any) -> SynthConfig:
    """A small offline config: JP+CN x Cuisine+Clothing, 3 captions, glyph images, VLM judge."""
    data: dict[str, Any] = {
        "out": str(out_dir),
        "progress": False,
        "llm": {
            "base_url": base_url,
            "model": "stand-in",
            "concurrency": 4,
            "backoff_s": 0.01,
            "max_retries": 3,
        },
        "concepts": {
            "countries": ["JP", "CN"],
            "categories": ["Cuisine", "Clothing"],
            "per_pair": 2,
        },
        "captions": {"n": 3},
        "images": {"backend": "glyph", "size": 32, "per": "caption"},
        "filter": {"backend": "vlm"},
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return SynthConfig.model_validate(data)
