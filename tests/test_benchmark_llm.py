"""The blind filter and the OpenAI-compatible adapter against the real vLLM CPU server (kept to a few requests)."""

from __future__ import annotations

import re

import pytest

from benchmark.adapters import BenchContext
from benchmark.adapters.openai_chat import OpenAIAdapter
from benchmark.build import BuildConfig, build_avbench
from benchmark.filters import BLIND, is_undecided, model_filter
from benchmark.score import PredictionCache, predict
from test_benchmark_support import make_dataset

pytestmark = pytest.mark.llm


def test_blind_filter_with_the_real_server(llm_server, tmp_path):
    ds = make_dataset(tmp_path / "ds", 1)
    items = build_avbench(ds, tmp_path / "out", BuildConfig(heldout_fraction=1.0, similarity="token_overlap")).items[:2]
    context = BenchContext(ds)
    blind = OpenAIAdapter(context, base_url=llm_server.base_url, model=llm_server.model, modality="none",
                          max_tokens=48)
    assert "Clips:" not in blind.prompt(items[0])  # the blind model never sees the video's descriptions
    cache = PredictionCache(tmp_path / "p.sqlite")
    results = model_filter(BLIND, blind, items, rotations=2, cache=cache)
    assert set(results) == {it.item_id for it in items}
    for r in results.values():
        assert r.name == BLIND and not is_undecided(r), r.detail
        right, asked = map(int, re.search(r"(\d)/(\d) rotations right", r.detail).groups())
        assert r.passed == (right < 2) and asked == (2 if right == asked else right + 1)  # stops at the first miss
    # The filter's answers are cached: running it again sends nothing.
    sent = blind.client.stats.requests_sent
    assert sent >= 2
    assert model_filter(BLIND, blind, items, rotations=2, cache=cache) == results
    assert blind.client.stats.requests_sent == sent


def test_openai_adapter_reads_the_descriptions(llm_server, tmp_path):
    ds = make_dataset(tmp_path / "ds", 1)
    item = build_avbench(ds, tmp_path / "out", BuildConfig(heldout_fraction=1.0, similarity="token_overlap")).items[0]
    adapter = OpenAIAdapter(BenchContext(ds), base_url=llm_server.base_url, model=llm_server.model, modality="av")
    assert "Transcript:" in adapter.prompt(item) and "From 00:00:00.000 to" in adapter.prompt(item)
    (row,) = predict(adapter, [item], [0])
    assert not row.error and row.prediction.parsed_letter in {"A", "B", "C", "D"}
