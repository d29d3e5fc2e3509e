"""Benchmark: does the fusion stage keep the LLM server as busy as a plain concurrent load does?

Both runs send the same fusion prompts (same schema and sampling) to the same OpenAI-compatible server:
- baseline: the bare ``openai`` SDK firing every request at once (the server saturated), no cache, no checks;
- pipeline: ``tasks.fuse.fuse_clips`` through ``LLMClient`` (its concurrency bound, retries, validation, a fresh
  cache) exactly as a dataset run uses it.
Reported: output tokens/s of each and their ratio (target >= 0.85), and requests in flight over time sampled
every ``--sample-ms``. The baseline runs before and after the pipeline and its mean is used, so a server that
warms up or slows down does not favour either side. A table goes to stdout, everything as JSON to the path given.

    python tests/perf/bench_llm.py out/bench_llm.json [--clips 32] [--base-url URL --model NAME]

Not a test: it needs a running server (``make llm-server``) and its numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import openai

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "tests"))  # the sample timeline lives beside the tests

import llm_samples as S
from schemas.settings import load_settings
from tasks import fuse
from tasks.grounding import run_vocabulary
from infra.llm_client import LLMClient, strict_json_schema

TARGET_RATIO = 0.85


def workload(n: int) -> list[fuse.ClipInputs]:
    """``n`` distinct clips: the sample video's five, repeated under different video ids."""
    inputs: list[fuse.ClipInputs] = []
    k = 0
    while len(inputs) < n:
        video_id = f"bench-v{k:04d}"
        grouped, _ = fuse.group_inputs(S.clips(video_id), S.visual_captions(video_id), S.audio_captions(video_id),
                                       S.speech(video_id))
        inputs.extend(grouped)
        k += 1
    return inputs[:n]


class Sampler:
    """Samples a gauge every ``period_s`` in the background: (seconds since start, value)."""

    def __init__(self, gauge: Callable[[], int], period_s: float):
        self.gauge, self.period_s = gauge, period_s
        self.samples: list[tuple[float, int]] = []
        self._task: asyncio.Task | None = None
        self._t0 = 0.0

    async def _run(self) -> None:
        while True:
            self.samples.append((round(time.perf_counter() - self._t0, 3), self.gauge()))
            await asyncio.sleep(self.period_s)

    def __enter__(self) -> "Sampler":
        self._t0 = time.perf_counter()
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self._task is not None
        self._task.cancel()


async def run_baseline(args, inputs, sampling: dict[str, Any], period_s: float) -> dict[str, Any]:
    sdk = openai.AsyncOpenAI(base_url=args.base_url, api_key="EMPTY", timeout=args.timeout_s, max_retries=2)
    schema = strict_json_schema(fuse.FusedReply)
    response_format = {"type": "json_schema", "json_schema": {"name": "fused_clip", "schema": schema, "strict": True}}
    in_flight = 0
    tokens = errors = 0

    async def one(messages):
        nonlocal in_flight, tokens, errors
        in_flight += 1
        try:
            r = await sdk.chat.completions.create(model=args.model, messages=messages,
                                                  response_format=response_format, **sampling)
            tokens += r.usage.completion_tokens if r.usage else 0
        except openai.OpenAIError:
            errors += 1
        finally:
            in_flight -= 1

    messages = [fuse.render_messages(i) for i in inputs]
    started = time.perf_counter()
    with Sampler(lambda: in_flight, period_s) as sampler:
        await asyncio.gather(*(one(m) for m in messages))
    wall = time.perf_counter() - started
    await sdk.close()
    return {"wall_s": wall, "completion_tokens": tokens, "tokens_per_s": tokens / wall, "errors": errors,
            "in_flight": sampler.samples}


async def run_pipeline(args, inputs, period_s: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        client = LLMClient(base_url=args.base_url, model=args.model, max_concurrency=args.concurrency,
                           timeout_s=args.timeout_s, max_retries=args.max_retries, temperature=args.temperature,
                           max_tokens=args.max_tokens, seed=args.seed, frequency_penalty=args.frequency_penalty,
                           send_seed=args.send_seed, cache_path=Path(tmp) / "llm_cache.sqlite")
        started = time.perf_counter()
        async with client:
            with Sampler(lambda: client.stats.in_flight, period_s) as sampler:
                _, dead = await fuse.fuse_clips(client, inputs, run_vocabulary(load_settings()))
        wall = time.perf_counter() - started
        client.close()
    tokens = client.stats.completion_tokens
    return {"wall_s": wall, "completion_tokens": tokens, "tokens_per_s": tokens / wall,
            "errors": len(dead), "stats": client.stats.snapshot(), "in_flight": sampler.samples}


def bucketed(samples: list[tuple[float, int]], bucket_s: float) -> dict[int, tuple[float, int]]:
    """Mean and max of a gauge per time bucket."""
    buckets: dict[int, list[int]] = {}
    for t, v in samples:
        buckets.setdefault(int(t // bucket_s), []).append(v)
    return {b: (sum(vs) / len(vs), max(vs)) for b, vs in buckets.items()}


def print_report(report: dict[str, Any]) -> None:
    runs = report["runs"]
    print(f"{'run':<12}{'wall s':>10}{'out tokens':>12}{'tok/s':>10}{'errors':>8}")
    for name, r in runs.items():
        print(f"{name:<12}{r['wall_s']:>10.1f}{r['completion_tokens']:>12d}{r['tokens_per_s']:>10.1f}{r['errors']:>8d}")
    print(f"\npipeline / baseline tokens/s = {report['ratio']:.3f} (target >= {TARGET_RATIO}): "
          f"{'PASS' if report['passed'] else 'BELOW TARGET'}\n")
    longest = max(r["wall_s"] for r in runs.values())
    bucket_s = max(1.0, round(longest / 30))
    tables = {name: bucketed(r["in_flight"], bucket_s) for name, r in runs.items()}
    print(f"requests in flight (mean/max per {bucket_s:g} s)")
    print(f"{'t s':>6}" + "".join(f"{name:>16}" for name in runs))
    for b in range(int(longest // bucket_s) + 1):
        cells = [f"{tables[n][b][0]:>10.1f}/{tables[n][b][1]:<5d}" if b in tables[n] else f"{'':>16}" for n in runs]
        print(f"{b * bucket_s:>6g}" + "".join(cells))


async def main(args) -> dict[str, Any]:
    inputs = workload(args.clips)
    period_s = args.sample_ms / 1000
    sampling = {"temperature": args.temperature, "max_tokens": args.max_tokens,
                "frequency_penalty": args.frequency_penalty}
    if args.send_seed:
        sampling["seed"] = args.seed
    runs = {"baseline_1": await run_baseline(args, inputs, sampling, period_s),
            "pipeline": await run_pipeline(args, inputs, period_s),
            "baseline_2": await run_baseline(args, inputs, sampling, period_s)}
    baseline = (runs["baseline_1"]["tokens_per_s"] + runs["baseline_2"]["tokens_per_s"]) / 2
    ratio = runs["pipeline"]["tokens_per_s"] / baseline if baseline else 0.0
    return {"base_url": args.base_url, "model": args.model, "clips": len(inputs), "concurrency": args.concurrency,
            "sampling": sampling, "ratio": ratio, "target": TARGET_RATIO, "passed": ratio >= TARGET_RATIO,
            "runs": runs}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    llm = load_settings().llm
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="where to write the JSON report")
    p.add_argument("--base-url", default=llm.resolved_base_url)
    p.add_argument("--model", default=llm.resolved_model)
    p.add_argument("--clips", type=int, default=32)
    p.add_argument("--concurrency", type=int, default=llm.max_concurrency, help="the pipeline client's bound")
    p.add_argument("--max-tokens", type=int, default=160)
    p.add_argument("--temperature", type=float, default=llm.temperature)
    p.add_argument("--frequency-penalty", type=float, default=getattr(llm, "frequency_penalty", 0.5))
    p.add_argument("--seed", type=int, default=llm.seed)
    p.add_argument("--send-seed", action=argparse.BooleanOptionalAction, default=llm.server.kind != "vllm-cpu",
                   help="send the seed to the server (off for vLLM CPU, whose engine dies on seeded chunked prefill)")
    p.add_argument("--timeout-s", type=float, default=llm.timeout_s)
    p.add_argument("--max-retries", type=int, default=llm.max_retries)
    p.add_argument("--sample-ms", type=float, default=200.0)
    return p.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args()
    report = asyncio.run(main(arguments))
    print_report(report)
    arguments.out.parent.mkdir(parents=True, exist_ok=True)
    arguments.out.write_text(json.dumps(report, indent=1))
    print(f"report: {arguments.out}")
