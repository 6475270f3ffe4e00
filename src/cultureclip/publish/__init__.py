"""Publishable artefacts: self-contained model folders, model and dataset cards, hub uploads.

- :func:`export_model` / :func:`export_vlm`: a trained model as a folder its own library
  loads without cultureclip or the base checkpoint (LoRA merged, the adapter kept in
  ``adapter/``), with a model card (``README.md``).
- :func:`write_cultwin_dataset`: a CulTwin set as a hub dataset (Parquet with embedded
  ``datasets.Image`` columns and a dataset card) that ``datasets.load_dataset(folder)`` reads.
- :func:`push`: ``cultureclip push FOLDER REPO_ID``: detects what the folder holds, writes
  its card and uploads it in one commit with ``huggingface_hub``.
"""

from cultureclip.publish.cards import read_eval_results
from cultureclip.publish.dataset import write_cultwin_dataset
from cultureclip.publish.export import export_model, export_vlm
from cultureclip.publish.push import PushResult, push

__all__ = [
    "PushResult",
    "export_model",
    "export_vlm",
    "push",
    "read_eval_results",
    "write_cultwin_dataset",
]
