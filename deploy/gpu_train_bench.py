"""GPU training throughput of a preset (default ``7b``) with random weights: tokens/s and MFU, both stages.

One command, a few minutes on one GPU, nothing downloaded (the ``arch`` blocks of the preset build the LLM in
code; features are random tensors of the cached-feature shapes, since training never runs the encoders):

    python deploy/gpu_train_bench.py [--steps 8] [--batch 1] [--out out/perf/gpu_train.json]

Each stage runs the real training step (``model.train.train_step``: bf16 autocast, AdamW, clipping) on full-budget
samples: ``max_windows`` windows of multimodal tokens plus a prompt and an answer. FLOPs per token count what a
frozen-LLM step must do: forward 2N, backward for activations only 2N (frozen weights get no weight gradient;
LoRA's is negligible), attention 12*L*d*seq, plus a forward recompute (2N + 4*L*d*seq) when gradient
checkpointing is on. ``mfu`` uses the first three (model FLOPs), ``hfu`` all of them (hardware FLOPs).
``--preset tiny --device cpu`` runs the same code on a CPU in seconds, so the script is tested where GPUs are not.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch

from model.config import preset_config
from model.llm import byte_tokenizer
from model.modeling import SavenVid, set_trainable
from model.train import autocast_for, make_optimizer, train_step, warmup_cosine

PEAK_BF16_TFLOPS = {"H200": 989.4, "H100": 989.4, "A100": 312.0, "L40S": 362.0, "A10G": 125.0, "L4": 121.0}


def peak_tflops(device: torch.device, override: float | None) -> float | None:
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def synthetic_batch(model: SavenVid, batch: int, prompt_len: int, answer_len: int, device) -> dict:
    cfg, r = model.config, model.config.resampler
    T, k = r.max_windows, r.tokens_per_window
    P = cfg.vision.pool_grid ** 2
    g = torch.Generator().manual_seed(0)
    text = lambda n: torch.randint(0, 250, (batch, n), generator=g)
    ph = torch.full((batch, T * k), model.placeholder_id)
    ids = torch.cat([text(prompt_len // 2), ph, text(prompt_len - prompt_len // 2), text(answer_len)], 1)
    labels = ids.clone()
    labels[:, : ids.shape[1] - answer_len] = -100
    spans = torch.linspace(0, T * r.window_s, T + 1)
    b = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels,
         "video": torch.randn(batch, T, r.max_frames_per_window * P, cfg.vision.feature_dim, generator=g),
         "video_mask": torch.ones(batch, T, r.max_frames_per_window * P, dtype=torch.bool),
         "audio": torch.randn(batch, T, r.max_audio_per_window, cfg.audio.feature_dim, generator=g),
         "audio_mask": torch.ones(batch, T, r.max_audio_per_window, dtype=torch.bool),
         "window_spans": torch.stack([spans[:-1], spans[1:]], 1).expand(batch, T, 2).contiguous(),
         "window_mask": torch.ones(batch, T, dtype=torch.bool),
         "query_span": torch.tensor([[0.0, T * r.window_s]]).expand(batch, 2).contiguous(),
         "duration": torch.full((batch,), T * r.window_s)}
    return {key: v.to(device) for key, v in b.items()}


def flops_per_token(model: SavenVid, seq: int) -> tuple[float, float]:
    base = model.llm.get_base_model()
    c = base.config
    emb = base.get_input_embeddings().weight.numel()
    n = sum(p.numel() for name, p in base.named_parameters() if "lora_" not in name) - emb  # lm_head counted
    attn = 12 * c.num_hidden_layers * c.hidden_size * seq
    model_flops = 4 * n + attn
    recompute = (2 * n + 4 * c.num_hidden_layers * c.hidden_size * seq) if model.config.llm.gradient_checkpointing \
        else 0
    return float(model_flops), float(model_flops + recompute)


def run_stage(model: SavenVid, stage: int, batch: dict, steps: int, device, precision: str) -> dict:
    set_trainable(model, stage)
    opt, names = make_optimizer(model, 1e-4, 0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(0, 1000, 0.1))
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    autocast = lambda: autocast_for(device, precision)
    for _ in range(2):  # warm-up: kernels, allocator
        train_step(model, opt, sched, [batch], autocast=autocast)
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times, loss = [], 0.0
    for _ in range(steps):
        t0 = time.perf_counter()
        loss = train_step(model, opt, sched, [batch], autocast=autocast)["loss"]
        sync()
        times.append(time.perf_counter() - t0)
    step_s = sorted(times)[len(times) // 2]
    tokens = batch["input_ids"].numel()
    return {"stage": stage, "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "step_s": round(step_s, 4), "tokens_per_step": tokens, "tokens_per_s": round(tokens / step_s, 1),
            "loss": round(loss, 4),
            "peak_memory_gb": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda"
            else None}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="7b")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--prompt-len", type=int, default=96)
    p.add_argument("--answer-len", type=int, default=64)
    p.add_argument("--peak-tflops", type=float, default=None, help="the device's dense bf16 peak, if not known")
    p.add_argument("--out", type=Path, default=REPO / "out" / "perf" / "gpu_train.json")
    args = p.parse_args(argv)

    device = torch.device(args.device)
    cfg = preset_config(args.preset)
    cfg.llm.name_or_path = None  # random weights from the preset's arch: nothing to download
    cfg.llm.max_length = 1 << 20
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    tokenizer = byte_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": [cfg.llm.placeholder_token]})
    t0 = time.perf_counter()
    with torch.device(device) if device.type == "cuda" else contextlib.nullcontext():
        model = SavenVid.build(cfg, dtype, tokenizer=tokenizer)
    model.to(device).train()
    build_s = time.perf_counter() - t0
    batch = synthetic_batch(model, args.batch, args.prompt_len, args.answer_len, device)
    seq = batch["input_ids"].shape[1]
    model_fpt, hw_fpt = flops_per_token(model, seq)
    peak = peak_tflops(device, args.peak_tflops)
    stages = []
    for stage in (1, 2):
        row = run_stage(model, stage, batch, args.steps, device, cfg.train.precision)
        achieved = row["tokens_per_s"] * model_fpt / 1e12
        row |= {"model_tflops": round(achieved, 1),
                "mfu": round(achieved / peak, 4) if peak else None,
                "hfu": round(row["tokens_per_s"] * hw_fpt / 1e12 / peak, 4) if peak else None}
        stages.append(row)
    result = {"preset": args.preset, "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "peak_bf16_tflops": peak, "llm_params": sum(p.numel() for n, p in model.llm.named_parameters()
                                                            if "lora_" not in n),
              "seq_len": seq, "batch": args.batch, "multimodal_tokens": cfg.resampler.max_windows
              * cfg.resampler.tokens_per_window, "gradient_checkpointing": cfg.llm.gradient_checkpointing,
              "build_s": round(build_s, 1), "stages": stages}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
