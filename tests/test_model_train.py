"""Feature step, training, checkpoints and inference end to end on the tiny preset, over real media."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from model.config import preset_config
from model.data import caption_target, load_examples
from model.features import FEATURE_STAGE, compute_features, features_path, load_features
from model.generate import SavenVidPredictor, generate
from devdata.model_sample import BUNNY, CHAPLIN, build_sample_dataset
from model.train import METRICS_FILE, checkpoints, train
from schemas.records import DeadLetter, QAItem


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: thread hand-offs cost more than they save, badly so on a busy machine
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, shared_media) -> Path:
    ds = build_sample_dataset(tmp_path_factory.mktemp("ds"), shared_media)
    report = compute_features(ds, preset_config("tiny"))
    assert sorted(report.written) == [BUNNY, CHAPLIN] and not report.dead_letters
    return ds


def losses(out_dir: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (out_dir / METRICS_FILE).read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows}


def test_feature_cache_from_real_media(dataset):
    bunny = load_features(features_path(dataset, "tiny", BUNNY))
    # keyframes: 2 per clip, 4 clips; audio: the decoded 30 s track at 2 tokens/s
    assert bunny.vision.shape == (8, 4, 32) and bunny.vision_t.tolist()[:2] == [2.0, 6.0]
    assert bunny.audio.shape[1] == 32 and 59 <= bunny.audio.shape[0] <= 61
    assert 0 < bunny.audio_t.min() and bunny.audio_t.max() <= 30.1
    assert bunny.audio.abs().sum(1).min() > 0  # real encoder output on every token, not zero padding
    # chaplin has neither keyframes nor a decoded audio file: frames and audio come from the media itself
    chaplin = load_features(features_path(dataset, "tiny", CHAPLIN))
    assert chaplin.vision_t.tolist() == [0.0, 2.0, 4.0, 6.0, 8.0]
    assert chaplin.duration_s == pytest.approx(9.64) and chaplin.audio.shape[0] in (19, 20)
    assert set(bunny.fingerprints) == {"vision", "audio"} and bunny.fingerprints == chaplin.fingerprints
    # different frames give different features (the tower sees the pixels)
    assert not torch.allclose(bunny.vision[0], bunny.vision[4])
    # idempotent: a second run skips what is cached with the same encoders
    again = compute_features(dataset, preset_config("tiny"))
    assert sorted(again.skipped) == [BUNNY, CHAPLIN] and not again.written


def test_a_broken_video_becomes_a_dead_letter(dataset, tmp_path):
    from schemas.shards import read_records

    ds = tmp_path / "ds"
    shutil.copytree(dataset, ds)
    shutil.rmtree(ds / "features")
    (ds / "media" / "local-chaplin.mp4").write_bytes(b"not a video")
    report = compute_features(ds, preset_config("tiny"))
    assert report.written == [BUNNY]
    [dead] = report.dead_letters
    assert dead.video_id == CHAPLIN and dead.stage == FEATURE_STAGE and "no frames decoded" in dead.message
    assert [d.video_id for d in read_records(ds, "dead_letter", DeadLetter)] == [CHAPLIN]
    # training goes on without it (its examples are skipped), on the videos that have features
    ckpt = train(ds, tmp_path / "out", "tiny", 1, 2)
    assert ckpt.name == "checkpoint-000002"


def test_stage1_examples_are_captions_built_from_descriptions(dataset):
    examples = load_examples(dataset, 1)
    assert len(examples) == 6
    first = next(e for e in examples if e.example_id == f"{BUNNY}.c0001")
    assert first.span == (8.0, 16.0)
    assert first.target == ("From 00:00:08.000 to 00:00:16.000, we can see a close view of a small river and grass "
                            "swaying in the wind, and hear flowing water and wind; gentle strings; a splash; serene.")
    stage2 = load_examples(dataset, 2)
    assert len(stage2) == 8 and all(e.span[0] == 0.0 for e in stage2)
    assert {e.target[:2] for e in stage2} == {"A.", "B.", "C.", "D."}


def test_caption_target_with_no_sound():
    from schemas.records import ClipDescription

    d = ClipDescription(start_s=1.0, end_s=2.5, video_id="local-x", clip_id="local-x.c0000", visual="A red car.",
                        narration="", environment="", timbre="", event="", emotion="",
                        fused="From 00:00:01.000 to 00:00:02.500: a red car.", model="m")
    assert caption_target(d) == "From 00:00:01.000 to 00:00:02.500, we can see a red car, and hear no notable sound."


def test_resume_gives_the_same_losses_as_an_uninterrupted_run(dataset, tmp_path):
    cfg = preset_config("tiny")  # LoRA dropout 0.1: the RNG state matters too
    full = train(dataset, tmp_path / "full", "tiny", 2, 6, config=cfg)
    assert full.name == "checkpoint-000006"
    part = train(dataset, tmp_path / "part", "tiny", 2, 6, config=cfg, stop_at=3)
    assert part.name == "checkpoint-000003"
    resumed = train(dataset, tmp_path / "part", "tiny", 2, 6, config=cfg)
    assert resumed.name == "checkpoint-000006"
    a, b = losses(tmp_path / "full"), losses(tmp_path / "part")
    assert [b[s] for s in range(6)] == [a[s] for s in range(6)]  # exact, not approximately
    from safetensors.torch import load_file

    ta, tb = load_file(str(full / "trainable.safetensors")), load_file(str(resumed / "trainable.safetensors"))
    assert ta.keys() == tb.keys() and any("lora_" in k for k in ta) and any(k.startswith("avts.") for k in ta)
    assert all(torch.equal(ta[k], tb[k]) for k in ta)
    oa, ob = load_file(str(full / "optimizer.safetensors")), load_file(str(resumed / "optimizer.safetensors"))
    assert all(torch.equal(oa[k], ob[k]) for k in oa)
    # a finished run asked again does nothing and returns the same checkpoint
    assert train(dataset, tmp_path / "part", "tiny", 2, 6, config=cfg) == resumed


def test_checkpoints_hold_no_pickle(dataset, tmp_path):
    cfg = preset_config("tiny")
    cfg.train.save_every, cfg.train.keep_last = 1, 2
    last = train(dataset, tmp_path / "out", "tiny", 1, 3, config=cfg)
    assert [p.name for p in checkpoints(tmp_path / "out")] == ["checkpoint-000002", "checkpoint-000003"]
    suffixes = {p.suffix for p in last.rglob("*") if p.is_file()}
    assert suffixes <= {".safetensors", ".json", ".jinja"}, suffixes
    assert list((tmp_path / "out" / "tb").glob("events.out.tfevents.*"))
    state = json.loads((last / "train_state.json").read_text())
    assert state["step"] == 3 and state["stage"] == 1
    assert all(n.startswith(("tlp.", "avts.")) for n in state["param_names"])  # stage 1 never trains LoRA


def test_overfitting_eight_examples_then_answering_them(dataset, tmp_path):
    cfg = preset_config("tiny")
    cfg.train.batch_size = 4
    ckpt = train(dataset, tmp_path / "out", "tiny", 2, 60, config=cfg)
    loss = losses(tmp_path / "out")
    first, last = sum(loss[s] for s in range(3)) / 3, sum(loss[s] for s in range(57, 60)) / 3
    assert last < 0.25 * first, (first, last)
    predictor = SavenVidPredictor.from_checkpoint(ckpt, "cpu")
    from schemas.shards import read_records

    items = read_records(dataset, "qa", QAItem)
    feats = {v: load_features(features_path(dataset, "tiny", v)) for v in (BUNNY, CHAPLIN)}
    one_by_one = [predictor.answer_mcq(feats[q.video_id], q.question, q.options, max_new_tokens=3) for q in items]
    letters = [a[:1] for a in one_by_one]
    assert sum(letter == "ABCD"[q.answer_index] for letter, q in zip(letters, items)) >= 6, one_by_one
    # batched (left-padded) answers equal the one-by-one answers
    from model.data import mcq_prompt

    batched = predictor.answer_many([(feats[q.video_id], mcq_prompt(q.question, q.options)) for q in items],
                                    batch_size=8, max_new_tokens=3, query_texts=[q.question for q in items])
    assert batched == one_by_one
    assert isinstance(generate(ckpt, feats[CHAPLIN], "What is heard from 1s to 3s?", max_new_tokens=4), str)


def test_both_stages_chain(dataset, tmp_path):
    last = train(dataset, tmp_path / "out", "tiny", "both", 2)
    assert last == tmp_path / "out" / "stage2" / "checkpoint-000002"
    first = tmp_path / "out" / "stage1" / "checkpoint-000002"
    from safetensors.torch import load_file

    s1, s2 = load_file(str(first / "trainable.safetensors")), load_file(str(last / "trainable.safetensors"))
    # stage 2 started from stage 1's TLP + AVTS (they moved on from there, LoRA B left zero only in stage 1)
    assert all(not s1[k].any() for k in s1 if "lora_B" in k)
    assert any(s2[k].any() for k in s2 if "lora_B" in k)


@pytest.fixture()
def heldout_split(monkeypatch):
    """The profile's split (the test session trains on every video: SAVEN_BENCHMARK__HELDOUT_FRACTION=0)."""
    from schemas.settings import settings

    monkeypatch.setenv("SAVEN_BENCHMARK__HELDOUT_FRACTION", "0.1")
    monkeypatch.setenv("SAVEN_BENCHMARK__MIN_HELDOUT_ITEMS", "0")
    settings.cache_clear()
    yield settings().benchmark
    monkeypatch.undo()
    settings.cache_clear()


def test_evaluation_during_training_writes_heldout_loss_and_bench_curves(dataset, tmp_path, heldout_split):
    """Every eval_every steps and at the end: the held-out videos' loss and AVBench accuracy (own audio, silenced,
    per type), in eval.jsonl and TensorBoard beside the training curves."""
    from benchmark.build import BuildConfig, build_avbench
    from model.train import EVAL_FILE
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    split = heldout_split
    bench = build_avbench(dataset, tmp_path / "bench", BuildConfig(
        heldout_fraction=split.heldout_fraction, split_salt=split.split_salt, min_heldout_items=split.min_heldout_items,
        similarity="token_overlap"))
    assert bench.items and load_examples(dataset, 2, heldout_only=True)
    assert {it.video_id for it in bench.items}.isdisjoint(
        {e.video_id for e in load_examples(dataset, 2)})  # the bench is over videos training never sees
    cfg = preset_config("tiny")
    cfg.train.eval_every = 2
    train(dataset, tmp_path / "out", "tiny", 2, 4, config=cfg, bench=bench.folder)
    rows = [json.loads(line) for line in (tmp_path / "out" / EVAL_FILE).read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 3]
    for r in rows:
        e = r["eval"]
        assert 0 < e["heldout_loss"] < 50
        assert 0 <= e["bench_accuracy_own"] <= 100 and 0 <= e["bench_accuracy_silenced"] <= 100
        assert e["bench_silence_drop"] == pytest.approx(e["bench_accuracy_own"] - e["bench_accuracy_silenced"])
        assert {k for k in e if k.startswith("bench_type/")} == {f"bench_type/{it.type.value}" for it in bench.items}
    assert rows[0]["eval"]["heldout_loss"] != rows[1]["eval"]["heldout_loss"]  # the model moved between them
    events = EventAccumulator(str(tmp_path / "out" / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"stage2/loss", "stage2/eval/heldout_loss", "stage2/eval/bench_accuracy_own",
            "stage2/eval/bench_silence_drop"} <= tags
    assert [e.step for e in events.Scalars("stage2/eval/heldout_loss")] == [1, 3]


def test_diagnosis_compares_the_checkpoint_with_its_initialisation(dataset, tmp_path, heldout_split):
    """model.diagnose on the held-out examples: a checkpoint trained 30 steps has learned the answer format (its
    answer loss below the initial model's), each ablation changes what the LLM reads, attention shares are shares."""
    from model.diagnose import ABLATIONS, diagnose, verdicts

    cfg = preset_config("tiny")
    cfg.train.batch_size = 4
    ckpt = train(dataset, tmp_path / "out", "tiny", 2, 30, config=cfg)
    report = diagnose(ckpt, dataset)
    trained, initial = report["trained"], report["initial"]
    assert report["examples"] == trained["examples"] == len(load_examples(dataset, 2, heldout_only=True)) > 0
    assert trained["answer_loss"] < initial["answer_loss"]
    for suffix in ABLATIONS:
        assert 0 < trained[f"letter_loss{suffix}"] < 50
    # zeroing the encoders' features changes the multimodal tokens, so the letter's logits move
    assert trained["letter_loss_without_both"] != trained["letter_loss"]
    for m in (trained, initial):
        assert 0 < m["attention_on_multimodal"] < 1 and 0 < m["multimodal_share_of_sequence"] < 1
        assert 0 < m["top_letter_share"] <= 1 and 0 <= m["letter_accuracy"] <= 1 and m["multimodal_norm_ratio"] > 0
    said = verdicts(report)
    assert said[0].startswith("answer loss") and any("attention on the multimodal tokens" in s for s in said)
