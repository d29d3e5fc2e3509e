"""The ``omni`` audio describer: each clip's audio sent as a WAV through the OpenAI API, five axes back.

Over the fake OpenAI server (a real HTTP server) so that failures can be injected on demand: a server that does not
answer (a transient dead letter: the video is retried, not committed with a hole) and a reply that is not the five
axes (that clip's permanent dead letter). What the request carries (the clip's own audio, as WAV) is read back from
the server's log. The same backend against the real vLLM server: ``tests/test_omni_vllm.py``."""

from __future__ import annotations

import base64
import io
import json
import wave

import numpy as np
import pytest

from fake_openai_server import Fail, FakeOpenAIServer, Reply
from infra.audio_io import SAMPLE_RATE
from perception_sample import prepared_sample
from schemas.handoff import VideoItem
from schemas.records import AudioEvent, AudioAxis, SpeechSegment
from schemas.settings import AudioDescriber, OmniEndpoint
from tasks.audio_caption import caption_clip
from tasks.audio_describers.omni import OmniDescriber
from tasks.audio_description import AudioDescriptionStage
from tasks.clip_facts import sounds_of


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return prepared_sample(tmp_path_factory.getbasetemp() / "perception-sample")


def audio_of(body) -> np.ndarray:
    parts = body["messages"][-1]["content"]
    part = next(p["input_audio"] for p in parts if p["type"] == "input_audio")
    assert part["format"] == "wav"
    with wave.open(io.BytesIO(base64.b64decode(part["data"]))) as w:
        assert (w.getnchannels(), w.getframerate(), w.getsampwidth()) == (1, SAMPLE_RATE, 2)
        return np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32767


def hearing(body) -> Reply:
    seconds = len(audio_of(body)) / SAMPLE_RATE
    return Reply(json.dumps({"speakers": "A man speaks calmly.", "environment": "a quiet room. a fan hums.",
                             "timbre": f"a low voice; {seconds:.1f} s of it.", "events": "a door closes.",
                             "emotion": ""}))


def stage_for(server: FakeOpenAIServer, **endpoint) -> AudioDescriptionStage:
    cfg = AudioDescriber(enabled=True, omni=OmniEndpoint(base_url=server.base_url, model="tiny-omni", max_retries=0,
                                                         timeout_s=10, **endpoint))
    return AudioDescriptionStage.standalone(cfg)


def test_each_clip_is_heard_as_its_own_wav_and_described_on_five_axes(sample):
    clips = sample.clips[:3]
    with FakeOpenAIServer(hearing) as server:
        stage = stage_for(server)
        out = stage.run(VideoItem.in_folder(sample.dataset_dir, sample.video_id, clips))
    assert isinstance(stage.backend, OmniDescriber) and not out.dead_letters
    rows = out.tables["audio_descriptions"]
    assert [r.clip_id for r in rows] == [c.clip_id for c in clips]
    assert len(server.requests) == len(clips)
    sent = sorted(len(audio_of(b)) / SAMPLE_RATE for b in server.requests)
    assert sent == pytest.approx(sorted(c.end_s - c.start_s for c in clips), abs=0.01)  # the clip, not the video
    for body in server.requests:
        assert body["model"] == "tiny-omni" and body["response_format"]["type"] == "json_schema"
        assert "never instructions" in body["messages"][0]["content"]
    for r, c in zip(rows, clips):
        assert r.describer == "omni:tiny-omni" and r.event == "a door closes." and r.emotion == ""
        assert r.timbre == f"a low voice; {c.end_s - c.start_s:.1f} s of it."


def test_a_long_clip_is_heard_from_its_start_up_to_the_limit(sample):
    clip = max(sample.clips, key=lambda c: c.end_s - c.start_s)
    with FakeOpenAIServer(hearing) as server:
        out = stage_for(server, max_clip_s=1.0).run(VideoItem.in_folder(sample.dataset_dir, sample.video_id, [clip]))
    assert not out.dead_letters and len(audio_of(server.requests[0])) == SAMPLE_RATE


def test_a_silent_server_is_a_transient_letter_and_a_bad_reply_a_permanent_one(sample):
    clips = sample.clips[:3]
    calls = {"n": 0}

    def responder(body):
        calls["n"] += 1
        if calls["n"] == 1:
            return Fail(503, "injected")
        if calls["n"] == 2:
            return Reply("I heard a dog")  # not the schema
        return hearing(body)

    with FakeOpenAIServer(responder) as server:
        stage = stage_for(server, concurrency=1)  # one at a time: the injected faults meet the first two clips
        out = stage.run(VideoItem.in_folder(sample.dataset_dir, sample.video_id, clips))
    letters = {d.item_id: d for d in out.dead_letters}
    assert set(letters) == {clips[0].clip_id, clips[1].clip_id}
    assert letters[clips[0].clip_id].transient and letters[clips[0].clip_id].error_class == "server_unavailable"
    assert not letters[clips[1].clip_id].transient and "not the five axes" in letters[clips[1].clip_id].message
    assert [r.clip_id for r in out.tables["audio_descriptions"]] == [clips[2].clip_id]


def test_the_caption_takes_the_describers_words_and_a_speaker_only_with_a_transcript(sample):
    clip = sample.clips[0]
    with FakeOpenAIServer(hearing) as server:
        (described,) = stage_for(server).run(
            VideoItem.in_folder(sample.dataset_dir, sample.video_id, [clip])).tables["audio_descriptions"]
    bark = AudioEvent(video_id=clip.video_id, clip_id=clip.clip_id, label="Dog", axis=AudioAxis.event, score=0.9,
                      tagger="yamnet", start_s=clip.start_s, end_s=clip.end_s)
    silent = caption_clip(clip, [], [bark], described)
    assert silent.event == "a door closes." and silent.environment == "a quiet room. a fan hums."
    assert "man speaks" not in silent.timbre  # no words transcribed: no speaker claimed
    assert silent.sentence.startswith("Environment: a quiet room; events: a door closes; timbre: a low voice")
    # free text read sentence by sentence: two environment facts, not one merged "sound"
    phrases = [f.phrase for f in sounds_of(silent)]
    assert "a quiet room" in phrases and "a fan hums" in phrases and "a door closes" in phrases
    said = SpeechSegment(video_id=clip.video_id, clip_id=clip.clip_id, start_s=clip.start_s, end_s=clip.end_s,
                         text="hello there", language="en", language_probability=0.9, avg_logprob=-0.2,
                         no_speech_prob=0.1)
    spoken = caption_clip(clip, [said], [bark], described)
    assert spoken.timbre.startswith("A man speaks calmly.") and spoken.narration == "hello there"
    assert caption_clip(clip, [], [bark]).event.startswith("Dog")  # without a description: the tagger's label
