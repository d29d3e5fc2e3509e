"""manifest.json: checksums and row counts of every shard, and what verify_manifest reports."""

from __future__ import annotations

import json
import shutil

from schemas.manifest import build_manifest, load_manifest, verify_manifest
from schemas.records import SCHEMA_VERSION, Clip, clip_id
from schemas.shards import consolidate_dead_letters, write_shard
from schemas.store import sha256_file


def clips(video_id: str, n: int) -> list[Clip]:
    return [Clip(clip_id=clip_id(video_id, i), video_id=video_id, index=i, start_s=float(i), end_s=i + 0.5)
            for i in range(n)]


def dataset(tmp_path):
    write_shard(tmp_path, "clips", key="yt-a", records=clips("yt-a", 30), max_rows_per_shard=20)
    write_shard(tmp_path, "clips", key="yt-b", records=clips("yt-b", 3) + [{"clip_id": "broken"}])
    consolidate_dead_letters(tmp_path)
    return tmp_path


def test_manifest_lists_every_shard_and_verifies(tmp_path):
    manifest = build_manifest(dataset(tmp_path))
    assert manifest.schema_version == SCHEMA_VERSION and manifest.created_at.utcoffset().total_seconds() == 0
    assert sorted(manifest.tables) == ["clips", "dead_letter"]
    table = manifest.tables["clips"]
    assert table.rows == 33
    assert [(s.file, s.rows) for s in table.shards] == [("clips/clips-yt-a-00000.parquet", 20),
                                                        ("clips/clips-yt-a-00001.parquet", 10),
                                                        ("clips/clips-yt-b-00000.parquet", 3)]
    for shard in table.shards:
        path = tmp_path / shard.file
        assert shard.sha256 == sha256_file(path) and shard.bytes == path.stat().st_size
    assert [(f.file, f.rows) for f in manifest.files] == [("dead_letter.parquet", 1)]
    assert load_manifest(tmp_path) == manifest
    assert json.loads((tmp_path / "manifest.json").read_text())["schema_version"] == SCHEMA_VERSION
    assert not list(tmp_path.glob(".*.tmp"))
    assert verify_manifest(tmp_path) == []


def test_corrupted_truncated_missing_and_unlisted_shards_are_reported(tmp_path):
    build_manifest(dataset(tmp_path))
    a0, a1, b0 = (tmp_path / "clips" / f"clips-{k}.parquet" for k in ("yt-a-00000", "yt-a-00001", "yt-b-00000"))

    data = bytearray(a0.read_bytes())
    data[8] ^= 0xFF  # same size, one flipped byte in the first data page (the footer still reads)
    a0.write_bytes(bytes(data))
    a1.write_bytes(a1.read_bytes()[:100])  # truncated
    (tmp_path / "dead_letter.parquet").unlink()
    shutil.copy(b0, tmp_path / "clips" / "clips-yt-c-00000.parquet")  # a shard nobody listed
    (tmp_path / "clips" / ".clips-yt-d-00000.parquet.x.tmp").write_bytes(b"half")  # temp files are not shards

    problems = verify_manifest(tmp_path)
    assert "clips/clips-yt-a-00000.parquet: checksum mismatch" in problems
    assert not any(p.startswith("clips/clips-yt-a-00000.parquet: size") for p in problems)
    assert "clips/clips-yt-a-00001.parquet: checksum mismatch" in problems
    assert any(p.startswith("clips/clips-yt-a-00001.parquet: size") for p in problems)
    assert any(p.startswith("clips/clips-yt-a-00001.parquet: unreadable Parquet") for p in problems)
    assert "dead_letter.parquet: missing" in problems
    assert "clips/clips-yt-c-00000.parquet: not in the manifest" in problems
    assert not any("yt-b" in p or "yt-d" in p for p in problems)
    assert len(problems) == 6


def test_row_count_mismatch_is_reported(tmp_path):
    build_manifest(dataset(tmp_path))
    write_shard(tmp_path, "clips", key="yt-b", records=clips("yt-b", 5))  # rewritten after the manifest
    problems = verify_manifest(tmp_path)
    assert "clips/clips-yt-b-00000.parquet: 5 rows != 3 in the manifest" in problems
    assert "clips/clips-yt-b-00000.parquet: checksum mismatch" in problems
    build_manifest(tmp_path)
    assert verify_manifest(tmp_path) == []


def test_missing_or_incompatible_manifest(tmp_path):
    assert verify_manifest(tmp_path) == ["manifest.json: missing"]
    build_manifest(dataset(tmp_path))
    doc = json.loads((tmp_path / "manifest.json").read_text())
    (tmp_path / "manifest.json").write_text(json.dumps(doc | {"schema_version": "99.0.0"}))
    assert verify_manifest(tmp_path) == [f"manifest.json: schema version 99.0.0 is incompatible with {SCHEMA_VERSION}"]
    (tmp_path / "manifest.json").write_text("{not json")
    assert verify_manifest(tmp_path)[0].startswith("manifest.json: invalid")
