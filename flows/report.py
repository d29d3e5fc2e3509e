"""What a run tells people: per-run statistics, the Prefect markdown artifact, and the dataset card."""

from __future__ import annotations

from collections import Counter
from dataclasses import fields
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, Field

from infra.llm_client import LLMStats
from infra.markdown import escape_cell, table
from infra.pipeline import Pipeline
from schemas.handoff import StageStats
from schemas.manifest import Manifest
from schemas.records import SCHEMA_VERSION, StageName
from schemas.settings import Settings
from schemas.shards import visible_shards
from schemas.store import DatasetLike, DatasetStore


LLM_COUNTERS = tuple(f.name for f in fields(LLMStats))  # what an LLM stage's client counts (its teardown's counts)


class RunStats(BaseModel):
    """Counts and seconds of one run: the run's own (sources, videos committed or failed) and each stage's
    (``infra.stage``: videos, rows, dead letters, seconds, its own counters), keyed by stage name."""

    sources: int = 0
    skipped_committed: int = 0
    duplicates: int = 0  # sources (or downloads) that were a video already listed or committed: not failures
    videos_ok: int = 0
    videos_failed: int = 0
    clips: int = 0  # of committed videos
    video_seconds: float = 0.0  # of committed videos: what per-stage throughput is counted against
    dead_letters_by_stage: Counter = Field(default_factory=Counter)  # dead letters filed into the dataset
    stages: dict[str, StageStats] = Field(default_factory=dict)
    workers: list[dict] = Field(default_factory=list)  # WorkerStats of the run's actors and driver stages
    wall_s: float = 0.0

    def stage(self, name: str) -> StageStats:
        return self.stages.setdefault(name, StageStats())

    def add_batch(self, batch: "RunStats") -> None:
        """Add what one batch counted (batches run concurrently, each with its own stats)."""
        for name in ("videos_ok", "videos_failed", "duplicates", "clips", "video_seconds"):
            setattr(self, name, getattr(self, name) + getattr(batch, name))
        self.dead_letters_by_stage.update(batch.dead_letters_by_stage)
        for name, stats in batch.stages.items():
            self.stage(name).add(stats)

    @property
    def seconds_by_stage(self) -> Counter:
        return Counter({name: s.seconds for name, s in self.stages.items()})

    @property
    def cpu_seconds_by_stage(self) -> Counter:
        return Counter({name: s.cpu_seconds for name, s in self.stages.items()})

    @property
    def llm(self) -> Counter:
        """The LLM client counters of every LLM stage, added up."""
        return sum((Counter({k: v for k, v in s.counts.items() if k in LLM_COUNTERS}) for s in self.stages.values()),
                   Counter())

    @property
    def qa_by_type(self) -> Counter:
        return self.stages[StageName.qa].tally("type") if StageName.qa in self.stages else Counter()

    @property
    def qa_items(self) -> int:
        return sum(self.qa_by_type.values())

    def cost_rows(self) -> list[dict]:
        """Per LLM stage: what it sent and generated, its seconds, what it produced, and the cost per accepted
        row (a fused description, a QA item)."""
        rows = []
        for name, s in self.stages.items():
            if "requests_sent" not in s.counts:
                continue
            accepted = sum(s.rows.values())
            prompt, completion = s.counts.get("prompt_tokens", 0), s.counts.get("completion_tokens", 0)

            def per(v: float, accepted: int = accepted) -> float | None:
                return round(v / accepted, 1) if accepted else None

            rows.append({"phase": name, "requests": int(s.counts["requests_sent"]), "prompt_tokens": int(prompt),
                         "completion_tokens": int(completion), "llm_s": round(s.seconds, 1),
                         "accepted": accepted, "prompt_per_accepted": per(prompt),
                         "completion_per_accepted": per(completion),
                         "seconds_per_accepted": per(s.seconds)})
        return rows

    def cost_line(self) -> str:
        parts = []
        for r in self.cost_rows():
            if r["accepted"]:
                parts.append(f"{r['phase']}: {r['accepted']} accepted, {r['prompt_per_accepted']:.0f} prompt + "
                             f"{r['completion_per_accepted']:.0f} generated tokens and "
                             f"{r['seconds_per_accepted']:.1f} s each")
            else:
                parts.append(f"{r['phase']}: none accepted ({r['prompt_tokens']} prompt + "
                             f"{r['completion_tokens']} generated tokens spent)")
        qa = self.stages.get(StageName.qa)
        drafts = int(qa.counts.get("drafts", 0)) if qa else 0
        rate = f"{self.qa_items}/{drafts} QA drafts accepted" if drafts else "no QA drafts"
        return "; ".join(parts) + f"; {rate}"


def _per(value) -> str:
    return "-" if value is None else f"{value:g}"


def stage_rows(stats: RunStats, pipeline: Pipeline, settings: Settings) -> list[list[object]]:
    """A row per stage of the pipeline: where it ran, its backend, what it did and wrote."""
    rows = []
    for stage in pipeline.stages:
        s = stats.stages.get(stage.name, StageStats())
        kind = stage.backend_kind(stage.section_of(settings)) or "-"
        written = ", ".join(f"{t} {s.rows[t]}" for t in stage.writes) or "-"
        rows.append([stage.name, stage.placement, escape_cell(kind), s.videos, s.failed, s.skipped, written,
                     s.dead_letters, f"{s.seconds:.1f}"])
    return rows


def run_markdown(stats: RunStats, dataset_dir: Path | str, settings: Settings, pipeline: Pipeline) -> str:
    parts = [
        f"# build-dataset run: `{dataset_dir}`",
        f"Profile `{settings.profile}`, wall time {stats.wall_s:.1f} s.",
        table(["sources", "already committed", "duplicates", "videos ok", "videos failed", "clips"],
              [[stats.sources, stats.skipped_committed, stats.duplicates, stats.videos_ok, stats.videos_failed,
                stats.clips]]),
        "## Stages",
        "Seconds are summed over videos (over workers), or the batch's wall time for the LLM stages.",
        table(["stage", "placement", "backend", "videos", "failed", "skipped", "rows written", "dead letters",
               "seconds"], stage_rows(stats, pipeline, settings)),
        "## LLM",
        "Servers (replicas, requests spread over them): "
        + ", ".join(f"`{public_source(u)}`" for u in settings.llm.endpoints) + "."
        + "".join(f" {name} servers: " + ", ".join(f"`{public_source(u)}`" for u in ep.endpoints) + "."
                  for name, (_, ep) in pipeline.served_endpoints(settings).items()),
        table(["counter", "value"], [[k, v] for k, v in sorted(stats.llm.items())] or [["-", 0]]),
        "## Cost per accepted item",
        table(["phase", "requests", "prompt tokens", "generated tokens", "LLM s", "accepted", "prompt / accepted",
               "generated / accepted", "s / accepted"],
              [[r["phase"], r["requests"], r["prompt_tokens"], r["completion_tokens"], r["llm_s"], r["accepted"],
                _per(r["prompt_per_accepted"]), _per(r["completion_per_accepted"]),
                _per(r["seconds_per_accepted"])] for r in stats.cost_rows()] or [["-"] * 9]),
        "## What the stages found",
        *[line for stage in pipeline.stages if stage.name in stats.stages
          for line in stage.report_lines(stats.stages[stage.name])],
        "## Dead letters by stage",
        table(["stage", "count"], [[s, n] for s, n in sorted(stats.dead_letters_by_stage.items())] or [["-", 0]]),
        "## Workers",
        "Where each actor and driver stage ran, the GPUs Ray gave it, and how busy it kept them (seconds inside "
        "`process` over its life).",
        table(["stage", "model", "node", "GPUs", "loads", "setup s", "videos", "clips", "seconds", "busy"],
              [[w["stage"], escape_cell(w["model"]), f"{w.get('node_type') or '-'} ({w['node']})",
                ",".join(w.get("gpus") or []) or "-", w["model_loads"], f"{w['setup_s']:.1f}", w["videos"],
                w["clips"], f"{w['seconds']:.1f}",
                f"{w['seconds'] / w['alive_s']:.0%}" if w.get("alive_s") else "-"] for w in stats.workers]
              or [["-", "-", "-", "-", 0, 0, 0, 0, 0, "-"]]),
    ]
    return "\n\n".join(parts) + "\n"


def _rows(dataset_dir: DatasetStore, manifest: Manifest, table: str) -> int:
    entry = manifest.tables.get(table)
    return entry.rows if entry else 0


def _column(store: DatasetStore, table: str, column: str) -> list:
    """One column of every shard of ``table`` (local folder or object store)."""
    values: list = []
    for rel in visible_shards(store, table):
        values += pq.read_table(pa.BufferReader(store.read_bytes(rel)), columns=[column]).column(column).to_pylist()
    return values


def _distinct(store: DatasetStore, table: str, column: str) -> str:
    names = set(_column(store, table, column))
    return ", ".join(f"`{escape_cell(n)}`" for n in sorted(names)) or "-"


def models_table(dataset_dir: DatasetLike, settings: Settings, pipeline: Pipeline) -> list[list[str]]:
    """Each stage that runs a model: its registered backend, the real model (the backend's ``model_card``; the LLM
    server's model for LLM stages), and the model names the rows themselves carry (``Stage.model_column``)."""
    store = DatasetStore.of(dataset_dir)
    rows = []
    for stage in pipeline.stages:
        if stage.placement == "llm":
            served, weights = settings.llm.resolved_model, settings.llm.server.model
            model = f"`{served}`" if settings.llm.server.kind == "external" or weights == served else \
                f"`{weights}` (served as `{served}`)"
            rows.append([stage.title or stage.name, "OpenAI-compatible server", model, "-"])
            continue
        kind = stage.backend_kind(stage.section_of(settings))
        if kind is None:
            continue
        named = _distinct(store, *stage.model_column) if stage.model_column else "-"
        rows.append([stage.title or stage.name, f"`{kind}`", stage.model_card(settings), named])
    return rows


def public_source(source: str) -> str:
    """A source as a published card may show it: a URL without user, password, query or fragment (a signed URL's
    token is in its query), a local path by its file name only (a home folder names a person)."""
    parts = urlsplit(source)
    if not parts.scheme or parts.scheme == "file":
        return f".../{Path(parts.path or source).name}"
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", "")) + ("?..." if parts.query else "")


DEAD_LETTER = "dead_letter"
HF_MAX_LISTED_FILES = 2000  # beyond this a config names its folder's glob (compaction keeps tables below it)


def hf_configs(manifest: Manifest) -> str:
    """The card's YAML header in the Hugging Face datasets convention: one config per table with rows, so
    `load_dataset(<folder>, "qa")` and the Hub's viewer read each table from its Parquet shards. The files are
    listed (those with rows: a reader of an empty Parquet file fails), or globbed for a table of very many."""
    lines = ["---", "configs:"]
    entries = {t: e.shards for t, e in manifest.tables.items() if t != DEAD_LETTER}
    entries[DEAD_LETTER] = [f for f in manifest.files if f.file == f"{DEAD_LETTER}.parquet"]
    for name, shards in sorted(entries.items()):
        files = [s.file for s in shards if s.rows > 0]
        if not files:
            continue
        lines.append(f"- config_name: {name}")
        if len(files) > HF_MAX_LISTED_FILES:
            lines.append(f'  data_files: "{name}/*.parquet"')
        else:
            lines.append("  data_files:")
            lines += [f'  - "{f}"' for f in files]
    return "\n".join(lines + ["---", ""])


def dataset_card(dataset_dir: DatasetLike, manifest: Manifest, cfg: Settings, pipeline: Pipeline,
                 sources: list[str]) -> str:
    """The README.md written into the dataset folder."""
    store = DatasetStore.of(dataset_dir)
    qa_types: Counter = Counter(_column(store, "qa", "type"))
    dead = "dead_letter.parquet"
    dead_by_stage: Counter = Counter(
        pq.read_table(pa.BufferReader(store.read_bytes(dead)), columns=["stage"]).column("stage").to_pylist()
        if store.exists(dead) else [])
    tables = sorted(manifest.tables)
    header = hf_configs(manifest)
    return header + "\n\n".join([
        "# SAVEn-Vid dataset",
        f"Schema version {SCHEMA_VERSION}; built with profile `{cfg.profile}`.",
        "## Counts",
        table(["table", "rows"], [[t, _rows(store, manifest, t)] for t in tables]),
        table(["QA type", "items"], [[t, n] for t, n in sorted(qa_types.items())] or [["-", 0]]),
        table(["dead letters by stage", "count"], [[s, n] for s, n in sorted(dead_by_stage.items())] or [["-", 0]]),
        "## Models",
        table(["stage", "backend", "model", "named in the rows"], models_table(store, cfg, pipeline)),
        f"## Sources ({len(sources)})",
        "Query strings, user names and folders are left out here (a signed URL or a home folder is not for a "
        "published card); the `dead_letter` and `videos` tables keep each source as given.",
        "\n".join(f"- `{escape_cell(public_source(s))}`" for s in sources[:200])
        + ("\n- ..." if len(sources) > 200 else ""),
        "## Files",
        "Each table is a folder of Parquet shards (zstd), one key per video; `dead_letter.parquet` lists every "
        "failed source or item with its stage and reason; `manifest.json` lists every shard with its row count and "
        "sha256. Media, 16 kHz audio and keyframes are under `media/`, `audio/` and `keyframes/`, named by video id.",
        "## Loading",
        "```python\nimport pyarrow.dataset as ds\n"
        "clips = ds.dataset('clips', format='parquet').to_table().to_pandas()\n"
        "qa = ds.dataset('qa', format='parquet').to_table().to_pandas()\n\n"
        "# or validated records:\nfrom schemas.shards import read_records\nfrom schemas.records import QAItem\n"
        "items = read_records('.', 'qa', QAItem)\n```",
    ]) + "\n"


RUNS_DIR = "_runs"  # one JSON per build-dataset run: what each stage did and how long it took (tests/perf/cost_model)


def write_run_record(store: DatasetStore, summary: dict, finished_at: str) -> str:
    """The run's summary (counts, seconds and LLM tokens per stage, workers) as ``_runs/run-<UTC time>.json`` in
    the dataset, for the per-stage throughput and cost figures; returns the path written, relative to the dataset.
    The markdown report is left out (it is the same numbers, for people)."""
    import json

    rel = f"{RUNS_DIR}/run-{finished_at.replace(':', '').replace('-', '')}.json"
    record = {"finished_at": finished_at, **{k: v for k, v in summary.items() if k != "report"}}
    store.write_bytes(rel, (json.dumps(record, indent=1, sort_keys=True, default=str) + "\n").encode())
    return rel

