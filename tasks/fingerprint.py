"""Keyframe fingerprints: a 64-bit difference hash (dHash) per keyframe, what finding the same footage again compares.

dHash: the frame in grey, shrunk to 9x8, one bit per neighbouring pair of pixels on a row (is the left one
brighter?). A re-encode at another bitrate or size, a re-upload, a repeated shot change few bits; different
footage changes about half of them. Distances are Hamming distances between hashes (0-64).
"""

from __future__ import annotations

import cv2
import numpy as np

from infra.pipeline import STAGES
from infra.stage import Stage
from schemas.handoff import StageResult, VideoItem, VideoMedia
from schemas.records import Clip, KeyframeHash, StageName


def dhash(image: np.ndarray) -> int:
    """The 64-bit dHash of a BGR (or grey) image."""
    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    small = cv2.resize(grey, (9, 8), interpolation=cv2.INTER_AREA).astype(np.int16)
    bits = (small[:, 1:] > small[:, :-1]).flatten()
    return int(np.packbits(bits).view(">u8")[0])


MIN_CONTRAST = 4.0  # grey levels (std of the 9x8 thumbnail): below it a frame is flat and its dHash is noise


def informative(image: np.ndarray) -> bool:
    """A frame with enough structure to fingerprint (a black or uniform frame matches every other one)."""
    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    return float(cv2.resize(grey, (9, 8), interpolation=cv2.INTER_AREA).std()) >= MIN_CONTRAST


def keyframe_hashes(media: VideoMedia, clips: list[Clip]) -> list[KeyframeHash]:
    """One fingerprint per readable, informative keyframe of every clip, in time order."""
    out = []
    for clip in clips:
        for t, jpeg in zip(clip.keyframe_times, media.keyframes.get(clip.clip_id) or []):
            if not jpeg:
                continue
            img = cv2.imdecode(np.frombuffer(jpeg, dtype=np.uint8), cv2.IMREAD_GRAYSCALE)
            if img is None or not informative(img):
                continue
            out.append(KeyframeHash(video_id=clip.video_id, clip_id=clip.clip_id, t=t, dhash=f"{dhash(img):016x}"))
    return out


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise Hamming distances between two arrays of uint64 hashes: shape (len(a), len(b))."""
    return np.bitwise_count(a[:, None] ^ b[None, :]).astype(np.int16)



@STAGES.register(StageName.fingerprint)
class FingerprintStage(Stage):
    """A dHash per keyframe: what deduplication compares."""

    name = StageName.fingerprint
    placement = "media"
    reads = ("clips",)
    writes = {"fingerprints": KeyframeHash}

    def process(self, item: VideoItem) -> StageResult:
        media = item.media or VideoMedia.from_folder(item.work_dir, item.video_id, item.clips)
        return StageResult(tables={"fingerprints": keyframe_hashes(media, item.clips)})
