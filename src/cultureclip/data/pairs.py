"""Plain image–text pairs, the common currency of retrieval data and plain CLIP training.

A :class:`PairCollection` is a list of images and a list of texts with a many-to-many
relation (a CulTi text may describe several images). Readers for the on-disk
layouts (Chinese-CLIP/CulTi TSV+JSONL, folders with a captions file, CulTwin sets)
live in :mod:`cultureclip.data.collections` and all return this type.
"""

from __future__ import annotations

import base64
import binascii
import io
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from cultureclip.core.errors import MissingInputError

ImageSource = Path | bytes

RAW_IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8", b"GIF8", b"RIFF", b"BM")
#: default pixel cap of decoded images (the search server's upload cap too)
DEFAULT_MAX_PIXELS = 40_000_000
#: set in ``image.info`` when :func:`open_image` reduced an image over the pixel cap
DOWNSCALED_FROM = "cultureclip_downscaled_from"


class ImageTooLargeError(ValueError):
    """An image over the pixel cap that cannot be reduced while decoding (not a JPEG)."""


def decode_base64(data: bytes) -> bytes:
    """Decodes standard or URL-safe base64 (Chinese-CLIP writes URL-safe), padded or not.

    The alphabet is told from the characters used; any character outside it (or a mix of
    both alphabets) is an error that names the alphabet, not a padding complaint.
    """
    data = data.strip()
    urlsafe = b"-" in data or b"_" in data
    if urlsafe and (b"+" in data or b"/" in data):
        raise binascii.Error("base64 mixes the standard (+/) and URL-safe (-_) alphabets")
    padded = data + b"=" * (-len(data) % 4)
    try:
        return base64.b64decode(padded, altchars=b"-_" if urlsafe else None, validate=True)
    except binascii.Error as exc:
        alphabet = "URL-safe" if urlsafe else "standard"
        raise binascii.Error(f"not valid {alphabet} base64 ({exc})") from exc


def raw_image_bytes(source: ImageSource) -> bytes:
    """The encoded image file bytes of a source (a path is read, base64 decoded)."""
    if isinstance(source, Path):
        return source.read_bytes()
    if source[:8].startswith(RAW_IMAGE_MAGIC):
        return bytes(source)
    return decode_base64(source)


def _reduced(image: Image.Image, max_pixels: int) -> Image.Image:
    """Decodes ``image`` (opened, not loaded) at most ``max_pixels`` large."""
    width, height = image.size
    if width * height <= max_pixels:
        return image.convert("RGB")
    scale = (max_pixels / (width * height)) ** 0.5
    target = (max(1, int(width * scale)), max(1, int(height * scale)))
    if image.format != "JPEG":
        raise ImageTooLargeError(
            f"image is {width}×{height} ({width * height:,} pixels), over the cap of "
            f"{max_pixels:,} pixels; only JPEGs are reduced while decoding, so downscale it first"
        )
    image.draft("RGB", target)  # DCT scaling: decodes at 1/2, 1/4 or 1/8 size, fast
    reduced = image.convert("RGB")
    reduced.thumbnail(target)
    reduced.info[DOWNSCALED_FROM] = (width, height)
    return reduced


def open_image(source: ImageSource, max_pixels: int | None = None) -> Image.Image:
    """Opens a path or encoded bytes (base64 text is decoded) as an RGB PIL image.

    With ``max_pixels``, an image over the cap is decoded reduced (JPEG draft mode, then
    a thumbnail; ``image.info[DOWNSCALED_FROM]`` holds the original size); other formats
    over the cap raise :class:`ImageTooLargeError` before any pixel is decoded.
    """
    opened = source if isinstance(source, Path) else io.BytesIO(raw_image_bytes(source))
    with Image.open(opened) as image:
        return _reduced(image, max_pixels) if max_pixels else image.convert("RGB")


def load_image(source: str | bytes | Path, root: Path = Path(".")) -> Image.Image:
    """Opens an item image (eval items, chat examples): a path (relative to ``root``), a
    ``data:`` URL, or encoded bytes."""
    if isinstance(source, bytes):
        opened: io.BytesIO | Path = io.BytesIO(source)
    elif str(source).startswith("data:"):
        opened = io.BytesIO(base64.b64decode(str(source).partition(",")[2]))
    else:
        opened = root / source  # an absolute path replaces root
        if not opened.exists():
            raise MissingInputError(f"image not found: {opened}")
    with Image.open(opened) as image:
        return image.convert("RGB")


@dataclass
class PairCollection:
    """Images and texts with ``text_to_images[t]`` = indices of the images text ``t`` describes."""

    image_ids: list[str] = field(default_factory=list)
    images: list[ImageSource] = field(default_factory=list)
    text_ids: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    text_to_images: list[list[int]] = field(default_factory=list)
    name: str = ""
    meta: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.image_ids) != len(self.images):
            raise ValueError("image_ids and images differ in length")
        if not (len(self.text_ids) == len(self.texts) == len(self.text_to_images)):
            raise ValueError("text_ids, texts and text_to_images differ in length")

    def add_image(self, image_id: str, source: ImageSource) -> int:
        """Appends an image (readers build a collection this way); returns its index."""
        self.image_ids.append(image_id)
        self.images.append(source)
        return len(self.images) - 1

    def add_text(self, text_id: str, text: str, images: list[int]) -> None:
        self.text_ids.append(text_id)
        self.texts.append(text)
        self.text_to_images.append(images)

    def load_image(self, index: int) -> Image.Image:
        return open_image(self.images[index])

    def pairs(self) -> list[tuple[int, int]]:
        """Every (image index, text index) positive pair: one training example each."""
        return [
            (image, text) for text, images in enumerate(self.text_to_images) for image in images
        ]

    def image_to_texts(self) -> list[list[int]]:
        result: list[list[int]] = [[] for _ in self.images]
        for text, images in enumerate(self.text_to_images):
            for image in images:
                result[image].append(text)
        return result
