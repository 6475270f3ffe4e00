"""Every stage's command refuses a device the machine lacks in one line, before any work."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cultureclip.cli.main import app

MISSING = "no-such-input"

#: each stage command, with inputs that do not exist: the device must fail first
COMMANDS = {
    "synth": ["synth", "--set", f"concepts.corpus={MISSING}", "--set", "device=cuda"],
    "synth (images only)": ["synth", "--set", "images.device=cuda:1"],
    "train": ["train", "--data", MISSING, "--set", "model=lite:en", "--set", "device=cuda"],
    "train-vlm": ["train-vlm", "--set", f"data={MISSING}", "--set", f"model={MISSING}",
                  "--set", "device=cuda"],
    "eval": ["eval", "-m", "lite:en", "-b", "twins", "-d", MISSING, "--set", "device=cuda"],
    "eval (hf-vlm)": ["eval", "-m", f"hf-vlm:{MISSING}", "-b", "twins", "-d", MISSING,
                      "--set", "device=cuda"],
    "eval (suite)": ["eval", "--suite", "general", "-m", "lite:en", "-o", "{tmp}/e", "--device", "cuda"],
    "eval (--precision)": ["eval", "-m", "lite:en", "-b", "twins", "-d", MISSING,
                           "--device", "cuda", "--precision", "bf16"],
    "index": ["index", "-m", "lite:en", "-d", MISSING, "-o", "{tmp}/index", "--device", "cuda"],
    "search": ["search", "-i", MISSING, "-t", "a kimono", "--device", "cuda"],
    "serve": ["serve", "-i", MISSING, "--device", "cuda"],
    "retrieval-eval": ["retrieval-eval", "-m", "lite:en", "-d", MISSING, "--device", "cuda"],
    "quickstart": ["quickstart", "--out", "{tmp}/qs", "--device", "cuda"],
}  # fmt: skip


@pytest.mark.parametrize("name", list(COMMANDS))
def test_a_device_the_machine_lacks_is_one_line_before_any_work(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.chdir(tmp_path)
    args = [arg.replace("{tmp}", str(tmp_path)) for arg in COMMANDS[name]]
    result = CliRunner().invoke(app, args, terminal_width=200)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "CUDA is not available" in lines[0], result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "work began before the check"
