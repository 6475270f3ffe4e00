"""The training loop end to end on the tiny CLIP: outputs, data kinds, options, errors."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from cultureclip.core.config import ConfigError
from cultureclip.core.errors import UnknownNameError
from cultureclip.core.io import read_jsonl
from cultureclip.data.pairs import PairCollection
from cultureclip.models.registry import create_model
from cultureclip.train import LossError, TrainConfig, train, wise_ft
from cultureclip.train.config import (
    OptimSettings,
    ScheduleSettings,
    list_presets,
    load_train_config,
)
from cultureclip.train.trainer import (
    build_optimizer,
    lr_factor,
    resolve_compile,
    resolve_fused,
    tf32_matmuls,
)


def test_training_writes_config_metrics_final_and_export(make_config, toy_cultwin) -> None:
    config = make_config(export=True, tensorboard=True, grad_cache_chunk=2)
    result = train(config)
    out = result.output_dir
    assert result.completed and result.steps == result.total_steps == 4

    assert load_train_config(out / "config.yaml") == config
    records = read_jsonl(result.metrics_path)
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    for record in records:
        assert {
            "loss",
            "loss_caption",
            "loss_concept",
            "lr",
            "examples_per_s",
            "images_per_s",
            "epoch",
        } <= set(record)
        assert record["examples_per_s"] > 0
        assert record["images_per_s"] == pytest.approx(2 * record["examples_per_s"], rel=1e-3)
    assert records[0]["lr"] == pytest.approx(1e-3)  # warmup of 1 step, then linear decay
    assert records[-1]["lr"] < records[0]["lr"]
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))

    # The saved model reproduces the trained one.
    reloaded = create_model(result.final_model_dir)
    texts = ["concept 1 of FR", "twin 3"]
    torch.testing.assert_close(reloaded.embed_texts(texts), result.model.embed_texts(texts))
    base_embeddings = create_model(config.model).embed_texts(texts)
    assert not torch.allclose(base_embeddings, reloaded.embed_texts(texts))

    # The export is a plain transformers checkpoint with LoRA merged in.
    from transformers import AutoModel

    exported = AutoModel.from_pretrained(result.export_dir)
    assert not any("lora" in name for name, _ in exported.named_parameters())
    via_hf = create_model(f"hf:{result.export_dir}")
    torch.testing.assert_close(
        via_hf.embed_texts(texts), reloaded.embed_texts(texts), rtol=1e-4, atol=1e-5
    )


def test_pairs_train_from_a_collection_and_from_a_path(make_config, toy_cultwin, tmp_path) -> None:
    from PIL import Image

    images = []
    for i, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255), (250, 250, 0)]):
        path = tmp_path / f"img{i}.png"
        Image.new("RGB", (40, 40), colour).save(path)
        images.append(path)
    collection = PairCollection(
        image_ids=[f"i{i}" for i in range(4)],
        images=images,
        text_ids=[f"t{i}" for i in range(5)],
        texts=["red", "green", "blue", "yellow", "a primary colour"],
        text_to_images=[[0], [1], [2], [3], [0, 2]],  # many-to-many: 6 pairs
    )
    result = train(
        make_config(loss="clip", epochs=1, out=str(tmp_path / "c")), collection=collection
    )
    assert result.completed and result.steps == 1  # 6 pairs // batch 4
    assert "loss_clip" in read_jsonl(result.metrics_path)[0]

    # The same CulTwin file read as plain image–caption pairs (load_collection).
    as_pairs = make_config(
        loss="clip", data={"path": str(toy_cultwin), "kind": "pairs"}, max_steps=2
    )
    assert train(as_pairs.model_copy(update={"out": str(tmp_path / "p")})).steps == 2

    with pytest.raises(LossError, match="loss=clip"):
        train(make_config(loss="cultureclip", out=str(tmp_path / "x")), collection=collection)


def test_full_fine_tuning_and_grad_accumulation(make_config) -> None:
    config = make_config(
        training={"image": "full", "text": "heads"}, batch_size=2, grad_accum_steps=2, epochs=1
    )
    result = train(config)
    assert result.steps == 2  # 8 pairs / (2 × 2)
    assert result.model.weights_diverged
    saved = create_model(result.final_model_dir)
    pixels = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(saved.encode_image(pixels), result.model.eval().encode_image(pixels))


def test_wise_ft_interpolates_weights(tiny_clip_dir, make_config, tmp_path) -> None:
    result = train(make_config(training={"image": "lora", "text": "heads"}, wise_ft_alpha=0.5))
    base = create_model(f"hf:{tiny_clip_dir}")
    tuned = create_model(result.output_dir / "finetuned")
    merged = create_model(result.output_dir / "finetuned")
    merged.merge_lora()
    final = create_model(result.final_model_dir)
    assert final.weights_diverged

    base_state, tuned_state, final_state = (
        base.state_dict(),
        merged.state_dict(),
        final.state_dict(),
    )
    changed = [n for n in base_state if not torch.equal(base_state[n], tuned_state[n])]
    assert any("text_projection" in n for n in changed) and any("q_proj" in n for n in changed)
    for name in changed:
        torch.testing.assert_close(final_state[name], 0.5 * (base_state[name] + tuned_state[name]))

    for alpha, expected in ((0.0, base_state), (1.0, tuned_state)):
        state = wise_ft(base, tuned, alpha).state_dict()
        for name in changed:
            torch.testing.assert_close(state[name], expected[name])
    assert any("lora_" in n for n in tuned.state_dict())  # inputs are left untouched
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        wise_ft(base, tuned, 1.5)


def test_configuration_errors_are_explicit(make_config, tmp_path) -> None:
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        train(make_config(precision="bf16", device="cpu"))
    with pytest.raises(ConfigError, match="do not fill one step"):
        train(make_config(batch_size=16))
    with pytest.raises(ValueError, match="nothing would train"):
        make_config(training={"image": "frozen", "text": "frozen"})
    with pytest.raises(ValueError, match="leave it unset"):
        make_config(grad_cache_chunk=4)
    with pytest.raises(FileNotFoundError):
        train(make_config(data={"path": str(tmp_path / "missing")}))


def test_cuda_speed_options_are_accepted_and_resolve_to_off_on_cpu(
    make_config, tiny_model, caplog
) -> None:
    config = make_config(tf32=True, optim={"lr": 1e-3, "fused": "auto"}, max_steps=1)
    assert config.tf32 and not config.compile and config.local_loss
    cpu = torch.device("cpu")
    with caplog.at_level(logging.INFO, logger="cultureclip.train.trainer"):
        assert resolve_fused("auto", cpu) is False
        with tf32_matmuls(True, cpu) as active:
            assert active is False
    assert "fused AdamW kernel is used on CUDA only" in caplog.text
    assert "tf32=true applies to CUDA matmuls only; ignored on cpu" in caplog.text
    assert resolve_compile(False, cpu) is False

    tiny_model.configure_training(image="lora", text="lora")
    assert not build_optimizer(tiny_model, OptimSettings()).param_groups[0]["fused"]
    # forcing the fused kernel is honoured where torch has one (its CPU kernel included)
    assert build_optimizer(tiny_model, OptimSettings(fused=True)).param_groups[0]["fused"]

    before = torch.backends.cuda.matmul.fp32_precision
    assert train(config).completed
    assert torch.backends.cuda.matmul.fp32_precision == before  # a CPU run leaves it alone


def test_tf32_is_set_for_a_cuda_run_and_restored_after() -> None:
    # The flags are process-wide and settable without a GPU: only the device type decides.
    matmul = torch.backends.cuda.matmul
    before = matmul.fp32_precision
    for enabled, expected in ((True, "tf32"), (False, "ieee")):
        with tf32_matmuls(enabled, torch.device("cuda", 0)) as active:
            assert active is enabled
            assert matmul.fp32_precision == expected
        assert matmul.fp32_precision == before


def test_compile_on_cpu_is_refused_with_a_clear_message(make_config) -> None:
    with pytest.raises(ConfigError, match=r"compile=true .* on cpu; use compile=false"):
        train(make_config(compile=True, device="cpu"))


def test_lr_schedule_shapes() -> None:
    linear = ScheduleSettings(kind="linear", warmup_steps=4)
    assert [lr_factor(s, linear, 12) for s in (0, 3, 4, 8, 12)] == [0.25, 1.0, 1.0, 0.5, 0.0]
    cosine = ScheduleSettings(kind="cosine", warmup_steps=0)
    assert lr_factor(5, cosine, 10) == pytest.approx(0.5)
    assert lr_factor(7, ScheduleSettings(kind="constant", warmup_steps=2), 10) == 1.0


def test_presets_load_and_match_the_paper() -> None:
    presets = list_presets()
    assert {"cultureclip-vitb32", "cultureclip-full", "chinese-clip-culti"} <= set(presets)
    reference = load_train_config(preset="cultureclip-vitb32", overrides=["data.path=x"])
    assert reference.model == "hf:openai/clip-vit-base-patch32"
    assert (reference.training.image.value, reference.training.text.value) == ("lora", "lora")
    lora = reference.training.lora
    assert (lora.r, lora.alpha, lora.dropout, lora.target_modules) == (
        4,
        16,
        0.1,
        ["q_proj", "v_proj"],
    )
    assert (reference.optim.lr, reference.optim.weight_decay) == (3e-6, 0.1)
    assert (reference.schedule.kind, reference.schedule.warmup_steps, reference.epochs) == (
        "linear",
        100,
        10,
    )
    assert reference.batch_size == 2048 and reference.grad_cache_chunk == 128
    assert reference.loss == "cultureclip"
    full = load_train_config(preset="cultureclip-full", overrides=["data.path=x"])
    assert (full.training.image.value, full.training.text.value) == ("full", "full")
    culti = load_train_config(preset="chinese-clip-culti", overrides=["data.path=x"])
    assert culti.model == "hf:OFA-Sys/chinese-clip-vit-base-patch16" and culti.loss == "clip"
    assert (culti.optim.lr, culti.optim.weight_decay, culti.epochs, culti.context_length) == (
        5e-5,
        0.001,
        3,
        52,
    )
    with pytest.raises(
        UnknownNameError, match=r"unknown training preset 'nope'; available: .*culti"
    ):
        load_train_config(preset="nope")
    assert isinstance(reference, TrainConfig)


def test_config_file_overrides_preset(tmp_path: Path) -> None:
    file = tmp_path / "mine.yaml"
    file.write_text("data:\n  path: somewhere\noptim:\n  lr: 1.0e-5\n")
    config = load_train_config(file, preset="cultureclip-vitb32", overrides=["epochs=2"])
    assert (config.optim.lr, config.optim.weight_decay, config.epochs) == (1e-5, 0.1, 2)
    assert config.data.path == "somewhere"
