"""Per-clip audio-visual fusion: visual captions + five-axis audio caption + speech -> one ``ClipDescription``.

The LLM writes only the body of the description; the "From hh:mm:ss.mmm to hh:mm:ss.mmm: " prefix is made by code
from the clip's own bounds (a prefix the model writes anyway is stripped, never trusted). Transcripts and on-screen
text are quoted as JSON data in the prompt (``tasks.prompts.quote_data``), never spliced in as instructions.
A clip whose request fails after retries, or whose inputs are missing, becomes a ``DeadLetter``; the rest go on.
"""

from __future__ import annotations

import asyncio
import re
from collections import defaultdict
from pathlib import Path
from typing import Annotated, Any, Iterable, Sequence

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

from schemas.records import (AudioCaption, Clip, ClipDescription, DeadLetter, SpeechSegment, Stage, VisualCaption,
                             hms, utc_now)
from schemas.settings import LLM
from infra.errors import StageError
from infra.llm_client import LLMClient
from tasks.prompts import load_prompt, quote_data
from infra.text_bounds import cut_at_sentence

PROMPT = "fuse.v1"
MAX_DESCRIPTION_CHARS = 400
MAX_SPEECH_CHARS = 1200  # a clip is at most ~30 s: this keeps all of normal speech and bounds a pathological one
MAX_VISUAL_CAPTIONS = 6
# Timestamps or a "From .. to ..:" lead-in the model adds despite the prompt; code owns the prefix.
_TS = r"\d{1,2}:\d{2}:\d{2}(?:\.\d{1,3})?"
_MODEL_PREFIX_RE = re.compile(rf"^\s*(?:from\s+)?{_TS}\s*(?:to|-|–)\s*{_TS}\s*[:,.-]?\s*", re.IGNORECASE)


class FusedReply(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # Cut to whole sentences rather than rejected: Qwen2.5-0.5B overran 400 characters on clips with much speech.
    description: Annotated[str, BeforeValidator(lambda t: cut_at_sentence(t, MAX_DESCRIPTION_CHARS)),
                           StringConstraints(min_length=10, max_length=MAX_DESCRIPTION_CHARS)]


class ClipInputs(BaseModel):
    """Everything one clip's fusion reads."""

    model_config = ConfigDict(extra="forbid")
    clip: Clip
    visual: list[VisualCaption]
    audio: AudioCaption
    speech: list[SpeechSegment] = Field(default_factory=list)


class FuseResult(BaseModel):
    model_config = ConfigDict(extra="forbid")
    descriptions: list[ClipDescription] = Field(default_factory=list)
    dead_letters: list[DeadLetter] = Field(default_factory=list)
    llm: dict[str, int] = Field(default_factory=dict)  # client counters after the run


def group_inputs(clips: Sequence[Clip], visual_captions: Iterable[VisualCaption],
                 audio_captions: Iterable[AudioCaption], speech: Iterable[SpeechSegment],
                 ) -> tuple[list[ClipInputs], list[DeadLetter]]:
    """Per-clip inputs from the stage outputs of one or more videos; a clip missing an input is a dead letter."""
    visual: dict[str, list[VisualCaption]] = defaultdict(list)
    for v in visual_captions:
        visual[v.clip_id].append(v)
    audio = {a.clip_id: a for a in audio_captions}
    spoken: dict[str, list[SpeechSegment]] = defaultdict(list)
    for s in speech:
        spoken[s.clip_id].append(s)
    inputs, dead = [], []
    for clip in clips:
        missing = [name for name, ok in (("visual caption", bool(visual[clip.clip_id])),
                                         ("audio caption", clip.clip_id in audio)) if not ok]
        if missing:
            dead.append(DeadLetter(stage=Stage.fuse, video_id=clip.video_id, item_id=clip.clip_id,
                                   error_class="MissingInput", message=f"clip has no {' and no '.join(missing)}",
                                   failed_at=utc_now()))
            continue
        inputs.append(ClipInputs(clip=clip, visual=sorted(visual[clip.clip_id], key=lambda v: v.t),
                                 audio=audio[clip.clip_id],
                                 speech=sorted(spoken[clip.clip_id], key=lambda s: s.start_s)))
    return inputs, dead


def clip_data(inputs: ClipInputs) -> dict[str, Any]:
    """The JSON the model reads for one clip: captions, tags, the five audio axes, the timed transcript."""
    clip, audio = inputs.clip, inputs.audio
    seen = []
    for caption in inputs.visual[:MAX_VISUAL_CAPTIONS]:
        entry: dict[str, Any] = {"at": hms(caption.t), "caption": caption.text}
        if caption.tags:
            entry["tags"] = [t.label for t in sorted(caption.tags, key=lambda t: -t.score)[:5]]
        seen.append(entry)
    speech, budget = [], MAX_SPEECH_CHARS
    for seg in inputs.speech:
        if budget <= 0:
            break
        text = seg.text.strip()[:budget]
        budget -= len(text)
        speech.append({"from": hms(seg.start_s), "to": hms(seg.end_s), "text": text})
    return {
        "clip": f"{hms(clip.start_s)} to {hms(clip.end_s)}",
        "seen": seen,
        "heard": {axis: getattr(audio, axis) for axis in ("narration", "environment", "timbre", "event", "emotion")},
        "heard_summary": audio.sentence,
        "speech": speech,
    }


def render_messages(inputs: ClipInputs) -> list[dict[str, str]]:
    return load_prompt(PROMPT).messages(clip_json=quote_data(clip_data(inputs)))


def fused_text(clip: Clip, body: str) -> str:
    """The paper's form: the clip's own bounds as prefix, then the model's body with any prefix of its own removed."""
    body = _MODEL_PREFIX_RE.sub("", body.strip(), count=1).strip()
    body = " ".join(body.split())
    if not body:
        raise ValueError("the description is empty once timestamps are removed")
    return f"From {hms(clip.start_s)} to {hms(clip.end_s)}: {body}"


def _check_reply(clip: Clip):
    def validate(reply: FusedReply) -> None:
        fused_text(clip, reply.description)

    return validate


def visual_text(captions: Sequence[VisualCaption]) -> str:
    seen: list[str] = []
    for c in captions:
        text = " ".join(c.text.split())
        if text and text not in seen:
            seen.append(text)
    return " ".join(t if t.endswith((".", "!", "?")) else t + "." for t in seen)


async def fuse_clip(client: LLMClient, inputs: ClipInputs) -> ClipDescription:
    """One clip's description; raises a ``StageError`` (with the attempt count) when the LLM cannot produce one."""
    clip, audio = inputs.clip, inputs.audio
    reply = await client.complete_json(
        render_messages(inputs), FusedReply, schema_name="fused_clip", stage=Stage.fuse,
        subject=clip.video_id, item_id=clip.clip_id, validate=_check_reply(clip))
    return ClipDescription(
        video_id=clip.video_id, clip_id=clip.clip_id, start_s=clip.start_s, end_s=clip.end_s,
        visual=visual_text(inputs.visual), narration=audio.narration, environment=audio.environment,
        timbre=audio.timbre, event=audio.event, emotion=audio.emotion,
        fused=fused_text(clip, reply.value.description), model=client.model)


async def fuse_clips(client: LLMClient, inputs: Sequence[ClipInputs]) -> FuseResult:
    """All clips concurrently (the client bounds the concurrency); failures become dead letters."""
    outcomes = await asyncio.gather(*(fuse_clip(client, i) for i in inputs), return_exceptions=True)
    result = FuseResult()
    for outcome in outcomes:
        if isinstance(outcome, StageError):
            result.dead_letters.append(outcome.to_dead_letter())
        elif isinstance(outcome, BaseException):
            raise outcome  # a bug, not a data problem: fail loudly
        else:
            result.descriptions.append(outcome)
    result.llm = client.stats.snapshot()
    return result


def run_fuse(inputs: Sequence[ClipInputs], *, llm: LLM, cache_path: Path | None) -> FuseResult:
    """Synchronous stage entry point (one client for the whole batch so requests from all videos share the server)."""
    client = LLMClient.from_settings(llm, cache_path=cache_path)

    async def main() -> FuseResult:
        async with client:
            return await fuse_clips(client, inputs)

    try:
        return asyncio.run(main())
    finally:
        client.close()
