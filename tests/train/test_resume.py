"""Checkpoints: atomic, pruned, and a resumed run is the uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from cultureclip.core.io import read_jsonl
from cultureclip.train import train
from cultureclip.train.checkpoint import (
    CheckpointError,
    list_checkpoints,
    load_checkpoint,
    resolve_checkpoint,
)

LORA = {"image": "lora", "text": "lora", "logit_scale": True, "lora": {"dropout": 0.3}}


def _curve(path: Path) -> list[tuple[int, float, float]]:
    return [(r["step"], r["loss"], r["lr"]) for r in read_jsonl(path)]


def test_resume_reproduces_the_uninterrupted_run(make_config, tmp_path) -> None:
    # 8 twin pairs, batch 4: 2 steps per epoch, 6 steps. Dropout and gradient caching are on,
    # so RNG states and the data position must both be restored for the curves to match.
    common = dict(training=LORA, epochs=3, grad_cache_chunk=3, checkpoint_every=2, keep_last=2)
    straight = train(make_config(out=str(tmp_path / "straight"), **common))
    assert straight.completed and straight.steps == 6

    out = str(tmp_path / "interrupted")
    first = train(make_config(out=out, stop_at_step=3, **common))
    assert not first.completed and first.final_model_dir is None and first.steps == 3
    assert [p.name for p in list_checkpoints(Path(out) / "checkpoints")] == [
        "step_00000002.pt",
        "step_00000003.pt",
    ]
    resumed = train(make_config(out=out, resume="latest", **common))
    assert resumed.completed and resumed.steps == 6

    expected = _curve(straight.metrics_path)
    assert len(expected) == 6 and len({loss for _, loss, _ in expected}) == 6
    assert _curve(resumed.metrics_path) == expected  # exactly, not approximately
    final_straight = load_file(str(straight.final_model_dir / "weights.safetensors"))
    final_resumed = load_file(str(resumed.final_model_dir / "weights.safetensors"))
    assert final_straight.keys() == final_resumed.keys()
    for name, value in final_straight.items():
        assert torch.equal(final_resumed[name], value), name
    # keep_last=2 pruned the older checkpoints; latest names the newest.
    names = [p.name for p in list_checkpoints(Path(out) / "checkpoints")]
    assert names == ["step_00000004.pt", "step_00000006.pt"]
    assert resolve_checkpoint("latest", Path(out) / "checkpoints").name == "step_00000006.pt"


def test_resume_refuses_a_different_run(make_config, tmp_path) -> None:
    out = str(tmp_path / "run")
    train(make_config(out=out, stop_at_step=1, checkpoint_every=1))
    with pytest.raises(CheckpointError, match=r"different settings for \['optim'\]"):
        train(make_config(out=out, resume="latest", optim={"lr": 5e-4}))
    with pytest.raises(CheckpointError, match="no checkpoint"):
        train(make_config(out=str(tmp_path / "empty"), resume="latest"))


def test_resume_refuses_data_changed_in_place_and_an_unrecorded_checkpoint(
    make_config, toy_cultwin: Path, tmp_path
) -> None:
    """Issue 23: a resume continues the same content, not the same names."""
    out = str(tmp_path / "run")
    train(make_config(out=out, stop_at_step=1, checkpoint_every=1))
    records = toy_cultwin if toy_cultwin.is_file() else next(toy_cultwin.glob("*.jsonl"))
    lines = records.read_text().splitlines()
    records.write_text("\n".join(reversed(lines)) + "\n")  # same names, other bytes
    with pytest.raises(CheckpointError, match=r"other content \(data changed"):
        train(make_config(out=out, resume="latest"))
    records.write_text("\n".join(lines) + "\n")
    checkpoint = resolve_checkpoint("latest", Path(out) / "checkpoints")
    state = torch.load(checkpoint, weights_only=True)
    del state["content"]  # as a version that did not record it wrote it
    torch.save(state, checkpoint)
    with pytest.raises(CheckpointError, match="did not record its model's and data's content"):
        train(make_config(out=out, resume="latest"))


def test_resume_refuses_an_image_redrawn_beside_the_data_file(
    make_config, toy_cultwin: Path, tmp_path
) -> None:
    """The data is a CulTwin JSONL; its images lie beside it, and are its content too."""
    assert toy_cultwin.is_file()
    out = str(tmp_path / "run")
    train(make_config(out=out, stop_at_step=1, checkpoint_every=1))
    image = next((toy_cultwin.parent / "images").glob("*.png"))
    Image.new("RGB", Image.open(image).size, (0, 0, 0)).save(image)  # same name, other pixels
    with pytest.raises(CheckpointError, match=r"other content \(data changed"):
        train(make_config(out=out, resume="latest"))


KILLABLE = textwrap.dedent(
    """
    import sys
    import torch
    torch.set_num_threads(1)
    from cultureclip.train import TrainConfig, train
    config = TrainConfig.model_validate_json(open(sys.argv[1]).read())
    train(config)
    """
)


@pytest.mark.slow
def test_killed_run_leaves_a_loadable_checkpoint(make_config, tmp_path) -> None:
    out = tmp_path / "killed"
    config = make_config(
        out=str(out), training=LORA, max_steps=10_000, checkpoint_every=1, keep_last=2
    )
    config_file = tmp_path / "config.json"
    config_file.write_text(config.model_dump_json())
    script = tmp_path / "run.py"
    script.write_text(KILLABLE)
    process = subprocess.Popen(
        [sys.executable, str(script), str(config_file)],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while len(list_checkpoints(out / "checkpoints")) < 2:
            assert process.poll() is None, process.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no checkpoints within 120 s"
            time.sleep(0.05)
        time.sleep(0.37)  # land somewhere inside a later step or checkpoint write
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL

    latest = resolve_checkpoint("latest", out / "checkpoints")
    state = load_checkpoint(latest)
    assert state["step"] >= 2 and state["model"]
    # The metrics log may run ahead of the checkpoint; resuming trims it and continues.
    resumed = train(
        config.model_copy(update={"resume": "latest", "stop_at_step": state["step"] + 2})
    )
    assert resumed.steps == state["step"] + 2
    steps = [r["step"] for r in read_jsonl(resumed.metrics_path)]
    assert steps == list(range(1, state["step"] + 3))


@pytest.mark.slow
@pytest.mark.parametrize(("cache", "tolerance"), [("", 0.0), ("&cache=4096", 1e-5)])
def test_lite_heads_resume_is_exact_without_cache_and_close_with_it(
    tmp_path, cache: str, tolerance: float
) -> None:
    from cultureclip.testing import write_toy_cultwin
    from cultureclip.train import TrainConfig

    # 16 pairs in batches of 8: after the restart the cache is refilled in other batch
    # groupings than the first epoch used, which is what moves the last float bits.
    data = write_toy_cultwin(tmp_path / "data", n_pairs=16)

    def config(out: str, **changes):
        return TrainConfig.model_validate(
            dict(
                model=f"lite:en?image_size=64&dim=32{cache}",
                data={"path": str(data)},
                batch_size=8,
                epochs=4,
                out=str(tmp_path / out),
                log_every=1,
                progress=False,
                optim={"lr": 1e-3},
                schedule={"warmup_steps": 1},
                training={"image": "heads", "text": "heads"},
                checkpoint_every=1,
                **changes,
            )
        )

    straight = train(config("straight"))
    train(config("resumed", stop_at_step=3))
    resumed = train(config("resumed", resume="latest"))
    expected, got = _curve(straight.metrics_path), _curve(resumed.metrics_path)
    assert [s for s, _, _ in got] == [s for s, _, _ in expected] == list(range(1, 9))
    worst = max(abs(a[1] - b[1]) for a, b in zip(expected, got, strict=True))
    print(f"lite heads resume{' with cache' if cache else ''}: largest loss difference {worst:.2g}")
    assert worst <= tolerance, worst
