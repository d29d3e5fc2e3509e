"""Compaction of committed per-video shards, the commit index, the incremental manifest and the HF datasets
convention: on a local folder and on a real S3 API (moto)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from schemas.commit import commit_video, committed, sweep_uncommitted, uncommit
from schemas.records import VIDEO_TABLES
from flows.compact import compact_dataset, loose_files, maybe_compact
from flows.report import dataset_card
from infra.pipeline import Pipeline
from schemas import manifest as manifest_module
from schemas.compaction import compact_table
from schemas.manifest import build_manifest, verify_manifest
from schemas.records import ALL_RECORDS, DeadLetter, QAType, StageName, utc_now
from schemas.settings import Compaction, load_settings
from schemas.shards import compacted_shards, read_table, shard_keys, visible_shards
from schemas.store import DatasetStore
from test_benchmark_support import make_question, make_video

VOLATILE = {"acquired_at", "failed_at", "committed_at"}
SMALL = Compaction(target_mb=0.02, min_loose_files=50)  # ~20 KB shards: a few videos each


def content(dataset) -> dict[str, list[str]]:
    out = {}
    for table in (*VIDEO_TABLES, "dead_letter"):
        rows = read_table(dataset, table, ALL_RECORDS.get(table, DeadLetter)).to_pylist()
        out[table] = sorted(json.dumps({k: v for k, v in r.items() if k not in VOLATILE}, sort_keys=True,
                                       default=str) for r in rows)
    return out


def commit(dataset, i: int, *, note: str = "") -> str:
    vid = f"local-v{i:05d}"
    video, clips, descriptions, speech = make_video(vid, i)
    qa = [make_question(vid, i, t, clips, salt=note) for t in QAType]
    failures = [DeadLetter(stage=StageName.qa, video_id=vid, item_id=None, error_class="check:options_distinct",
                           message=f"rejected draft {note}", failed_at=utc_now())] if i % 3 == 0 else []
    commit_video(dataset, f"/media/{vid}.mp4", vid, {"videos": [video], "clips": clips, "descriptions": descriptions,
                                                    "speech": speech, "qa": qa}, failures)
    return vid


@pytest.fixture(params=["local", "s3"])
def dataset(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "ds")
    s3 = request.getfixturevalue("s3")
    return f"{s3.bucket}/compaction-{uuid.uuid4().hex[:8]}"


def test_compaction_keeps_every_row_once_and_resume_still_works(dataset):
    n = 24
    for i in range(n):
        commit(dataset, i)
    store = DatasetStore.of(dataset)
    before = content(dataset)
    keys_before = {t: shard_keys(dataset, t) for t in VIDEO_TABLES}
    files_before = {t: len(visible_shards(dataset, t)) for t in VIDEO_TABLES}
    assert files_before["clips"] == n

    done = compact_dataset(dataset, SMALL)
    assert done.markers == n and done.report.keys > 0
    assert content(dataset) == before  # every row, once
    assert {t: shard_keys(dataset, t) for t in VIDEO_TABLES} == keys_before
    assert len(committed(dataset)) == n and not store.list_files("_committed", suffix=".json")
    for table in VIDEO_TABLES:
        packed = [rel for rel in compacted_shards(dataset, table)]
        total = sum(size for _, size, _ in store.list_infos(table))
        assert not visible_shards(dataset, table), table  # everything committed moved
        # files <= bytes / target + 1 (the last, partly filled shard)
        assert len(packed) <= total / (SMALL.target_mb * 1024**2) + 1, (table, len(packed), total)
        assert len(packed) < files_before[table]
    build_manifest(dataset)
    assert verify_manifest(dataset) == []

    # A rerun: nothing to sweep, nothing changes.
    assert sweep_uncommitted(dataset) == []
    assert content(dataset) == before

    # More videos, a second compaction: they fill the last compacted shard before opening another.
    for i in range(n, n + 4):
        commit(dataset, i)
    after_more = content(dataset)
    compact_dataset(dataset, SMALL)
    assert content(dataset) == after_more and len(committed(dataset)) == n + 4

    # A changed video: its commit is forgotten, the sweep takes its rows out of the compacted shards, and its new
    # rows land once.
    changed = "local-v00005"
    (marker,) = [m for m in committed(dataset).values() if m.video_id == changed]
    assert uncommit(dataset, {marker.source_key}) == 1
    def forgotten() -> list[str]:
        return DatasetStore.of(dataset).list_files("_committed", prefix="forgotten~", suffix=".json")

    assert len(forgotten()) == 1  # what the sweep looks for
    assert changed in sweep_uncommitted(dataset)
    assert all(changed not in shard_keys(dataset, t) for t in VIDEO_TABLES)
    assert forgotten() == [] and sweep_uncommitted(dataset) == []
    commit(dataset, 5, note="v2")
    rows = content(dataset)
    qa = [json.loads(r) for r in rows["qa"] if json.loads(r)["video_id"] == changed]
    assert len(qa) == len(QAType) and all("v2" in q["qa_id"] or q["qa_id"] for q in qa)
    assert {t: len(v) for t, v in rows.items()} == {t: len(v) for t, v in after_more.items()}
    build_manifest(dataset)
    assert verify_manifest(dataset) == []


def test_a_compaction_that_stops_before_deleting_leaves_no_duplicate(tmp_path):
    dataset = tmp_path / "ds"
    for i in range(6):
        commit(dataset, i)
    before = content(dataset)
    store = DatasetStore.of(dataset)
    saved = {rel: store.read_bytes(rel) for rel in visible_shards(dataset, "clips")}
    compact_table(dataset, "clips", {f"local-v{i:05d}" for i in range(6)}, target_bytes=10**9)
    for rel, data in saved.items():  # as if the deletes never happened
        store.write_bytes(rel, data)
    assert content(dataset) == before
    again = compact_table(dataset, "clips", {f"local-v{i:05d}" for i in range(6)}, target_bytes=10**9)
    assert again.leftovers_removed == 6 and not visible_shards(dataset, "clips")
    assert content(dataset) == before


def test_finalize_compacts_only_once_enough_small_files_gathered(tmp_path):
    dataset = tmp_path / "ds"
    for i in range(4):
        commit(dataset, i)
    assert maybe_compact(dataset, Compaction(min_loose_files=1000)) is None
    assert maybe_compact(dataset, Compaction(enabled=False, min_loose_files=1)) is None
    assert loose_files(dataset) >= 4 * len(VIDEO_TABLES)
    assert maybe_compact(dataset, Compaction(min_loose_files=10)) is not None
    assert loose_files(dataset) == 0


def test_the_manifest_hashes_only_new_or_changed_files(tmp_path, monkeypatch):
    dataset = tmp_path / "ds"
    for i in range(5):
        commit(dataset, i)
    build_manifest(dataset)
    hashed: list[str] = []
    real = manifest_module._entry
    monkeypatch.setattr(manifest_module, "_entry", lambda store, rel, mtime=None: hashed.append(rel) or
                        real(store, rel, mtime))
    build_manifest(dataset)
    assert hashed == []  # nothing new: nothing read
    commit(dataset, 5)
    build_manifest(dataset)
    assert all("local-v00005" in rel for rel in hashed) and len(hashed) == len(VIDEO_TABLES)  # its 8 shards
    assert verify_manifest(dataset) == []
    # the full check still reads everything: a file changed behind the manifest's back is found
    (Path(dataset) / visible_shards(dataset, "clips")[0]).write_bytes(b"changed")
    assert any("clips/" in p for p in verify_manifest(dataset))


def test_hugging_face_datasets_reads_every_table(tmp_path):
    datasets = pytest.importorskip("datasets")
    dataset = tmp_path / "ds"
    for i in range(4):
        commit(dataset, i)
    compact_dataset(dataset, SMALL)
    commit(dataset, 4)  # one video left in its own shards: both kinds are read
    from schemas.shards import consolidate_dead_letters

    consolidate_dead_letters(dataset)
    manifest = build_manifest(dataset)
    cfg = load_settings("local-cpu")
    card = dataset_card(dataset, manifest, cfg, Pipeline.from_settings(cfg), [])
    (dataset / "README.md").write_text(card)
    assert card.startswith("---\nconfigs:\n")
    with_rows = [t for t in (*VIDEO_TABLES, "dead_letter")
                 if read_table(dataset, t, ALL_RECORDS.get(t, DeadLetter)).num_rows]
    assert {"videos", "clips", "qa", "dead_letter"} <= set(with_rows)
    for table in with_rows:
        assert f"- config_name: {table}\n" in card
        # Its own cache: HF's cache key for local files can match an older dataset at the same temporary path.
        loaded = datasets.load_dataset(str(dataset), table, split="train", cache_dir=str(tmp_path / "hf-cache"))
        assert loaded.num_rows == read_table(dataset, table, ALL_RECORDS.get(table, DeadLetter)).num_rows, table
        if table == "qa":
            assert set(loaded.column_names) >= {"question", "options", "answer_index"}
