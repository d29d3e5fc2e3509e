"""`deploy/submit_job.py` against a real two-node Ray cluster on this machine: the job runs build-dataset on both
nodes and its flow and task runs show up in the real Prefect server."""

from __future__ import annotations

import json
import subprocess
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


def test_credentials_in_the_submitters_environment_never_reach_ray(two_node_cluster, prefect_server, tmp_path,
                                                                   monkeypatch):
    """Ray shows a job's runtime environment in plain text (Jobs API, dashboard, `ray job list`): a planted key in
    the submitter's environment must appear in none of them, nor in the job's logs; the store's non-secret settings
    still travel."""
    from ray.job_submission import JobSubmissionClient

    planted = "planted-SECRET-0123456789"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", planted)
    monkeypatch.setenv("AWS_SESSION_TOKEN", planted + "-token")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-north-1")
    dashboard = two_node_cluster.dashboard
    proc = _submit_when_agent_ready([  # a job that fails at once (no such sources file): it only has to be there
        sys.executable, str(REPO_ROOT / "deploy" / "submit_job.py"), "submit", "--address", dashboard,
        "--sources", str(tmp_path / "missing.yaml"), "--output", str(tmp_path / "ds"), "--profile", "local-cpu",
        "--prefect-api-url", prefect_server, "--working-dir", str(REPO_ROOT), "--python", sys.executable, "--wait"])
    assert "not forwarded to the job" in proc.stderr
    job_id = proc.stdout.split()[0]
    client = JobSubmissionClient(dashboard)
    info = client.get_job_info(job_id)
    assert info.runtime_env["env_vars"]["AWS_DEFAULT_REGION"] == "eu-north-1"
    seen = {
        "jobs API": json.dumps([j.__dict__ for j in client.list_jobs()], default=str),
        "dashboard job details": httpx.get(f"{dashboard}/api/jobs/{job_id}", timeout=10).text,
        "dashboard job list": httpx.get(f"{dashboard}/api/jobs/", timeout=10).text,
        "ray job list": subprocess.run([str(Path(sys.executable).with_name("ray")), "job", "list", "--address",
                                        dashboard], capture_output=True, text=True, timeout=120).stdout,
        "job logs": client.get_job_logs(job_id),
    }
    assert seen["dashboard job details"] and job_id in seen["ray job list"]
    assert not [where for where, text in seen.items() if planted in text], "a planted key reached Ray"
