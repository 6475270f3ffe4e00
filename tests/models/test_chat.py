"""``cultureclip.models.chat``: what scoring and fine-tuning share about chat inputs."""

from __future__ import annotations

import pytest

from cultureclip.core.errors import InputError


class _PieceTokenizer:
    """Sentencepiece-like: "A" → [▁A]; " A" → [▁, A]; "Z" has no single piece."""

    pieces = {1: "▁", 2: "▁A", 3: "A", 4: "Zq"}

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return {"A": [2], " A": [1, 3], "Z": [4], " Z": [1, 4]}[text]

    def decode(self, ids: list[int]) -> str:
        return "".join(self.pieces[i] for i in ids).replace("▁", " ")


def test_letter_token_ids_follow_the_piece_that_carries_the_letter() -> None:
    from cultureclip.models.chat import first_token_ids

    assert first_token_ids(_PieceTokenizer(), "A") == [2, 3]
    with pytest.raises(InputError, match="no single token"):
        first_token_ids(_PieceTokenizer(), "Z")
