"""Open-ended questions with reference answers: matching, LLM judge, grouping, resume."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from cultureclip.cli.main import app
from cultureclip.eval import evaluate
from cultureclip.eval.scorers.openended import match_scores, normalize_answer, read_open_items
from tests.eval.chat_server import chat_server
from tests.helpers import OPEN_QUESTIONS as ITEMS
from tests.helpers import write_open_items

runner = CliRunner()
# the model's reply per question: exact, normalised-only, contained, wrong
REPLIES = {
    "What is this dish called?": "jollof rice",
    "What is this garment?": "A Kimono.",
    "Which festival is shown?": "It is Diwali, the festival of lights",
    "What instrument is this?": "a violin",
}
FAST = {"backoff": 0.0, "timeout": 5.0, "max_retries": 1}


@pytest.mark.parametrize(
    ("reply", "refs", "expected"),
    [
        ("jollof rice", ["jollof rice"], (True, True, True)),
        ("A Kimono.", ["kimono"], (False, True, True)),
        ("It is Diwali!", ["Diwali"], (False, False, True)),
        ("sari", ["Saree"], (False, False, False)),
        ("kimonos", ["kimono"], (False, False, False)),  # whole words only
    ],
)
def test_match_scores(reply: str, refs: list[str], expected: tuple[bool, bool, bool]) -> None:
    scores = match_scores(reply, refs)
    assert (scores["exact"], scores["normalized"], scores["contains"]) == expected
    assert normalize_answer("  The  Hanbok, (Korean)! ") == "hanbok korean"


def test_items_keep_good_rows_and_name_bad_ones(tmp_path: Path) -> None:
    items, errors, root = read_open_items(write_open_items(tmp_path))
    assert [i.id for i in items] == ["q1", "q2", "q3", "q4"] and root == tmp_path
    assert len(errors) == 1 and "bad" in str(errors[0]) and "answers" in str(errors[0])


def _behaviour(judge_fails: set[str]):
    def behaviour(body: dict, number: int) -> tuple:
        content = body["messages"][-1]["content"]
        text = content if isinstance(content, str) else content[-1]["text"]
        if text.startswith("You grade answers"):
            if any(f"Candidate answer: {r}" in text for r in judge_fails):
                return (400, "judge refuses")
            wrong = "Candidate answer: a violin" in text
            return (200, json.dumps({"correct": not wrong}))
        question = text.splitlines()[0]
        return (200, REPLIES[question])

    return behaviour


def test_openended_with_a_judge_grouped_and_resumed(tmp_path: Path) -> None:
    items = write_open_items(tmp_path / "data")
    out = tmp_path / "runs"
    with chat_server(_behaviour({"A Kimono."})) as server:
        spec = f"openai:vlm@{server.url}"
        options = {"judge": f"judge@{server.url}", "judge_options": FAST}
        result = evaluate(spec, "openended", data=items, out_dir=out, generative=FAST, **options)
        asked = [r for r in server.requests if not _is_judge(r)]
        assert len(asked) == 4
        # the model was asked the open question with the short-answer instruction
        assert "single word or phrase" in str(asked[0]["messages"][-1]["content"])
    metrics = result.metrics
    assert metrics["exact"] == 25.0 and metrics["normalized"] == 50.0
    assert metrics["contains"] == 75.0
    assert metrics["judge"] == 50.0 and result.counts.judge_failed == 1  # kimono: judge failed
    assert metrics["accuracy"] == metrics["judge"] and result.n_skipped == 1
    assert result.per_group["country"]["NG"]["accuracy"] == 100.0
    assert set(result.per_group) >= {"continent", "country", "category"}

    # rerun without the result: only the item whose judge failed is asked again
    directory = next((out / "openended").iterdir())
    (directory / "result.json").unlink()
    (directory / "predictions.jsonl").rename(directory / "predictions.partial.jsonl")
    with chat_server(_behaviour(set())) as server:
        again = evaluate(spec.split("@")[0] + f"@{server.url}", "openended", data=items,
                         out_dir=out, generative=FAST, **{**options, "judge": f"judge@{server.url}"})  # fmt: skip
        asked = [r for r in server.requests if not _is_judge(r)]
    assert len(asked) == 1 and "garment" in str(asked[0]["messages"][-1]["content"])
    assert again.metrics["judge"] == 75.0 and again.counts.judge_failed == 0


def _is_judge(request: dict) -> bool:
    return str(request["messages"][-1]["content"]).startswith("You grade answers")


@pytest.mark.slow
def test_hf_vlm_answers_open_questions(tmp_path: Path, tiny_vlm: Path) -> None:
    vlm = tiny_vlm
    items = write_open_items(tmp_path / "data")
    args = ["eval", "-m", f"hf-vlm:{vlm}", "-b", "openended", "-d", str(items),
            "-o", str(tmp_path / "runs"), "--model-name", "tiny"]  # fmt: skip
    result = runner.invoke(app, [*args, "--set", "generative.max_new_tokens=4"])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "runs" / "openended" / "tiny" / "result.json").read_text())
    assert saved["n"] == 4 and saved["counts"]["failed"] == 0
    bad = runner.invoke(app, [*args[:-1], "lik", "--set", "generative.mode=likelihood"])
    assert bad.exit_code == 2 and "likelihood scoring needs options" in bad.output


def test_a_contrastive_model_picks_among_the_reference_answers(tiny_model, tmp_path: Path) -> None:
    items = write_open_items(tmp_path / "data")
    result = evaluate(
        tiny_model, "openended", data=items, out_dir=tmp_path / "runs", model_name="clip"
    )
    rows = [
        json.loads(line)
        for line in (tmp_path / "runs" / "openended" / "clip" / "predictions.jsonl").open()
    ]
    vocabulary = {a for _, _, answers, _, _ in ITEMS for a in answers}
    assert len(rows) == 4 and all(r["reply"] in vocabulary for r in rows)
    # a picked reference answer is exactly right or plainly wrong: the three matches agree
    assert all(r["exact"] == r["normalized"] == r["correct"] for r in rows)
    assert result.metrics["accuracy"] == 25.0 * sum(r["correct"] for r in rows)


@pytest.mark.slow
def test_two_processes_ask_the_judge_once_per_answer(tmp_path: Path, tiny_vlm: Path) -> None:
    """Under ``torchrun --nproc_per_node 2`` the processes share the model's batches and
    only the first asks the judge: the judge sees as many requests as in one process."""
    import os
    import subprocess

    items = write_open_items(tmp_path / "data")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parents[2] / "src"), *sys.path])
    saved = {}
    with chat_server(_behaviour(set())) as server:
        for run in ("one", "two"):
            args = ["eval", "-m", f"hf-vlm:{tiny_vlm}", "-b", "openended", "-d", str(items),
                    "-o", str(tmp_path / run), "--model-name", "tiny", "--set", "device=cpu",
                    "--set", "generative.max_new_tokens=4", "--set", "generative.batch_size=1",
                    "--set", f"options.judge=judge@{server.url}"]  # fmt: skip
            before = len(server.requests)
            if run == "one":
                result = runner.invoke(app, args)
                assert result.exit_code == 0, result.output
            else:
                launch = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc_per_node", "2", "-m", "cultureclip"]  # fmt: skip
                done = subprocess.run(
                    [*launch, *args], env=env, capture_output=True, text=True, timeout=300
                )
                assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
            judged = [r for r in server.requests[before:] if _is_judge(r)]
            folder = tmp_path / run / "openended" / "tiny"
            result_json = json.loads((folder / "result.json").read_text())
            saved[run] = (len(judged), result_json["metrics"], result_json["counts"])
    assert saved["one"] == saved["two"] and saved["one"][0] == 4
