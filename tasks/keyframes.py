"""Keyframes: N JPEG frames per clip, chosen from candidates kept during the segmentation decode pass.

Clip bounds are only final after the detector has seen later frames (and after the clip policy has merged or split
scenes), so the pass keeps *candidates*: every K-th frame at keyframe resolution. When a clip becomes final its
keyframes are picked at the middles of N equal parts of the clip and the candidates before it are dropped, so memory
holds only the candidates of the clips still open. Candidates stay raw and only the picked ones are JPEG-encoded:
encoding all of them (~4 a second, ~0.4 ms each at 448 px) cost as much CPU as decoding at the analysis size, for
~3 kept a clip. A long scene without cuts keeps its candidates open: past a byte budget the oldest raw ones are
encoded, so memory stays bounded either way.

Files: ``<dataset>/keyframes/<video_id>/<clip_id>_<k>.jpg``. ``extract_keyframes`` is the one-extra-pass variant for
clips that already exist (e.g. after changing ``keyframes_per_clip``).
"""

from __future__ import annotations

import bisect
import threading
from pathlib import Path

import cv2
import numpy as np

from infra.errors import PermanentError
from infra.frame_reader import FrameReader
from schemas.paths import keyframe_dir, keyframe_path
from schemas.records import Clip, StageName

JPEG_QUALITY = 90


def candidate_every(fps: float, keyframes_per_clip: int, min_clip_s: float) -> int:
    """Keep every K-th frame as a candidate: enough that the shortest clip still has ~2 candidates per keyframe
    (and at least 4 per second)."""
    wanted_rate = max(4.0, 2.0 * keyframes_per_clip / max(min_clip_s, 1e-3))
    return max(1, int(fps // wanted_rate))


def target_times(start_s: float, end_s: float, n: int) -> list[float]:
    """The middles of ``n`` equal parts of the clip: away from the cuts, where transition frames sit."""
    length = end_s - start_s
    return [start_s + (j + 0.5) * length / n for j in range(n)]


RAW_CANDIDATE_BYTES = 64 << 20  # ~190 candidates at 448x252 BGR: ~47 s of an open clip before any encoding


def encode_jpeg(frame: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:  # cv2 fails only on malformed arrays, which the decoder never hands out
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


class CandidateStore:
    """Candidate frames of the clips still open: raw copies, JPEG-encoded when picked (or when the raw ones
    pass ``raw_budget`` bytes, oldest first).

    Filled from the decode's side thread (``add``) while the segmentation thread picks and drops: a lock guards
    the lists, and the encoding of an entry (so a frame is never encoded twice or while it is dropped).
    """

    def __init__(self, quality: int = JPEG_QUALITY, raw_budget: int = RAW_CANDIDATE_BYTES):
        self.quality, self.raw_budget = quality, raw_budget
        self.times: list[float] = []
        self.frames: list[np.ndarray | bytes] = []  # a raw BGR copy, or its JPEG once encoded
        self.kept_total = 0
        self.encoded_total = 0
        self._raw_bytes = 0
        self._lock = threading.Lock()

    def add(self, t: float, frame: np.ndarray) -> None:
        copy = frame.copy()  # the reader's buffer is overwritten by the next frame
        with self._lock:
            self.times.append(round(t, 6))
            self.frames.append(copy)
            self.kept_total += 1
            self._raw_bytes += copy.nbytes
            oldest = 0
            while self._raw_bytes > self.raw_budget:  # some entry is still raw: encoding it lowers the count
                self._encode(oldest)
                oldest += 1

    def _encode(self, i: int) -> bytes:
        entry = self.frames[i]
        if isinstance(entry, np.ndarray):
            self._raw_bytes -= entry.nbytes
            entry = self.frames[i] = encode_jpeg(entry, self.quality)
            self.encoded_total += 1
        return entry

    def pick(self, start_s: float, end_s: float, n: int) -> list[tuple[float, bytes]]:
        """Up to ``n`` distinct candidates ``(t, jpeg)`` in ``[start_s, end_s)``, nearest to the target times."""
        with self._lock:
            return [(self.times[i], self._encode(i)) for i in self._pick(start_s, end_s, n)]

    def _pick(self, start_s: float, end_s: float, n: int) -> list[int]:
        lo = bisect.bisect_left(self.times, start_s - 1e-9)
        hi = bisect.bisect_left(self.times, end_s - 1e-9)
        if hi <= lo:
            return []
        chosen: list[int] = []
        for target in target_times(start_s, end_s, n):
            i = bisect.bisect_left(self.times, target, lo, hi)
            near = [j for j in (i - 1, i) if lo <= j < hi]
            best = min(near, key=lambda j: abs(self.times[j] - target))
            if best not in chosen:
                chosen.append(best)
        return sorted(chosen)

    def drop_before(self, t: float) -> None:
        with self._lock:
            cut = bisect.bisect_left(self.times, t - 1e-9)
            self._raw_bytes -= sum(f.nbytes for f in self.frames[:cut] if isinstance(f, np.ndarray))
            del self.times[:cut]
            del self.frames[:cut]


def write_clip_keyframes(store: CandidateStore, dataset_dir: Path, video_id: str, clip_id: str,
                         start_s: float, end_s: float, n: int) -> list[float]:
    """Write the clip's keyframes from ``store``; returns their times (what ``Clip.keyframe_times`` holds)."""
    times = []
    for k, (t, jpeg) in enumerate(store.pick(start_s, end_s, n)):
        keyframe_path(dataset_dir, video_id, clip_id, k).write_bytes(jpeg)
        times.append(t)
    return times


def reset_keyframe_dir(dataset_dir: Path, video_id: str) -> Path:
    """An empty folder for the video's keyframes (a rerun must not leave files of an older clip layout)."""
    folder = keyframe_dir(dataset_dir, video_id)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.jpg"):
        old.unlink()
    return folder


def extract_keyframes(media_path: Path, clips: list[Clip], dataset_dir: Path, *, fps_fraction: str,
                      width: int, height: int, keyframes_per_clip: int, stream_index: int = 0) -> list[Clip]:
    """Keyframes for existing clips in ONE extra decode pass; returns the clips with ``keyframe_times`` filled."""
    if not clips:
        return []
    video_id = clips[0].video_id
    reset_keyframe_dir(dataset_dir, video_id)
    reader = FrameReader(media_path, width=width, height=height, fps_fraction=fps_fraction, source_id=video_id,
                         stream_index=stream_index)
    fps = reader.fps
    # Every frame is decoded anyway, so each target maps to an exact frame index inside its clip.
    wanted: dict[str, list[int]] = {}
    for clip in clips:
        first, last = int(np.ceil(clip.start_s * fps - 1e-6)), int(np.ceil(clip.end_s * fps - 1e-6)) - 1
        idx = [min(max(int(round(t * fps)), first), max(first, last))
               for t in target_times(clip.start_s, clip.end_s, keyframes_per_clip)]
        wanted[clip.clip_id] = sorted(set(idx))
    needed = {i for idx in wanted.values() for i in idx}
    frames: dict[int, bytes] = {}
    for i, (_, frame) in enumerate(reader):
        if i in needed:
            try:
                frames[i] = encode_jpeg(frame)
            except RuntimeError as exc:
                raise PermanentError(StageName.keyframes, video_id, str(exc)) from exc
    out = []
    for clip in clips:
        times = []
        for i in wanted[clip.clip_id]:
            if i not in frames:  # past the last decodable frame
                continue
            keyframe_path(dataset_dir, video_id, clip.clip_id, len(times)).write_bytes(frames[i])
            times.append(round(i / fps, 6))
        out.append(Clip.model_validate({**clip.model_dump(), "keyframe_times": times}))
    return out
