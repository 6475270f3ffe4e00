"""Run directories as users hand them over: reused, interrupted, truncated or hostile."""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cultureclip.cli.main import app
from cultureclip.core.config import ConfigError
from cultureclip.core.errors import InputError
from cultureclip.core.io import read_jsonl
from cultureclip.train import train
from cultureclip.train.checkpoint import (
    CheckpointError,
    list_checkpoints,
    load_checkpoint,
    resolve_checkpoint,
)


class _WritesMarker:
    """Unpickling this object runs code: it creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _plant_pickle(path: Path, marker: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        pickle.dump({"format": 2, "step": 1, "payload": _WritesMarker(marker)}, handle)


def test_a_crafted_checkpoint_cannot_run_code_on_resume(make_config, tmp_path) -> None:
    out = tmp_path / "handed-over"
    marker = tmp_path / "pwned"
    _plant_pickle(out / "checkpoints" / "step_00000001.pt", marker)
    (out / "checkpoints" / "latest").write_text("step_00000001.pt\n")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        train(make_config(out=str(out), resume="latest"))
    with pytest.raises(CheckpointError):
        load_checkpoint(out / "checkpoints" / "step_00000001.pt")
    assert not marker.exists()


def test_latest_pointing_outside_the_checkpoint_folder_is_refused(tmp_path) -> None:
    checkpoints = tmp_path / "run" / "checkpoints"
    checkpoints.mkdir(parents=True)
    _plant_pickle(tmp_path / "evil.pt", tmp_path / "pwned")
    for target in ("../../evil.pt", str(tmp_path / "evil.pt"), "step_1.pt/../../evil.pt"):
        (checkpoints / "latest").write_text(target + "\n")
        with pytest.raises(CheckpointError, match="refusing to follow"):
            resolve_checkpoint("latest", checkpoints)
    assert not (tmp_path / "pwned").exists()


def test_checkpoints_load_with_weights_only(make_config, tmp_path) -> None:
    out = tmp_path / "run"
    train(make_config(out=str(out), stop_at_step=2, checkpoint_every=1))
    latest = resolve_checkpoint("latest", out / "checkpoints")
    state = torch.load(latest, map_location="cpu", weights_only=True)
    assert state["step"] == 2 and state["model"] and len(state["rng"]) == 1


def test_a_truncated_latest_falls_back_to_the_newest_intact_checkpoint(
    make_config, tmp_path, caplog
) -> None:
    out = tmp_path / "run"
    common = dict(out=str(out), checkpoint_every=1, keep_last=3, epochs=2)
    train(make_config(stop_at_step=3, **common))
    latest = resolve_checkpoint("latest", out / "checkpoints")
    assert latest.name == "step_00000003.pt"
    latest.write_bytes(latest.read_bytes()[:100])  # a copy cut short
    with caplog.at_level(logging.WARNING, logger="cultureclip.train.checkpoint"):
        resumed = train(make_config(resume="latest", **common))
    assert resumed.resumed_from_step == 2 and resumed.completed
    assert "step_00000003.pt is unreadable" in caplog.text
    assert "step_00000002.pt" in caplog.text
    steps = [r["step"] for r in read_jsonl(resumed.metrics_path)]
    assert steps == [1, 2, 3, 4]


def test_all_checkpoints_unreadable_is_one_clear_error(make_config, tmp_path) -> None:
    out = tmp_path / "run"
    train(make_config(out=str(out), stop_at_step=1, checkpoint_every=1))
    for path in list_checkpoints(out / "checkpoints"):
        path.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="no other intact checkpoint"):
        train(make_config(out=str(out), resume="latest"))


def test_a_directory_holding_a_run_is_refused_without_resume_or_overwrite(
    make_config, tmp_path
) -> None:
    out = tmp_path / "run"
    train(make_config(out=str(out), stop_at_step=2, checkpoint_every=1))
    before = (out / "metrics.jsonl").read_text()
    with pytest.raises(ConfigError, match=r"--resume latest.*--overwrite"):
        train(make_config(out=str(out), checkpoint_every=1))
    assert (out / "metrics.jsonl").read_text() == before  # nothing appended
    finished = train(make_config(out=str(out / "done"), checkpoint_every=4))
    assert finished.completed
    with pytest.raises(ConfigError, match="finished run"):
        train(make_config(out=str(out / "done")))


def test_overwrite_starts_over_and_latest_stays_valid(make_config, tmp_path) -> None:
    # The reported failure: an old run checkpointed at step 4; a new run in the same
    # directory pruned its own checkpoints by step number and left latest dangling.
    out = tmp_path / "run"
    train(make_config(out=str(out), epochs=2, checkpoint_every=1, keep_last=2))
    assert list_checkpoints(out / "checkpoints")[-1].name == "step_00000004.pt"
    again = train(
        make_config(out=str(out), stop_at_step=2, checkpoint_every=1, keep_last=2, overwrite=True)
    )
    assert not again.completed and not (out / "final").exists()
    assert [r["step"] for r in read_jsonl(out / "metrics.jsonl")] == [1, 2]
    assert resolve_checkpoint("latest", out / "checkpoints").name == "step_00000002.pt"
    resumed = train(make_config(out=str(out), resume="latest", checkpoint_every=1))
    assert resumed.completed and resumed.resumed_from_step == 2
    assert [r["step"] for r in read_jsonl(out / "metrics.jsonl")] == [1, 2, 3, 4]


def test_pruning_never_deletes_the_checkpoint_latest_names(tmp_path) -> None:
    from cultureclip.train.checkpoint import save_checkpoint

    directory = tmp_path / "checkpoints"
    for step in (40, 50):  # left by an older run
        save_checkpoint(directory, step, {"x": torch.zeros(1)}, keep_last=2)
    save_checkpoint(directory, 10, {"x": torch.ones(1)}, keep_last=2)
    assert resolve_checkpoint("latest", directory).name == "step_00000010.pt"
    assert (directory / "step_00000010.pt").is_file()


def test_a_run_killed_before_its_first_checkpoint_starts_over_cleanly(
    make_config, tmp_path
) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"step": 1, "loss": 9.0}\n{"step": 2, "loss": 8.0}\n')
    result = train(make_config(out=str(out), epochs=1))
    steps = [r["step"] for r in read_jsonl(result.metrics_path)]
    assert steps == [1, 2]
    assert all(r["loss"] < 8.0 for r in read_jsonl(result.metrics_path))


def test_stale_checkpoint_temp_files_are_cleaned_on_start(make_config, tmp_path) -> None:
    out = tmp_path / "run"
    train(make_config(out=str(out), stop_at_step=1, checkpoint_every=1))
    stale = out / "checkpoints" / ".step_00000002.pt.ab12cd34.pt"
    stale.write_bytes(b"half a checkpoint")
    unrelated = out / "checkpoints" / "notes.txt"
    unrelated.write_text("keep me")
    train(make_config(out=str(out), resume="latest", checkpoint_every=1))
    assert not stale.exists() and unrelated.exists()


def test_cli_says_where_it_resumed(make_config, tmp_path) -> None:
    out = tmp_path / "run"
    config = make_config(out=str(out), checkpoint_every=1)
    config_file = tmp_path / "train.yaml"
    config_file.write_text(config.to_yaml())
    runner = CliRunner()
    first = runner.invoke(app, ["train", "-c", str(config_file), "--set", "stop_at_step=2"])
    assert first.exit_code == 0, first.output
    refused = runner.invoke(app, ["train", "-c", str(config_file)])
    assert refused.exit_code == 2
    assert "--resume latest" in refused.output and "--overwrite" in refused.output
    resumed = runner.invoke(app, ["train", "-c", str(config_file), "--resume", "latest"])
    assert resumed.exit_code == 0, resumed.output
    assert "resumed from step 2" in resumed.output


def test_checkpoint_files_respect_the_umask(make_config, tmp_path) -> None:
    old = os.umask(0o022)
    try:
        out = tmp_path / "run"
        train(make_config(out=str(out), stop_at_step=1, checkpoint_every=1))
    finally:
        os.umask(old)
    for path in [
        *list_checkpoints(out / "checkpoints"),
        out / "metrics.jsonl",
        out / "config.yaml",
    ]:
        assert path.stat().st_mode & 0o777 == 0o644, path


def test_a_missing_image_stops_training_before_it_starts_naming_the_line(
    make_config, toy_cultwin: Path, tmp_path
) -> None:
    from cultureclip.data.cultwin import read_cultwin

    record = read_cultwin(toy_cultwin).records[4]
    (toy_cultwin.parent / record.neg_image).unlink()
    with pytest.raises(InputError, match=r"line 5.*image file\(s\) missing"):
        train(make_config(out=str(tmp_path / "run")))
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
