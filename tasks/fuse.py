"""Per-clip audio-visual fusion: visual captions + five-axis audio caption + speech -> one ``ClipDescription``.

The LLM writes only the body of the description; the "From hh:mm:ss.mmm to hh:mm:ss.mmm: " prefix is made by code
from the clip's own bounds (a prefix the model writes anyway is stripped, never trusted). Transcripts and on-screen
text are quoted as JSON data in the prompt (``tasks.prompts.quote_data``), never spliced in as instructions.
A clip whose request fails after retries, or whose inputs are missing, becomes a ``DeadLetter``; the rest go on.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any, Iterable, Sequence

from pydantic import BaseModel, ConfigDict, Field

from schemas.records import (AudioCaption, Clip, ClipDescription, DeadLetter, SpeechSegment, StageName, VisualCaption,
                             hms, utc_now)
from infra.llm_client import LLMClient, LLMPermanentError
from infra.llm_stage import LLMStage
from infra.pipeline import STAGES
from infra.stage import gather_guarded
from schemas.handoff import StageResult, StageStats, VideoItem
from tasks.clip_facts import keys_of, sights_of, sounds_of
from tasks.grounding import ungrounded_names, words
from tasks.prompts import load_prompt, quote_data
from infra.text_bounds import cut_at_sentence

PROMPT = "fuse.v3"
FACTS_MODEL = "clip-facts"  # ClipDescription.model of a description written from the facts, not by the LLM
INVALID_RETRIES = 1
MAX_REPLY_TOKENS = 160  # two sentences; the reply is cut at 400 characters anyway
MAX_DESCRIPTION_CHARS = 400
MAX_SPEECH_CHARS = 1200  # a clip is at most ~30 s: this keeps all of normal speech and bounds a pathological one
MAX_VISUAL_CAPTIONS = 6
# Timestamps or a "From .. to ..:" lead-in the model adds despite the prompt; code owns the prefix.
_TS = r"\d{1,2}:\d{2}:\d{2}(?:\.\d{1,3})?"
_MODEL_PREFIX_RE = re.compile(rf"^\s*(?:from\s+)?{_TS}\s*(?:to|-|–)\s*{_TS}\s*[:,.-]?\s*", re.IGNORECASE)


_WRAPPING_RE = re.compile(r"^\s*(?:```\w*|description\s*:|\{\s*\"description\"\s*:)\s*|\s*(?:```|\})\s*$", re.I)


def parse_description(text: str) -> str:
    """The model's plain-text description: wrapping it may add anyway (a code fence, a "Description:" label, a JSON
    object, quotes) removed, cut to whole sentences within ``MAX_DESCRIPTION_CHARS`` (Qwen2.5-0.5B overran 400
    characters on clips with much speech; a cut beats a rejection)."""
    body = " ".join(_WRAPPING_RE.sub("", text.strip()).split()).strip().strip('"').strip()
    body = cut_at_sentence(body, MAX_DESCRIPTION_CHARS)
    if len(body) < 10:
        raise ValueError("no description in the reply")
    return body


class ClipInputs(BaseModel):
    """Everything one clip's fusion reads."""

    model_config = ConfigDict(extra="forbid")
    clip: Clip
    visual: list[VisualCaption]
    audio: AudioCaption
    speech: list[SpeechSegment] = Field(default_factory=list)


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
            dead.append(DeadLetter(stage=StageName.fuse, video_id=clip.video_id, item_id=clip.clip_id,
                                   error_class="MissingInput", message=f"clip has no {' and no '.join(missing)}",
                                   failed_at=utc_now()))
            continue
        inputs.append(ClipInputs(clip=clip, visual=sorted(visual[clip.clip_id], key=lambda v: v.t),
                                 audio=audio[clip.clip_id],
                                 speech=sorted(spoken[clip.clip_id], key=lambda s: s.start_s)))
    return inputs, dead


def clip_data(inputs: ClipInputs) -> dict[str, Any]:
    """The JSON the model reads for one clip: what perception found, as the short phrases a person would say
    (``tasks.clip_facts``: no detector jargon, ImageNet guesses, pixel measures, moods or event times, which a small
    model copies into the description), and the timed transcript."""
    clip = inputs.clip
    speech, budget = [], MAX_SPEECH_CHARS
    for seg in inputs.speech:
        if budget <= 0:
            break
        text = seg.text.strip()[:budget]
        budget -= len(text)
        speech.append({"from": hms(seg.start_s), "to": hms(seg.end_s), "text": text})
    return {
        "clip": f"{hms(clip.start_s)} to {hms(clip.end_s)}",
        "seen": [f.phrase for f in sights_of(visual_text(inputs.visual[:MAX_VISUAL_CAPTIONS]))],
        "heard": [f.phrase for f in sounds_of(inputs.audio, speech=False)],
        "speech": speech,
    }


def facts_description(inputs: ClipInputs) -> str:
    """The description written from the facts alone: what fusion falls back to when the model keeps inventing."""
    seen = [f.phrase for f in sights_of(visual_text(inputs.visual[:MAX_VISUAL_CAPTIONS]))]
    heard = [f.phrase for f in sounds_of(inputs.audio)]
    parts = []
    if seen:
        parts.append("We see " + _and(seen))
    if heard:
        parts.append(("and hear " if parts else "We hear ") + _and(heard))
    return (", ".join(parts) or "Nothing is reported for this clip") + "."


def _and(phrases: Sequence[str]) -> str:
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def perception_texts(inputs: ClipInputs) -> list[str]:
    """Everything perception reported for the clip: what a description may name."""
    audio = inputs.audio
    return [*(c.text for c in inputs.visual), *(t.label for c in inputs.visual for t in c.tags),
            audio.narration, audio.environment, audio.timbre, audio.event, audio.emotion,
            *(s.text for s in inputs.speech)]


def render_messages(inputs: ClipInputs) -> list[dict[str, str]]:
    return load_prompt(PROMPT).messages(clip_json=quote_data(clip_data(inputs)))


def fused_text(clip: Clip, body: str) -> str:
    """The paper's form: the clip's own bounds as prefix, then the model's body with any prefix of its own removed."""
    body = _MODEL_PREFIX_RE.sub("", body.strip(), count=1).strip()
    body = " ".join(body.split())
    if not body:
        raise ValueError("the description is empty once timestamps are removed")
    return f"From {hms(clip.start_s)} to {hms(clip.end_s)}: {body}"


def _reply_parser(inputs: ClipInputs, vocabulary: frozenset[str]):
    """The reply parsed (``parse_description``); usable when the body exists once a prefix is removed, names nothing
    perception did not report (``vocabulary``: what the run's perception models can name), and says something of
    what is seen and of what is heard (when the clip has either)."""
    known = perception_texts(inputs)
    data = clip_data(inputs)

    def parse(text: str) -> str:
        description = parse_description(text)
        body = fused_text(inputs.clip, description).split(": ", 1)[1]
        invented = ungrounded_names(body, known, vocabulary=vocabulary)
        if invented:
            raise ValueError(f"names what perception never reported: {invented}")
        said = words(body)
        for side, phrases in (("seen", data["seen"]), ("heard", data["heard"] + [s["text"] for s in data["speech"]])):
            if phrases and not any(keys_of(p) & said for p in phrases):
                raise ValueError(f"says nothing of what is {side}: {phrases}")
        return description

    return parse


def visual_text(captions: Sequence[VisualCaption]) -> str:
    seen: list[str] = []
    for c in captions:
        text = " ".join(c.text.split())
        if text and text not in seen:
            seen.append(text)
    return " ".join(t if t.endswith((".", "!", "?")) else t + "." for t in seen)


async def fuse_clip(client: LLMClient, inputs: ClipInputs, vocabulary: frozenset[str]) -> ClipDescription:
    """One clip's description; raises a ``StageError`` (with the attempt count) when the server cannot be reached.

    A reply that invents (or ignores a modality) is asked for once more; if the second is no better, the clip gets
    the description its facts make (``facts_description``, ``model`` = ``FACTS_MODEL``): a timeline with a plain
    true sentence is worth more than one with a fluent false one, and no clip is lost to a model's style."""
    clip, audio = inputs.clip, inputs.audio
    try:
        reply = await client.complete_text(
            render_messages(inputs), _reply_parser(inputs, vocabulary), reply_name="fused_clip",
            stage=StageName.fuse, subject=clip.video_id, item_id=clip.clip_id,
            max_invalid_retries=INVALID_RETRIES, max_tokens=MAX_REPLY_TOKENS)
        body, model = reply.value, client.model
    except LLMPermanentError as exc:
        if exc.error_class != "InvalidReply":
            raise
        body, model = facts_description(inputs), FACTS_MODEL
    return ClipDescription(
        video_id=clip.video_id, clip_id=clip.clip_id, start_s=clip.start_s, end_s=clip.end_s,
        visual=visual_text(inputs.visual), narration=audio.narration, environment=audio.environment,
        timbre=audio.timbre, event=audio.event, emotion=audio.emotion,
        fused=fused_text(clip, body), model=model)


async def fuse_clips(client: LLMClient, inputs: Sequence[ClipInputs], vocabulary: frozenset[str]
                     ) -> tuple[list[ClipDescription], list[DeadLetter]]:
    """All clips concurrently (the client bounds the concurrency); a clip that fails is a dead letter."""
    return await gather_guarded(StageName.fuse, inputs, lambda i: fuse_clip(client, i, vocabulary),
                                key=lambda i: (i.clip.video_id, i.clip.clip_id))


@STAGES.register(StageName.fuse)
class FuseStage(LLMStage):
    """Per-clip audio-visual fusion on the LLM server: every clip of the batch's videos in flight at once."""

    name = StageName.fuse
    title = "fusion"
    reads = ("clips", "visual_captions", "audio_captions", "speech")
    writes = {"descriptions": ClipDescription}

    async def process_async(self, item: VideoItem) -> StageResult:
        inputs, missing = group_inputs(item.clips, item.rows("visual_captions"), item.rows("audio_captions"),
                                       item.rows("speech"))
        described, dead = await fuse_clips(self.client, inputs, self.context.vocabulary)
        return StageResult(tables={"descriptions": sorted(described, key=lambda d: d.start_s)},
                           dead_letters=missing + dead,
                           counts={"from_facts": sum(1 for d in described if d.model == FACTS_MODEL)})

    @classmethod
    def report_lines(cls, stats: StageStats) -> list[str]:
        described, from_facts = stats.rows["descriptions"], stats.counts.get("from_facts", 0)
        return [f"Fused descriptions: {described - from_facts:g} by the LLM, {from_facts:g} written from the clip "
                "facts (the LLM's replies named what perception never reported)."]
