"""The perception stages as real Ray actors: each model is loaded once per actor across many clips and videos,
the actors hold the resources their section declares, and a bad video becomes dead letters without killing them.
And the pipeline's own batch path (``flows.video_pipeline.run_batch``) after a permanent ASR failure."""

from __future__ import annotations

import os

import pytest

from schemas.commit import committed
from flows.report import RunStats
from flows.video_pipeline import RunStages, run_batch
from infra.errors import PermanentError
from infra.stage import StageContext
from perception_sample import prepared_sample
from schemas.handoff import StageResult, VideoItem
from schemas.records import AudioCaption, Clip, DeadLetter, StageName, clip_id
from schemas.settings import Resources, load_settings
from schemas.shards import read_records
from tasks.asr import ASRStage
from tasks.audio_caption import AudioCaptionStage
from tasks.audio_events import AudioEventsStage
from tasks.visual_caption import VisualCaptionStage

ray = pytest.importorskip("ray")

ACTOR_CPUS = 0.5


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return prepared_sample(tmp_path_factory.getbasetemp() / "perception-sample")


@pytest.fixture(scope="module")
def local_ray():
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)  # never a stale cluster
    yield
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def settings():
    cfg = load_settings("local-cpu")
    small = Resources(num_cpus=ACTOR_CPUS)
    # whisper-tiny.en keeps the actor test quick; the load-once property does not depend on the model size.
    return cfg.model_copy(update={
        "asr": cfg.asr.model_copy(update={"model": "whisper-tiny.en", "beam_size": 1, "resources": small}),
        "audio_tagger": cfg.audio_tagger.model_copy(update={"resources": small}),
        "visual_captioner": cfg.visual_captioner.model_copy(update={"resources": small})})


def test_models_load_once_per_actor_across_videos_and_clips(local_ray, settings, sample):
    context = StageContext(settings)
    stages = (ASRStage, AudioEventsStage, VisualCaptionStage)
    actors = [stage.in_ray(settings).remote(stage, context) for stage in stages]
    first_stats = ray.get([a.stats.remote() for a in actors])
    assert [s.model_loads for s in first_stats] == [1, 1, 1]
    assert [s.stage for s in first_stats] == ["asr", "audio_events", "visual_caption"]
    assert all(s.setup_s > 0 and s.model for s in first_stats)
    assert all(s.node != "local" for s in first_stats)  # each knows the Ray node it runs on
    # the three actors hold what their section declares, in their own processes
    assert abs(ray.available_resources().get("CPU", 0.0) - (2 - 3 * ACTOR_CPUS)) < 1e-6
    pids = {s.pid for s in first_stats}
    assert len(pids) == 3 and os.getpid() not in pids

    few = sample.clips[:2]  # keyframe OCR is the slow part: the visual actor gets two clips per video
    missing_vid = "local-missing0000"
    missing = [Clip(clip_id=clip_id(missing_vid, 0), video_id=missing_vid, index=0, start_s=0.0, end_s=4.0,
                    keyframe_times=[2.0])]
    jobs = [(sample.video_id, sample.clips, few), (missing_vid, missing, missing), (sample.video_id, sample.clips, few)]
    refs = [tuple(actor.run.remote(VideoItem.in_folder(sample.dataset_dir, vid, clips))
                  for actor, clips in zip(actors, (clips, clips, vclips))) for vid, clips, vclips in jobs]
    outputs: list[tuple[StageResult, ...]] = [tuple(ray.get(list(r))) for r in refs]

    stats = ray.get([a.stats.remote() for a in actors])
    assert [s.model_loads for s in stats] == [1, 1, 1]
    assert [s.pid for s in stats] == [s.pid for s in first_stats]
    assert [s.videos for s in stats] == [3, 3, 3]
    n = len(sample.clips)
    assert [s.clips for s in stats] == [2 * n + 1, 2 * n + 1, 2 * len(few) + 1]
    assert all(s.seconds > 0 for s in stats)

    (asr1, ev1, vis1), (asr_bad, ev_bad, vis_bad), (asr2, ev2, vis2) = outputs
    speech = asr1.tables["speech"]
    assert speech and speech == asr2.tables["speech"] and ev1.tables["audio_events"] == ev2.tables["audio_events"]
    assert {c.clip_id for c in vis1.tables["visual_captions"]} == {c.clip_id for c in few}
    item = VideoItem.in_folder(sample.dataset_dir, sample.video_id, sample.clips, speech=speech,
                               audio_events=ev1.tables["audio_events"])
    captions = AudioCaptionStage.standalone(settings=settings).run(item).tables["audio_captions"]
    assert [c.clip_id for c in captions] == [c.clip_id for c in sample.clips]
    assert not (asr1.dead_letters or ev1.dead_letters or vis1.dead_letters) and "en" in asr1.tallies["language"]
    narrated = {s.clip_id for s in speech}
    assert all(c.narration for c in captions if c.clip_id in narrated)

    assert asr_bad.failed and ev_bad.failed and not vis_bad.failed  # a clip's keyframe, not the whole video
    assert not asr_bad.tables and not vis_bad.tables.get("visual_captions")
    letters = asr_bad.dead_letters + ev_bad.dead_letters + vis_bad.dead_letters
    assert sorted((d.stage, d.error_class) for d in letters) == [
        ("asr", "audio_missing"), ("audio_events", "audio_missing"), ("visual_caption", "keyframe_unreadable")]
    assert all(d.video_id == missing_vid and d.source_id is None for d in letters)  # the flow stamps the source
    for actor in actors:
        ray.kill(actor)


class ASRThatFailsPermanently:
    """Injected fault: the ASR of every video fails for good (the real model cannot be made to on demand).

    It stands where the run's ASR actors stood (holding them, killed, so that the run counts its ASR replicas as
    there) and hands back what a failed ``ASRStage.run`` returns.
    """

    def __init__(self, killed: list):
        self.actors = killed

    def submit(self, item: VideoItem, media_ref=None):
        error = PermanentError(StageName.asr, item.video_id, "decoder crashed on this audio", error_class="asr_crashed")
        return ray.put(StageResult(video_id=item.video_id, dead_letters=[error.to_dead_letter()]))


def test_pipeline_commits_no_audio_captions_when_asr_failed(local_ray, settings, sample, tmp_path):
    """The batch path itself (media task, real tagger and captioner actors, fusion, QA, commit): a video whose ASR
    failed gets no audio captions that claim "no narration", no fusion and no QA (the stages that read what the
    failed stage makes are skipped); its dead letter names the source and the video."""
    source = str(sample.dataset_dir.parent / "samples" / sample.truth.file)
    dataset = tmp_path / "dataset"
    run = RunStages.create(settings, dataset, llm_cache=None)
    for actor in run.actors[StageName.asr].actors:
        ray.kill(actor)
    run.actors[StageName.asr] = ASRThatFailsPermanently(run.actors[StageName.asr].actors)
    stats = RunStats()
    # No clip gets an audio caption, so fusion and QA are skipped: no LLM server is needed.
    report = run_batch([source], run, stats)
    try:
        assert len(report.committed) == 1 and not report.failed
        (video_id,) = report.committed
        assert committed(dataset)  # the marker landed: the failure is permanent, so the video is not retried
        assert read_records(dataset, "audio_captions", AudioCaption) == []
        letters = read_records(dataset, "dead_letter", DeadLetter)
        asr = [d for d in letters if d.stage == StageName.asr]
        assert [(d.error_class, d.source_id, d.video_id) for d in asr] == [("asr_crashed", source, video_id)]
        assert all(d.source_id == source and d.video_id == video_id for d in letters)
        assert {name: stats.stages[name].skipped for name in ("audio_caption", "fuse", "qa")} == \
            {"audio_caption": 1, "fuse": 1, "qa": 1}
        assert stats.stages["visual_caption"].rows["visual_captions"] > 0 and stats.stages["asr"].failed == 1
    finally:
        for pool in run.actors.values():
            for actor in pool.actors:
                ray.kill(actor)
