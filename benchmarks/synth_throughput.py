"""Captions-stage throughput against an LLM stand-in with a fixed answer delay.

Target (issue 5): the stage keeps ``concurrency`` requests in flight, so the achieved
rate is at least 80% of ``concurrency / latency``. Everything printed is measured.
The stand-in runs in its own process (``cultureclip synth standin``), as a real server
would, so its work does not share the benchmark's interpreter lock.

    python benchmarks/synth_throughput.py --concurrency 16 --latency 0.2 --requests 320
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from cultureclip.synth.config import SynthConfig
from cultureclip.synth.context import SynthContext
from cultureclip.synth.records import Side
from cultureclip.synth.stages.captions import run_captions


@contextlib.contextmanager
def standin_process(delay: float) -> Iterator[str]:
    with socket.socket() as probe:  # a free loopback port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [
        sys.executable,
        "-m",
        "cultureclip",
        "synth",
        "standin",
        "--port",
        str(port),
        "--delay",
        str(delay),
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{base_url}/models", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the stand-in server did not start") from None
                time.sleep(0.1)
        yield base_url
    finally:
        process.terminate()
        process.wait(timeout=10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--latency", type=float, default=0.2, help="stand-in answer delay, seconds")
    parser.add_argument(
        "--requests", type=int, default=320, help="caption requests (one per concept side)"
    )
    parser.add_argument("--target", type=float, default=0.8)
    args = parser.parse_args()

    sides = [
        Side(f"concept {i}", "a local tradition", "red lacquer and gold leaf", "Art", "JP")
        for i in range(args.requests)
    ]
    with tempfile.TemporaryDirectory() as tmp, standin_process(args.latency) as base_url:
        config = SynthConfig.model_validate(
            {
                "out": str(Path(tmp) / "run"),
                "progress": False,
                "llm": {"base_url": base_url, "model": "stand-in", "concurrency": args.concurrency},
                "captions": {"n": 10},
            }
        )
        start = time.perf_counter()
        report = run_captions(SynthContext(config), sides)
        elapsed = time.perf_counter() - start
    if report.done != args.requests:
        print(f"error: only {report.done}/{args.requests} caption items succeeded", file=sys.stderr)
        return 1
    ideal = args.concurrency / args.latency
    achieved = args.requests / elapsed
    ratio = achieved / ideal
    print(f"concurrency        {args.concurrency}")
    print(f"latency            {args.latency * 1000:.0f} ms")
    print(f"requests           {args.requests} in {elapsed:.2f} s")
    print(f"achieved           {achieved:.1f} requests/s")
    print(f"ideal              {ideal:.1f} requests/s (concurrency / latency)")
    print(f"ratio              {ratio:.3f} (target >= {args.target})")
    print("PASS" if ratio >= args.target else "FAIL")
    return 0 if ratio >= args.target else 1


if __name__ == "__main__":
    sys.exit(main())
