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
    assert "| 5 | 1 | 0 | 3 | 1 | 10 |" in run_markdown(run, Path("out/x"), "local-cpu")  # duplicates: 0


def test_perception_counts_add_up_and_are_reported():
    run = RunStats()
    run.add_batch(RunStats(audio_events=Counter(Music=3, Speech=2), objects=Counter(person=4), keyframes=6,
                           keyframes_with_objects=4))
    run.add_batch(RunStats(audio_events=Counter(Music=1), objects=Counter(dog=1, person=1), keyframes=3,
                           keyframes_with_objects=2))
    assert run.audio_events == Counter(Music=4, Speech=2) and run.objects == Counter(person=5, dog=1)
    md = run_markdown(run, Path("out/x"), "local-cpu")
    assert "| audio events | 6 | Music (4), Speech (2) |" in md
    assert "| keyframes with a COCO object | 6 of 9 | person (5), dog (1) |" in md


def test_the_card_names_the_real_models_and_what_the_rows_say(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from flows.report import models_table
    from schemas.settings import load_settings

    (tmp_path / "audio_events").mkdir()
    pq.write_table(pa.table({"tagger": ["yamnet-audioset521-w8a8+signal-analysis-v1"] * 2}),
                   tmp_path / "audio_events" / "audio_events-local-a-00000.parquet")
    rows = {r[0]: r for r in models_table(tmp_path, load_settings("local-cpu"))}
    assert "YAMNet, AudioSet 521 classes" in rows["audio events"][2]
    assert rows["audio events"][3] == "`yamnet-audioset521-w8a8+signal-analysis-v1`"
    assert "SSD MobileNet v2 COCO" in rows["keyframe captions"][2] and rows["keyframe captions"][3] == "-"
    assert "Whisper `whisper-base`" in rows["ASR"][2]
    gpu = {r[0]: r for r in models_table(tmp_path, load_settings("gpu-cluster"))}
    assert "MIT/ast-finetuned-audioset" in gpu["audio events"][2] and "CoCa" in gpu["keyframe captions"][2]


def test_cost_per_accepted_item_and_check_pass_rates():
    run = RunStats()
    batch = RunStats(descriptions=8, qa_by_type=Counter(global_av_inference=2, time_point_anchored=2), qa_drafts=10,
                     llm_fuse=Counter(requests_sent=8, prompt_tokens=8000, completion_tokens=800),
                     llm_qa=Counter(requests_sent=12, prompt_tokens=24000, completion_tokens=2400),
                     qa_check_failures=Counter(involves_seen_and_heard=5, names_only_what_the_timeline_has=2))
    batch.add_seconds({"fuse": 40.0, "qa": 100.0})
    run.add_batch(batch)
    fuse, qa = run.cost_rows()
    assert (fuse["accepted"], fuse["prompt_per_accepted"], fuse["completion_per_accepted"],
            fuse["seconds_per_accepted"]) == (8, 1000.0, 100.0, 5.0)
    assert (qa["accepted"], qa["prompt_per_accepted"], qa["completion_per_accepted"]) == (4, 6000.0, 600.0)
    assert run.check_rows()[0] == {"check": "involves_seen_and_heard", "rejected": 5, "pass_rate": 0.5}
    md = run_markdown(run, Path("out/x"), "local-cpu")
    assert "| qa | 12 | 24000 | 2400 | 100.0 | 4 | 6000 | 600 | 25 |" in md
    assert "QA: 4 of 10 phrased questions accepted." in md
    assert run.cost_line().startswith("fuse: 8 accepted, 1000 prompt + 100 generated tokens and 5.0 s each")
    empty = RunStats()
    assert "none accepted" in empty.cost_line() and "| fuse | 0 | 0 | 0 | 0.0 | 0 | - | - | - |" in \
        run_markdown(empty, Path("out/x"), "local-cpu")
