"""Generative (chat) VLMs answering multiple-choice items with a letter, in the
:data:`GENERATIVE_MODELS` registry: ``openai:<model>@<base_url>`` (any OpenAI-compatible
server) and ``hf-vlm:<hub id or dir>`` (a local transformers image-text-to-text model,
greedy decoding or option likelihood). :func:`parse_answer_letter` reads the reply; an
unreadable one counts as wrong, never guessed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from string import ascii_uppercase as LETTERS
from typing import Any

import torch
from PIL import Image
from pydantic import AliasChoices, BaseModel, Field, ValidationError

from cultureclip.core.device import (
    former_dtype_name,
    resolve_device,
    resolve_precision,
    torch_dtype,
)
from cultureclip.core.errors import InputError
from cultureclip.core.identity import weights_identity
from cultureclip.core.io import stable_hash
from cultureclip.core.llm import LLMError, LLMSettings, SyncLLM, user_message
from cultureclip.core.llm.settings import parse_model_at_url
from cultureclip.core.registry import Registry
from cultureclip.core.store import ResultStore
from cultureclip.models.chat import (
    encode,
    first_token_ids,
    load_vlm,
    n_tokens,
    render,
    user_turn,
)

logger = logging.getLogger(__name__)

ANSWER_INSTRUCTION = "Answer with the option's letter from the given choices directly."
#: open-ended questions (no options), as in VQA-style evaluations
OPEN_INSTRUCTION = "Answer the question using a single word or phrase."


class GenerativeSettings(LLMSettings):
    """``generative.*``: the chat client's settings (``openai:``; the spec names the model
    and server) and the local model's (``hf-vlm:``: mode, device, precision, batches)."""

    temperature: float = Field(0.0, ge=0)
    max_tokens: int = Field(16, ge=1)
    concurrency: int = Field(8, ge=1)
    timeout_s: float = Field(60.0, gt=0, validation_alias=AliasChoices("timeout_s", "timeout"))
    mode: str = "generate"
    likelihood_target: str = "letter"
    batch_size: int = Field(8, ge=1)
    max_new_tokens: int = Field(8, ge=1)


#: the settings only the chat client reads (a local model refuses them)
CLIENT_FIELDS = (frozenset(LLMSettings.model_fields) - {"device", "precision"}) | {
    "timeout",
    "backoff",
    "max_backoff",
}


@dataclass
class MCQPrompt:
    """One image, a question and its options (none: open-ended, answered in a short phrase)."""

    image: Image.Image
    question: str
    options: list[str]

    def text(self) -> str:
        return prompt_text(self.question, self.options)


def prompt_text(question: str, options: Sequence[str]) -> str:
    """What a model is asked (and what the chat export trains on): the lettered options."""
    lines = [question.strip()] if question.strip() else []
    lines += [f"{LETTERS[i]}. {option}" for i, option in enumerate(options)]
    lines.append(ANSWER_INSTRUCTION if options else OPEN_INSTRUCTION)
    return "\n".join(lines)


@dataclass
class GenerationOutcome:
    """One reply (or the error that stopped it)."""

    reply: str | None
    error: str | None = None
    #: likelihood scoring: the log-probability score of each option
    scores: list[float] | None = None


_PATTERNS = [
    # "Answer: B", "answer is (b)", "correct option is B."
    re.compile(
        r"\b(?:answer|option|choice)\b(?:\s+is)?\s*[:\-]?\s*\(?([A-Z])\)?(?![A-Za-z])",
        re.IGNORECASE,
    ),
    # a reply that starts with the letter: "B", "B.", "(B)", "B) kimono", "**B**"
    re.compile(r"^[\s*\"'`\[]*\(?([A-Z])\)?(?:[\s.:,)\]*\"'`]|$)"),
    # a letter in brackets anywhere: "... so (C)."
    re.compile(r"\(([A-Z])\)"),
]


def parse_answer_letter(reply: str, options: Sequence[str]) -> int | None:
    """Index of the option a reply picks, or ``None`` when it cannot be told.

    Tries, in order: an explicit "answer/option is X", a leading letter, a bracketed
    letter, then the option text itself when exactly one option's text appears in the
    reply. Letters beyond the number of options are ignored.
    """
    text = reply.strip()
    valid = LETTERS[: len(options)]
    for pattern in _PATTERNS:
        for match in pattern.finditer(text):
            letter = match.group(1).upper()  # a no-op where the pattern only matches capitals
            if letter in valid:
                return valid.index(letter)
    # lowercase lone letter ("b", "b.") — only when the whole reply is that short
    short = re.fullmatch(r"[\s(]*([a-z])[\s).:]*", text)
    if short and short.group(1).upper() in valid:
        return valid.index(short.group(1).upper())
    lowered = text.lower()
    echoed = [
        i
        for i, option in enumerate(options)
        if option.strip() and option.strip().lower() in lowered
    ]
    if len(echoed) > 1:
        # "Hanbok" inside "Hanbok dress": keep only options not contained in another match
        echoed = [
            i
            for i in echoed
            if not any(j != i and options[i].lower() in options[j].lower() for j in echoed)
        ]
    return echoed[0] if len(echoed) == 1 else None


class GenerativeModel(ABC):
    """A chat VLM that answers :class:`MCQPrompt` s."""

    spec: str = ""

    @abstractmethod
    def generate(self, prompts: Sequence[MCQPrompt]) -> list[GenerationOutcome]:
        """Replies in input order; a failed request is an outcome with ``error`` set."""

    def identity(self) -> dict[str, Any]:
        """What decides a reply besides the prompt: part of every stored answer's key."""
        return {"spec": self.spec}


class AnswerStore:
    """A generative run's answers on the keyed store (``<work_dir>/predictions.partial.jsonl``).

    Each answer is keyed by a hash of the item, the benchmark and its options, and the
    model's identity (spec and sampling): a run killed mid-way asks only the items not
    stored yet, and a changed model or setting reuses nothing. Failed answers are never
    stored, so the next run asks them again.
    """

    #: benchmark options that change how work is cut, not what is answered
    NOT_DECIDING = frozenset({"chunk_size", "batch_size"})

    def __init__(
        self, work_dir: Path | None, model: GenerativeModel, benchmark: str, options: BaseModel
    ) -> None:
        deciding = options.model_dump(mode="json", exclude=set(self.NOT_DECIDING))
        if isinstance(deciding.get("judge"), str):  # the judge's model decides, not its server
            deciding["judge"] = deciding["judge"].partition("@")[0]
        self.scope = stable_hash("answers", benchmark, deciding, model.identity())
        self.store = ResultStore(work_dir, "predictions.partial") if work_dir else None
        self.benchmark = benchmark

    def key(self, item: BaseModel) -> str:
        fields = {
            name: hashlib.sha256(value).hexdigest() if isinstance(value, bytes) else value
            for name, value in item.model_dump().items()
        }
        return stable_hash(self.scope, fields)

    def reused(self, items: Sequence[BaseModel]) -> dict[str, dict[str, Any]]:
        """Item id -> its stored answer, for the items answered already."""
        if self.store is None:
            return {}
        done = {}
        for item in items:
            record = self.store.get(self.key(item))
            if record is not None and record.get("error") is None:
                done[getattr(item, "id")] = record  # noqa: B009 - items of every kind have an id
        # data-parallel: every process asks the main one's list, whatever it read meanwhile
        done = from_main_process(done)
        logger.info(
            "%s: %d answers reused, %d to ask", self.benchmark, len(done), len(items) - len(done)
        )
        return done

    def add(self, items: Sequence[BaseModel], records: list[dict[str, Any]]) -> None:
        """Keys the records (in place) and stores the answered ones."""
        for item, record in zip(items, records, strict=True):
            record["key"] = self.key(item)
            if self.store is not None and record.get("error") is None and is_main_process():
                self.store.add(record)


GENERATIVE_MODELS: Registry[type[GenerativeModel]] = Registry(
    "generative model backend", entry_point_group="cultureclip.generative_models"
)


@GENERATIVE_MODELS.register("openai", help="OpenAI-compatible chat API: openai:<model>@<base_url>")
class OpenAIChatModel(GenerativeModel):
    """A model behind an OpenAI-compatible ``/v1/chat/completions`` endpoint."""

    def __init__(self, argument: str, **options: Any) -> None:
        if options.get("mode", "generate") != "generate":
            raise InputError(
                f"generative.mode={options['mode']} needs the model's weights; "
                "score a local model with hf-vlm:"
            )
        local = sorted(set(options) - CLIENT_FIELDS - {"mode"})
        if local:
            raise InputError(f"the openai backend has no option generative.{local[0]}")
        target = parse_model_at_url(argument)
        if not target["model"]:
            raise InputError(
                f"openai spec needs a model name: 'openai:<model>@<base_url>', got {argument!r}"
            )
        try:
            settings = GenerativeSettings.model_validate({**options, **target, "backend": "openai"})
        except ValidationError as exc:
            raise InputError(f"generative options: {exc}") from None
        self.settings = settings
        self._client: SyncLLM | None = None
        self.spec = f"openai:{settings.model}@{settings.base_url}"

    def identity(self) -> dict[str, Any]:
        # The model and its sampling decide a reply; the server's address does not.
        return {"spec": f"openai:{self.settings.model}", **self.settings.identity()}

    def generate(self, prompts: Sequence[MCQPrompt]) -> list[GenerationOutcome]:
        if self._client is None:  # connects on first use (naming a model costs nothing)
            self._client = SyncLLM(self.settings)
        conversations = [[user_message(p.text(), [p.image])] for p in prompts]
        replies = self._client.complete_many(conversations)
        return [
            GenerationOutcome(None, str(r)) if isinstance(r, LLMError) else GenerationOutcome(r)
            for r in replies
        ]


SCORING_MODES = ("generate", "likelihood")
LIKELIHOOD_TARGETS = ("letter", "text")


@GENERATIVE_MODELS.register(
    "hf-vlm", help="local transformers image-text-to-text model: hf-vlm:<hub id or dir>"
)
class HFVisionChatModel(GenerativeModel):
    """A local ``AutoModelForImageTextToText`` (LLaVA, Qwen2-VL, Idefics3/SmolVLM, …) asked the
    API path's lettered prompt through the processor's chat template.

    ``generative.mode=generate``: batched greedy decoding (left padding), the reply parsed
    like an API reply. ``likelihood``: no decoding; an option scores the next-token
    log-probability of its letter (``likelihood_target=letter``, with and without a leading
    space) or the mean per-token log-probability of its text (``text``). The winning letter
    is recorded as the reply, so both modes are scored and resumed by the same code.
    """

    def __init__(
        self,
        argument: str,
        *,
        mode: str = "generate",
        likelihood_target: str = "letter",
        device: str | None = None,
        precision: str = "auto",
        batch_size: int = 8,
        max_new_tokens: int = 8,
    ) -> None:
        if mode not in SCORING_MODES:
            raise InputError(f"generative.mode must be one of {SCORING_MODES}, got {mode!r}")
        if likelihood_target not in LIKELIHOOD_TARGETS:
            raise InputError(
                f"generative.likelihood_target must be one of {LIKELIHOOD_TARGETS}, "
                f"got {likelihood_target!r}"
            )
        if batch_size < 1 or max_new_tokens < 1:
            raise InputError("generative.batch_size and max_new_tokens must be at least 1")
        #: how an option is picked: decoding and parsing, or the letter's or text's likelihood
        self.scoring = mode if mode == "generate" else likelihood_target
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.rank, self.world = join_processes(device)
        local_rank = int(os.environ.get("LOCAL_RANK", self.rank)) if self.world > 1 else None
        self.device = resolve_device(device, local_rank)
        self.precision = resolve_precision(precision, self.device)
        self.processor, self.model = load_vlm(
            argument, device=self.device, dtype=torch_dtype(self.precision)
        )
        self.tokenizer = self.processor.tokenizer
        self.tokenizer.padding_side = "left"  # generation continues every row at the end
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.spec = f"hf-vlm:{argument}"
        if mode == "likelihood":
            self.spec += f"?likelihood={likelihood_target}"
        self._precision = precision
        self._weights = weights_identity(argument)  # a folder retrained in place is new

    def identity(self) -> dict[str, Any]:
        return {
            "spec": self.spec,
            "scoring": self.scoring,
            "max_new_tokens": self.max_new_tokens,
            # as the precision setting was named before it was one shared type
            "dtype": former_dtype_name(self._precision),
            **self._weights,
        }

    def generate(self, prompts: Sequence[MCQPrompt]) -> list[GenerationOutcome]:
        """Replies in input order. Launched as N processes (``torchrun --nproc_per_node N``,
        ``accelerate launch``), each answers every N-th batch and all get every reply; the
        batches are the ones a single process makes, so the replies are the same."""
        if self.scoring != "generate" and any(not p.options for p in prompts):
            raise InputError("likelihood scoring needs options; use generative.mode=generate")
        batches = [
            list(prompts[start : start + self.batch_size])
            for start in range(0, len(prompts), self.batch_size)
        ]
        mine = [self._answer(batch) for batch in batches[self.rank :: self.world]]
        if self.world > 1:
            logger.info(
                "process %d of %d answered %d of %d batches",
                self.rank + 1, self.world, len(mine), len(batches),
            )  # fmt: skip
            gathered: list[Any] = [None] * self.world
            torch.distributed.all_gather_object(gathered, mine)
            # batch i was answered by process i % N, as its (i // N)-th
            ordered = [gathered[i % self.world][i // self.world] for i in range(len(batches))]
        else:
            ordered = mine
        return [outcome for batch in ordered for outcome in batch]

    def _answer(self, batch: list[MCQPrompt]) -> list[GenerationOutcome]:
        asked = [
            render(self.processor, [user_turn(p.text())], generation_prompt=True) for p in batch
        ]
        if self.scoring == "text":
            return self._text_likelihood(batch, asked)
        inputs = encode(self.processor, asked, [p.image for p in batch], self.device)
        if self.scoring == "generate":
            return self._decode(inputs)
        return self._letter_likelihood(batch, inputs)

    def _decode(self, inputs: dict[str, Any]) -> list[GenerationOutcome]:
        with torch.inference_mode():
            output = self.model.generate(
                **inputs,
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        replies = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        return [GenerationOutcome(reply.strip()) for reply in replies]

    def _letter_likelihood(self, prompts: list[MCQPrompt], inputs: Any) -> list[GenerationOutcome]:
        with torch.inference_mode():
            logits = self.model(**inputs).logits[:, -1, :].float()
        log_probs = torch.log_softmax(logits, dim=-1)
        outcomes = []
        for row, prompt in enumerate(prompts):
            scores = [
                float(torch.logsumexp(log_probs[row, first_token_ids(self.tokenizer, letter)], 0))
                for letter in LETTERS[: len(prompt.options)]
            ]
            outcomes.append(_best_letter(scores))
        return outcomes

    def _text_likelihood(
        self, prompts: list[MCQPrompt], asked: list[str]
    ) -> list[GenerationOutcome]:
        texts, images, lengths = [], [], []
        for prompt, prefix in zip(prompts, asked, strict=True):
            for option in prompt.options:
                texts.append(prefix + option)
                images.append(prompt.image)
                lengths.append(max(1, n_tokens(self.tokenizer, option)))
        inputs = encode(self.processor, texts, images, self.device)
        with torch.inference_mode():
            logits = self.model(**inputs).logits.float()
        log_probs = torch.log_softmax(logits[:, :-1], dim=-1)
        targets = inputs["input_ids"][:, 1:]
        token_scores = log_probs.gather(2, targets[..., None]).squeeze(2)
        # left padding: an option's tokens are the last n of its row; a prompt's rows follow on
        rows = iter(float(token_scores[row, -n:].mean()) for row, n in enumerate(lengths))
        return [_best_letter(list(islice(rows, len(p.options)))) for p in prompts]


def _best_letter(scores: Sequence[float]) -> GenerationOutcome:
    best = max(range(len(scores)), key=lambda k: scores[k])
    return GenerationOutcome(LETTERS[best], scores=[round(s, 4) for s in scores])


def join_processes(device: str | None) -> tuple[int, int]:
    """(rank, world) of this process among those launched together (``torchrun``,
    ``accelerate launch``: ``WORLD_SIZE`` > 1), joining their process group (NCCL on GPUs,
    gloo on CPUs) if it is not joined yet; (0, 1) for a process on its own."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    from accelerate import PartialState

    on_cuda = resolve_device(device).startswith("cuda")
    state = PartialState(cpu=not on_cuda)
    return state.process_index, state.num_processes


def is_main_process() -> bool:
    """True unless this is a process other than the first of a data-parallel run: only
    the first writes what all of them computed."""
    dist = torch.distributed
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def from_main_process(value: Any) -> Any:
    """``value`` as the first process has it, in every process of a data-parallel run."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def is_generative_spec(spec: object) -> bool:
    return isinstance(spec, str) and spec.partition(":")[0] in GENERATIVE_MODELS


def create_generative_model(spec: str, **options: Any) -> GenerativeModel:
    """Builds a generative model from ``openai:<model>@<url>`` or ``hf-vlm:<id or dir>``."""
    backend, _, argument = spec.partition(":")
    if not argument:
        raise InputError(f"generative model spec {spec!r} must look like <backend>:<argument>")
    try:
        return GENERATIVE_MODELS.create(backend, argument, **options)
    except TypeError as exc:
        if "unexpected keyword argument" not in str(exc):
            raise
        name = str(exc).rsplit("argument", 1)[-1].strip(" '\"")
        raise InputError(f"the {backend} backend has no option generative.{name}") from None
