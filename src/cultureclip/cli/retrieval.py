"""CLI of the retrieval stage: ``index``, ``search``, ``retrieval-eval`` and ``serve``."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from cultureclip.cli.common import (
    ConfigOption,
    OverrideOption,
    PresetOption,
    console,
    fail,
    print_table,
    stage_config,
    switch,
    user_errors,
)

if TYPE_CHECKING:
    from cultureclip.retrieval.evaluate import SweepResult


def _floats(raw: str, name: str) -> list[float]:
    try:
        return [float(v) for v in raw.split(",") if v.strip()]
    except ValueError:
        raise typer.BadParameter(
            f"expected comma-separated numbers, got {raw!r}", param_hint=name
        ) from None


def _ranges(raw: str) -> list[tuple[float, float]]:
    result = []
    for item in raw.split(","):
        low, sep, high = item.strip().partition("-")
        try:
            result.append((float(low), float(high)) if sep else (float(low), float(low)))
        except ValueError:
            raise typer.BadParameter(
                f"expected ranges like 0.25-0.75,0.5-1.0; got {item!r}", param_hint="--scales"
            ) from None
    return result


def results_table(result: SweepResult, *, published: bool = False) -> Table:
    """A rich table in the layout of the CulTi results (T2I R1/R5/R10, I2T R1/R5/R10, MR)
    that fits 80 columns: each cell holds the value and, below it, its 95% bootstrap
    interval; a ``chance`` row gives a random ranking's recall on the same candidates."""
    from cultureclip.retrieval.evaluate import METRIC_KEYS, PUBLISHED_N, published_rows

    notes = [
        f"n: {result.n_texts} text queries over {result.n_images} images; "
        f"{result.n_image_queries} image queries over {result.n_texts} texts.",
        "Second line of a cell: 95% bootstrap interval (1,000 resamples of the queries).",
        "chance: the expected recall of a random ranking on the same candidates.",
    ]
    if published:
        notes.append(
            f"Published rows: CulTi test split, about {PUBLISHED_N:,} pairs. Recall@K depends "
            f"on the candidate count (chance T2I R@10 there ≈ {100 * 10 / PUBLISHED_N:.1f}%, here "
            f"{result.chance.get('t2i_R@10', float('nan')):.1f}%): compare only on the same set."
        )
    table = Table(
        title=f"retrieval: {result.n_images} images, {result.n_texts} texts",
        caption="\n".join(notes),
        caption_justify="left",
        width=80,
        padding=(0, 1),
    )
    table.add_column("method", overflow="fold", ratio=1)
    for name in ("T2I R@1", "R@5", "R@10", "I2T R@1", "R@5", "R@10", "MR"):
        table.add_column(name, justify="right", no_wrap=True, min_width=6)
    best = max(row.metrics["MR"] for row in result.rows)
    for row in result.rows:
        cells = []
        for key in METRIC_KEYS:
            value = f"{row.metrics[key]:.1f}"
            if key == "MR" and row.metrics["MR"] == best:
                value = f"[bold green]{value}[/]"
            if key in row.ci:
                low, high = row.ci[key]
                value += f"\n[dim]{low:.0f}–{high:.0f}[/]"
            cells.append(value)
        table.add_row(row.label, *cells)
    if result.chance:
        table.add_row(
            "[italic]chance[/]", *(f"[italic]{result.chance[k]:.1f}[/]" for k in METRIC_KEYS)
        )
    if published:
        table.add_section()
        for label, values in published_rows().items():
            table.add_row(f"[dim]{label}[/]", *(f"[dim]{v:.1f}[/]" for v in values))
    return table


def index_command(
    model: str | None = typer.Option(None, "--model", "-m", help="Model spec or saved dir."),
    data: str | None = typer.Option(
        None, "--data", "-d", help="Collection: Chinese-CLIP dir, caption folder or CulTwin."
    ),
    out: str | None = typer.Option(None, "--out", "-o", help="Index directory to write."),
    split: str | None = typer.Option(
        None, "--split", help="Split to index (train/valid/test); see docs/retrieval.md."
    ),
    laclip: str | None = typer.Option(
        None,
        "--laclip",
        help="Store LACLIP fused vectors: 'on' or 'k=8,scale=0.25-0.75,tau=0.05,"
        "weighting=softmax,beta=0,mode=crops|patches,seed=0'.",
    ),
    faiss_kind: str | None = typer.Option(None, "--faiss", help="flat (exact), ivf or hnsw."),
    batch_size: int | None = typer.Option(None, "--batch-size", "-b"),
    device: str | None = typer.Option(
        None, "--device", help="auto (default: cuda when there is one), cpu, cuda, ..."
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Discard chunks of an earlier, different run in --out."
    ),
    config: Path | None = ConfigOption,
    preset: str | None = PresetOption,
    overrides: list[str] | None = OverrideOption,
) -> None:
    """Encode a collection and write a searchable index (resumable: rerun to continue)."""
    from cultureclip.retrieval.index import IndexConfig, build_index
    from cultureclip.retrieval.laclip import parse_laclip_option

    with user_errors():
        flags = {
            "model": model,
            "data": data,
            "out": out,
            "split": split,
            "faiss.kind": faiss_kind,
            "batch_size": batch_size,
            "device": device,
        }
        cfg = stage_config(
            IndexConfig, "index", config=config, preset=preset, overrides=overrides, flags=flags
        )
        if laclip is not None:
            cfg.laclip = parse_laclip_option(laclip)
        summary = build_index(
            cfg,
            overwrite=overwrite,
            log=lambda message: console.print(f"[yellow]warning:[/] {message}"),
        )
    seconds = summary.timings["images_s"] + summary.timings["texts_s"]
    if not summary.finalized:
        console.print(
            f"[green]shard {cfg.shard or 'from RANK/WORLD_SIZE'} done[/] "
            f"({seconds:.1f}s); rank 0 writes the index"
        )
        return
    resumed = f", {summary.resumed_chunks} chunk(s) reused" if summary.resumed_chunks else ""
    failed = f", [yellow]{len(summary.failed)} image(s) skipped[/]" if summary.failed else ""
    if summary.downscaled:
        failed += f", {len(summary.downscaled)} over max_pixels indexed downscaled"
    console.print(
        f"[green]indexed[/] {summary.n_images} images and {summary.n_texts} texts "
        f"in {seconds:.1f}s{resumed}{failed} → {summary.out}"
    )


def search_command(
    index: Path = typer.Option(..., "--index", "-i", help="Index directory."),
    text: str | None = typer.Option(None, "--text", "-t", help="Text query → images."),
    image: Path | None = typer.Option(None, "--image", help="Image file query → texts."),
    k: int = typer.Option(10, "-k", min=1, help="Number of results."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    device: str | None = typer.Option(None, "--device"),
    precision: str = typer.Option("auto", "--precision", help="auto, fp32, bf16 or fp16."),
) -> None:
    """Search an index with a text (→ images) or an image (→ texts)."""
    if (text is None) == (image is None):
        fail("give exactly one of --text or --image")
    from cultureclip.data.collections import decode_image
    from cultureclip.retrieval.search import RetrievalIndex

    with user_errors():
        loaded = RetrievalIndex(index, device=device, precision=precision)
        if text is not None:
            hits = loaded.search_text(text, k)
        else:
            if not image.is_file():
                fail(f"image not found: {image}")
            hits = loaded.search_image(decode_image(image), k)
    if as_json:
        query = {"text": text} if text is not None else {"image": str(image)}
        results = [dataclasses.asdict(hit) for hit in hits]
        typer.echo(json.dumps({**query, "results": results}, ensure_ascii=False))
        return
    if text is not None:
        title, columns = f"images for “{text}”", ("rank", "score", "image id", "caption")
        rows = [(str(h.rank), f"{h.score:.4f}", h.image_id, (h.captions or [""])[0]) for h in hits]
    else:
        title, columns = f"texts for {image}", ("rank", "score", "text id", "text")
        rows = [(str(h.rank), f"{h.score:.4f}", h.text_id, h.text) for h in hits]
    print_table(title, columns, rows, out=Console())


def retrieval_eval_command(
    model: str | None = typer.Option(None, "--model", "-m", help="Model spec or saved dir."),
    data: str | None = typer.Option(None, "--data", "-d", help="Collection to evaluate on."),
    split: str | None = typer.Option(
        None, "--split", help="Split (default test; 'all' for the whole collection)."
    ),
    ks: str | None = typer.Option(None, "--k", help="LACLIP crop counts, e.g. 4,8,16."),
    scales: str | None = typer.Option(
        None, "--scales", help="Crop area ranges, e.g. 0.25-0.75,0.5-1.0."
    ),
    taus: str | None = typer.Option(None, "--tau", help="Softmax temperatures, e.g. 0.02,0.05."),
    weightings: str | None = typer.Option(
        None, "--weighting", help="softmax,uniform,relu,cosine (comma-separated)."
    ),
    betas: str | None = typer.Option(None, "--beta", help="Global blends, e.g. 0,0.3."),
    patches: bool = typer.Option(False, "--patches", help="Add the patch-token variant."),
    no_laclip: bool = typer.Option(False, "--global-only", help="Only the global row."),
    published: bool = typer.Option(
        False, "--published", help="Print the published CulTi rows below, for comparison."
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Write results.json, results.csv and config.yaml here."
    ),
    batch_size: int | None = typer.Option(None, "--batch-size", "-b"),
    device: str | None = typer.Option(None, "--device"),
    config: Path | None = ConfigOption,
    preset: str | None = PresetOption,
    overrides: list[str] | None = OverrideOption,
) -> None:
    """Recall@1/5/10 both ways and MR: global-only next to a sweep of LACLIP settings."""
    from cultureclip.retrieval.evaluate import RetrievalEvalConfig, run

    with user_errors():
        flags = {
            "model": model,
            "data": data,
            "split": split,
            "batch_size": batch_size,
            "device": device,
            "out": out,
            "ks": None if ks is None else [int(v) for v in _floats(ks, "--k")],
            "scales": None if scales is None else _ranges(scales),
            "taus": None if taus is None else _floats(taus, "--tau"),
            "weightings": None if weightings is None else _names(weightings),
            "betas": None if betas is None else _floats(betas, "--beta"),
            "patches": switch(patches),
            "global_only": switch(no_laclip),
        }
        cfg = stage_config(
            RetrievalEvalConfig,
            "retrieval-eval",
            config=config,
            preset=preset,
            overrides=overrides,
            flags=flags,
        )
        result = run(cfg)
    for bad in result.failed:
        console.print(f"[yellow]warning:[/] skipped image {bad['image_id']}: {bad['reason']}")
    Console().print(results_table(result, published=published))
    if cfg.out is not None:
        console.print(f"results written to {cfg.out}")


def _names(raw: str) -> list[str]:
    return [name.strip() for name in raw.split(",") if name.strip()]


def serve_command(
    index: Path = typer.Option(..., "--index", "-i", help="Index directory."),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8000, "--port"),
    max_upload_mb: float = typer.Option(8.0, "--max-upload-mb", help="Upload size limit."),
    workers: int = typer.Option(
        1, "--workers", min=1, help="Threads for model work (queries, uploads, explain)."
    ),
    max_pending: int = typer.Option(
        64, "--max-pending", min=0, help="Model jobs allowed to wait; more get 503."
    ),
    device: str | None = typer.Option(None, "--device"),
    precision: str = typer.Option("auto", "--precision", help="auto, fp32, bf16 or fp16."),
) -> None:
    """Serve the search page and JSON API over an index."""
    import uvicorn

    from cultureclip.retrieval.search import RetrievalIndex
    from cultureclip.retrieval.server import create_app

    with user_errors():
        loaded = RetrievalIndex(index, device=device, precision=precision)
        loaded.model_spec()  # a moved or changed model is an error now, not at first search
    console.print(
        f"search page on [bold]http://{host}:{port}/[/] (Ctrl-C to stop); the model "
        f"loads in the background, /api/health says when it is ready"
    )
    max_upload_bytes = int(max_upload_mb * 1024 * 1024)
    app = create_app(
        loaded, max_upload_bytes=max_upload_bytes, workers=workers, max_pending=max_pending
    )
    uvicorn.run(app, host=host, port=port, log_level="info")


def register(app: typer.Typer) -> None:
    app.command("index")(index_command)
    app.command("search")(search_command)
    app.command("retrieval-eval")(retrieval_eval_command)
    app.command("serve")(serve_command)
