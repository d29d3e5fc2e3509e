"""What a run tells people: per-run statistics, the Prefect markdown artifact, and the dataset card."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, Field

from schemas.manifest import Manifest
from schemas.records import SCHEMA_VERSION
from schemas.settings import Settings
from schemas.shards import visible_shards
from schemas.store import DatasetLike, DatasetStore


class RunStats(BaseModel):
    """Counts and seconds of one run; stages add to it, the flow reports it."""

    sources: int = 0
    skipped_committed: int = 0
    duplicates: int = 0  # sources (or downloads) that were a video already listed or committed: not failures
    videos_ok: int = 0
    videos_failed: int = 0
    clips: int = 0
    qa_by_type: Counter = Field(default_factory=Counter)
    dead_letters_by_stage: Counter = Field(default_factory=Counter)
    seconds_by_stage: Counter = Field(default_factory=Counter)
    llm: Counter = Field(default_factory=Counter)  # requests, cache_hits, prompt_tokens, completion_tokens, ...
    workers: list[dict] = Field(default_factory=list)  # infra.worker.WorkerStats of the run's model workers
    # What perception found in committed videos: audio event label -> events, COCO class -> keyframes showing it.
    audio_events: Counter = Field(default_factory=Counter)
    objects: Counter = Field(default_factory=Counter)
    keyframes: int = 0
    keyframes_with_objects: int = 0
    # LLM cost per phase (the client's counters of each phase's requests) and what each phase produced.
    llm_fuse: Counter = Field(default_factory=Counter)
    llm_qa: Counter = Field(default_factory=Counter)
    descriptions: int = 0
    descriptions_from_facts: int = 0  # written from the clip facts: the LLM's replies named what nobody reported
    qa_drafts: int = 0  # schema-valid QA candidates that went through the checks
    qa_check_failures: Counter = Field(default_factory=Counter)  # check name -> drafts it rejected
    wall_s: float = 0.0

    def add_seconds(self, seconds: dict[str, float]) -> None:
        self.seconds_by_stage.update({k: float(v) for k, v in seconds.items()})

    def add_batch(self, batch: "RunStats") -> None:
        """Add what one batch counted (batches run concurrently, each with its own stats)."""
        self.videos_ok += batch.videos_ok
        self.videos_failed += batch.videos_failed
        self.duplicates += batch.duplicates
        self.clips += batch.clips
        self.keyframes += batch.keyframes
        self.keyframes_with_objects += batch.keyframes_with_objects
        self.descriptions += batch.descriptions
        self.descriptions_from_facts += batch.descriptions_from_facts
        self.qa_drafts += batch.qa_drafts
        for mine, theirs in ((self.qa_by_type, batch.qa_by_type), (self.llm, batch.llm),
                             (self.llm_fuse, batch.llm_fuse), (self.llm_qa, batch.llm_qa),
                             (self.qa_check_failures, batch.qa_check_failures),
                             (self.audio_events, batch.audio_events), (self.objects, batch.objects),
                             (self.dead_letters_by_stage, batch.dead_letters_by_stage),
                             (self.seconds_by_stage, batch.seconds_by_stage)):
            mine.update(theirs)


    @property
    def qa_items(self) -> int:
        return sum(self.qa_by_type.values())

    def cost_rows(self) -> list[dict]:
        """Per LLM phase: what it sent and generated, its seconds, what it produced, and the cost per accepted
        record (fused description, QA item)."""
        rows = []
        for phase, llm, accepted in (("fuse", self.llm_fuse, self.descriptions), ("qa", self.llm_qa, self.qa_items)):
            seconds = float(self.seconds_by_stage.get(phase, 0.0))
            per = (lambda v: round(v / accepted, 1)) if accepted else (lambda v: None)
            rows.append({"phase": phase, "requests": llm.get("requests_sent", 0),
                         "prompt_tokens": llm.get("prompt_tokens", 0),
                         "completion_tokens": llm.get("completion_tokens", 0), "llm_s": round(seconds, 1),
                         "accepted": accepted, "prompt_per_accepted": per(llm.get("prompt_tokens", 0)),
                         "completion_per_accepted": per(llm.get("completion_tokens", 0)),
                         "seconds_per_accepted": per(seconds)})
        return rows

    def check_rows(self) -> list[dict]:
        """Per QA check: the drafts it rejected and the share of drafts that passed it."""
        return [{"check": name, "rejected": n,
                 "pass_rate": round(1 - n / self.qa_drafts, 3) if self.qa_drafts else None}
                for name, n in sorted(self.qa_check_failures.items(), key=lambda kv: -kv[1])]

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
        rate = f"{self.qa_items}/{self.qa_drafts} QA drafts accepted" if self.qa_drafts else "no QA drafts"
        return "; ".join(parts) + f"; {rate}"


def _per(value) -> str:
    return "-" if value is None else f"{value:g}"


def _table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def run_markdown(stats: RunStats, dataset_dir: Path, profile: str) -> str:
    parts = [
        f"# build-dataset run: `{dataset_dir}`",
        f"Profile `{profile}`, wall time {stats.wall_s:.1f} s.",
        _table(["sources", "already committed", "duplicates", "videos ok", "videos failed", "clips"],
               [[stats.sources, stats.skipped_committed, stats.duplicates, stats.videos_ok, stats.videos_failed,
                 stats.clips]]),
        "## QA by type",
        _table(["type", "items"], [[t, n] for t, n in sorted(stats.qa_by_type.items())] or [["-", 0]]),
        "## Time per stage (summed over workers)",
        _table(["stage", "seconds"], [[s, f"{v:.1f}"] for s, v in sorted(stats.seconds_by_stage.items())]
               or [["-", 0]]),
        "## LLM",
        _table(["counter", "value"], [[k, v] for k, v in sorted(stats.llm.items())] or [["-", 0]]),
        "## Cost per accepted item",
        _table(["phase", "requests", "prompt tokens", "generated tokens", "LLM s", "accepted", "prompt / accepted",
                "generated / accepted", "s / accepted"],
               [[r["phase"], r["requests"], r["prompt_tokens"], r["completion_tokens"], r["llm_s"], r["accepted"],
                 _per(r["prompt_per_accepted"]), _per(r["completion_per_accepted"]),
                 _per(r["seconds_per_accepted"])] for r in stats.cost_rows()]),
        f"Fused descriptions: {stats.descriptions - stats.descriptions_from_facts} by the LLM, "
        f"{stats.descriptions_from_facts} written from the clip facts (the LLM's replies named what perception never "
        f"reported). QA: {stats.qa_items} of {stats.qa_drafts} phrased questions accepted.",
        _table(["QA check", "drafts rejected", "pass rate"],
               [[r["check"], r["rejected"], _per(r["pass_rate"])] for r in stats.check_rows()] or [["-", 0, "-"]]),
        "## Dead letters by stage",
        _table(["stage", "count"], [[s, n] for s, n in sorted(stats.dead_letters_by_stage.items())] or [["-", 0]]),
        "## Perception found",
        _table(["what", "count", "most frequent"], [
            ["audio events", sum(stats.audio_events.values()), _top(stats.audio_events)],
            ["keyframes with a COCO object", f"{stats.keyframes_with_objects} of {stats.keyframes}",
             _top(stats.objects)],
        ]),
        "## Model workers",
        _table(["stage", "model", "loads", "setup s", "videos", "clips", "seconds"],
               [[w["stage"], w["model"], w["model_loads"], f"{w['setup_s']:.1f}", w["videos"], w["clips"],
                 f"{w['seconds']:.1f}"] for w in stats.workers] or [["-", "-", 0, 0, 0, 0, 0]]),
    ]
    return "\n\n".join(parts) + "\n"


def _top(counts: Counter, n: int = 8) -> str:
    return ", ".join(f"{escape_cell(k)} ({v})" for k, v in counts.most_common(n)) or "-"


def escape_cell(text: str) -> str:
    """Labels come from models and OCR'd video text: data, never table syntax."""
    return str(text).replace("|", "\\|").replace("\n", " ")


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


def models_table(dataset_dir: DatasetLike, cfg: Settings) -> list[list[str]]:
    """Each stage's registered backend, the real model it runs (the backend's ``model_card``), and the model names
    the rows themselves carry (``audio_events.tagger``, ``visual_captions.captioner``)."""
    from tasks.captioners import CAPTIONERS
    from tasks.scene_detectors import DETECTORS
    from tasks.taggers import TAGGERS
    from tasks.transcribers import TRANSCRIBERS

    dataset_dir = DatasetStore.of(dataset_dir)

    def card(registry, kind: str, section) -> str:
        described = getattr(registry.get(kind), "model_card", None)
        return described(section) if callable(described) else (described or kind)

    return [
        ["ASR", f"`{cfg.asr.kind}`", card(TRANSCRIBERS, cfg.asr.kind, cfg.asr), "-"],
        ["audio events", f"`{cfg.audio_tagger.kind}`", card(TAGGERS, cfg.audio_tagger.kind, cfg.audio_tagger),
         _distinct(dataset_dir, "audio_events", "tagger")],
        ["keyframe captions", f"`{cfg.visual_captioner.kind}`",
         card(CAPTIONERS, cfg.visual_captioner.kind, cfg.visual_captioner),
         _distinct(dataset_dir, "visual_captions", "captioner")],
        ["scene cuts", f"`{cfg.segment.detector}`", card(DETECTORS, cfg.segment.detector, cfg.segment), "-"],
        ["fusion and QA", "OpenAI-compatible server", f"`{cfg.llm.resolved_model}`", "-"],
    ]


DEAD_LETTER = "dead_letter"
HF_MAX_LISTED_FILES = 2000  # beyond this a config names its folder's glob (compaction keeps tables below it)


def hf_configs(manifest: Manifest) -> str:
    """The card's YAML header in the Hugging Face datasets convention: one config per table with rows, so
    `load_dataset(<folder>, "qa")` and the Hub's viewer read each table from its Parquet shards. The files are
    listed (those with rows: a reader of an empty Parquet file fails), or globbed for a table of very many."""
    lines = ["---", "configs:"]
    entries = {t: e.shards for t, e in manifest.tables.items() if t != DEAD_LETTER}
    entries[DEAD_LETTER] = [f for f in manifest.files if f.file == f"{DEAD_LETTER}.parquet"]
    for table, shards in sorted(entries.items()):
        files = [s.file for s in shards if s.rows > 0]
        if not files:
            continue
        lines.append(f"- config_name: {table}")
        if len(files) > HF_MAX_LISTED_FILES:
            lines.append(f'  data_files: "{table}/*.parquet"')
        else:
            lines.append("  data_files:")
            lines += [f'  - "{f}"' for f in files]
    return "\n".join(lines + ["---", ""])


def dataset_card(dataset_dir: DatasetLike, manifest: Manifest, cfg: Settings, sources: list[str]) -> str:
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
        _table(["table", "rows"], [[t, _rows(store, manifest, t)] for t in tables]),
        _table(["QA type", "items"], [[t, n] for t, n in sorted(qa_types.items())] or [["-", 0]]),
        _table(["dead letters by stage", "count"], [[s, n] for s, n in sorted(dead_by_stage.items())] or [["-", 0]]),
        "## Models",
        _table(["stage", "backend", "model", "named in the rows"], models_table(store, cfg)),
        f"## Sources ({len(sources)})",
        "\n".join(f"- `{s}`" for s in sources[:200]) + ("\n- ..." if len(sources) > 200 else ""),
        "## Files",
        "Each table is a folder of Parquet shards (zstd), one key per video; `dead_letter.parquet` lists every "
        "failed source or item with its stage and reason; `manifest.json` lists every shard with its row count and "
        "sha256. Media, 16 kHz audio and keyframes are under `media/`, `audio/` and `keyframes/`, named by video id.",
        "## Loading",
        "```python\nimport pyarrow.dataset as ds\nclips = ds.dataset('clips', format='parquet').to_table().to_pandas()\n"
        "qa = ds.dataset('qa', format='parquet').to_table().to_pandas()\n\n"
        "# or validated records:\nfrom schemas.shards import read_records\nfrom schemas.records import QAItem\n"
        "items = read_records('.', 'qa', QAItem)\n```",
    ]) + "\n"
