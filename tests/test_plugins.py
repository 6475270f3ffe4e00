"""A third party adds a benchmark, a model backend, a loss and LLM backends in one file.

The plugin is one module plus the packaging metadata every installed package has (a
``dist-info`` with ``entry_points.txt``); nothing in cultureclip is edited. A fresh
process sees each plugin listed by the registries and the CLI, and runs it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PLUGIN = textwrap.dedent(
    '''
    """Throwaway cultureclip plugins: one of each kind, in one file (and a spec beside it)."""
    from pathlib import Path

    from cultureclip.eval.scorers import SCORERS, BenchmarkOutput, Scorer
    from cultureclip.models.hf import HFBackend
    from cultureclip.models.registry import MODELS
    from cultureclip.core.llm import LLMS, LLMBackend
    from cultureclip.train.losses import LOSSES, ClipLoss

    #: the benchmarks this plugin ships: spec files (or mappings)
    BENCHMARK_SPECS = [Path(__file__).with_name("demo_count.yaml")]


    @SCORERS.register("demo-count")
    class CountFiles(Scorer):
        """Counts the files of a folder (a scorer in five lines)."""

        task = "demo"

        def run(self, model, *, work_dir=None, progress=True):
            files = sorted(p.name for p in Path(self.bench.data).iterdir())
            return BenchmarkOutput(metrics={"files": float(len(files))}, predictions=[], n=len(files))


    @MODELS.register("demo-hf", help="the hf backend under another name")
    class DemoBackend(HFBackend):
        backend = "demo-hf"


    @LOSSES.register("demo-half-clip", help="half the CLIP loss")
    class HalfClip(ClipLoss):
        name = "demo-half-clip"

        def forward(self, image, text, scale):
            return 0.5 * super().forward(image, text, scale)


    @LLMS.register("demo-echo", help="answers with the last user message")
    class Echo(LLMBackend):
        async def complete(self, messages, *, schema=None, temperature=None, seed=None):
            return str(messages[-1]["content"])


    @LLMS.register("demo-json", help="fixed answers to the synth concepts and builder prompts")
    class FixedAnswers(LLMBackend):
        async def complete(self, messages, *, schema=None, temperature=None, seed=None):
            import json

            name = schema.__name__ if schema is not None else ""
            if name == "ConceptsAnswer":  # synth: concepts of a country x category
                return json.dumps({"concepts": [{"concept": "Sushi", "context": "rice and fish",
                                                 "features": "rice, raw fish"}]})
            if name == "ConceptList":  # the builder, step 1
                return json.dumps({"concepts": [{"name": "Kimono", "category": "Food",
                                                 "introduction": "A robe."}]})
            question = {"question": "What is it?", "options": ["a", "b", "c", "d"],
                        "answer": "b", "reason": "it is"}
            return json.dumps({"recognition": question, "knowledge": question, "scene": question})
    '''
)

ENTRY_POINTS = textwrap.dedent(
    """
    [cultureclip.benchmarks]
    demo = cc_plugin_demo

    [cultureclip.models]
    demo = cc_plugin_demo

    [cultureclip.losses]
    demo = cc_plugin_demo

    [cultureclip.llms]
    demo = cc_plugin_demo
    """
)


@pytest.fixture
def plugin_site(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    site.mkdir()
    (site / "cc_plugin_demo.py").write_text(PLUGIN)
    (site / "demo_count.yaml").write_text(
        "name: demo-count\ndescription: files in a folder\nscorer: demo-count\n"
    )
    meta = site / "cc_plugin_demo-0.1.dist-info"
    meta.mkdir()
    (meta / "METADATA").write_text("Metadata-Version: 2.1\nName: cc-plugin-demo\nVersion: 0.1\n")
    (meta / "entry_points.txt").write_text(ENTRY_POINTS)
    return site


def _run(args: list[str], site: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
    }
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600
    )


@pytest.mark.slow
def test_plugins_of_each_kind_are_listed_and_run(
    plugin_site: Path, tmp_path: Path, tiny_clip_dir: Path, toy_cultwin: Path
) -> None:
    listing = _run(
        [
            "-c",
            "import asyncio, json\n"
            "from cultureclip.eval import benchmark_specs\n"
            "from cultureclip.models.registry import list_models\n"
            "from cultureclip.synth.config import LLMSettings\n"
            "from cultureclip.core.llm import LLMS, create_llm\n"
            "from cultureclip.train.losses import LOSSES\n"
            "async def echo():\n"
            "    async with create_llm(LLMSettings(backend='demo-echo', model='m')) as llm:\n"
            "        return await llm.complete([{'role': 'user', 'content': 'konnichiwa'}])\n"
            "print(json.dumps([sorted(benchmark_specs()), sorted(list_models()), LOSSES.names(),"
            " LLMS.names(), asyncio.run(echo())]))",
        ],
        plugin_site,
        tmp_path,
    )
    assert listing.returncode == 0, listing.stderr[-3000:]
    benchmarks, models, losses, llms, echo = json.loads(listing.stdout.strip().splitlines()[-1])
    assert "demo-count" in benchmarks and "cultureverse" in benchmarks
    assert "demo-hf" in models and "hf" in models
    assert "demo-half-clip" in losses and "cultureclip" in losses
    assert "demo-echo" in llms and "openai" in llms
    assert echo == "konnichiwa"

    shown = _run(["-m", "cultureclip", "benchmarks"], plugin_site, tmp_path)
    assert shown.returncode == 0 and "demo-count" in shown.stdout + shown.stderr

    folder = tmp_path / "three-files"
    folder.mkdir()
    for name in "abc":
        (folder / name).write_text(name)
    evaluated = _run(
        [
            "-m",
            "cultureclip",
            "eval",
            "-m",
            f"demo-hf:{tiny_clip_dir}",
            "-b",
            "demo-count",
            "-d",
            str(folder),
            "-o",
            str(tmp_path / "eval"),
        ],
        plugin_site,
        tmp_path,
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    result = json.loads(next((tmp_path / "eval").rglob("result.json")).read_text())
    assert result["metrics"]["files"] == 3.0

    trained = _run(
        [
            "-m",
            "cultureclip",
            "train",
            "--data",
            str(toy_cultwin),
            "-o",
            str(tmp_path / "run"),
            "--set",
            f"model=demo-hf:{tiny_clip_dir}",
            "--set",
            "loss=demo-half-clip",
            "--set",
            "batch_size=4",
            "--set",
            "max_steps=2",
            "--set",
            "progress=false",
            "--set",
            "log_every=1",
        ],
        plugin_site,
        tmp_path,
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    losses_logged = [
        json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["step"] for r in losses_logged] == [1, 2] and "loss_clip" in losses_logged[0]


def test_a_broken_plugin_is_reported_and_does_not_break_the_rest(
    tmp_path: Path, plugin_site: Path
) -> None:
    (plugin_site / "cc_plugin_demo.py").write_text("raise RuntimeError('broken plugin')\n")
    listing = _run(
        ["-c", "from cultureclip.train.losses import LOSSES; print(LOSSES.names())"],
        plugin_site,
        tmp_path,
    )
    assert listing.returncode == 0, listing.stderr[-2000:]
    assert "cultureclip" in listing.stdout and "demo-half-clip" not in listing.stdout
    assert "failed to load" in listing.stderr and "broken plugin" in listing.stderr


def test_an_llm_backend_plugin_serves_synth_and_the_benchmark_builder(
    plugin_site: Path, tmp_path: Path
) -> None:
    """One LLM client under both stages: the plugin's backend answers synth's concept stage
    and the benchmark builder (by ``llm.backend``), with nothing else configured."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "Japan.txt").write_text("Kimono is a robe.")
    script = textwrap.dedent(
        f"""
        import json
        from cultureclip.core.store import ResultStore
        from cultureclip.synth.builder import BuilderConfig, build_benchmark
        from cultureclip.synth import SynthConfig, run_synth

        synth = SynthConfig.model_validate({{
            "out": {str(tmp_path / "synth")!r}, "stages": ["concepts"], "progress": False,
            "llm": {{"backend": "demo-json", "model": "m"}},
            "concepts": {{"countries": ["JP"], "categories": ["Food"], "per_pair": 1}},
        }})
        report = run_synth(synth, merge_after=False).stages[0]
        stored = ResultStore({str(tmp_path / "synth" / "work")!r}, "concepts").records()
        built = build_benchmark(BuilderConfig.model_validate({{
            "documents": {str(docs)!r}, "out": {str(tmp_path / "bench")!r},
            "categories": ["Food"], "llm": {{"backend": "demo-json", "model": "m"}},
        }}))
        print(json.dumps([report.done, stored[0]["concepts"][0]["concept"],
                          stored[0]["provenance"]["model"], built]))
        """
    )
    ran = _run(["-c", script], plugin_site, tmp_path)
    assert ran.returncode == 0, ran.stderr[-3000:]
    done, concept, model, built = json.loads(ran.stdout.strip().splitlines()[-1])
    assert done == 1 and concept == "Sushi" and model == "demo-json:m"
    assert built["concepts"] == 1 and built["questions"] == 3
