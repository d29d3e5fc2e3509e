"""The SAVEn-Vid adapter on a tiny real checkpoint (random init, built in code) over cached features."""

from __future__ import annotations

import pytest
import torch

from benchmark.adapters import BenchContext, make_adapter
from benchmark.build import BuildConfig, build_avbench
from benchmark.score import PredictionCache, predict
from test_benchmark_support import make_dataset, video_id


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from model.config import preset_config
    from model.features import VideoFeatures, features_path, save_features
    from model.modeling import SavenVid

    root = tmp_path_factory.mktemp("saven")
    config = preset_config("tiny")
    checkpoint = SavenVid.build(config).save_pretrained(root / "ckpt")
    ds = make_dataset(root / "ds", 2)
    # Video 0 has cached features; video 1 has neither features nor a media file to compute them from.
    g = torch.Generator().manual_seed(0)
    duration = 40.0
    feats = VideoFeatures(video_id(0), duration, torch.randn(4, 4, config.vision.feature_dim, generator=g),
                          torch.tensor([2.0, 12.0, 22.0, 32.0]), torch.randn(80, config.audio.feature_dim, generator=g),
                          torch.arange(80) / 2.0, {})
    save_features(features_path(ds, config.preset, video_id(0)), feats)
    items = build_avbench(ds, root / "out", BuildConfig(heldout_fraction=1.0, similarity="token_overlap")).items
    return ds, checkpoint, items


def test_saven_vid_answers_from_a_checkpoint_and_records_missing_features(setup, tmp_path):
    ds, checkpoint, items = setup
    ours = [it for it in items if it.video_id == video_id(0)][:2]
    theirs = [it for it in items if it.video_id == video_id(1)][:1]
    adapter = make_adapter(f"saven-vid:checkpoint={checkpoint},max_new_tokens=6,batch_size=2", BenchContext(ds))
    assert adapter.prompt(ours[0]).startswith(ours[0].question)  # the training prompt (model.data.mcq_prompt)
    cache = PredictionCache(tmp_path / "p.sqlite")
    rows = predict(adapter, ours + theirs, [0], cache)
    assert [r.prediction.item_id for r in rows] == [it.item_id for it in ours + theirs]
    assert not rows[0].error and not rows[1].error
    assert isinstance(rows[0].prediction.raw_answer, str)
    assert "FeatureError" in rows[2].error, rows[2].error
    assert rows[2].prediction.raw_answer == "" and not rows[2].prediction.correct
    assert len(cache) == 2  # the failed one is asked again next time
    # Greedy decoding from fixed weights: the same answers again, now from the cache.
    again = predict(adapter, ours, [0], cache)
    assert [r.prediction.raw_answer for r in again] == [r.prediction.raw_answer for r in rows[:2]]
    assert all(r.cached for r in again)
    assert adapter.fingerprint().startswith("saven-vid:")


def test_saven_vid_counterfactual_audio_silences_and_swaps_the_audio_tokens(setup, tmp_path):
    from model.features import features_path, load_features
    from model.generate import SavenVidPredictor

    ds, checkpoint, items = setup
    adapter = make_adapter(f"saven-vid:checkpoint={checkpoint},max_new_tokens=6,batch_size=2", BenchContext(ds))
    assert adapter.takes_audio
    feats = load_features(features_path(ds, adapter.predictor().config.preset, video_id(0)))

    silent = adapter.predictor().with_silent_audio(feats)
    assert silent.audio.shape[1] == feats.audio.shape[1] and len(silent.audio_t) == silent.audio.shape[0]
    assert not torch.equal(silent.audio[: len(feats.audio)], feats.audio[: len(silent.audio)])
    assert torch.equal(silent.vision, feats.vision)  # the pictures stay

    donor = feats.__class__(video_id(1), 80.0, feats.vision, feats.vision_t, feats.audio * -1, feats.audio_t * 2, {})
    swapped = SavenVidPredictor.with_audio_of(feats, donor)
    assert torch.equal(swapped.audio, donor.audio) and float(swapped.audio_t.max()) <= feats.duration_s
    assert torch.allclose(swapped.audio_t, feats.audio_t.clamp_max(feats.duration_s))  # 80 s stretched onto 40 s

    ours = [it for it in items if it.video_id == video_id(0)][:2]
    rows = predict(adapter.with_audio("silence"), ours, [0], PredictionCache(tmp_path / "p.sqlite"))
    assert all(not r.error for r in rows)
    # video 1 has no features and no media: swapping its audio in is an error recorded per item, not a crash
    swapped_rows = predict(adapter.with_audio("swapped", {video_id(0): video_id(1)}), ours, [0])
    assert all("FeatureError" in r.error for r in swapped_rows), [r.error for r in swapped_rows]
    assert len({adapter.fingerprint(), adapter.with_audio("silence").fingerprint(),
                adapter.with_audio("swapped", {}).fingerprint()}) == 3
