"""Generative VLMs with transformers: :mod:`~cultureclip.vlm.chat` (loading, chat inputs
shared by scoring and fine-tuning) and :mod:`~cultureclip.vlm.train` (``cultureclip
train-vlm``). Scoring lives in :mod:`cultureclip.models.generative` (``hf-vlm:`` specs)."""
