"""Fault injection: random SIGKILLs of every long stage, and a misbehaving LLM server.

For each stage (synth, train, index, generative eval) the script first runs the stage
once uninterrupted (the reference), then N trials: start the stage's CLI command, SIGKILL
it at a random moment of its run, rerun the documented way (``--resume latest`` for
training, the same command for the others) until it exits, and compare the outcome with
the reference:

- lost: reference results missing from the trial's outcome;
- duplicated: results present more than once (a line appended twice, a step logged twice);
- diverged: results present but different (for training: final weights not bitwise equal);
- failures reported / exit codes of the finishing run.

Then the LLM-server fault modes (HTTP 500, hang past the timeout, invalid JSON, a cut
connection, wrong fields, 429 with Retry-After: 120) are played against generative
evaluation and synthesis: the stage must finish, report the failures it could not
recover from, exit non-zero when some remain, and not wait for Retry-After beyond the cap.

    python benchmarks/faults.py            # N=20 kills per stage (about 20-30 min on 2 cores)
    python benchmarks/faults.py --trials 3 # a quick look

Everything runs on 127.0.0.1 in a temporary directory; nothing is left behind.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "CULTURECLIP_THREADS": "1"}
CLI = [sys.executable, "-m", "cultureclip"]


# ---- a scripted chat server with fault modes ---------------------------------------------
class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client killed mid-request is the point of the exercise


class ChatServer:
    """OpenAI-compatible ``/v1/chat/completions`` on 127.0.0.1; ``respond(body, n)`` decides."""

    def __init__(self, respond: Callable[[dict[str, Any], int], Any]) -> None:
        self.respond = respond
        self.count = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                with server.lock:
                    server.count += 1
                    number = server.count
                action = server.respond(body, number)
                if action == "cut":  # close the connection without an answer
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                status, content, headers, delay = action
                if delay:
                    time.sleep(delay)
                payload = (
                    {"choices": [{"message": {"role": "assistant", "content": content}}]}
                    if status == 200
                    else {"error": {"message": content}}
                )
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> ChatServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def ok(content: str, delay: float = 0.0) -> tuple:
    return (200, content, {}, delay)


def correct_letter(body: dict[str, Any]) -> str:
    """The toy items put the right answer first in the prompt's option list: option A."""
    return "A"


# ---- stages -------------------------------------------------------------------------------
@dataclass
class Outcome:
    rc: int
    results: list[str]  # one key per produced result, in file order (duplicates kept)
    signature: dict[str, Any] = field(default_factory=dict)  # key -> value, for divergence
    failures: int = 0


class Stage:
    name = ""

    def __init__(self, root: Path) -> None:
        self.root = root

    def prepare(self) -> None: ...

    def command(self, out: Path, rerun: bool) -> list[str]:
        raise NotImplementedError

    def outcome(self, out: Path, rc: int) -> Outcome:
        raise NotImplementedError

    def close(self) -> None: ...


class TrainStage(Stage):
    name = "train"

    def prepare(self) -> None:
        from cultureclip.testing import build_tiny_hf_model, write_toy_cultwin

        model = build_tiny_hf_model(self.root / "tiny-clip")
        data = write_toy_cultwin(self.root / "toy", n_pairs=16)
        self.config = self.root / "train.yaml"
        self.config.write_text(
            yaml.safe_dump(
                {
                    "model": f"hf:{model}",
                    "data": {"path": str(data)},
                    "training": {"image": "lora", "text": "lora", "lora": {"dropout": 0.2}},
                    "batch_size": 4,
                    "epochs": 8,
                    "checkpoint_every": 2,
                    "keep_last": 2,
                    "log_every": 1,
                    "progress": False,
                    "optim": {"lr": 1e-3},
                    "schedule": {"warmup_steps": 1},
                }
            )
        )

    def command(self, out: Path, rerun: bool) -> list[str]:
        command = [*CLI, "train", "-c", str(self.config), "-o", str(out)]
        if rerun and (out / "checkpoints" / "latest").exists():
            command += ["--resume", "latest"]
        return command

    def outcome(self, out: Path, rc: int) -> Outcome:
        from safetensors.torch import load_file

        from cultureclip.core.io import read_jsonl

        records = read_jsonl(out / "metrics.jsonl") if (out / "metrics.jsonl").exists() else []
        weights = out / "final" / "weights.safetensors"
        signature = {f"step{r['step']}": r["loss"] for r in records}
        if weights.exists():
            signature["weights"] = {
                k: hashlib.sha256(v.numpy().tobytes()).hexdigest()
                for k, v in load_file(str(weights)).items()
            }
        return Outcome(
            rc, [f"step{r['step']}" for r in records] + ["final"] * weights.exists(), signature
        )


class IndexStage(Stage):
    name = "index"

    def prepare(self) -> None:
        from cultureclip.testing import build_tiny_hf_model, write_toy_cultwin

        self.model = build_tiny_hf_model(self.root / "tiny-clip-index")
        self.data = write_toy_cultwin(self.root / "collection", n_pairs=120).parent

    def command(self, out: Path, rerun: bool) -> list[str]:
        return [
            *CLI,
            "index",
            "-m",
            f"hf:{self.model}",
            "-d",
            str(self.data),
            "-o",
            str(out),
            "--set",
            "batch_size=4",
            "--set",
            "chunk_size=16",
        ]

    def outcome(self, out: Path, rc: int) -> Outcome:
        if rc != 0:
            return Outcome(rc, [])
        import numpy as np

        from cultureclip.retrieval.search import RetrievalIndex

        index = RetrievalIndex(out)
        ids = [str(i) for i in index.image_ids]
        signature = {
            i: hashlib.sha256(np.asarray(index.image_vectors[row]).tobytes()).hexdigest()
            for row, i in enumerate(ids)
        }
        return Outcome(rc, ids, signature)


class GenerativeEvalStage(Stage):
    name = "generative eval"

    def prepare(self) -> None:
        from PIL import Image

        images = self.root / "gen-images"
        images.mkdir()
        items = []
        for i in range(60):
            path = images / f"{i}.png"
            Image.new("RGB", (16, 16), (i * 4 % 255, 80, 160)).save(path)
            items.append(
                {
                    "id": f"q{i:03d}",
                    "image": str(path),
                    "question": "Which country?",
                    "options": ["Japan", "France", "India", "Mexico"],
                    "answer": 0,
                    "country": "JP",
                    "category": "Architecture",
                }
            )
        self.items = self.root / "items.jsonl"
        self.items.write_text("".join(json.dumps(item) + "\n" for item in items))
        self.server = ChatServer(lambda body, n: ok(correct_letter(body), delay=0.05)).__enter__()

    def command(self, out: Path, rerun: bool) -> list[str]:
        return [
            *CLI,
            "eval",
            "-m",
            f"openai:toy@{self.server.url}",
            "-b",
            "cultureverse",
            "-d",
            str(self.items),
            "-o",
            str(out),
            "--set",
            "generative.concurrency=2",
        ]

    def outcome(self, out: Path, rc: int) -> Outcome:
        predictions = sorted(out.rglob("predictions.jsonl"))
        ids: list[str] = []
        signature: dict[str, Any] = {}
        for path in predictions:
            for line in path.read_text().splitlines():
                if line.strip():
                    record = json.loads(line)
                    ids.append(str(record.get("id")))
                    signature[str(record.get("id"))] = record.get("prediction", record.get("pred"))
        return Outcome(rc, ids, signature)

    def close(self) -> None:
        self.server.__exit__()


class SynthStage(Stage):
    name = "synth"

    # Real emoji concepts, so the glyph backend draws real artwork for every side.
    CONCEPTS = {
        "JP/Cuisine": [("sushi", "raw fish on rice"), ("rice ball", "rice with seaweed")],
        "JP/Clothing": [("kimono", "robe with wide sleeves"), ("crown", "gold headpiece")],
        "CN/Cuisine": [("dumpling", "pleated dough"), ("moon cake", "pressed pastry")],
        "CN/Clothing": [("person with skullcap", "round cap"), ("woman with headscarf", "scarf")],
    }
    TWINS = {
        "sushi": ("bento box", "KR", "boxed rice"),
        "rice ball": ("taco", "MX", "folded tortilla"),
        "kimono": ("sari", "IN", "draped cloth"),
        "dumpling": ("fortune cookie", "US", "folded cookie"),
        "moon cake": ("pie", "GB", "round pastry"),
        "person with skullcap": ("cowboy hat face", "US", "wide brim"),
        "crown": ("top hat", "GB", "tall hat"),
        "woman with headscarf": ("person wearing turban", "IN", "wound cloth"),
    }

    def prepare(self) -> None:
        from cultureclip.synth.standin import StandInLLMServer, SynthScript

        script = SynthScript(concepts=self.CONCEPTS, twins=self.TWINS)
        self.server = StandInLLMServer(script, delay_s=0.02).__enter__()
        self.config = self.root / "synth.yaml"
        settings = {
            "progress": False,
            "llm": {"base_url": self.server.base_url, "model": "stand-in", "concurrency": 2},
            "concepts": {"countries": ["JP", "CN"], "categories": ["Cuisine", "Clothing"]},
            "captions": {"n": 3},
            "images": {"backend": "glyph", "size": 32, "per": "caption"},
            "filter": {"backend": "vlm"},
        }
        settings["llm"]["backoff_s"] = 0.01
        settings["concepts"]["per_pair"] = 2
        self.config.write_text(yaml.safe_dump(settings))

    def command(self, out: Path, rerun: bool) -> list[str]:
        return [*CLI, "synth", "-c", str(self.config), "-o", str(out)]

    def outcome(self, out: Path, rc: int) -> Outcome:
        parquet = out / "cultwin.parquet"
        if not parquet.exists():
            return Outcome(rc, [])
        import pyarrow.parquet as pq

        rows = pq.read_table(parquet).to_pylist()
        ids = [str(r["id"]) for r in rows]
        signature = {str(r["id"]): (r.get("pos_caption"), r.get("neg_caption")) for r in rows}
        failures = 0
        summary = out / "failures_summary.json"
        if summary.exists():
            failures = json.loads(summary.read_text()).get("open_failures", 0)
        return Outcome(rc, ids, signature, failures)

    def close(self) -> None:
        self.server.__exit__(None, None, None)


STAGES: list[type[Stage]] = [SynthStage, TrainStage, IndexStage, GenerativeEvalStage]


def run(command: list[str], *, kill_after: float | None = None, timeout: float = 600) -> int:
    process = subprocess.Popen(
        command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        if kill_after is not None:
            try:
                process.wait(timeout=kill_after)
            except subprocess.TimeoutExpired:
                process.send_signal(signal.SIGKILL)
            process.wait(timeout=60)
            return process.returncode
        process.wait(timeout=timeout)
        if process.returncode not in (0,):
            err = process.stderr.read() if process.stderr else ""
            print(
                f"    rc={process.returncode}: {err.strip().splitlines()[-1:] if err else ''}",
                file=sys.stderr,
            )
        return process.returncode
    finally:
        if process.poll() is None:
            process.kill()
        if process.stderr:
            process.stderr.close()


@dataclass
class Tally:
    trials: int = 0
    killed_mid_run: int = 0
    lost: int = 0
    duplicated: int = 0
    diverged: int = 0
    failures: int = 0
    exit_codes: collections.Counter = field(default_factory=collections.Counter)
    seconds: float = 0.0


def kill_trials(stage: Stage, trials: int, rng: random.Random) -> Tally:
    tally = Tally()
    reference_out = stage.root / f"{stage.name.replace(' ', '-')}-reference"
    start = time.monotonic()
    rc = run(stage.command(reference_out, rerun=False))
    duration = time.monotonic() - start
    reference = stage.outcome(reference_out, rc)
    assert reference.results, f"{stage.name}: the reference run produced nothing (rc {rc})"
    begin = time.monotonic()
    for trial in range(trials):
        out = stage.root / f"{stage.name.replace(' ', '-')}-trial-{trial}"
        # The run's first seconds are imports: kill mostly where work is being done.
        kill_at = rng.uniform(0.3, 1.0) * duration
        first_rc = run(stage.command(out, rerun=False), kill_after=kill_at)
        tally.killed_mid_run += first_rc == -signal.SIGKILL
        rc = run(stage.command(out, rerun=True))
        outcome = stage.outcome(out, rc)
        counts = collections.Counter(outcome.results)
        expected = collections.Counter(reference.results)
        tally.trials += 1
        tally.lost += sum((expected - counts).values())
        tally.duplicated += sum(n - 1 for n in counts.values() if n > 1)
        tally.diverged += sum(
            1
            for key, value in reference.signature.items()
            if key in outcome.signature and outcome.signature[key] != value
        )
        tally.failures += outcome.failures
        tally.exit_codes[rc] += 1
        shutil.rmtree(out, ignore_errors=True)
    tally.seconds = time.monotonic() - begin
    return tally


# ---- LLM server fault modes ----------------------------------------------------------------
FAULTS: dict[str, Callable[[dict[str, Any], int], Any]] = {
    "HTTP 500 (every 3rd)": lambda b, n: (500, "boom", {}, 0) if n % 3 == 0 else ok("A"),
    "hang past timeout (every 4th)": lambda b, n: ok("A", delay=5.0) if n % 4 == 0 else ok("A"),
    "invalid JSON body text": lambda b, n: ok("{not json") if n % 2 == 0 else ok("A"),
    "cut connection (every 3rd)": lambda b, n: "cut" if n % 3 == 0 else ok("A"),
    "wrong fields": lambda b, n: ok('{"unexpected": true}'),
    "429 Retry-After 120 (first 2)": lambda b, n: (
        (429, "slow down", {"Retry-After": "120"}, 0) if n <= 2 else ok("A")
    ),
    "server always 500": lambda b, n: (500, "down", {}, 0),
}


def fault_modes(stage: GenerativeEvalStage) -> list[tuple[str, int, int, int, float]]:
    """Generative eval against each fault mode: (mode, items scored, failures, rc, seconds)."""
    rows = []
    for mode, respond in FAULTS.items():
        with ChatServer(respond) as server:
            out = stage.root / f"fault-{len(rows)}"
            command = [
                *CLI,
                "eval",
                "-m",
                f"openai:toy@{server.url}",
                "-b",
                "cultureverse",
                "-d",
                str(stage.items),
                "-o",
                str(out),
                "--set",
                "generative.concurrency=4",
                "--set",
                "generative.timeout=1",
                "--set",
                "generative.max_retries=2",
            ]
            start = time.monotonic()
            rc = run(command, timeout=300)
            seconds = time.monotonic() - start
            scored = failed = 0
            for path in out.rglob("predictions.jsonl"):
                for line in path.read_text().splitlines():
                    if line.strip():
                        record = json.loads(line)
                        failed += record.get("error") is not None
                        scored += record.get("error") is None
            rows.append((mode, scored, failed, rc, seconds))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20, help="SIGKILL trials per stage")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stages", default="synth,train,index,generative eval")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    wanted = [s.strip() for s in args.stages.split(",")]
    with tempfile.TemporaryDirectory(prefix="cultureclip-faults-") as tmp:
        root = Path(tmp)
        results: list[tuple[str, Tally]] = []
        generative: GenerativeEvalStage | None = None
        for cls in STAGES:
            if cls.name not in wanted:
                continue
            stage = cls(root)
            stage.prepare()
            print(f"{stage.name}: {args.trials} SIGKILL trials ...", file=sys.stderr, flush=True)
            results.append((stage.name, kill_trials(stage, args.trials, rng)))
            if isinstance(stage, GenerativeEvalStage):
                generative = stage
            else:
                stage.close()
        print()
        print(
            f"{'stage':<16} {'trials':>6} {'killed':>6} {'lost':>5} {'dup':>5} {'diverged':>8} "
            f"{'failures':>8}  exit codes      seconds"
        )
        for name, t in results:
            codes = ", ".join(f"{code}×{n}" for code, n in sorted(t.exit_codes.items()))
            print(
                f"{name:<16} {t.trials:>6} {t.killed_mid_run:>6} {t.lost:>5} {t.duplicated:>5} "
                f"{t.diverged:>8} {t.failures:>8}  {codes:<15} {t.seconds:7.0f}"
            )
        if generative is not None:
            print()
            print(
                f"{'LLM server fault (generative eval, 60 items)':<46} {'scored':>6} {'failed':>6} "
                f"{'rc':>3} {'seconds':>7}"
            )
            for mode, scored, failed, rc, seconds in fault_modes(generative):
                print(f"{mode:<46} {scored:>6} {failed:>6} {rc:>3} {seconds:7.1f}")
            generative.close()


if __name__ == "__main__":
    main()
