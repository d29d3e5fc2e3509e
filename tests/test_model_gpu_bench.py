"""The GPU throughput script runs its real code path on a CPU with the tiny preset (so it cannot rot unseen)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[1] / "deploy" / "gpu_train_bench.py"


def test_gpu_train_bench_runs_both_stages_on_cpu(tmp_path):
    spec = importlib.util.spec_from_file_location("gpu_train_bench", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = bench.main(["--preset", "tiny", "--device", "cpu", "--steps", "1", "--peak-tflops", "0.5",
                             "--out", str(tmp_path / "r.json")])
    finally:
        torch.set_num_threads(threads)
    assert (tmp_path / "r.json").is_file()
    s1, s2 = result["stages"]
    assert (s1["stage"], s2["stage"]) == (1, 2)
    assert s2["trainable_params"] > s1["trainable_params"]  # stage 2 adds LoRA
    assert s1["tokens_per_s"] > 0 and s1["tokens_per_step"] == result["seq_len"]
    assert result["multimodal_tokens"] == 8 * 5
    # with a peak given, MFU is achieved model FLOPs over it (the CPU has no entry in the peak table)
    assert result["peak_bf16_tflops"] == 0.5
    assert s1["mfu"] == round(s1["tokens_per_s"] * bench_fpt(bench, result) / 1e12 / 0.5, 4)


def bench_fpt(bench, result) -> float:
    from model.config import preset_config
    from model.modeling import SavenVid

    model = SavenVid.build(preset_config("tiny"), tokenizer=_tok())
    return bench.flops_per_token(model, result["seq_len"])[0]


def _tok():
    from model.llm import byte_tokenizer

    tok = byte_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": ["<|av|>"]})
    return tok
