"""The ``transformers`` LLM backend of synth on a tiny real Llama chat model, offline."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from cultureclip.core.errors import InputError
from cultureclip.core.io import read_jsonl
from cultureclip.core.llm import LLMError, ask, create_llm, load_prompt
from cultureclip.core.llm.backends.transformers import TransformersLLM, gguf_location
from cultureclip.data.cultwin import read_cultwin
from cultureclip.synth.config import LLMSettings, SynthConfig
from cultureclip.synth.pipeline import run_synth
from cultureclip.synth.schemas import CaptionsAnswer, JudgeAnswer
from cultureclip.testing import build_tiny_chat_lm
from tests.helpers import teach_fixed_answer

CAPTIONS = {"captions": ["a photo of it with wide sleeves", "a close photo of it in the light"]}
VARIABLES = {
    "concept": "Kimono",
    "country_name": "Japan",
    "category": "Clothing",
    "context": "a robe",
    "features": "wide sleeves",
    "n": 2,
    "max_words": 15,
}


@pytest.fixture(scope="module")
def random_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_chat_lm(tmp_path_factory.mktemp("lm") / "random")


@pytest.fixture(scope="module")
def taught_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model after a few seconds of learning to answer the captions prompt."""
    path = build_tiny_chat_lm(tmp_path_factory.mktemp("lm") / "taught")
    prompt = load_prompt("captions")
    conversations = [
        prompt.messages({**VARIABLES, "concept": name, "country_name": country})
        for name, country in [("Kimono", "Japan"), ("Sari", "India"), ("Hanbok", "Korea")]
    ]
    return teach_fixed_answer(path, conversations, json.dumps(CAPTIONS), steps=60)


def _settings(model: Path, **kw: Any) -> LLMSettings:
    return LLMSettings(
        **{"backend": "transformers", "model": str(model), "temperature": 0, "max_tokens": 64, **kw}
    )


def test_loads_the_users_way_and_answers_through_the_chat_template(random_lm: Path) -> None:
    async def run() -> tuple[str, str]:
        async with create_llm(_settings(random_lm)) as llm:
            assert isinstance(llm, TransformersLLM)
            messages = [
                {"role": "system", "content": "Answer with JSON only."},
                {"role": "user", "content": [{"type": "text", "text": "Which country?"}]},
            ]
            return await llm.complete(messages), await llm.complete(messages)

    first, second = asyncio.run(run())
    assert isinstance(first, str) and first == second  # greedy: deterministic


def test_an_unusable_answer_is_a_recorded_failure(random_lm: Path) -> None:
    async def run() -> Any:
        async with create_llm(_settings(random_lm, max_attempts=2)) as llm:
            return await ask(llm, load_prompt("captions"), VARIABLES, CaptionsAnswer)

    outcome = asyncio.run(run())
    assert not outcome.ok and outcome.value is None
    assert "invalid answer after 2 attempt(s)" in outcome.error
    assert len(outcome.raw) == 2  # every raw answer is kept for the failure report


def test_a_missing_model_is_an_llm_error(tmp_path: Path) -> None:
    with pytest.raises(LLMError, match="cannot load"):
        create_llm(_settings(tmp_path / "nothing"))


def test_a_valid_answer_is_validated_like_any_backend(taught_lm: Path) -> None:
    async def run() -> Any:
        async with create_llm(_settings(taught_lm)) as llm:
            variables = {**VARIABLES, "concept": "Qipao", "country_name": "China"}
            return await ask(llm, load_prompt("captions"), variables, CaptionsAnswer)

    outcome = asyncio.run(run())
    assert outcome.ok, outcome.error
    assert outcome.value.captions == CAPTIONS["captions"]


@pytest.mark.slow
def test_synth_with_the_transformers_backend_end_to_end(
    taught_lm: Path, random_lm: Path, tiny_clip_dir: Path, tmp_path: Path
) -> None:
    """Corpus concepts → mined twins → captions from the local chat model → records."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    rows = [
        ("Kimono", "JP", (200, 40, 100)),
        ("Hanbok", "KR", (220, 60, 120)),
        ("Sari", "IN", (240, 120, 30)),
        ("Qipao", "CN", (200, 30, 40)),
    ]
    lines = []
    for index, (name, country, colour) in enumerate(rows):
        Image.new("RGB", (32, 32), colour).save(corpus / f"{index}.png")
        lines.append(
            {
                "concept": name,
                "country": country,
                "category": "Clothing",
                "context": "traditional dress",
                "features": "wide sleeves",
                "image": f"{index}.png",
            }
        )
    (corpus / "corpus.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))

    def config(model: Path, out: Path) -> SynthConfig:
        return SynthConfig.model_validate(
            {
                "out": str(out),
                "progress": False,
                "llm": {"backend": "transformers", "model": str(model), "temperature": 0,
                        "max_tokens": 64, "max_attempts": 2},
                "concepts": {"source": "corpus", "corpus": str(corpus / "corpus.jsonl")},
                "twins": {"method": "mine", "mine_model": f"hf:{tiny_clip_dir}"},
                # greedy: what a barely taught model samples at 0.9 depends on the draw
                "captions": {"n": 2, "require_features": False, "temperature": 0},
                "images": {"backend": "glyph", "size": 32},
                "filter": {"backend": "clipscore", "model": f"hf:{tiny_clip_dir}", "threshold": 0.0},
            }
        )  # fmt: skip

    report = run_synth(config(taught_lm, tmp_path / "taught"))
    captions = {r.stage: r for r in report.stages}["captions"]
    assert captions.done > 0 and captions.failed == 0
    data = read_cultwin(tmp_path / "taught", strict=True, check_images=True)
    assert len(data) == 4
    for record in data:  # what the local model wrote, validated like an API answer
        assert len(record.pos_captions) == 2 and len(record.neg_captions) == 2
        assert all(c.startswith("a ") and len(c.split()) < 15 for c in record.pos_captions)

    report = run_synth(config(random_lm, tmp_path / "random"))
    captions = {r.stage: r for r in report.stages}["captions"]
    assert captions.failed > 0 and captions.done == 0
    failures = read_jsonl(tmp_path / "random" / "failures.jsonl")
    assert failures and all(f["stage"] == "captions" and len(f["raw"]) == 2 for f in failures)


def _count_generate(llm: TransformersLLM) -> list[int]:
    """Rows of every ``generate`` call the backend makes from now on."""
    calls: list[int] = []
    generate = llm.model.generate

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs["input_ids"].shape[0])
        return generate(*args, **kwargs)

    llm.model.generate = counted
    return calls


def _judge_messages(index: int) -> list[dict[str, Any]]:
    return [{"role": "user", "content": f"Score image {index} " + "well " * index}]


@pytest.mark.parametrize("batch_size", [8, 3])
def test_requests_in_flight_together_share_one_generate_call(
    random_lm: Path, batch_size: int
) -> None:
    async def run() -> tuple[list[Any], list[int]]:
        settings = _settings(random_lm, json_mode="json_schema", batch_size=batch_size)
        async with create_llm(settings) as llm:
            calls = _count_generate(llm)
            outcomes = await asyncio.gather(
                *(ask(llm, None, {}, JudgeAnswer, messages=_judge_messages(i)) for i in range(8))
            )
            return outcomes, calls

    outcomes, calls = asyncio.run(run())
    assert calls == ([8] if batch_size == 8 else [3, 3, 2])  # prompts of 8 lengths, padded
    assert all(o.ok for o in outcomes)


def test_a_random_model_decoded_under_the_schema_always_answers_in_shape(random_lm: Path) -> None:
    """Sampled at temperature 1 from random weights, yet every answer validates."""

    async def run(json_mode: str) -> list[Any]:
        settings = _settings(random_lm, json_mode=json_mode, max_attempts=1, temperature=1.0)
        async with create_llm(settings) as llm:
            return await asyncio.gather(
                *(
                    ask(llm, None, {}, JudgeAnswer, messages=_judge_messages(i), seed=i)
                    for i in range(16)
                )
            )

    constrained = asyncio.run(run("json_schema"))
    assert all(o.ok for o in constrained), [o.raw for o in constrained if not o.ok]
    assert len({tuple(o.raw) for o in constrained}) > 1  # sampled, not one fixed answer
    free = asyncio.run(run("none"))
    assert not any(o.ok for o in free)  # the same model unconstrained: nothing usable


def test_batched_answers_are_the_answers_one_at_a_time(taught_lm: Path) -> None:
    prompt = load_prompt("captions")
    conversations = [
        prompt.messages({**VARIABLES, "concept": name, "country_name": country})
        for name, country in [("Kimono", "Japan"), ("Sari", "India"), ("Qipao", "China")]
    ]

    async def run() -> tuple[list[str], list[str]]:
        async with create_llm(_settings(taught_lm, json_mode="json_schema")) as llm:
            alone = [await llm.complete(c, schema=CaptionsAnswer) for c in conversations]
            together = await asyncio.gather(
                *(llm.complete(c, schema=CaptionsAnswer) for c in conversations)
            )
            return alone, list(together)

    alone, together = asyncio.run(run())
    assert together == alone and json.loads(alone[0]) == CAPTIONS


def test_json_mode_without_xgrammar_is_a_one_line_error(
    random_lm: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "xgrammar", None)  # import xgrammar raises ImportError
    with pytest.raises(InputError, match=r"json_mode=json_schema .* pip install"):
        create_llm(_settings(random_lm, json_mode="json_schema"))
    assert isinstance(create_llm(_settings(random_lm, json_mode="none")), TransformersLLM)


def test_a_gguf_file_or_a_folder_with_one_is_a_model(tmp_path: Path) -> None:
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "m.Q4_1.gguf").write_bytes(b"")
    assert gguf_location(str(tmp_path / "one" / "m.Q4_1.gguf")) == (
        str(tmp_path / "one"),
        "m.Q4_1.gguf",
    )
    assert gguf_location(str(tmp_path / "one")) == (str(tmp_path / "one"), "m.Q4_1.gguf")
    (tmp_path / "one" / "config.json").write_text("{}")  # a transformers folder wins
    assert gguf_location(str(tmp_path / "one")) == (str(tmp_path / "one"), None)
    (tmp_path / "two").mkdir()
    for name in ("a.gguf", "b.gguf"):
        (tmp_path / "two" / name).write_bytes(b"")
    with pytest.raises(InputError, match="several GGUF files"):
        gguf_location(str(tmp_path / "two"))
    assert gguf_location("org/model") == ("org/model", None)
    with pytest.raises(LLMError, match="no such GGUF file"):
        create_llm(_settings(tmp_path / "missing.gguf"))


def _write_gguf(model_dir: Path, path: Path) -> Path:
    """The tiny chat model as a llama GGUF file, the way llama.cpp's converter writes one
    (float32 tensors, q/k rows in its rotary order, the BPE vocabulary and chat template)."""
    import gguf
    from safetensors.numpy import load_file
    from transformers import AutoConfig, AutoTokenizer

    config, tokenizer = (
        AutoConfig.from_pretrained(model_dir),
        AutoTokenizer.from_pretrained(model_dir),
    )
    state = load_file(model_dir / "model.safetensors")
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_dimension_count(config.hidden_size // config.num_attention_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    bpe = json.loads(tokenizer.backend_tokenizer.to_str())
    added = {token["id"]: token["content"] for token in bpe["added_tokens"]}
    tokens = {index: token for token, index in bpe["model"]["vocab"].items()} | added
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list([tokens[i] for i in range(len(tokens))])
    writer.add_token_types([3 if i in added else 1 for i in range(len(tokens))])
    writer.add_token_merges(
        [m if isinstance(m, str) else " ".join(m) for m in bpe["model"]["merges"]]
    )
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_pad_token_id(tokenizer.pad_token_id)
    writer.add_chat_template(tokenizer.chat_template)

    def rotary(weight: Any, heads: int) -> Any:
        return (
            weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:])
            .swapaxes(1, 2)
            .reshape(weight.shape)
        )

    names = {"input_layernorm": "attn_norm", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
             "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}  # fmt: skip
    writer.add_tensor("token_embd.weight", state["model.embed_tokens.weight"])
    writer.add_tensor("output_norm.weight", state["model.norm.weight"])
    writer.add_tensor(
        "output.weight", state.get("lm_head.weight", state["model.embed_tokens.weight"])
    )
    for layer in range(config.num_hidden_layers):
        prefix = f"model.layers.{layer}."
        for name, short in names.items():
            writer.add_tensor(f"blk.{layer}.{short}.weight", state[f"{prefix}{name}.weight"])
        q, k = state[prefix + "self_attn.q_proj.weight"], state[prefix + "self_attn.k_proj.weight"]
        writer.add_tensor(f"blk.{layer}.attn_q.weight", rotary(q, config.num_attention_heads))
        writer.add_tensor(f"blk.{layer}.attn_k.weight", rotary(k, config.num_key_value_heads))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_a_gguf_model_answers_like_the_model_it_was_converted_from(
    taught_lm: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "gguf"
    folder.mkdir()
    gguf_file = _write_gguf(taught_lm, folder / "tiny.F32.gguf")
    prompt = load_prompt("captions")

    async def answer(model: Path) -> str:
        async with create_llm(_settings(model, json_mode="json_schema")) as llm:
            return await llm.complete(prompt.messages(VARIABLES), schema=CaptionsAnswer)

    expected = asyncio.run(answer(taught_lm))
    assert json.loads(expected) == CAPTIONS
    assert asyncio.run(answer(gguf_file)) == expected  # the file itself
    assert asyncio.run(answer(folder)) == expected  # a folder holding one
