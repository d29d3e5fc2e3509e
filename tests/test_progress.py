"""Live progress: the flow's board of videos and batch stages, the real vLLM server's metrics, and the table."""

from __future__ import annotations

import threading
import time

import pytest
from rich.console import Console

from flows import progress


def test_the_board_counts_videos_and_tracks_each_batch_across_threads(tmp_path):
    board = progress.ProgressBoard(tmp_path, total=12, skipped=3)
    assert progress.read_progress(tmp_path)["total"] == 12

    def batch(n: int) -> None:
        for what in ("media: 0/4 videos decoded and cut", "fusion: 9 clips of 4 videos", "QA: 4 videos"):
            board.stage(n, what)
        board.batch_done(n, committed=3, failed=1)

    threads = [threading.Thread(target=batch, args=(n,)) for n in (1, 2, 3)]
    board.stage(4, "queued")
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    state = progress.read_progress(tmp_path)
    assert (state["committed"], state["failed"], state["skipped_committed"]) == (9, 3, 3)
    assert state["batches"] == {"4": "queued"} and not state["finished"]
    board.finish()
    assert progress.read_progress(tmp_path)["finished"] and not list(tmp_path.glob(".*.tmp"))


def test_the_table_shows_videos_batches_and_server_rates(tmp_path):
    board = progress.ProgressBoard(tmp_path, total=5)
    board.stage(2, "fusion: 9 clips of 4 videos")
    before = progress.ServerSample(100.0, 4, 2, 10_000, 500)
    now = progress.ServerSample(104.0, 3, 1, 12_200, 660)
    console = Console(width=120, record=True)
    console.print(progress.progress_table(progress.read_progress(tmp_path), now, before))
    text = console.export_text()
    assert "0/5 done" in text and "batch 2" in text and "fusion: 9 clips of 4 videos" in text
    assert "3 running, 1 waiting; 40.0 generated tok/s, 550 prompt tok/s" in text
    console = Console(width=120, record=True)
    console.print(progress.progress_table(None, None, None))
    text = console.export_text()
    assert "waiting for the flow to start" in text and "not answering" in text


def test_watch_redraws_until_told_to_stop(tmp_path):
    progress.ProgressBoard(tmp_path, total=1)
    calls = []

    def stop() -> bool:
        calls.append(time.time())
        return len(calls) >= 3

    console = Console(width=100, record=True, force_terminal=True)
    progress.watch(tmp_path, "http://127.0.0.1:9/metrics", stop, console=console, refresh_s=0.01)
    assert len(calls) == 3 and "0/1 done" in console.export_text()


def test_watch_into_a_log_prints_lines_not_frames(tmp_path):
    board = progress.ProgressBoard(tmp_path, total=2)
    board.stage(1, "QA: 2 videos, 9 described clips")
    calls = []
    console = Console(width=300, record=True, force_terminal=False)
    progress.watch(tmp_path, None, lambda: calls.append(1) or len(calls) >= 4, console=console, refresh_s=0.01,
                   log_every_s=3600)
    lines = console.export_text().strip().splitlines()
    assert len(lines) == 2  # the first line, then the last when the run ended
    assert lines[0].startswith("videos: 0/2 done") and "batch 1: QA: 2 videos, 9 described clips" in lines[0]


def test_metrics_url_of_the_openai_base():
    assert progress.metrics_url_of("http://127.0.0.1:8000/v1") == "http://127.0.0.1:8000/metrics"
    assert progress.metrics_url_of("http://vllm-head:8000/v1/") == "http://vllm-head:8000/metrics"


@pytest.mark.llm
def test_the_real_server_reports_requests_and_tokens(llm_server):
    from openai import OpenAI

    url = progress.metrics_url_of(llm_server.base_url)
    before = progress.sample_server(url)
    assert before is not None and before.running >= 0 and before.waiting >= 0
    reply = OpenAI(base_url=llm_server.base_url, api_key="EMPTY").chat.completions.create(
        model=llm_server.model, messages=[{"role": "user", "content": "Count from one to five."}], max_tokens=16,
        temperature=0.0)
    after = progress.sample_server(url)
    assert after.generation_tokens - before.generation_tokens >= reply.usage.completion_tokens > 0
    assert after.prompt_tokens - before.prompt_tokens >= reply.usage.prompt_tokens
