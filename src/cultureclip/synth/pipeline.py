"""Running the stages in order, and merging what they stored into a CulTwin dataset.

``run_synth`` runs the configured stages for one shard (all of it by default) and,
when it ran unsharded, merges. ``merge`` needs nothing but the stores on disk, so it
builds the same manifest whether the work was done in one process, by ``--shard i/n``
jobs, by accelerate processes or by Ray tasks.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cultureclip.core.errors import MissingInputError
from cultureclip.core.io import atomic_write_bytes, atomic_write_json, stable_hash
from cultureclip.core.store import ResultStore, Shard, write_failure_report
from cultureclip.data.cultwin import TwinRecord, write_cultwin
from cultureclip.synth.config import SynthConfig
from cultureclip.synth.context import StageReport, SynthContext
from cultureclip.synth.loaders import corpus_rows, load_concepts, load_twins, mine_keys
from cultureclip.synth.stages import STAGE_FUNCTIONS
from cultureclip.synth.stages.captions import side_captions
from cultureclip.synth.stages.filter import verdict_key
from cultureclip.synth.stages.images import ImageUnit, image_identity, image_units
from cultureclip.synth.stages.twins import no_twin_reasons

MANIFEST = "cultwin.parquet"

logger = logging.getLogger(__name__)


SUMMARY = "summary.json"


@dataclass
class MergeReport:
    records: int
    twins: int
    incomplete: int  # twin pairs (or caption slots) missing a caption, image or verdict
    rejected: int  # dropped by the quality filter
    manifest: Path
    failures: dict[str, Any] = field(default_factory=dict)
    concepts: int = 0  # concepts (photos, for a folder) that twins were looked for
    no_twin: int = 0  # concepts the miner found no twin for (a finished outcome)
    # why records are missing: "rejected: ..." / "incomplete: ..." / "no twin: ..." -> count
    reasons: dict[str, int] = field(default_factory=dict)

    def line(self) -> str:
        text = (
            f"merge: {self.records} records from {self.twins} twins ({self.rejected} rejected by the filter, "
            f"{self.incomplete} incomplete) -> {self.manifest}; open failures: {self.failures.get('open_failures', 0)}"
        )
        if self.concepts:
            text += f"; {self.concepts} concepts, {self.no_twin} without a twin"
        for why, count in sorted(self.reasons.items(), key=lambda item: (-item[1], item[0])):
            text += f"\n  {count} x {why}"
        if not self.records and not self.reasons:
            text += "\n  no twins yet: run the concepts and twins stages first"
        return text

    def summary(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "concepts": self.concepts,
            "twins": self.twins,
            "no_twin": self.no_twin,
            "rejected": self.rejected,
            "incomplete": self.incomplete,
            "reasons": dict(sorted(self.reasons.items())),
            "open_failures": self.failures.get("open_failures", 0),
            "open_failures_by_stage": self.failures.get("by_stage", {}),
            "manifest": self.manifest.name,
        }


@dataclass
class SynthReport:
    stages: list[StageReport]
    merge: MergeReport | None = None


def run_synth(
    config: SynthConfig,
    *,
    shard: Shard | None = None,
    merge_after: bool | None = None,
) -> SynthReport:
    """Runs ``config.stages`` for ``shard``; merges unless sharded.

    Under ``accelerate launch`` only the images stage uses every process; the LLM stages
    and the merge run on the main process while the others wait.
    """
    from accelerate import PartialState

    config.check_devices()
    shard = shard or Shard()
    ctx = SynthContext(config, shard, shard.tag)
    state = PartialState()
    if state.is_main_process:
        config.save(ctx.out_dir)
    reports = []
    for stage in config.stages:
        if stage == "images" or state.is_main_process:
            report = STAGE_FUNCTIONS[stage](ctx)
            reports.append(report)
            if state.is_main_process:
                logger.info("%s", report.line())
        state.wait_for_everyone()
    if merge_after is None:
        merge_after = shard.count == 1
    merged = merge(config) if merge_after and state.is_main_process else None
    if merged is not None:
        logger.info("%s", merged.line())
    return SynthReport(reports, merged)


def _copy_given(out_dir: Path, source: str) -> str:
    """Copies a corpus image into the dataset so the dataset directory stands alone."""
    path = Path(source)
    target = (
        out_dir / "images" / f"given-{stable_hash('given', source)}{path.suffix.lower() or '.png'}"
    )
    if not target.exists():
        if not path.exists():
            raise MissingInputError(f"corpus image not found: {path}")
        atomic_write_bytes(target, path.read_bytes())
    return target.relative_to(out_dir).as_posix()


def merge(config: SynthConfig) -> MergeReport:
    """Builds ``cultwin.parquet`` (+ ``cultwin.jsonl``) and the failure report from all stores.

    One record per twin and caption slot (``images.per=caption``) or per twin
    (``images.per=concept``); a record is kept only if both sides have an image and, unless
    ``filter.backend=none``, both images passed the judge.
    """
    state = _Merge(config)
    concepts, no_twin = _mining_outcomes(state.ctx, state.reasons)
    twins = load_twins(state.ctx)
    records = sorted(
        (record for twin in twins for record in state.twin_records(twin)), key=lambda r: r.id
    )
    out_dir = state.ctx.out_dir
    manifest = write_cultwin(out_dir / MANIFEST, records)
    write_cultwin(out_dir / "cultwin.jsonl", records)
    failures = write_failure_report(state.ctx.work_dir, out_dir)
    report = MergeReport(
        len(records),
        len(twins),
        state.incomplete,
        state.rejected,
        manifest,
        failures,
        concepts=concepts,
        no_twin=no_twin,
        reasons=state.reasons,
    )
    atomic_write_json(out_dir / SUMMARY, report.summary())
    return report


class _Merge:
    """What the merge reads (stores, identities) and counts (why records are missing)."""

    def __init__(self, config: SynthConfig) -> None:
        from cultureclip.synth.judges import create_judge

        self.config = config
        self.ctx = ctx = SynthContext(config)
        self.identity = image_identity(ctx)
        self.judge_identity = create_judge(config.placed("filter"), config.placed("llm")).identity()
        self.use_filter = config.filter.backend != "none"
        self.captions = ResultStore(ctx.work_dir, "captions")
        self.images = ResultStore(ctx.work_dir, "images")
        self.verdicts = ResultStore(ctx.work_dir, "filter")
        self.grouped = config.concepts.group_column() != "country"
        self.incomplete = self.rejected = 0
        self.reasons: Counter[str] = Counter()

    def unit_state(self, unit: ImageUnit) -> tuple[str | None, dict[str, Any] | None]:
        """(image path in the dataset, verdict) of a unit; None where not there yet."""
        if unit.given is not None:
            path: str | None = _copy_given(self.ctx.out_dir, unit.given)
        else:
            stored = self.images.get(unit.key)
            path = stored["path"] if stored else None
        verdict = (
            self.verdicts.get(verdict_key(unit, self.judge_identity))
            if self.use_filter
            else {"passed": True, "scores": {}}
        )
        return path, verdict

    def twin_records(self, twin: Any) -> list[TwinRecord]:
        sides = []
        for side in (twin.pos, twin.neg):
            texts = side_captions(self.ctx, side, self.captions)
            units = image_units(self.ctx, side, texts, self.identity) if texts else []
            sides.append((texts or [], units))
        (pos_texts, pos_units), (neg_texts, neg_units) = sides
        if not pos_units or not neg_units:
            self.incomplete += 1
            self.reasons["incomplete: captions not written yet (captions stage)"] += 1
            return []
        records = []
        for slot in range(min(len(pos_units), len(neg_units))):
            pair = (pos_units[slot], neg_units[slot])
            states = [self.unit_state(unit) for unit in pair]
            if self._kept(states):
                records.append(self._record(twin, slot, pair, states, (pos_texts, neg_texts)))
        return records

    def _kept(self, states: list[tuple[str | None, dict[str, Any] | None]]) -> bool:
        """Both images there, judged and passed; else counts why not."""
        (pos_path, pos_verdict), (neg_path, neg_verdict) = states
        if pos_path is None or neg_path is None:
            why = "incomplete: image not rendered yet (images stage)"
        elif pos_verdict is None or neg_verdict is None:
            why = "incomplete: image not judged yet (filter stage)"
        elif pos_verdict["passed"] and neg_verdict["passed"]:
            return True
        else:
            self.rejected += 1
            failed = [
                name
                for name, verdict in (("photo", pos_verdict), ("twin", neg_verdict))
                if not verdict["passed"]
            ]
            backend = self.config.filter.backend
            self.reasons[f"rejected by the {backend} filter: {' and '.join(failed)} failed"] += 1
            return False
        self.incomplete += 1
        self.reasons[why] += 1
        return False

    def _record(
        self,
        twin: Any,
        slot: int,
        pair: tuple[ImageUnit, ImageUnit],
        states: list[tuple[Any, Any]],
        texts: tuple[list[str], list[str]],
    ) -> TwinRecord:
        (pos_unit, neg_unit), ((pos_path, pos_verdict), (neg_path, neg_verdict)) = pair, states
        # per=caption: the record holds the caption its image was drawn from;
        # per=concept (or a given image): every caption of the concept.
        per_caption = (
            self.config.images.per == "caption"
            and pos_unit.given is None
            and neg_unit.given is None
        )
        pos_captions = [pos_unit.caption] if per_caption else texts[0]
        neg_captions = [neg_unit.caption] if per_caption else texts[1]
        provenance = {
            **twin.provenance,
            "images": self.identity
            if pos_unit.given is None or neg_unit.given is None
            else {"backend": "given"},
            "pos_image_seed": pos_unit.seed,
            "neg_image_seed": neg_unit.seed,
            "method": twin.method,
            "similarity": twin.similarity,
        }
        groups = (
            {"group": twin.pos.twin_group, "neg_group": twin.neg.twin_group} if self.grouped else {}
        )
        return TwinRecord(
            id=f"{twin.key}-{slot:02d}",
            country=twin.pos.country,
            category=twin.pos.category,
            pos_concept=twin.pos.concept,
            pos_context=twin.pos.context,
            pos_features=twin.pos.features,
            pos_captions=list(pos_captions),
            pos_image=pos_path,
            neg_concept=twin.neg.concept,
            neg_context=twin.neg.context,
            neg_features=twin.neg.features,
            neg_captions=list(neg_captions),
            neg_image=neg_path,
            neg_country=twin.neg.country,
            quality={
                "judge": self.judge_identity,
                "pos": pos_verdict["scores"],
                "neg": neg_verdict["scores"],
            },
            source=f"cultureclip-synth:{twin.provenance.get('source', '')}+{twin.method}",
            provenance=json.dumps(provenance, sort_keys=True, ensure_ascii=False),
            **groups,
        )


def _mining_outcomes(ctx: SynthContext, reasons: Counter[str]) -> tuple[int, int]:
    """(concepts mined, concepts without a twin) of a mining run; (0, 0) otherwise."""
    if ctx.config.concepts.source in ("corpus", "folder"):
        left_out: list[tuple[str, str]] = []
        corpus_rows(ctx, left_out)
        if left_out:
            reasons["left out: not a readable image"] += len(left_out)
    if ctx.config.twins.method != "mine":
        return 0, 0
    concepts = load_concepts(ctx, all_shards=True)
    stored = ResultStore(ctx.work_dir, "twins")
    found = no_twin_reasons(stored.get(key) for key in mine_keys(ctx, concepts).values())
    reasons.update({f"no twin: {why}": n for why, n in found.items()})
    return len(concepts), found.total()


#: the stage's entry point under the name every stage uses
run = run_synth
