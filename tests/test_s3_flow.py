"""build-dataset to object storage on a real two-node Ray cluster whose nodes share nothing but Ray and a real S3 API
(moto on loopback): the job writes the dataset to the bucket; it reads back valid and its manifest verifies; a run
killed with SIGKILL after its first commit resumes against the bucket, on the LLM replies the bucket holds, and
equals the uninterrupted run."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from schemas.commit import committed
from schemas.records import VIDEO_TABLES
from flows.llm_cache import SHARD_DIR
from flow_runs import killed_run_resumes_to_the_same_dataset, scene_video
from ray_cluster import submit_when_agent_ready
from schemas.manifest import verify_manifest
from schemas.records import ALL_RECORDS, QAItem
from schemas.shards import read_records
from schemas.store import DatasetStore

pytestmark = [pytest.mark.flow, pytest.mark.llm, pytest.mark.prefect, pytest.mark.slow]
REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sources(tmp_path_factory, shared_media) -> Path:
    root = tmp_path_factory.mktemp("s3-sources")
    scene_video(root / "scenes.mp4")
    path = root / "sources.yaml"
    path.write_text(yaml.safe_dump([str(root / "scenes.mp4"), str(shared_media / "chaplin.mp4"),
                                    str(shared_media / "jfk.flac")]))  # jfk: no video stream, a dead letter
    return path


def test_a_two_node_job_writes_to_the_bucket_and_a_killed_run_resumes_from_it(
        two_node_cluster, s3, prefect_server, llm_server, sources, tmp_path, monkeypatch):
    from ray.util.state import list_actors, list_tasks

    scratch = tmp_path / "scratch"
    monkeypatch.setenv("SAVEN_PATHS__SCRATCH_DIR", str(scratch))  # forwarded to the job like the S3 credentials
    uri = f"{s3.bucket}/run-{uuid.uuid4().hex[:8]}"
    proc = submit_when_agent_ready([
        sys.executable, str(REPO_ROOT / "deploy" / "submit_job.py"), "submit", "--address", two_node_cluster.dashboard,
        "--sources", str(sources), "--output", uri, "--profile", "local-cpu", "--batch-size", "2",
        "--prefect-api-url", prefect_server, "--working-dir", str(REPO_ROOT), "--python", sys.executable, "--wait"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    # The dataset is in the bucket, whole: it validates, its manifest verifies, the two videos landed with their
    # files, the audio-only source is a dead letter, and the LLM replies are there as cache shards.
    store = DatasetStore.of(uri)
    assert verify_manifest(uri) == []
    assert sorted(Path(m.source).name for m in committed(uri).values()) == ["chaplin.mp4", "scenes.mp4"]
    for table in VIDEO_TABLES:
        read_records(uri, table, ALL_RECORDS[table])
    assert read_records(uri, "qa", QAItem), "no QA item landed"
    for marker in committed(uri).values():
        vid = marker.video_id
        assert store.list_files("media", prefix=f"{vid}.") and store.exists(f"audio/{vid}.npy")
        assert store.list_files(f"keyframes/{vid}")
    dead = pq.read_table(pa.BufferReader(store.read_bytes("dead_letter.parquet"))).to_pylist()
    assert "no_video_stream" in {d["error_class"] for d in dead}
    assert "\n# SAVEn-Vid dataset" in store.read_text("README.md")
    assert store.list_files(SHARD_DIR, suffix=".parquet")
    # No node kept a video's files: each media task worked in its node's own scratch folder and emptied it
    # before the perception stages ran (they got the audio and keyframes from Ray's object store).
    nodes = sorted(p.name for p in scratch.glob("node-*"))
    assert nodes and not list(scratch.glob("node-*/work-*")), list(scratch.rglob("*"))
    ran_on = {a.node_id for a in list_actors(address=two_node_cluster.dashboard, limit=1000)}
    ran_on |= {t.node_id for t in list_tasks(address=two_node_cluster.dashboard, limit=10000) if t.node_id}
    assert len(ran_on) == 2, ran_on

    # Kill -9 after the first commit, then resume, against a second prefix that starts with the first run's cache
    # shards only: the resumed run sends the LLM server nothing, and its dataset equals the first by content.
    again = f"{s3.bucket}/resumed-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "RAY_ADDRESS": two_node_cluster.address, "PREFECT_API_URL": prefect_server}
    cmd = [sys.executable, "-m", "flows.cli", "build", "--sources", str(sources), "--output", again,
           "--batch-size", "1", "--batches-in-flight", "1"]
    killed_run_resumes_to_the_same_dataset(uri, again, cmd, env, llm_server.base_url, REPO_ROOT)


def test_a_bucket_that_does_not_take_writes_stops_the_run_before_any_download(
        two_node_cluster, s3, prefect_server, llm_server, sources, tmp_path):
    env = {**os.environ, "RAY_ADDRESS": two_node_cluster.address, "PREFECT_API_URL": prefect_server,
           "SAVEN_PATHS__SCRATCH_DIR": str(tmp_path / "scratch")}
    run = subprocess.run([sys.executable, "-m", "flows.cli", "build", "--sources", str(sources), "--output",
                          "s3://no-such-bucket/ds"], env=env, cwd=REPO_ROOT, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode != 0
    out = run.stdout + run.stderr
    assert "preflight failed, nothing was processed" in out, out[-3000:]
    # the flow's own check, before it takes the dataset's lease there: the process, the location and the cause
    # (each node's check follows for a location this process can write: tests/test_s3_output.py,
    # tests/test_cluster_rehearsal.py)
    assert "s3://no-such-bucket/ds" in out and "NO_SUCH_BUCKET" in out, out[-3000:]
    assert "NoSuchBucket" not in out, out[-3000:]  # the lease was never tried there
    assert not list((tmp_path / "scratch").glob("node-*/work-*"))  # nothing was downloaded
