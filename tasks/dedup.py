"""Deduplication after download: the same video again (a re-upload, a re-encode at another bitrate or size) and the
same footage inside other videos (a repeated shot), found from what the media stage measured.

- **Content**: the file's sha256 equals a kept video's: the same bytes.
- **Perceptual (video)**: durations within ``duration_tolerance`` and the median, over the new video's keyframes, of
  the Hamming distance from each to the nearest keyframe of the kept video is at most ``video_max_distance`` bits.
  A re-encode keeps scenes, so its keyframes fall where the original's do.
- **Clip**: a clip with a keyframe within ``clip_max_distance`` bits of a keyframe of another video already in the
  dataset repeats that footage: it is flagged, and gets no QA. (Keyframes fall at other times in a re-cut, so one
  near-identical frame is the evidence; flat frames, a fade to black, carry no fingerprint at all.)

Each decision names the kept video or clip and the distance (``DedupDecision``). A duplicate video is not
committed: it becomes a dead letter ``duplicate_of=<kept id>`` (not a failure); a flagged clip's video commits.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from typing import Iterable

import numpy as np

from infra.errors import PermanentError
from infra.pipeline import STAGES
from infra.stage import Stage
from schemas.handoff import StageResult, VideoItem
from schemas.records import DUPLICATE, DedupDecision, KeyframeHash, StageName, VideoRecord
from schemas.settings import Dedup, Settings
from schemas.shards import read_table
from schemas.store import DatasetLike, DatasetStore
from tasks.fingerprint import hamming

METHOD = "dhash64"


def _array(hashes: Iterable[KeyframeHash]) -> np.ndarray:
    return np.array([int(h.dhash, 16) for h in hashes], dtype=np.uint64)


class DedupIndex:
    """The kept videos' checksums, durations and keyframe hashes, in memory (arrays: a check costs one vectorised
    pass over the kept hashes, ~3M at 100k videos); thread-safe (a run's concurrent batches share one)."""

    def __init__(self, cfg: Dedup):
        self.cfg = cfg
        self._lock = threading.Lock()
        self.by_sha: dict[str, str] = {}
        self._videos: list[str] = []
        self._durations: list[float] = []
        self._video_span: list[tuple[int, int]] = []  # the video's keyframes in the hash array
        self._clips: list[str] = []
        self._clip_starts: list[int] = []  # each kept clip's first keyframe in the hash array
        self._hashes: list[int] = []
        self._array = np.zeros(0, dtype=np.uint64)
        self._dirty = False

    def __len__(self) -> int:
        return len(self._videos)

    def add(self, video: VideoRecord, hashes: list[KeyframeHash]) -> None:
        with self._lock:
            self._add(video, hashes)

    def _add(self, video: VideoRecord, hashes: list[KeyframeHash]) -> None:
        self.by_sha.setdefault(video.sha256, video.video_id)
        start = len(self._hashes)
        last_clip = None
        for h in hashes:
            if h.clip_id != last_clip:
                self._clips.append(h.clip_id)
                self._clip_starts.append(len(self._hashes))
                last_clip = h.clip_id
            self._hashes.append(int(h.dhash, 16))
        self._videos.append(video.video_id)
        self._durations.append(video.duration_s)
        self._video_span.append((start, len(self._hashes)))
        self._dirty = True

    def _kept(self) -> np.ndarray:
        if self._dirty:
            self._array = np.array(self._hashes, dtype=np.uint64)
            self._dirty = False
        return self._array

    def check(self, video: VideoRecord, hashes: list[KeyframeHash]
              ) -> tuple[DedupDecision | None, list[DedupDecision]]:
        """(the video-level decision when the video is a duplicate, the clip flags otherwise); a new video is added
        to the index under the same lock, so two copies in concurrent batches cannot both pass."""
        with self._lock:
            decision = self._video_decision(video, hashes)
            if decision is not None:
                return decision, []
            flags = self._clip_flags(hashes)
            self._add(video, hashes)
            return None, flags

    def _video_decision(self, video: VideoRecord, hashes: list[KeyframeHash]) -> DedupDecision | None:
        kept = self.by_sha.get(video.sha256)
        if kept is not None and kept != video.video_id:
            return DedupDecision(video_id=video.video_id, kind="content", kept_id=kept, distance=0.0, method="sha256")
        new = _array(hashes)
        if len(new) < self.cfg.min_keyframes or not self._videos:
            return None
        durations = np.array(self._durations)
        near = np.flatnonzero(np.abs(durations - video.duration_s)
                              <= self.cfg.duration_tolerance * max(video.duration_s, 1.0))
        kept_hashes = self._kept()
        best: tuple[float, str] | None = None
        for i in near:
            start, end = self._video_span[i]
            if self._videos[i] == video.video_id or end == start:
                continue
            distance = float(np.median(hamming(new, kept_hashes[start:end]).min(axis=1)))
            if distance <= self.cfg.video_max_distance and (best is None or distance < best[0]):
                best = (distance, self._videos[i])
        if best is None:
            return None
        return DedupDecision(video_id=video.video_id, kind="perceptual", kept_id=best[1], distance=best[0],
                             method=METHOD)

    def _clip_flags(self, hashes: list[KeyframeHash]) -> list[DedupDecision]:
        kept_hashes = self._kept()
        if not len(kept_hashes):
            return []
        starts = np.array(self._clip_starts)
        by_clip: dict[str, list[KeyframeHash]] = defaultdict(list)
        for h in hashes:
            by_clip[h.clip_id].append(h)
        flags = []
        for clip_id, own in by_clip.items():
            # (this clip's keyframes x kept clips): the nearest keyframe of each kept clip, then the best pair
            nearest = np.minimum.reduceat(hamming(_array(own), kept_hashes), starts, axis=1).min(axis=0)
            j = int(np.argmin(nearest))
            if nearest[j] <= self.cfg.clip_max_distance:
                flags.append(DedupDecision(video_id=own[0].video_id, clip_id=clip_id, kind="clip",
                                           kept_id=self._clips[j], distance=float(nearest[j]), method=METHOD))
        return flags


def load_dedup_index(dataset: DatasetLike, cfg: Dedup) -> DedupIndex:
    """The committed videos' checksums, durations and keyframe hashes (two columns' worth of reading)."""
    store = DatasetStore.of(dataset)
    index = DedupIndex(cfg)
    videos = read_table(store, "videos", VideoRecord).select(["video_id", "sha256", "duration_s"]).to_pylist()
    hashes: dict[str, list[KeyframeHash]] = {}
    for row in read_table(store, "fingerprints", KeyframeHash).to_pylist():
        hashes.setdefault(row["video_id"], []).append(KeyframeHash.model_validate(row))
    for v in videos:
        record = VideoRecord.model_construct(video_id=v["video_id"], sha256=v["sha256"], duration_s=v["duration_s"])
        index.add(record, hashes.get(v["video_id"], []))
    return index


class DuplicateVideo(PermanentError):
    """The same video as one already kept: not a failure, but it is not committed again."""

    def __init__(self, decision: DedupDecision):
        super().__init__(StageName.acquire, decision.video_id,
                         f"duplicate_of={decision.kept_id}: the same video ({decision.kind}, {decision.method} "
                         f"distance {decision.distance:g})", detail=decision.model_dump_json(),
                         error_class=DUPLICATE)
        self.decision = decision


@STAGES.register(StageName.dedup)
class DedupStage(Stage):
    """Each downloaded video against the dataset's and the run's: a duplicate leaves the run (a dead letter
    ``duplicate_of=<kept id>``); a clip that repeats kept footage is recorded and gets no QA. One index per run,
    loaded once from the committed videos (the stage lives in the driver for the whole run)."""

    name = StageName.dedup
    title = "deduplication"
    placement = "driver"
    section = "dedup"
    required = True  # a duplicate is not committed
    reads = ("videos", "fingerprints")
    writes = {"dedup": DedupDecision}

    @classmethod
    def enabled(cls, settings: Settings) -> bool:
        return settings.dedup.enabled

    def setup(self) -> None:
        self.index = load_dedup_index(self.context.dataset, self.cfg) if self.context.dataset else \
            DedupIndex(self.cfg)

    def process(self, item: VideoItem) -> StageResult:
        duplicate, repeats = self.index.check(item.rows("videos")[0], item.rows("fingerprints"))
        if duplicate is not None:
            raise DuplicateVideo(duplicate)
        return StageResult(tables={"dedup": repeats}, counts={"clips_repeating_kept_footage": len(repeats)})
