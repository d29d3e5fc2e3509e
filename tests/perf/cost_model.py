"""What 1,000 video-hours cost on the gpu-cluster profile: a model on paper, from work measured here.

    python tests/perf/cost_model.py [--dataset out/demo/dataset] [--hours 1000] [--out out/perf/cost_model]

Work per video-hour is measured from a dataset this machine built (its tables, its LLM request cache and, when the
run wrote one, ``_runs/run-*.json``): audio seconds, frames decoded for cut detection, keyframes, clips, and the
prompt and generated tokens per clip (fusion) and per accepted QA item. Keyframe and clip-audio captioning do not
run on the embedded profile (it uses detectors), so their tokens per keyframe and per clip second come from the
models' published token rates (cited below). Each stage's GPU-hours are work / a published throughput (cited below,
scaled to the cluster's GPUs where stated); dollars are those hours at the instance list prices of
``deploy/ray-cluster.yaml``'s node types. Every number that is not measured here is in ``ASSUMPTIONS`` with its
source, and printed. The result names the bottleneck stage and the node mix that balances the GPU node types.
What this cannot say: how fast this code actually runs on those GPUs (not measured; no GPU here).
"""

from __future__ import annotations

import argparse
import json
import re
import sqlite3
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from schemas.settings import load_settings
from schemas.shards import read_records


@dataclass(frozen=True)
class Assumption:
    value: float
    unit: str
    source: str


ASSUMPTIONS: dict[str, Assumption] = {
    # --- throughputs ---
    "asr_realtime_x_per_gpu": Assumption(
        46.0, "audio seconds per GPU-second (faster-whisper large-v3, batched, L4)",
        "faster-whisper README benchmark: large-v2 batched (batch 8) on an RTX 3070 Ti transcribes 13 min of audio in "
        "~17 s (~46x real time); insanely-fast-whisper reports ~92x for large-v3 on an A100. Taken as is for an L4 "
        "(a 3070 Ti-class card); large-v3 has the same encoder size as large-v2"),
    "decode_tok_s_per_gpu": Assumption(
        3200.0, "generated tokens/s per L40S, 7B BF16, vLLM at high concurrency",
        "~12,500 output tok/s for Llama 3.1 8B BF16 on one H100 80GB with vLLM (morphllm.com/vllm-benchmarks, 2026, "
        "collecting third-party runs), scaled by memory bandwidth L40S 864 GB/s / H100 SXM 3,350 GB/s = 0.26: decode "
        "is bandwidth-bound"),
    "prefill_tok_s_per_gpu": Assumption(
        10000.0, "prompt tokens/s per L40S, 7B BF16",
        "2 x 7.6e9 FLOP per prompt token for Qwen2.5-7B; L40S 362 dense BF16 TFLOPS at ~40% utilisation: "
        "0.4 x 362e12 / 15.2e9 = ~9,500 (rounded). An assumption, not a measurement"),
    # --- what the captioning models read and write ---
    "vlm_prompt_tokens_per_keyframe": Assumption(
        356.0, "prompt tokens per keyframe (Qwen2.5-VL-7B)",
        "Qwen2.5-VL merges 28x28 pixel patches into one token: a keyframe at the profile's 448x448 is (448/28)^2 = 256 "
        "image tokens, plus ~100 of instruction. cosmos-curate's captioning window (~5,000 prompt and 495 output "
        "tokens per 256 frames) is the video-input alternative: cheaper per frame, fewer frames seen"),
    "vlm_output_tokens_per_keyframe": Assumption(
        120.0, "generated tokens per keyframe", "the profile's objective description (people, objects, actions, "
        "scene, on-screen text): ~90 words; assumed"),
    "omni_audio_tokens_per_s": Assumption(
        25.0, "prompt tokens per second of clip audio (Qwen2.5-Omni)",
        "Qwen2-Audio / Qwen2.5-Omni audio encoder: one token per 40 ms after pooling (Qwen2-Audio report)"),
    "omni_prompt_overhead_tokens": Assumption(150.0, "instruction tokens per clip", "the five-axis prompt; assumed"),
    "omni_output_tokens_per_clip": Assumption(
        160.0, "generated tokens per clip", "five axes (narration, environment, timbre, events, emotion), ~25 "
        "words each; assumed"),
    # --- prices (AWS on-demand, us-east-1) and the node types of deploy/ray-cluster.yaml ---
    "cpu_node_usd_per_h": Assumption(1.36, "USD per hour, c6i.8xlarge (32 vCPU)", "AWS on-demand list price"),
    "cpu_node_cores": Assumption(32.0, "vCPU per media node", "deploy/ray-cluster.yaml: c6i.8xlarge"),
    "perception_node_usd_per_h": Assumption(4.60, "USD per hour, g6.12xlarge (4x L4)", "AWS on-demand list price"),
    "llm_node_usd_per_h": Assumption(10.49, "USD per hour, g6e.12xlarge (4x L40S)", "AWS on-demand list price"),
    "gpus_per_node": Assumption(4.0, "GPUs per perception or llm node", "deploy/ray-cluster.yaml"),
}


@dataclass
class Work:
    """What one video-hour asks of each stage, measured from a dataset."""

    video_hours: float
    audio_s: float
    frames_decoded: float
    keyframes: float
    clips: float
    clip_audio_s: float
    fuse_prompt_tokens: float
    fuse_output_tokens: float
    qa_items: float
    qa_prompt_tokens: float
    qa_output_tokens: float
    # Seconds of probe + audio decode + cut detection + keyframes on the machine that built the dataset (the run
    # record's stage seconds, taken as core-seconds on a 32-vCPU node: an assumption); 0 without a run record.
    media_cpu_s: float
    tokens_from: str
    # The authored QA mode (the gpu-cluster profile's, for the unanchored types), measured by `make authored-qa` on
    # this dataset with Qwen2.5-1.5B (drafts and judge calls); 0 when that report is absent.
    authored_prompt_tokens: float = 0.0
    authored_output_tokens: float = 0.0


def _llm_tokens(dataset: Path) -> dict[str, tuple[int, int]]:
    """(prompt, completion) tokens by reply schema, from the dataset's LLM request cache."""
    path = dataset / "_cache" / "llm.sqlite"
    if not path.is_file():
        return {}
    with sqlite3.connect(path) as db:
        rows = db.execute("select schema_name, sum(prompt_tokens), sum(completion_tokens) from replies "
                          "group by schema_name").fetchall()
    return {name: (int(p or 0), int(c or 0)) for name, p, c in rows}


def _run_record(dataset: Path) -> dict | None:
    records = sorted((dataset / "_runs").glob("run-*.json"))
    return json.loads(records[-1].read_text()) if records else None


AUTHORED_RE = re.compile(r"on (\d+) videos of (\S+)\n\n\d+ round\(s\); wall [\d.]+ s; (\d+) requests, (\d+) prompt "
                         r"and (\d+) generated tokens")


def authored_tokens(report: Path, dataset: Path) -> tuple[int, int] | None:
    """(prompt, generated) tokens of ``make authored-qa`` (tests/perf/authored_qa.py) on this dataset, if it ran."""
    m = AUTHORED_RE.search(report.read_text()) if report.is_file() else None
    if m is None or Path(m.group(2)).resolve() != dataset.resolve():
        return None
    return int(m.group(4)), int(m.group(5))


def measure(dataset: Path, authored_report: Path | None = None) -> Work:
    videos = read_records(dataset, "videos")
    clips = read_records(dataset, "clips")
    hours = sum(v.duration_s for v in videos) / 3600
    if hours <= 0:
        raise ValueError(f"{dataset}: no video duration to measure work per hour from")
    record = _run_record(dataset)
    if record is not None:  # the run's own counts: its LLM calls, including the ones the cache answered before
        stages = record["stages"]
        fuse, qa = stages.get("fuse", {}).get("counts", {}), stages.get("qa", {}).get("counts", {})
        fuse_tok = (fuse.get("prompt_tokens", 0), fuse.get("completion_tokens", 0))
        qa_tok = (qa.get("prompt_tokens", 0), qa.get("completion_tokens", 0))
        media_s = sum(stages.get(s, {}).get("seconds", 0.0) for s in ("probe", "audio", "segment", "keyframes"))
        source = "run record"
    else:
        tokens = _llm_tokens(dataset)
        fuse_tok = tokens.get("fused_clip", (0, 0))
        qa_tok = tuple(sum(v[i] for k, v in tokens.items() if k.startswith("qa_")) for i in (0, 1))
        media_s, source = 0.0, "LLM request cache"
    # The gpu-cluster profile's keyframes per clip (the embedded profile takes fewer); clips come from the same
    # detector with the same settings on both.
    keyframes = len(clips) * load_settings("gpu-cluster").segment.keyframes_per_clip
    qa_items = sum(1 for _ in read_records(dataset, "qa"))
    per_h = 1.0 / hours
    authored = authored_tokens(authored_report, dataset) if authored_report else None
    return Work(authored_prompt_tokens=authored[0] * per_h if authored else 0.0,
                authored_output_tokens=authored[1] * per_h if authored else 0.0,
                video_hours=hours, audio_s=sum(v.duration_s for v in videos if v.has_audio) * per_h,
                frames_decoded=sum(v.duration_s * (v.fps or 25.0) for v in videos) * per_h,
                keyframes=keyframes * per_h, clips=len(clips) * per_h,
                clip_audio_s=sum(c.end_s - c.start_s for c in clips) * per_h,
                fuse_prompt_tokens=fuse_tok[0] * per_h, fuse_output_tokens=fuse_tok[1] * per_h,
                qa_items=qa_items * per_h, qa_prompt_tokens=qa_tok[0] * per_h, qa_output_tokens=qa_tok[1] * per_h,
                media_cpu_s=media_s * per_h, tokens_from=source)


def stage_hours(work: Work, a: dict[str, Assumption]) -> dict[str, dict]:
    """Per stage and video-hour: the node type it runs on and its GPU-hours (CPU core-hours for media)."""
    v = {k: x.value for k, x in a.items()}

    def llm_gpu_h(prompt: float, output: float) -> float:
        return (prompt / v["prefill_tok_s_per_gpu"] + output / v["decode_tok_s_per_gpu"]) / 3600

    vlm_prompt = work.keyframes * v["vlm_prompt_tokens_per_keyframe"]
    vlm_out = work.keyframes * v["vlm_output_tokens_per_keyframe"]
    omni_prompt = work.clip_audio_s * v["omni_audio_tokens_per_s"] + work.clips * v["omni_prompt_overhead_tokens"]
    omni_out = work.clips * v["omni_output_tokens_per_clip"]
    return {
        "decode + cuts + keyframes": {"node": "cpu", "core_h": work.media_cpu_s / 3600, "gpu_h": 0.0},
        "ASR (Whisper large-v3)": {"node": "perception", "gpu_h": work.audio_s / v["asr_realtime_x_per_gpu"] / 3600},
        "keyframe captions (Qwen2.5-VL-7B)": {"node": "llm", "gpu_h": llm_gpu_h(vlm_prompt, vlm_out),
                                              "prompt_tokens": vlm_prompt, "output_tokens": vlm_out},
        "clip audio captions (Qwen2.5-Omni-7B)": {"node": "llm", "gpu_h": llm_gpu_h(omni_prompt, omni_out),
                                                  "prompt_tokens": omni_prompt, "output_tokens": omni_out},
        "fusion (Qwen2.5-7B)": {"node": "llm", "gpu_h": llm_gpu_h(work.fuse_prompt_tokens, work.fuse_output_tokens),
                                "prompt_tokens": work.fuse_prompt_tokens, "output_tokens": work.fuse_output_tokens},
        "QA, planned (Qwen2.5-7B phrases)": {
            "node": "llm", "gpu_h": llm_gpu_h(work.qa_prompt_tokens, work.qa_output_tokens),
            "prompt_tokens": work.qa_prompt_tokens, "output_tokens": work.qa_output_tokens},
        "QA, authored + judged (Qwen2.5-7B)": {
            "node": "llm", "gpu_h": llm_gpu_h(work.authored_prompt_tokens, work.authored_output_tokens),
            "prompt_tokens": work.authored_prompt_tokens, "output_tokens": work.authored_output_tokens},
    }


def cost_table(work: Work, hours: float, a: dict[str, Assumption] = ASSUMPTIONS) -> dict:
    v = {k: x.value for k, x in a.items()}
    per_gpu_h = {"perception": v["perception_node_usd_per_h"] / v["gpus_per_node"],
                 "llm": v["llm_node_usd_per_h"] / v["gpus_per_node"]}
    rows = []
    for name, s in stage_hours(work, a).items():
        if s["node"] == "cpu":
            total_h = s["core_h"] * hours
            usd = total_h / v["cpu_node_cores"] * v["cpu_node_usd_per_h"]
            rows.append({"stage": name, "node": "cpu", "hours": total_h, "unit": "core-h", "usd": usd})
        else:
            total_h = s["gpu_h"] * hours
            rows.append({"stage": name, "node": s["node"], "hours": total_h, "unit": "GPU-h",
                         "usd": total_h * per_gpu_h[s["node"]],
                         **{k: s[k] * hours for k in ("prompt_tokens", "output_tokens") if k in s}})
    gpu_rows = [r for r in rows if r["unit"] == "GPU-h"]
    bottleneck = max(gpu_rows, key=lambda r: r["hours"])
    by_node = {n: sum(r["hours"] for r in gpu_rows if r["node"] == n) for n in ("perception", "llm")}
    # Balanced: both GPU node types finish together. Per perception node, how many llm nodes.
    mix = by_node["llm"] / by_node["perception"] if by_node["perception"] else float("inf")
    # On an llm node each served model has its own GPUs (the VLM, the audio model, the LLM for fusion and QA): the
    # split of a node's GPUs that keeps them equally busy, against the profile's 1 / 1 / 2.
    lanes = {"VLM": ("keyframe",), "audio model": ("clip audio",), "LLM": ("fusion", "QA")}
    lane_h = {lane: sum(r["hours"] for r in gpu_rows if r["stage"].startswith(prefixes))
              for lane, prefixes in lanes.items()}
    split = {lane: v["gpus_per_node"] * h / max(sum(lane_h.values()), 1e-9) for lane, h in lane_h.items()}
    return {"video_hours": hours, "rows": rows, "total_usd": sum(r["usd"] for r in rows),
            "llm_node_gpu_split": split, "llm_lane_gpu_hours": lane_h,
            "gpu_hours_by_node_type": by_node, "bottleneck": bottleneck["stage"],
            "llm_nodes_per_perception_node": mix}


def as_markdown(work: Work, table: dict, dataset: Path) -> str:
    hours = table["video_hours"]
    lines = [f"# Cost of {hours:,.0f} video-hours on the gpu-cluster profile (a model, not a measurement)", "",
             f"Work measured on `{dataset}` ({work.video_hours * 60:.1f} video-minutes; tokens from the "
             f"{work.tokens_from}), per video-hour: {work.frames_decoded:,.0f} frames decoded, {work.keyframes:,.0f} "
             f"keyframes, {work.clips:,.0f} clips ({work.clip_audio_s:,.0f} s of clip audio), {work.qa_items:,.0f} "
             f"accepted QA items; fusion {work.fuse_prompt_tokens / max(work.clips, 1):,.0f} prompt + "
             f"{work.fuse_output_tokens / max(work.clips, 1):,.0f} generated tokens per clip; QA "
             f"{work.qa_prompt_tokens / max(work.qa_items, 1):,.0f} + "
             f"{work.qa_output_tokens / max(work.qa_items, 1):,.0f}"
             " per accepted item (planned mode); authored mode "
             + (f"{work.authored_prompt_tokens:,.0f} + {work.authored_output_tokens:,.0f} per video-hour "
                "(`make authored-qa`, Qwen2.5-1.5B: drafts and judge calls)" if work.authored_prompt_tokens else
                "not measured (run `make authored-qa` on this dataset)") + ".", "",
             "| stage | node type | hours | USD |", "|---|---|---:|---:|"]
    for r in table["rows"]:
        lines.append(f"| {r['stage']} | {r['node']} | {r['hours']:,.1f} {r['unit']} | {r['usd']:,.0f} |")
    lines += [f"| **all** | | | **{table['total_usd']:,.0f}** |", "",
              f"Bottleneck: **{table['bottleneck']}**. GPU-hours by node type: " + ", ".join(
                  f"{k} {h:,.1f}" for k, h in table["gpu_hours_by_node_type"].items())
              + f". A balanced cluster runs {table['llm_nodes_per_perception_node']:.1f} llm node(s) per perception "
              "node (deploy/ray-cluster.yaml has 2 and 2). On an llm node the GPUs kept equally busy would be "
              + ", ".join(f"{lane} {g:.1f}" for lane, g in table["llm_node_gpu_split"].items())
              + " of 4 (the profile serves 1 / 1 / 2).", "", "Assumptions (every number not measured here):", ""]
    lines += [f"- `{k}` = {x.value:g} {x.unit}: {x.source}" for k, x in ASSUMPTIONS.items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", type=Path, nargs="?", help="a `make perf` report to write (run_all.py passes it)")
    parser.add_argument("--dataset", type=Path, default=REPO / "out" / "demo" / "dataset")
    parser.add_argument("--hours", type=float, default=1000.0)
    parser.add_argument("--authored-report", type=Path, default=REPO / "out" / "perf" / "authored_qa.md",
                        help="make authored-qa's report on the same dataset: the authored QA mode's tokens")
    parser.add_argument("--out", type=Path, default=REPO / "out" / "perf" / "cost_model")
    args = parser.parse_args()
    work = measure(args.dataset, args.authored_report)
    table = cost_table(work, args.hours)
    args.out.mkdir(parents=True, exist_ok=True)
    record = {"work_per_video_hour": asdict(work), **table,
              "assumptions": {k: asdict(x) for k, x in ASSUMPTIONS.items()}}
    (args.out / "cost_model.json").write_text(json.dumps(record, indent=2) + "\n")
    text = as_markdown(work, table, args.dataset)
    (args.out / "cost_model.md").write_text(text)
    print(text)
    if args.report:
        from perf_rows import row, write_report

        note = f"model on paper from {work.video_hours * 60:.1f} measured video-minutes; see out/perf/cost_model"
        rows = [row(f"{r['stage']}: {r['unit']} per {args.hours:,.0f} video-hours", r["hours"], unit=r["unit"],
                    note=f"{r['node']} node; ${r['usd']:,.0f}") for r in table["rows"]]
        rows.append(row(f"all stages: USD per {args.hours:,.0f} video-hours", table["total_usd"], unit="USD",
                        note=f"bottleneck {table['bottleneck']}; {note}"))
        write_report(args.report, {**record, "stage_rows": record["rows"], "rows": rows})


if __name__ == "__main__":
    main()
