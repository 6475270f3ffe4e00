from __future__ import annotations

from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from cultureclip.cli.main import app
from cultureclip.synth.standin import StandInLLMServer, SynthScript

runner = CliRunner()


def test_synth_help_lists_the_commands() -> None:
    result = runner.invoke(app, ["synth", "--help"])
    assert result.exit_code == 0
    for word in ("--stages", "--shard", "merge", "ray", "failures", "prompts", "standin"):
        assert word in result.output


def test_prompts_command_shows_versions() -> None:
    result = runner.invoke(app, ["synth", "prompts"])
    assert result.exit_code == 0 and "captions@1" in result.output and "twins@1" in result.output


def test_bad_shard_and_bad_stage_are_one_line_errors(tmp_path: Path) -> None:
    result = runner.invoke(app, ["synth", "--out", str(tmp_path), "--shard", "4/2"])
    assert result.exit_code == 2 and "need 0 <= i < n" in result.output
    result = runner.invoke(app, ["synth", "--out", str(tmp_path), "--stages", "concepts,paint"])
    assert result.exit_code == 2 and "unknown stage" in result.output


def test_stages_shards_merge_and_failures_from_the_command_line(
    tmp_path: Path, script: SynthScript, make_config: Any
) -> None:
    with StandInLLMServer(script) as server:
        config = make_config(tmp_path / "run", server.base_url, filter={"backend": "none"})
        config.concepts.countries = ["JP"]
        config.concepts.categories = ["Cuisine"]
        path = config.save(tmp_path / "cfg")
        for shard in ("0/2", "1/2"):
            result = runner.invoke(
                app, ["synth", "-c", str(path), "--stages", "concepts,twins", "--shard", shard]
            )
            assert result.exit_code == 0, result.output
        result = runner.invoke(
            app, ["synth", "-c", str(path), "--stages", "captions,images,filter"]
        )
        assert result.exit_code == 0, result.output
        result = runner.invoke(app, ["synth", "merge", "-c", str(path), "--set", "progress=false"])
        assert result.exit_code == 0 and "6 records from 2 twins" in result.output.replace(
            "\n", " "
        )
    result = runner.invoke(app, ["synth", "failures", str(tmp_path / "run")])
    assert result.exit_code == 0 and "bad twin" not in result.output
    assert (tmp_path / "run" / "cultwin.parquet").exists()
