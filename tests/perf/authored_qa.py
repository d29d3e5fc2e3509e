"""The authored QA mode on a dataset's timelines, with the strongest local LLM: what it drafts, what the checks
and the judge keep, and every accepted item with its timeline, for a person to read.

    python tests/perf/authored_qa.py [--dataset out/demo/dataset] [--model qwen2.5-1.5b-instruct] [--rounds 1]
                                     [--out out/perf/authored_qa.md]

Starts the model on a side vLLM CPU server (``infra.servers.side_llm_server``, the next port; stopped after unless
it was running) and asks for every unanchored type per video (``tasks.qa_author``), once per round, checks and
judges each draft as the pipeline does (``tasks.qa.generate_qa`` in the authored mode, anchored types switched off),
and writes: drafted / accepted by type, every dead letter by check, the judge's verdicts, each accepted item with
the timeline it came from (evidence clips marked), and a sample of rejected drafts with their reasons.
Not part of ``make test``: on 2 cores a 1.5B model takes minutes per video (``make authored-qa``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from infra import servers
from infra.llm_client import LLMClient
from schemas.mcq import LETTERS
from schemas.records import ClipDescription, VideoRecord
from schemas.settings import QAOptions, settings
from schemas.shards import read_records
from tasks import qa
from tasks.grounding import run_vocabulary
from tasks.qa_author import AUTHORED_TYPES, timeline_rows

REJECTED_SHOWN = 15


def _timeline_lines(clips: list[ClipDescription], evidence: set[str]) -> list[str]:
    out = []
    for row, clip in zip(timeline_rows(clips), sorted(clips, key=lambda c: c.start_s)):
        mark = ">>" if clip.clip_id in evidence else "  "
        said = f" | said: {row['said'][:90]}" if row.get("said") else ""
        out.append(f"    {mark} {row['clip']:>2} {row['from'][3:]}-{row['to'][3:]} seen: {'; '.join(row['seen'])} "
                   f"| heard: {'; '.join(row['heard'])}{said}")
    return out


async def _author(base_url: str, model: str, videos: list[VideoRecord], by_video: dict, rounds: int) -> tuple:
    options = QAOptions(mode="authored", types=list(AUTHORED_TYPES), attempts_per_type=rounds, questions_per_type=1,
                        questions_per_clip=0, questions_per_minute=0)
    with tempfile.TemporaryDirectory() as tmp:
        client = LLMClient(base_url=base_url, model=model, max_concurrency=4, timeout_s=1800, max_retries=1,
                           temperature=0.2, max_tokens=1024, seed=0, cache_path=Path(tmp) / "cache.sqlite")
        async with client:
            results = await asyncio.gather(*(qa.generate_qa(client, v, by_video[v.video_id], options,
                                                            vocabulary=run_vocabulary(settings())) for v in videos))
        return results, client.stats


def report(dataset: Path, model: str, rounds: int) -> str:
    videos = read_records(dataset, "videos")
    by_video: dict[str, list[ClipDescription]] = defaultdict(list)
    for d in read_records(dataset, "descriptions"):
        by_video[d.video_id].append(d)
    videos = [v for v in videos if by_video[v.video_id]]
    cfg = settings()
    spec, base_url = servers.side_llm_server(cfg, model, name="llm-server-authored")
    was_running = servers.is_running(spec, cfg.paths.run_dir)
    servers.start(spec, cfg.paths.run_dir)
    started = time.perf_counter()
    try:
        results, stats = asyncio.run(_author(base_url, model, videos, by_video, rounds))
    finally:
        if not was_running:
            servers.stop(spec, cfg.paths.run_dir)
    wall = time.perf_counter() - started

    drafted, accepted, letters, verdicts = Counter(), Counter(), Counter(), Counter()
    rejected = []
    for r in results:
        for d in r.dead_letters:
            letters[d.error_class] += 1
            detail = json.loads(d.detail) if d.detail else {}
            if d.error_class.startswith("check:") or d.error_class == "AuthoredItemIncomplete":
                drafted[detail.get("type", "?")] += 1
                rejected.append((d.error_class, d.message, detail))
        for item in r.items:
            drafted[item.type.value] += 1
            accepted[item.type.value] += 1
            verdicts[item.judge_verdict] += 1
    lines = [f"# Authored QA: {model} on {len(videos)} videos of {dataset}", "",
             f"{rounds} round(s); wall {wall:.0f} s; {stats.requests_sent} requests, {stats.prompt_tokens} prompt "
             f"and {stats.completion_tokens} generated tokens.", "",
             "| type | drafted | accepted |", "|---|---|---|"]
    lines += [f"| {t.value} | {drafted[t.value]} | {accepted[t.value]} |" for t in AUTHORED_TYPES]
    lines += [f"| all | {sum(drafted.values())} | {sum(accepted.values())} |", "",
              "Dead letters: " + ", ".join(f"{k} {v}" for k, v in letters.most_common()) + ".",
              "Judge verdicts of accepted items: " + (", ".join(f"{k} {v}" for k, v in verdicts.items()) or "-"), "",
              "## Accepted items", ""]
    for r in results:
        for item in r.items:
            lines.append(f"**{item.type.value}** verdict `{item.judge_verdict}` (`{item.qa_id}`): {item.question}")
            lines += [f"    {'*' if k == item.answer_index else ' '} {LETTERS[k]}. {o}"
                      for k, o in enumerate(item.options)]
            lines += _timeline_lines(by_video[item.video_id], set(item.evidence_clip_ids)) + [""]
    lines += ["## Rejected drafts (a sample)", ""]
    for error_class, message, detail in rejected[:REJECTED_SHOWN]:
        wrong = " | ".join(detail.get("wrong", [])) if "wrong" in detail else " | ".join(detail.get("options", [])[1:])
        answer = detail.get("answer") or (detail.get("options") or ["?"])[0]
        lines.append(f"- `{error_class}` ({detail.get('type', '?')}): {detail.get('question', '')} -> {answer} "
                     f"[wrong: {wrong}] :: {message[:200]}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, default=REPO / "out" / "demo" / "dataset")
    parser.add_argument("--model", default="qwen2.5-1.5b-instruct")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--out", type=Path, default=REPO / "out" / "perf" / "authored_qa.md")
    args = parser.parse_args()
    text = report(args.dataset, args.model, args.rounds)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(text)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
