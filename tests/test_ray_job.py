"""`deploy/submit_job.py` against a real two-node Ray cluster on this machine: the job runs build-dataset on both
nodes and its flow and task runs show up in the real Prefect server."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest
import yaml

from schemas.commit import committed
from schemas.manifest import verify_manifest
from schemas.settings import settings
from schemas.records import ClipDescription
from schemas.shards import read_records

from ray_cluster import submit_when_agent_ready as _submit_when_agent_ready

pytestmark = [pytest.mark.flow, pytest.mark.llm, pytest.mark.prefect, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_job_submitted_to_two_node_cluster_builds_the_dataset_and_reports_to_prefect(
        two_node_cluster, prefect_server, llm_server, shared_media, tmp_path):
    two_node_cluster = two_node_cluster.dashboard
    from ray.util.state import list_actors, list_tasks

    sources = tmp_path / "sources.yaml"
    sources.write_text(yaml.safe_dump([str(shared_media / "chaplin.mp4"), str(shared_media / "jfk.flac")]))
    output = tmp_path / "dataset"
    started = time.time()
    proc = _submit_when_agent_ready([
        sys.executable, str(REPO_ROOT / "deploy" / "submit_job.py"), "submit", "--address", two_node_cluster,
        "--sources", str(sources), "--output", str(output), "--profile", "local-cpu", "--batch-size", "2",
        "--prefect-api-url", prefect_server, "--working-dir", str(REPO_ROOT), "--python", sys.executable, "--wait"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.split()[-1] == "SUCCEEDED"

    # The dataset: the film landed, the audio-only file was dead-lettered; the manifest verifies.
    assert not verify_manifest(output)
    assert [m.source for m in committed(output).values()] == [str(shared_media / "chaplin.mp4")]
    dead = pq.read_table(output / "dead_letter.parquet").to_pylist()
    assert "no_video_stream" in {d["error_class"] for d in dead}, dead  # QA items may be dead letters too
    # fused descriptions, not QA: SmolLM2's QA drafts often all fail the checks (they land as dead letters)
    assert read_records(output, "descriptions", ClipDescription)

    # Work ran on both nodes of the cluster.
    nodes = {a.node_id for a in list_actors(address=two_node_cluster, limit=1000)}
    nodes |= {t.node_id for t in list_tasks(address=two_node_cluster, limit=10000) if t.node_id}
    assert len(nodes) == 2, nodes

    # Prefect saw the flow run and its tasks.
    api = settings().prefect.api_url
    runs = httpx.post(f"{api}/flow_runs/filter", timeout=10, json={
        "flow_runs": {"start_time": {"after_": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started - 5))}},
        "limit": 50}).json()
    ours = [r for r in runs if r["parameters"].get("output") == str(output)]
    assert len(ours) == 1 and ours[0]["state"]["type"] == "COMPLETED", [(r["name"], r["parameters"]) for r in runs]
    tasks = httpx.post(f"{api}/task_runs/filter", timeout=10,
                       json={"flow_runs": {"id": {"any_": [ours[0]["id"]]}}}).json()
    names = {t["name"] for t in tasks}
    assert any(n.startswith("expand-sources") for n in names), names
    assert any(n.startswith("batch-") for n in names), names
    assert any(n.startswith("finalize-dataset") for n in names), names
    assert all(t["state"]["type"] == "COMPLETED" for t in tasks), [(t["name"], t["state"]["type"]) for t in tasks]
