"""The perception workers as real Ray actors: each model is loaded once per actor across many clips and videos,
the actors hold the resources their config declares, and a bad video becomes dead letters without killing them.
And the pipeline's own batch path (``flows.video_pipeline.run_batch``) after a permanent ASR failure."""

from __future__ import annotations

import os

import pytest

from flows.commit import committed
from flows.report import RunStats
from flows.video_pipeline import PerceptionPool, _RoundRobin, run_batch
from infra.errors import PermanentError
from perception_sample import prepared_sample
from schemas.handoff import ASROutput, VideoWork
from schemas.records import AudioCaption, Clip, DeadLetter, Stage, clip_id
from schemas.settings import Resources, load_settings
from schemas.shards import read_records
from tasks.asr import ASRWorker
from tasks.audio_caption import caption_video
from tasks.audio_events import AudioEventsWorker
from tasks.visual_caption import VisualCaptionWorker

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
def sections():
    cfg = load_settings("local-cpu")
    small = Resources(num_cpus=ACTOR_CPUS)
    # whisper-tiny.en keeps the actor test quick; the load-once property does not depend on the model size.
    return (cfg.asr.model_copy(update={"model": "whisper-tiny.en", "beam_size": 1, "resources": small}),
            cfg.audio_tagger.model_copy(update={"resources": small}),
            cfg.visual_captioner.model_copy(update={"resources": small}))


def test_models_load_once_per_actor_across_videos_and_clips(local_ray, sections, sample):
    asr_cfg, tagger_cfg, visual_cfg = sections
    actors = [ASRWorker.in_ray(asr_cfg).remote(asr_cfg), AudioEventsWorker.in_ray(tagger_cfg).remote(tagger_cfg),
              VisualCaptionWorker.in_ray(visual_cfg).remote(visual_cfg)]
    first_stats = ray.get([a.stats.remote() for a in actors])
    assert [s.model_loads for s in first_stats] == [1, 1, 1]
    assert [s.stage for s in first_stats] == ["asr", "audio_events", "visual_caption"]
    assert all(s.setup_s > 0 and s.model for s in first_stats)
    # the three actors hold what their config declares, in their own processes
    assert abs(ray.available_resources().get("CPU", 0.0) - (2 - 3 * ACTOR_CPUS)) < 1e-6
    pids = {s.pid for s in first_stats}
    assert len(pids) == 3 and os.getpid() not in pids

    dataset = str(sample.dataset_dir)
    few = sample.clips[:2]  # keyframe OCR is the slow part: the visual actor gets two clips per video
    missing_vid = "local-missing0000"
    missing = [Clip(clip_id=clip_id(missing_vid, 0), video_id=missing_vid, index=0, start_s=0.0, end_s=4.0,
                    keyframe_times=[2.0])]
    jobs = [(sample.video_id, sample.clips, few), (missing_vid, missing, missing), (sample.video_id, sample.clips, few)]
    refs = [tuple(actor.run.remote(VideoWork(dataset_dir=dataset, video_id=vid, clips=clips))
                  for actor, clips in zip(actors, (clips, clips, vclips))) for vid, clips, vclips in jobs]
    outputs = [ray.get(list(r)) for r in refs]

    stats = ray.get([a.stats.remote() for a in actors])
    assert [s.model_loads for s in stats] == [1, 1, 1]
    assert [s.pid for s in stats] == [s.pid for s in first_stats]
    assert [s.videos for s in stats] == [3, 3, 3]
    n = len(sample.clips)
    assert [s.clips for s in stats] == [2 * n + 1, 2 * n + 1, 2 * len(few) + 1]
    assert all(s.seconds > 0 for s in stats)

    (asr1, ev1, vis1), (asr_bad, ev_bad, vis_bad), (asr2, ev2, vis2) = outputs
    assert asr1.speech and asr1.speech == asr2.speech and ev1.events == ev2.events
    assert {c.clip_id for c in vis1.captions} == {c.clip_id for c in few}
    captions = caption_video(sample.clips, asr1, ev1)
    assert [c.clip_id for c in captions] == [c.clip_id for c in sample.clips]
    assert not (asr1.dead_letters or ev1.dead_letters or vis1.dead_letters) and asr1.language == "en"
    narrated = {s.clip_id for s in asr1.speech}
    assert all(c.narration for c in captions if c.clip_id in narrated)

    assert caption_video(missing, asr_bad, ev_bad) == [] and not asr_bad.speech and not vis_bad.captions
    letters = asr_bad.dead_letters + ev_bad.dead_letters + vis_bad.dead_letters
    assert sorted((d.stage.value, d.error_class) for d in letters) == [
        ("asr", "audio_missing"), ("audio_events", "audio_missing"), ("visual_caption", "keyframe_unreadable")]
    assert all(d.video_id == missing_vid and d.source_id is None for d in letters)  # the flow stamps the source
    for actor in actors:
        ray.kill(actor)


class ASRThatFailsPermanently:
    """Injected fault: the ASR of every video fails for good (the real model cannot be made to on demand).

    It stands where the pool's ASR actors stand and hands back what a failed ``ASRWorker.run`` returns.
    """

    actors: list = []

    def submit(self, work: VideoWork, media_ref=None):
        error = PermanentError(Stage.asr, work.video_id, "decoder crashed on this audio", error_class="asr_crashed")
        return ray.put(ASROutput(video_id=work.video_id, dead_letters=[error.to_dead_letter()]))


def test_pipeline_commits_no_audio_captions_when_asr_failed(local_ray, sections, sample, tmp_path):
    """The batch path itself (media task, real tagger and captioner actors, fusion, QA, commit): a video whose ASR
    failed gets no audio captions that claim "no narration"; its dead letter names the source and the video."""
    _, tagger_cfg, visual_cfg = sections
    cfg = load_settings("local-cpu")
    real = PerceptionPool.create(cfg.model_copy(update={"audio_tagger": tagger_cfg, "visual_captioner": visual_cfg}))
    pool = PerceptionPool(asr=ASRThatFailsPermanently(), audio_events=real.audio_events,
                          visual=_RoundRobin(real.visual.actors))
    for actor in real.asr.actors:
        ray.kill(actor)
    source = str(sample.dataset_dir.parent / "samples" / sample.truth.file)
    dataset = tmp_path / "dataset"
    # No clip has both captions, so fusion and QA send no request: no LLM server is needed.
    report = run_batch([source], dataset, cfg, pool, llm_cache=None, qa_options=cfg.qa, stats=RunStats())
    try:
        assert len(report.committed) == 1 and not report.failed
        (video_id,) = report.committed
        assert committed(dataset)  # the marker landed: the failure is permanent, so the video is not retried
        assert read_records(dataset, "audio_captions", AudioCaption) == []
        letters = read_records(dataset, "dead_letter", DeadLetter)
        asr = [d for d in letters if d.stage == Stage.asr]
        assert [(d.error_class, d.source_id, d.video_id) for d in asr] == [("asr_crashed", source, video_id)]
        assert all(d.source_id == source and d.video_id == video_id for d in letters)
    finally:
        for actor in real.audio_events.actors + real.visual.actors:
            ray.kill(actor)
