"""vLLM's structured-output backends on CPU, compared on the pipeline's own LLM work.

For each backend (``--structured-outputs-config.backend``: xgrammar, guidance, outlines, lm-format-enforcer), a
vLLM CPU server of the profile's model is started beside the profile's (next free port, its own pid and log),
and the LLM stage runs on it exactly as ``bench_llm_sol`` runs it (fusion of ``--videos`` sample timelines, then
their QA: plan, rounds, checks; a fresh request cache). Reported per backend: generated tok/s and wall time, the
request-seconds spent deferred waiting for a grammar to compile, invalid replies, accepted QA. The baseline is
xgrammar (vLLM's default, "auto", on these schemas), measured in the same run.

    python tests/perf/bench_structured_outputs.py [out/perf/structured_outputs.json] [--videos 3]
        [--backends xgrammar,guidance,outlines,lm-format-enforcer]

Each server start takes ~1 min on 2 cores; the profile's own server may stay up (it idles meanwhile).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_llm_sol import GaugeSampler, RecordingClient, breakdown, metrics, run_pipeline, workload  # noqa: E402
from perf_rows import row, write_report  # noqa: E402

from flows import servers  # noqa: E402
from flows.progress import metrics_url_of  # noqa: E402
from schemas.settings import load_settings  # noqa: E402

BACKENDS = ("xgrammar", "guidance", "outlines", "lm-format-enforcer")
PORT_OFFSET = 2  # the profile's server is on port, a grounded-QA side server on port + 1


def measure(backend: str, videos: int) -> dict:
    cfg = load_settings()
    srv = cfg.llm.server.model_copy(update={
        "port": cfg.llm.server.port + PORT_OFFSET,
        "extra_args": [*cfg.llm.server.extra_args, "--structured-outputs-config.backend", backend]})
    spec = servers.llm_server_spec(cfg.model_copy(update={"llm": cfg.llm.model_copy(update={"server": srv})}))
    spec = replace(spec, name=f"llm-server-bench-{backend}")
    base_url = f"http://{srv.host}:{srv.port}/v1"
    servers.start(spec, cfg.paths.run_dir)
    try:
        inputs, records = workload(videos)
        url = metrics_url_of(base_url)
        options = cfg.qa.model_copy(update={"questions_per_type": cfg.demo.questions_per_type})
        with tempfile.TemporaryDirectory(prefix="bench-so-") as tmp:
            client = RecordingClient.from_settings(cfg.llm, cache_path=Path(tmp) / "cache.sqlite", base_url=base_url,
                                                   model=srv.served_name, timeout_s=1800)
            m0 = metrics(url)
            with GaugeSampler(url) as gauges:
                pipe = asyncio.run(run_pipeline(client, inputs, records, options))
            m1 = metrics(url)
            client.close()
        generated = sum(r["completion_tokens"] for r in client.sent)
        return {"backend": backend, **pipe, "generated_tokens": generated,
                "generated_tok_s": generated / pipe["wall_s"], "invalid_replies": client.stats.invalid_replies,
                "failures": client.stats.failures, "metrics": breakdown(m0, m1) | gauges.rounded()}
    finally:
        servers.stop(spec, cfg.paths.run_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path, default=REPO / "out" / "perf" / "structured_outputs.json")
    parser.add_argument("--videos", type=int, default=3)
    parser.add_argument("--backends", default=",".join(BACKENDS))
    args = parser.parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    results = []
    for backend in backends:
        try:
            results.append(measure(backend, args.videos))
        except Exception as exc:  # noqa: BLE001 — a backend that cannot serve these schemas is a finding
            results.append({"backend": backend, "error": f"{type(exc).__name__}: {str(exc)[:300]}"})
    base = next((r for r in results if r["backend"] == "xgrammar" and "error" not in r), None)
    rows = []
    for r in results:
        if "error" in r:
            rows.append(row(f"structured outputs `{r['backend']}`: generated tok/s (fusion + QA)", None,
                            passed=None, note=r["error"]))
            continue
        m = r["metrics"]
        rows.append(row(f"structured outputs `{r['backend']}`: generated tok/s (fusion + QA)", r["generated_tok_s"],
                        baseline=base["generated_tok_s"] if base else None, baseline_name="xgrammar, same run",
                        unit="tok/s", passed=None,
                        note=f"wall {r['wall_s']:.0f} s; {r['qa_items']} QA accepted of {r['qa_drafts']}; "
                             f"{r['invalid_replies']} invalid replies, {r['failures']} failed requests; deferred "
                             f"for a grammar {m['deferred_request_s']} request-s, queue {m['queue_s']} s"))
    write_report(args.out, {"rows": rows, "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
