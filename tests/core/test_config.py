"""Validated configs: defaults < file < overrides, unknown keys are errors, resolved config is saved."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import AliasChoices, Field, ValidationError

from cultureclip.core.config import (
    Config,
    ConfigError,
    apply_overrides,
    load_config,
    merge_layers,
    out_field,
    validate,
)


class Optimiser(Config):
    lr: float = 1e-5
    betas: list[float] = Field(default_factory=lambda: [0.9, 0.98])


class RunConfig(Config):
    model: str = "lite:en"
    epochs: int = Field(1, ge=1)
    optimiser: Optimiser = Optimiser()
    tags: list[str] = Field(default_factory=list)


def test_defaults_file_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("model: hf:openai/clip-vit-base-patch32\nepochs: 3\noptimiser:\n  lr: 3.0e-6\n")
    config = load_config(
        RunConfig,
        path,
        ["optimiser.lr=1e-4", "tags=[a, b]", "epochs=5"],
        model="ignored: the file wins",
    )
    assert config.model == "hf:openai/clip-vit-base-patch32"
    assert config.epochs == 5
    assert config.optimiser.lr == pytest.approx(1e-4)
    assert config.optimiser.betas == [0.9, 0.98]
    assert config.tags == ["a", "b"]


def test_json_files_load(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"epochs": 2, "optimiser": {"betas": [0.5, 0.6]}}))
    assert load_config(RunConfig, path).optimiser.betas == [0.5, 0.6]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optimiser.lrr=1"], r"optimiser\.lrr: Extra inputs are not permitted"),
        (["epochs=0"], r"epochs: Input should be greater than or equal to 1"),
        (["epochs"], "must look like key.path=value"),
        (["model.name=x"], "'model' is not a section"),
    ],
)
def test_bad_keys_and_values_name_the_key(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(RunConfig, None, overrides, model="lite:en")


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(RunConfig, tmp_path / "missing.yaml")
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(RunConfig, listing)
    broken = tmp_path / "broken.yaml"
    broken.write_text("epochs: [1,\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_config(RunConfig, broken)


def test_save_writes_the_resolved_config_that_reloads(tmp_path: Path) -> None:
    config = load_config(RunConfig, None, ["optimiser.lr=2e-5", "tags=[文化]"])
    written = config.save(tmp_path / "out")
    assert written == tmp_path / "out" / "config.yaml"
    assert yaml.safe_load(written.read_text(encoding="utf-8"))["tags"] == ["文化"]
    assert load_config(RunConfig, written) == config


def test_overrides_do_not_mutate_their_input() -> None:
    data = {"optimiser": {"lr": 1.0}}
    assert apply_overrides(data, ["optimiser.lr=2"]) == {"optimiser": {"lr": 2}}
    assert data == {"optimiser": {"lr": 1.0}}


def test_assignment_is_validated() -> None:
    config = RunConfig()
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        config.epochs = 0


class Templates(Config):
    recognition: str = "{option}."
    extra: dict[str, Any] = Field(default_factory=dict)
    retries: int | None = None


class EvalLike(Config):
    name: str | None = None
    templates: Templates = Templates()
    options: dict[str, Any] = Field(default_factory=dict)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        # As the shell delivers `--set options.templates.recognition='{option}'`.
        ("templates.recognition={option}", ("templates", "recognition", "{option}")),
        ("templates.recognition=3", ("templates", "recognition", "3")),
        ("name=yes", ("name", None, "yes")),
        ("options.template={option}", ("options", "template", "{option}")),
        (
            "options.template={concept} in {region}",
            ("options", "template", "{concept} in {region}"),
        ),
        ("options.seed=7", ("options", "seed", 7)),
        ("options.pair={a: 1}", ("options", "pair", {"a": 1})),
        ("templates.retries=2", ("templates", "retries", 2)),
    ],
)
def test_a_value_for_a_text_field_stays_text(override: str, expected: tuple) -> None:
    config = load_config(EvalLike, None, [override])
    section, key, value = expected
    node = getattr(config, section)
    got = node if key is None else (node[key] if isinstance(node, dict) else getattr(node, key))
    assert got == value and type(got) is type(value)


class Renamed(Config):
    out: str = out_field("runs/x", "out_dir", "output_dir")
    optimiser: Optimiser = Optimiser()


def test_the_one_name_is_read_everywhere(tmp_path: Path) -> None:
    path = tmp_path / "new.yaml"
    path.write_text("out: from-file\n")
    assert load_config(Renamed, path).out == "from-file"
    assert load_config(Renamed, None, ["out=from-set"]).out == "from-set"
    assert Renamed(out="by-keyword").out == "by-keyword"
    assert Renamed().model_copy(update={"out": "copied"}).out == "copied"


@pytest.mark.parametrize("key", ["out_dir", "output_dir"])
def test_a_former_name_is_a_one_line_error_naming_the_field(key: str, tmp_path: Path) -> None:
    path = tmp_path / "old.yaml"
    path.write_text(f"{key}: from-file\n")
    expected = rf"^invalid Renamed: .*{key} was renamed: use out$"
    with pytest.raises(ConfigError, match=expected):
        load_config(Renamed, path)
    with pytest.raises(ConfigError, match=expected):
        load_config(Renamed, None, [f"{key}=from-set"])
    with pytest.raises(ValidationError, match=f"{key} was renamed: use out"):
        Renamed(**{key: "by-keyword"})


def test_layers_are_merged_so_the_last_wins() -> None:
    data = merge_layers(Renamed, {"out": "first"}, {"out": "second"}, {"out": "third"})
    assert data == {"out": "third"}
    data = merge_layers(Renamed, {"out": "file"}, overrides=["out=set"])
    assert validate(Renamed, data).out == "set"
    with pytest.raises(ConfigError, match="invalid Renamed"):
        validate(Renamed, {"out": 3})


def test_a_partial_section_keeps_the_configs_own_defaults() -> None:
    class Tuned(Config):
        optimiser: Optimiser = Field(default_factory=lambda: Optimiser(lr=0.5, betas=[0.9, 0.999]))

    assert load_config(Tuned, overrides=["optimiser.lr=0.1"]).optimiser.betas == [0.9, 0.999]
    assert Tuned(optimiser={"betas": [0.8, 0.9]}).optimiser == Optimiser(lr=0.5, betas=[0.8, 0.9])
    assert RunConfig(optimiser={"lr": 0.1}).optimiser == Optimiser(lr=0.1)

    class Retry(Config):
        timeout_s: float = Field(1.0, validation_alias=AliasChoices("timeout_s", "timeout"))
        tries: int = 1

    class Client(Config):
        retry: Retry = Field(default_factory=lambda: Retry(timeout_s=5.0, tries=3))

    # a key given under an alias is not given twice
    assert Client(retry={"timeout": 9}).retry == Retry(timeout_s=9, tries=3)
