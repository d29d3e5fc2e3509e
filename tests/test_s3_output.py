"""A dataset on object storage, against a real S3 API on loopback (moto): shards, commits, sweep, manifest, the
LLM cache shards, the media task's hand-over, and the preflight that names what refuses."""

from __future__ import annotations

import os
import time
import uuid

import numpy as np
import pytest

from flows import llm_cache
from schemas.commit import commit_video, committed, sweep_uncommitted
from flows.media_chain import builtin_media_stages, media_task
from flows.preflight import PreflightError, preflight
from infra.llm_client import RequestCache
from schemas.handoff import VideoMedia
from schemas.manifest import build_manifest, verify_manifest
from schemas.records import Clip
from schemas.settings import load_settings
from schemas.shards import read_records, shard_keys, write_shard
from schemas.store import DatasetStore


def fresh(s3) -> str:
    return f"{s3.bucket}/{uuid.uuid4().hex[:8]}"


def test_a_dataset_on_s3_commits_sweeps_and_verifies(s3, shared_media, tmp_path):
    uri = fresh(s3)
    store = DatasetStore.of(uri)
    assert not store.local and str(store) == uri
    clip = Clip(clip_id="local-abc.c0000", video_id="local-abc", index=0, start_s=0.0, end_s=2.0, keyframe_times=[1.0])
    marker = commit_video(uri, "/media/a.mp4", "local-abc", {"clips": [clip]})
    assert marker.rows["clips"] == 1 and list(committed(uri)) == [marker.source_key]
    # a video that never got its marker: its shards and files go at the next sweep, the committed one stays
    write_shard(uri, "clips", key="local-gone", records=[clip.model_copy(update={"clip_id": "local-gone.c0000",
                                                                                 "video_id": "local-gone"})])
    store.write_bytes("media/local-gone.mp4", b"x")
    store.write_bytes("audio/local-gone.npy", b"x")
    store.write_bytes("keyframes/local-gone/local-gone.c0000_0.jpg", b"x")
    store.write_bytes("media/local-abc.mp4", b"kept")
    assert sweep_uncommitted(uri) == ["local-gone"]
    assert shard_keys(uri, "clips") == {"local-abc"} and store.list_files("media") == ["local-abc.mp4"]
    assert not store.exists("audio/local-gone.npy") and not store.list_files("keyframes/local-gone")
    build_manifest(uri)
    assert verify_manifest(uri) == []
    assert [c.clip_id for c in read_records(uri, "clips", Clip)] == ["local-abc.c0000"]
    store.write_bytes("clips/clips-local-abc-00000.parquet", b"tampered")
    assert any("checksum" in p or "size" in p for p in verify_manifest(uri))


def test_llm_cache_shards_carry_replies_to_a_fresh_machine(s3, tmp_path):
    store = DatasetStore.of(fresh(s3))
    first = tmp_path / "a" / "llm.sqlite"
    cache = RequestCache(first)
    start = time.time()
    cache.put("k1", model="m", schema_name="s", content="one", prompt_tokens=3, completion_tokens=1)
    cache.put("k2", model="m", schema_name="s", content="two", prompt_tokens=3, completion_tokens=1)
    cache.close()
    assert llm_cache.save_since(store, first, start) == 2
    assert len(store.list_files(llm_cache.SHARD_DIR, suffix=".parquet")) == 1
    # another machine (a fresh cluster): an empty local file, seeded from the bucket
    second = llm_cache.cache_path(store, tmp_path / "b")
    assert llm_cache.restore(store, second) == 2 and llm_cache.restore(store, second) == 0
    assert RequestCache(second).get("k2") == ("two", 3, 1)
    assert llm_cache.cache_path(DatasetStore.of(tmp_path / "ds"), None) == tmp_path / "ds" / "_cache" / "llm.sqlite"


def test_the_media_task_puts_the_files_in_the_bucket_and_hands_the_media_over_in_memory(s3, shared_media, tmp_path):
    uri = fresh(s3)
    cfg = load_settings("local-cpu").model_copy(deep=True)
    cfg.paths.scratch_dir = tmp_path / "scratch"
    item, media = media_task(str(shared_media / "big_buck_bunny_0_30.webm"), uri, cfg, builtin_media_stages())
    assert not item.failed_stages and isinstance(media, VideoMedia)
    video, clips = item.rows("videos")[0], item.clips
    store, vid = DatasetStore.of(uri), video.video_id
    assert store.exists(video.media_path) and store.exists(f"audio/{vid}.npy")
    assert sum(len(c.keyframe_times) for c in clips) == len(store.list_files(f"keyframes/{vid}"))
    assert media.audio.dtype == np.float32 and media.audio.shape[0] == item.value("audio").num_samples
    assert all(all(media.keyframes[c.clip_id]) for c in clips)
    assert item.work_dir is None and item.media is None  # what travels back holds no path on this node
    assert [name for name, _, _ in item.results] == ["acquire", "probe", "audio", "segment", "fingerprint"]
    assert len(dict((n, r) for n, r, _ in item.results)["segment"].tables["clips"]) == len(clips)
    # nothing is left in this node's scratch folder, so no later stage could read the video from here
    node_dirs = list((tmp_path / "scratch").glob("node-*"))
    assert len(node_dirs) == 1 and not any(node_dirs[0].iterdir())

    bad, nothing = media_task(str(shared_media / "jfk.flac"), uri, cfg, builtin_media_stages())
    assert nothing is None and bad.failed_stages == {"probe"}
    assert [d.error_class for d in bad.dead_letters] == ["no_video_stream"]
    assert not any(node_dirs[0].iterdir())


def test_preflight_names_the_node_the_location_and_the_cause(s3, tmp_path):
    from s3_server import RefusingS3Proxy

    preflight(fresh(s3), llm_base_url=None, ray_nodes=False)  # a writable bucket passes
    with pytest.raises(PreflightError) as missing:
        preflight("s3://no-such-bucket/ds", llm_base_url=None, ray_nodes=False)
    message = str(missing.value)
    assert "nothing was processed" in message and "s3://no-such-bucket/ds" in message
    assert "NO_SUCH_BUCKET" in message and os.uname().nodename in message
    with RefusingS3Proxy(s3.port) as proxy:
        saved = os.environ["AWS_ENDPOINT_URL"]
        os.environ["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{proxy.port}"
        try:
            with pytest.raises(PreflightError, match="ACCESS_DENIED|AccessDenied"):
                preflight(fresh(s3), llm_base_url=None, ray_nodes=False)
        finally:
            os.environ["AWS_ENDPOINT_URL"] = saved
    with pytest.raises(PreflightError, match=r"cannot reach the LLM server at http://127\.0\.0\.1:9/v1/models"):
        preflight(fresh(s3), llm_base_url="http://127.0.0.1:9/v1", ray_nodes=False)


def test_the_sources_list_may_live_in_the_bucket(s3):
    from flows.sources import SourcesError, read_sources

    uri = fresh(s3)
    DatasetStore.of(uri).write_bytes("lists/sources.yaml", b"- https://example.org/a.mp4\n- /data/b.mp4\n")
    assert read_sources(f"{uri}/lists/sources.yaml") == ["https://example.org/a.mp4", "/data/b.mp4"]
    with pytest.raises(SourcesError, match="not readable"):
        read_sources(f"{uri}/lists/missing.yaml")
