"""Config of the synth stage: one pydantic tree, saved as ``config.yaml`` next to the output."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from cultureclip.core.config import Config, out_field
from cultureclip.core.device import DeviceSettings
from cultureclip.core.errors import InputError
from cultureclip.core.llm.settings import LLMSettings

STAGES = ("concepts", "twins", "captions", "images", "filter")


class ConceptSettings(Config):
    # topdown: an LLM writes concepts per country x category;
    # bottomup: an LLM judges the titles of an existing image-text corpus (strict yes/no);
    # corpus: a labelled corpus is taken as is (no LLM), e.g. for the twin miner;
    # folder: a folder of labelled photos (``<group>/<image>`` or a labels file), each photo
    # its own concept record (``cultureclip synth --from-folder DIR``).
    source: Literal["topdown", "bottomup", "corpus", "folder"] = "topdown"
    countries: list[str] | None = None  # ISO 3166-1 alpha-2 codes; None = the whole taxonomy
    categories: list[str] | None = None  # None = the 8 CulTwin categories
    per_pair: int = Field(3, ge=1)  # concepts per (country, category), top-down
    corpus: str | None = None  # JSONL or CSV for bottomup/corpus
    folder: str | None = None  # photo folder for source=folder
    # The column whose values twins must differ in (mining): ``country``, or any column of
    # the corpus / labels file naming a culture, group, region or period. None: ``country``
    # for a corpus, ``group`` for a folder (of ``<group>/<image>`` sub-folders: their names).
    group_by: str | None = None
    # YAML with per-group text (concept, context, features, country, category); for a
    # folder, ``groups.yaml`` inside it is read when this is not set.
    groups: str | None = None
    country: str | None = None  # corpus/folder: country of rows that name none (ISO2)
    category: str | None = None  # corpus/folder: category of rows that name none
    prompt: str = "concepts"
    bottomup_prompt: str = "bottomup"
    temperature: float | None = 0.7

    def group_column(self) -> str:
        """The column twins are mined across (see ``group_by``)."""
        if self.group_by:
            return self.group_by
        return "group" if self.source == "folder" else "country"


class TwinSettings(DeviceSettings):
    """``device``/``precision``: where the twin miner embeds images (default: synth's own)."""

    method: Literal["llm", "mine"] = "llm"
    prompt: str = "twins"
    temperature: float | None = 0.7
    # twin miner: model spec for image embeddings (any ``create_model`` spec)
    mine_model: str = "lite:en"
    mine_batch_size: int = Field(32, ge=1)


class CaptionSettings(Config):
    n: int = Field(10, ge=1)
    max_words: int = Field(15, ge=2)  # every caption must have fewer words than this
    # Each caption must mention at least one word of the key visual features.
    require_features: bool = True
    prompt: str = "captions"
    temperature: float | None = 0.9
    # Captions written from these templates instead of by the LLM (no server needed):
    # ``{concept}``, ``{group}``, ``{country_name}``, ``{category}``, ``{features}``,
    # ``{context}``; a template naming an empty field is left out for that concept.
    templates: list[str] | None = None


class ImageSettings(DeviceSettings):
    """``precision`` is the dtype a diffusers pipeline loads in (``auto``: fp16 on a GPU)."""

    backend: str = "diffusers"  # a name in ``cultureclip.synth.images.IMAGE_BACKENDS``
    per: Literal["caption", "concept"] = "caption"
    model: str = "stabilityai/stable-diffusion-3.5-large-turbo"
    size: int = Field(512, ge=8)
    steps: int = Field(4, ge=1)
    guidance: float = 0.0
    batch_size: int = Field(16, ge=1)
    negative_prompt: str | None = None


class FilterSettings(DeviceSettings):
    """``device``/``precision``: where the clipscore judge embeds (default: synth's own)."""

    backend: str = "vlm"  # vlm | clipscore | none
    # vlm judge: its own chat model (None: the main llm settings)
    llm: LLMSettings | None = None
    prompt: str = "judge"
    # clipscore: any ``create_model`` spec and a threshold on 2.5 * max(cos, 0)
    model: str = "hf:openai/clip-vit-base-patch32"
    threshold: float = 0.5
    batch_size: int = Field(32, ge=1)


#: the sections that place a model, each a :class:`DeviceSettings`
DEVICE_SECTIONS = ("llm", "twins", "images", "filter", "filter.llm")


class SynthConfig(DeviceSettings):
    """The whole synth pipeline; ``cultureclip synth --config F --set key=value``.

    ``device`` and ``precision`` are every model's of the run (chat model, text-to-image,
    twin miner, judges) unless a section sets its own (``images.device=cuda:1``)."""

    out: str = out_field("runs/cultwin", "out_dir", "output_dir")
    seed: int = 0
    stages: list[str] = Field(default_factory=lambda: list(STAGES))
    llm: LLMSettings = LLMSettings()
    concepts: ConceptSettings = ConceptSettings()
    twins: TwinSettings = TwinSettings()
    captions: CaptionSettings = CaptionSettings()
    images: ImageSettings = ImageSettings()
    filter: FilterSettings = FilterSettings()
    progress: bool = True

    @property
    def out_dir(self) -> str:
        """The former name of ``out``."""
        return self.out

    def placed(self, section: str) -> Any:
        """The settings of ``section`` (``llm``, ``twins``, ``images``, ``filter``,
        ``filter.llm``) with this run's ``device``/``precision`` where it leaves them
        ``auto``: what its model is built from."""
        settings: Any = self
        for part in section.split("."):
            settings = getattr(settings, part) or self.llm  # filter.llm None: the main llm
        update = {
            k: getattr(self, k) for k in ("device", "precision") if getattr(settings, k) == "auto"
        }
        if section == "filter" and settings.llm is not None:
            update["llm"] = self.placed("filter.llm")
        return settings.model_copy(update=update)

    def check_devices(self) -> None:
        """A device this machine lacks is a one-line error before any work."""
        from cultureclip.core.device import resolve_device

        for section in DEVICE_SECTIONS:
            resolve_device(self.placed(section).device)

    @field_validator("stages")
    @classmethod
    def _known_stages(cls, value: list[str]) -> list[str]:
        unknown = [s for s in value if s not in STAGES]
        if unknown:
            raise InputError(f"unknown stage(s) {unknown}; choose from {list(STAGES)}")
        # Stages always run in pipeline order, whatever order they were listed in.
        return [s for s in STAGES if s in value]


#: Caption templates of ``--from-folder`` runs (no LLM needed); see ``CaptionSettings.templates``.
FOLDER_TEMPLATES = [
    "a photo of {concept}",
    "{concept}, with {features}",
    "{concept} from {country_name}",
    "{concept}, {context}",
]

#: What ``cultureclip synth --from-folder DIR`` starts from; a ``--config`` file and
#: ``--set`` overrides are applied on top, key by key.
FOLDER_DEFAULTS: dict[str, Any] = {
    "concepts": {"source": "folder"},
    "twins": {"method": "mine", "mine_model": "lite:en"},
    "captions": {"templates": FOLDER_TEMPLATES},
    "images": {"backend": "glyph", "per": "concept"},
    "filter": {"backend": "none", "model": "lite:en", "threshold": 0.0},
}
