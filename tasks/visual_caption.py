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
from schemas.handoff import VideoWork, VisualCaptionOutput
from schemas.paths import clip_keyframe_paths
from schemas.records import Clip, Stage, VisualCaption
from schemas.settings import VisualCaptioner
from tasks.captioners import CAPTIONERS, Captioner

log = logging.getLogger("saven.visual_caption")


def read_keyframes(dataset_dir: Path, clip: Clip) -> list[np.ndarray]:
    frames = []
    for path in clip_keyframe_paths(dataset_dir, clip):
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            raise PermanentError(Stage.visual_caption, clip.video_id, f"keyframe {path.name} is missing or not an "
                                 "image", item_id=clip.clip_id, error_class="keyframe_unreadable")
        frames.append(img)
    return frames


def caption_clip(captioner: Captioner, dataset_dir: Path, clip: Clip) -> list[VisualCaption]:
    if not clip.keyframe_times:
        raise PermanentError(Stage.visual_caption, clip.video_id, "clip has no keyframes", item_id=clip.clip_id,
                             error_class="no_keyframes")
    described = captioner.describe(read_keyframes(dataset_dir, clip))
    return [VisualCaption(video_id=clip.video_id, clip_id=clip.clip_id, t=t, text=text, tags=tags,
                          captioner=captioner.name)
            for t, (text, tags) in zip(clip.keyframe_times, described)]


def caption_video(captioner: Captioner, dataset_dir: Path, video_id: str, clips: list[Clip]) -> VisualCaptionOutput:
    """Captions of every clip's keyframes; a clip that fails is a dead letter, and the other clips go on."""
    t0 = time.perf_counter()
    out = VisualCaptionOutput(video_id=video_id)
    for clip in clips:
        try:
            caps = caption_clip(captioner, Path(dataset_dir), clip)
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

    def process(self, work: VideoWork) -> VisualCaptionOutput:
        return caption_video(self.backend, Path(work.dataset_dir), work.video_id, work.clips)
