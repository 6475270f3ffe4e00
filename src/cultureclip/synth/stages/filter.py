"""The filter stage: every image scored by the configured judge; the merge applies the verdicts."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from cultureclip.core.io import stable_hash
from cultureclip.core.progress import progress
from cultureclip.core.store import ResultStore
from cultureclip.synth.context import StageReport, SynthContext
from cultureclip.synth.pool import run_pool
from cultureclip.synth.records import country_name
from cultureclip.synth.stages.images import ImageUnit, image_identity, plan_units


def verdict_key(unit: ImageUnit, judge_identity: dict[str, Any]) -> str:
    return stable_hash("verdict", unit.key, unit.caption, judge_identity)


def run_filter(ctx: SynthContext) -> StageReport:
    from cultureclip.data.pairs import open_image
    from cultureclip.synth.judges import JudgeRequest, create_judge

    report = StageReport("filter")
    judge = create_judge(ctx.config.placed("filter"), ctx.config.placed("llm"))
    identity = judge.identity()
    # Units whose image exists (given, or rendered by the images stage); the rest wait.
    units, report.waiting = plan_units(ctx, image_identity(ctx))
    images = ResultStore(ctx.work_dir, "images")
    ready = []
    for unit in units:
        if unit.given is not None:
            ready.append((unit, Path(unit.given)))
        elif unit.key in images:
            ready.append((unit, ctx.out_dir / unit.relpath))
        else:
            report.waiting += 1
    if not ready and not report.waiting:
        report.notes.append("no images yet")
    if ctx.config.filter.backend == "none":
        report.total = report.given = len(ready)
        report.notes.append("filter.backend=none: every image is kept unjudged")
        return report
    store, failures = ctx.store("filter"), ctx.failures()
    pending = [(u, p) for u, p in ready if verdict_key(u, identity) not in store]
    report.total, report.cached = len(ready), len(ready) - len(pending)
    if not pending:
        return report

    async def handle(batch: list[tuple[ImageUnit, Path]]) -> None:
        requests = [
            JudgeRequest(
                open_image(path),
                u.caption,
                u.side.concept,
                country_name(u.side.country),
                u.side.category,
            )
            for u, path in batch
        ]
        for (unit, _), outcome in zip(batch, await judge.judge(requests), strict=True):
            key = verdict_key(unit, identity)
            item = {"concept": unit.side.concept, "image": unit.key}
            if outcome.ok:
                store.add({"key": key, "image": unit.key, **outcome.value, "judge": identity})
                failures.add_dropped("filter", key, outcome.dropped, raw=outcome.raw, item=item)
                report.done += 1
            else:
                failures.add(
                    "filter",
                    key,
                    outcome.error,
                    raw=outcome.raw,
                    item=item,
                    dropped=outcome.dropped,
                )
                report.failed += 1

    async def main() -> None:
        with progress(
            "filter", report.total, completed=report.cached, enabled=ctx.config.progress
        ) as task:
            try:
                await run_pool(
                    pending,
                    handle,
                    concurrency=judge.concurrency,
                    batch_size=judge.batch_size,
                    on_done=lambda n: task.update(advance=n),
                )
            finally:
                await judge.aclose()

    asyncio.run(main())
    return report
