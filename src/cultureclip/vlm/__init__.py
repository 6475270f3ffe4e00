"""Generative VLMs with transformers: chat formatting shared by scoring and fine-tuning.

- :mod:`cultureclip.vlm.chat` — loading a model + processor, building chat inputs with
  images (the same text the API path sends), and the answer-token mask for SFT;
- :mod:`cultureclip.vlm.train` — ``cultureclip train-vlm`` (SFT on the CultureVerse
  chat export, LoRA or full, with transformers' ``Trainer``).

Scoring lives in :mod:`cultureclip.eval.generative` (``hf-vlm:`` specs).
"""
