"""run_avbench end to end (without an LLM): the report files, valid PNG plots, caching, the lmms-eval export."""

from __future__ import annotations

import importlib.util
import json
import math
import re
import struct
import sys
import zlib
from pathlib import Path

import pytest
import yaml

from schemas import mcq as mcq_module
from benchmark.build import BuildConfig, FilterModels
from schemas.mcq import extract
from schemas.mcq import mcq_text
from benchmark.run import main, run_avbench
from test_benchmark_support import Constant, make_dataset

CONFIG = BuildConfig(heldout_fraction=1.0, similarity="token_overlap")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    ds = make_dataset(tmp_path_factory.mktemp("ds"), 24)
    out = tmp_path_factory.mktemp("out")
    filters = FilterModels(blind=Constant("A"), audio_only=Constant("B"), visual_only=Constant("C"))
    page = run_avbench(ds, out, ["random:seed=0,sheets=1", "random:seed=1"], config=CONFIG, filters=filters)
    return ds, out, page, filters


def assert_valid_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    width, height = struct.unpack(">II", data[16:24])
    assert width > 100 and height > 100
    assert zlib.crc32(data[12:29]) == struct.unpack(">I", data[29:33])[0]  # IHDR checksum
    assert data.endswith(b"IEND\xaeB`\x82")
    import matplotlib.image

    assert matplotlib.image.imread(path).shape[:2] == (height, width)


def test_html_report_links_valid_pngs(run):
    _, out, page, _ = run
    assert page == out / "report" / "report.html"
    html = page.read_text()
    sources = re.findall(r'<img src="([^"]+)"', html)
    assert len(sources) == 3
    for src in sources:
        assert_valid_png(page.parent / src)
    assert "random(seed=0)" in html and "random(seed=1) mean of 9 sheets" in html
    # Questions and options are text from videos: the page runs no script at all, whatever they hold.
    csp = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]+)">', html)
    assert csp and "script-src 'none'" in csp.group(1) and "object-src 'none'" in csp.group(1)


def test_results_json_md_and_per_item_jsonl(run):
    _, out, _, _ = run
    report = out / "report"
    results = json.loads((report / "results.json").read_text())
    # seed 1 has "auto" sheets: ceil(1000 answers / 120 items) = 9, and its accuracy is their mean.
    assert [m["name"] for m in results["models"]] == ["random(seed=0)", "random(seed=1) mean of 9 sheets"]
    assert results["scoring"]["items"] == 120 and not results["scoring"]["circular"]
    overall = results["models"][0]["scores"][0]
    assert overall["group"] == "overall" and overall["n"] == 120
    assert overall["ci_low"] <= overall["accuracy"] <= overall["ci_high"]
    # The constant filter models answer one letter: right in one rotation of four, so every item is core.
    assert results["benchmark"]["counts"]["core"] == 120
    assert any(s["group"] == "set=core" for s in results["models"][0]["scores"])
    predictions = [json.loads(line) for line in (report / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 120 + 9 * 120
    assert {"item_id", "model_name", "rotation", "raw_answer", "parsed_letter", "correct", "rule", "cached",
            "error", "sheet"} <= set(predictions[0])
    per_item = [json.loads(line) for line in (report / "item_results.jsonl").read_text().splitlines()]
    assert len(per_item) == 120 + 9 * 120
    assert {"type", "kind", "duration_bucket", "correct", "sheet"} <= set(per_item[0])
    sheets = [o for o in per_item if o["model"].startswith("random(seed=1)")]
    mean = sum(o["correct"] for o in sheets) / len(sheets)
    assert results["models"][1]["scores"][0]["accuracy"] == pytest.approx(mean) and abs(mean - 0.25) < 0.05
    md = (report / "results.md").read_text()
    assert "| model | items | accuracy |" in md and "| type=temporal_grounding | 24 |" in md


def test_rerun_reuses_the_benchmark_and_the_cached_predictions(run, capsys):
    ds, out, _, filters = run
    manifest = (out / "avbench-v1" / "manifest.json").read_text()
    run_avbench(ds, out, ["random:seed=0,sheets=1", "random:seed=1"], config=CONFIG, filters=filters)
    assert (out / "avbench-v1" / "manifest.json").read_text() == manifest  # not rebuilt
    assert "up to date" in capsys.readouterr().out
    rows = [json.loads(line) for line in (out / "report" / "predictions.jsonl").read_text().splitlines()]
    assert rows and all(r["cached"] for r in rows)


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class _FunctionLoader(yaml.SafeLoader):
    pass


_FunctionLoader.add_constructor("!function", lambda loader, node: ("function", loader.construct_scalar(node)))


def test_lmms_eval_export_scores_with_the_same_rules(run):
    ds, out, _, _ = run
    task = out / "lmms_eval_task" / "avbench"
    # The exported rule files are byte-identical copies of ours.
    assert (task / "avbench_mcq.py").read_bytes() == Path(mcq_module.__file__).read_bytes()
    config = yaml.load((task / "avbench.yaml").read_text(), Loader=_FunctionLoader)
    assert config["task"] == "avbench" and config["output_type"] == "generate_until"
    assert config["process_results"] == ("function", "utils.avbench_process_results")
    assert config["doc_to_messages"] == ("function", "utils.avbench_doc_to_messages")
    docs_name = config["dataset_kwargs"]["data_files"]["test"]
    assert docs_name == "kept_docs.jsonl"  # relative: lmms-eval resolves it against the YAML's folder
    docs = [json.loads(line) for line in (task / docs_name).read_text().splitlines()]
    assert len(docs) == 120
    assert config["metadata"]["content_hash"] == json.loads(
        (out / "avbench-v1" / "manifest.json").read_text())["content_hash"]
    blind = yaml.load((task / "avbench_blind.yaml").read_text(), Loader=_FunctionLoader)
    assert blind["doc_to_messages"] == ("function", "utils.avbench_blind_doc_to_messages")
    assert blind["dataset_kwargs"]["data_files"]["test"] == docs_name

    utils = _load(task / "utils.py", "exported_avbench_utils")
    doc = docs[0]
    assert utils.avbench_doc_to_text(doc) == mcq_text(doc["question"], doc["options"])
    assert utils.avbench_doc_to_target(doc) == doc["answer"]
    # This dataset has records but no media files: the export says so, and the video tasks refuse such an item
    # with the reason instead of sending the question without the video.
    summary = json.loads((task / "export.json").read_text())
    assert len(summary["videos_without_media"]) == summary["videos"] > 0
    assert doc["video"] is None and doc["audio"] is None
    with pytest.raises(FileNotFoundError, match="avbench_blind"):
        utils.avbench_doc_to_messages(doc)
    assert utils.avbench_blind_doc_to_messages(doc) == [
        {"role": "user", "content": [{"type": "text", "text": mcq_text(doc["question"], doc["options"])}]}]
    assert utils.avbench_blind_doc_to_visual(doc) == []

    answers = [f"The answer is ({doc['answer']}).", "I think B or C", "", doc["options"][0],
               "[LMMS_EVAL_REQUEST_FAILED after 2 retries] Error code: 400", "[LMMS_EVAL_BUDGET_EXCEEDED]"]
    results = [utils.avbench_process_results(doc, [a])["avbench_accuracy"] for a in answers]
    for answer, record in zip(answers[:4], results):
        assert record["parsed"] == extract(answer, doc["options"]).letter and not record["request_failed"]
    assert results[0]["correct"] and results[1]["parsed"] is None and not results[1]["correct"]
    assert all(r["request_failed"] and not r["correct"] and r["parsed"] is None for r in results[4:])
    assert utils.avbench_aggregate_accuracy(results[:2]) == 50.0
    assert utils.avbench_aggregate_parse_failures(results[:3]) == pytest.approx(200 / 3)
    # Failed requests are not answers: left out of accuracy and parse failures, counted on their own.
    assert utils.avbench_aggregate_accuracy(results[:2] + results[4:]) == 50.0
    assert utils.avbench_aggregate_parse_failures(results[:3] + results[4:]) == pytest.approx(200 / 3)
    assert utils.avbench_aggregate_request_failures(results) == pytest.approx(200 / 6)
    assert math.isnan(utils.avbench_aggregate_accuracy(results[4:]))  # an outage has no accuracy


def test_cli_without_llm_filters(tmp_path, capsys):
    ds = make_dataset(tmp_path / "ds", 4)
    page = main([str(ds), str(tmp_path / "out"), "--no-llm-filters", "--heldout-fraction", "1.0",
                 "--model", "random", "--circular"])
    assert page.is_file()
    printed = capsys.readouterr().out
    assert "circular" in printed and "overall" in printed


def test_no_heldout_video_is_a_clear_error(tmp_path):
    ds = make_dataset(tmp_path / "ds", 2)
    with pytest.raises(ValueError, match="heldout_fraction"):
        run_avbench(ds, tmp_path / "out", ["random"], config=BuildConfig(heldout_fraction=0.0), filters="none")


def test_same_model_twice_gets_distinct_names(tmp_path):
    ds = make_dataset(tmp_path / "ds", 2)
    page = run_avbench(ds, tmp_path / "out", ["random:sheets=1", "random:sheets=1"], config=CONFIG, filters="none",
                       export=False)
    names = [m["name"] for m in json.loads((page.parent / "results.json").read_text())["models"]]
    assert names == ["random(seed=0)", "random(seed=0)#2"]


def test_llm_filters_fail_early_when_the_server_is_down(tmp_path, monkeypatch):
    from schemas.settings import settings

    ds = make_dataset(tmp_path / "ds", 1)
    monkeypatch.setenv("SAVEN_LLM__BASE_URL", "http://127.0.0.1:9/v1")  # nothing listens on the discard port
    settings.cache_clear()
    try:
        with pytest.raises(RuntimeError, match="make llm-server"):
            run_avbench(ds, tmp_path / "out", ["random"], config=CONFIG, filters="llm")
    finally:
        monkeypatch.undo()
        settings.cache_clear()
    assert not (tmp_path / "out" / "avbench-v1" / "manifest.json").exists()



def test_printed_table_keeps_bracketed_model_names(tmp_path, monkeypatch):
    """Model names such as "smollm2[blind]" are not rich markup: the printed table shows them whole."""
    from io import StringIO

    from rich.console import Console

    from benchmark import adapters

    class Bracketed(Constant):
        model_name = "const[blind]"

        def __init__(self, context=None):
            super().__init__("B")

    adapters.ADAPTERS.register("test-bracketed")(Bracketed)
    buf = StringIO()
    try:
        run_avbench(make_dataset(tmp_path / "ds", 2), tmp_path / "out", ["test-bracketed"], config=CONFIG,
                    filters="none", export=False, console=Console(file=buf, width=200))
    finally:
        adapters.ADAPTERS.unregister("test-bracketed")
    assert "const[blind]" in buf.getvalue()
