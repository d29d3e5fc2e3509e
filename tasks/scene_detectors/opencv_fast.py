"""PySceneDetect's content detectors with the per-frame score computed by OpenCV kernels.

PySceneDetect scores a frame as the weighted mean absolute difference of its HSV channels to the previous frame,
in numpy: each channel is cast to int32 twice, subtracted, abs'ed and summed, costing about as much as decoding the
frame. ``cv2.absdiff`` + ``cv2.sumElems`` on the uint8 HSV image give the same per-channel sums (exact integers in
a double) in one SIMD pass, so the score, and every cut decided from it, is bit-identical; the detectors' own logic
(adaptive ratio, flash filter, minimum scene length) is untouched.

The fast score covers the default weights (no edge component) without a stats manager; any other configuration
falls back to the library's own code. ``tests/test_segment_keyframes.py`` checks the scores against the library's
frame by frame, so a PySceneDetect release that changes its scoring fails loudly instead of drifting.
"""

from __future__ import annotations

import cv2
import numpy as np
from scenedetect import AdaptiveDetector, ContentDetector, FrameTimecode
from scenedetect.detector import SceneDetector

from schemas.settings import Segment
from tasks.scene_detectors import DETECTORS


class _OpenCVScore:
    """Mixin over ``ContentDetector`` (and its subclass ``AdaptiveDetector``) replacing the numpy frame score."""

    _hsv: tuple[np.ndarray, np.ndarray] | None = None
    _has_last = False

    def _calculate_frame_score(self, timecode: FrameTimecode, frame_img: np.ndarray) -> float:
        if self._weights.delta_edges > 0.0 or self.stats_manager is not None:
            return super()._calculate_frame_score(timecode, frame_img)
        if self._hsv is None or self._hsv[0].shape != frame_img.shape:
            # Two buffers used in turn: no 170 KB allocation (and its page faults) per frame.
            self._hsv = (np.empty_like(frame_img), np.empty_like(frame_img))
            self._has_last = False
        current, last = self._hsv
        cv2.cvtColor(frame_img, cv2.COLOR_BGR2HSV, dst=current)
        self._hsv = (last, current)
        if not self._has_last:
            self._has_last = True
            return 0.0
        sums = cv2.sumElems(cv2.absdiff(current, last))
        num_pixels = float(frame_img.shape[0] * frame_img.shape[1])
        # The library's arithmetic in the library's order, so the float result is the same to the last bit.
        components = (sums[0] / num_pixels, sums[1] / num_pixels, sums[2] / num_pixels, 0.0)
        return sum(c * w for c, w in zip(components, self._weights, strict=True)) / sum(
            abs(w) for w in self._weights)


class FastContentDetector(_OpenCVScore, ContentDetector):
    pass


class FastAdaptiveDetector(_OpenCVScore, AdaptiveDetector):
    pass


@DETECTORS.register("content")
def content_detector(cfg: Segment) -> SceneDetector:
    return FastContentDetector(threshold=cfg.content_threshold, min_scene_len=cfg.min_scene_len_frames)


@DETECTORS.register("adaptive")
def adaptive_detector(cfg: Segment) -> SceneDetector:
    return FastAdaptiveDetector(adaptive_threshold=cfg.adaptive_threshold, min_scene_len=cfg.min_scene_len_frames)


# What the dataset card says each detector is (``flows.report.models_table``).
content_detector.model_card = "PySceneDetect ContentDetector (HSV frame change, scored with OpenCV)"
adaptive_detector.model_card = "PySceneDetect AdaptiveDetector (frame change against its rolling average)"
