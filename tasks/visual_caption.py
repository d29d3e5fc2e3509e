"""The keyframe-caption stage: one ``VisualCaption`` per keyframe, with the keyframe's time on the source timeline.

``settings.visual_captioner.kind`` picks the captioner from ``tasks.captioners``: ``object-detector`` (COCO objects,
ImageNet hints, OCR, faces, colours) on the embedded profile, ``vlm`` (a served VLM) on the GPU profile;
``open-clip`` (CoCa + CLIP) and ``opencv-describer`` stay registered.
"""

from __future__ import annotations

from collections import Counter

import cv2
import numpy as np

from infra.endpoint_pool import ServerUnavailable, unavailable_as_transient
from infra.errors import PermanentError
from infra.markdown import top_counts
from infra.pipeline import STAGES
from infra.stage import Stage
from schemas.handoff import StageResult, StageStats, VideoItem, VideoMedia
from schemas.records import Clip, StageName, VisualCaption
from tasks.captioners import CAPTIONERS, Captioner


def read_keyframes(media: VideoMedia, clip: Clip) -> list[np.ndarray]:
    frames = []
    for k, jpeg in enumerate(media.keyframes.get(clip.clip_id) or [None] * len(clip.keyframe_times)):
        img = None if not jpeg else cv2.imdecode(np.frombuffer(jpeg, dtype=np.uint8), cv2.IMREAD_COLOR)
        if img is None:
            raise PermanentError(StageName.visual_caption, clip.video_id,
                                 f"keyframe {k} of {clip.clip_id} is missing or not an image", item_id=clip.clip_id,
                                 error_class="keyframe_unreadable")
        frames.append(img)
    return frames


def caption_clip(captioner: Captioner, media: VideoMedia, clip: Clip) -> list[VisualCaption]:
    if not clip.keyframe_times:
        raise PermanentError(StageName.visual_caption, clip.video_id, "clip has no keyframes", item_id=clip.clip_id,
                             error_class="no_keyframes")
    try:
        described = captioner.describe(read_keyframes(media, clip))
    except ServerUnavailable as exc:  # a served captioner's servers: a rerun may succeed
        raise unavailable_as_transient(exc, StageName.visual_caption, clip.video_id, clip.clip_id) from exc
    return [VisualCaption(video_id=clip.video_id, clip_id=clip.clip_id, t=t, text=text, tags=tags,
                          captioner=captioner.name)
            for t, (text, tags) in zip(clip.keyframe_times, described)]


@STAGES.register(StageName.visual_caption)
class VisualCaptionStage(Stage):
    """Holds one captioner for its lifetime; captions the keyframes of many videos, clip by clip (a clip that fails
    is a dead letter of its own and the others go on)."""

    name = StageName.visual_caption
    title = "keyframe captions"
    placement = "actor"
    section = "visual_captioner"
    backends = CAPTIONERS
    reads = ("clips",)
    writes = {"visual_captions": VisualCaption}
    model_column = ("visual_captions", "captioner")

    def process(self, item: VideoItem) -> StageResult:
        media = item.load_media()
        per_clip, dead = self.each(item.clips, lambda clip: caption_clip(self.backend, media, clip),
                                   video_id=item.video_id, item_id=lambda clip: clip.clip_id)
        captions = [c for caps in per_clip for c in caps]
        objects = [{t.label.split(":", 1)[1] for t in c.tags if t.label.startswith("object:")} for c in captions]
        return StageResult(tables={"visual_captions": captions}, dead_letters=dead,
                           counts={"keyframes": len(captions), "keyframes_with_objects": sum(map(bool, objects))},
                           tallies={"object": dict(Counter(o for seen in objects for o in seen))})

    @classmethod
    def report_lines(cls, stats: StageStats) -> list[str]:
        return [f"Keyframes with a COCO object: {stats.counts.get('keyframes_with_objects', 0):g} of "
                f"{stats.counts.get('keyframes', 0):g}; most frequent: {top_counts(stats.tally('object'))}."]
