"""Training, in one readable loop: stage 1 aligns (TLP + AVTS), stage 2 instruction-tunes (TLP + AVTS + LoRA).

    train(dataset_dir, out_dir, preset="smol", stage=1, steps=24) -> checkpoint folder

Each step: ``grad_accum`` micro-batches (examples chosen by a seeded permutation that depends only on the step,
so a resumed run sees the same batches), forward under bf16 autocast where the GPU has it, backward, clip,
AdamW, warmup + cosine schedule. Checkpoints (``checkpoint-<step>/``) hold the model folder
(``SavenVid.save_pretrained``) plus ``optimizer.safetensors``, ``rng.safetensors`` and ``train_state.json``:
resuming restores every trainable (LoRA and non-LoRA), the optimizer, the scheduler, the step and every RNG, so the
next step's loss equals the uninterrupted run's. Metrics go to ``metrics.jsonl`` and TensorBoard (``tb/``);
evaluations (``model.evaluate``: held-out loss, AVBench accuracy) to ``eval.jsonl`` and TensorBoard.
Under torchrun each rank takes its own slice of every global batch (DDP over the trainable parameters only).
"""

from __future__ import annotations

import contextlib
import json
from datetime import timedelta
import math
import os
import random
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from model.config import ModelConfig, preset_config
from model.data import FeatureStore, SavenVidDataset, collate, load_examples
from model.evaluate import Evaluator, bench_items
from model.features import cached_fingerprints, compute_features, features_path
from model.modeling import SavenVid, set_trainable

OPTIMIZER_FILE = "optimizer.safetensors"
RNG_FILE = "rng.safetensors"
STATE_FILE = "train_state.json"
METRICS_FILE = "metrics.jsonl"
EVAL_FILE = "eval.jsonl"  # one row per evaluation: {"step": ..., "eval": {"heldout_loss": ..., "bench_...": ...}}


# --- small pieces -------------------------------------------------------------------------------------------

def warmup_cosine(warmup: int, total: int, min_ratio: float) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return factor


def make_optimizer(model: SavenVid, lr: float, weight_decay: float) -> tuple[torch.optim.AdamW, list[str]]:
    """AdamW over the trainable parameters only; returns it and the parameter names in the optimizer's order."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    decay = [(n, p) for n, p in named if p.ndim >= 2]
    no_decay = [(n, p) for n, p in named if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": [p for _, p in decay], "weight_decay": weight_decay},
                             {"params": [p for _, p in no_decay], "weight_decay": 0.0}], lr=lr)
    return opt, [n for n, _ in decay + no_decay]


def batch_indices(n: int, step: int, micro: int, batch_size: int, accum: int, world: int, rank: int,
                  seed: int) -> list[int]:
    """The examples of one micro-batch: position in an endless stream of seeded per-epoch permutations."""
    first = ((step * accum + micro) * world + rank) * batch_size
    out = []
    for pos in range(first, first + batch_size):
        epoch, i = divmod(pos, n)
        out.append(int(np.random.default_rng(seed + epoch).permutation(n)[i]))
    return out


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def autocast_for(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported())
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def train_step(model, optimizer, scheduler, micro_batches: list[dict[str, torch.Tensor]], *,
               autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
               max_grad_norm: float = 1.0) -> dict[str, float]:
    """One optimizer step over ``micro_batches`` (gradient accumulation); returns loss and grad norm."""
    optimizer.zero_grad(set_to_none=True)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    total = 0.0
    for i, batch in enumerate(micro_batches):
        sync = i == len(micro_batches) - 1 or not hasattr(model, "no_sync")
        with (contextlib.nullcontext() if sync else model.no_sync()), autocast():
            loss = model(batch).loss / len(micro_batches)
        loss.backward()
        total += loss.item()
    grad_norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    optimizer.step()
    scheduler.step()
    return {"loss": total, "grad_norm": float(grad_norm), "lr": scheduler.get_last_lr()[0]}


# --- checkpoints --------------------------------------------------------------------------------------------

def checkpoints(out_dir: Path) -> list[Path]:
    return sorted(p for p in Path(out_dir).glob("checkpoint-*") if p.is_dir() and (p / STATE_FILE).is_file())


def save_checkpoint(out_dir: Path, model: SavenVid, optimizer, names: list[str], scheduler, step: int, stage: int,
                    fingerprints: dict[str, str], keep_last: int) -> Path:
    final = Path(out_dir) / f"checkpoint-{step:06d}"
    tmp = Path(out_dir) / f".tmp-checkpoint-{step:06d}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, fingerprints)
    opt = optimizer.state_dict()
    index_to_name = dict(enumerate(names))  # the optimizer numbers its parameters in group order
    save_file({f"{index_to_name[i]}::{k}": v.detach().cpu().contiguous()
               for i, s in opt["state"].items() for k, v in s.items()}, str(tmp / OPTIMIZER_FILE))
    rng = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng |= {f"torch_cuda_{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())}
    save_file(rng, str(tmp / RNG_FILE))
    np_state = np.random.get_state()
    state = {"step": step, "stage": stage,
             "param_groups": [{k: v for k, v in g.items() if k != "params"} for g in opt["param_groups"]],
             "param_names": names, "scheduler": scheduler.state_dict(),
             "python_rng": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
             "numpy_rng": [np_state[0], np_state[1].tolist(), *np_state[2:]]}
    (tmp / STATE_FILE).write_text(json.dumps(state))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in checkpoints(out_dir)[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(folder: Path, model: SavenVid, optimizer, names: list[str], scheduler) -> int:
    """Restore trainables, optimizer, scheduler and RNG from ``folder``; returns the step to continue from."""
    folder = Path(folder)
    state = json.loads((folder / STATE_FILE).read_text())
    if state["param_names"] != names:
        raise ValueError(f"{folder}: the checkpoint trained other parameters than this run (stage "
                         f"{state['stage']}); start a new out_dir or pass init_from instead of resuming")
    model.load_trainable(folder)
    tensors = load_file(str(folder / OPTIMIZER_FILE))
    opt_state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        name, slot = key.rsplit("::", 1)
        opt_state.setdefault(names.index(name), {})[slot] = value
    fresh = optimizer.state_dict()
    groups = [{**saved, "params": g["params"]} for saved, g in zip(state["param_groups"], fresh["param_groups"])]
    optimizer.load_state_dict({"state": opt_state, "param_groups": groups})
    scheduler.load_state_dict(state["scheduler"])
    rng = load_file(str(folder / RNG_FILE))
    torch.set_rng_state(rng["torch_cpu"])
    if torch.cuda.is_available():
        cuda = [rng[f"torch_cuda_{i}"] for i in range(torch.cuda.device_count()) if f"torch_cuda_{i}" in rng]
        if cuda:
            torch.cuda.set_rng_state_all(cuda)
    v, s, g = state["python_rng"]
    random.setstate((v, tuple(s), g))
    n = state["numpy_rng"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), *n[2:]))
    return state["step"]


# --- the run ------------------------------------------------------------------------------------------------

# How long a rank may wait for the others at a barrier (torchrun's default for NCCL is 10 minutes: a slow feature
# shard on one rank must not kill the job).
BARRIER_TIMEOUT = timedelta(minutes=int(os.environ.get("SAVEN_BARRIER_TIMEOUT_MIN", "120")))


def _distributed() -> tuple[int, int, torch.device]:
    world, rank = int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("RANK", 0))
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=BARRIER_TIMEOUT)
    return world, rank, device


def data_parallel(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``model`` as each rank's training step runs it: DDP over the process group (call after ``set_trainable``:
    DDP registers the parameters that take gradients when it wraps)."""
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)


def _barrier(world: int) -> None:
    if world > 1:
        torch.distributed.barrier()


def _from_rank0(value, world: int):
    """``value`` as rank 0 has it, on every rank (a checkpoint path only rank 0 wrote)."""
    if world == 1:
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def _feature_fingerprints(dataset_dir: Path, config: ModelConfig, video_ids: set[str], device: torch.device,
                          rank: int = 0, world: int = 1) -> dict[str, str]:
    """Cached features of every video (each rank encodes its share of the missing ones, so no rank waits minutes
    for another) and the encoders' fingerprints they share."""
    missing = [v for v in sorted(video_ids) if not features_path(dataset_dir, config.preset, v).is_file()]
    mine = missing[rank::world]
    if mine:
        report = compute_features(dataset_dir, config, video_ids=mine, device=device.type)
        if report.dead_letters:
            print(f"feature step (rank {rank}): {len(report.dead_letters)} videos failed (see the dataset's dead "
                  "letters); their examples are skipped")
    _barrier(world)
    found = {v: cached_fingerprints(features_path(dataset_dir, config.preset, v)) for v in sorted(video_ids)}
    kinds = {json.dumps(fp, sort_keys=True) for fp in found.values() if fp is not None}
    if len(kinds) > 1:
        raise ValueError(f"{dataset_dir}: cached features of preset {config.preset} come from different encoders "
                         f"({kinds}); recompute with python -m model.features --overwrite")
    return json.loads(kinds.pop()) if kinds else {}


def train(dataset_dir: Path, out_dir: Path, preset: str = "smol", stage: int | str = 1, steps: int | None = None,
          *, config: ModelConfig | None = None, init_from: Path | None = None, resume: bool = True,
          stop_at: int | None = None, bench: Path | None = None) -> Path:
    """Train ``stage`` (1, 2, or "both": 1 then 2 from its result) and return the last checkpoint folder.

    ``steps`` defaults to the preset's; ``stop_at`` ends the run early at that global step (as an interruption
    would) while the schedule still spans ``steps``; ``resume`` continues from the newest checkpoint in out_dir.
    Every ``train.eval_every`` steps and at the end: the loss on the held-out videos' examples and, with ``bench``
    (a built AVBench folder over this dataset's held-out videos), its accuracy with own and silenced audio.
    """
    dataset_dir, out_dir = Path(dataset_dir), Path(out_dir)
    if stage == "both":
        first = train(dataset_dir, out_dir / "stage1", preset, 1, steps, config=config, init_from=init_from,
                      resume=resume, stop_at=stop_at, bench=bench)  # every rank gets stage 1's checkpoint
        return train(dataset_dir, out_dir / "stage2", preset, 2, steps, config=config, init_from=first, resume=resume,
                     stop_at=stop_at, bench=bench)
    stage = int(stage)
    config = config or preset_config(preset)
    tcfg, scfg = config.train, config.train.stage(stage)
    total = steps or scfg.steps
    world, rank, device = _distributed()
    torch.manual_seed(tcfg.seed)
    random.seed(tcfg.seed)
    np.random.seed(tcfg.seed)

    examples = load_examples(dataset_dir, stage)
    # Every rank lists the same videos (each encodes its share of the missing ones); only rank 0 evaluates.
    heldout = load_examples(dataset_dir, stage, heldout_only=True)[: tcfg.eval_examples]
    items = bench_items(bench) if bench is not None else []
    videos = {e.video_id for e in examples} | {e.video_id for e in heldout} | {it.video_id for it in items}
    fingerprints = _feature_fingerprints(dataset_dir, config, videos, device, rank, world)
    examples = [e for e in examples if features_path(dataset_dir, config.preset, e.video_id).is_file()]
    heldout = [e for e in heldout if features_path(dataset_dir, config.preset, e.video_id).is_file()]
    if not examples:
        raise ValueError(f"{dataset_dir}: no example has cached features; see the dead letters of the feature step")

    dtype = torch.bfloat16 if device.type == "cuda" and config.train.precision != "fp32" else torch.float32
    model = SavenVid.build(config, dtype)
    if init_from is not None:
        model.load_trainable(Path(init_from))
    names_trainable = set_trainable(model, stage)
    model.to(device)
    dataset = SavenVidDataset(examples, FeatureStore(dataset_dir, config.preset, fingerprints), model.tokenizer,
                              config)
    evaluator = None
    if rank == 0:
        from benchmark.context import BenchContext

        evaluator = Evaluator(SavenVidDataset(heldout, dataset.store, model.tokenizer, config) if heldout else None,
                              tcfg.batch_size, items or None, BenchContext(dataset_dir) if items else None)
    optimizer, names = make_optimizer(model, scfg.lr, tcfg.weight_decay)
    assert set(names) == set(names_trainable)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(scfg.warmup_steps, total,
                                                                           tcfg.min_lr_ratio))
    start = 0
    previous = checkpoints(out_dir) if resume else []
    if previous:
        start = load_checkpoint(previous[-1], model, optimizer, names, scheduler)
        print(f"resumed from {previous[-1]} at step {start}")
    runner = data_parallel(model, device) if world > 1 else model

    out_dir.mkdir(parents=True, exist_ok=True)
    writer = None
    if rank == 0:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out_dir / "tb"), purge_step=start)
    end = min(total, stop_at) if stop_at is not None else total
    last = previous[-1] if previous else None
    pad_id = model.tokenizer.pad_token_id
    model.train()
    for step in range(start, end):
        t0 = time.perf_counter()
        micro = [to_device(collate([dataset[i] for i in batch_indices(len(dataset), step, m, tcfg.batch_size,
                                                                          tcfg.grad_accum, world, rank, tcfg.seed)],
                                   pad_id), device) for m in range(tcfg.grad_accum)]
        stats = train_step(runner, optimizer, scheduler, micro, autocast=lambda: autocast_for(device, tcfg.precision),
                           max_grad_norm=tcfg.max_grad_norm)
        stats |= {"step": step, "seconds": time.perf_counter() - t0,
                  "tokens": int(sum(b["attention_mask"].sum() for b in micro)) * world}
        if rank == 0:
            with open(out_dir / METRICS_FILE, "a") as fh:
                fh.write(json.dumps(stats) + "\n")
            for key in ("loss", "lr", "grad_norm"):
                writer.add_scalar(f"stage{stage}/{key}", stats[key], step)
            writer.add_scalar(f"stage{stage}/tokens_per_s", stats["tokens"] / stats["seconds"], step)
            if tcfg.log_every and step % tcfg.log_every == 0:
                print(f"stage {stage} step {step + 1}/{total} loss {stats['loss']:.4f} lr {stats['lr']:.2e} "
                      f"({stats['seconds']:.2f}s)")
        done = step + 1
        if rank == 0 and (done == end or (tcfg.eval_every and done % tcfg.eval_every == 0)):
            measured = evaluator(model, device, lambda: autocast_for(device, tcfg.precision))
            with open(out_dir / EVAL_FILE, "a") as fh:
                fh.write(json.dumps({"step": step, "eval": measured}) + "\n")
            for key, value in measured.items():
                writer.add_scalar(f"stage{stage}/eval/{key}", value, step)
            if measured:
                print(f"stage {stage} step {done} eval " + " ".join(
                    f"{k} {v:.3f}" for k, v in measured.items() if not k.startswith("bench_type/")))
        if rank == 0 and (done == end or (tcfg.save_every and done % tcfg.save_every == 0)):
            last = save_checkpoint(out_dir, model, optimizer, names, scheduler, done, stage, fingerprints,
                                   tcfg.keep_last)
    if writer is not None:
        writer.close()
    last = _from_rank0(last, world)  # only rank 0 saves: every rank returns the checkpoint it wrote
    _barrier(world)  # written before any rank reads it (stage 2 starts from it)
    if last is None:
        raise ValueError(f"nothing to do: out_dir {out_dir} is already at step {start} of {total}")
    return Path(last)


def main(argv: list[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(description="Train SAVEn-Vid (prints the checkpoint folder)")
    p.add_argument("dataset_dir", type=Path)
    p.add_argument("out_dir", type=Path)
    p.add_argument("--preset", default="smol")
    p.add_argument("--stage", default="both", choices=["1", "2", "both"])
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--init-from", type=Path, default=None)
    p.add_argument("--no-resume", action="store_true")
    p.add_argument("--stop-at", type=int, default=None, help="end each stage early at this step (an interruption)")
    p.add_argument("--bench", type=Path, default=None,
                   help="a built AVBench folder (avbench-<version>/) of this dataset: its accuracy at each evaluation")
    args = p.parse_args(argv)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the last line printed is the checkpoint path, for `make train`
    stage = args.stage if args.stage == "both" else int(args.stage)
    try:
        path = train(args.dataset_dir, args.out_dir, args.preset, stage, args.steps, init_from=args.init_from,
                     resume=not args.no_resume, stop_at=args.stop_at, bench=args.bench)
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    if int(os.environ.get("RANK", 0)) == 0:
        print(path)


if __name__ == "__main__":
    main()
