"""The keyframe-caption stage: one ``VisualCaption`` per keyframe, with the keyframe's time on the source timeline.

``settings.visual_captioner.kind`` picks the captioner from ``tasks.captioners``: ``opencv-describer`` (colours,
brightness, motion, faces, OCR) on the embedded profile, ``open-clip`` (CoCa + CLIP) on the GPU profile.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import cv2
import numpy as np

from infra.errors import PermanentError, dead_letter_from_exception
from infra.worker import StageWorker
from schemas.handoff import VideoMedia, VideoWork, VisualCaptionOutput
from schemas.records import Clip, Stage, VisualCaption
from schemas.settings import VisualCaptioner
from tasks.captioners import CAPTIONERS, Captioner

log = logging.getLogger("saven.visual_caption")


def read_keyframes(media: VideoMedia, clip: Clip) -> list[np.ndarray]:
    frames = []
    for k, jpeg in enumerate(media.keyframes.get(clip.clip_id) or [None] * len(clip.keyframe_times)):
        img = None if not jpeg else cv2.imdecode(np.frombuffer(jpeg, dtype=np.uint8), cv2.IMREAD_COLOR)
        if img is None:
            raise PermanentError(Stage.visual_caption, clip.video_id, f"keyframe {k} of {clip.clip_id} is missing or "
                                 "not an image", item_id=clip.clip_id, error_class="keyframe_unreadable")
        frames.append(img)
    return frames


def caption_clip(captioner: Captioner, media: VideoMedia, clip: Clip) -> list[VisualCaption]:
    if not clip.keyframe_times:
        raise PermanentError(Stage.visual_caption, clip.video_id, "clip has no keyframes", item_id=clip.clip_id,
                             error_class="no_keyframes")
    described = captioner.describe(read_keyframes(media, clip))
    return [VisualCaption(video_id=clip.video_id, clip_id=clip.clip_id, t=t, text=text, tags=tags,
                          captioner=captioner.name)
            for t, (text, tags) in zip(clip.keyframe_times, described)]


def caption_video(captioner: Captioner, media: VideoMedia | Path, video_id: str, clips: list[Clip]
                  ) -> VisualCaptionOutput:
    """Captions of every clip's keyframes (``media``: the video's keyframes, or a local folder holding them); a clip
    that fails is a dead letter, and the other clips go on."""
    t0 = time.perf_counter()
    if not isinstance(media, VideoMedia):
        media = VideoMedia.from_folder(media, video_id, clips)
    out = VisualCaptionOutput(video_id=video_id)
    for clip in clips:
        try:
            caps = caption_clip(captioner, media, clip)
        except Exception as exc:  # noqa: BLE001 — one clip must not cost the video its other captions
            if not isinstance(exc, PermanentError):
                log.exception("captioning failed for %s", clip.clip_id)
            out.dead_letters.append(dead_letter_from_exception(exc, Stage.visual_caption, video_id,
                                                               item_id=clip.clip_id))
            continue
        out.captions.extend(caps)
        out.keyframes += len(caps)
    out.seconds = time.perf_counter() - t0
    return out


class VisualCaptionWorker(StageWorker[VisualCaptionOutput]):
    """Holds one captioner for its lifetime; processes many videos."""

    stage = Stage.visual_caption
    cfg: VisualCaptioner
    backends = CAPTIONERS

    def process(self, work: VideoWork, media: VideoMedia) -> VisualCaptionOutput:
        return caption_video(self.backend, media, work.video_id, work.clips)
