"""SavenVid on the tiny preset: splicing at the placeholder, label masking, what trains per stage, save/load."""

from __future__ import annotations

import json

import pytest
import torch

from model.config import PRESETS, ModelConfig, preset_config
from model.data import IGNORE, collate, make_sample
from model.features import VideoFeatures
from model.modeling import PlaceholderMismatchError, SavenVid, set_trainable
from model.train import make_optimizer, train_step, warmup_cosine


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: thread hand-offs cost more than they save, badly so on a busy machine
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def cfg() -> ModelConfig:
    return preset_config("tiny")


@pytest.fixture()
def model(cfg) -> SavenVid:
    torch.manual_seed(0)
    return SavenVid.build(cfg)


def feats(duration: float, seed: int) -> VideoFeatures:
    g = torch.Generator().manual_seed(seed)
    n_frames, n_audio = max(1, int(duration // 2)), int(duration * 2)
    return VideoFeatures("local-x", duration, torch.randn(n_frames, 4, 32, generator=g),
                         torch.linspace(0.5, duration - 0.5, n_frames), torch.randn(n_audio, 32, generator=g),
                         (torch.arange(n_audio) + 0.5) / 2, {})


def batch(model, cfg):
    a = make_sample(feats(9.0, 1), (0.0, 9.0), "What is heard from 1s to 3s?", "What is heard from 1s to 3s?",
                    model.tokenizer, cfg, target="A. A dog barks")
    b = make_sample(feats(16.0, 2), (4.0, 10.0), "Describe it.", "Describe it.", model.tokenizer, cfg,
                    target="From 00:00:04.000 to 00:00:10.000, we can see a cat")
    return collate([a, b], model.tokenizer.pad_token_id), (a, b)


def test_placeholders_match_multimodal_tokens_and_are_spliced_in_order(model, cfg):
    b, (a, s2) = batch(model, cfg)
    k = cfg.resampler.tokens_per_window
    ph = model.placeholder_id
    assert (a["input_ids"] == ph).sum() == len(a["window_spans"]) * k == 5 * k  # 9 s -> 5 windows
    assert (s2["input_ids"] == ph).sum() == len(s2["window_spans"]) * k == 3 * k  # the 6 s clip -> 3 windows
    assert torch.equal(b["window_mask"].sum(1), torch.tensor([5, 3]))
    mm, counts = model.multimodal_tokens(b)
    assert mm.shape == (2, 5 * k, model.llm.get_input_embeddings().weight.shape[1])
    assert counts.tolist() == [5 * k, 3 * k]
    emb = model.embed(b["input_ids"], mm, counts)
    for i, n in enumerate(counts.tolist()):
        slots = b["input_ids"][i] == ph
        assert torch.equal(emb[i][slots], mm[i, :n])  # placeholder j holds multimodal token j, in order
        text = model.llm.get_input_embeddings()(b["input_ids"][i])
        assert torch.equal(emb[i][~slots], text[~slots])  # the rest is the ordinary text embedding
    # placeholders are one contiguous run (the video is not scattered through the prompt)
    idx = (a["input_ids"] == ph).nonzero().flatten()
    assert torch.equal(idx, torch.arange(idx[0], idx[0] + len(idx)))


def test_placeholder_count_mismatch_is_a_clear_error(model, cfg):
    b, _ = batch(model, cfg)
    ids = b["input_ids"].clone()
    first = (ids[1] == model.placeholder_id).nonzero()[0, 0]
    ids[1, first] = model.tokenizer.convert_tokens_to_ids("a")
    with pytest.raises(PlaceholderMismatchError, match=r"samples \[1\]: \[14\] placeholder tokens .* \[15\]"):
        model({**b, "input_ids": ids})
    # and a prompt that talks about the placeholder text itself cannot smuggle in an extra one
    s = make_sample(feats(4.0, 3), (0.0, 4.0), "what is <|av|>?", "what is <|av|>?", model.tokenizer, cfg, "x")
    assert (s["input_ids"] == model.placeholder_id).sum() == 2 * cfg.resampler.tokens_per_window


def test_labels_only_on_the_answer(model, cfg):
    _, (a, _) = batch(model, cfg)
    answer = model.tokenizer("A. A dog barks", add_special_tokens=False)["input_ids"] + [model.tokenizer.eos_token_id]
    labelled = a["labels"] != IGNORE
    assert a["labels"][labelled].tolist() == answer
    assert labelled.nonzero().flatten().tolist() == list(range(len(a["labels"]) - len(answer), len(a["labels"])))
    assert (a["labels"][a["input_ids"] == model.placeholder_id] == IGNORE).all()
    b, _ = batch(model, cfg)
    assert (b["labels"][b["attention_mask"] == 0] == IGNORE).all()  # padding never counts


def names(model, pred):
    return {n for n, _ in model.named_parameters() if pred(n)}


def test_trainable_set_is_exactly_what_the_stage_says(model):
    tunable = names(model, lambda n: n.startswith(("tlp.", "avts.")))
    lora = names(model, lambda n: "lora_" in n)
    assert tunable and lora
    model.requires_grad_(True)  # the known pitfall: something turned everything on; the stage must undo it
    assert set(set_trainable(model, 1)) == tunable
    assert set(set_trainable(model, 2)) == tunable | lora
    base = names(model, lambda n: n.startswith("llm.") and "lora_" not in n)
    assert not any(p.requires_grad for n, p in model.named_parameters() if n in base)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable < 0.5 * sum(p.numel() for n, p in model.named_parameters() if n in base | tunable | lora)
    opt, opt_names = make_optimizer(model, 1e-3, 0.0)
    assert set(opt_names) == tunable | lora
    with pytest.raises(ValueError, match="stage must be 1 or 2"):
        set_trainable(model, 3)


@pytest.mark.parametrize("stage", [1, 2])
def test_frozen_parts_get_no_gradient_and_stay_bit_identical(model, cfg, stage):
    trainable = set(set_trainable(model, stage))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt, _ = make_optimizer(model, 1e-2, 0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(0, 10, 0.1))
    b, _ = batch(model, cfg)
    stats = train_step(model, opt, sched, [b])
    assert stats["loss"] > 0
    for n, p in model.named_parameters():
        if n in trainable:
            assert p.grad is not None, n
        else:
            assert p.grad is None, n
            assert torch.equal(p, before[n]), n
    changed = {n for n in trainable if not torch.equal(model.get_parameter(n), before[n])}
    assert names(model, lambda n: n.startswith(("tlp.", "avts."))) <= changed
    lora_b = names(model, lambda n: "lora_B" in n)
    assert (lora_b <= changed) == (stage == 2) and not (lora_b & changed and stage == 1)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_config_save_load_are_exact_inverses(preset, tmp_path):
    cfg = preset_config(preset)
    cfg.save(tmp_path)
    loaded = ModelConfig.load(tmp_path)
    assert loaded == cfg
    loaded.save(tmp_path / "again")
    assert (tmp_path / "again" / "config.json").read_text() == (tmp_path / "config.json").read_text()
    assert json.loads((tmp_path / "config.json").read_text())["preset"] == preset
    with pytest.raises(ValueError):
        ModelConfig.model_validate({**cfg.model_dump(), "surprise": 1})


def test_save_pretrained_from_pretrained_round_trip(model, cfg, tmp_path):
    set_trainable(model, 2)
    opt, _ = make_optimizer(model, 1e-2, 0.0)
    b, _ = batch(model, cfg)
    train_step(model, opt, torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(0, 10, 0.1)), [b])
    model.eval()
    folder = model.save_pretrained(tmp_path / "ckpt", {"vision": "v", "audio": "a"})
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "meta.json", "tokenizer",
                                                        "trainable.safetensors"]
    again = SavenVid.from_pretrained(folder).eval()
    assert again.encoder_fingerprints == {"vision": "v", "audio": "a"}
    for n, p in model.state_dict().items():
        assert torch.equal(p, again.state_dict()[n]), n  # trainables restored, frozen parts rebuilt identically
    with torch.no_grad():
        assert torch.equal(model(b).logits, again(b).logits)


def test_gradient_accumulation_averages_micro_batches(cfg):
    b, _ = batch(SavenVid.build(cfg), cfg)
    params = []
    for micro in ([b], [b, b]):
        torch.manual_seed(0)
        m = SavenVid.build(cfg).eval()  # eval: no dropout, so both runs see the same function
        set_trainable(m, 2)
        opt, _ = make_optimizer(m, 1e-2, 0.0)
        stats = train_step(m, opt, torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(0, 10, 0.1)), micro)
        params.append((stats["loss"], {n: p.detach().clone() for n, p in m.named_parameters() if p.requires_grad}))
    (loss1, p1), (loss2, p2) = params
    assert loss1 == pytest.approx(loss2, rel=1e-5)  # the mean over two equal micro-batches is the same loss
    assert all(torch.allclose(p1[n], p2[n], atol=1e-6) for n in p1)
