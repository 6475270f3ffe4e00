"""``cultureclip train-vlm`` on tiny real VLMs: labels, LoRA, resuming, and learning.

What both trainers share (exact resume, checkpoint rotation, the schedule at N
processes) is tested once for both in ``tests/train/test_trainers.py``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cultureclip.cli.main import app
from cultureclip.core.config import load_config
from cultureclip.core.errors import InputError, UserError
from cultureclip.eval.items import read_items
from cultureclip.synth.builder import export_instruction_data
from cultureclip.testing import write_flag_mcq, write_general_mcq
from cultureclip.train.config import resolve_precision_name
from cultureclip.vlm.train import VLMTrainConfig, build_trainer, read_chat_export, train_vlm

runner = CliRunner()


def _flag_export(directory: Path, views: int, seed: int = 0) -> Path:
    items = write_flag_mcq(directory, views=views, seed=seed)
    return export_instruction_data(read_items(items), directory / "instruct.jsonl")


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _flag_export(tmp_path_factory.mktemp("flags"), views=2)


def test_loss_covers_only_the_answer_turn(any_vlm: Path, export: Path, tmp_path: Path) -> None:
    from transformers import AutoConfig

    trainer = build_trainer(
        load_config(VLMTrainConfig, model=str(any_vlm), data=str(export), out=str(tmp_path))
    )
    processor = trainer.processing_class
    image_id = AutoConfig.from_pretrained(any_vlm).image_token_id
    dataset = trainer.train_dataset
    batch = trainer.data_collator([dataset[0], dataset[5]])
    for row, index in enumerate((0, 5)):
        labels = batch["labels"][row]
        kept = labels[labels != -100]
        text = processor.tokenizer.decode(kept)
        assert text == dataset[index]["completion"][0]["content"] + "<|im_end|>\n"
        assert not (labels == image_id).any()
        # every labelled token is the input token at that place (no shift here)
        where = labels != -100
        assert (batch["input_ids"][row][where] == labels[where]).all()
        assert (batch["attention_mask"][row][where] == 1).all()
    assert "pixel_values" in batch and (batch["input_ids"] == image_id).any()


def test_chat_export_errors_are_user_errors(tmp_path: Path) -> None:
    bad = tmp_path / "instruct.jsonl"
    bad.write_text('{"id": 1, "image": "a.png", "conversations": [{"from": "gpt"}]}\n')
    with pytest.raises(InputError, match=r"instruct\.jsonl:1"):
        read_chat_export(tmp_path)
    with pytest.raises(UserError, match="chat export not found"):
        read_chat_export(tmp_path / "nothing.jsonl")
    # the keys train-vlm had before it shared train's: one line naming the key to use
    for old, new in [("lr", "optim.lr"), ("save_steps", "checkpoint_every"), ("output_dir", "out")]:
        with pytest.raises(
            InputError, match=rf"^invalid VLMTrainConfig: .*{old} was renamed: use {new}$"
        ):
            load_config(VLMTrainConfig, None, [f"{old}=1"], model="x", data="y")
    with pytest.raises(InputError, match="precision"):
        cfg = load_config(VLMTrainConfig, model="x", data="y", precision="bf16", device="cpu")
        resolve_precision_name(cfg.precision, on_cuda=False)


def _is_text_model(weight: str) -> bool:
    """Whether a weight belongs to the text model (the families name it differently)."""
    return any(name in weight for name in ("language_model", "text_model"))


def _is_vision_tower(weight: str) -> bool:
    return any(name in weight for name in ("vision_tower", "visual", "vision_model"))


def test_lora_trains_merges_and_loads_with_hf_vlm(
    any_vlm: Path, export: Path, tmp_path: Path
) -> None:
    tiny_vlm = any_vlm
    from safetensors.torch import load_file

    from cultureclip.models.generative import create_generative_model

    out = tmp_path / "lora"
    cfg = load_config(
        VLMTrainConfig,
        model=str(tiny_vlm), data=str(export), out=str(out), method="lora",
        max_steps=3, batch_size=4, optim={"lr": 5e-2}, checkpoint_every=100, log_every=1,
        gradient_checkpointing=True,
        lora={"r": 4, "alpha": 8, "dropout": 0.0},
    )  # fmt: skip
    result = train_vlm(cfg)
    assert result.steps == 3 and result.model_dir == out / "model"
    assert (out / "adapter" / "adapter_model.safetensors").exists()
    assert (out / "config.yaml").exists()
    adapter = load_file(out / "adapter" / "adapter_model.safetensors")
    assert adapter and all(_is_text_model(k) for k in adapter)
    before, after = (
        load_file(tiny_vlm / "model.safetensors"),
        load_file(out / "model" / "model.safetensors"),
    )
    changed = {k for k in before if not (before[k] == after[k]).all()}
    assert any("q_proj" in k for k in changed)
    assert not any(_is_vision_tower(k) for k in changed)
    model = create_generative_model(f"hf-vlm:{out / 'model'}", mode="likelihood")
    assert model.model.config.model_type == any_vlm.name


def test_full_fine_tuning_keeps_the_vision_tower_unless_asked(
    any_vlm: Path, export: Path, tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    before = load_file(any_vlm / "model.safetensors")
    for vision in (False, True):
        out = tmp_path / f"vision-{vision}"
        cfg = load_config(
            VLMTrainConfig,
            model=str(any_vlm), data=str(export), out=str(out), method="full",
            train_vision_tower=vision, max_steps=2, batch_size=4, optim={"lr": 1e-2},
        )  # fmt: skip
        assert train_vlm(cfg).steps == 2
        after = load_file(out / "model" / "model.safetensors")
        changed = {k for k in before if not (before[k] == after[k]).all()}
        tower = {k for k in changed if _is_vision_tower(k)}
        assert any("layers" in k for k in changed - tower)  # the text model trained
        assert bool(tower) is vision, sorted(tower)[:3]


def test_resume_continues_from_the_latest_checkpoint_without_unpickling(
    tiny_vlm: Path, export: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    out = tmp_path / "full"
    base = dict(
        model=str(tiny_vlm), data=str(export), out=str(out), method="full",
        batch_size=2, optim={"lr": 1e-3}, checkpoint_every=2, log_every=1, keep_last=3,
    )  # fmt: skip
    first = train_vlm(load_config(VLMTrainConfig, **base, max_steps=4))
    assert first.steps == 4
    assert {p.name for p in (out / "checkpoints").iterdir()} >= {"checkpoint-2", "checkpoint-4"}
    assert (out / "checkpoints" / "checkpoint-4" / "model.safetensors").exists()

    real_load = torch.load
    loads = []

    def safe_only(*args, **kwargs):
        assert kwargs.get("weights_only") is True, "a checkpoint was unpickled"
        loads.append(args[0])
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", safe_only)
    second = train_vlm(load_config(VLMTrainConfig, **base, max_steps=6, resume="latest"))
    assert second.steps == 6
    assert loads  # optimizer / scheduler / rng state were read back
    logged_steps = [e["step"] for e in second.log if "loss" in e]
    assert logged_steps == [1, 2, 3, 4, 5, 6]  # steps 1-4 come from the checkpoint, not rerun

    with pytest.raises(UserError, match="trainer_state"):
        train_vlm(load_config(VLMTrainConfig, **base, max_steps=6, resume=str(tmp_path)))


def _accuracy(out: Path, name: str) -> dict:
    return json.loads((out / "cultureverse" / name / "result.json").read_text())


@pytest.mark.slow
def test_train_vlm_learns_flags_measured_by_cultureclip_eval(
    tiny_vlm: Path, tmp_path: Path
) -> None:
    """Chance (25%) → ≥ 50% on flag renderings never trained on; fails if learning breaks.

    Options are in a fixed order, so the test measures that the image reaches the answer
    through the whole chat/vision path (processor, labels, Trainer, saving, hf-vlm).
    """
    train = _flag_export(tmp_path / "train", views=16, seed=0)  # 64 items
    held_out = write_flag_mcq(tmp_path / "test", views=8, seed=1)  # 32 new renderings
    trained = runner.invoke(
        app,
        [
            "train-vlm", "-m", str(tiny_vlm), "--data", str(train), "-o", str(tmp_path / "run"),
            "--set", "method=full", "--set", "train_vision_tower=true", "--set", "optim.lr=3e-3",
            "--set", "epochs=20", "--set", "batch_size=8", "--set", "checkpoint_every=100000",
            # the warmup the former default (3% of the run) gave these 160 steps
            "--set", "schedule.warmup_steps=5",
            # train-vlm's former default seed: this toy's outcome follows float rounding
            # (at seed 42 on one thread the former loop, too, stays below the mark: 41%)
            "--set", "seed=0",
        ],
    )  # fmt: skip
    assert trained.exit_code == 0, trained.output
    evals = tmp_path / "evals"
    for mode in ("generate", "likelihood"):
        result = runner.invoke(
            app,
            [
                "eval", "-m", f"hf-vlm:{tmp_path / 'run' / 'model'}", "-b", "cultureverse",
                "-d", str(held_out), "-o", str(evals), "--model-name", f"tuned-{mode}",
                "--baseline", f"hf-vlm:{tiny_vlm}", "--baseline-name", f"base-{mode}",
                "--set", f"generative.mode={mode}",
            ],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        tuned = _accuracy(evals, f"tuned-{mode}")
        base = _accuracy(evals, f"base-{mode}")
        print(
            f"{mode}: base {base['metrics']['accuracy']:.2f} → tuned {tuned['metrics']['accuracy']:.2f}"
        )
        assert base["metrics"]["accuracy"] <= 40.0
        assert tuned["metrics"]["accuracy"] >= 50.0
        assert tuned["baseline"]["delta"]["accuracy"] >= 20.0

    # forgetting check: the same before/after delta on a general (culture-neutral) MCQ set
    general = write_general_mcq(tmp_path / "general", views=2)
    result = runner.invoke(
        app,
        [
            "eval", "-m", f"hf-vlm:{tmp_path / 'run' / 'model'}", "-b", "cultureverse",
            "-d", str(general), "--set", "label=general", "-o", str(evals), "--model-name", "tuned",
            "--baseline", f"hf-vlm:{tiny_vlm}", "--baseline-name", "base",
            "--set", "generative.mode=likelihood",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    saved = json.loads((evals / "general" / "tuned" / "result.json").read_text())
    assert saved["n"] == 16 and saved["baseline"]["model"] == "base"
    delta = saved["baseline"]["delta"]["accuracy"]
    assert delta == saved["metrics"]["accuracy"] - saved["baseline"]["metrics"]["accuracy"]
    print(f"general (forgetting check): delta {delta:+.2f}")


def test_a_partial_section_keeps_the_defaults_of_train_vlm() -> None:
    """``optim.lr=...`` must not bring back the contrastive trainer's weight decay, betas,
    eps and no clipping, nor a linear schedule (it halved the learning test's accuracy)."""
    base = VLMTrainConfig(model="m", data="d")
    cfg = load_config(
        VLMTrainConfig, model="m", data="d",
        overrides=["optim.lr=3e-3", "schedule.warmup_steps=5", "lora.r=4"],
    )  # fmt: skip
    assert cfg.optim == base.optim.model_copy(update={"lr": 3e-3})
    assert cfg.schedule == base.schedule.model_copy(update={"warmup_steps": 5})
    assert cfg.lora == base.lora.model_copy(update={"r": 4})
    assert (cfg.optim.weight_decay, cfg.optim.max_grad_norm, cfg.schedule.kind) == (0, 1, "cosine")


@pytest.mark.parametrize(
    "path",
    sorted(
        [
            *(Path(__file__).parents[2] / "src/cultureclip/presets/train-vlm").glob("*.yaml"),
            *(Path(__file__).parents[2] / "src/cultureclip/presets/eval").glob("vlm-*.yaml"),
        ]
    ),
    ids=lambda p: p.name,
)
def test_shipped_vlm_configs_validate(path: Path) -> None:
    from cultureclip.core.config import load_config, read_config_file
    from cultureclip.eval.api import EvalConfig

    values = read_config_file(path)
    if "benchmark" in values:
        cfg = load_config(EvalConfig, path)
        assert cfg.model.startswith("hf-vlm:") and cfg.generative.mode == "likelihood"
    else:
        cfg = load_config(VLMTrainConfig, path)
        assert cfg.method == "lora" and cfg.gradient_checkpointing


def test_cli_reports_a_missing_export_as_a_user_error(tiny_vlm: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["train-vlm", "-m", str(tiny_vlm), "--data", str(tmp_path / "none.jsonl")]
    )
    assert result.exit_code == 2 and "chat export not found" in result.output
    result = runner.invoke(app, ["train-vlm", "--data", "x", "--set", "method=qlora"])
    assert result.exit_code == 2 and "method" in result.output
