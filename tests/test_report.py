"""Run statistics: batches run concurrently with their own stats, and the flow adds them up."""

from collections import Counter
from pathlib import Path

from flows.report import RunStats, run_markdown


def test_batches_add_up_into_the_run():
    run = RunStats(sources=5, skipped_committed=1)
    a = RunStats(videos_ok=2, clips=7, qa_by_type=Counter(global_av_inference=2), llm=Counter(requests_sent=9))
    a.add_seconds({"asr": 1.5, "fuse": 2.0})
    b = RunStats(videos_ok=1, videos_failed=1, clips=3, dead_letters_by_stage=Counter(probe=1),
                 llm=Counter(requests_sent=4, cache_hits=2))
    b.add_seconds({"asr": 0.5})
    run.add_batch(a)
    run.add_batch(b)
    assert (run.sources, run.skipped_committed, run.videos_ok, run.videos_failed, run.clips) == (5, 1, 3, 1, 10)
    assert run.llm == Counter(requests_sent=13, cache_hits=2)
    assert run.seconds_by_stage == Counter(asr=2.0, fuse=2.0)
    assert run.dead_letters_by_stage == Counter(probe=1) and run.qa_by_type == Counter(global_av_inference=2)
    assert "| 5 | 1 | 3 | 1 | 10 |" in run_markdown(run, Path("out/x"), "local-cpu")
