"""The prepared GPU check: a preset (default ``7b``) with random weights on one GPU, no network, no hub, a few
minutes. Run it whenever a GPU is at hand and put its figures in README (with the date and the device):

    torchrun --standalone --nproc_per_node=1 deploy/gpu_check.py [--steps 8] [--out out/perf/gpu_check.json]

1. **Training under DDP**: each stage's real training step (``model.train.train_step`` on the model wrapped by
   ``model.train.data_parallel``, the same as a multi-GPU run: bf16 autocast, AdamW, clipping) on full-budget
   samples (``max_windows`` windows of multimodal tokens plus a prompt and an answer): tokens/s, MFU and HFU.
   FLOPs per token count what a frozen-LLM step must do: forward 2N, backward for activations only 2N (frozen
   weights get no weight gradient; LoRA's is negligible), attention 12*L*d*seq, plus a forward recompute
   (2N + 4*L*d*seq) when gradient checkpointing is on. ``mfu`` uses the first three, ``hfu`` all of them.
2. **Feature encoding** with the preset's frozen encoders (SigLIP so400m and Whisper large-v3's encoder for 7b,
   built from their ``arch`` blocks) in the dtype training and inference share (``model.features.encoder_dtype``:
   bf16 on a GPU): frames/s and audio seconds/s, and the dtype checked.
3. **A generate call** of the trained model on those features (``model.generate.SavenVidPredictor``): new
   tokens/s.

Without torchrun it runs the same steps in one process without DDP. ``--preset tiny --device cpu`` runs the same
code on a CPU in seconds, so the script is tested where GPUs are not (tests/test_gpu_check.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch

from model.config import preset_config
from model.llm import build_tokenizer
from model.modeling import SavenVid, set_trainable
from model.features import FrozenEncoders, VideoFeatures, encoder_dtype
from model.generate import SavenVidPredictor
from model.train import autocast_for, data_parallel, make_optimizer, train_step, warmup_cosine

# Dense bf16 peaks (no sparsity), by a part of the device name; the first match wins, so variants come first.
PEAK_BF16_TFLOPS = {"H100 PCIe": 756.0, "H100 NVL": 835.0, "H200": 989.4, "H100": 989.4, "A100": 312.0,
                    "L40S": 362.0, "L4": 121.0}


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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_stage(model: SavenVid, stage: int, batch: dict, steps: int, device, precision: str, ddp: bool) -> dict:
    set_trainable(model, stage)
    runner = data_parallel(model, device) if ddp else model  # after set_trainable: DDP hooks what trains
    opt, names = make_optimizer(model, 1e-4, 0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(0, 1000, 0.1))
    autocast = lambda: autocast_for(device, precision)
    for _ in range(2):  # warm-up: kernels, allocator
        train_step(runner, opt, sched, [batch], autocast=autocast)
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times, loss = [], 0.0
    for _ in range(steps):
        t0 = time.perf_counter()
        loss = train_step(runner, opt, sched, [batch], autocast=autocast)["loss"]
        _sync(device)
        times.append(time.perf_counter() - t0)
    step_s = sorted(times)[len(times) // 2]
    tokens = batch["input_ids"].numel()
    return {"stage": stage, "ddp": ddp, "trainable_params": sum(p.numel() for p in model.parameters()
                                                                if p.requires_grad),
            "step_s": round(step_s, 4), "tokens_per_step": tokens, "tokens_per_s": round(tokens / step_s, 1),
            "loss": round(loss, 4),
            "peak_memory_gb": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda"
            else None}


def encode_features(cfg, device: torch.device, frames: int, audio_s: float) -> tuple[VideoFeatures, dict]:
    """The preset's frozen encoders (random weights from their ``arch``) on random frames and a random waveform,
    in the dtype of the feature cache."""
    import numpy as np

    from schemas.handoff import SAMPLE_RATE

    dtype = encoder_dtype(cfg, device.type)
    encoders = FrozenEncoders(cfg, str(device), dtype)
    params = {p.dtype for m in (encoders.vision.model, encoders.audio.model) for p in m.parameters()}
    rng = np.random.default_rng(0)
    pictures = [rng.integers(0, 255, (cfg.vision.image_size, cfg.vision.image_size, 3), dtype=np.uint8)
                for _ in range(frames)]
    wave = (rng.standard_normal(int(audio_s * SAMPLE_RATE)) * 0.1).astype(np.float32)
    encoders.vision.encode(pictures[:2])  # warm-up: kernels, allocator
    encoders.audio.encode(wave[:SAMPLE_RATE])
    _sync(device)
    t0 = time.perf_counter()
    video = encoders.vision.encode(pictures)
    _sync(device)
    t1 = time.perf_counter()
    audio, audio_t = encoders.audio.encode(wave)
    _sync(device)
    t2 = time.perf_counter()
    feats = VideoFeatures("gpu-check", audio_s, video, torch.linspace(0, audio_s, frames), audio, audio_t,
                          dict(encoders.fingerprints))
    return feats, {"dtype": str(dtype).removeprefix("torch."), "encoder_param_dtypes": sorted(
        str(d).removeprefix("torch.") for d in params), "frames": frames, "frames_per_s": round(frames / (t1 - t0), 1),
        "audio_s": audio_s, "audio_s_per_s": round(audio_s / (t2 - t1), 1),
        "video_tokens": list(video.shape), "audio_tokens": list(audio.shape)}


def generate_call(model: SavenVid, feats: VideoFeatures, device: torch.device, max_new_tokens: int) -> dict:
    model.eval()
    predictor = SavenVidPredictor(model, device)
    predictor.answer(feats, "warm-up", max_new_tokens=2)
    _sync(device)
    t0 = time.perf_counter()
    text = predictor.answer(feats, "What happens in the video, and what can be heard?", max_new_tokens=max_new_tokens)
    _sync(device)
    seconds = time.perf_counter() - t0
    return {"max_new_tokens": max_new_tokens, "seconds": round(seconds, 3),
            "new_tokens_per_s": round(max_new_tokens / seconds, 1), "answer_chars": len(text)}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="7b")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--prompt-len", type=int, default=96)
    p.add_argument("--answer-len", type=int, default=64)
    p.add_argument("--frames", type=int, default=128, help="frames to encode")
    p.add_argument("--audio-s", type=float, default=120.0, help="seconds of audio to encode")
    p.add_argument("--new-tokens", type=int, default=64, help="tokens the generate call writes")
    p.add_argument("--peak-tflops", type=float, default=None, help="the device's dense bf16 peak, if not known")
    p.add_argument("--out", type=Path, default=REPO / "out" / "perf" / "gpu_check.json")
    args = p.parse_args(argv)

    ddp = "RANK" in os.environ  # under torchrun: the DDP path of a multi-GPU run, on this one GPU
    device = torch.device(args.device)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
    if ddp and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    cfg = preset_config(args.preset)
    # random weights from the preset's arch blocks: nothing to download (7b, tiny: every part has one)
    cfg.llm.name_or_path = None
    if cfg.vision.kind == "siglip":
        cfg.vision.name_or_path = None
    if cfg.audio.kind == "hf-whisper":
        cfg.audio.name_or_path = None
    cfg.llm.max_length = 1 << 20
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    tokenizer = build_tokenizer(cfg.llm)  # bytes (no hub), the placeholder token and a chat template
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
        row = run_stage(model, stage, batch, args.steps, device, cfg.train.precision, ddp)
        achieved = row["tokens_per_s"] * model_fpt / 1e12
        row |= {"model_tflops": round(achieved, 1),
                "mfu": round(achieved / peak, 4) if peak else None,
                "hfu": round(row["tokens_per_s"] * hw_fpt / 1e12 / peak, 4) if peak else None}
        stages.append(row)
    del batch
    feats, encoding = encode_features(cfg, device, args.frames, args.audio_s)
    generation = generate_call(model, feats, device, args.new_tokens)
    result = {"preset": args.preset, "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__,
              "peak_bf16_tflops": peak, "llm_params": sum(p.numel() for n, p in model.llm.named_parameters()
                                                            if "lora_" not in n),
              "seq_len": seq, "batch": args.batch, "multimodal_tokens": cfg.resampler.max_windows
              * cfg.resampler.tokens_per_window, "gradient_checkpointing": cfg.llm.gradient_checkpointing,
              "build_s": round(build_s, 1), "stages": stages, "encoding": encoding, "generate": generation}
    if ddp:
        torch.distributed.destroy_process_group()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
