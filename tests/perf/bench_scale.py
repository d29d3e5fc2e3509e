"""The dataset at 100k videos: files per table, a resume with nothing to do, a resume that adds 100 videos, reading
the QA table (pyarrow, duckdb), and deduplicating a 10k-source list, before and after compaction.

The datasets are synthetic but real: every row is a row of the real schemas (one template video of real records,
its ids rewritten per video, ~10 clips and ~15 QA items each), written in the layouts the pipeline writes: one
shard per table per video with a commit marker per video (before compaction), or the compacted shards and commit
index that ``saven compact`` leaves (after). Measured here:

- ``--before`` videos (default 10k) written loose: files per table, the no-op resume (list committed, sweep,
  finalize: compaction check, dead letters, incremental manifest, card), reading QA; then ``saven compact``'s
  work on it, and the same measures after.
- ``--videos`` (default 100k) in the compacted layout: the no-op resume (target <= 10 s), adding 100 videos
  (against the same at ``--before`` videos: the cost follows the 100, not the dataset), reading QA.
- 10k sources with 30% other spellings of listed videos: ``dedup_sources`` with the offline canonical ids.

    python tests/perf/bench_scale.py [out/perf/scale.json] [--videos 100000] [--before 10000] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from perf_rows import row, write_report

from schemas.commit import COMMIT_DIR, INDEX_PREFIX, CommitMarker, committed_sources, sweep_uncommitted
from schemas.records import VIDEO_TABLES
from flows.compact import compact_dataset, maybe_compact
from flows.report import dataset_card
from infra.pipeline import Pipeline
from flows.sources import dedup_sources
from schemas.commit import source_key
from schemas.arrow import arrow_schema, to_row
from schemas.manifest import build_manifest
from schemas.records import (ALL_RECORDS, AudioEvent, AudioAxis, DeadLetter, KeyframeHash, QAType, StageName,
                             utc_now)
from schemas.settings import load_settings
from schemas.shards import (_KEY, _PART, _PARTS, _WRITE_ID, COMPRESSION, KEY_ROWS, compacted_name,
                            compacted_shards, consolidate_dead_letters, parquet_bytes, read_table, visible_shards)
from tasks.acquire import canonical_video_id

TEMPLATE = "local-tmpl0000000000"
TABLES = (*VIDEO_TABLES, "dead_letter")


# -- a template video of real records, and N copies of it with their ids rewritten --------------------------------


def template_tables() -> dict[str, pa.Table]:
    import llm_samples as S
    from test_benchmark_support import make_question, make_video

    video, clips, descriptions, speech = make_video(TEMPLATE, 3)
    base = S.clips(TEMPLATE)
    clips = base + [base[0].model_copy(update={"clip_id": f"{TEMPLATE}.c{i:04d}", "index": i,
                                               "start_s": 60.0 + 10 * (i - 5), "end_s": 70.0 + 10 * (i - 5),
                                               "keyframe_times": [65.0 + 10 * (i - 5)]})
                    for i in range(5, 10)]
    records = {
        "videos": [video.model_copy(update={"duration_s": 110.0})],
        "clips": clips,
        "speech": S.speech(TEMPLATE) * 3,
        "audio_events": [AudioEvent(video_id=TEMPLATE, clip_id=c.clip_id, start_s=c.start_s + k, end_s=c.start_s + k
                                    + 1, label=label, axis=AudioAxis.event, score=0.5, tagger="yamnet")
                         for c in clips for k, label in enumerate(("Music", "Speech", "Dog", "Bird"))],
        "audio_captions": S.audio_captions(TEMPLATE) * 2,
        "visual_captions": S.visual_captions(TEMPLATE) * 3,
        "descriptions": S.descriptions(TEMPLATE) * 2,
        "qa": [make_question(TEMPLATE, 3, t, clips[:4], salt=str(k)) for t in QAType for k in range(3)],
        "fingerprints": [KeyframeHash(video_id=TEMPLATE, clip_id=c.clip_id, t=c.start_s + k, dhash=f"{k:016x}")
                         for c in clips for k in range(3)],
        "dedup": [],
        "dead_letter": [DeadLetter(stage=StageName.qa, video_id=TEMPLATE, error_class="check:options_distinct",
                                   message="options repeat", failed_at=utc_now())],
    }
    out = {}
    for table, rows in records.items():
        model = ALL_RECORDS[table]
        out[table] = pa.Table.from_pylist([to_row(model.model_validate(r.model_dump())) for r in rows],
                                          schema=arrow_schema(model))
    return out


def _swap_prefix(column: pa.ChunkedArray | pa.Array, per_row_ids: pa.Array) -> pa.Array:
    """``column``'s template video id replaced by each row's own (strings, or lists of strings)."""
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_list(column.type):
        lengths = pc.list_value_length(column).fill_null(0).to_numpy(zero_copy_only=False)
        flat = _swap_prefix(pc.list_flatten(column), pa.array(np.repeat(per_row_ids.to_numpy(zero_copy_only=False),
                                                                          lengths)))
        return pa.ListArray.from_arrays(column.offsets, flat)
    suffix = pc.utf8_slice_codeunits(column, len(TEMPLATE))
    swapped = pc.binary_join_element_wise(per_row_ids, suffix, "")
    starts = pc.starts_with(column, TEMPLATE)
    return pc.if_else(starts, swapped, column)


def copies(template: dict[str, pa.Table], ids: list[str]) -> dict[str, pa.Table]:
    """The template video's rows once per id, every id-valued column rewritten."""
    out = {}
    for table, tmpl in template.items():
        if tmpl.num_rows == 0:
            out[table] = tmpl
            continue
        big = pa.concat_tables([tmpl] * len(ids))
        per_row = pa.array(np.repeat(np.array(ids, dtype=object), tmpl.num_rows), type=pa.string())
        cols = []
        for name in big.column_names:
            col = big.column(name)
            sample = tmpl.column(name)
            is_str = pa.types.is_string(sample.type) or (pa.types.is_list(sample.type)
                                                         and pa.types.is_string(sample.type.value_type))
            text = json.dumps(sample.to_pylist()[:3], default=str)
            cols.append(_swap_prefix(col, per_row) if is_str and TEMPLATE in text else col.combine_chunks())
        out[table] = pa.Table.from_arrays(cols, schema=big.schema)
    return out


def ids_for(start: int, n: int) -> list[str]:
    return [f"local-{i:016x}" for i in range(start, start + n)]


def source_of(vid: str) -> str:
    return f"/data/videos/{vid}.mp4"


def _marker(vid: str, rows: dict[str, int]) -> CommitMarker:
    return CommitMarker(source=source_of(vid), source_key=source_key(source_of(vid)), video_id=vid, rows=rows,
                        invalid_rows=0, committed_at=utc_now())


def write_loose(root: Path, template: dict[str, pa.Table], ids: list[str]) -> None:
    """One shard per table per video and a marker per video: what the pipeline commits."""
    data = copies(template, ids)
    for table in TABLES:
        (root / table).mkdir(parents=True, exist_ok=True)
    (root / COMMIT_DIR).mkdir(parents=True, exist_ok=True)
    for i, vid in enumerate(ids):
        rows = {}
        for table in TABLES:
            t = data[table]
            n = template[table].num_rows
            part = t.slice(i * n, n)
            key = source_key(source_of(vid)) if table == "dead_letter" else vid  # as commit_video keys them
            if table == "dead_letter" and not n:
                continue
            meta = {**(part.schema.metadata or {}), _KEY: key.encode(), _PART: b"0", _PARTS: b"1",
                    _WRITE_ID: uuid.uuid4().hex.encode()}
            pq.write_table(part.replace_schema_metadata(meta), root / table / f"{table}-{key}-00000.parquet",
                           compression=COMPRESSION)
            rows[table] = n
        marker = _marker(vid, {t: rows.get(t, 0) for t in VIDEO_TABLES})
        (root / COMMIT_DIR / f"{marker.source_key}.json").write_text(marker.model_dump_json())


def write_compacted(root: Path, template: dict[str, pa.Table], n: int, chunk: int = 10_000,
                    target_bytes: int | None = None) -> None:
    """``n`` videos in the layout ``saven compact`` leaves: shards of about ``target_bytes`` (the profile's
    ``compaction.target_mb``) listing their keys in the footer, and a commit index. Generated ``chunk`` videos at a
    time; a table's rows wait in memory until they would fill a shard (its compressed size estimated from the
    first chunk's ratio), as compaction fills one shard before it starts the next."""
    target_bytes = target_bytes or int(load_settings("local-cpu").compaction.target_mb * 1024**2)
    for table in TABLES:
        (root / table).mkdir(parents=True, exist_ok=True)
    (root / COMMIT_DIR).mkdir(parents=True, exist_ok=True)
    seq = {t: 0 for t in TABLES}
    pending: dict[str, list[tuple[pa.Table, list]]] = {t: [] for t in TABLES}
    ratio: dict[str, float] = {}  # compressed / in-memory bytes, measured on the first chunk

    def flush(table: str) -> None:
        if not pending[table]:
            return
        data = pa.concat_tables([d for d, _ in pending[table]])
        keys = [k for _, ks in pending[table] for k in ks]
        seq[table] += 1
        path = root / compacted_name(table, seq[table])
        meta = {**(data.schema.metadata or {}), KEY_ROWS: json.dumps(keys).encode()}
        pq.write_table(data.replace_schema_metadata(meta), path, compression=COMPRESSION, row_group_size=100_000)
        pending[table] = []

    def compressed_ratio(data: pa.Table) -> float:
        sink = pa.BufferOutputStream()
        pq.write_table(data, sink, compression=COMPRESSION, row_group_size=100_000)
        return sink.getvalue().size / max(1, data.nbytes)

    for c, start in enumerate(range(0, n, chunk)):
        ids = ids_for(start, min(chunk, n - start))
        data = copies(template, ids)
        for table in TABLES:
            per = template[table].num_rows
            if not per:
                continue
            keys = [[(source_key(source_of(v)) if table == "dead_letter" else v), per] for v in ids]
            pending[table].append((data[table], keys))
            if table not in ratio:
                ratio[table] = compressed_ratio(data[table])
            if sum(d.nbytes for d, _ in pending[table]) * ratio[table] >= target_bytes:
                flush(table)
        markers = [{**_marker(v, {t: template[t].num_rows for t in VIDEO_TABLES}).model_dump(mode="python"),
                    "rows": json.dumps({t: template[t].num_rows for t in VIDEO_TABLES})} for v in ids]
        (root / COMMIT_DIR / f"{INDEX_PREFIX}{c + 1:06d}.parquet").write_bytes(
            parquet_bytes(pa.Table.from_pylist(markers)))
    for table in TABLES:
        flush(table)


# -- what a resume does with nothing (or 100 videos) to do -----------------------------------------------------------


def resume(root: Path) -> dict[str, float]:
    """A rerun's own work around the videos it processes: list committed, sweep, finalize (compaction check, dead
    letters, incremental manifest, card)."""
    cfg = load_settings("local-cpu")
    t = {}
    t0 = time.perf_counter()
    done = committed_sources(root)  # as the flow lists them
    t["committed"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    sweep_uncommitted(root)
    t["sweep"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    maybe_compact(root, cfg.compaction.model_copy(update={"enabled": False}))  # the check, as finalize runs it
    consolidate_dead_letters(root)
    manifest = build_manifest(root)
    (root / "README.md").write_text(dataset_card(root, manifest, cfg, Pipeline.from_settings(cfg), []))
    t["finalize"] = time.perf_counter() - t2
    t["total"] = time.perf_counter() - t0
    t["videos"] = len(done)
    return t


def files_per_table(root: Path) -> dict[str, int]:
    return {t: len(visible_shards(root, t)) + len(compacted_shards(root, t)) for t in TABLES}


def bytes_per_table(root: Path) -> dict[str, int]:
    return {t: sum(p.stat().st_size for p in (root / t).glob("*.parquet")) for t in TABLES}


def read_qa(root: Path) -> dict[str, float]:
    import duckdb

    t0 = time.perf_counter()
    rows = read_table(root, "qa").num_rows
    ours = time.perf_counter() - t0
    t1 = time.perf_counter()
    con = duckdb.connect()
    n = con.execute(f"SELECT count(*), count(DISTINCT video_id) FROM read_parquet('{root}/qa/*.parquet')").fetchone()
    by_type = con.execute(f"SELECT type, count(*) FROM read_parquet('{root}/qa/*.parquet') GROUP BY type").fetchall()
    duck = time.perf_counter() - t1
    assert n[0] == rows and len(by_type) == len(QAType)
    return {"rows": rows, "pyarrow_s": ours, "duckdb_s": duck}


def expand_10k(n: int = 10_000, dup_share: float = 0.3) -> dict[str, float]:
    rng = np.random.default_rng(0)
    unique = int(n * (1 - dup_share))
    ids = ["".join(rng.choice(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"), 11))
           for _ in range(unique)]
    spell = ["https://www.youtube.com/watch?v={}", "https://youtu.be/{}?t=42", "https://m.youtube.com/watch?v={}",
             "https://www.youtube.com/watch?v={}&list=PLx"]
    sources = [spell[0].format(v) for v in ids]
    sources += [spell[1 + k % 3].format(ids[int(rng.integers(unique))]) for k in range(n - unique)]
    rng.shuffle(sources)
    canonical_video_id(sources[0])  # yt-dlp's extractor list, loaded once as a run loads it
    t0 = time.perf_counter()
    kept, dups = dedup_sources(sources, canonical_video_id, {})
    elapsed = time.perf_counter() - t0
    assert len(kept) == unique and len(kept) + len(dups) == len(set(sources)), (len(kept), len(dups))
    return {"sources": n, "kept": len(kept), "duplicates": len(dups), "seconds": elapsed}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path, default=REPO / "out" / "perf" / "scale.json")
    parser.add_argument("--videos", type=int, default=100_000)
    parser.add_argument("--before", type=int, default=10_000)
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-scale-", dir=args.work))
    template = template_tables()
    report: dict = {"videos": args.videos, "before_videos": args.before}
    try:
        # -- loose, then compacted: the same --before videos --------------------------------------------------
        small = work / "small"
        t0 = time.perf_counter()
        write_loose(small, template, ids_for(0, args.before))
        report["synth_loose_s"] = time.perf_counter() - t0
        resume(small)  # the run that built it: its first manifest reads every file
        loose = {"files": files_per_table(small), "bytes": bytes_per_table(small), "noop": resume(small),
                 "read_qa": read_qa(small)}
        t1 = time.perf_counter()
        cfg = load_settings("local-cpu").compaction
        compact_dataset(small, cfg)
        compact_s = time.perf_counter() - t1
        resume(small)
        packed = {"files": files_per_table(small), "bytes": bytes_per_table(small), "noop": resume(small),
                  "read_qa": read_qa(small), "compact_s": compact_s}
        write_loose(small, template, ids_for(10**9, 100))
        packed["add100"] = resume(small)

        # -- --videos in the compacted layout -------------------------------------------------------------------
        big = work / "big"
        t2 = time.perf_counter()
        write_compacted(big, template, args.videos)
        report["synth_compacted_s"] = time.perf_counter() - t2
        resume(big)
        large = {"files": files_per_table(big), "bytes": bytes_per_table(big), "noop": resume(big),
                 "read_qa": read_qa(big)}
        write_loose(big, template, ids_for(10**9, 100))
        large["add100"] = resume(big)
        report.update(loose=loose, compacted=packed, large=large, expand=expand_10k())
    finally:
        shutil.rmtree(work, ignore_errors=True)

    target_mb = load_settings("local-cpu").compaction.target_mb
    bound = {t: large["bytes"][t] / (target_mb * 1024**2) + 1 for t in TABLES}
    worst = max(TABLES, key=lambda t: large["files"][t] - bound[t])
    n_small = args.before
    rows = [
        row(f"no-op resume of {args.videos:,} committed videos (compacted): list, sweep, finalize",
            large["noop"]["total"], target="value <= 10", passed=large["noop"]["total"] <= 10, unit="s",
            note=f"committed {large['noop']['committed']:.2f} s, sweep {large['noop']['sweep']:.2f} s, finalize "
                 f"{large['noop']['finalize']:.2f} s"),
        row(f"no-op resume of {n_small:,} videos: loose shards / compacted", loose["noop"]["total"],
            baseline=packed["noop"]["total"], unit="s", passed=None,
            note=f"files per table {loose['files']['clips']:,} -> {packed['files']['clips']}"),
        row(f"resume adding 100 videos to {args.videos:,} vs to {n_small:,} (compacted)", large["add100"]["total"],
            baseline=packed["add100"]["total"], target="ratio <= 2 (cost follows the 100)",
            passed=large["add100"]["total"] <= 2 * packed["add100"]["total"], unit="s"),
        row(f"files per table at {args.videos:,} videos (compacted), worst table `{worst}`", large["files"][worst],
            baseline=bound[worst], target="value <= bytes / target size + 1 + tail", unit="files",
            passed=all(large["files"][t] <= bound[t] for t in TABLES),
            note=", ".join(f"{t} {large['files'][t]}" for t in TABLES)),
        row(f"files per table at {n_small:,} videos: loose / compacted (clips)", loose["files"]["clips"],
            baseline=packed["files"]["clips"], unit="files", passed=None,
            note=f"saven compact took {packed['compact_s']:.1f} s"),
        row(f"read the QA table ({n_small:,} videos) with pyarrow: loose / compacted",
            loose["read_qa"]["pyarrow_s"], baseline=packed["read_qa"]["pyarrow_s"], unit="s", passed=None,
            note=f"{loose['read_qa']['rows']:,} rows"),
        row(f"read the QA table ({n_small:,} videos) with duckdb: loose / compacted", loose["read_qa"]["duckdb_s"],
            baseline=packed["read_qa"]["duckdb_s"], unit="s", passed=None),
        row(f"read the QA table ({args.videos:,} videos, compacted): pyarrow", large["read_qa"]["pyarrow_s"],
            unit="s", passed=None, note=f"{large['read_qa']['rows']:,} rows; duckdb "
                                        f"{large['read_qa']['duckdb_s']:.2f} s"),
        row("deduplicate 10k sources (30% other spellings) offline", report["expand"]["seconds"], unit="s",
            passed=None, note=f"{report['expand']['kept']:,} kept, {report['expand']['duplicates']:,} duplicate_of"),
    ]
    write_report(args.out, {"rows": rows, **report})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
