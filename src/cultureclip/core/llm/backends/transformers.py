"""``transformers``: a local ``AutoModelForCausalLM`` prompted through its chat template,
requests batched into one ``generate`` call, answers decoded under their JSON schema."""

from __future__ import annotations

import asyncio
import json
import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from cultureclip.core.device import resolve_device, resolve_precision, torch_dtype
from cultureclip.core.errors import InputError
from cultureclip.core.llm.base import LLMS, LLMBackend, LLMError, Message, text_only
from cultureclip.core.llm.settings import LLMSettings

#: what ``json_mode`` constrains decoding to (``none``: nothing)
_ANY_OBJECT = '{"type": "object"}'


def gguf_location(model: str) -> tuple[str, str | None]:
    """``(folder or hub id, GGUF file name or None)`` for ``llm.model``.

    A ``.gguf`` file, or a local folder holding exactly one (and no ``config.json``), is
    loaded through transformers' GGUF support (dequantized to ``dtype`` on load).
    """
    path = Path(model)
    if path.suffix == ".gguf":
        if not path.is_file():
            raise LLMError(f"cannot load the local chat model {model!r}: no such GGUF file")
        return str(path.parent), path.name
    if path.is_dir() and not (path / "config.json").exists():
        found = sorted(p.name for p in path.glob("*.gguf"))
        if len(found) > 1:
            raise InputError(
                f"llm.model: {model} holds several GGUF files ({', '.join(found)}); name one"
            )
        if found:
            return model, found[0]
    return model, None


@dataclass
class _Loaded:
    tokenizer: Any
    model: Any
    lock: threading.Lock = field(default_factory=threading.Lock)  # one generate at a time


# Loaded models stay shared while a backend holds them (a benchmark or a caller that keeps
# one open makes later backends of the same model reuse it instead of loading it again).
_LOADED: weakref.WeakValueDictionary[tuple[str, str, str], _Loaded] = weakref.WeakValueDictionary()
_LOADING = threading.Lock()


def _load(settings: LLMSettings) -> _Loaded:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = resolve_device(settings.device)
    dtype = torch_dtype(resolve_precision(settings.precision, device))
    cache_key = (settings.model, str(device), str(dtype))
    with _LOADING:
        loaded = _LOADED.get(cache_key)
        if loaded is not None:
            return loaded
        folder, gguf_file = gguf_location(settings.model)
        extra = {"gguf_file": gguf_file} if gguf_file else {}
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, **extra)
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, **extra)
        except (OSError, ValueError, ImportError) as exc:
            raise LLMError(f"cannot load the local chat model {settings.model!r}: {exc}") from exc
        if not getattr(tokenizer, "chat_template", None):
            raise LLMError(
                f"tokenizer of {settings.model} has no chat template; use an instruction-tuned model"
            )
        # Batched prompts end where the answer starts: pad on the left.
        tokenizer.padding_side = "left"
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        loaded = _Loaded(tokenizer, model.to(device).eval())
        _LOADED[cache_key] = loaded
        return loaded


class _Grammars:
    """JSON grammars compiled once per schema for one tokenizer (xgrammar)."""

    def __init__(self, loaded: _Loaded, stop_ids: list[int], json_mode: str) -> None:
        try:
            import xgrammar
        except ImportError:
            raise InputError(
                f"llm.json_mode={json_mode} with the transformers backend needs xgrammar: "
                "pip install 'cultureclip[local-llm]' (or set llm.json_mode=none)"
            ) from None
        self.xgr, self.json_mode = xgrammar, json_mode
        vocab = loaded.model.get_output_embeddings().weight.shape[0]
        info = xgrammar.TokenizerInfo.from_huggingface(
            loaded.tokenizer, vocab_size=vocab, stop_token_ids=stop_ids
        )
        self.compiler = xgrammar.GrammarCompiler(info)
        self.compiled: dict[str, Any] = {}

    def source(self, schema: type[BaseModel]) -> str:
        if self.json_mode == "json_schema":
            return json.dumps(schema.model_json_schema(), sort_keys=True)
        return _ANY_OBJECT

    def processor(self, source: str) -> Any:
        if source not in self.compiled:
            # No free whitespace: a small model cannot loop on blanks until max_tokens.
            self.compiled[source] = self.compiler.compile_json_schema(source, any_whitespace=False)
        from xgrammar.contrib.hf import LogitsProcessor

        return LogitsProcessor(self.compiled[source])  # one per generate: it keeps state


class _SeededSampling:
    """Samples each row with its own generator (seeded by its request), leaving only the
    drawn token: a sampled answer does not depend on what it was batched with.

    A ``LogitsProcessor`` after the grammar's; ``generate`` then runs greedy."""

    def __init__(
        self, seeds: list[int | None], temperature: float, top_k: int | None, top_p: float | None
    ) -> None:
        import torch
        from transformers import TopKLogitsWarper, TopPLogitsWarper

        self.generators = []
        for seed in seeds:
            generator = torch.Generator()
            if seed is None:
                generator.seed()
            else:
                generator.manual_seed(seed)
            self.generators.append(generator)
        self.temperature = temperature
        # the hub generation_config's top-k/top-p, as sampling in generate would apply them
        self.warpers = [
            *([TopKLogitsWarper(top_k)] if top_k else []),
            *([TopPLogitsWarper(top_p)] if top_p is not None and top_p < 1.0 else []),
        ]

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        scores = scores / self.temperature
        for warper in self.warpers:
            scores = warper(input_ids, scores)
        probs = torch.softmax(scores.float(), dim=-1).cpu()
        drawn = torch.cat(
            [
                torch.multinomial(probs[i : i + 1], 1, generator=g)
                for i, g in enumerate(self.generators)
            ]
        ).to(scores.device)
        only = torch.full_like(scores, float("-inf"))
        return only.scatter_(1, drawn, 0.0)


@dataclass
class _Request:
    messages: list[Message]
    temperature: float
    grammar: str | None  # the JSON schema it is decoded under
    seed: int | None
    answer: asyncio.Future[str]


@LLMS.register("transformers")
class TransformersLLM(LLMBackend):
    """A local causal LM (``AutoModelForCausalLM``) prompted through its chat template.

    ``model`` is a hub id, a local directory, or a GGUF file (or a folder with one).
    Requests in flight together are generated together: up to ``batch_size`` with the same
    temperature and schema share one left-padded ``generate`` call on ``device``.
    ``json_mode`` means what it means for the ``openai`` backend: ``json_schema`` decodes
    under the answer's pydantic schema, ``json_object`` under "any JSON object" (both with
    xgrammar, the ``local-llm`` extra), ``none`` leaves the model free. Greedy when the
    temperature is 0; seeded sampling otherwise (a batch is seeded by its first request,
    so a sampled answer also depends on what it was batched with). Text parts of
    multi-part messages are joined (a text-only model sees no images).
    """

    def __init__(self, settings: LLMSettings) -> None:
        super().__init__(settings)
        self.loaded = _load(settings)
        self.tokenizer, self.model = self.loaded.tokenizer, self.loaded.model
        config_eos = self.model.generation_config.eos_token_id
        self.stop_ids = sorted(
            {
                *([config_eos] if isinstance(config_eos, int) else config_eos or []),
                self.tokenizer.eos_token_id,
            }
            - {None}
        )
        self.grammars = (
            _Grammars(self.loaded, self.stop_ids, settings.json_mode)
            if settings.json_mode != "none"
            else None
        )
        self.batch_size = settings.batch_size
        self._queue: list[_Request] = []
        self._worker: asyncio.Task[None] | None = None

    async def complete(
        self,
        messages: list[Message],
        *,
        schema: type[BaseModel] | None = None,
        temperature: float | None = None,
        seed: int | None = None,
    ) -> str:
        grammar = (
            self.grammars.source(schema)
            if self.grammars is not None and schema is not None
            else None
        )
        temp = self.settings.temperature if temperature is None else temperature
        answer: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._queue.append(_Request(messages, temp, grammar, seed, answer))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain())
        return await answer

    async def _drain(self) -> None:
        """Generates what is queued, a batch at a time; requests queue up meanwhile."""
        await asyncio.sleep(0)  # requests issued together join the first batch
        while self._queue:
            first = self._queue[0]
            batch = [
                r
                for r in self._queue
                if (r.temperature, r.grammar) == (first.temperature, first.grammar)
            ][: self.batch_size]
            taken = {id(r) for r in batch}
            self._queue = [r for r in self._queue if id(r) not in taken]
            try:
                texts = await asyncio.to_thread(self._generate, batch)
            except Exception as exc:  # every waiting request hears of it, none hangs
                # RuntimeError: e.g. CUDA out of memory, a too-long prompt; others are bugs
                error = (
                    LLMError(f"local generation failed: {exc}")
                    if isinstance(exc, RuntimeError)
                    else exc
                )
                for request in batch:
                    if not request.answer.done():
                        request.answer.set_exception(error)
                continue
            for request, text in zip(batch, texts, strict=True):
                if not request.answer.done():
                    request.answer.set_result(text)

    def _generate(self, batch: list[_Request]) -> list[str]:
        import torch

        first = batch[0]
        inputs = self.tokenizer.apply_chat_template(
            [[text_only(m) for m in r.messages] for r in batch],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
            padding=True,
        ).to(self.model.device)
        processors = []
        if first.grammar is not None:
            assert self.grammars is not None
            processors.append(self.grammars.processor(first.grammar))
        if first.temperature > 0:
            config = self.model.generation_config
            processors.append(
                _SeededSampling(
                    [r.seed for r in batch], first.temperature, config.top_k, config.top_p
                )
            )
        with self.loaded.lock, torch.inference_mode():
            output = self.model.generate(
                **inputs,
                max_new_tokens=self.settings.max_tokens,
                pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=self.stop_ids,
                logits_processor=processors,
                # greedy over what _SeededSampling leaves: each row samples on its own
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
            )
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        return self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
