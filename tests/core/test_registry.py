"""The decorator registry behind backends, losses, benchmarks."""

from __future__ import annotations

import pytest

from cultureclip.core.registry import Registry


def test_register_get_create_and_describe() -> None:
    shapes: Registry[type] = Registry("shape")

    @shapes.register("square")
    class Square:
        """A four-sided shape.

        More text that is not the summary.
        """

        def __init__(self, side: int) -> None:
            self.side = side

    @shapes.register("circle", help="round")
    def circle(radius: int = 1) -> str:
        return f"circle {radius}"

    assert shapes.get("square") is Square
    assert shapes.create("square", 3).side == 3
    assert shapes.create("circle", radius=2) == "circle 2"
    assert shapes.names() == ["circle", "square"] == list(shapes)
    assert shapes.describe() == {"circle": "round", "square": "A four-sided shape."}
    assert "square" in shapes and "hexagon" not in shapes and len(shapes) == 2
    assert repr(shapes) == "Registry('shape', ['circle', 'square'])"


def test_unknown_name_lists_the_known_ones() -> None:
    shapes: Registry[object] = Registry("shape")
    with pytest.raises(KeyError, match="unknown shape 'x'; registered: none"):
        shapes.get("x")
    shapes.register("a")(object)
    with pytest.raises(KeyError, match="registered: a"):
        shapes.create("x")


def test_names_cannot_be_taken_twice() -> None:
    shapes: Registry[object] = Registry("shape")
    first = shapes.register("a")(type("A", (), {}))
    assert (
        shapes.register("a")(first) is first
    )  # re-registering the same object is harmless (re-import)
    with pytest.raises(ValueError, match="shape 'a' is already registered"):
        shapes.register("a")(type("B", (), {}))


def test_model_backends_are_registered() -> None:
    from cultureclip.models import MODELS, list_models

    def built_in(names):  # test modules may register helper backends of their own
        return {n for n in names if MODELS.get(n).__module__.startswith("cultureclip.")}

    assert built_in(list_models()) == {"hf", "lite", "open_clip"} == built_in(MODELS.names())
