"""``hf-vlm:`` scoring on a tiny real LLaVA (CLIP vision + Llama text) built offline."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from cultureclip.cli.main import app
from cultureclip.core.errors import InputError, UserError
from cultureclip.models.generative import (
    HFVisionChatModel,
    MCQPrompt,
    create_generative_model,
)
from cultureclip.testing import write_flag_mcq

runner = CliRunner()


@pytest.fixture(scope="module")
def flags(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_flag_mcq(tmp_path_factory.mktemp("flags"), views=2, shuffle_options=True)


def _prompts(n: int = 3) -> list[MCQPrompt]:
    colours = [(200, 30, 40), (20, 60, 160), (30, 140, 60), (250, 210, 40)]
    return [
        MCQPrompt(
            Image.new("RGB", (40, 40), colours[i % 4]),
            "Which country is this flag from?" + " Look closely." * i,
            ["Japan", "France", "Brazil", "Germany"][: 2 + i % 3],
        )
        for i in range(n)
    ]


def test_tiny_vlm_is_a_real_llava_loaded_the_users_way(tiny_vlm: Path) -> None:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_vlm)
    model = AutoModelForImageTextToText.from_pretrained(tiny_vlm)
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    assert type(processor).__name__ == "LlavaProcessor"
    assert (tiny_vlm / "model.safetensors").exists()
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi"}]}],
        add_generation_prompt=True,
        tokenize=False,
    )
    batch = processor(text=[text], images=[[Image.new("RGB", (50, 40))]], return_tensors="pt")
    # 32x32 image, 8x8 patches: 16 image tokens (CLS dropped by the "default" strategy)
    assert int((batch["input_ids"] == model.config.image_token_id).sum()) == 16
    assert text.endswith("<|im_start|>assistant\n")


def test_generation_is_batched_with_left_padding(any_vlm: Path) -> None:
    model = create_generative_model(f"hf-vlm:{any_vlm}", batch_size=8, max_new_tokens=3)
    assert isinstance(model, HFVisionChatModel)
    calls = []
    original = model.model.generate

    def spy(**inputs):
        calls.append(inputs["input_ids"].shape)
        assert (inputs["attention_mask"][:, -1] == 1).all()  # padded on the left
        return original(**inputs)

    model.model.generate = spy
    outcomes = model.generate(_prompts(5))
    assert len(outcomes) == 5 and all(o.reply is not None for o in outcomes)
    assert len(calls) == 1 and calls[0][0] == 5  # one call for the whole batch


@pytest.mark.parametrize("target", ["letter", "text"])
def test_likelihood_scores_do_not_depend_on_batching(any_vlm: Path, target: str) -> None:
    spec = f"hf-vlm:{any_vlm}"
    batched = create_generative_model(spec, mode="likelihood", likelihood_target=target)
    single = create_generative_model(
        spec, mode="likelihood", likelihood_target=target, batch_size=1
    )
    prompts = _prompts(4)
    together, alone = batched.generate(prompts), single.generate(prompts)
    for a, b, prompt in zip(together, alone, prompts, strict=True):
        assert a.scores is not None and len(a.scores) == len(prompt.options)
        assert a.scores == pytest.approx(b.scores, abs=1e-3)
        best = max(range(len(a.scores)), key=lambda k: a.scores[k])
        assert a.reply == "ABCD"[best]


def test_letter_likelihood_is_the_next_token_log_prob(tiny_vlm: Path) -> None:
    import torch

    model = create_generative_model(f"hf-vlm:{tiny_vlm}", mode="likelihood")
    prompt = _prompts(1)[0]
    (outcome,) = model.generate([prompt])
    from cultureclip.models.chat import render, user_turn

    text = render(model.processor, [user_turn(prompt.text())], generation_prompt=True)
    inputs = model.processor(text=[text], images=[[prompt.image]], return_tensors="pt")
    with torch.no_grad():
        log_probs = torch.log_softmax(model.model(**inputs).logits[0, -1], -1)
    tokenizer = model.tokenizer
    ids = sorted(
        {
            t
            for variant in ("A", " A")
            for t in tokenizer.encode(variant, add_special_tokens=False)
            if tokenizer.decode([t]).strip() == "A"
        }
    )
    assert ids  # the byte-level BPE has a piece for the letter
    expected = torch.logsumexp(log_probs[ids], 0)
    assert outcome.scores is not None and outcome.scores[0] == pytest.approx(
        float(expected), abs=1e-3
    )


def test_bad_options_are_user_errors(tiny_vlm: Path) -> None:
    with pytest.raises(InputError, match=r"generative\.mode"):
        create_generative_model(f"hf-vlm:{tiny_vlm}", mode="vibes")
    with pytest.raises(InputError, match="likelihood_target"):
        create_generative_model(f"hf-vlm:{tiny_vlm}", likelihood_target="logits")
    with pytest.raises(UserError, match=r"config\.json"):
        create_generative_model(f"hf-vlm:{tiny_vlm.parent / 'missing'}")


def _eval_args(vlm: Path, items: Path, out: Path, name: str, *extra: str) -> list[str]:
    return [
        "eval", "-m", f"hf-vlm:{vlm}", "-b", "cultureverse", "-d", str(items),
        "-o", str(out), "--model-name", name, *extra,
    ]  # fmt: skip


@pytest.mark.slow
def test_cli_eval_in_both_modes(tiny_vlm: Path, flags: Path, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    for name, extra in [
        ("gen", ["--set", "generative.max_new_tokens=4"]),
        ("lik", ["--set", "generative.mode=likelihood"]),
        ("lik-text", ["--set", "generative.mode=likelihood", "--set", "generative.likelihood_target=text"]),
    ]:  # fmt: skip
        result = runner.invoke(app, _eval_args(tiny_vlm, flags, out, name, *extra))
        assert result.exit_code == 0, result.output
        saved = json.loads((out / "cultureverse" / name / "result.json").read_text())
        assert saved["n"] == 8 and saved["counts"]["failed"] == 0
        rows = [
            json.loads(line) for line in (out / "cultureverse" / name / "predictions.jsonl").open()
        ]
        assert len(rows) == 8 and all("reply" in r for r in rows)
        if name.startswith("lik"):
            # likelihood always picks an option: nothing to parse, nothing unreadable
            assert saved["counts"]["refused"] == 0
            assert all(0 <= r["prediction"] < 4 for r in rows)
        assert saved["per_group"]  # grouped like the API path
    bad = runner.invoke(app, _eval_args(tiny_vlm, flags, out, "bad", "--set", "generative.mode=x"))
    assert bad.exit_code == 2 and "generative.mode" in bad.output


@pytest.mark.slow
def test_kill_then_rerun_resumes(tiny_vlm: Path, tmp_path: Path) -> None:
    """SIGKILL a real ``cultureclip eval`` mid-run; the rerun asks only what was not answered."""
    items = write_flag_mcq(tmp_path / "many", views=16, shuffle_options=True)  # 64 items
    out = tmp_path / "runs"
    partial = out / "cultureverse" / "tiny" / "predictions.partial.jsonl"
    args = _eval_args(
        tiny_vlm, items, out, "tiny",
        "--set", "options.chunk_size=1", "--set", "generative.batch_size=1",
        "--set", "generative.max_new_tokens=24",
    )  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    process = subprocess.Popen(
        [sys.executable, "-m", "cultureclip", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            if partial.exists() and len(partial.read_text().splitlines()) >= 3:
                break
            time.sleep(0.02)
        assert process.poll() is None, "the run ended before it could be killed"
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()
    assert not (partial.parent / "result.json").exists()
    kept = {
        json.loads(line)["id"]: json.loads(line)
        for line in partial.read_text().splitlines()
        if line.strip()
    }
    assert 3 <= len(kept) < 64

    asked: list[int] = []
    original = HFVisionChatModel.generate

    def counting(self, prompts):
        asked.append(len(prompts))
        return original(self, prompts)

    HFVisionChatModel.generate = counting  # type: ignore[method-assign]
    try:
        result = runner.invoke(app, args)
    finally:
        HFVisionChatModel.generate = original  # type: ignore[method-assign]
    assert result.exit_code == 0, result.output
    assert sum(asked) == 64 - len(kept)
    rows = {
        json.loads(line)["id"]: json.loads(line)
        for line in (partial.parent / "predictions.jsonl").open()
    }
    assert len(rows) == 64
    assert all(rows[i] == kept[i] for i in kept)  # answers from before the kill are kept
    assert not partial.exists()


def test_options_a_backend_does_not_take_are_user_errors(tiny_vlm: Path) -> None:
    with pytest.raises(InputError, match=r"no option generative\.concurrency"):
        create_generative_model(f"hf-vlm:{tiny_vlm}", concurrency=4)
    with pytest.raises(InputError, match="hf-vlm"):
        create_generative_model("openai:m@http://127.0.0.1:9/v1", mode="likelihood")
    with pytest.raises(InputError, match=r"no option generative\.colour"):
        create_generative_model("openai:m@http://127.0.0.1:9/v1", colour="red")


def test_unloadable_models_are_user_errors(tmp_path: Path) -> None:
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    with pytest.raises(UserError, match="LoRA adapters"):
        create_generative_model(f"hf-vlm:{adapter}")
    with pytest.raises(UserError, match="cannot load the VLM"):  # offline: not in the cache
        create_generative_model("hf-vlm:nobody/no-such-vlm-anywhere")


@pytest.mark.slow
def test_two_processes_answer_as_one(tiny_vlm: Path, flags: Path, tmp_path: Path) -> None:
    """``torchrun --nproc_per_node 2 -m cultureclip eval``: two gloo processes share the
    batches and write one result: the same predictions and metrics as one process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parents[2] / "src"), *sys.path])
    launch = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
    ]
    for mode in ("generate", "likelihood"):
        # 8 items, 2 per batch: each process answers 2 of the 4 batches
        extra = ["--set", f"generative.mode={mode}", "--set", "generative.batch_size=2",
                 "--set", "device=cpu"]  # fmt: skip
        one = runner.invoke(app, _eval_args(tiny_vlm, flags, tmp_path / "one", mode, *extra))
        assert one.exit_code == 0, one.output
        command = [*launch, "-m", "cultureclip", *_eval_args(tiny_vlm, flags, tmp_path / "two", mode, *extra)]  # fmt: skip
        two = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
        for rank in (1, 2):  # each process answered its half, not everything
            assert f"process {rank} of 2 answered 2 of 4 batches" in two.stdout + two.stderr
        results = []
        for run in ("one", "two"):
            folder = tmp_path / run / "cultureverse" / mode
            saved = json.loads((folder / "result.json").read_text())
            rows = [json.loads(line) for line in (folder / "predictions.jsonl").open()]
            results.append((saved["metrics"], saved["counts"], saved["per_group"], rows))
        assert results[0] == results[1]
        assert len(results[0][3]) == 8 and results[0][1]["failed"] == 0
