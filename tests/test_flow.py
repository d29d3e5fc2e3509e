"""The build-dataset flow for real: Prefect server, deployment, Ray, ffmpeg, PySceneDetect, faster-whisper, vLLM.

One module-scoped run through `prefect deployment run build-dataset/local` feeds every check; a second run is
killed with SIGKILL after its first commit and resumed, and must equal the first by content.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from infra import servers
from schemas.commit import committed
from schemas.records import VIDEO_TABLES
from flows.demo import flow_run_id, flow_run_report
from flow_runs import scene_video, sigkill_after_first_commit
from schemas.manifest import verify_manifest
from schemas.records import ALL_RECORDS, QAItem
from schemas.settings import settings
from schemas.shards import read_records, read_table

pytestmark = [pytest.mark.flow, pytest.mark.llm, pytest.mark.prefect, pytest.mark.slow]
VOLATILE = {"acquired_at", "failed_at", "committed_at"}


@pytest.fixture(scope="module")
def sources(tmp_path_factory, shared_media) -> Path:
    root = tmp_path_factory.mktemp("flow-sources")
    scene_video(root / "scenes.mp4", scenes=3)
    entries = [str(root / "scenes.mp4"), str(shared_media / "chaplin.mp4"),
               str(shared_media / "jfk.flac"),  # no video stream: dead letter
               str(root / "missing.mp4")]  # no such file: dead letter
    path = root / "sources.yaml"
    path.write_text(yaml.safe_dump(entries))
    return path


@pytest.fixture(scope="module")
def deployment(prefect_server, llm_server):
    cfg = settings()
    servers.start_deployment_server(cfg)
    yield servers.prefect_env(cfg)
    servers.stop_deployment_server(cfg)


@pytest.fixture(scope="module")
def first_run(deployment, sources, tmp_path_factory):
    out = tmp_path_factory.mktemp("flow-run")
    dataset, cache = out / "dataset", out / "llm.sqlite"
    run_id = _run_deployment(sources, dataset, cache, deployment)
    return {"dataset": dataset, "cache": cache, "run_id": run_id, "env": deployment}


def _run_deployment(sources: Path, dataset: Path, cache: Path, env: dict) -> str:
    prefect = Path(sys.executable).with_name("prefect")
    proc = subprocess.run([str(prefect), "deployment", "run", "build-dataset/local", "-p", f"sources={sources}",
                           "-p", f"output={dataset}", "-p", f"llm_cache={cache}", "--watch"],
                          env={**os.environ, **env}, text=True, capture_output=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run_id = flow_run_id(proc.stdout)
    assert run_id, proc.stdout[-3000:]
    return run_id


def _content(dataset: Path) -> dict[str, dict[str, dict]]:
    """Every table's rows keyed by a stable id, volatile timestamps removed."""
    out = {}
    for table in VIDEO_TABLES:
        rows = read_table(dataset, table).to_pylist()
        keyed = {}
        for row in rows:
            key = json.dumps({k: v for k, v in row.items() if k not in VOLATILE}, sort_keys=True, default=str)
            assert key not in keyed, f"duplicate row in {table}"
            keyed[key] = row
        out[table] = set(keyed)
    return out


def test_deployment_run_completes_with_artifact(first_run):
    state, artifacts = flow_run_report(settings().prefect.api_url, first_run["run_id"])
    assert state == "COMPLETED"
    assert "build-dataset-summary" in artifacts


def test_good_videos_land_and_bad_sources_are_dead_lettered(first_run):
    dataset = first_run["dataset"]
    assert len(committed(dataset)) == 2
    assert len(read_table(dataset, "videos")) == 2
    dead = pq.read_table(dataset / "dead_letter.parquet").to_pylist()
    assert all(d["source_id"] for d in dead)  # every letter of a run names the source as given
    reasons = {Path(d["source_id"]).name: d for d in dead}
    by_class = {d["error_class"] for d in dead}
    assert "no_video_stream" in by_class, dead
    assert any("missing.mp4" in d["source_id"] or "not found" in d["message"].lower() or
               "no such file" in d["message"].lower() for d in dead), reasons
    assert not verify_manifest(dataset)
    assert "\n# SAVEn-Vid dataset" in (dataset / "README.md").read_text()
    # The run's record, for per-stage throughput and cost: each stage's videos, seconds and (LLM stages) tokens.
    [record] = [json.loads(p.read_text()) for p in (dataset / "_runs").glob("run-*.json")]
    assert record["videos_ok"] == 2 and record["wall_s"] > 0
    assert record["stages"]["segment"]["videos"] >= 2 and record["stages"]["segment"]["seconds"] > 0
    assert record["stages"]["qa"]["counts"]["completion_tokens"] > 0
    # what per-stage throughput is counted from: the committed videos' seconds and each stage's CPU (a media
    # stage's ffmpeg children included: segmentation is mostly ffmpeg's decode)
    assert record["video_seconds"] == pytest.approx(sum(v.duration_s for v in read_records(dataset, "videos")))
    cpu = record["cpu_seconds_by_stage"]
    assert all(cpu[s] > 0 for s in ("acquire", "segment", "asr", "fuse", "qa"))
    assert cpu["segment"] == record["stages"]["segment"]["cpu_seconds"]
    assert "report" not in record and "api_key" not in json.dumps(record).lower()


def test_every_table_validates_and_qa_passes_its_checks(first_run):
    dataset = first_run["dataset"]
    for table in VIDEO_TABLES:
        read_records(dataset, table, ALL_RECORDS[table])  # raises on any invalid row
    qa = read_records(dataset, "qa", QAItem)
    assert qa, "no QA item landed"
    clips = {c.clip_id: c for c in read_records(dataset, "clips", ALL_RECORDS["clips"])}
    for item in qa:
        assert item.checks_passed
        assert all(cid in clips for cid in item.evidence_clip_ids)
    descriptions = read_records(dataset, "descriptions", ALL_RECORDS["descriptions"])
    assert {d.clip_id for d in descriptions} <= set(clips)
    assert len(descriptions) >= len(clips) // 2


def test_the_viewer_shows_every_row_of_a_real_video(first_run, tmp_path):
    """``saven view`` on the dataset this module's deployment run built, loaded from disk in headless Chromium."""
    from test_view import CHROMIUM, assert_busiest_page_holds_every_row

    if CHROMIUM is None:
        pytest.skip("no `chromium` binary on PATH (the Makefile's apt list installs it)")
    assert_busiest_page_holds_every_row(first_run["dataset"], tmp_path)


def test_rerun_skips_committed_and_sends_no_llm_request(first_run, sources):
    from flows.build_dataset import build_dataset

    before = _content(first_run["dataset"])
    summary = build_dataset(sources=str(sources), output=str(first_run["dataset"]), llm_cache=str(first_run["cache"]))
    assert summary["skipped_committed"] == 2 and summary["videos_ok"] == 0
    assert summary["llm"].get("requests_sent", 0) == 0
    assert _content(first_run["dataset"]) == before


def test_kill_9_mid_run_then_resume_equals_uninterrupted(first_run, sources, tmp_path):
    dataset = tmp_path / "dataset"
    env = {**os.environ, **first_run["env"]}
    cmd = [sys.executable, "-m", "flows.cli", "build", "--sources", str(sources), "--output", str(dataset),
           "--batch-size", "1"]
    # Share the first run's LLM cache so both runs see the same model replies.
    cmd += ["--llm-cache", str(first_run["cache"])]
    sigkill_after_first_commit(cmd, env, dataset)
    assert len(committed(dataset)) == 1  # killed right after the first commit

    resume = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1500)
    assert resume.returncode == 0, resume.stdout[-3000:] + resume.stderr[-3000:]
    assert len(committed(dataset)) == 2
    assert _content(dataset) == _content(first_run["dataset"])
