"""Scoring: rotations and circular evaluation, parse failures, bootstrap intervals, the cache, the random baseline."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmark.adapters import make_adapter, parse_model_spec
from benchmark.adapters.random_answers import RandomAdapter
from benchmark.build import BuildConfig, build_avbench
from benchmark.score import (PredictionCache, bootstrap_ci, duration_bucket, item_outcomes, predict, predict_sheets,
                             rotate, score_items)
from test_benchmark_support import Constant, Failing, Oracle, make_dataset


@pytest.fixture(scope="module")
def items(tmp_path_factory):
    ds = make_dataset(tmp_path_factory.mktemp("ds"), 80)  # 400 items
    return build_avbench(ds, tmp_path_factory.mktemp("out"),
                         BuildConfig(heldout_fraction=1.0, similarity="token_overlap")).items


def test_rotation_arithmetic(items):
    item = items[0]
    for k in range(4):
        r = rotate(item, k)
        assert r.options == item.options[k:] + item.options[:k]
        assert r.options[r.answer_index] == item.options[item.answer_index]
        assert r.answer_letter == "ABCD"[(item.answer_index - k) % 4]
    assert rotate(rotate(item, 1), 3) == item
    assert {rotate(item, k).answer_letter for k in range(4)} == set("ABCD")


def test_circular_evaluation(items):
    few = items[:40]
    always_a = predict(Constant("A"), few, range(4))
    outcomes = item_outcomes(always_a)
    # The correct option visits every letter once over four rotations: "always A" is right exactly once.
    assert all(o.rotations == 4 and o.rotations_correct == 1 and not o.correct for o in outcomes.values())
    assert score_items("a", few, always_a)[0].accuracy == 0.0
    rotation0 = predict(Constant("A"), few, [0])
    share_a = sum(it.answer_letter == "A" for it in few) / len(few)
    assert score_items("a", few, rotation0)[0].accuracy == pytest.approx(share_a)
    oracle = score_items("o", few, predict(Oracle(), few, range(4)))
    assert oracle[0].group == "overall" and oracle[0].accuracy == 1.0


def test_unparsable_answers_are_wrong_and_counted(items):
    few = items[:20]
    rows = predict(Constant("I think B or C"), few, range(2))
    assert all(r.prediction.parsed_letter is None and not r.prediction.correct for r in rows)
    assert {r.rule for r in rows} == {"ambiguous:lone"}
    overall = score_items("m", few, rows)[0]
    assert overall.accuracy == 0.0 and overall.parse_failures == 40


def test_scores_per_group(items):
    rows = predict(Oracle(), items, [0])
    scores = {s.group: s for s in score_items("o", items, rows)}
    assert scores["overall"].n == len(items) == 400
    assert sum(scores[f"kind={k}"].n for k in ("av", "av_temporal")) == 400
    assert scores["type=temporal_grounding"].n == 80
    assert [g for g in scores if g.startswith("duration=")] == ["duration=<1m", "duration=1m-5m",
                                                                "duration=5m-20m", "duration=>=20m"]
    assert all(s.n == 100 for g, s in scores.items() if g.startswith("duration="))
    with pytest.raises(ValueError, match="no predictions"):
        score_items("o", items, rows[:10])


def test_duration_buckets():
    assert [duration_bucket(d) for d in (0.5, 59.9, 60.0, 299, 300, 1199, 1200, 7200)] == [
        "<1m", "<1m", "1m-5m", "1m-5m", "5m-20m", "5m-20m", ">=20m", ">=20m"]


def test_bootstrap_ci_contains_the_estimate_and_is_seeded():
    values = [True] * 37 + [False] * 63
    lo, hi = bootstrap_ci(values, seed=3)
    assert lo <= 0.37 <= hi and hi - lo < 0.25
    assert bootstrap_ci(values, seed=3) == (lo, hi)
    assert bootstrap_ci(values, seed=4) != (lo, hi)
    assert bootstrap_ci([True] * 5) == (1.0, 1.0)
    assert bootstrap_ci([True]) == (1.0, 1.0)
    assert bootstrap_ci([]) == (0.0, 1.0)
    for n in (2, 3, 7, 250):
        for k in range(n + 1):
            vals = [True] * k + [False] * (n - k)
            lo, hi = bootstrap_ci(vals, seed=n)
            assert lo <= k / n <= hi


def test_random_baseline_is_near_chance(items):
    assert len(items) >= 100
    rows = predict(RandomAdapter(seed=0), items, [0])
    overall = score_items("random", items, rows)[0]
    assert abs(overall.accuracy - 0.25) < 0.06
    assert overall.parse_failures == 0
    # Seeded: the same answers again; another seed answers differently.
    assert [r.prediction.raw_answer for r in predict(RandomAdapter(seed=0), items, [0])] == \
           [r.prediction.raw_answer for r in rows]
    assert [r.prediction.raw_answer for r in predict(RandomAdapter(seed=1), items, [0])] != \
           [r.prediction.raw_answer for r in rows]
    circular = score_items("random", items, predict(RandomAdapter(seed=0), items, range(4)))[0]
    assert circular.accuracy < 0.03  # chance is 1/256


def test_random_sheets_estimate_chance_on_a_tiny_benchmark(items, tmp_path: Path):
    """Two items: one random sheet scores 0, 50 or 100%; the mean of 400 sheets is chance on those items."""
    few = items[:2]
    one = score_items("random", few, predict(RandomAdapter(seed=0, sheets=1), few, [0]))[0]
    assert one.accuracy in (0.0, 0.5, 1.0)
    assert RandomAdapter(sheets=1).run_name(2) == "random(seed=0)"
    assert RandomAdapter().sheets_for(2) == 500 and RandomAdapter().sheets_for(5000) == 1
    cache = PredictionCache(tmp_path / "p.sqlite")
    adapter = make_adapter("random:sheets=400")
    rows = predict_sheets(adapter, few, [0], cache)
    assert len(rows) == 800 and {r.sheet for r in rows} == set(range(400))
    assert {r.prediction.model_name for r in rows} == {"random(seed=0) mean of 400 sheets"}
    overall = score_items(adapter.model_name, few, rows)[0]
    assert overall.n == 2 and abs(overall.accuracy - 0.25) < 0.05
    assert overall.ci_low < 0.25 < overall.ci_high and overall.parse_failures == 0
    # Sheets are independent draws, each cached under its own key; sheet 0 is the one-sheet baseline's answer.
    assert len({tuple(r.prediction.raw_answer for r in rows if r.sheet == k) for k in range(400)}) > 1
    assert [r.prediction.raw_answer for r in rows if r.sheet == 0] == \
           [r.prediction.raw_answer for r in predict(RandomAdapter(seed=0, sheets=1), few, [0])]
    assert len(cache) == 800
    assert all(r.cached for r in predict_sheets(make_adapter("random:sheets=400"), few, [0], cache))
    cache.close()
    with pytest.raises(ValueError, match="one sheet"):
        Constant("A").on_sheet(1)


def test_a_rescore_does_not_requery(items, tmp_path: Path):
    cache = PredictionCache(tmp_path / "p.sqlite")
    adapter = RandomAdapter(seed=0)
    first = predict(adapter, items, range(2), cache)
    assert adapter.calls == 2 * len(items) and not any(r.cached for r in first)
    again = predict(adapter, items, range(2), cache)
    assert adapter.calls == 2 * len(items) and all(r.cached for r in again)
    assert [r.prediction for r in again] == [r.prediction for r in first]
    cache.close()
    reopened = PredictionCache(tmp_path / "p.sqlite")
    assert all(r.cached for r in predict(RandomAdapter(seed=0), items, range(2), reopened))
    # A different model identity is a different key.
    other = RandomAdapter(seed=5)
    predict(other, items[:3], [0], reopened)
    assert other.calls == 3


def test_failed_answers_are_counted_and_not_cached(items, tmp_path):
    cache = PredictionCache(tmp_path / "p.sqlite")
    rows = predict(Failing(), items[:5], [0], cache)
    assert all(r.error and r.prediction.raw_answer == "" and not r.prediction.correct for r in rows)
    assert len(cache) == 0
    assert item_outcomes(rows)[items[0].item_id, 0].errors == 1


def test_registry_specs():
    assert parse_model_spec("openai:modality=audio, reply=text") == ("openai", {"modality": "audio",
                                                                               "reply": "text"})
    assert make_adapter("random:seed=7").fingerprint() == "random:seed=7"
    with pytest.raises(ValueError, match="unknown model"):
        make_adapter("nope")
    with pytest.raises(ValueError, match="key=value"):
        parse_model_spec("random:seed")
