"""Prefect flow ``build-dataset``: sources in, a validated, resumable SAVEn-Vid dataset out.

Prefect holds control (parameters, one task run per *batch* of videos, retries, the run artifact); Ray does the
fan-out inside each batch (``flows.video_pipeline``). A 1,000-video run is ~1,000/batch_size Prefect task runs,
not one per clip: large Prefect task counts are a known failure mode of prefect-ray.

Run it:  ``prefect deployment run build-dataset/local -p sources=out/samples/sources.yaml``  (after ``make serve``)
or directly: ``saven build --sources ... --output ...``; on a cluster: ``deploy/submit_job.py``.
"""

from __future__ import annotations

import os
import time
from collections import deque
from pathlib import Path
from urllib.parse import urlsplit

import ray
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from rich.console import Console

from schemas.commit import committed_sources, sweep_uncommitted
from flows.report import RunStats, dataset_card, run_markdown, write_run_record
from schemas.commit import record_source_failure
from flows.sources import dedup_sources, read_sources
from schemas.commit import source_key
from schemas.records import DUPLICATE, DeadLetter, StageName, utc_now
from tasks.acquire import canonical_video_id
from flows import progress, video_pipeline
from schemas.manifest import build_manifest
from schemas.settings import Settings, load_settings
from schemas.shards import consolidate_dead_letters
from schemas.store import STORE_CLIENT_ENV, DatasetStore, is_remote
from flows import llm_cache as llm_cache_store
from flows.compact import maybe_compact
from flows.preflight import PreflightError, check_store, models_by_node_type, preflight
from tasks.acquire import SourceExpander
from infra.pipeline import Pipeline
from schemas.lease import DatasetLease, command_line

FLOW_NAME = "build-dataset"
def _ray_runtime_env(cfg: Settings) -> dict:
    """What the run's Ray workers need of this process's environment, secrets excepted (``STORE_CLIENT_ENV``)."""
    # Not the model cache: each node has its own (deploy/ray-cluster.yaml prefetches into each node's disk).
    keep = ("PREFECT_API_URL", "PREFECT_HOME", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "SAVEN_PROFILE",
            "SAVEN_CONFIG", "SAVEN_PATHS__SCRATCH_DIR", *STORE_CLIENT_ENV)
    return {"env_vars": {k: os.environ[k] for k in keep if k in os.environ}}


def llm_replicas_in_ray(cfg: Settings, port: int | None = None, serves: str = "llm") -> list[str]:
    """The OpenAI endpoints of the model servers of a Ray cluster: every alive node with the ``llm`` resource, on
    the server's port (deploy/ray-cluster.yaml starts the LLM's, the VLM's and the audio model's on each)."""
    port = cfg.llm.server.port if port is None else port
    found = [f"http://{n['NodeManagerAddress']}:{port}/v1" for n in ray.nodes()
             if n.get("Alive") and n.get("Resources", {}).get("llm")]
    if not found:
        what = "fusion and QA" if serves == "llm" else f"the {serves} requests"
        raise PreflightError(f"preflight failed, nothing was processed:\n- {serves} replicas_from_ray: no alive Ray "
                             "node has the `llm` resource (the LLM nodes of deploy/ray-cluster.yaml); nothing would "
                             f"answer {what}")
    return sorted(found)


def with_served_endpoints(cfg: Settings, pipeline: Pipeline) -> Settings:
    """The profile with each perception model server's replicas found on the llm nodes of the Ray cluster, where
    its endpoint says so (on the port its ``server`` serves, else its base URL's)."""
    for name, (stage, endpoint) in pipeline.served_endpoints(cfg).items():
        if endpoint.replicas_from_ray:
            port = endpoint.server.port if endpoint.server is not None else urlsplit(endpoint.base_url).port
            if port is None:
                raise PreflightError(f"preflight failed, nothing was processed:\n- {name}: replicas_from_ray needs "
                                     "the port its servers listen on (a server section, or a port in base_url)")
            found = llm_replicas_in_ray(cfg, port, name)
            cfg = stage.with_endpoint(cfg, endpoint.model_copy(update={"replicas": found}))
    return cfg


def ensure_ray(cfg: Settings) -> bool:
    """Connect to the configured cluster, or start a local Ray. True when this call started it."""
    if ray.is_initialized():
        return False
    address = os.environ.get("RAY_ADDRESS") or cfg.ray.address
    kwargs = dict(runtime_env=_ray_runtime_env(cfg), include_dashboard=cfg.ray.include_dashboard,
                  logging_level="WARNING", log_to_driver=True)
    if "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ:
        # A Ray job's driver (deploy/submit_job.py): the job's runtime env already reaches every worker, and Ray
        # refuses a second one that sets the same keys.
        kwargs.pop("runtime_env")
    if address:
        ray.init(address=address, **kwargs)
    else:
        # "local": a new Ray of our own. Without it ray.init joins whatever /tmp/ray/ray_current_cluster names (the
        # last `ray start` on this machine, possibly long dead, or another user's cluster).
        ray.init(address="local", num_cpus=cfg.ray.num_cpus, **kwargs)
    return True


@task(name="expand-sources", cache_policy=NO_CACHE, retries=1)
def expand_sources(sources_file: str, cfg: Settings, max_videos: int | None, dataset: str) -> list[str]:
    """Playlists and channels become one source per video (capped); files and direct media stay as they are."""
    out: list[str] = []
    with SourceExpander(cfg.acquire) as expander:
        for src in read_sources(sources_file):
            try:
                expansion = expander.expand(src)
            except Exception:  # noqa: BLE001 — an unexpandable source is tried as is and dead-lettered there
                out.append(src)
                continue
            out += expansion.urls
            for entry, reason in expansion.refused.items():  # never fetched: a dead letter says why
                record_source_failure(dataset, entry, [DeadLetter(
                    stage=StageName.acquire, source_id=entry, error_class="untrusted_entry",
                    message=f"{reason} (listed by {src})", failed_at=utc_now())])
    out = list(dict.fromkeys(out))
    return out[:max_videos] if max_videos else out


@task(name="process-batch", cache_policy=NO_CACHE, retries=0)
def process_batch(batch: list[str], dataset_dir: str, run_key: str, llm_cache: str | None, batch_no: int = 0) -> dict:
    stats = RunStats()  # its own: batches run concurrently; the flow adds them up
    board = progress.BOARDS.get(run_key)
    started = time.time()
    report = video_pipeline.run_batch(batch, video_pipeline.RUNS[run_key], stats,
                                      on_stage=(lambda what: board.stage(batch_no, what)) if board else
                                      (lambda what: None))
    if llm_cache:  # on an object store: the replies this batch received, as a cache shard beside its commits
        llm_cache_store.save_since(DatasetStore.of(dataset_dir), Path(llm_cache), started)
    if board:
        board.batch_done(batch_no, len(report.committed), len(report.failed))
    return {"committed": report.committed, "failed": report.failed, "stats": stats}


@task(name="finalize-dataset", cache_policy=NO_CACHE)
def finalize(dataset_dir: str, cfg: Settings, sources: list[str]) -> dict:
    store = DatasetStore.of(dataset_dir)
    compacted = maybe_compact(store, cfg.compaction)
    if compacted is not None:
        get_run_logger().info("compacted %d keys into size-bounded shards and %d markers into the commit index",
                              compacted.report.keys, compacted.markers)
    consolidate_dead_letters(store)
    manifest = build_manifest(store)
    store.write_bytes("README.md", dataset_card(store, manifest, cfg, Pipeline.from_settings(cfg), sources).encode())
    return {t: e.rows for t, e in manifest.tables.items()}


@flow(name=FLOW_NAME, log_prints=True, persist_result=False)
def build_dataset(sources: str, output: str = "out/dataset", profile: str = "local-cpu",
                  max_videos: int | None = None, batch_size: int = 4, questions_per_type: int | None = None,
                  llm_cache: str | None = None, batches_in_flight: int | None = None) -> dict:
    """Build (or resume) a dataset from a sources file (YAML/CSV/JSONL of URLs, playlists or paths).

    ``questions_per_type`` and ``batches_in_flight``: None keeps the profile's (``qa.questions_per_type``,
    ``ray.batches_in_flight``).
    """
    started = time.perf_counter()
    cfg = load_settings(profile)
    if questions_per_type is not None:
        cfg = cfg.model_copy(update={"qa": cfg.qa.model_copy(update={"questions_per_type": questions_per_type})})
    pipeline = Pipeline.from_settings(cfg)  # a misspelt stage or backend fails here, before any download
    store = DatasetStore.of(output)  # a local folder or an object-store prefix (s3://bucket/prefix, gs://...)
    if store.local:
        store.make_dirs()
    # A location this process cannot write stops the run here, clearly, before the lease is taken in it (every
    # node's check, and the models', follow once the cluster is up).
    problem = check_store(store.uri)
    if problem:
        raise PreflightError(f"preflight failed, nothing was processed:\n- {problem}")
    # One writer at a time: a second run on this dataset stops here, naming the one that holds it.
    lease = DatasetLease(store, f"build-dataset ({command_line()})", ttl_s=cfg.lease.ttl_s,
                         renew_every_s=cfg.lease.renew_every_s).acquire()
    try:
        return _build(sources, store, cfg, pipeline, lease, started=started, max_videos=max_videos,
                      batch_size=batch_size, llm_cache=llm_cache, batches_in_flight=batches_in_flight)
    finally:
        lease.release()


def _build(sources: str, store: DatasetStore, cfg: Settings, pipeline: Pipeline, lease: DatasetLease, *,
           started: float, max_videos: int | None, batch_size: int, llm_cache: str | None,
           batches_in_flight: int | None) -> dict:
    """The run itself, under the dataset's lease."""
    logger = get_run_logger()
    dataset_dir = store.uri
    cache = llm_cache or str(llm_cache_store.cache_path(store, cfg.paths.scratch_dir))
    stats = RunStats()

    all_sources = expand_sources(sources if is_remote(sources) else str(Path(sources).resolve()), cfg, max_videos,
                                 dataset_dir)
    stats.sources = len(all_sources)
    done = committed_sources(dataset_dir)
    swept = sweep_uncommitted(dataset_dir)
    if swept:
        logger.info("removed the shards of %d video(s) a previous run did not commit: %s", len(swept), swept)
    pending = [s for s in all_sources if source_key(s) not in done]
    stats.skipped_committed = len(all_sources) - len(pending)
    # One spelling per video, before any download: the same video as a committed one or an earlier source (found
    # offline from the URL: extractor and id) is a dead letter `duplicate_of=<video id>`, not a failure.
    kept = {ref.video_id: ref.source for ref in done.values()}
    pending, duplicates = dedup_sources(pending, canonical_video_id, kept)
    for dup in duplicates:
        record_source_failure(store, dup.source, [DeadLetter(
            stage=StageName.acquire, source_id=dup.source, video_id=dup.video_id, error_class=DUPLICATE,
            message=f"duplicate_of={dup.video_id}: the same video as {dup.kept}", failed_at=utc_now())])
    stats.duplicates = len(duplicates)
    if duplicates:
        logger.info("%d source(s) are another spelling of a video already listed or committed", len(duplicates))
    board = progress.BOARDS[dataset_dir] = progress.ProgressBoard(dataset_dir, len(pending), stats.skipped_committed)
    logger.info("%d sources, %d already committed, %d to process", len(all_sources), stats.skipped_committed,
                len(pending))

    started_ray = ensure_ray(cfg) if pending else False
    if pending:
        if cfg.llm.replicas_from_ray and pipeline.of("llm"):
            cfg = cfg.model_copy(update={"llm": cfg.llm.model_copy(update={"replicas": llm_replicas_in_ray(cfg)})})
            logger.info("LLM replicas: %s", ", ".join(cfg.llm.endpoints))
        cfg = with_served_endpoints(cfg, pipeline)
        served = {name: (ep.endpoints, ep.api_key.get_secret_value())
                  for name, (_, ep) in pipeline.served_endpoints(cfg).items()}
        for name, (urls, _) in served.items():
            logger.info("%s servers: %s", name, ", ".join(urls))
        # Every node can write and read the dataset and holds the models its stages load, and every LLM replica
        # answers (when the pipeline has an LLM stage), before anything is downloaded.
        models = models_by_node_type(cfg)
        models.pop("train")  # a training job's, not this run's
        if not cfg.llm.replicas_from_ray:
            models.pop("llm")  # the LLM servers are not the cluster's llm nodes
        preflight(dataset_dir, llm_base_url=cfg.llm.endpoints if pipeline.of("llm") else None,
                  llm_api_key=cfg.llm.api_key.get_secret_value(), models=models,
                  pins={m.repo: m.revision for m in cfg.models}, served=served)
        restored = llm_cache_store.restore(store, Path(cache))
        if restored:
            logger.info("LLM cache: %d replies restored from %s", restored, store.url(llm_cache_store.SHARD_DIR))
    # The run's placed stages are found by key (Prefect task parameters stay plain data); the flow function is
    # pickled by value when served, so shared state must live in an imported module, not in this one's globals.
    run_key = dataset_dir
    console = Console(stderr=True)
    in_flight: deque = deque()
    try:
        if pending:
            video_pipeline.RUNS[run_key] = video_pipeline.RunStages.create(cfg, store, Path(cache), lease)
            batches = [pending[i:i + batch_size] for i in range(0, len(pending), batch_size)]

            def collect_oldest() -> None:
                n, future = in_flight.popleft()
                result = future.result()  # a batch that raised fails the flow, as a direct call would
                stats.add_batch(result["stats"])
                console.print(f"[bold]batch {n}/{len(batches)}[/]: {len(result['committed'])} committed, "
                              f"{len(result['failed'])} failed")

            for n, batch in enumerate(batches, start=1):
                board.stage(n, "queued")
                in_flight.append((n, process_batch.with_options(task_run_name=f"batch-{n:04d}-of-{len(batches):04d}")
                                  .submit(batch, dataset_dir, run_key, cache, n)))
                if len(in_flight) >= (batches_in_flight or cfg.ray.batches_in_flight):
                    collect_oldest()
            while in_flight:
                collect_oldest()
            stats.workers = [w.model_dump() for w in video_pipeline.RUNS[run_key].worker_stats()]
    finally:
        for _, future in in_flight:  # a batch failed: let the others finish before their Ray goes away
            future.wait()
        video_pipeline.RUNS.pop(run_key, None)
        progress.BOARDS.pop(run_key, None)
        board.finish()
        if started_ray:
            ray.shutdown()

    rows = finalize(dataset_dir, cfg, all_sources)
    stats.wall_s = time.perf_counter() - started
    markdown = run_markdown(stats, dataset_dir, cfg, pipeline)
    create_markdown_artifact(markdown=markdown, key="build-dataset-summary", description="build-dataset run summary")
    summary = {"dataset": str(dataset_dir), "rows": rows, "report": markdown, "videos_ok": stats.videos_ok,
               "videos_failed": stats.videos_failed, "skipped_committed": stats.skipped_committed,
               "duplicates": stats.duplicates,
               "qa_by_type": dict(stats.qa_by_type), "dead_letters_by_stage": dict(stats.dead_letters_by_stage),
               "llm": dict(stats.llm), "seconds_by_stage": dict(stats.seconds_by_stage), "wall_s": stats.wall_s,
               "cpu_seconds_by_stage": dict(stats.cpu_seconds_by_stage), "video_seconds": stats.video_seconds,
               "cost_per_accepted": stats.cost_rows(),
               "stages": {name: s.model_dump(mode="json") for name, s in stats.stages.items()},
               "workers": stats.workers}
    summary["run_record"] = write_run_record(store, summary, utc_now().strftime("%Y-%m-%dT%H:%M:%SZ"))
    console.print(markdown)
    logger.info("cost per accepted item: %s", stats.cost_line())
    return summary
