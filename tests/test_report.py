"""Run statistics: batches run concurrently with their own stats, and the flow adds them up; the run report and
the card read the pipeline's own list of stages."""

from collections import Counter
from pathlib import Path

from flows.report import RunStats, run_markdown
from infra.pipeline import Pipeline
from schemas.handoff import StageResult, StageStats
from schemas.settings import load_settings

CFG = load_settings("local-cpu")
PIPELINE = Pipeline.from_settings(CFG)


def stage_stats(**results: list[StageResult]) -> dict[str, StageStats]:
    out = {}
    for name, rs in results.items():
        out[name] = StageStats()
        for r in rs:
            out[name].add_result(r)
    return out


def test_batches_add_up_into_the_run():
    run = RunStats(sources=5, skipped_committed=1)
    a = RunStats(videos_ok=2, clips=7, stages=stage_stats(
        asr=[StageResult(seconds=1.5)],
        qa=[StageResult(tallies={"type": {"global_av_inference": 2}}, counts={"requests_sent": 9}, seconds=2.0)]))
    b = RunStats(videos_ok=1, videos_failed=1, clips=3, video_seconds=30.0, dead_letters_by_stage=Counter(probe=1),
                 stages=stage_stats(asr=[StageResult(seconds=0.5, cpu_seconds=0.9)],
                                    fuse=[StageResult(counts={"requests_sent": 4, "cache_hits": 2})]))
    run.add_batch(a)
    run.add_batch(b)
    assert (run.sources, run.skipped_committed, run.videos_ok, run.videos_failed, run.clips) == (5, 1, 3, 1, 10)
    assert run.llm == Counter(requests_sent=13, cache_hits=2)
    assert run.seconds_by_stage == Counter(asr=2.0, qa=2.0, fuse=0.0)
    assert run.cpu_seconds_by_stage == Counter(asr=0.9, qa=0.0, fuse=0.0) and run.video_seconds == 30.0
    assert run.dead_letters_by_stage == Counter(probe=1) and run.qa_by_type == Counter(global_av_inference=2)
    md = run_markdown(run, Path("out/x"), CFG, PIPELINE)
    assert "| 5 | 1 | 0 | 3 | 1 | 10 |" in md  # duplicates: 0
    # a row per stage of the pipeline, in its order, with where it runs and its backend
    rows = [line.split(" | ")[0].strip("| ") for line in md.splitlines() if line.startswith("| ") and
            line.split(" | ")[1:2] and line.split(" | ")[1] in ("media", "driver", "actor", "llm")]
    assert rows == PIPELINE.names
    assert "| asr | actor | faster-whisper | 2 | 0 | 0 | speech 0 | 0 | 2.0 |" in md


def test_perception_counts_add_up_and_are_reported():
    run = RunStats()
    run.add_batch(RunStats(stages=stage_stats(
        audio_events=[StageResult(tallies={"label": {"Music": 3, "Speech": 2}})],
        visual_caption=[StageResult(tallies={"object": {"person": 4}},
                                    counts={"keyframes": 6, "keyframes_with_objects": 4})])))
    run.add_batch(RunStats(stages=stage_stats(
        audio_events=[StageResult(tallies={"label": {"Music": 1}})],
        visual_caption=[StageResult(tallies={"object": {"dog": 1, "person": 1}},
                                    counts={"keyframes": 3, "keyframes_with_objects": 2})])))
    assert run.stages["audio_events"].tally("label") == Counter(Music=4, Speech=2)
    assert run.stages["visual_caption"].tally("object") == Counter(person=5, dog=1)
    md = run_markdown(run, Path("out/x"), CFG, PIPELINE)
    assert "Audio events: 6; most frequent: Music (4), Speech (2)." in md
    assert "Keyframes with a COCO object: 6 of 9; most frequent: person (5), dog (1)." in md


def test_the_card_names_the_real_models_and_what_the_rows_say(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from flows.report import models_table

    (tmp_path / "audio_events").mkdir()
    pq.write_table(pa.table({"tagger": ["yamnet-audioset521-w8a8+signal-analysis-v1"] * 2}),
                   tmp_path / "audio_events" / "audio_events-local-a-00000.parquet")
    rows = {r[0]: r for r in models_table(tmp_path, CFG, PIPELINE)}
    assert "YAMNet, AudioSet 521 classes" in rows["audio events"][2]
    assert rows["audio events"][3] == "`yamnet-audioset521-w8a8+signal-analysis-v1`"
    assert "SSD MobileNet v2 COCO" in rows["keyframe captions"][2] and rows["keyframe captions"][3] == "-"
    assert "Whisper `whisper-base`" in rows["ASR"][2]
    assert rows["fusion"][2] == rows["QA"][2] == "`qwen2.5-0.5b-instruct`" and rows["scene cuts"][1] == "`adaptive`"
    gpu_cfg = load_settings("gpu-cluster")
    gpu = {r[0]: r for r in models_table(tmp_path, gpu_cfg, Pipeline.from_settings(gpu_cfg))}
    assert "MIT/ast-finetuned-audioset" in gpu["audio events"][2]
    assert "VLM `qwen2.5-vl-7b-instruct`" in gpu["keyframe captions"][2]
    assert "audio-language model `qwen2.5-omni-7b`" in gpu["audio descriptions"][2]


def test_cost_per_accepted_item_and_check_pass_rates():
    run = RunStats()
    fused = [StageResult(tables={"descriptions": [None] * 8})]
    asked = [StageResult(tables={"qa": [None] * 4}, counts={"drafts": 10},
                         tallies={"type": {"global_av_inference": 2, "time_point_anchored": 2},
                                  "check_failures": {"involves_seen_and_heard": 5,
                                                     "names_only_what_the_timeline_has": 2}})]
    batch = RunStats(stages=stage_stats(fuse=fused, qa=asked))
    batch.stages["fuse"].add_counts({"requests_sent": 8, "prompt_tokens": 8000, "completion_tokens": 800})
    batch.stages["qa"].add_counts({"requests_sent": 12, "prompt_tokens": 24000, "completion_tokens": 2400})
    batch.stages["fuse"].seconds, batch.stages["qa"].seconds = 40.0, 100.0
    run.add_batch(batch)
    fuse, qa = run.cost_rows()
    assert (fuse["accepted"], fuse["prompt_per_accepted"], fuse["completion_per_accepted"],
            fuse["seconds_per_accepted"]) == (8, 1000.0, 100.0, 5.0)
    assert (qa["accepted"], qa["prompt_per_accepted"], qa["completion_per_accepted"]) == (4, 6000.0, 600.0)
    md = run_markdown(run, Path("out/x"), CFG, PIPELINE)
    assert "| qa | 12 | 24000 | 2400 | 100.0 | 4 | 6000 | 600 | 25 |" in md
    assert "QA: 4 of 10 phrased questions accepted." in md
    assert "| involves_seen_and_heard | 5 | 0.500 |" in md
    assert run.cost_line().startswith("fuse: 8 accepted, 1000 prompt + 100 generated tokens and 5.0 s each")
    empty = RunStats()
    assert empty.cost_line() == "; no QA drafts" or "no QA drafts" in empty.cost_line()


def test_the_base_counts_a_stages_cpu_with_the_ffmpeg_it_waited_for():
    """A stage's CPU is its process's and its children's over ``process``: most of segmentation's is ffmpeg's."""
    import subprocess

    from infra.stage import Stage
    from schemas.handoff import VideoItem

    class DecodeStage(Stage):
        name, placement = "decode_test", "driver"

        def process(self, item: VideoItem) -> StageResult:
            subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=s=640x360:r=25:d=4",
                            "-f", "null", "-"], check=True)
            return StageResult()

    stage = DecodeStage.standalone(settings=CFG)
    result = stage.run(VideoItem(source="x", work_dir=Path(".")))
    assert result.cpu_seconds > 0.05 and stage.worker_stats().cpu_seconds == result.cpu_seconds
