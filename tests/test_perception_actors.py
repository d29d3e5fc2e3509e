"""The perception workers as real Ray actors: each model is loaded once per actor across many clips and videos,
the actors hold the resources their config declares, and a bad video becomes dead letters without killing them."""

from __future__ import annotations

import os

import pytest

from perception_sample import prepared_sample
from schemas.records import Clip, clip_id
from schemas.settings import Resources, load_settings
from tasks.asr import asr_actor
from tasks.audio_events import audio_events_actor
from tasks.perception import assemble
from tasks.visual_caption import visual_caption_actor

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
    actors = [asr_actor(asr_cfg).remote(asr_cfg), audio_events_actor(tagger_cfg).remote(tagger_cfg),
              visual_caption_actor(visual_cfg).remote(visual_cfg)]
    first_stats = ray.get([a.stats.remote() for a in actors])
    assert [s["model_loads"] for s in first_stats] == [1, 1, 1]
    # the three actors hold what their config declares, in their own processes
    assert abs(ray.available_resources().get("CPU", 0.0) - (2 - 3 * ACTOR_CPUS)) < 1e-6
    pids = {s["pid"] for s in first_stats}
    assert len(pids) == 3 and os.getpid() not in pids

    dataset = str(sample.dataset_dir)
    few = sample.clips[:2]  # keyframe OCR is the slow part: the visual actor gets two clips per video
    missing_vid = "local-missing0000"
    missing = [Clip(clip_id=clip_id(missing_vid, 0), video_id=missing_vid, index=0, start_s=0.0, end_s=4.0,
                    keyframe_times=[2.0])]
    jobs = [(sample.video_id, sample.clips, few), (missing_vid, missing, missing), (sample.video_id, sample.clips, few)]
    refs = [(actors[0].process.remote(dataset, vid, clips), actors[1].process.remote(dataset, vid, clips),
             actors[2].process.remote(dataset, vid, vclips)) for vid, clips, vclips in jobs]
    outputs = [ray.get(list(r)) for r in refs]

    stats = ray.get([a.stats.remote() for a in actors])
    assert [s["model_loads"] for s in stats] == [1, 1, 1]
    assert [s["pid"] for s in stats] == [s["pid"] for s in first_stats]
    assert [s["videos"] for s in stats] == [3, 3, 3]
    n = len(sample.clips)
    assert [s["clips"] for s in stats] == [2 * n + 1, 2 * n + 1, 2 * len(few) + 1]

    (asr1, ev1, vis1), (asr_bad, ev_bad, vis_bad), (asr2, ev2, vis2) = outputs
    assert asr1.speech and asr1.speech == asr2.speech and ev1.events == ev2.events
    assert {c.clip_id for c in vis1.captions} == {c.clip_id for c in few}
    perceived = assemble(sample.clips, asr1, ev1, vis1)
    assert [c.clip_id for c in perceived.audio_captions] == [c.clip_id for c in sample.clips]
    assert not perceived.dead_letters and perceived.language == "en"
    narrated = {s.clip_id for s in asr1.speech}
    assert all(c.narration for c in perceived.audio_captions if c.clip_id in narrated)

    bad = assemble(missing, asr_bad, ev_bad, vis_bad)
    assert bad.audio_captions == [] and not bad.speech and not bad.visual_captions
    assert sorted((d.stage.value, d.error_class) for d in bad.dead_letters) == [
        ("asr", "audio_missing"), ("audio_events", "audio_missing"), ("visual_caption", "keyframe_unreadable")]
    for actor in actors:
        ray.kill(actor)
