"""`saven`: the command line behind the Makefile targets."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from schemas.settings import settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help="SAVEn-Vid: data pipeline, model and AVBench.")
models_app = typer.Typer(no_args_is_help=True, help="The embedded model cache.")
llm_app = typer.Typer(no_args_is_help=True, help="The local vLLM OpenAI-compatible server.")
prefect_app = typer.Typer(no_args_is_help=True, help="The local Prefect API server.")
app.add_typer(models_app, name="models")
app.add_typer(llm_app, name="llm-server")
app.add_typer(prefect_app, name="prefect-server")
serve_app = typer.Typer(no_args_is_help=True, help="The build-dataset deployment, served against the Prefect server.")
app.add_typer(serve_app, name="serve")
console = Console()


@models_app.command("install")
def models_install(qwen_1_5b: bool = typer.Option(False, "--qwen-1.5b",
                                                  help="only the optional Qwen2.5-Coder-1.5B model (1.1 GB)"),
                   force: bool = typer.Option(False, help="reinstall even when verified")) -> None:
    """Install (or verify) the embedded models; quick when already done."""
    from infra import model_cache

    names = model_cache.OPTIONAL if qwen_1_5b else None
    for name, path in model_cache.install(names, force=force).items():
        console.print(f"[green]ok[/] {name}: {path}")


NODE_TYPES = ("media", "perception", "llm", "train")  # the Ray resources naming deploy/ray-cluster.yaml's node types


@models_app.command("prefetch")
def models_prefetch(profile: Optional[str] = typer.Option(None, help="default: $SAVEN_PROFILE"),
                    node: Optional[str] = typer.Option(None, help="only what a node with this Ray resource loads "
                                                                  "(media, perception, llm; train: the model preset)"),
                    force: bool = typer.Option(False, help="download again even when at the pinned revision")) -> None:
    """Every hub model the profile pins (`models:`), at its revision, into this machine's model cache (the one
    command that reaches the Hugging Face Hub, or whatever HF_ENDPOINT names); runs never download."""
    from flows.preflight import models_by_node_type
    from infra import model_cache
    from schemas.settings import load_settings

    cfg = load_settings(profile) if profile else settings()
    by_type = models_by_node_type(cfg)
    known = sorted({*NODE_TYPES, *by_type} - {""})
    if node is not None and node not in known:
        console.print(f"[red]--node {node}: not a node type's Ray resource; one of {', '.join(known)}[/]",
                      highlight=False)
        raise typer.Exit(2)
    wanted = set(by_type.get(node, [])) if node else {m for names in by_type.values() for m in names}
    pinned = {p.repo for p in cfg.models}
    unpinned = sorted(m for m in wanted if "/" in m and not Path(m).expanduser().exists() and m not in pinned)
    if unpinned:  # a run would fail on this node: it never downloads
        console.print(f"[red]profile {cfg.profile} loads {', '.join(unpinned)} but pins no revision for it: add "
                      f"it to `models:`[/]", highlight=False)
        raise typer.Exit(1)
    pins = [p for p in cfg.models if node is None or p.repo in wanted]
    if not pins:
        console.print(f"profile {cfg.profile} pins no hub model{' for ' + node if node else ''}: nothing to fetch")
        return
    for repo, path in model_cache.prefetch(pins, force=force).items():
        console.print(f"[green]ok[/] {repo}: {path}", highlight=False)


@models_app.command("status")
def models_status() -> None:
    """Which embedded models are installed, and where."""
    from infra import model_cache

    table = Table("model", "status")
    for name, state in model_cache.status().items():
        table.add_row(name, "[green]ok[/]" if state == "ok" else f"[red]{state}[/]")
    console.print(f"model cache: {model_cache.cache_dir()}")
    console.print(table)


@llm_app.command("start")
def llm_start(serves: str = typer.Option("llm", "--serves", help="llm (fusion and QA), or a perception stage's "
                                                                 "model server the profile starts: vlm, omni")) -> None:
    from infra import servers

    cfg = settings()
    srv = servers.start_llm_server(cfg, serves)
    if serves == servers.LLM:
        console.print(f"[green]LLM server up[/] pid {srv.pid}: {cfg.llm.resolved_base_url} "
                      f"(model {cfg.llm.resolved_model}; log {srv.log})")
    else:
        console.print(f"[green]{serves} server up[/] pid {srv.pid}: health {srv.url} (log {srv.log})")


@llm_app.command("stop")
def llm_stop(serves: str = typer.Option("llm", "--serves", help="which server: llm, vlm, omni")) -> None:
    from infra import servers

    stopped = servers.stop_llm_server(serves=serves)
    console.print(f"{serves} server stopped" if stopped else f"no {serves} server of ours was running")


@prefect_app.command("start")
def prefect_start() -> None:
    from infra import servers

    cfg = settings()
    srv = servers.start_prefect_server(cfg)
    console.print(f"[green]Prefect server up[/] pid {srv.pid}: {cfg.prefect.api_url} (log {srv.log})")
    console.print(f"export PREFECT_API_URL={cfg.prefect.api_url} PREFECT_HOME={cfg.paths.run_dir / 'prefect'}")


@prefect_app.command("stop")
def prefect_stop() -> None:
    from infra import servers

    stopped = servers.stop_prefect_server()
    console.print("Prefect server stopped" if stopped else "no Prefect server of ours was running")


@serve_app.command("start")
def serve_start() -> None:
    """Register and serve build-dataset/local (needs the Prefect server; runs in the background)."""
    from infra import servers

    cfg = settings()
    srv = servers.start_deployment_server(cfg)
    console.print(f"[green]serving build-dataset/local[/] pid {srv.pid} (log {srv.log}). Run it with:\n"
                  f"  PREFECT_API_URL={cfg.prefect.api_url} prefect deployment run build-dataset/local "
                  "-p sources=<sources.yaml> -p output=<dataset folder>")


@serve_app.command("stop")
def serve_stop() -> None:
    from infra import servers

    stopped = servers.stop_deployment_server()
    console.print("deployment server stopped" if stopped else "no deployment server of ours was running")


@app.command("build")
def build(sources: Path = typer.Option(..., exists=True, dir_okay=False, help="YAML/CSV/JSONL of URLs or paths"),
          output: str = typer.Option("out/dataset", help="a folder, or an object-store URL (s3://bucket/prefix)"),
          profile: str = typer.Option(None),
          max_videos: Optional[int] = None, batch_size: int = 4,
          batches_in_flight: Optional[int] = typer.Option(
              None, help="batches at once (default: the profile's ray.batches_in_flight)"),
          questions_per_type: Optional[int] = typer.Option(None, help="default: the profile's qa.questions_per_type"),
          llm_cache: Optional[Path] = typer.Option(None, help="default: <output>/_cache/llm.sqlite")) -> None:
    """Run the build-dataset flow in this process (needs the Prefect and LLM servers of the profile)."""
    import os

    from flows import progress
    from infra import servers
    from flows.build_dataset import build_dataset

    from flows.preflight import PreflightError
    from schemas.lease import DatasetBusy
    from schemas.settings import load_settings
    from schemas.store import is_remote

    cfg = load_settings(profile) if profile else settings()
    os.environ.update(servers.prefect_env(cfg))
    where = output if is_remote(output) else Path(output).resolve()
    try:
        with progress.Watcher(where, progress.metrics_url_of(cfg.llm.resolved_base_url)):
            build_dataset(sources=str(sources), output=str(where), profile=cfg.profile, max_videos=max_videos,
                          batch_size=batch_size, batches_in_flight=batches_in_flight,
                          questions_per_type=questions_per_type, llm_cache=str(llm_cache) if llm_cache else None)
    except (PreflightError, DatasetBusy) as exc:  # what to fix, not a stack
        console.print(str(exc), style="red", markup=False, highlight=False)
        raise typer.Exit(1) from None


@app.command("compact")
def compact_cmd(dataset: str = typer.Argument(..., help="a dataset folder or object-store URL")) -> None:
    """Merge the per-video shards of committed videos into size-bounded shards (profile: compaction.*), fold the
    commit markers into an index, and rebuild the manifest."""
    from flows.compact import compact_dataset
    from infra.pipeline import Pipeline
    from schemas.manifest import build_manifest

    from schemas.lease import DatasetBusy, DatasetLease

    cfg = settings()
    Pipeline.from_settings(cfg)  # the tables of the profile's stages, added ones too, are the dataset's
    try:
        lease = DatasetLease(dataset, "saven compact", ttl_s=cfg.lease.ttl_s,
                             renew_every_s=cfg.lease.renew_every_s).acquire()
    except DatasetBusy as exc:
        console.print(f"not compacted: {exc}", markup=False, highlight=False)
        raise typer.Exit(2) from None
    try:
        done = compact_dataset(dataset, cfg.compaction)
    finally:
        lease.release()
    build_manifest(dataset)
    for t in done.report.tables:
        console.print(f"{t.table}: {t.files_before} -> {t.files_after} files ({t.keys} keys moved, "
                      f"{t.shards_written} shards written)")
    console.print(f"markers folded into the commit index: {done.markers}")


@app.command("verify")
def verify_cmd(dataset: str = typer.Argument(..., help="a dataset folder or object-store URL")) -> None:
    """Read and hash every file the manifest lists and report every difference (exit 1 if any)."""
    from schemas.manifest import verify_manifest

    problems = verify_manifest(dataset)
    for p in problems:
        console.print(p, markup=False)
    if problems:
        raise typer.Exit(1)
    console.print("[green]manifest verified[/]: every file present, whole and as listed")


@app.command("pull")
def pull_cmd(dataset: str = typer.Argument(..., help="an object-store URL (s3://bucket/prefix)"),
             dest: Path = typer.Argument(..., help="a local folder (training reads the dataset from one)")) -> None:
    """Copy a dataset to a local folder and verify it against its manifest (exit 1 on any difference). The
    flow's own leftovers (the lease, preflight probes) stay behind; the LLM cache shards come along."""
    import pyarrow.fs as pafs

    from schemas.manifest import verify_manifest
    from schemas.store import DatasetStore

    store = DatasetStore.of(dataset)
    skip = ("_preflight/", "_lease")
    dest.mkdir(parents=True, exist_ok=True)
    selector = pafs.FileSelector(store.root, recursive=True)
    copied = 0
    for info in store.fs.get_file_info(selector):
        rel = info.path[len(store.root):].lstrip("/")
        if info.type != pafs.FileType.File or rel.startswith(skip):
            continue
        target = dest / rel
        if not target.resolve().is_relative_to(dest.resolve()):  # a key is data, never a path out of dest
            raise typer.BadParameter(f"{rel!r} would land outside {dest}")
        target.parent.mkdir(parents=True, exist_ok=True)
        pafs.copy_files(info.path, str(target), source_filesystem=store.fs,
                        destination_filesystem=pafs.LocalFileSystem())
        copied += 1
    problems = verify_manifest(dest)
    for problem in problems:
        console.print(problem, markup=False)
    if problems:
        raise typer.Exit(1)
    console.print(f"[green]{copied} files[/] from {store.uri} in {dest}, manifest verified", highlight=False)


@app.command("view")
def view_cmd(dataset: Path = typer.Argument(..., exists=True, file_okay=False, help="a local dataset folder"),
             out: Optional[Path] = typer.Option(None, help="default: <dataset>/_view"),
             serve: bool = typer.Option(False, "--serve", help="serve the site on 127.0.0.1 until Ctrl-C"),
             port: int = typer.Option(8000, help="the --serve port (0: any free one)")) -> None:
    """Write a static HTML viewer of the dataset (videos, clips, transcript, audio events, QA, failures) and print
    its index.html, or serve it on localhost with --serve."""
    from viewer import make_server, write_viewer

    index = write_viewer(dataset, out)
    if not serve:
        print(index)
        return
    server, url = make_server(index, dataset, port)
    print(f"serving {index.parent} on {url} (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@app.command("train")
def train_cmd(dataset: Path = typer.Option(None, help="default: <output_dir>/demo/dataset"),
              out: Path = typer.Option(None, help="default: <output_dir>/train"),
              preset: Optional[str] = typer.Option(None, help="default: the profile's train.preset"),
              nproc: Optional[int] = typer.Option(None, help="processes (GPUs) on this machine; default: the "
                                                             "profile's train.nproc_per_node"),
              stage: str = typer.Option("both", help="1, 2 or both"), steps: Optional[int] = None,
              bench: Optional[Path] = typer.Option(None, help="a built AVBench folder (avbench-<version>/) of this "
                                                              "dataset, scored at each evaluation")) -> None:
    """Train SAVEn-Vid (stage 1 alignment, then stage 2 instruction tuning) and print the checkpoint path. Each
    evaluation (every train.eval_every steps and at each stage's end) measures the held-out videos' loss, and with
    --bench the AVBench accuracy with own and silenced audio (eval.jsonl, TensorBoard)."""
    import subprocess
    import sys

    cfg = settings()
    dataset = dataset or cfg.paths.output_dir / "demo" / "dataset"
    out = out or cfg.paths.output_dir / "train"
    preset, nproc = preset or cfg.train.preset, nproc or cfg.train.nproc_per_node
    if nproc == 0:  # one per GPU of this machine
        import torch

        nproc = max(1, torch.cuda.device_count())
    if nproc > 1:  # DDP: one process per GPU, each started by torchrun (rank 0 prints the checkpoint)
        args = [str(Path(sys.executable).with_name("torchrun")), "--standalone", f"--nproc_per_node={nproc}",
                "-m", "model.train", str(dataset), str(out), "--preset", preset, "--stage", stage]
        if steps:
            args += ["--steps", str(steps)]
        if bench:
            args += ["--bench", str(bench)]
        done = subprocess.run(args, check=False)  # its progress goes straight to this terminal
        if done.returncode != 0:
            raise typer.Exit(done.returncode)
        from model.train import checkpoints

        ckpt = checkpoints(out / "stage2" if stage == "both" else out)[-1]
    else:
        from model.train import train

        ckpt = train(dataset, out, preset=preset, stage=stage if stage == "both" else int(stage), steps=steps,
                     bench=bench)
    console.print(f"[bold green]checkpoint:[/] {ckpt}")
    print(ckpt)


@app.command("avbench")
def avbench_cmd(dataset: Path = typer.Option(None, help="default: <output_dir>/demo/dataset"),
                out: Path = typer.Option(None, help="default: <output_dir>/avbench"),
                model: list[str] = typer.Option(None, help="adapter specs; default: random, blind-llm, blind-hf, "
                                                "openai:modality=av,view=facts, and saven-vid on the newest "
                                                "checkpoint"),
                checkpoint: Optional[Path] = typer.Option(None, help="default: the newest under <output_dir>/train"),
                circular: bool = False, llm_filters: bool = True,
                counterfactual: bool = typer.Option(True, help="also score the models that take audio with it "
                                                    "silenced and swapped for another video's")) -> None:
    """Build AVBench from a dataset (held-out videos only), score the models, write and print the report."""
    from benchmark.build import BuildConfig
    from benchmark.run import run_avbench

    cfg = settings()
    models = list(model or ["random", "blind-llm", "blind-hf", "openai:modality=av,view=facts"])
    if not model:
        out_dir = cfg.paths.output_dir
        ckpt = checkpoint or _newest_checkpoint(out_dir / "train", out_dir / "demo" / "train")
        if ckpt:
            models.append(f"saven-vid:checkpoint={ckpt}")
    config = BuildConfig(heldout_fraction=cfg.benchmark.heldout_fraction, split_salt=cfg.benchmark.split_salt,
                         min_heldout_items=cfg.benchmark.min_heldout_items)
    report = run_avbench(dataset or cfg.paths.output_dir / "demo" / "dataset", out or cfg.paths.output_dir / "avbench",
                         models, config=config, filters="llm" if llm_filters else "none", circular=circular,
                         counterfactual=counterfactual)
    console.print(f"[bold green]report:[/] {report}")


def _newest_checkpoint(*train_dirs: Path) -> Path | None:
    """The last checkpoint of the most advanced stage in the most recently trained of ``train_dirs``
    (`make train` writes <output_dir>/train, `make demo` <output_dir>/demo/train)."""
    from model.train import checkpoints

    found = []
    for train_dir in train_dirs:
        for stage in ("stage2", "stage1"):
            if runs := checkpoints(train_dir / stage):
                found.append(runs[-1])
                break
    return max(found, key=lambda p: p.stat().st_mtime, default=None)


@app.command("make-samples")
def make_samples(out: Optional[Path] = typer.Option(None, help="default: <output_dir>/samples"),
                 seed: int = 0, count: int = 3) -> None:
    """Synthetic sample videos (known cuts, text, sounds, narration) with a truth file each."""
    from devdata.samples import make_samples_cli

    make_samples_cli(out or settings().paths.output_dir / "samples", seed=seed, count=count)


@app.command("demo")
def demo(out: Optional[Path] = typer.Option(None, help="default: <output_dir>/demo")) -> None:
    """The main job end to end on the embedded default."""
    from flows.demo import run_demo

    run_demo(out or settings().paths.output_dir / "demo")


if __name__ == "__main__":
    app()
