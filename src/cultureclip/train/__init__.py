"""CultureCLIP fine-tuning: twin hard-negative losses, LoRA or full, one process or many."""

from cultureclip.train.config import TrainConfig, list_presets, load_train_config
from cultureclip.train.gradcache import contrastive_backward
from cultureclip.train.losses import LOSSES, LossError, LossOutput, create_loss
from cultureclip.train.trainer import TrainResult, TrainStep, train
from cultureclip.train.wise_ft import wise_ft

#: the stage's entry point under the name every stage uses
run = train

__all__ = [
    "LOSSES",
    "LossError",
    "LossOutput",
    "TrainConfig",
    "TrainResult",
    "TrainStep",
    "contrastive_backward",
    "create_loss",
    "list_presets",
    "load_train_config",
    "run",
    "train",
    "wise_ft",
]
