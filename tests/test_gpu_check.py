"""``benchmarks/gpu_check.py``: skipped without CUDA; its stages run (on the CPU) when asked."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "gpu_check.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(SCRIPT.parents[1] / "src"), *sys.path])
    command = [sys.executable, str(SCRIPT), *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def test_without_cuda_it_says_skipped_and_exits_0() -> None:
    run = _run()
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "no CUDA: skipped"


@pytest.mark.slow
def test_every_stage_runs_and_reports_its_device() -> None:
    run = _run("--allow-cpu", "--items", "8")
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    for stage in ("train", "eval", "index", "miner+judge", "hf-vlm"):
        line = next(line for line in run.stdout.splitlines() if line.startswith(stage + " "))
        assert "device=cpu" in line and "/s" in line
    assert "autocast=bfloat16" in run.stdout  # eval, index, miner and judge ran in bf16
