"""``transformers``: a local ``AutoModelForCausalLM`` prompted through its chat template."""

from __future__ import annotations

import asyncio

from pydantic import BaseModel

from cultureclip.core.device import resolve_device, resolve_dtype
from cultureclip.core.llm.base import LLMS, LLMBackend, LLMError, Message, text_only
from cultureclip.core.llm.settings import LLMSettings


@LLMS.register("transformers")
class TransformersLLM(LLMBackend):
    """A local causal LM (``AutoModelForCausalLM``) prompted through its chat template.

    ``model`` is a hub id or a local directory. Requests run one at a time in a worker
    thread (greedy when the temperature is 0, seeded sampling otherwise); use a serving
    engine (vLLM) with the ``openai`` backend for throughput. There is no JSON mode: the
    answer is parsed and validated by ``ask`` like any other backend's. Text parts of
    multi-part messages are joined (a text-only model sees no images). ``dtype=auto``
    is bfloat16 on CUDA and float32 elsewhere.
    """

    def __init__(self, settings: LLMSettings) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        super().__init__(settings)
        device = resolve_device(settings.device)
        dtype = resolve_dtype(settings.dtype, device)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(settings.model)
            model = AutoModelForCausalLM.from_pretrained(settings.model, dtype=dtype)
        except (OSError, ValueError) as exc:
            raise LLMError(f"cannot load the local chat model {settings.model!r}: {exc}") from exc
        if not getattr(self.tokenizer, "chat_template", None):
            raise LLMError(
                f"tokenizer of {settings.model} has no chat template; use an instruction-tuned model"
            )
        self.model = model.to(device).eval()
        self._lock = asyncio.Lock()

    def _generate(self, messages: list[Message], temperature: float, seed: int | None) -> str:
        import torch

        inputs = self.tokenizer.apply_chat_template(
            [text_only(m) for m in messages],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        ).to(self.model.device)
        if seed is not None:
            torch.manual_seed(seed)
        sampling = {"do_sample": temperature > 0}
        if temperature > 0:
            sampling["temperature"] = temperature
        else:  # greedy: drop sampling defaults a hub generation_config may carry
            sampling.update(temperature=None, top_p=None, top_k=None)
        pad = self.tokenizer.pad_token_id
        with torch.inference_mode():
            output = self.model.generate(
                **inputs,
                max_new_tokens=self.settings.max_tokens,
                pad_token_id=self.tokenizer.eos_token_id if pad is None else pad,
                **sampling,
            )
        new_tokens = output[0, inputs["input_ids"].shape[1] :]
        return self.tokenizer.decode(new_tokens, skip_special_tokens=True)

    async def complete(
        self,
        messages: list[Message],
        *,
        schema: type[BaseModel] | None = None,
        temperature: float | None = None,
        seed: int | None = None,
    ) -> str:
        temp = self.settings.temperature if temperature is None else temperature
        async with self._lock:  # one generate at a time on one model
            try:
                return await asyncio.to_thread(self._generate, messages, temp, seed)
            except RuntimeError as exc:  # e.g. CUDA out of memory, a too-long prompt
                raise LLMError(f"local generation failed: {exc}") from exc
