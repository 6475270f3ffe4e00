"""What both trainers promise, tested once for both: ``train`` (contrastive, our loop) and
``train-vlm`` (generative, TRL's SFTTrainer) take the same settings and must behave alike.

- an interrupted run, resumed, is the uninterrupted run (loss, lr and final weights);
- ``keep_last`` checkpoints are kept, and ``resume: latest`` picks the newest;
- the schedule (total steps, warmup, lr per step) is the same on 1 and 2 processes, with
  gradient accumulation, because ``batch_size`` is global in both.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from safetensors.torch import load_file

from cultureclip.core.config import load_config
from cultureclip.core.io import read_jsonl


@dataclass
class Outcome:
    """What a run left, read the same way for both trainers."""

    steps: int
    total_steps: int
    completed: bool
    #: (step, loss, lr) per logged step
    curve: list[tuple[int, float, float]]
    #: steps of the checkpoints on disk, oldest first
    checkpoints: list[int]
    #: the step ``resume: latest`` continues from
    latest: int | None
    weights: dict[str, Any] | None


@dataclass
class Trainer:
    name: str
    config: Callable[..., Any]
    run: Callable[[Any], Outcome]


def _contrastive(make_config) -> Trainer:
    from cultureclip.train import train
    from cultureclip.train.checkpoint import checkpoint_step, list_checkpoints, resolve_checkpoint

    # Dropout and gradient caching on: RNG states and the data position must both come back.
    lora = {"image": "lora", "text": "lora", "logit_scale": True, "lora": {"dropout": 0.3}}

    def config(out: Path, **settings: Any) -> Any:
        settings.setdefault("grad_cache_chunk", 3 if settings.get("batch_size", 4) > 3 else None)
        return make_config(out=str(out), training=lora, **settings)

    def run(cfg: Any) -> Outcome:
        result = train(cfg)
        folder = cfg.checkpoint_dir
        found = list_checkpoints(folder)
        final = result.final_model_dir
        return Outcome(
            result.steps,
            result.total_steps,
            result.completed,
            [(r["step"], r["loss"], r["lr"]) for r in read_jsonl(result.metrics_path)],
            [checkpoint_step(p) for p in found],
            checkpoint_step(resolve_checkpoint("latest", folder)) if found else None,
            load_file(str(final / "weights.safetensors")) if final else None,
        )

    return Trainer("train", config, run)


def _generative(tiny_vlm: Path, export: Path) -> Trainer:
    from transformers.trainer_utils import get_last_checkpoint

    from cultureclip.vlm.train import VLMTrainConfig, train_vlm

    def config(out: Path, **settings: Any) -> Any:
        values = dict(
            model=str(tiny_vlm), data=str(export), out=str(out), method="lora",
            lora={"r": 4, "alpha": 8, "dropout": 0.3}, batch_size=4, optim={"lr": 1e-2},
            schedule={"kind": "linear", "warmup_steps": 1}, log_every=1,
        )  # fmt: skip
        return load_config(VLMTrainConfig, **{**values, **settings})

    def run(cfg: Any) -> Outcome:
        result = train_vlm(cfg)
        folder = Path(cfg.out) / "checkpoints"
        found = sorted(int(p.name.split("-")[1]) for p in folder.glob("checkpoint-*"))
        latest = get_last_checkpoint(folder) if found else None
        final = result.model_dir
        return Outcome(
            result.steps,
            result.total_steps,
            final is not None,
            [(e["step"], e["loss"], e["learning_rate"]) for e in result.log if "loss" in e],
            found,
            int(latest.rsplit("-", 1)[1]) if latest else None,
            load_file(str(final / "model.safetensors")) if final else None,
        )

    return Trainer("train-vlm", config, run)


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cultureclip.eval.items import read_items
    from cultureclip.synth.builder import export_instruction_data
    from cultureclip.testing import write_flag_mcq

    folder = tmp_path_factory.mktemp("flags")
    items = write_flag_mcq(folder, views=2, seed=0)  # 8 items, as many as the toy twins
    return export_instruction_data(read_items(items), folder / "instruct.jsonl")


@pytest.fixture(params=["train", "train-vlm"])
def trainer(request: pytest.FixtureRequest, export: Path) -> Trainer:
    if request.param == "train":
        return _contrastive(request.getfixturevalue("make_config"))
    return _generative(request.getfixturevalue("tiny_vlm"), export)


def test_resume_reproduces_the_uninterrupted_run(trainer: Trainer, tmp_path: Path) -> None:
    # 8 examples, batch 4: 2 steps per epoch, 6 steps.
    common = dict(epochs=3, checkpoint_every=2, keep_last=2)
    straight = trainer.run(trainer.config(tmp_path / "straight", **common))
    assert straight.completed and straight.steps == 6

    out = tmp_path / "interrupted"
    first = trainer.run(trainer.config(out, stop_at_step=3, **common))
    assert not first.completed and first.weights is None and first.steps == 3
    assert first.checkpoints == [2, 3]
    resumed = trainer.run(trainer.config(out, resume="latest", **common))
    assert resumed.completed and resumed.steps == 6

    expected = straight.curve
    assert len(expected) == 6 and len({loss for _, loss, _ in expected}) == 6
    assert resumed.curve == expected  # exactly, not approximately
    assert straight.weights is not None and resumed.weights is not None
    assert straight.weights.keys() == resumed.weights.keys()
    for name, value in straight.weights.items():
        assert (resumed.weights[name] == value).all(), name
    # keep_last=2 pruned the older checkpoints; latest names the newest.
    assert resumed.checkpoints == [4, 6] and resumed.latest == 6


def test_a_warmup_longer_than_the_run_is_one_warning(
    trainer: Trainer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = trainer.config(tmp_path / "run", max_steps=2, schedule={"warmup_steps": 100})
    with caplog.at_level("INFO", logger="cultureclip.train.config"):
        outcome = trainer.run(cfg)
    assert outcome.total_steps == 2
    warnings = [
        r
        for r in caplog.records
        if r.levelname == "WARNING" and r.name == "cultureclip.train.config"
    ]
    assert len(warnings) == 1 and "\n" not in warnings[0].getMessage()
    assert "warmup_steps=100 is longer than the whole run (2 steps)" in warnings[0].getMessage()


WORKER = textwrap.dedent(
    """
    import json, logging, sys
    import torch
    torch.set_num_threads(1)

    class Lines(logging.Handler):
        lines = []

        def emit(self, record):
            self.lines.append(record.getMessage())

    schedule_log = logging.getLogger("cultureclip.train.config")
    schedule_log.setLevel(logging.INFO)
    schedule_log.addHandler(Lines())
    from cultureclip.train import TrainConfig, train
    from cultureclip.vlm.train import VLMTrainConfig, train_vlm

    name, config_file, result_file = sys.argv[1:]
    text = open(config_file).read()
    if name == "train":
        result = train(TrainConfig.model_validate_json(text))
        lrs = [r["lr"] for r in map(json.loads, open(result.metrics_path))]
    else:
        result = train_vlm(VLMTrainConfig.model_validate_json(text))
        lrs = [e["learning_rate"] for e in result.log if "loss" in e]
    if result.is_main:
        schedule = [line for line in Lines.lines if line.startswith("schedule:")]
        json.dump({"steps": result.steps, "total_steps": result.total_steps, "lrs": lrs,
                   "schedule": schedule}, open(result_file, "w"))
    """
)


@pytest.mark.slow
def test_the_schedule_is_the_same_on_one_and_two_processes(
    trainer: Trainer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Two gloo processes, gradient accumulation 2: the same total steps, warmup and lr curve
    as one process (``pytest -s`` prints them)."""
    settings = dict(batch_size=2, grad_accum_steps=2, epochs=2, schedule={"warmup_steps": 3})
    settings["optim"] = {"lr": 1e-3}
    one = trainer.config(tmp_path / "one", **settings)
    with caplog.at_level("INFO", logger="cultureclip.train.config"):
        one_run = trainer.run(one)
    schedule = [r.getMessage() for r in caplog.records if r.getMessage().startswith("schedule:")]
    two = trainer.config(tmp_path / "two", **settings)
    (tmp_path / "config.json").write_text(two.model_dump_json())
    (tmp_path / "worker.py").write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        str(tmp_path / "worker.py"), trainer.name, str(tmp_path / "config.json"),
        str(tmp_path / "two.json"),
    ]  # fmt: skip
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=400)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    two_run = json.loads((tmp_path / "two.json").read_text())
    lrs = [lr for _, _, lr in one_run.curve]
    print(
        f"\n{trainer.name}, 1 process: {schedule}, lr per step {lrs}"
        f"\n{trainer.name}, 2 processes: {two_run['schedule']}, lr per step {two_run['lrs']}"
    )
    # what each trainer reports of its schedule: "schedule: 4 optimiser steps, warmup 3"
    assert schedule == two_run["schedule"] == ["schedule: 4 optimiser steps, warmup 3"]
    # 8 examples, 2 per micro-step, 2 micro-steps per step: 2 steps per epoch, 4 in all
    assert one_run.total_steps == two_run["total_steps"] == two_run["steps"] == 4
    assert two_run["lrs"] == pytest.approx(lrs) and len(lrs) == 4
    assert lrs[0] < lrs[1] < lrs[2]  # still warming up: 3 steps of warmup in both
