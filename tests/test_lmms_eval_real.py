"""The real lmms-eval (0.7.3, in .venv-lmms: `make check-lmms`) scores an exported AVBench folder that was copied
away from the dataset it came from, against the real vLLM CPU server.

What this proves: lmms-eval registers the three tasks from a travelled folder; the text-only variant's accuracy, as
lmms-eval prints it, equals ours on the very answers lmms-eval got; a refused request is counted as a failure, not
as a wrong answer; lmms-eval's chat classes are handed the video and its sound track (inline for the API classes, as
a file for the omni classes). What it cannot: how well any audio-visual model does (the server here serves a
text-only 0.5B; no omni model runs on this machine).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Sequence

import pytest

from benchmark.adapters import ModelAdapter
from benchmark.build import BuildConfig, FilterModels, load_avbench
from benchmark.run import run_avbench
from benchmark.score import predict, score_items
from schemas.records import AVBenchItem
from test_benchmark_support import Constant, make_dataset, video_id
from test_lmms_export import make_media

pytestmark = [pytest.mark.llm, pytest.mark.lmms]

ROOT = Path(__file__).resolve().parents[1]
LMMS_VENV = ROOT / ".venv-lmms"
PROBE = Path(__file__).with_name("lmms_eval_probe.py")
# |avbench_blind|none  |     0|avbench_accuracy            |↑  |   20|±  |N/A   |
TABLE_ROW = re.compile(r"^\|(?P<task>[a-z_]+)\s*\|[^|]*\|[^|]*\|(?P<metric>avbench_[a-z_]+?)\s*\|[^|]*\|"
                       r"\s*(?P<value>[-\d.]+|NaN)\s*\|", re.MULTILINE)


class Replay(ModelAdapter):
    """The answers lmms-eval got, given to our scorer by item id."""

    registry_name = "test-replay"

    def __init__(self, answers: dict[str, str]):
        super().__init__()
        self.answers = answers

    def fingerprint(self) -> str:
        return f"replay:{sorted(self.answers.items())}"

    def answer(self, items: Sequence[AVBenchItem]) -> list[str]:
        self.errors = {}
        return [self.answers[it.item_id] for it in items]


@pytest.fixture(scope="module")
def lmms_eval() -> Path:
    exe = LMMS_VENV / "bin" / "lmms-eval"
    if not exe.is_file():
        pytest.fail(f"{exe} is missing: `make check-lmms` installs lmms-eval in its own venv and runs these tests")
    return exe


@pytest.fixture(scope="module")
def travelled(tmp_path_factory):
    """An export copied to another folder; the dataset and the original export are deleted, so nothing can be read
    from them. Returns (the copied task folder, the AVBench items)."""
    work = tmp_path_factory.mktemp("lmms")
    ds = make_dataset(work / "ds", 3)
    (ds / "media").mkdir()
    for i in range(3):
        make_media(ds / "media" / f"{video_id(i)}.mp4", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac")
    filters = FilterModels(blind=Constant("A"), audio_only=Constant("B"), visual_only=Constant("C"))
    run_avbench(ds, work / "out", ["random"], config=BuildConfig(heldout_fraction=1.0, similarity="token_overlap"),
                filters=filters)
    items = load_avbench(work / "out" / "avbench-v1").items
    copy = Path(shutil.copytree(work / "out" / "lmms_eval_task" / "avbench", work / "elsewhere" / "avbench"))
    shutil.rmtree(ds)
    shutil.rmtree(work / "out")
    return copy, items


def run_lmms_eval(exe: Path, llm_server, task_folder: Path, task: str, limit: int, out: Path,
                  *extra_model_args: str) -> tuple[dict[str, float], list[dict]]:
    """lmms-eval's printed metrics for ``task`` and its logged samples."""
    model_args = ",".join([f"model={llm_server.model}", f"base_url={llm_server.base_url}", "api_key=EMPTY",
                           "max_retries=1", "timeout=120", *extra_model_args])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "NO_COLOR": "1"}
    proc = subprocess.run([str(exe), "--model", "openai", "--model_args", model_args, "--tasks", task,
                           "--include_path", str(task_folder), "--limit", str(limit), "--output_path", str(out),
                           "--log_samples"], capture_output=True, text=True, env=env, timeout=600, check=False)
    log = proc.stdout + proc.stderr
    # lmms-eval exits 0 after an error during evaluation: its table and samples are what show it ran.
    printed = {m["metric"]: float(m["value"]) for m in TABLE_ROW.finditer(log) if m["task"] == task}
    samples_files = sorted(out.glob(f"*/*_samples_{task}.jsonl"))
    assert proc.returncode == 0 and printed and samples_files, log[-4000:]
    samples = [json.loads(line) for line in samples_files[-1].read_text().splitlines()]
    return printed, samples


def test_text_only_variant_scores_as_we_do(lmms_eval, llm_server, travelled, tmp_path):
    folder, items = travelled
    printed, samples = run_lmms_eval(lmms_eval, llm_server, folder, "avbench_blind", 12, tmp_path / "run")
    assert len(samples) == 12
    answers = {s["avbench_accuracy"]["item_id"]: s["filtered_resps"] for s in samples}
    if isinstance(next(iter(answers.values())), list):
        answers = {k: v[0] for k, v in answers.items()}
    asked = [it for it in items if it.item_id in answers]
    assert len(asked) == 12
    ours = {s.group: s for s in score_items("lmms-eval answers", asked, predict(Replay(answers), asked))}
    assert printed["avbench_request_failure_rate"] == 0.0
    assert printed["avbench_accuracy"] == pytest.approx(100 * ours["overall"].accuracy, abs=1e-6)
    assert printed["avbench_parse_failure_rate"] == pytest.approx(100 * ours["overall"].parse_failures / 12, abs=1e-6)
    # The model answered; its answers are letters, not failures (a real reply per item).
    assert all(not s["avbench_accuracy"]["request_failed"] for s in samples)


def test_refused_requests_are_failures_not_wrong_answers(lmms_eval, llm_server, travelled, tmp_path):
    """The full task sends the video and its sound; the text-only server refuses each request (HTTP 400)."""
    folder, _ = travelled
    printed, samples = run_lmms_eval(lmms_eval, llm_server, folder, "avbench", 3, tmp_path / "run",
                                     "pass_video_url=True")
    assert printed["avbench_request_failure_rate"] == 100.0
    assert str(printed["avbench_accuracy"]) == "nan"  # an outage has no accuracy; lmms-eval prints NaN
    for s in samples:
        text = s["filtered_resps"][0] if isinstance(s["filtered_resps"], list) else s["filtered_resps"]
        assert text.startswith("[LMMS_EVAL_REQUEST_FAILED") and "400" in text
        assert s["avbench_accuracy"]["request_failed"] and s["avbench_accuracy"]["parsed"] is None


def test_chat_classes_are_handed_video_and_audio(lmms_eval, travelled):
    folder, _ = travelled
    proc = subprocess.run([str(LMMS_VENV / "bin" / "python"), str(PROBE), str(folder), "openai", "async_openai",
                           "vllm", "qwen2_5_omni", "qwen3_omni"], capture_output=True, text=True, timeout=300,
                          check=False, env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    for model in ("openai", "async_openai", "vllm", "qwen2_5_omni", "qwen3_omni"):
        av, blind = report[f"{model}/avbench"], report[f"{model}/avbench_blind"]
        vid = av["item_id"].split(".")[0]
        video, audio = folder / "media" / f"{vid}.mp4", folder / "media" / f"{vid}.wav"
        assert [c["type"] for c in av["api"]] == ["video_url", "audio_url", "text"]
        assert [c["type"] for c in av["local"]] == ["video", "audio", "text"]
        assert av["local"][0]["value"] == str(video) and av["visual"] == [str(video)]
        if model in ("openai", "async_openai", "vllm"):  # a remote server reads the sound inline
            assert av["api"][1]["url"].startswith("data:audio/wav;base64,")
        else:  # the omni classes read the WAV file (qwen_omni_utils loads it)
            assert av["local"][1]["value"] == str(audio)
        assert [c["type"] for c in blind["api"]] == ["text"] and blind["visual"] == []
