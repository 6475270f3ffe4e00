"""Quality filter backends (``JUDGES``): a VLM judge and a CLIP-score filter.

- ``vlm``: an OpenAI-compatible vision chat model sees the image inline (base64 data URL)
  and scores authenticity, consistency with the caption and cultural fidelity 1–5; an
  image passes iff no score is 1 and the mean is above 3 (CulTwin's rule).
- ``clipscore``: ``2.5 * max(cos(image, caption), 0)`` with any registered model
  (``cultureclip.models.create_model``); passes iff the score reaches ``threshold``.
- ``none``: every image passes (an explicit choice, recorded in the manifest).

A twin pair is kept only if both of its images pass; that rule lives in the merge.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from PIL import Image

from cultureclip.core.identity import spec_identity
from cultureclip.core.llm import Items, Outcome, ask, create_llm, load_prompt, with_images
from cultureclip.core.registry import Registry
from cultureclip.synth.config import FilterSettings, LLMSettings
from cultureclip.synth.schemas import JudgeAnswer, judge_passes


@dataclass(frozen=True)
class JudgeRequest:
    image: Image.Image
    caption: str
    concept: str
    country_name: str
    category: str


Verdict = dict[str, Any]  # {"passed": bool, "scores": {...}}


class Judge(ABC):
    #: requests handed to one ``judge`` call, and how many calls may run at once
    batch_size: int = 1
    concurrency: int = 1

    def __init__(self, settings: FilterSettings, llm: LLMSettings) -> None:
        self.settings = settings

    @abstractmethod
    def identity(self) -> dict[str, Any]:
        """Everything that changes a verdict; part of every verdict's item key."""

    @abstractmethod
    async def judge(self, requests: list[JudgeRequest]) -> list[Outcome[Verdict]]:
        """One verdict (or failure) per request."""

    async def aclose(self) -> None:  # noqa: B027 - an optional hook, not abstract
        """Releases connections or memory."""


JUDGES: Registry[type[Judge]] = Registry("quality judge", entry_point_group="cultureclip.judges")


def create_judge(settings: FilterSettings, llm: LLMSettings) -> Judge:
    return JUDGES.create(settings.backend, settings, llm)


@JUDGES.register("vlm")
class VLMJudge(Judge):
    """A vision chat model over an OpenAI-compatible API scores each image 1–5 on three axes."""

    def __init__(self, settings: FilterSettings, llm: LLMSettings) -> None:
        super().__init__(settings, llm)
        self.llm_settings = settings.llm or llm
        self.prompt = load_prompt(settings.prompt)
        self.concurrency = self.llm_settings.concurrency
        self._llm = None

    def identity(self) -> dict[str, Any]:
        return {
            "backend": "vlm",
            "model": self.llm_settings.model,
            "prompt": self.prompt.id,
            **self.llm_settings.weights(),
        }

    async def judge(self, requests: list[JudgeRequest]) -> list[Outcome[Verdict]]:
        if self._llm is None:
            self._llm = create_llm(self.llm_settings)
        return list(await asyncio.gather(*(self._judge_one(r) for r in requests)))

    async def _judge_one(self, request: JudgeRequest) -> Outcome[Verdict]:
        variables = {
            "concept": request.concept,
            "country_name": request.country_name,
            "category": request.category,
            "caption": request.caption,
        }
        # The image goes inline with the final request, as OpenAI-style content parts.
        messages = with_images(self.prompt.messages(variables), [request.image])

        def verdict(answer: JudgeAnswer) -> Verdict:
            scores = answer.model_dump()
            return {"passed": judge_passes(scores), "scores": scores}

        assert self._llm is not None
        return await ask(
            self._llm,
            self.prompt,
            variables,
            JudgeAnswer,
            check=verdict,
            items=Items(),  # a valid score is kept while an invalid one is asked again
            temperature=0.0,
            messages=messages,
        )

    async def aclose(self) -> None:
        if self._llm is not None:
            await self._llm.aclose()


@JUDGES.register("clipscore")
class ClipScoreJudge(Judge):
    """CLIPScore ``2.5 * max(cos, 0)`` of image and caption with any registered model."""

    def __init__(self, settings: FilterSettings, llm: LLMSettings) -> None:
        super().__init__(settings, llm)
        self.batch_size = settings.batch_size
        self._model: Any = None

    def identity(self) -> dict[str, Any]:
        identity: dict[str, Any] = {
            "backend": "clipscore",
            "model": self.settings.model,
            **spec_identity(self.settings.model),
            "threshold": self.settings.threshold,
        }
        # half precision asked for scores other numbers; the setting, not what ``auto``
        # became on this machine, keys them: a merge on another machine finds them
        if self.settings.precision not in ("auto", "fp32"):
            identity["precision"] = self.settings.precision
        return identity

    @property
    def model(self) -> Any:
        if self._model is None:
            from cultureclip.models.registry import create_model

            settings = self.settings
            self._model = create_model(
                settings.model, device=settings.resolved_device(), precision=settings.precision
            )
        return self._model

    def scores(self, images: list[Image.Image], captions: list[str]) -> list[float]:
        """One batch through each tower on the configured device (``filter.device``)."""
        size = max(1, len(images))
        image_features = self.model.embed_images(images, batch_size=size)
        text_features = self.model.embed_texts(captions, batch_size=size)
        cosine = (image_features * text_features).sum(dim=-1)
        return [2.5 * max(float(c), 0.0) for c in cosine]

    async def judge(self, requests: list[JudgeRequest]) -> list[Outcome[Verdict]]:
        scores = await asyncio.to_thread(
            self.scores, [r.image for r in requests], [r.caption for r in requests]
        )
        return [
            Outcome(
                {
                    "passed": score >= self.settings.threshold,
                    "scores": {"clipscore": round(score, 6)},
                }
            )
            for score in scores
        ]


@JUDGES.register("none")
class NoJudge(Judge):
    """Keeps every image (no quality filter); the manifest records that none was applied."""

    def identity(self) -> dict[str, Any]:
        return {"backend": "none"}

    async def judge(self, requests: list[JudgeRequest]) -> list[Outcome[Verdict]]:
        return [Outcome({"passed": True, "scores": {}}) for _ in requests]
