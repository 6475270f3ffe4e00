"""An emoji-and-flag CulTwin world built from real artwork that ships in PyPI packages.

Concepts come from three sources:
- ``culture``: emoji with a clear cultural home (``culture_emoji.csv``: Japanese castle,
  kimono, sari, dumpling, fortune cookie ...), with hand-written key visual features;
- ``flag``: every country flag the OpenMoji font draws, named from the ISO table,
  its key visual features read off the artwork (dominant colours, stripe direction);
- ``general``: the remaining single-code-point emoji, named by Unicode/CLDR names —
  the culture-neutral part used to align the towers and to check general ability.

Images are OpenMoji glyphs (CC BY-SA 4.0) rendered with Pillow. Captions come from a
template writer that always keeps the key visual features, as CulTwin's LLM captions do.
"""

from __future__ import annotations

import csv
import random
import shutil
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

from PIL import Image
from pydantic import Field

from cultureclip.core.config import Config
from cultureclip.core.io import atomic_path, atomic_write_json, read_json, write_jsonl
from cultureclip.core.progress import progress as task_progress
from cultureclip.data.cultwin import TwinRecord, write_cultwin

REGIONAL_INDICATOR_A = 0x1F1E6
# A colour no flag uses, so the flag's own white survives background removal.
KEY_BACKGROUND = (255, 0, 255)

BASIC_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (200, 30, 40),
    "dark red": (120, 20, 30),
    "orange": (240, 130, 30),
    "yellow": (250, 210, 40),
    "green": (30, 140, 60),
    "light blue": (100, 170, 230),
    "blue": (20, 60, 160),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}


@dataclass
class Concept:
    key: str  # the emoji sequence that draws it
    name: str
    country: str  # ISO 3166-1 alpha-2, "" for culture-neutral concepts
    category: str
    features: str
    kind: str  # culture | flag | general
    country_name: str = ""
    image: str = ""  # path relative to the world directory
    captions: list[str] = field(default_factory=list)


def flag_to_iso2(sequence: str) -> str | None:
    """'🇮🇩' → 'ID'; None if the sequence is not a regional-indicator pair."""
    codes = [ord(c) - REGIONAL_INDICATOR_A for c in sequence]
    if len(codes) == 2 and all(0 <= c < 26 for c in codes):
        return "".join(chr(ord("A") + c) for c in codes)
    return None


def culture_concepts() -> list[Concept]:
    from cultureclip.data.taxonomy import country

    text = (
        resources.files("cultureclip.quickstart").joinpath("culture_emoji.csv").read_text("utf-8")
    )
    concepts = []
    for row in csv.DictReader(text.splitlines()):
        info = country(row["country"])
        concepts.append(
            Concept(
                key=row["emoji"],
                name=row["concept"],
                country=row["country"],
                category=row["category"],
                features=row["features"],
                kind="culture",
                country_name=info.name if info else row["country"],
            )
        )
    return concepts


def describe_flag(image: Image.Image, max_colours: int = 3) -> str:
    """Key visual features of a flag read off its artwork: main colours and stripe direction.

    ``image`` must be rendered on :data:`KEY_BACKGROUND` so the background can be dropped.
    """
    import numpy as np

    pixels = np.asarray(image.convert("RGB"), dtype=np.int32)
    background = np.all(np.abs(pixels - np.array(KEY_BACKGROUND)) < 60, axis=-1)
    flag_mask = ~background
    if flag_mask.sum() == 0:
        return "a flag"
    # The inner part of the flag: OpenMoji's black outline would count as a colour and
    # read as a band on every side.
    ys, xs = np.nonzero(flag_mask)
    top, bottom, left, right = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    inset_y, inset_x = (bottom - top) // 8, (right - left) // 8
    box = pixels[top + inset_y : bottom - inset_y, left + inset_x : right - inset_x]
    inner = ~background[top + inset_y : bottom - inset_y, left + inset_x : right - inset_x]
    names = np.array(list(BASIC_COLOURS))
    palette = np.array(list(BASIC_COLOURS.values()))
    flat = box[inner]
    nearest = ((flat[:, None, :] - palette[None, :, :]) ** 2).sum(-1).argmin(1)
    counts = Counter(names[nearest].tolist())
    total = sum(counts.values()) or 1
    colours = [name for name, n in counts.most_common(max_colours) if n / total > 0.08]
    box = box.astype(np.float32)
    row_change = np.abs(np.diff(box.mean(axis=1), axis=0)).sum()
    col_change = np.abs(np.diff(box.mean(axis=0), axis=0)).sum()
    if len(colours) <= 1:
        layout = "plain field"
    elif row_change > 1.5 * col_change:
        layout = "horizontal bands"
    elif col_change > 1.5 * row_change:
        layout = "vertical bands"
    else:
        layout = "an emblem or pattern"
    colour_text = (
        ", ".join(colours[:-1]) + f" and {colours[-1]}"
        if len(colours) > 1
        else (colours or ["one colour"])[0]
    )
    return f"{colour_text} with {layout}"


def flag_concepts(size: int = 96) -> list[Concept]:
    import emoji

    from cultureclip.data.glyphs import glyph_available, render_glyph
    from cultureclip.data.taxonomy import country

    concepts = []
    for sequence in emoji.EMOJI_DATA:
        iso2 = flag_to_iso2(sequence)
        if iso2 is None:
            continue
        info = country(iso2)
        if info is None or not glyph_available(sequence):
            continue  # EU, UN and retired codes have no country row
        features = describe_flag(render_glyph(sequence, size=size, background=KEY_BACKGROUND))
        concepts.append(
            Concept(
                key=sequence,
                name=f"flag of {info.name}",
                country=iso2,
                category="Symbol",
                features=features,
                kind="flag",
                country_name=info.name,
            )
        )
    return sorted(concepts, key=lambda c: c.country)


def general_concepts(exclude: set[str]) -> list[Concept]:
    """Single-code-point, fully-qualified emoji that are not culture concepts or flags."""
    import emoji

    from cultureclip.data.glyphs import glyph_available

    concepts = []
    for sequence, data in emoji.EMOJI_DATA.items():
        if data.get("status") != emoji.STATUS["fully_qualified"] or sequence in exclude:
            continue
        if len(sequence.replace("\ufe0f", "")) != 1 or flag_to_iso2(sequence):
            continue
        if not glyph_available(sequence):
            continue
        name = data["en"].strip(":").replace("_", " ")
        unicode_name = unicodedata.name(sequence[0], "").lower()
        features = unicode_name if unicode_name and unicode_name != name.lower() else ""
        concepts.append(
            Concept(
                key=sequence,
                name=name,
                country="",
                category="General",
                features=features,
                kind="general",
            )
        )
    return sorted(concepts, key=lambda c: c.key)


def write_captions(concept: Concept, n: int = 5, seed: int = 0) -> list[str]:
    """Template captions (< 15 words each) that keep the key visual features.

    Culture concepts and flags get contextual sentences only (name, features, country),
    as CulTwin's LLM captions are: the bare concept name is what the concept term of the
    CultureCLIP loss adds. General emoji also get their bare name, as alt-text would.
    """
    name, features, place = concept.name, concept.features, concept.country_name
    if concept.kind == "general":
        templates = [
            "{name}",
            "an emoji of {name}",
            "{name}: {features}" if features else "a picture of {name}",
            "{features}, the {name}" if features else "the {name}, drawn simply",
            "an icon showing {name}",
        ]
    elif concept.kind == "flag":
        templates = [
            "an emoji of the {name}",
            "the {name}: {features}",
            "{features}, the national {name}",
            "a drawing of the {name}, {features}",
            "the {name}, a national symbol",
            "an icon of the {name}",
        ]
    else:
        templates = [
            "an emoji of {name} from {place}",
            "{name}: {features}",
            "{features}, the {name} of {place}",
            "a drawing of {name}, typical of {place}",
            "{name} from {place}, with {features}",
            "an icon of {name}, {features}",
        ]
    captions = [t.format(name=name, features=features, place=place) for t in templates]
    captions = [" ".join(c.split()[:14]) for c in captions]
    rng = random.Random(f"{seed}:{concept.key}")
    rng.shuffle(captions)
    return captions[:n]


# ------------------------------------------------------------------------ world building
WORLD_MANIFEST = "world.json"
#: bump when the world's content changes for the same settings (captions, mining, split)
WORLD_VERSION = 5


class WorldSettings(Config):
    """How the emoji-and-flag world is drawn, mined and split (part of the quickstart config)."""

    image_size: int = Field(128, ge=32, description="side of the rendered glyph images")
    #: model whose image features mine the twins (pretrained towers, before any tuning)
    mining_model: str = "lite:en?image_size=128"
    #: fraction of twin pairs held out for evaluation (whole connected groups of twins)
    twin_test_fraction: float = Field(0.3, gt=0, lt=1)
    #: fraction of general emoji held out for the zero-shot check
    general_test_fraction: float = Field(0.2, gt=0, lt=1)
    captions_per_concept: int = Field(5, ge=1)
    #: keep at most this many concepts of each kind (None: all) — for small test runs
    max_general: int | None = Field(None, ge=10)
    max_flags: int | None = Field(None, ge=4)
    max_culture: int | None = Field(None, ge=4)
    seed: int = 0


@dataclass
class World:
    """Paths and counts of a built world (``world.json`` in its directory)."""

    root: Path
    twins_train: Path  # CulTwin directory
    twins_test: Path  # CulTwin directory: pairs of concepts never seen in fine-tuning
    twins_train_views: Path  # CulTwin directory: the training pairs in new renderings
    #: each twin directory's ``images/`` is also a caption folder (unique images) to index
    general_train: Path  # caption folder
    general_test: Path  # labelled list (image,label CSV)
    counts: dict[str, int]

    @classmethod
    def load(cls, root: Path) -> World:
        manifest = read_json(root / WORLD_MANIFEST)
        return cls(
            root=root,
            twins_train=root / "twins-train",
            twins_test=root / "twins-test",
            twins_train_views=root / "twins-train-views",
            general_train=root / "general-train",
            general_test=root / "general-test" / "labels.csv",
            counts=manifest["counts"],
        )


def _file_name(concept: Concept) -> str:
    return "-".join(f"{ord(c):x}" for c in concept.key if c != "\ufe0f") + ".png"


def render_view(key: str, size: int, seed: int | str) -> Image.Image:
    """Another look at a glyph: smaller, slightly rotated, off-centre, on a pastel ground.

    The held-out views of training concepts test recognition of a fine-tuned concept
    in a rendering the model never saw.
    """
    from cultureclip.data.glyphs import render_glyph

    rng = random.Random(f"view:{seed}:{key}")
    glyph = render_glyph(key, size=size, background=(0, 0, 0, 0))
    glyph = glyph.rotate(rng.uniform(-15, 15), resample=Image.Resampling.BICUBIC)
    side = round(size * rng.uniform(0.7, 0.85))
    glyph = glyph.resize((side, side), Image.Resampling.LANCZOS)
    ground = tuple(rng.randint(200, 250) for _ in range(3))
    view = Image.new("RGBA", (size, size), (*ground, 255))
    offset = (rng.randint(0, size - side), rng.randint(0, size - side))
    view.alpha_composite(glyph, offset)
    return view.convert("RGB")


def _subsample(concepts: list[Concept], limit: int | None, seed: int) -> list[Concept]:
    if limit is None or len(concepts) <= limit:
        return concepts
    chosen = random.Random(seed).sample(range(len(concepts)), limit)
    return [concepts[i] for i in sorted(chosen)]


def _twin_groups(pairs: Sequence[tuple[int, int]]) -> list[list[int]]:
    """Indices into ``pairs`` grouped by connected component of the concept graph."""
    parent: dict[int, int] = {}

    def find(node: int) -> int:
        parent.setdefault(node, node)
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for a, b in pairs:
        parent[find(a)] = find(b)
    groups: dict[int, list[int]] = {}
    for index, (a, _) in enumerate(pairs):
        groups.setdefault(find(a), []).append(index)
    return sorted(groups.values(), key=lambda group: group[0])


def split_twins(
    pairs: Sequence[tuple[int, int]], test_fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """(train, test) indices into ``pairs`` such that no concept is in both splits.

    Whole connected groups of twins go to one side, so a held-out concept was never
    seen in fine-tuning, not even as somebody else's twin.
    """
    groups = _twin_groups(pairs)
    random.Random(seed).shuffle(groups)
    target = round(test_fraction * len(pairs))
    train: list[int] = []
    test: list[int] = []
    for group in groups:
        (test if len(test) + len(group) <= target else train).extend(group)
    return sorted(train), sorted(test)


def _twin_record(
    pos: Concept, neg: Concept, similarity: float, images: dict[str, str]
) -> TwinRecord:
    return TwinRecord(
        id=f"{_file_name(pos)[:-4]}~{_file_name(neg)[:-4]}",
        country=pos.country,
        category=pos.category,
        pos_concept=pos.name,
        pos_context=f"{pos.name}, from {pos.country_name}",
        pos_features=pos.features,
        pos_captions=pos.captions,
        pos_image=images[pos.key],
        neg_concept=neg.name,
        neg_context=f"{neg.name}, from {neg.country_name}",
        neg_features=neg.features,
        neg_captions=neg.captions,
        neg_image=images[neg.key],
        neg_country=neg.country,
        quality={"visual_similarity": round(similarity, 4)},
        source="openmoji",
    )


def build_world(
    directory: str | Path, settings: WorldSettings | None = None, *, progress: bool = True
) -> World:
    """Renders, mines, captions and splits the world into ``directory``; returns its paths.

    Resumable: a finished world with the same settings is reused as it is; anything
    else is rebuilt (it takes seconds). ``world.json`` is written last, so its presence
    means a complete world.
    """
    settings = settings or WorldSettings()
    root = Path(directory)
    wanted = {"version": WORLD_VERSION, "settings": settings.model_dump(mode="json")}
    if (root / WORLD_MANIFEST).exists():
        manifest = read_json(root / WORLD_MANIFEST)
        if {k: manifest.get(k) for k in wanted} == wanted:
            return World.load(root)
    staging = root.with_name(root.name + ".partial")
    for stale in (root, staging):
        if stale.exists():
            shutil.rmtree(stale)
    glyph_dir = staging / "glyphs"
    glyph_dir.mkdir(parents=True)

    all_culture = culture_concepts()
    culture = _subsample(all_culture, settings.max_culture, settings.seed)
    flags = _subsample(flag_concepts(settings.image_size), settings.max_flags, settings.seed)
    # Culture emoji left out of a small world stay out of the general part too.
    general = _subsample(
        general_concepts({c.key for c in all_culture}), settings.max_general, settings.seed
    )
    concepts = culture + flags + general
    _render(concepts, glyph_dir, settings, progress)
    twins = _TwinPairs.mine(culture + flags, glyph_dir, settings)
    train_pairs, test_pairs = split_twins(twins.pairs, settings.twin_test_fraction, settings.seed)
    general_train, general_test = _write_general(
        staging, general, glyph_dir, settings.seed, settings.general_test_fraction
    )
    split_of = {c.key: "train" for c in twins.concepts(train_pairs)}
    split_of.update({c.key: "test" for c in twins.concepts(test_pairs)})
    split_of.update({c.key: "train" for c in general_train})
    split_of.update({c.key: "test" for c in general_test})
    write_jsonl(
        staging / "concepts.jsonl",
        [{**asdict(c), "split": split_of.get(c.key, "unused")} for c in concepts],
    )
    counts = {
        "culture_concepts": len(culture),
        "flag_concepts": len(flags),
        "general_concepts": len(general),
        "twin_pairs": len(twins.pairs),
        "twin_pairs_train": twins.write(staging / "twins-train", train_pairs),
        "twin_pairs_test": twins.write(staging / "twins-test", test_pairs),
        "twin_pairs_train_views": twins.write(staging / "twins-train-views", train_pairs, True),
        "general_train": len(general_train),
        "general_test": len(general_test),
    }
    atomic_write_json(staging / WORLD_MANIFEST, {**wanted, "counts": counts})
    staging.rename(root)
    return World.load(root)


def _render(
    concepts: list[Concept], glyph_dir: Path, settings: WorldSettings, progress: bool
) -> None:
    """Each concept's glyph image and captions."""
    from cultureclip.data.glyphs import render_glyph

    with task_progress("rendering OpenMoji glyphs", len(concepts), enabled=progress) as task:
        for concept in concepts:
            concept.image = _file_name(concept)
            render_glyph(concept.key, size=settings.image_size).save(glyph_dir / concept.image)
            concept.captions = write_captions(
                concept, n=settings.captions_per_concept, seed=settings.seed
            )
            task.update(advance=1)


@dataclass
class _TwinPairs:
    """Twin pairs mined among ``candidates``: (a, b) indices and their image similarity."""

    candidates: list[Concept]
    pairs: list[tuple[int, int]]
    similarity: dict[tuple[int, int], float]
    glyph_dir: Path
    settings: WorldSettings

    @classmethod
    def mine(
        cls, candidates: list[Concept], glyph_dir: Path, settings: WorldSettings
    ) -> _TwinPairs:
        """Twins: nearest concept of another country in the same category, by image features."""
        from cultureclip.models.registry import create_model
        from cultureclip.synth.mining import embed_concepts, mine_twins

        model = create_model(settings.mining_model)
        embeddings = embed_concepts(
            model,
            [[lambda c=c: Image.open(glyph_dir / c.image).convert("RGB")] for c in candidates],
        )
        similarity: dict[tuple[int, int], float] = {}
        for twin in mine_twins(candidates, embeddings):
            pair = (min(twin.pos, twin.neg), max(twin.pos, twin.neg))
            similarity[pair] = max(similarity.get(pair, -1.0), twin.similarity)
        return cls(candidates, sorted(similarity), similarity, glyph_dir, settings)

    def concepts(self, indices: list[int]) -> list[Concept]:
        return [self.candidates[i] for index in indices for i in self.pairs[index]]

    def write(self, out: Path, indices: list[int], views: bool = False) -> int:
        """A CulTwin set of the pairs at ``indices`` in ``out`` (new renderings with ``views``)."""
        (out / "images").mkdir(parents=True)
        images: dict[str, str] = {}
        records = []
        for index in indices:
            a, b = self.pairs[index]
            pos, neg = self.candidates[a], self.candidates[b]
            for concept in (pos, neg):
                if concept.key not in images:
                    images[concept.key] = f"images/{concept.image}"
                    if views:
                        size, seed = self.settings.image_size, self.settings.seed
                        render_view(concept.key, size, seed).save(out / images[concept.key])
                    else:
                        shutil.copyfile(self.glyph_dir / concept.image, out / images[concept.key])
            records.append(_twin_record(pos, neg, self.similarity[(a, b)], images))
        write_cultwin(out / "cultwin.jsonl", records)
        # The same images once each, with their captions: a caption folder to index.
        by_key = {c.key: c for c in self.candidates}
        write_jsonl(
            out / "images" / "captions.jsonl",
            [
                {"image": Path(image).name, "captions": by_key[key].captions}
                for key, image in images.items()
            ],
        )
        return len(records)


def _write_general(
    staging: Path, general: list[Concept], glyph_dir: Path, seed: int, test_fraction: float
) -> tuple[list[Concept], list[Concept]]:
    """General emoji: the culture-neutral part, split by concept for the zero-shot check."""
    order = list(range(len(general)))
    random.Random(seed).shuffle(order)
    test_ids = set(order[: round(test_fraction * len(general))])
    general_train = [c for i, c in enumerate(general) if i not in test_ids]
    general_test = [c for i, c in enumerate(general) if i in test_ids]
    for name, part in (("general-train", general_train), ("general-test", general_test)):
        (staging / name / "images").mkdir(parents=True)
        for concept in part:
            shutil.copyfile(glyph_dir / concept.image, staging / name / "images" / concept.image)
    write_jsonl(
        staging / "general-train" / "captions.jsonl",
        [{"image": f"images/{c.image}", "captions": c.captions} for c in general_train],
    )
    with (
        atomic_path(staging / "general-test" / "labels.csv") as tmp,
        open(tmp, "w", newline="", encoding="utf-8") as handle,
    ):
        writer = csv.writer(handle)
        writer.writerow(["image", "label"])
        writer.writerows([f"images/{c.image}", c.name] for c in general_test)
    return general_train, general_test
