"""A hand-built ~60 s audio-visual timeline for the fusion/QA tests, and a grounded responder for the fake server.

The timeline: a dog barking and catching a frisbee in a park, a piano played indoors, and a narrated night street.
``grounded_responder`` answers like a careful model would: it reads the JSON data quoted in the prompt and writes
descriptions from its phrases and questions from the cards' drafts, so that replies pass the checks unless a test
makes them fail.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from typing import Any

from fake_openai_server import Reply, instance_of, schema_name_of, schema_of
from schemas.records import (AudioCaption, Clip, ClipDescription, SpeechSegment, Tag, VideoRecord, VisualCaption,
                             clip_id, hms)

VIDEO_ID = "local-parkpiano01"
DURATION_S = 60.0
BOUNDS = [(0.0, 12.4), (12.4, 24.8), (24.8, 37.2), (37.2, 49.6), (49.6, 60.0)]

VISUAL = [
    ["A brown dog runs across green grass in a sunny park.", "A brown dog jumps near a tree in the park."],
    ["A man throws a red frisbee and the dog catches it on the grass."],
    ["A woman sits at a black piano in a bright living room."],
    ["Close-up of hands pressing the white keys of the piano."],
    ["A city street at night with cars and glowing shop signs.", "White text on screen reads 'The end of the day'."],
]
TAGS = [["dog", "park", "grass"], ["frisbee", "dog", "man"], ["piano", "woman", "room"], ["piano", "hands"],
        ["street", "night", "cars"]]
AUDIO = [
    dict(narration="", environment="outdoor park ambience with wind", timbre="high sharp barks",
         event="dog barking, birds chirping", emotion="playful, excited",
         sentence="A dog barks repeatedly while birds chirp in the wind."),
    dict(narration="A man says: Good boy, catch it!", environment="open park", timbre="male voice, cheerful",
         event="dog barking, man shouting", emotion="joyful",
         sentence="A man cheers the dog on as it barks."),
    dict(narration="", environment="quiet indoor room", timbre="warm piano tone", event="piano melody",
         emotion="calm, tender", sentence="A slow piano melody plays in a quiet room."),
    dict(narration="", environment="quiet indoor room", timbre="resonant low piano chords", event="piano chords",
         emotion="melancholic", sentence="Low piano chords ring out slowly."),
    dict(narration="A narrator says: And that is how our day ended.", environment="traffic noise of a street",
         timbre="deep calm male voice", event="cars passing, narration", emotion="reflective",
         sentence="A calm narrator speaks over passing traffic."),
]
SPEECH = {1: [(14.0, 16.2, "Good boy, catch it!")], 4: [(51.0, 54.5, "And that is how our day ended.")]}


def video_record(video_id: str = VIDEO_ID, duration_s: float = DURATION_S) -> VideoRecord:
    return VideoRecord(video_id=video_id, source="tests/park_piano.mp4", extractor="local",
                       media_path=f"media/{video_id}.mp4", duration_s=duration_s, fps=25.0, width=640, height=360,
                       has_audio=True, size_bytes=1_000_000, sha256="0" * 64,
                       acquired_at=datetime(2025, 1, 1, tzinfo=timezone.utc))


def clips(video_id: str = VIDEO_ID) -> list[Clip]:
    return [Clip(clip_id=clip_id(video_id, i), video_id=video_id, index=i, start_s=s, end_s=e,
                 keyframe_times=[round((s + e) / 2, 3)]) for i, (s, e) in enumerate(BOUNDS)]


def visual_captions(video_id: str = VIDEO_ID) -> list[VisualCaption]:
    out = []
    for i, (s, e) in enumerate(BOUNDS):
        for k, text in enumerate(VISUAL[i]):
            tags = [Tag(label=t, score=0.9 - 0.1 * j) for j, t in enumerate(TAGS[i])]
            out.append(VisualCaption(video_id=video_id, clip_id=clip_id(video_id, i),
                                     t=round(s + (k + 1) * (e - s) / 3, 3), text=text, tags=tags,
                                     captioner="hand-written"))
    return out


def audio_captions(video_id: str = VIDEO_ID) -> list[AudioCaption]:
    return [AudioCaption(video_id=video_id, clip_id=clip_id(video_id, i), start_s=s, end_s=e, **AUDIO[i])
            for i, (s, e) in enumerate(BOUNDS)]


def speech(video_id: str = VIDEO_ID) -> list[SpeechSegment]:
    return [SpeechSegment(video_id=video_id, clip_id=clip_id(video_id, i), start_s=s, end_s=e, text=text,
                          language="en", language_probability=0.98, avg_logprob=-0.2, no_speech_prob=0.02)
            for i, segs in SPEECH.items() for s, e, text in segs]


FUSED_BODIES = [
    "We see a brown dog running across green grass in a sunny park, and hear it barking while birds chirp.",
    "We see a man throw a red frisbee that the dog catches, and hear him shout 'Good boy, catch it!' over barking.",
    "We see a woman at a black piano in a bright living room, and hear a slow, calm piano melody.",
    "We see hands pressing the white piano keys in close-up, and hear low, melancholic piano chords.",
    "We see a city street at night with cars and shop signs, and hear a calm narrator over passing traffic.",
]


def descriptions(video_id: str = VIDEO_ID, bodies: list[str] | None = None,
                 bounds: list[tuple[float, float]] | None = None) -> list[ClipDescription]:
    """A fused timeline as the fusion stage would write it (hand-written bodies, code-made prefixes)."""
    out = []
    for i, ((s, e), body) in enumerate(zip(bounds or BOUNDS, bodies or FUSED_BODIES)):
        audio = AUDIO[i % len(AUDIO)]
        out.append(ClipDescription(
            video_id=video_id, clip_id=clip_id(video_id, i), start_s=s, end_s=e,
            visual=" ".join(VISUAL[i % len(VISUAL)]), narration=audio["narration"], environment=audio["environment"],
            timbre=audio["timbre"], event=audio["event"], emotion=audio["emotion"],
            fused=f"From {hms(s)} to {hms(e)}: {body}", model="hand-written"))
    return out


# -- a fake model that reads the data it is given -----------------------------------------------------------------


def quoted_json(body: dict[str, Any], tag: str) -> Any:
    """The JSON a prompt quotes between <tag> and </tag> (the \\u003c escapes decode as JSON does)."""
    user = body["messages"][-1]["content"]
    m = re.search(rf"<{tag}>\n(.*)\n</{tag}>", user, re.DOTALL)
    if m is None:
        raise ValueError(f"no <{tag}> block in the prompt")
    return json.loads(m.group(1))


def request_kind(body: dict[str, Any]) -> str:
    """What a request asks for, read from its prompt: "fuse" (a <clip_data> block), "qa" (a <cards> block), or the
    JSON schema's name for a request with a response format."""
    user = body["messages"][-1]["content"]
    if "<clip_data>" in user:
        return "fuse"
    if "<cards>" in user:
        return "qa"
    return schema_name_of(body)


def grounded_responder(body: dict[str, Any]) -> Reply:
    """Fusion: "We see <first sight>, and hear <first sound>" from the clip data. QA: each card's draft question,
    kept as it is (what a careful small model does), one numbered line each."""
    kind = request_kind(body)
    if kind == "fuse":
        data = quoted_json(body, "clip_data")
        heard = (data["heard"] or [s["text"] for s in data["speech"]] or ["nothing"])[0]
        return Reply(f"We see {data['seen'][0]}, and hear {heard}.")
    if kind == "qa":
        return Reply("\n".join(f"{c['n']}. {c['draft']}" for c in quoted_json(body, "cards")))
    return Reply(json.dumps(instance_of(schema_of(body))))
