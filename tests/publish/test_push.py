"""``cultureclip push`` against a local stand-in of the hub's HTTP API, never the network."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cultureclip.cli.main import app
from tests.publish.hub_server import TOKEN, HubServer, hub_server

runner = CliRunner()


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """The stand-in hub as ``HF_ENDPOINT``, a token that it accepts, offline mode off."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no token of the machine's
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    with hub_server() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        yield server


@pytest.fixture(scope="module")
def exported(tiny_hf_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A self-contained tiny CLIP folder (as a training run's export/ is)."""
    from cultureclip.models import create_model
    from cultureclip.publish import export_model

    return export_model(
        create_model(f"hf:{tiny_hf_dirs['clip']}"),
        tmp_path_factory.mktemp("run") / "export",
        base="hf:openai/clip-vit-base-patch32",
    )


def _eval_folder(root: Path) -> Path:
    """An eval output folder as ``cultureclip eval`` writes it (result.json + predictions)."""
    folder = root / "twins" / "tiny-clip"
    folder.mkdir(parents=True)
    result = {
        "benchmark": "twins",
        "model": "tiny-clip",
        "task": "twin_accuracy",
        "metrics": {"accuracy": 62.5, "image_to_text": 75.0},
        "n": 8,
        "data": "runs/toy/cultwin.jsonl",
    }
    (folder / "result.json").write_text(json.dumps(result))
    (folder / "predictions.jsonl").write_text('{"id": "toy-0000", "correct": true}\n')
    return root


def _files(folder: Path) -> dict[str, bytes]:
    return {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in folder.rglob("*")
        if path.is_file() and not path.name.startswith(".")
    }


def test_push_uploads_a_model_folder_in_one_commit_and_prints_its_url(
    hub: HubServer, exported: Path, tmp_path: Path
) -> None:
    from huggingface_hub import ModelCard

    evals = _eval_folder(tmp_path / "eval")
    result = runner.invoke(
        app,
        [
            "push",
            str(exported),
            "me/tiny-clip",
            "--private",
            "--license",
            "mit",
            "--eval",
            str(evals),
        ],
    )
    assert result.exit_code == 0, result.output
    assert f"{hub.endpoint}/me/tiny-clip" in result.output
    repo = hub.repos[("model", "me/tiny-clip")]
    assert repo.private
    assert len(repo.commits) == 1
    branch, _, uploaded = repo.commits[0]
    assert branch == "main"
    assert uploaded == _files(exported)  # every file, byte for byte, the card included
    card = ModelCard(uploaded["README.md"].decode())
    assert card.data.license == "mit"
    assert card.data.base_model == "openai/clip-vit-base-patch32"
    assert card.data.library_name == "transformers"
    metrics = {(e.dataset_name, e.metric_type): e.metric_value for e in card.data.eval_results}
    assert metrics == {("twins", "accuracy"): 62.5, ("twins", "image_to_text"): 75.0}
    # The text says so too, and no longer says that no license was given.
    assert "| twins | zero-shot-image-classification | accuracy | 62.5000 |" in card.text
    assert "No license was given" not in card.text


def test_push_to_a_revision_creates_the_branch(hub: HubServer, exported: Path) -> None:
    result = runner.invoke(app, ["push", str(exported), "me/tiny-clip", "--revision", "v1"])
    assert result.exit_code == 0, result.output
    assert f"{hub.endpoint}/me/tiny-clip/tree/v1" in result.output
    repo = hub.repos[("model", "me/tiny-clip")]
    assert "v1" in repo.branches and [c[0] for c in repo.commits] == ["v1"]


def test_a_training_run_folder_pushes_its_export(hub: HubServer, exported: Path) -> None:
    result = runner.invoke(app, ["push", str(exported.parent), "me/run"])
    assert result.exit_code == 0, result.output
    assert set(hub.repos[("model", "me/run")].commits[0][2]) == set(_files(exported))


def test_dry_run_writes_a_card_model_card_load_parses_and_touches_no_network(
    exported: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import ModelCard

    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: any call fails
    (exported / "README.md").unlink()
    result = runner.invoke(app, ["push", str(exported), "user/name", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "dry run" in result.output
    for name in ("README.md", "config.json", "model.safetensors"):
        assert f"  {name}\n" in result.output
    card = ModelCard.load(exported / "README.md")
    assert card.data.library_name == "transformers"
    assert "cultureclip" in card.data.tags


def test_push_uploads_a_cultwin_set_as_a_dataset(hub: HubServer, tmp_path: Path) -> None:
    from huggingface_hub import DatasetCard

    from cultureclip.testing import write_toy_cultwin

    folder = write_toy_cultwin(tmp_path / "toy", n_pairs=4).parent
    result = runner.invoke(app, ["push", str(folder), "me/toy-twins"])
    assert result.exit_code == 0, result.output
    assert f"{hub.endpoint}/datasets/me/toy-twins" in result.output
    (_, _, uploaded), *more = hub.repos[("dataset", "me/toy-twins")].commits
    assert not more
    # The hub layout only: the card and the Parquet shard, images inside it.
    assert set(uploaded) == {"README.md", "data/train-00000-of-00001.parquet"}
    card = DatasetCard(uploaded["README.md"].decode())
    assert card.data.configs[0]["data_files"][0]["path"] == "data/train-*.parquet"


def test_push_uploads_eval_results_as_a_dataset(hub: HubServer, tmp_path: Path) -> None:
    from huggingface_hub import DatasetCard

    folder = _eval_folder(tmp_path / "eval")
    result = runner.invoke(app, ["push", str(folder), "datasets/me/results"])
    assert result.exit_code == 0, result.output
    (_, _, uploaded), *_ = hub.repos[("dataset", "me/results")].commits
    assert {
        "README.md",
        "twins/tiny-clip/result.json",
        "twins/tiny-clip/predictions.jsonl",
    } == set(uploaded)
    card = DatasetCard(uploaded["README.md"].decode())
    assert card.data.configs == [
        {
            "config_name": "twins--tiny-clip",
            "data_files": [{"split": "test", "path": "twins/tiny-clip/predictions.jsonl"}],
        }
    ]
    assert "| twins | tiny-clip | accuracy | 62.5000 |" in card.text


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _one_line_error(result, expected: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.output.count("error:") == 1
    assert expected in " ".join(result.output.split())


def test_push_errors_are_one_line_each(
    hub: HubServer, exported: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants

    args = ["push", str(exported), "me/tiny-clip"]
    # A repo of the wrong type, before anything is sent.
    _one_line_error(
        runner.invoke(app, ["push", str(exported), "datasets/me/tiny-clip"]),
        "dataset repo 'me/tiny-clip' cannot hold a model",
    )
    # A token the hub refuses.
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    _one_line_error(runner.invoke(app, args), "refused the upload (HTTP 401)")
    # No token at all.
    monkeypatch.delenv("HF_TOKEN")
    _one_line_error(runner.invoke(app, args), "no Hugging Face token")
    assert not hub.repos
    # No network: nothing listens at the endpoint.
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_free_port()}")
    _one_line_error(runner.invoke(app, args), "cannot reach http://127.0.0.1:")
    # Offline mode.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    _one_line_error(runner.invoke(app, args), "HF_HUB_OFFLINE is set")


def test_a_model_that_needs_its_base_is_refused(
    tiny_hf_dirs: dict[str, Path], tmp_path: Path
) -> None:
    from cultureclip.models import create_model

    model = create_model(f"hf:{tiny_hf_dirs['clip']}")
    model.configure_training(image="lora")
    final = model.save(tmp_path / "final")
    _one_line_error(
        runner.invoke(app, ["push", str(final), "me/x", "--dry-run"]),
        "needs its base model",
    )
    _one_line_error(
        runner.invoke(app, ["push", str(tmp_path / "nothing"), "me/x", "--dry-run"]),
        "no such folder",
    )


def test_a_train_vlm_run_pushes_its_model_with_the_adapter_beside_it(
    tiny_vlm: Path, tmp_path: Path, hub: HubServer
) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from cultureclip.publish import export_vlm

    model = get_peft_model(
        AutoModelForImageTextToText.from_pretrained(tiny_vlm),
        LoraConfig(r=2, target_modules=["q_proj"]),
    )
    export_vlm(model, AutoProcessor.from_pretrained(tiny_vlm), tmp_path / "run", base=str(tiny_vlm))
    result = runner.invoke(app, ["push", str(tmp_path / "run"), "me/tiny-vlm"])
    assert result.exit_code == 0, result.output
    (_, _, uploaded), *_ = hub.repos[("model", "me/tiny-vlm")].commits
    expected = _files(tmp_path / "run" / "model") | {
        f"adapter/{name}": data for name, data in _files(tmp_path / "run" / "adapter").items()
    }
    assert uploaded == expected
    assert "adapter/adapter_model.safetensors" in uploaded
