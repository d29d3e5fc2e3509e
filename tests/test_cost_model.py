"""The cost model's arithmetic (tests/perf/cost_model.py): work measured from a dataset and its run record, hours
and dollars that scale with the work, the bottleneck, and a run record as the flow writes it."""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from flows.report import write_run_record
from schemas.store import DatasetStore
from test_benchmark_support import make_dataset

spec = importlib.util.spec_from_file_location("cost_model", Path(__file__).parent / "perf" / "cost_model.py")
cost_model = importlib.util.module_from_spec(spec)
sys.modules["cost_model"] = cost_model
spec.loader.exec_module(cost_model)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    ds = make_dataset(tmp_path_factory.mktemp("ds"), 4)  # 40 s + 150 s + 600 s + 2400 s, 4 clips each
    summary = {"report": "# markdown", "videos_ok": 4, "wall_s": 12.0, "stages": {
        "segment": {"videos": 4, "seconds": 36.0, "counts": {}},
        "keyframes": {"videos": 4, "seconds": 12.0, "counts": {}},
        "fuse": {"videos": 4, "seconds": 20.0, "counts": {"prompt_tokens": 16_000, "completion_tokens": 1_600}},
        "qa": {"videos": 4, "seconds": 30.0, "counts": {"prompt_tokens": 8_000, "completion_tokens": 2_000}}}}
    rel = write_run_record(DatasetStore.of(ds), summary, "2026-12-07T13:00:00Z")
    assert rel == "_runs/run-20261207T130000Z.json"
    assert "report" not in json.loads((ds / rel).read_text())
    return ds


def test_work_per_video_hour_from_the_tables_and_run_record(dataset):
    work = cost_model.measure(dataset)
    hours = (40 + 150 + 600 + 2400) / 3600
    assert work.video_hours == pytest.approx(hours)
    assert work.tokens_from == "run record"
    assert work.clips == pytest.approx(16 / hours)
    assert work.fuse_prompt_tokens == pytest.approx(16_000 / hours)
    assert work.qa_items == pytest.approx(20 / hours)  # 4 videos x 5 types
    assert work.media_cpu_s == pytest.approx(48 / hours)  # segment + keyframes seconds
    assert work.frames_decoded == pytest.approx(25 * 3600)  # every frame of an hour at 25 fps
    assert work.audio_s == pytest.approx(3600)


def test_hours_and_dollars_scale_with_work_and_name_the_bottleneck(dataset):
    work = cost_model.measure(dataset)
    one = cost_model.cost_table(work, 1000)
    two = cost_model.cost_table(work, 2000)
    assert two["total_usd"] == pytest.approx(2 * one["total_usd"])
    rows = {r["stage"]: r for r in one["rows"]}
    assert rows["ASR (Whisper large-v3)"]["hours"] == pytest.approx(1000 * 3600 / 46 / 3600)
    more_clips = cost_model.cost_table(replace(work, fuse_prompt_tokens=2 * work.fuse_prompt_tokens,
                                               fuse_output_tokens=2 * work.fuse_output_tokens), 1000)
    fusion = "fusion (Qwen2.5-7B)"
    assert {r["stage"]: r for r in more_clips["rows"]}[fusion]["hours"] == pytest.approx(2 * rows[fusion]["hours"])
    gpu = [r for r in one["rows"] if r["unit"] == "GPU-h"]
    assert one["bottleneck"] == max(gpu, key=lambda r: r["hours"])["stage"]
    assert sum(one["llm_node_gpu_split"].values()) == pytest.approx(4)
    huge_asr = cost_model.cost_table(replace(work, audio_s=work.audio_s * 1000), 1000)
    assert huge_asr["bottleneck"] == "ASR (Whisper large-v3)"
    assert "Assumptions" in cost_model.as_markdown(work, one, dataset)
