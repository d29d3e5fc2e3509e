"""The records every part of SAVEn-Vid speaks (DESIGN.md §3).

All times are seconds on the *source video's* timeline. Models are strict: unknown fields are rejected and
values are validated on assignment, so a record that exists is a record that is valid.

Bump ``SCHEMA_VERSION`` on any change to a field: major for a removal/rename/type change (old shards can no
longer be read as these models), minor for an added optional field.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from enum import Enum, StrEnum
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from schemas.mcq import LETTERS

SCHEMA_VERSION = "1.6.0"  # 1.1: DeadLetter.transient; 1.2: Stage features, train; 1.3: DeadLetter.video_id;
# 1.4: the fingerprints and dedup tables; 1.5: QAItem.judge_verdict; 1.6: the audio_descriptions table

# Ids are safe as file names by construction: they come from extractor ids or hashes, never from titles.
VIDEO_ID_PATTERN = r"^[a-z0-9]{1,24}-[A-Za-z0-9_-]{1,64}$"
CLIP_ID_PATTERN = r"^[a-z0-9]{1,24}-[A-Za-z0-9_-]{1,64}\.c[0-9]{4}$"
QA_ID_PATTERN = r"^[a-z0-9]{1,24}-[A-Za-z0-9_-]{1,64}\.q[0-9a-f]{12}$"
SHA256_PATTERN = r"^[0-9a-f]{64}$"

VideoId = Annotated[str, Field(pattern=VIDEO_ID_PATTERN)]
ClipId = Annotated[str, Field(pattern=CLIP_ID_PATTERN)]
QAId = Annotated[str, Field(pattern=QA_ID_PATTERN)]
Seconds = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
Score01 = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
NonEmptyText = Annotated[str, Field(min_length=1)]


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware (UTC)")
    return value.astimezone(timezone.utc)


UtcDatetime = Annotated[datetime, AfterValidator(_utc)]


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def clip_id(video_id: str, index: int) -> str:
    return f"{video_id}.c{index:04d}"


def video_id_of_clip(clip_id_: str) -> str:
    return clip_id_.rsplit(".c", 1)[0]


def clip_index_of(clip_id_: str) -> int:
    return int(clip_id_.rsplit(".c", 1)[1])


class QAKind(str, Enum):
    av = "av"
    av_temporal = "av_temporal"


class QAType(str, Enum):
    global_av_inference = "global_av_inference"
    cross_scene_transition = "cross_scene_transition"
    time_point_anchored = "time_point_anchored"
    time_range_anchored = "time_range_anchored"
    temporal_grounding = "temporal_grounding"
    # Reasoning types beyond the paper's five (issue 31): order, count, evidence far apart, speech linked to picture.
    temporal_ordering = "temporal_ordering"
    counting = "counting"
    long_range = "long_range"
    speech_picture_link = "speech_picture_link"
    # Written only by the LLM in the authored mode (tasks.qa_author): no code can plan them from the facts.
    source_attribution = "source_attribution"
    causal_inference = "causal_inference"


PAPER_TYPES = (QAType.global_av_inference, QAType.cross_scene_transition, QAType.time_point_anchored,
               QAType.time_range_anchored, QAType.temporal_grounding)


KIND_OF_TYPE: dict[QAType, QAKind] = {
    QAType.global_av_inference: QAKind.av,
    QAType.cross_scene_transition: QAKind.av,
    QAType.time_point_anchored: QAKind.av_temporal,
    QAType.time_range_anchored: QAKind.av_temporal,
    QAType.temporal_grounding: QAKind.av_temporal,
    QAType.temporal_ordering: QAKind.av_temporal,
    QAType.counting: QAKind.av,
    QAType.long_range: QAKind.av_temporal,
    QAType.speech_picture_link: QAKind.av,
    QAType.source_attribution: QAKind.av,
    QAType.causal_inference: QAKind.av,
}
AUTHORED_ONLY_TYPES = (QAType.source_attribution, QAType.causal_inference)

# An LLM judge's reading of an authored item (tasks.qa_judge): which timelines answer it.
JudgeVerdict = Literal["both", "visual", "audio", "either"]


class AudioAxis(str, Enum):
    """The paper's five axes of an audio caption."""

    narration = "narration"
    environment = "environment"
    timbre = "timbre"
    event = "event"
    emotion = "emotion"


DUPLICATE = "duplicate"  # a dead letter's error class for a video already in the dataset: not a failure


class StageName(StrEnum):
    """The built-in stages' names (a dead letter's ``stage``); a stage added later names itself."""

    acquire = "acquire"
    probe = "probe"
    audio = "audio"
    segment = "segment"
    keyframes = "keyframes"
    fingerprint = "fingerprint"
    dedup = "dedup"
    asr = "asr"
    audio_events = "audio_events"
    visual_caption = "visual_caption"
    audio_description = "audio_description"
    audio_caption = "audio_caption"
    fuse = "fuse"
    qa = "qa"
    write = "write"
    features = "features"
    train = "train"
    benchmark = "benchmark"
    flow = "flow"


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False, use_enum_values=False)
    # The fields that name one row: unique in a shard by construction, and checked when a shard is written
    # (``schemas.shards``: rows that share a key are refused as dead letters). Empty: rows need no key.
    key_fields: ClassVar[tuple[str, ...]] = ()


class TimeSpan(Record):
    start_s: Seconds
    end_s: Seconds

    @model_validator(mode="after")
    def _end_after_start(self):
        if self.end_s <= self.start_s:
            raise ValueError(f"end_s ({self.end_s}) must be greater than start_s ({self.start_s})")
        return self


class VideoRecord(Record):
    key_fields = ("video_id",)
    video_id: VideoId
    source: NonEmptyText  # the URL or path as given in the sources file
    extractor: NonEmptyText  # yt-dlp extractor key, or "local" / "http"
    title: str | None = None  # data only: never used in a file name or an instruction
    uploader: str | None = None
    upload_date: str | None = None  # YYYYMMDD as yt-dlp gives it
    license: str | None = None
    webpage_url: str | None = None
    media_path: NonEmptyText  # relative to the dataset folder, named by video_id
    duration_s: Annotated[float, Field(gt=0.0, allow_inf_nan=False)]
    fps: Annotated[float, Field(gt=0.0, allow_inf_nan=False)]
    width: Annotated[int, Field(gt=0)]
    height: Annotated[int, Field(gt=0)]
    has_audio: bool
    size_bytes: Annotated[int, Field(gt=0)]
    sha256: Annotated[str, Field(pattern=SHA256_PATTERN)]
    acquired_at: UtcDatetime

    @field_validator("upload_date")
    @classmethod
    def _yyyymmdd(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"\d{8}", v):
            raise ValueError("upload_date must be YYYYMMDD")
        return v


class Clip(TimeSpan):
    key_fields = ("clip_id",)
    clip_id: ClipId
    video_id: VideoId
    index: Annotated[int, Field(ge=0)]
    keyframe_times: list[Seconds] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self):
        if self.clip_id != clip_id(self.video_id, self.index):
            raise ValueError(f"clip_id {self.clip_id!r} does not match video_id/index")
        for t in self.keyframe_times:
            if not (self.start_s <= t <= self.end_s):
                raise ValueError(f"keyframe time {t} outside clip [{self.start_s}, {self.end_s}]")
        return self


class Word(TimeSpan):
    word: str
    probability: Score01


class SpeechSegment(TimeSpan):
    key_fields = ("clip_id", "start_s", "end_s")
    video_id: VideoId
    clip_id: ClipId
    text: NonEmptyText
    language: Annotated[str, Field(pattern=r"^[a-z]{2,3}$")]
    language_probability: Score01
    avg_logprob: Annotated[float, Field(allow_inf_nan=False)]
    no_speech_prob: Score01
    words: list[Word] = Field(default_factory=list)


class AudioEvent(TimeSpan):
    key_fields = ("clip_id", "label", "start_s")
    video_id: VideoId
    clip_id: ClipId
    label: NonEmptyText
    axis: AudioAxis
    score: Score01
    tagger: NonEmptyText  # which model or analysis produced it, e.g. "signal-analysis-v1"


class Tag(Record):
    label: NonEmptyText
    score: Score01


class VisualCaption(Record):
    key_fields = ("clip_id", "t")
    video_id: VideoId
    clip_id: ClipId
    t: Seconds
    text: NonEmptyText
    tags: list[Tag] = Field(default_factory=list)
    captioner: NonEmptyText  # e.g. "coca-vit-l-14" or "opencv-describer-v1"


HEX64 = r"^[0-9a-f]{16}$"


class KeyframeHash(Record):
    """A keyframe's 64-bit difference hash (dHash of a 9x8 grey thumbnail), as 16 hex digits: what finding the
    same footage again (a re-upload, a re-encode, a repeated shot) compares, by Hamming distance."""

    key_fields = ("clip_id", "t")
    video_id: VideoId
    clip_id: ClipId
    t: Seconds
    dhash: Annotated[str, Field(pattern=HEX64)]


class DedupDecision(Record):
    """One decision of the deduplication after download: a clip of this video repeats footage already in the
    dataset (``kind="clip"``: the clip gets no QA), with the kept clip or video and the distance that decided."""

    key_fields = ("video_id", "clip_id", "kind")
    video_id: VideoId
    clip_id: ClipId | None = None
    kind: Literal["content", "perceptual", "clip"]
    kept_id: NonEmptyText  # the kept video's id, or the kept clip's id for kind "clip"
    distance: Annotated[float, Field(ge=0.0)]  # Hamming bits (median over keyframes); 0 for a content hash match
    method: NonEmptyText  # e.g. "sha256", "dhash64"


class AudioCaption(TimeSpan):
    """Five-axis caption of one clip's audio; empty string means "nothing on this axis"."""

    key_fields = ("clip_id",)
    video_id: VideoId
    clip_id: ClipId
    narration: str
    environment: str
    timbre: str
    event: str
    emotion: str
    sentence: NonEmptyText


class AudioDescription(TimeSpan):
    """What an audio-language model heard in one clip, on the paper's five axes, in its own words (empty: nothing
    on that axis). ``speakers`` is who speaks and how, not the words: the transcriber writes those."""

    key_fields = ("clip_id",)
    video_id: VideoId
    clip_id: ClipId
    speakers: str
    environment: str
    timbre: str
    event: str
    emotion: str
    describer: NonEmptyText  # e.g. "omni:Qwen/Qwen2.5-Omni-7B"


FUSED_PREFIX_RE = re.compile(r"^From (\d{2}):(\d{2}):(\d{2})\.(\d{3}) to (\d{2}):(\d{2}):(\d{2})\.(\d{3}): \S")


def hms(seconds: float) -> str:
    """hh:mm:ss.mmm, the paper's timestamp format."""
    ms = int(round(seconds * 1000))
    h, rem = divmod(ms, 3_600_000)
    m, rem = divmod(rem, 60_000)
    s, ms = divmod(rem, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}.{ms:03d}"


def parse_hms(text: str) -> float:
    m = re.fullmatch(r"(\d{1,2}):(\d{2}):(\d{2})(?:\.(\d{1,3}))?", text.strip())
    if not m:
        raise ValueError(f"not a hh:mm:ss.mmm timestamp: {text!r}")
    h, mi, s, frac = m.groups()
    return int(h) * 3600 + int(mi) * 60 + int(s) + (int(frac.ljust(3, "0")) / 1000 if frac else 0.0)


class ClipDescription(TimeSpan):
    key_fields = ("clip_id",)
    video_id: VideoId
    clip_id: ClipId
    visual: NonEmptyText
    narration: str
    environment: str
    timbre: str
    event: str
    emotion: str
    fused: NonEmptyText  # "From hh:mm:ss.mmm to hh:mm:ss.mmm: ..."
    model: NonEmptyText

    @model_validator(mode="after")
    def _fused_prefix(self):
        m = FUSED_PREFIX_RE.match(self.fused)
        if not m:
            raise ValueError("fused must start with 'From hh:mm:ss.mmm to hh:mm:ss.mmm: '")
        expected = f"From {hms(self.start_s)} to {hms(self.end_s)}: "
        if not self.fused.startswith(expected):
            raise ValueError(f"fused prefix must be {expected!r} (the clip's own bounds)")
        return self


def _normalise_option(text: str) -> str:
    return " ".join(text.casefold().split())


class QAItem(Record):
    key_fields = ("qa_id",)
    qa_id: QAId
    video_id: VideoId
    kind: QAKind
    type: QAType
    question: NonEmptyText
    options: Annotated[list[NonEmptyText], Field(min_length=4, max_length=4)]
    answer_index: Annotated[int, Field(ge=0, le=3)]
    evidence_clip_ids: Annotated[list[ClipId], Field(min_length=1)]
    start_s: Seconds | None = None
    end_s: Seconds | None = None
    generator_model: NonEmptyText
    checks_passed: list[str] = Field(default_factory=list)
    # "both": the judge answered it from neither the visual-only nor the audio-only timeline (it needs both senses);
    # None: no judge read it (the planned mode, whose designs need both senses by construction).
    judge_verdict: JudgeVerdict | None = None

    @model_validator(mode="after")
    def _consistent(self):
        if len({_normalise_option(o) for o in self.options}) != 4:
            raise ValueError("options must be 4 distinct texts")
        if KIND_OF_TYPE[self.type] != self.kind:
            raise ValueError(f"type {self.type.value} belongs to kind {KIND_OF_TYPE[self.type].value}")
        for cid in self.evidence_clip_ids:
            if video_id_of_clip(cid) != self.video_id:
                raise ValueError(f"evidence clip {cid} is not from video {self.video_id}")
        if self.type == QAType.time_point_anchored:
            if self.start_s is None or self.end_s is not None:
                raise ValueError("time_point_anchored needs start_s (the time point) and no end_s")
        elif self.type in (QAType.time_range_anchored, QAType.temporal_grounding):
            if self.start_s is None or self.end_s is None or self.end_s <= self.start_s:
                raise ValueError(f"{self.type.value} needs start_s < end_s")
        elif self.start_s is not None or self.end_s is not None:
            raise ValueError(f"{self.type.value} is not anchored: start_s/end_s must be empty")
        return self




class FilterResult(Record):
    name: NonEmptyText  # e.g. "blind", "audio_only", "visual_only", "near_duplicate"
    passed: bool  # True: the item survives this filter
    detail: str = ""


class AVBenchItem(Record):
    key_fields = ("item_id",)
    item_id: NonEmptyText
    qa_id: QAId
    video_id: VideoId
    kind: QAKind
    type: QAType
    question: NonEmptyText
    options: Annotated[list[NonEmptyText], Field(min_length=4, max_length=4)]
    answer_index: Annotated[int, Field(ge=0, le=3)]
    answer_letter: Literal["A", "B", "C", "D"]
    duration_s: Annotated[float, Field(gt=0.0, allow_inf_nan=False)]
    evidence_clip_ids: list[ClipId]
    start_s: Seconds | None = None
    end_s: Seconds | None = None
    filters: list[FilterResult] = Field(default_factory=list)
    core: bool  # in the audio-visual core set: survives every filter
    benchmark_version: NonEmptyText

    @model_validator(mode="after")
    def _consistent(self):
        if LETTERS[self.answer_index] != self.answer_letter:
            raise ValueError("answer_letter does not match answer_index")
        if len({_normalise_option(o) for o in self.options}) != 4:
            raise ValueError("options must be 4 distinct texts")
        return self


class Prediction(Record):
    item_id: NonEmptyText
    model_name: NonEmptyText
    rotation: Annotated[int, Field(ge=0, le=3)] = 0
    raw_answer: str
    parsed_letter: Literal["A", "B", "C", "D"] | None
    correct: bool


class Score(Record):
    model_name: NonEmptyText
    group: NonEmptyText  # "overall", "type=...", "kind=...", "duration=..."
    n: Annotated[int, Field(ge=0)]
    accuracy: Score01
    ci_low: Score01
    ci_high: Score01
    parse_failures: Annotated[int, Field(ge=0)] = 0


class DeadLetter(Record):
    """One failed source or item, with its reason.

    ``source_id`` is always the source as it was given (URL or path: what a rerun fetches again), ``video_id`` the
    video it became once one is known. A stage that works on a video knows only the video id; the flow stamps the
    source when it files the letter. Rows made after the pipeline (AVBench, features, invalid rows) may have only
    the video id.
    """

    stage: str  # a StageName, or the name of a stage added to the pipeline
    source_id: NonEmptyText | None = None
    video_id: NonEmptyText | None = None
    item_id: str | None = None  # clip/QA id or row key when the failure is about one item
    error_class: NonEmptyText  # exception class or check name, e.g. "HTTPError", "check:options_distinct"
    message: NonEmptyText
    attempts: Annotated[int, Field(ge=1)] = 1
    failed_at: UtcDatetime
    detail: str = ""  # e.g. the offending row as JSON
    transient: bool = False  # e.g. the LLM server was unreachable: a rerun tries this source again

    @model_validator(mode="after")
    def _names_what_failed(self) -> "DeadLetter":
        if self.source_id is None and self.video_id is None:
            raise ValueError("a dead letter needs its source_id or its video_id")
        return self

    def filed_for(self, source: str, video_id: str | None = None) -> "DeadLetter":
        """This letter with the source it belongs to stamped in (and the video id, when it had none)."""
        return self.model_copy(update={"source_id": source, "video_id": self.video_id or video_id})


# The tables a committed video owns, keyed by its video id (the built-in stages'; a stage added to the pipeline
# registers its own with ``register_video_table``).
VIDEO_TABLES: dict[str, type[Record]] = {
    "videos": VideoRecord,
    "clips": Clip,
    "speech": SpeechSegment,
    "audio_events": AudioEvent,
    "audio_descriptions": AudioDescription,
    "audio_captions": AudioCaption,
    "visual_captions": VisualCaption,
    "descriptions": ClipDescription,
    "qa": QAItem,
    "fingerprints": KeyframeHash,
    "dedup": DedupDecision,
}
# Every table a dataset folder can hold: the video tables, AVBench's, the dead letters.
ALL_RECORDS: dict[str, type[Record]] = {
    **VIDEO_TABLES,
    "avbench": AVBenchItem,
    "predictions": Prediction,
    "scores": Score,
    "dead_letter": DeadLetter,
}


def register_video_table(table: str, record: type[Record]) -> None:
    """A table a pipeline stage writes per video (idempotent; another record class under a known name is an error)."""
    known = ALL_RECORDS.get(table)
    if known is not None and known is not record:
        raise ValueError(f"table {table!r} already holds {known.__name__} rows, not {record.__name__}")
    if not issubclass(record, Record):
        raise TypeError(f"{record.__name__} is no schemas.records.Record: rows need its validation and arrow schema")
    VIDEO_TABLES[table] = record
    ALL_RECORDS[table] = record
