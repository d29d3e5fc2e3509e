"""The prepared GPU check runs its real code paths on a CPU with the tiny preset (so it cannot rot unseen): in one
process, and under torchrun (the DDP path) as the GPU runbook starts it."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[1] / "deploy" / "gpu_check.py"


def test_gpu_check_runs_both_stages_encodes_and_generates_on_cpu(tmp_path):
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = bench.main(["--preset", "tiny", "--device", "cpu", "--steps", "1", "--peak-tflops", "0.5",
                             "--frames", "4", "--audio-s", "8", "--new-tokens", "4", "--out", str(tmp_path / "r.json")])
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
    # the encoders ran in the cache's dtype (fp32 on a CPU) and their tokens fed a generate call
    enc = result["encoding"]
    assert enc["dtype"] == "float32" and enc["encoder_param_dtypes"] == ["float32"]
    assert enc["video_tokens"][0] == 4 and enc["frames_per_s"] > 0 and enc["audio_s_per_s"] > 0
    assert result["generate"]["new_tokens_per_s"] > 0


def test_gpu_check_under_torchrun_takes_the_ddp_path(tmp_path):
    out = tmp_path / "r.json"
    torchrun = Path(sys.executable).with_name("torchrun")
    proc = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node=1", str(SCRIPT), "--preset", "tiny",
                           "--device", "cpu", "--steps", "1", "--frames", "2", "--audio-s", "4", "--new-tokens", "2",
                           "--out", str(out)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert [s["ddp"] for s in result["stages"]] == [True, True]


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
