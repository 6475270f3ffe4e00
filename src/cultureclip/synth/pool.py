"""Running keyed work concurrently: the worker pool and the LLM item runner of the stages."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel

from cultureclip.core.llm import Items, LLMBackend, PromptTemplate, ask, create_llm
from cultureclip.core.progress import progress
from cultureclip.synth.context import StageReport, SynthContext

T = TypeVar("T")


async def run_pool(
    items: Sequence[T],
    handle: Callable[[list[T]], Awaitable[None]],
    *,
    concurrency: int,
    batch_size: int = 1,
    on_done: Callable[[int], None] | None = None,
) -> None:
    """Runs ``handle`` over batches of ``items`` with at most ``concurrency`` batches in flight."""
    queue: asyncio.Queue[list[T]] = asyncio.Queue()
    for start in range(0, len(items), batch_size):
        queue.put_nowait(list(items[start : start + batch_size]))

    async def worker() -> None:
        while True:
            try:
                batch = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            await handle(batch)
            if on_done is not None:
                on_done(len(batch))

    await asyncio.gather(*(worker() for _ in range(min(concurrency, queue.qsize()))))


@dataclass(frozen=True)
class LLMItem:
    """One keyed request of an LLM stage and what is stored for it.

    ``check`` turns the parsed answer into the fields kept (see :func:`ask`); the record
    stored is ``fields``, those (``failed`` in the failure log) and the provenance.
    ``items`` says where the answer's items are, so a partly valid answer keeps its valid
    ones (see :class:`Items`); dropped items go to the failure log with the reason.
    """

    key: str
    variables: dict[str, Any]
    check: Callable[[Any], dict[str, Any]]
    fields: dict[str, Any]
    failed: dict[str, Any] = field(default_factory=dict)
    items: Items | None = None


def run_llm_items(
    ctx: SynthContext,
    stage: str,
    items: list[LLMItem],
    report: StageReport,
    *,
    prompt: PromptTemplate,
    schema: type[BaseModel],
    temperature: float | None,
) -> None:
    """Asks ``prompt`` for every item not stored yet, concurrently; successes are stored,
    failures logged."""
    store, failures = ctx.store(stage), ctx.failures()
    seed = ctx.config.seed
    report.total = len(items)
    pending = [item for item in items if item.key not in store]
    report.cached = report.total - len(pending)

    async def handle(llm: LLMBackend, batch: list[LLMItem]) -> None:
        for item in batch:
            outcome = await ask(
                llm,
                prompt,
                item.variables,
                schema,
                check=item.check,
                items=item.items,
                temperature=temperature,
                seed=seed,
            )
            record = {
                **item.fields,
                **(outcome.value or item.failed),
                "provenance": {"prompt": prompt.id, "model": llm.model_id, "seed": seed},
            }
            # fsync in a worker thread: durable, without stalling the requests in flight.
            if outcome.ok:
                await asyncio.to_thread(store.add, {"key": item.key, **record})
                await asyncio.to_thread(
                    failures.add_dropped,
                    stage,
                    item.key,
                    outcome.dropped,
                    raw=outcome.raw,
                    item=record,
                )
                report.done += 1
            else:
                await asyncio.to_thread(
                    failures.add,
                    stage,
                    item.key,
                    outcome.error,
                    raw=outcome.raw,
                    item=record,
                    dropped=outcome.dropped,
                )
                report.failed += 1

    async def main() -> None:
        async with create_llm(ctx.config.placed("llm")) as llm:
            with progress(
                stage, report.total, completed=report.cached, enabled=ctx.config.progress
            ) as task:
                await run_pool(
                    pending,
                    functools.partial(handle, llm),
                    concurrency=ctx.config.llm.concurrency,
                    on_done=lambda n: task.update(advance=n),
                )

    if pending:
        asyncio.run(main())
