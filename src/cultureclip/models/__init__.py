"""Model backends behind one interface (:class:`VisionLanguageModel`), chosen by name."""

from cultureclip.models.base import (
    BackendError,
    LoraSettings,
    TrainingSettings,
    TrainMode,
    VisionLanguageModel,
)
from cultureclip.models.registry import MODELS, create_model, list_models, parse_spec

__all__ = [
    "MODELS",
    "BackendError",
    "LoraSettings",
    "TrainMode",
    "TrainingSettings",
    "VisionLanguageModel",
    "create_model",
    "list_models",
    "parse_spec",
]
