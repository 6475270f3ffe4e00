"""A generative eval that lost answers says so and exits 1; the rerun asks only those."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from cultureclip.cli.main import app
from tests.eval.chat_server import chat_server


def _run(url: str, data: Path, out: Path):
    # The two loopback servers listen on different ports: a served model is known by its
    # name, so the second run finds the first one's answers.
    args = ["eval", "-m", f"openai:m@{url}", "-b", "cultureverse"]
    args += ["-d", str(data), "-o", str(out)]
    args += ["--set", "generative.max_retries=0", "--set", "generative.concurrency=2"]
    return CliRunner().invoke(app, args)


def test_lost_answers_exit_1_and_a_rerun_asks_only_them(mcq_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    # Every third request fails for good (no retries): some answers are lost.
    with chat_server(lambda body, n: (500, "down") if n % 3 == 0 else (200, "A")) as server:
        first = _run(server.url, mcq_file, out)
        asked_first = len(server.requests)
    assert first.exit_code == 1, first.output
    assert "answers failed" in first.output
    result = json.loads(next(out.rglob("result.json")).read_text())
    lost = int(result["counts"]["failed"])
    assert lost > 0 and asked_first == result["n"]
    with chat_server(lambda body, n: (200, "A")) as server:
        second = _run(server.url, mcq_file, out)
        asked_again = len(server.requests)
    assert second.exit_code == 0, second.output
    assert asked_again == lost  # the answered ones were kept
    result = json.loads(next(out.rglob("result.json")).read_text())
    assert result["counts"]["failed"] == 0
