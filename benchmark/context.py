"""What an adapter may read about a video besides the item (``BenchContext``: the dataset's records, loaded once on
demand), and the video rendered as text for a reader of one modality (``video_context``)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Literal, Sequence

from schemas.records import Clip, ClipDescription, SpeechSegment, VideoRecord, hms


class BenchContext:
    """What adapters may read about a video besides the item: records from the dataset, loaded once on demand."""

    def __init__(self, dataset_dir: Path | None = None, *, videos: Sequence[VideoRecord] | None = None,
                 clips: Sequence[Clip] | None = None, descriptions: Sequence[ClipDescription] | None = None,
                 speech: Sequence[SpeechSegment] | None = None, cache_dir: Path | None = None):
        self.dataset_dir = Path(dataset_dir) if dataset_dir is not None else None
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._given = {"videos": videos, "clips": clips, "descriptions": descriptions, "speech": speech}
        self._by_video: dict[str, dict[str, list[Any]]] = {}

    def _table(self, table: str) -> dict[str, list[Any]]:
        if table not in self._by_video:
            records = self._given[table]
            if records is None:
                if self.dataset_dir is None:
                    records = []
                else:
                    from schemas.shards import read_records

                    records = read_records(self.dataset_dir, table)
            grouped: dict[str, list[Any]] = defaultdict(list)
            for r in records:
                grouped[r.video_id].append(r)
            for rows in grouped.values():
                rows.sort(key=lambda r: (getattr(r, "start_s", 0.0), getattr(r, "index", 0)))
            self._by_video[table] = dict(grouped)
        return self._by_video[table]

    def video_ids(self) -> list[str]:
        return sorted(self._table("videos"))

    def video(self, video_id: str) -> VideoRecord | None:
        rows = self._table("videos").get(video_id)
        return rows[0] if rows else None

    def clips(self, video_id: str) -> list[Clip]:
        return self._table("clips").get(video_id, [])

    def descriptions(self, video_id: str) -> list[ClipDescription]:
        return self._table("descriptions").get(video_id, [])

    def speech(self, video_id: str) -> list[SpeechSegment]:
        return self._table("speech").get(video_id, [])


Modality = Literal["none", "audio", "visual", "av"]
SYSTEM_PROMPTS: dict[str, str] = {
    "none": "You answer multiple-choice questions. Reply with the letter of the best option.",
    "audio": ("You answer multiple-choice questions about a video from a description of its sound track only "
              "(speech, ambient sound, voices, sound events, mood). Reply with the letter of the best option."),
    "visual": ("You answer multiple-choice questions about a video from a description of its pictures only. "
               "Reply with the letter of the best option."),
    "av": ("You answer multiple-choice questions about a video from timed descriptions of what is seen and "
           "heard, and a transcript of its speech. Reply with the letter of the best option."),
}
_AUDIO_AXES = ("narration", "environment", "timbre", "event", "emotion")


def _heard(d: ClipDescription) -> str:
    return "; ".join(f"{axis}: {getattr(d, axis).strip()}" for axis in _AUDIO_AXES if getattr(d, axis).strip())


def _clip_line(d: ClipDescription, modality: Modality, heard_from: ClipDescription | None = None,
               audio: str = "original") -> str:
    """One clip's line. Under a counterfactual audio condition the line is this clip's picture and the heard part
    of ``heard_from`` (another video's clip when swapped) or nothing (silence); the fused text, which mixes both,
    is not used then."""
    prefix = f"From {hms(d.start_s)} to {hms(d.end_s)}: "
    if audio != "original" and modality in ("av", "audio"):
        heard = _heard(heard_from) if heard_from is not None else ""
        if modality == "audio":
            return prefix + (heard or "no notable sound")
        return prefix + d.visual + (f" Heard: {heard}." if heard else "")
    if modality == "av":
        return d.fused
    if modality == "visual":
        return prefix + d.visual
    return prefix + (_heard(d) or "no notable sound")


def _fit(lines: list[str], budget: int) -> list[str]:
    # Every clip keeps a line (a question may be about any time); long lines are cut to share the budget.
    if not lines:
        return lines
    per_line = max(60, budget // len(lines))
    return [line if len(line) <= per_line else line[: per_line - 3].rstrip() + "..." for line in lines]


View = Literal["description", "facts"]
VIEWS: tuple[str, ...] = ("description", "facts")


def _facts_line(row: dict, heard_row: dict | None, modality: Modality) -> str:
    """One clip of the facts view: its bounds, then what was seen, heard and said (each as perception reported it,
    in the planner's words), as far as ``modality`` allows; ``heard_row`` supplies the heard part and speech (the
    clip's own, another video's when swapped, None when silenced)."""
    parts = []
    if modality in ("visual", "av"):
        parts.append("seen: " + ("; ".join(row.get("seen", [])) or "nothing reported"))
    if modality in ("audio", "av"):
        heard = heard_row.get("heard", []) if heard_row else []
        parts.append("heard: " + ("; ".join(heard) or "no notable sound"))
        if heard_row and heard_row.get("said"):
            parts.append(f"said: \"{heard_row['said']}\"")
    return f"From {row['from']} to {row['to']}: " + " | ".join(parts)


def _heard_from(context: BenchContext, video_id: str, audio: str, donor: str | None) -> list[ClipDescription | None]:
    """Whose heard part each clip of ``video_id`` gets under an ``audio`` condition: its own, none ("silence"), or
    ``donor``'s clips in order, cycled over this video's clips ("swapped")."""
    descriptions = context.descriptions(video_id)
    if audio == "silence":
        return [None] * len(descriptions)
    if audio == "swapped":
        if donor is None:
            raise ValueError("a swapped-audio context needs a donor video")
        donor_clips = context.descriptions(donor)
        return [donor_clips[i % len(donor_clips)] if donor_clips else None for i in range(len(descriptions))]
    return list(descriptions)


def facts_context(context: BenchContext, video_id: str, modality: Modality, max_chars: int = 6000, *,
                  audio: str = "original", donor: str | None = None) -> str:
    """The timeline the questions were planned from (``tasks.qa_author.timeline_rows``: each clip's sights, sounds
    and words with its bounds), for a reader of ``modality``; the counterfactual ``audio`` conditions as in
    ``video_context``."""
    from tasks.qa_author import timeline_rows

    if modality == "none":
        return ""
    rows = timeline_rows(context.descriptions(video_id))
    heard_rows = [timeline_rows([h])[0] if h is not None else None
                  for h in _heard_from(context, video_id, audio, donor)]
    lines = _fit([_facts_line(r, h, modality) for r, h in zip(rows, heard_rows)], max_chars)
    return ("Clips:\n" + "\n".join(lines)) if lines else "(no description of this video)"


def video_context(context: BenchContext, video_id: str, modality: Modality, max_chars: int = 6000, *,
                  audio: str = "original", donor: str | None = None, view: View = "description") -> str:
    """The clip timeline (and transcript, when the modality includes sound) the model reads instead of the video.
    ``audio``: "own" lays out this video's pictures and heard part as the counterfactuals do (not the fused text);
    "silence" drops the heard part and the transcript; "swapped" puts ``donor``'s in their place (its clips' heard
    parts in order, cycled over this video's clips; its transcript with its own times). ``view="facts"`` gives the
    planner's per-clip facts instead of the describer's text (``facts_context``)."""
    if view == "facts":
        return facts_context(context, video_id, modality, max_chars, audio=audio, donor=donor)
    if view != "description":
        raise ValueError(f"view must be one of {VIEWS}, not {view!r}")
    if modality == "none":
        return ""
    descriptions = context.descriptions(video_id)
    heard_from = _heard_from(context, video_id, audio, donor)
    speech = [] if audio == "silence" else context.speech(donor if audio == "swapped" else video_id)
    sections = []
    clips = _fit([_clip_line(d, modality, h, audio) for d, h in zip(descriptions, heard_from)],
                 max_chars if modality == "visual" else max_chars * 2 // 3)
    if clips:
        sections.append("Clips:\n" + "\n".join(clips))
    if modality in ("audio", "av"):
        lines = _fit([f"[{hms(s.start_s)}-{hms(s.end_s)}] {s.text.strip()}" for s in speech], max_chars // 3)
        if lines:
            sections.append("Transcript:\n" + "\n".join(lines))
    return "\n\n".join(sections) or "(no description of this video)"
