"""``run_avbench``: build AVBench if needed, score the configured models, write the report, print the table.

    python -m benchmark.run DATASET_DIR OUT_DIR --model random --model blind-llm --model openai:modality=av

Layout under OUT_DIR: ``avbench-<version>/`` (the benchmark), ``cache/`` (prediction cache and LLM request cache),
``report/`` (results.json, predictions.jsonl, item_results.jsonl, results.md, report.html, plots/) and
``lmms_eval_task/avbench/`` (the same items as an lmms-eval task).
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import Literal, Sequence

from benchmark.adapters import BenchContext, make_adapter
from benchmark.adapters.blind_hf import LocalBlindLMAdapter
from benchmark.adapters.openai_chat import OpenAIAdapter
from benchmark.build import BuildConfig, BuiltBench, FilterModels, ensure_avbench, is_kept
from benchmark.counterfactual import (COLUMNS, COUNTERFACTUALS, CounterfactualRow, as_table, audio_donors, drop_rows,
                                      not_measuring_listening)
from benchmark.export import export_lmms_eval_task, export_note
from benchmark.report import ModelRun, ScoringSetup, fmt_score, group_order, write_report
from benchmark.score import PredictionCache, PredictionRow, item_outcomes, predict_sheets, score_items
from benchmark.timings import PhaseTimer
from schemas.records import AVBenchItem

Subset = Literal["kept", "core", "all"]


def check_llm_endpoint(base_url: str, timeout_s: float = 5.0) -> None:
    """Fail early with a clear message rather than after every request's retries."""
    import httpx

    url = base_url.rstrip("/") + "/models"
    try:
        httpx.get(url, timeout=timeout_s).raise_for_status()
    except httpx.HTTPError as exc:
        raise RuntimeError(f"the LLM endpoint {base_url} is not answering ({type(exc).__name__}: {exc}); start it "
                           "with `make llm-server`, or build without the model filters (--no-llm-filters)") from exc


def second_blind_model(context: BenchContext) -> LocalBlindLMAdapter | None:
    """The in-process blind model beside the served one, when its weights are installed (``make setup``)."""
    from infra.model_cache import ModelCacheError, verify

    model = LocalBlindLMAdapter(context)
    try:
        verify(model.model_id, deep=False)
    except ModelCacheError:
        return None
    return model


def llm_filter_models(context: BenchContext) -> FilterModels:
    """The blind and modality-ablation filters on the configured OpenAI-compatible server (letter replies), and a
    second, different blind model in process where installed."""
    return FilterModels(blind=OpenAIAdapter(context, modality="none"),
                        audio_only=OpenAIAdapter(context, modality="audio"),
                        visual_only=OpenAIAdapter(context, modality="visual"),
                        second_blind=second_blind_model(context))


def select(bench: BuiltBench, subset: Subset) -> list[AVBenchItem]:
    if subset == "kept":
        return [it for it in bench.items if is_kept(it)]
    if subset == "core":
        return [it for it in bench.items if it.core]
    if subset == "all":
        return list(bench.items)
    raise ValueError(f"subset must be kept, core or all, not {subset!r}")


def donor_pool(context: BenchContext, items: Sequence[AVBenchItem]) -> dict[str, str]:
    """Whose audio each benchmark video gets in the swapped condition: another benchmark video with sound, or,
    with fewer than two of those, any other video of the dataset with sound."""
    def with_sound(ids):
        return [v for v in ids if (rec := context.video(v)) is not None and rec.has_audio]

    bench_videos = sorted({it.video_id for it in items})
    pool = with_sound(bench_videos)
    if len(pool) < 2:
        pool = with_sound(sorted(context.video_ids()))
    return audio_donors(bench_videos, pool)


def score_counterfactuals(adapter, name: str, items: Sequence[AVBenchItem], rows, cache: PredictionCache,
                          setup: ScoringSetup, donors: dict[str, str], timer: PhaseTimer, label: str
                          ) -> tuple[list[CounterfactualRow], list[PredictionRow]]:
    """The same items with the audio removed and swapped, against the model hearing its own audio in the same
    form; the drop per type (``benchmark.counterfactual``) and every answer given under a condition."""
    out: list[CounterfactualRow] = []
    answers: list[PredictionRow] = []
    if adapter.baseline_condition != "original":
        with timer.phase(f"score: {label} [audio={adapter.baseline_condition}]"):
            rows = predict_sheets(adapter.with_audio(adapter.baseline_condition, donors), items,
                                  range(setup.rotations), cache)
        answers += [tag(r, adapter.baseline_condition) for r in rows]
    for condition in COUNTERFACTUALS:
        asked = [it for it in items if condition != "swapped" or it.video_id in donors]
        if not asked:
            continue
        with timer.phase(f"score: {label} [audio={condition}]"):
            cf_rows = predict_sheets(adapter.with_audio(condition, donors), asked, range(setup.rotations), cache)
        answers += [tag(r, condition) for r in cf_rows]
        ids = {it.item_id for it in asked}
        out += drop_rows(name, condition, asked, [r for r in rows if r.prediction.item_id in ids], cf_rows,
                         seed=setup.seed)
    return out, answers


def tag(row: PredictionRow, condition: str) -> PredictionRow:
    """A counterfactual answer, named for the predictions file: "model[audio=silence]"."""
    name = f"{row.prediction.model_name}[audio={condition}]"
    return replace(row, prediction=row.prediction.model_copy(update={"model_name": name}))


def score_model(spec: str, items: Sequence[AVBenchItem], context: BenchContext, cache: PredictionCache,
                setup: ScoringSetup, timer: PhaseTimer | None = None) -> ModelRun:
    timer = timer or PhaseTimer()
    adapter = make_adapter(spec, context)  # models load lazily, on their first answer: inside the phase
    label = adapter.model_name
    with timer.phase(f"score: {label}"):
        rows = predict_sheets(adapter, items, range(setup.rotations), cache)
    name = adapter.run_name(len(items))
    counterfactual, cf_answers = (
        score_counterfactuals(adapter, name, items, rows, cache, setup, donor_pool(context, items), timer, label)
        if setup.counterfactual and adapter.takes_audio else ([], []))
    return ModelRun(name=name, spec=spec, fingerprint=adapter.fingerprint(),
                    scores=score_items(name, items, rows, seed=setup.seed,
                                       edges=setup.duration_edges_s),
                    rows=rows, outcomes=item_outcomes(rows), counterfactual=counterfactual,
                    counterfactual_rows=cf_answers)


def _unique_names(runs: Sequence[ModelRun]) -> None:
    """Two specs with the same display name (e.g. one model at two endpoints) get "#2", "#3"... in the report (a
    suffix no other run already has)."""
    taken: set[str] = set()
    for run in runs:
        name, k = run.name, 1
        while name in taken:
            k += 1
            name = f"{run.name}#{k}"
        taken.add(name)
        if name != run.name:
            old = run.name
            run.name = name
            run.scores = [s.model_copy(update={"model_name": name}) for s in run.scores]
            run.counterfactual = [replace(c, model=name) for c in run.counterfactual]
            run.rows = [replace(r, prediction=r.prediction.model_copy(update={"model_name": name}))
                        for r in run.rows]
            run.counterfactual_rows = [replace(r, prediction=r.prediction.model_copy(update={
                "model_name": r.prediction.model_name.replace(old, name, 1)})) for r in run.counterfactual_rows]


def table_console():
    """A terminal's own width; 160 columns when piped (make, CI logs), where rich would otherwise assume 80 and
    fold every model's column."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=160)


def print_table(runs: Sequence[ModelRun], setup: ScoringSetup, console=None) -> None:
    from rich.markup import escape
    from rich.table import Table

    console = console or table_console()
    table = Table(title=f"AVBench ({setup.subset}, {'circular' if setup.circular else 'rotation 0'}): "
                        "accuracy % [95% CI]")
    table.add_column("group")
    for r in runs:
        table.add_column(escape(r.name), overflow="fold")  # "model[blind]" is not rich markup
    for g in group_order(runs, setup):
        table.add_row(g, *(fmt_score(r.score(g)) for r in runs))
    table.add_row("parse failures", *(f"{100 * r.parse_failure_rate:.1f}%" for r in runs))
    console.print(table)
    rows = [c for r in runs for c in r.counterfactual]
    if rows:
        cf = Table(title="Does the model listen? Accuracy with its own audio vs. silence / another video's audio "
                         "(drop in points, paired bootstrap 95% CI; * significant)")
        for col in COLUMNS:
            cf.add_column(col, overflow="fold")
        for row in as_table(rows, not_measuring_listening(rows)):
            cf.add_row(*(escape(c) for c in row))
        console.print(cf)


def dataset_viewer(dataset_dir: Path) -> Path:
    """The dataset viewer's folder (``saven view``), written afresh (pages only, seconds): the report links into it."""
    from viewer import VIEW_DIR, write_viewer

    folder = Path(dataset_dir) / VIEW_DIR
    write_viewer(dataset_dir, folder)
    return folder


def viewer_or_none(dataset_dir: Path, console) -> Path | None:
    """The viewer to link, or None (and why) when it cannot be written, e.g. a read-only dataset: the report
    matters more than its links."""
    try:
        return dataset_viewer(dataset_dir)
    except OSError as exc:
        console.print(f"dataset viewer not written ({exc}); the report's items are not linked", markup=False)
        return None


def run_avbench(dataset_dir: Path, out_dir: Path, models: Sequence[str] = ("random",), *,
                config: BuildConfig | None = None, filters: FilterModels | Literal["llm", "none"] = "llm",
                subset: Subset = "kept", circular: bool = False, rebuild: bool = False, seed: int = 0,
                export: bool = True, link_media: bool = False, counterfactual: bool = True, viewer: bool = True,
                console=None) -> Path:
    """Build (if needed), score ``models`` (registry specs, e.g. "random", "openai:modality=av",
    "saven-vid:checkpoint=out/ckpt"), write the report; returns the HTML report's path."""
    console = console or table_console()
    timer = PhaseTimer()
    dataset_dir, out_dir = Path(dataset_dir), Path(out_dir)
    config = config or BuildConfig()
    context = BenchContext(dataset_dir, cache_dir=out_dir / "cache")
    cache = PredictionCache(out_dir / "cache" / "predictions.sqlite")
    try:
        filter_models = (llm_filter_models(context) if filters == "llm" else
                         FilterModels() if filters == "none" else filters)
        preflight = None
        if filters == "llm":
            from schemas.settings import settings

            preflight = lambda: check_llm_endpoint(settings().llm.resolved_base_url)
        bench, built = ensure_avbench(dataset_dir, out_dir, config, filter_models, cache, rebuild=rebuild,
                                      before_build=preflight, timer=timer)
        console.print(f"AVBench {bench.manifest.version}: {'built' if built else 'up to date'} at {bench.folder} "
                      f"({bench.manifest.counts['kept']} kept, {bench.manifest.counts['core']} core; "
                      f"hash {bench.manifest.content_hash[:12]})")
        items = select(bench, subset)
        if not items:
            why = (f"heldout_fraction={config.heldout_fraction} holds out no video" if config.heldout_fraction == 0
                   else "the held-out split gives AVBench a video with questions whenever two or more videos have "
                        "any, so the pipeline itself produced too few QA items (see the dataset card's counts and "
                        "dead_letter.parquet)")
            raise ValueError(f"AVBench has no {subset} items ({bench.manifest.counts}): {why}")
        setup = ScoringSetup(subset=subset, circular=circular, rotations=4 if circular else 1, seed=seed,
                             counterfactual=counterfactual)
        runs = [score_model(spec, items, context, cache, setup, timer) for spec in models]
        _unique_names(runs)
        with timer.phase("report"):
            page = write_report(out_dir / "report", bench, items, runs, setup,
                                viewer_dir=viewer_or_none(dataset_dir, console) if viewer else None)
        if export:
            with timer.phase("lmms-eval export"):
                task = export_lmms_eval_task(bench, context, out_dir / "lmms_eval_task", link_media=link_media)
            console.print(f"lmms-eval tasks avbench, avbench_core, avbench_blind: {task} ({export_note(task)})",
                          markup=False)
    finally:
        cache.close()
    print_table(runs, setup, console)
    timer.write(out_dir / "report" / "timings.json")
    console.print(f"AVBench's {timer.as_dict()['total_wall_s']:.0f} s: {timer.line()}", markup=False)
    console.print(f"report: {page}")
    return page


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description="Build AVBench from a pipeline dataset, score models, write a report")
    p.add_argument("dataset_dir", type=Path)
    p.add_argument("out_dir", type=Path)
    p.add_argument("--model", action="append", dest="models",
                   help="registry spec, repeatable: random, blind-llm, openai[:modality=av,...], "
                        "saven-vid:checkpoint=PATH (default: random)")
    p.add_argument("--subset", choices=["kept", "core", "all"], default="kept")
    p.add_argument("--circular", action="store_true", help="all 4 option rotations must be right")
    p.add_argument("--rebuild", action="store_true")
    p.add_argument("--no-llm-filters", action="store_true", help="only the near-duplicate filter")
    p.add_argument("--version", default=BuildConfig().version)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--heldout-fraction", type=float, default=BuildConfig().heldout_fraction)
    p.add_argument("--min-heldout-items", type=int, default=0,
                   help="hold out more videos of a small dataset until this many questions are held out")
    p.add_argument("--filter-rotations", type=int, default=BuildConfig().filter_rotations)
    p.add_argument("--link-media", action="store_true",
                   help="hard-link the lmms-eval export's videos that are already H.264/AAC MP4 instead of copying")
    p.add_argument("--no-counterfactual", action="store_true",
                   help="skip the silenced- and swapped-audio runs of the models that take audio")
    args = p.parse_args(argv)
    config = BuildConfig(version=args.version, seed=args.seed, heldout_fraction=args.heldout_fraction,
                         min_heldout_items=args.min_heldout_items, filter_rotations=args.filter_rotations)
    return run_avbench(args.dataset_dir, args.out_dir, args.models or ["random"], config=config,
                       filters="none" if args.no_llm_filters else "llm", subset=args.subset,
                       circular=args.circular, rebuild=args.rebuild, seed=args.seed,
                       link_media=args.link_media, counterfactual=not args.no_counterfactual)


if __name__ == "__main__":
    main()
