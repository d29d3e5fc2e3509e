"""The LLM stage against its speed of light: generated tokens per second of fusion + QA as the pipeline runs them,
over the same server's plain capacity on the same prompts and output lengths.

1. pipeline: ``tasks.fuse.fuse_clips`` then ``tasks.qa.generate_qa`` per video (the plan, every question type with the
   demo's questions per type, rounds, checks) on ``--videos`` copies of the sample timeline under distinct video
   ids, through ``LLMClient`` with a fresh cache. Every request it sends is recorded.
2. plain: every recorded request again, all at once, with no response format, ``max_tokens`` = the tokens its
   reply had and ``ignore_eos`` (so each generates exactly as many), through the bare ``openai`` SDK. The first
   message carries a run tag, so none of it is served from the prefix cache the pipeline filled (prefixes shared
   inside the replay still are, as inside the pipeline).

``ratio`` = pipeline generated tok/s / plain generated tok/s (target >= 0.7). Beside it, from the server's
Prometheus ``/metrics`` (deltas over each phase): where request time went, as seconds summed over requests
(queue, which includes waiting for a grammar to compile; prefill; decode) and the prefix-cache hit rate.

    python tests/perf/bench_llm_sol.py [out/perf/llm_sol.json] [--videos 6] [--base-url URL --model NAME]

It needs a running server (``make llm-server``); ``make perf`` starts the profile's.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import openai

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import llm_samples as S
from perf_rows import row, write_report

from flows.progress import metrics_url_of
from infra.llm_client import LLMClient
from schemas.settings import load_settings
from tasks import fuse, qa
from tasks.grounding import run_vocabulary

TARGET_RATIO = 0.7
HISTOGRAMS = {"queue_s": "vllm:request_queue_time_seconds", "prefill_s": "vllm:request_prefill_time_seconds",
              "decode_s": "vllm:request_decode_time_seconds", "e2e_s": "vllm:e2e_request_latency_seconds"}


class RecordingClient(LLMClient):
    """The pipeline's client, keeping each request it sends and the tokens of the reply."""

    def __init__(self, **kw: Any):
        super().__init__(**kw)
        self.sent: list[dict[str, Any]] = []

    async def _send(self, messages, response_format, sampling, **kw):
        content, prompt_tokens, completion_tokens = await super()._send(messages, response_format, sampling, **kw)
        self.sent.append({"messages": messages, "prompt_tokens": prompt_tokens,
                          "completion_tokens": completion_tokens, "sampling": dict(sampling)})
        return content, prompt_tokens, completion_tokens


def metrics(url: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    values: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(url, timeout=10).text):
        for s in family.samples:
            if s.name.endswith("_bucket"):
                continue
            values[s.name] = values.get(s.name, 0.0) + float(s.value)
    return values


def breakdown(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    out: dict[str, float | None] = {key: round(delta(f"{name}_sum"), 2) for key, name in HISTOGRAMS.items()}
    out["requests"] = delta("vllm:e2e_request_latency_seconds_count")
    queries, hits = delta("vllm:prefix_cache_queries_total"), delta("vllm:prefix_cache_hits_total")
    out["prefix_cache_hit_rate"] = round(hits / queries, 3) if queries else None
    out["generation_tokens"] = delta("vllm:generation_tokens_total")
    out["prompt_tokens"] = delta("vllm:prompt_tokens_total")
    return out


class GaugeSampler:
    """Polls the server's gauges while a phase runs and integrates them: request-seconds spent waiting for a
    grammar to compile ("deferred"), waiting for capacity, and running. The queue-time histogram lumps the first
    two together; this tells them apart."""

    GAUGES = {"deferred": ("vllm:num_requests_waiting_by_reason", "deferred"),
              "capacity": ("vllm:num_requests_waiting_by_reason", "capacity"),
              "running": ("vllm:num_requests_running", None)}

    def __init__(self, url: str, every_s: float = 0.5):
        import threading

        self.url, self.every_s = url, every_s
        self.seconds = {k: 0.0 for k in self.GAUGES}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> dict[str, float]:
        from prometheus_client.parser import text_string_to_metric_families

        out = {k: 0.0 for k in self.GAUGES}
        for family in text_string_to_metric_families(httpx.get(self.url, timeout=5).text):
            for sample in family.samples:
                for key, (name, reason) in self.GAUGES.items():
                    if sample.name == name and (reason is None or sample.labels.get("reason") == reason):
                        out[key] += float(sample.value)
        return out

    def _run(self) -> None:
        last = time.perf_counter()
        while not self._stop.wait(self.every_s):
            try:
                values = self._sample()
            except (httpx.HTTPError, ValueError):
                continue
            now = time.perf_counter()
            for key, value in values.items():
                self.seconds[key] += value * (now - last)
            last = now

    def __enter__(self) -> "GaugeSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    def rounded(self) -> dict[str, float]:
        return {f"{k}_request_s": round(v, 1) for k, v in self.seconds.items()}


def workload(videos: int) -> tuple[list[fuse.ClipInputs], list]:
    inputs, records = [], []
    for k in range(videos):
        vid = f"sol-v{k:03d}"
        grouped, _ = fuse.group_inputs(S.clips(vid), S.visual_captions(vid), S.audio_captions(vid), S.speech(vid))
        inputs += grouped
        records.append(S.video_record(vid))
    return inputs, records


async def run_pipeline(client: RecordingClient, inputs, records, options) -> dict[str, Any]:
    t0 = time.perf_counter()
    async with client:
        vocabulary = run_vocabulary(load_settings())
        described, _ = await fuse.fuse_clips(client, inputs, vocabulary)
        t_fuse = time.perf_counter() - t0
        by_video: dict[str, list] = {}
        for d in described:
            by_video.setdefault(d.video_id, []).append(d)
        results = await asyncio.gather(*(qa.generate_qa(client, v, by_video.get(v.video_id, []), options,
                                                        vocabulary=vocabulary) for v in records))
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "fuse_s": t_fuse, "descriptions": len(described),
            "qa_items": sum(len(r.items) for r in results), "qa_drafts": sum(r.drafts for r in results)}


async def run_plain(base_url: str, model: str, sent: list[dict[str, Any]]) -> float:
    tag = f"[run {uuid.uuid4().hex[:8]}] "
    sdk = openai.AsyncOpenAI(base_url=base_url, api_key="EMPTY", timeout=1800, max_retries=0)

    async def one(req: dict[str, Any]) -> None:
        messages = [dict(m) for m in req["messages"]]
        messages[0]["content"] = tag + messages[0]["content"]
        n = max(1, req["completion_tokens"])
        await sdk.chat.completions.create(model=model, messages=messages, max_tokens=n,
                                          temperature=req["sampling"].get("temperature", 0.2),
                                          extra_body={"ignore_eos": True, "min_tokens": n})

    t0 = time.perf_counter()
    await asyncio.gather(*(one(r) for r in sent))
    wall = time.perf_counter() - t0
    await sdk.close()
    return wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path, default=REPO / "out" / "perf" / "llm_sol.json")
    parser.add_argument("--videos", type=int, default=6)
    parser.add_argument("--base-url", default=None)
    parser.add_argument("--model", default=None)
    args = parser.parse_args(argv)
    cfg = load_settings()
    base_url, model = args.base_url or cfg.llm.resolved_base_url, args.model or cfg.llm.resolved_model
    url = metrics_url_of(base_url)
    inputs, records = workload(args.videos)

    with tempfile.TemporaryDirectory(prefix="bench-llm-sol-") as tmp:
        client = RecordingClient.from_settings(cfg.llm, cache_path=Path(tmp) / "cache.sqlite", base_url=base_url,
                                               model=model, timeout_s=1800)
        m0 = metrics(url)
        options = cfg.qa.model_copy(update={"questions_per_type": cfg.demo.questions_per_type})
        with GaugeSampler(url) as gauges:
            pipe = asyncio.run(run_pipeline(client, inputs, records, options))
        m1 = metrics(url)
        client.close()
    sent = client.sent
    gen = sum(r["completion_tokens"] for r in sent)
    prompt = sum(r["prompt_tokens"] for r in sent)
    plain_wall = asyncio.run(run_plain(base_url, model, sent))
    m2 = metrics(url)
    pipe_rate, plain_rate = gen / pipe["wall_s"], gen / plain_wall
    pipe_b, plain_b = breakdown(m0, m1) | gauges.rounded(), breakdown(m1, m2)
    ratio = pipe_rate / plain_rate

    def share(b: dict[str, float], key: str) -> str:
        total = b["e2e_s"] or 1.0
        return f"{100 * b[key] / total:.0f}%"

    note = (f"{len(sent)} requests, {prompt} prompt + {gen} generated tokens; request time (summed) pipeline: "
            f"queue {share(pipe_b, 'queue_s')}, prefill {share(pipe_b, 'prefill_s')}, decode "
            f"{share(pipe_b, 'decode_s')}, prefix hits {pipe_b['prefix_cache_hit_rate']}, request-s deferred for a "
            f"grammar {pipe_b['deferred_request_s']}, waiting for capacity {pipe_b['capacity_request_s']}; "
            f"plain: queue "
            f"{share(plain_b, 'queue_s')}, prefill {share(plain_b, 'prefill_s')}, decode "
            f"{share(plain_b, 'decode_s')}, prefix hits {plain_b['prefix_cache_hit_rate']}")
    rows = [row(f"LLM fusion + QA generated tok/s vs the server's plain capacity ({model})", pipe_rate,
                baseline=plain_rate, baseline_name="same prompts and output lengths, no response format, all at once",
                target=f"ratio >= {TARGET_RATIO}", passed=ratio >= TARGET_RATIO, unit="tok/s", note=note),
            row("LLM prompt tokens per accepted QA item (fusion + QA)",
                prompt / pipe["qa_items"] if pipe["qa_items"] else None, target="value <= 4000",
                passed=(prompt / pipe["qa_items"] <= 4000) if pipe["qa_items"] else False, unit="tokens",
                note=f"{pipe['qa_items']} accepted of {pipe['qa_drafts']} drafts, {pipe['descriptions']} "
                     "descriptions"),
            row("LLM generated tokens per accepted QA item (fusion + QA)",
                gen / pipe["qa_items"] if pipe["qa_items"] else None, target="value <= 500",
                passed=(gen / pipe["qa_items"] <= 500) if pipe["qa_items"] else False, unit="tokens")]
    report = {"rows": rows, "model": model, "pipeline": {**pipe, "generated_tok_s": round(pipe_rate, 2),
                                                         "metrics": pipe_b},
              "plain": {"wall_s": plain_wall, "generated_tok_s": round(plain_rate, 2), "metrics": plain_b},
              "requests": len(sent), "prompt_tokens": prompt, "generated_tokens": gen}
    write_report(args.out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
