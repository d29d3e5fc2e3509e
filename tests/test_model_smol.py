"""The embedded (smol) preset with the real SmolLM2-135M-Instruct, real EfficientNet-Lite3 frame features and real
Whisper-base audio features."""

from __future__ import annotations

import pytest

from model.config import model_available, preset_config

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not all(model_available(m) for m in ("smollm2-135m-instruct", "whisper-base",
                                                            "efficientnet-lite3")),
                       reason="model cache lacks smollm2-135m-instruct / whisper-base / efficientnet-lite3 "
                              "(run `make models`)"),
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
    # the real EfficientNet-Lite3 head: 1280 wide, 2x2 pooled, and frames of the film differ from each other
    assert feats.vision.shape == (5, 4, 1280) and feats.vision.std(0).mean() > 0.01
    assert feats.fingerprints["vision"].startswith("pretrained:efficientnet-lite3:")

    ckpt = train(ds, tmp_path / "out", "smol", 2, 1)
    predictor = SavenVidPredictor.from_checkpoint(ckpt, "cpu")
    assert predictor.model.llm.get_base_model().config.num_hidden_layers == 30  # SmolLM2-135M, not a toy
    answer = predictor.answer_mcq(feats, "Which instrument is heard throughout the clip?",
                                  ["Electric guitar", "Bagpipes", "Piano", "Violin"], max_new_tokens=8)
    assert isinstance(answer, str) and answer.strip()
