"""`make demo`: the main job end to end on the embedded default.

samples -> servers up (Prefect, vLLM, the build-dataset deployment) -> `prefect deployment run build-dataset/local`
-> a validated dataset (checked through the Prefect API and the manifest) -> SAVEn-Vid trained on it (smol preset)
-> AVBench built from its held-out videos and scored (random, two blind LLMs, the LLM reading the clip timeline,
SAVEn-Vid) -> servers stopped.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import yaml
from rich.console import Console

from benchmark.build import BuildConfig
from benchmark.run import run_avbench
from flows import progress
from infra import servers
from viewer import write_viewer
from model.train import train
from schemas.manifest import verify_manifest
from schemas.settings import PROJECT_ROOT, Settings, settings
from infra import model_cache
from devdata.samples import make_samples

console = Console()
SHARED_MEDIA = (PROJECT_ROOT / ".." / "shared" / "media").resolve()
# Real files beside the synthetic samples: a film clip with cuts and music, footage with a soundtrack, a
# container with no stated duration, awkward audio, and a speech-only file (no video: it must be dead-lettered).
SHARED_SOURCES = ["big_buck_bunny_0_30.webm", "chaplin.mp4", "no_duration.webm", "video_with_failing_audio.mp4",
                  "jfk.flac"]


def write_demo_sources(out: Path, sample_files: list[Path]) -> Path:
    sources = [str(p) for p in sample_files]
    sources += [str(SHARED_MEDIA / name) for name in SHARED_SOURCES if (SHARED_MEDIA / name).is_file()]
    path = out / "sources.yaml"
    path.write_text(yaml.safe_dump({"sources": sources}, sort_keys=False))
    return path


def _prefect(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    prefect = Path(sys.executable).with_name("prefect")
    return subprocess.run([str(prefect), *args], env={**os.environ, **env}, text=True, capture_output=True)


def flow_run_id(stdout: str) -> str | None:
    """The flow run id `prefect deployment run` prints (as "UUID: ..." under a tree of box-drawing characters)."""
    match = re.search(r"UUID:\s*([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})", stdout)
    return match.group(1) if match else None


FINAL_STATES = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def flow_run_state(api_url: str, run_id: str) -> str | None:
    try:
        return httpx.get(f"{api_url}/flow_runs/{run_id}", timeout=10).json()["state"]["type"]
    except (httpx.HTTPError, KeyError, TypeError, ValueError):
        return None


def run_deployment(sources: Path, dataset: Path, env: dict[str, str], cfg: Settings,
                   questions_per_type: int = 1) -> str:
    """`prefect deployment run build-dataset/local ...`, then the run's live progress (the flow's progress board
    and the LLM server's metrics) until it ends; returns the flow run id."""
    proc = _prefect(["deployment", "run", "build-dataset/local", "-p", f"sources={sources}",
                     "-p", f"output={dataset}", "-p", f"questions_per_type={questions_per_type}"], env)
    console.print(proc.stdout[-3000:])
    run_id = flow_run_id(proc.stdout)
    if proc.returncode != 0 or run_id is None:
        raise SystemExit(f"the deployment run failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n"
                         f"{proc.stderr[-2000:]}")
    progress.watch(dataset, progress.metrics_url_of(cfg.llm.resolved_base_url),
                   lambda: flow_run_state(cfg.prefect.api_url, run_id) in FINAL_STATES, console=console)
    return run_id


def flow_run_report(api_url: str, run_id: str) -> tuple[str, dict[str, str]]:
    """The run's final state and its artifacts (key -> markdown)."""
    state = httpx.get(f"{api_url}/flow_runs/{run_id}", timeout=10).json()["state"]["type"]
    artifacts = httpx.post(f"{api_url}/artifacts/filter", timeout=10,
                           json={"artifacts": {"flow_run_id": {"any_": [run_id]}}}).json()
    return state, {a["key"]: a.get("data") or "" for a in artifacts}


def artifact_section(markdown: str, title: str) -> str:
    """One ``## title`` section of the run artifact, without its heading."""
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", markdown, re.MULTILINE | re.DOTALL)
    return m.group(1).strip() if m else ""


def show_qa(dataset: Path) -> None:
    """One accepted QA item of each type, with its options and the correct one marked. Video text is data: printed
    without rich markup."""
    from rich.markup import escape

    from schemas.records import LETTERS, QAItem
    from schemas.shards import read_records

    items = read_records(dataset, "qa", QAItem)
    shown: dict[str, QAItem] = {}
    for item in sorted(items, key=lambda i: i.qa_id):
        shown.setdefault(item.type.value, item)
    console.print(f"[bold]QA items[/] ({len(items)} in all), one of each type:")
    for item in shown.values():
        console.print(f"  [{item.type.value}] {escape(item.question)}", highlight=False)
        for k, option in enumerate(item.options):
            mark = "*" if k == item.answer_index else " "
            console.print(f"     {mark} {LETTERS[k]}. {escape(option)}", highlight=False)


def use_demo_llm(cfg: Settings) -> Settings:
    """Serve the demo's LLM instead of the profile's, for this process and every server it starts (they inherit
    the environment: the deployment's flow runs, their Ray workers, AVBench's LLM baselines)."""
    model = cfg.demo.llm_model
    if not model or model == cfg.llm.server.model:
        return cfg
    model_cache.verify(model, deep=False)  # missing: a clear error naming the make target
    os.environ["SAVEN_LLM__SERVER__MODEL"] = model
    os.environ["SAVEN_LLM__SERVER__SERVED_NAME"] = model
    settings.cache_clear()
    return settings()


def show_perception(dataset: Path, per_table: int = 6) -> None:
    """A few keyframe and audio captions of the new dataset, spread over its videos: what the models saw and heard.
    Video text is data: printed without rich markup."""
    from rich.markup import escape

    from schemas.records import AudioCaption, VisualCaption
    from schemas.shards import read_records

    for title, records, text in (("keyframe captions", read_records(dataset, "visual_captions", VisualCaption),
                                  lambda r: r.text),
                                 ("audio captions", read_records(dataset, "audio_captions", AudioCaption),
                                  lambda r: r.sentence)):
        by_video: dict[str, list] = {}
        for r in records:
            by_video.setdefault(r.video_id, []).append(r)
        picked = [rs[len(rs) // 2] for rs in by_video.values()][:per_table]
        console.print(f"[bold]{title}[/] ({len(records)} in all), one per video:")
        for r in picked:
            console.print(f"  {escape(r.clip_id)}: {escape(text(r))}", highlight=False)


def run_demo(out: Path) -> None:
    cfg = use_demo_llm(settings())
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    dataset = out / "dataset"

    console.rule("1. sample media")
    truths = make_samples(cfg.paths.output_dir / "samples")
    sources = write_demo_sources(out, [cfg.paths.output_dir / "samples" / t.file for t in truths])
    console.print(f"sources: {sources}")

    console.rule(f"2. servers (LLM: {cfg.llm.server.model})")
    servers.start_prefect_server(cfg)
    servers.start_llm_server(cfg)
    servers.start_deployment_server(cfg)
    env = servers.prefect_env(cfg)
    try:
        console.rule("3. prefect deployment run build-dataset/local")
        run_id = run_deployment(sources, dataset, env, cfg, cfg.demo.questions_per_type)
        state, artifacts = flow_run_report(cfg.prefect.api_url, run_id)
        console.print(f"flow run {run_id}: {state}; artifacts: {sorted(artifacts)}")
        if state != "COMPLETED" or "build-dataset-summary" not in artifacts:
            raise SystemExit(f"flow run {run_id} ended {state} with artifacts {sorted(artifacts)}")
        console.print("[bold]cost per accepted item[/] (from the run artifact):")
        console.print(artifact_section(artifacts["build-dataset-summary"], "Cost per accepted item"), markup=False,
                      highlight=False)
        console.print("[bold]what the stages found[/] (from the run artifact):")
        console.print(artifact_section(artifacts["build-dataset-summary"], "What the stages found"), markup=False,
                      highlight=False)
        servers.stop_deployment_server(cfg)
        problems = verify_manifest(dataset)
        if problems:
            raise SystemExit("dataset manifest does not verify:\n" + "\n".join(problems))

        show_perception(dataset)
        show_qa(dataset)
        viewer = write_viewer(dataset)  # <dataset>/_view: not a table, so the manifest ignores it
        console.print(f"dataset viewer: {viewer}", markup=False, highlight=False)

        console.rule("4. train SAVEn-Vid (smol preset: SmolLM2-135M + LoRA; EfficientNet-Lite3 frame and Whisper-base "
                     "audio features)")
        checkpoint = train(dataset, out / "train", preset="smol", stage="both")
        console.print(f"checkpoint: {checkpoint}")

        console.rule("5. AVBench")
        bench = cfg.benchmark
        report = run_avbench(dataset, out / "avbench",
                             ["random", "blind-llm", "blind-hf", "openai:modality=av,view=facts",
                              f"saven-vid:checkpoint={checkpoint}"],
                             config=BuildConfig(heldout_fraction=bench.heldout_fraction, split_salt=bench.split_salt,
                                                min_heldout_items=bench.min_heldout_items))
    finally:
        console.rule("servers down")
        servers.stop_deployment_server(cfg)
        servers.stop_llm_server(cfg)
        servers.stop_prefect_server(cfg)

    manifest = json.loads((dataset / "manifest.json").read_text())
    rows = {name: t["rows"] for name, t in manifest["tables"].items()}
    console.rule("done")
    console.print(f"dataset rows: {rows}")
    console.print(f"dataset card: {dataset / 'README.md'}")
    console.print(f"viewer:       {viewer}", markup=False, highlight=False)
    console.print(f"checkpoint:   {checkpoint}")
    console.print(f"AVBench:      {report}")
    console.print(f"[bold green]demo output:[/] {out}")
