"""The AVBench report: results JSON, per-item JSONL, a Markdown table and an HTML page with PNG plots.

Files in the report folder: ``results.json`` (benchmark identity, scoring setup, every ``Score``),
``predictions.jsonl`` (one line per model x item x rotation: raw answer, letter, extraction rule, error),
``item_results.jsonl`` (one line per model x item), ``results.md``, ``report.html`` and ``plots/*.png``
(accuracy per question type and per duration bucket with 95% intervals, parse-failure rate per model).
Plots are drawn on a bare ``Figure`` (Agg canvas): no pyplot state, no display needed.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from benchmark.build import BuiltBench
from benchmark.counterfactual import COLUMNS, CounterfactualRow, as_table, not_measuring_listening
from benchmark.score import (DURATION_EDGES_S, ItemOutcome, PredictionRow, duration_bucket, duration_buckets,
                             outcome_json)
from schemas.records import AVBenchItem, QAType, Score
from viewer.html import csp, video_page_href

PLOTS = {"type": "accuracy_by_type.png", "duration": "accuracy_by_duration.png",
         "parse": "parse_failures.png"}


@dataclass
class ModelRun:
    name: str
    spec: str
    fingerprint: str
    scores: list[Score]
    rows: list[PredictionRow]
    outcomes: dict[tuple[str, int], ItemOutcome]  # by (item id, answer sheet)
    counterfactual: list[CounterfactualRow] = field(default_factory=list)  # audio silenced / swapped
    counterfactual_rows: list[PredictionRow] = field(default_factory=list)  # the answers behind them

    def score(self, group: str) -> Score | None:
        return next((s for s in self.scores if s.group == group), None)

    @property
    def parse_failure_rate(self) -> float:
        return sum(r.prediction.parsed_letter is None for r in self.rows) / len(self.rows) if self.rows else 0.0

    @property
    def errors(self) -> int:
        return sum(bool(r.error) for r in self.rows)


@dataclass(frozen=True)
class ScoringSetup:
    subset: str  # "kept" (the benchmark), "core" or "all"
    circular: bool
    rotations: int
    seed: int
    duration_edges_s: tuple[float, ...] = DURATION_EDGES_S
    counterfactual: bool = True  # score models that take audio again with it silenced and swapped

    @property
    def chance(self) -> float:
        return 0.25 ** self.rotations


def fmt_score(s: Score | None) -> str:
    if s is None:
        return "-"
    return f"{100 * s.accuracy:.1f} [{100 * s.ci_low:.1f}, {100 * s.ci_high:.1f}]"


def group_order(runs: Sequence[ModelRun], setup: ScoringSetup) -> list[str]:
    present = {s.group for r in runs for s in r.scores}
    wanted = (["overall", "set=core", "kind=av", "kind=av_temporal"] + [f"type={t.value}" for t in QAType]
              + [f"duration={b}" for b in duration_buckets(setup.duration_edges_s)])
    return [g for g in wanted if g in present] + sorted(present - set(wanted))


def markdown(bench: BuiltBench, runs: Sequence[ModelRun], setup: ScoringSetup) -> str:
    m = bench.manifest
    lines = [f"# AVBench {m.version} results", "",
             f"Benchmark content hash `{m.content_hash[:16]}`; set `{setup.subset}`; "
             f"{'circular evaluation (all 4 rotations must be right)' if setup.circular else 'rotation 0 only'}; "
             f"accuracy in % with bootstrap 95% intervals (seed {setup.seed}); chance {100 * setup.chance:.2f}%.", "",
             "| model | items | accuracy | core | parse failures | errors |", "|---|---:|---|---|---:|---:|"]
    for r in runs:
        overall = r.score("overall")
        lines.append(f"| {r.name} | {overall.n if overall else 0} | {fmt_score(overall)} | "
                     f"{fmt_score(r.score('set=core'))} | {100 * r.parse_failure_rate:.1f}% | {r.errors} |")
    lines += ["", "| group | n | " + " | ".join(r.name for r in runs) + " |",
              "|---|---:|" + "---|" * len(runs)]
    for g in group_order(runs, setup):
        n = next((s.n for r in runs for s in r.scores if s.group == g), 0)
        lines.append(f"| {g} | {n} | " + " | ".join(fmt_score(r.score(g)) for r in runs) + " |")
    cf = [c for r in runs for c in r.counterfactual]
    if cf:
        lines += ["", "## Does the model listen?", "",
                  "Each model that takes audio answered the same items again with its audio silenced and swapped for "
                  "another video's. Drop in points with a paired bootstrap 95% interval (* significant); a type where "
                  "no condition drops significantly is flagged as not measuring listening.", "",
                  "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        lines += ["| " + " | ".join(row) + " |" for row in as_table(cf, not_measuring_listening(cf))]
    return "\n".join(lines) + "\n"


def _bars(path: Path, runs: Sequence[ModelRun], groups: list[str], labels: list[str], title: str,
          chance: float) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(6.0, 1.3 * len(groups) + 2.5), 4.5))
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(runs))
    for k, run in enumerate(runs):
        xs, acc, lo, hi = [], [], [], []
        for i, g in enumerate(groups):
            s = run.score(g)
            if s is None:
                continue
            xs.append(i + (k - (len(runs) - 1) / 2) * width)
            acc.append(s.accuracy)
            lo.append(s.accuracy - s.ci_low)
            hi.append(s.ci_high - s.accuracy)
        ax.bar(xs, acc, width, yerr=[lo, hi], capsize=3, label=run.name)
    ax.axhline(chance, linestyle="--", color="grey", linewidth=1, label=f"chance ({100 * chance:.1f}%)")
    ax.set_xticks(range(len(groups)), labels, rotation=20, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy (95% CI)")
    ax.set_title(title)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")


def _parse_plot(path: Path, runs: Sequence[ModelRun]) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(5.0, 1.2 * len(runs) + 2), 3.8))
    ax = fig.add_subplot()
    ax.bar(range(len(runs)), [100 * r.parse_failure_rate for r in runs], color="tab:red")
    ax.set_xticks(range(len(runs)), [r.name for r in runs], rotation=20, ha="right")
    ax.set_ylim(0, 100)
    ax.set_ylabel("answers without a letter (%)")
    ax.set_title("Parse failures")
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")


def write_plots(plot_dir: Path, runs: Sequence[ModelRun], setup: ScoringSetup) -> dict[str, Path]:
    plot_dir.mkdir(parents=True, exist_ok=True)
    types = [t.value for t in QAType if any(r.score(f"type={t.value}") for r in runs)]
    buckets = [b for b in duration_buckets(setup.duration_edges_s) if any(r.score(f"duration={b}") for r in runs)]
    paths = {k: plot_dir / v for k, v in PLOTS.items()}
    _bars(paths["type"], runs, [f"type={t}" for t in types], [t.replace("_", " ") for t in types],
          "Accuracy per question type", setup.chance)
    _bars(paths["duration"], runs, [f"duration={b}" for b in buckets], buckets,
          "Accuracy per video duration", setup.chance)
    _parse_plot(paths["parse"], runs)
    return paths


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def items_section(items: Sequence[AVBenchItem], runs: Sequence[ModelRun], report_dir: Path,
                  viewer_dir: Path | None) -> str:
    """Every scored item: its question, the right answer, each model's verdict and a link to the item on its
    video's page in the dataset viewer (``saven view``), where its clips can be played."""
    import os


    from urllib.parse import quote

    base = quote(os.path.relpath(viewer_dir, report_dir).replace(os.sep, "/")) if viewer_dir is not None else None
    right = [{o.item_id: o.correct for o in r.outcomes.values() if o.sheet == 0} for r in runs]
    head = "".join(f"<th>{html.escape(h)}</th>" for h in ["item", "type", "question", "answer"]
                   + [r.name for r in runs] + (["viewer"] if base else []))
    body = []
    for it in items:
        marks = "".join(f"<td>{'✓' if mine.get(it.item_id) else '✗'}</td>" for mine in right)
        link = (f'<td><a href="{html.escape(base + "/" + video_page_href(it.video_id, it.qa_id), quote=True)}">'
                f"view</a></td>") if base else ""
        body.append(f"<tr><td><code>{html.escape(it.item_id)}</code></td><td>{html.escape(it.type.value)}</td>"
                    f"<td>{html.escape(it.question)}</td><td>{html.escape(it.answer_letter)}. "
                    f"{html.escape(it.options[it.answer_index])}</td>{marks}{link}</tr>")
    return f"<h2>Items</h2><table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def html_page(bench: BuiltBench, runs: Sequence[ModelRun], setup: ScoringSetup, plots: dict[str, Path],
              report_dir: Path, items_html: str = "") -> str:
    m = bench.manifest
    summary = _html_table(["model", "items", "accuracy % [95% CI]", "core", "parse failures", "errors"], [
        [r.name, str(r.score("overall").n if r.score("overall") else 0), fmt_score(r.score("overall")),
         fmt_score(r.score("set=core")), f"{100 * r.parse_failure_rate:.1f}%", str(r.errors)] for r in runs])
    groups = _html_table(["group", "n"] + [r.name for r in runs], [
        [g, str(next((s.n for r in runs for s in r.scores if s.group == g), 0))]
        + [fmt_score(r.score(g)) for r in runs] for g in group_order(runs, setup)])
    counts = _html_table(["count", "value"], [[k, str(v)] for k, v in m.counts.items()])
    cf_rows = [c for r in runs for c in r.counterfactual]
    listening = ("<h2>Does the model listen?</h2><p>Each model that takes audio answered the same items again with "
                 "its audio silenced and swapped for another video's: the drop in points, paired bootstrap 95% "
                 "interval (* significant). A type where no condition drops significantly is flagged.</p>"
                 + _html_table(COLUMNS, as_table(cf_rows, not_measuring_listening(cf_rows)))) if cf_rows else ""
    images = "".join(
        f'<figure><img src="{html.escape(p.relative_to(report_dir).as_posix())}" alt="{html.escape(k)}">'
        f"</figure>" for k, p in plots.items())
    mode = "circular evaluation (all 4 rotations must be right)" if setup.circular else "rotation 0 only"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{csp(None)}">
<title>AVBench {html.escape(m.version)} report</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}img{{max-width:100%}}</style></head>
<body><h1>AVBench {html.escape(m.version)}</h1>
<p>Content hash <code>{html.escape(m.content_hash)}</code>; set <b>{html.escape(setup.subset)}</b>; {mode};
bootstrap seed {setup.seed}; chance {100 * setup.chance:.2f}%. Filters run: {html.escape(", ".join(m.filters_run))}
(near-duplicates by {html.escape(m.similarity)}).</p>
<h2>Models</h2>{summary}<h2>By group</h2>{groups}{listening}<h2>Plots</h2>{images}<h2>Benchmark</h2>{counts}
{items_html}
<p>Files: <a href="results.json">results.json</a>, <a href="results.md">results.md</a>,
<a href="predictions.jsonl">predictions.jsonl</a>, <a href="item_results.jsonl">item_results.jsonl</a>,
<a href="counterfactual_predictions.jsonl">counterfactual_predictions.jsonl</a>.</p>
</body></html>
"""


def _jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in rows).encode()


def write_report(report_dir: Path, bench: BuiltBench, items: Sequence[AVBenchItem], runs: Sequence[ModelRun],
                 setup: ScoringSetup, viewer_dir: Path | None = None) -> Path:
    """Write every report file; returns the HTML page's path. ``viewer_dir``: the dataset viewer's folder, which
    the items link into."""
    from schemas.shards import write_bytes_atomic

    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    m = bench.manifest
    results = {
        "benchmark": {"name": m.name, "version": m.version, "content_hash": m.content_hash,
                      "inputs_hash": m.inputs_hash, "counts": m.counts, "letters": m.letters,
                      "filters_run": m.filters_run, "similarity": m.similarity, "folder": str(bench.folder)},
        "scoring": {"subset": setup.subset, "items": len(items), "circular": setup.circular,
                    "rotations": setup.rotations, "bootstrap_seed": setup.seed, "chance": setup.chance,
                    "duration_edges_s": list(setup.duration_edges_s)},
        "models": [{"name": r.name, "spec": r.spec, "fingerprint": r.fingerprint, "errors": r.errors,
                    "parse_failure_rate": r.parse_failure_rate,
                    "scores": [s.model_dump(mode="json") for s in r.scores],
                    "counterfactual_audio": [c.to_json() for c in r.counterfactual],
                    "not_measuring_listening": not_measuring_listening(r.counterfactual).get(r.name, [])}
                   for r in runs],
    }
    write_bytes_atomic(report_dir / "results.json", json.dumps(results, indent=2, sort_keys=True).encode() + b"\n")
    write_bytes_atomic(report_dir / "predictions.jsonl", _jsonl([row.to_json() for r in runs for row in r.rows]))
    write_bytes_atomic(report_dir / "counterfactual_predictions.jsonl",
                       _jsonl([row.to_json() for r in runs for row in r.counterfactual_rows]))
    by_id = {it.item_id: it for it in items}
    write_bytes_atomic(report_dir / "item_results.jsonl", _jsonl([
        {"model": r.name, "type": by_id[o.item_id].type.value, "kind": by_id[o.item_id].kind.value,
         "duration_bucket": duration_bucket(by_id[o.item_id].duration_s, setup.duration_edges_s),
         "core": by_id[o.item_id].core, **outcome_json(o)}
        for r in runs for o in sorted(r.outcomes.values(), key=lambda o: (o.item_id, o.sheet))]))
    write_bytes_atomic(report_dir / "results.md", markdown(bench, runs, setup).encode())
    plots = write_plots(report_dir / "plots", runs, setup)
    page = report_dir / "report.html"
    write_bytes_atomic(page, html_page(bench, runs, setup, plots, report_dir,
                                       items_section(items, runs, report_dir, viewer_dir)).encode())
    return page
