"""Must-show: a synth run killed with SIGKILL mid-stage resumes to exactly the uninterrupted result."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from cultureclip.core.io import read_jsonl
from cultureclip.synth.pipeline import run_synth
from cultureclip.synth.standin import StandInLLMServer, SynthScript, prompt_name


def rows(out_dir: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    return pq.read_table(out_dir / "cultwin.parquet").to_pylist()


def store_lines(out_dir: Path, stage: str) -> list[str]:
    return [
        r["key"]
        for path in sorted((out_dir / "work").glob(f"{stage}*.jsonl"))
        for r in read_jsonl(path)
    ]


@pytest.mark.slow
def test_sigkill_mid_stage_then_resume_equals_uninterrupted_run(
    tmp_path: Path, script: SynthScript, make_config: Any
) -> None:
    # Slow answers so the kill lands inside the captions stage.
    with StandInLLMServer(script, delay_s=0.15) as server:
        reference = make_config(tmp_path / "reference", server.base_url)
        reference.llm.concurrency = 2
        run_synth(reference)

        killed = reference.model_copy(update={"out": str(tmp_path / "killed")})
        config_file = killed.save(tmp_path / "killed-config")
        command = [sys.executable, "-m", "cultureclip", "synth", "--config", str(config_file)]
        first_request = len(server.requests)
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while len(store_lines(tmp_path / "killed", "captions")) < 3:
            assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
            assert time.monotonic() < deadline, "the captions stage never started"
            time.sleep(0.01)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        assert process.returncode == -signal.SIGKILL
        done_before_kill = set(store_lines(tmp_path / "killed", "captions"))
        assert 3 <= len(done_before_kill) < 16, "the kill must land mid-stage"
        assert not (tmp_path / "killed" / "cultwin.parquet").exists()

        resume_request = len(server.requests)
        resumed = subprocess.run(command, capture_output=True, timeout=300)
        # Exit 1: the glyphs "bad twin" has none of stay open failures (named, with the command).
        assert resumed.returncode == 1, resumed.stderr.decode()
        assert "cultureclip synth failures" in resumed.stderr.decode()
        resumed_requests = server.requests[resume_request:]
        all_requests = server.requests[first_request:]

    assert rows(tmp_path / "killed") == rows(tmp_path / "reference")
    assert (
        len(rows(tmp_path / "killed")) == 21
    )  # 7 drawable twins x 3 captions; "bad twin" has no glyph
    ids = [r["id"] for r in rows(tmp_path / "killed")]
    assert len(ids) == len(set(ids))
    for stage in ("concepts", "twins", "captions", "images", "filter"):
        counts = Counter(store_lines(tmp_path / "killed", stage))
        assert counts and max(counts.values()) == 1, f"{stage} stored an item twice"
    # The resumed run redid no finished item: no concepts or twins requests at all, and
    # caption requests only for the sides not stored before the kill.
    resumed_names = Counter(prompt_name(r) for r in resumed_requests)
    assert resumed_names["concepts"] == 0 and resumed_names["twins"] == 0
    assert resumed_names["captions"] == 16 - len(done_before_kill)
    # At most the requests in flight at the kill were answered twice.
    assert (
        Counter(prompt_name(r) for r in all_requests)["captions"] <= 16 + reference.llm.concurrency
    )
