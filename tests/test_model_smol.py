"""The embedded (smol) preset with the real SmolLM2-135M-Instruct and real Whisper-base audio features."""

from __future__ import annotations

import pytest

from model.config import model_available, preset_config

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (model_available("smollm2-135m-instruct") and model_available("whisper-base")),
                       reason="model cache lacks smollm2-135m-instruct / whisper-base (run `make models`)"),
]


def test_one_training_step_and_generate_with_real_smollm2(tmp_path, shared_media):
    from model.features import compute_features, features_path, load_features
    from model.generate import SavenVidPredictor
    from devdata.model_sample import CHAPLIN, build_sample_dataset
    from model.train import train

    ds = build_sample_dataset(tmp_path / "ds", shared_media, videos=(CHAPLIN,))
    cfg = preset_config("smol")
    report = compute_features(ds, cfg)
    assert report.written == [CHAPLIN] and not report.dead_letters
    feats = load_features(features_path(ds, "smol", CHAPLIN))
    # the real Whisper-base encoder: 512 wide, 2 tokens/s over the 9.64 s track, and not constant
    assert feats.audio.shape[1] == 512 and feats.audio.shape[0] in (19, 20)
    assert feats.audio.std(0).mean() > 0.01 and feats.fingerprints["audio"] == "ct2:whisper-base"
    assert feats.vision.shape == (5, 4, 128)

    ckpt = train(ds, tmp_path / "out", "smol", 2, 1)
    predictor = SavenVidPredictor.from_checkpoint(ckpt, "cpu")
    assert predictor.model.llm.get_base_model().config.num_hidden_layers == 30  # SmolLM2-135M, not a toy
    answer = predictor.answer_mcq(feats, "Which instrument is heard throughout the clip?",
                                  ["Electric guitar", "Bagpipes", "Piano", "Violin"], max_new_tokens=8)
    assert isinstance(answer, str) and answer.strip()
