"""Generative VLM fine-tuning with TRL: :mod:`~cultureclip.vlm.train` (``cultureclip
train-vlm``). Loading and chat inputs, shared with scoring, live in
:mod:`cultureclip.models.chat`; scoring in :mod:`cultureclip.models.generative` (``hf-vlm:`` specs)."""
