"""vLLM's structured-output backends on CPU: what a grammar costs the pipeline's own requests, per backend.

The LLM stage sends plain-text replies that code parses (``LLMClient.complete_text``). This measures what it
would cost to constrain them with a JSON schema instead, as it did before 2026-12-03 (``{"description": ...}`` for
fusion, ``{"q1": ..., "qN": ...}`` for question phrasing), on each backend vLLM offers
(``--structured-outputs-config.backend``: xgrammar, guidance, outlines, lm-format-enforcer).

1. The pipeline (fusion of ``--videos`` sample timelines, then their QA) runs once on the profile's server; every
   request it sends is recorded.
2. Per backend, a vLLM CPU server of the same model is started beside it (its own port, pid and log) and the
   recorded requests are replayed twice, all at once: as sent (no response format), then each with the JSON
   schema of its reply and ``max_tokens`` + 32 for the JSON frame.
Reported per backend: the wall time of the replay with the schema over the wall time without it on the same server
in the same run (the ratio; generated tok/s would flatter the schema, whose JSON frame adds cheap tokens), the
request-seconds spent deferred waiting for a grammar, and the schema-constrained replies that did not parse.

    python tests/perf/bench_structured_outputs.py [out/perf/structured_outputs.json] [--videos 3]
        [--backends xgrammar,guidance,outlines,lm-format-enforcer]

Each server start takes ~1 min on 2 cores; the profile's own server idles meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import openai
from bench_llm_sol import GaugeSampler, RecordingClient, breakdown, metrics, run_pipeline, workload
from perf_rows import row, write_report

from infra import servers
from flows.progress import metrics_url_of
from schemas.settings import load_settings

BACKENDS = ("xgrammar", "guidance", "outlines", "lm-format-enforcer")
PORT_OFFSET = 2  # the profile's server is on port, a grounded-QA side server on port + 1


def reply_schema(request: dict) -> dict:
    """The JSON schema the request's reply would have had: fusion's description, or the numbered questions."""
    if request["kind"] == "qa":
        n = request["count"]
        return {"type": "object", "additionalProperties": False, "required": [f"q{i}" for i in range(1, n + 1)],
                "properties": {f"q{i}": {"type": "string"} for i in range(1, n + 1)}}
    return {"type": "object", "additionalProperties": False, "required": ["description"],
            "properties": {"description": {"type": "string"}}}


async def replay(base_url: str, model: str, sent: list[dict], *, schema: bool) -> tuple[float, int, int]:
    """(wall s, generated tokens, replies that are not JSON) for all requests at once."""
    sdk = openai.AsyncOpenAI(base_url=base_url, api_key="EMPTY", timeout=1800, max_retries=0)

    async def one(req: dict) -> tuple[int, bool]:
        extra = {}
        max_tokens = req["sampling"]["max_tokens"]
        if schema:
            extra["response_format"] = {"type": "json_schema", "json_schema": {
                "name": f"reply_{req['kind']}", "schema": reply_schema(req), "strict": True}}
            max_tokens += 32
        out = await sdk.chat.completions.create(model=model, messages=req["messages"], max_tokens=max_tokens,
                                                temperature=req["sampling"]["temperature"], **extra)
        text = out.choices[0].message.content or ""
        bad = False
        if schema:
            try:
                json.loads(text)
            except ValueError:
                bad = True
        return out.usage.completion_tokens, bad

    t0 = time.perf_counter()
    results = await asyncio.gather(*(one(r) for r in sent))
    wall = time.perf_counter() - t0
    await sdk.close()
    return wall, sum(n for n, _ in results), sum(bad for _, bad in results)


def record(videos: int) -> list[dict]:
    cfg = load_settings()
    inputs, records = workload(videos)
    options = cfg.qa.model_copy(update={"questions_per_type": cfg.demo.questions_per_type})
    with tempfile.TemporaryDirectory(prefix="bench-so-") as tmp:
        client = RecordingClient.from_settings(cfg.llm, cache_path=Path(tmp) / "cache.sqlite", timeout_s=1800)
        asyncio.run(run_pipeline(client, inputs, records, options))
        client.close()
    out = []
    for req in client.sent:
        user = req["messages"][-1]["content"]
        count = len(re.findall(r'^\{"n": ', user, re.MULTILINE))
        out.append({**req, "kind": "qa" if "<cards>" in user else "fuse", "count": count})
    return out


def measure(backend: str, sent: list[dict]) -> dict:
    cfg = load_settings()
    srv = cfg.llm.server.model_copy(update={
        "port": cfg.llm.server.port + PORT_OFFSET,
        "extra_args": [*cfg.llm.server.extra_args, "--structured-outputs-config.backend", backend]})
    spec = servers.llm_server_spec(cfg.model_copy(update={"llm": cfg.llm.model_copy(update={"server": srv})}))
    spec = replace(spec, name=f"llm-server-bench-{backend}")
    base_url = f"http://{srv.host}:{srv.port}/v1"
    servers.start(spec, cfg.paths.run_dir)
    try:
        url = metrics_url_of(base_url)
        plain_wall, plain_gen, _ = asyncio.run(replay(base_url, srv.served_name, sent, schema=False))
        m0 = metrics(url)
        with GaugeSampler(url) as gauges:
            wall, gen, bad = asyncio.run(replay(base_url, srv.served_name, sent, schema=True))
        m1 = metrics(url)
        return {"backend": backend, "plain_wall_s": plain_wall, "plain_tok_s": plain_gen / plain_wall,
                "schema_wall_s": wall, "schema_tok_s": gen / wall, "unparsed": bad, "requests": len(sent),
                "metrics": breakdown(m0, m1) | gauges.rounded()}
    finally:
        servers.stop(spec, cfg.paths.run_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path, default=REPO / "out" / "perf" / "structured_outputs.json")
    parser.add_argument("--videos", type=int, default=3)
    parser.add_argument("--backends", default=",".join(BACKENDS))
    args = parser.parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    sent = record(args.videos)
    results = []
    for backend in backends:
        try:
            results.append(measure(backend, sent))
        except Exception as exc:  # noqa: BLE001 — a backend that cannot serve these schemas is a finding
            results.append({"backend": backend, "error": f"{type(exc).__name__}: {str(exc)[:300]}"})
    rows = []
    for r in results:
        metric = f"structured outputs `{r['backend']}`: wall s of the LLM requests with a JSON schema / without"
        if "error" in r:
            rows.append(row(metric, None, passed=None, note=r["error"]))
            continue
        m = r["metrics"]
        rows.append(row(metric, r["schema_wall_s"], baseline=r["plain_wall_s"], unit="s", passed=None,
                        baseline_name="the same requests without a response format, same server",
                        note=f"{r['requests']} requests all at once; generated {r['schema_tok_s']:.1f} vs "
                             f"{r['plain_tok_s']:.1f} tok/s; deferred for a grammar {m['deferred_request_s']} "
                             f"request-s; {r['unparsed']} replies not JSON"))
    write_report(args.out, {"rows": rows, "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
