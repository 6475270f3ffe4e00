"""OpenMoji glyph rendering: colour, centring, flags and ZWJ sequences, missing glyphs."""

from __future__ import annotations

import numpy as np
import pytest

from cultureclip.data.glyphs import GlyphError, glyph_available, normalize_sequence, render_glyph


@pytest.mark.parametrize("text", ["🏯", "🏰", "👘", "🥻", "🇮🇩", "🇲🇨", "👩🏽‍🍳", "#️⃣", "🏳️‍🌈"])
def test_known_glyphs_are_available(text: str) -> None:
    assert glyph_available(text)


@pytest.mark.parametrize("text", ["", "a", "🇽🇽", "🏯🏰", "\U0001faff", "\U000e0001"])
def test_missing_or_split_glyphs_are_not(text: str) -> None:
    assert not glyph_available(text)
    with pytest.raises(GlyphError):
        render_glyph(text)


def test_minimally_qualified_sequences_are_normalised() -> None:
    couple = "👨\u200d❤\u200d👨"  # as listed by the emoji package, without VS16 after the heart
    assert normalize_sequence(couple) == "👨\u200d❤️\u200d👨"
    assert glyph_available(couple)


def test_render_is_coloured_centred_and_fills_the_square() -> None:
    image = render_glyph("👘", size=128)  # a pink kimono
    assert image.mode == "RGB" and image.size == (128, 128)
    pixels = np.asarray(image).astype(int)
    ink = np.argwhere((pixels != 255).any(axis=-1))
    (top, left), (bottom, right) = ink.min(0), ink.max(0)
    assert max(bottom - top, right - left) + 1 == pytest.approx(0.8 * 128, abs=2)
    assert abs((top + bottom) / 2 - 63.5) <= 2 and abs((left + right) / 2 - 63.5) <= 2
    # Colour, not a black outline only: some pixels are far from grey.
    saturation = pixels.max(-1) - pixels.min(-1)
    assert (saturation > 80).sum() > 200


def test_flags_of_similar_design_render_as_red_over_white() -> None:
    indonesia = np.asarray(render_glyph("🇮🇩", size=64)).astype(int)
    red = (indonesia[..., 0] > 180) & (indonesia[..., 1] < 90)
    upper, lower = red[:32].sum(), red[32:].sum()
    assert upper > 200 and lower < upper / 4
    assert (
        render_glyph("🇮🇩", 64).tobytes() != render_glyph("🇵🇱", 64).tobytes()
    )  # Poland: white over red


def test_background_and_transparency() -> None:
    black = render_glyph("🏰", size=48, background=(0, 0, 0))
    assert black.getpixel((0, 0)) == (0, 0, 0)
    clear = render_glyph("🏰", size=48, background=(0, 0, 0, 0))
    assert (
        clear.mode == "RGBA" and clear.getpixel((0, 0))[3] == 0 and clear.getpixel((24, 24))[3] > 0
    )
    with pytest.raises(ValueError, match="at least 8"):
        render_glyph("🏰", size=4)
