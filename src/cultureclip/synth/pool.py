"""Running keyed work concurrently: the worker pool and the LLM item runner of the stages."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from cultureclip.core.llm import LLMBackend, Outcome, create_llm
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


async def run_llm_items(
    ctx: SynthContext,
    stage: str,
    items: list[tuple[str, Callable[[LLMBackend], Awaitable[tuple[Outcome[Any], dict[str, Any]]]]]],
    report: StageReport,
) -> None:
    """Runs keyed LLM work items concurrently; successes are stored, failures logged."""
    store, failures = ctx.store(stage), ctx.failures()
    report.total = len(items)
    pending = [(key, work) for key, work in items if key not in store]
    report.cached = report.total - len(pending)
    if not pending:
        return
    async with create_llm(ctx.config.llm) as llm:
        with progress(
            stage, report.total, completed=report.cached, enabled=ctx.config.progress
        ) as task:

            async def handle(batch: list[tuple[str, Any]]) -> None:
                for key, work in batch:
                    outcome, record = await work(llm)
                    # fsync in a worker thread: durable, without stalling the requests in flight.
                    if outcome.ok:
                        await asyncio.to_thread(store.add, {"key": key, **record})
                        report.done += 1
                    else:
                        await asyncio.to_thread(
                            failures.add, stage, key, outcome.error, raw=outcome.raw, item=record
                        )
                        report.failed += 1

            await run_pool(
                pending,
                handle,
                concurrency=ctx.config.llm.concurrency,
                on_done=lambda n: task.update(advance=n),
            )
