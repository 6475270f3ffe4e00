"""Two gloo processes under torchrun train exactly like one process on the same global batch.

Both distributed losses are checked (the local loss, each process's rows against the
gathered batch, and the whole-batch loss on every process), with and without
gradient caching, gradients averaged by DDP.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from cultureclip.core.io import read_jsonl

WORKER = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    from cultureclip.data.cultwin import read_cultwin
    from cultureclip.data.twin_dataset import TwinCollator, TwinDataset
    from cultureclip.models.registry import create_model
    from cultureclip.testing import perturb_lora_b
    from cultureclip.train import distributed, train
    from cultureclip.train.data import encoder_inputs
    from cultureclip.train.gradcache import FeatureEncoder, contrastive_backward
    from cultureclip.train.losses import create_loss
    from cultureclip.train.config import TrainConfig

    model_dir, data, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    VARIANTS = [("local_cached", True, 3), ("local", True, None), ("global_cached", False, 3)]
    info = distributed.init_distributed("cpu")
    assert info.world_size == 2, info

    # 1. One step's loss and gradients, this rank holding half of the global batch.
    model = create_model(f"hf:{model_dir}")
    torch.manual_seed(0)
    model.configure_training(image="lora", text="lora", logit_scale=True, lora={"dropout": 0.0})
    perturb_lora_b(model, seed=1)
    model.train()
    dataset = TwinDataset(read_cultwin(data), model.preprocess, seed=0)
    batch = TwinCollator(model.tokenize)([dataset[i] for i in range(len(dataset))])
    loss = create_loss("cultureclip")
    half = len(batch) // 2
    inputs = encoder_inputs(batch).select(loss.required_features("twin"))
    local = inputs.slice(info.rank * half, (info.rank + 1) * half)
    ddp = distributed.wrap_ddp(FeatureEncoder(model), model.device)
    for name, local_loss, chunk in VARIANTS:
        model.zero_grad(set_to_none=True)
        result = contrastive_backward(
            model, loss, local, chunk_size=chunk, dist=info, local_loss=local_loss,
            encoder=ddp, no_sync=ddp.no_sync,
        )
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        torch.save(
            {
                "loss": float(distributed.all_reduce_mean(result.loss, info)),
                "rank_loss": float(result.loss),
                "grads": grads,
            },
            out / f"step_{name}_rank{info.rank}.pt",
        )

    # 2. Whole training runs (the trainer reuses the group initialised above).
    for config_file in sorted(out.glob("config_*.json")):
        train(TrainConfig.model_validate_json(config_file.read_text()))
    dist.destroy_process_group()
    """
)


def _single_process_step(
    tiny_clip_dir: Path, toy_cultwin: Path
) -> tuple[float, dict[str, torch.Tensor]]:
    from cultureclip.data.cultwin import read_cultwin
    from cultureclip.data.twin_dataset import TwinCollator, TwinDataset
    from cultureclip.models.registry import create_model
    from cultureclip.testing import perturb_lora_b
    from cultureclip.train.data import encoder_inputs
    from cultureclip.train.gradcache import contrastive_backward
    from cultureclip.train.losses import create_loss

    model = create_model(f"hf:{tiny_clip_dir}")
    torch.manual_seed(0)
    model.configure_training(image="lora", text="lora", logit_scale=True, lora={"dropout": 0.0})
    perturb_lora_b(model, seed=1)
    model.train()
    dataset = TwinDataset(read_cultwin(toy_cultwin), model.preprocess, seed=0)
    batch = TwinCollator(model.tokenize)([dataset[i] for i in range(len(dataset))])
    loss = create_loss("cultureclip")
    result = contrastive_backward(
        model, loss, encoder_inputs(batch).select(loss.required_features("twin"))
    )
    return float(result.loss), {
        n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None
    }


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(
    tiny_clip_dir, toy_cultwin, tmp_path, make_config
) -> None:
    from safetensors.torch import load_file

    from cultureclip.train import train

    lora = {"image": "lora", "text": "lora", "logit_scale": True, "lora": {"dropout": 0.0}}
    runs = {
        # local loss, gradient caching (two chunks per process: one under no_sync)
        "local": dict(grad_cache_chunk=1, checkpoint_every=3),
        # the whole-batch loss on every process, plain accumulation over two micro-batches
        "global": dict(local_loss=False, grad_accum_steps=2, batch_size=2),
    }
    for name, overrides in runs.items():
        config = make_config(training=lora, out=str(tmp_path / name), **overrides)
        (tmp_path / f"config_{name}.json").write_text(config.model_dump_json())
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        str(script), str(tiny_clip_dir), str(toy_cultwin), str(tmp_path),
    ]  # fmt: skip
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=400)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    # Step level: every rank holds the single-process loss and gradients.
    loss, grads = _single_process_step(tiny_clip_dir, toy_cultwin)
    assert any("lora_A" in n for n in grads) and any("logit_scale" in n for n in grads)
    for variant in ("local_cached", "local", "global_cached"):
        rank_losses = []
        for rank in (0, 1):
            got = torch.load(tmp_path / f"step_{variant}_rank{rank}.pt")
            rank_losses.append(got["rank_loss"])
            assert got["loss"] == pytest.approx(loss, rel=1e-5), variant
            assert set(got["grads"]) == set(grads)
            for name, grad in grads.items():
                torch.testing.assert_close(
                    got["grads"][name], grad, rtol=1e-4, atol=1e-6, msg=f"{variant}: {name}"
                )
        if variant.startswith("local"):
            # each process's share is its own rows' loss, not the batch's
            assert rank_losses[0] != pytest.approx(rank_losses[1], rel=1e-6)

    # Run level: same loss curve and same final weights as one process with the same global batch.
    for name, overrides in runs.items():
        single_overrides = {k: v for k, v in overrides.items() if k != "grad_cache_chunk"}
        single = train(
            make_config(training=lora, out=str(tmp_path / f"one_{name}"), **single_overrides)
        )
        curve_one = [r["loss"] for r in read_jsonl(single.metrics_path)]
        curve_two = [r["loss"] for r in read_jsonl(tmp_path / name / "metrics.jsonl")]
        assert len(curve_one) == len(curve_two) == 4, name
        assert curve_two == pytest.approx(curve_one, rel=1e-4), name
        assert len(set(curve_one)) > 1  # the weights moved
        weights_one = load_file(str(single.final_model_dir / "weights.safetensors"))
        weights_two = load_file(str(tmp_path / name / "final" / "weights.safetensors"))
        for key, value in weights_one.items():
            torch.testing.assert_close(
                weights_two[key], value, rtol=1e-4, atol=1e-5, msg=f"{name}: {key}"
            )
