"""Scene segmentation and keyframes in ONE decode pass, and the clip policy.

One ffmpeg process decodes the video stream once and scales it twice in its filter graph: every frame to the
analysis size (pipe 1, as YUV 4:2:0 converted to BGR by OpenCV, fed to a PySceneDetect detector through its
``process_frame`` API: AdaptiveDetector by default, ContentDetector selectable, with the frame score computed by
OpenCV in ``tasks.scene_detectors``, a registry of detectors; the decode pipe is ``infra.frame_reader``), and every
K-th frame to keyframe size (a second pipe, read on a thread,
JPEG-encoded as keyframe candidates). Keyframes thus come at a higher resolution than the analysis, from the same
decode, with no per-frame resize in Python and no ffmpeg process per frame.

Clip policy (``clip_spans``), applied as cuts arrive so clips become final during the pass: scenes shorter than
``min_clip_s`` are merged into the scene that follows (a short tail into the one before), and spans longer than
``max_clip_s`` are split into equal parts, with split points on frame times.
"""

from __future__ import annotations

import contextlib
import math
from collections import deque
from fractions import Fraction
from itertools import pairwise
from pathlib import Path
from typing import Iterator

import cv2
from scenedetect import FrameTimecode

from infra.frame_reader import FrameReader, SideOutput, scaled_size
from infra.pipeline import STAGES
from infra.stage import Stage
from schemas.handoff import ProbeResult, SegmentResult, StageResult, VideoItem
from schemas.paths import keyframe_dir
from schemas.records import Clip, StageName, clip_id
from schemas.settings import Segment
from tasks.keyframes import CandidateStore, candidate_every, reset_keyframe_dir, write_clip_keyframes
from tasks.scene_detectors import DETECTORS

Span = tuple[float, float]


def _split(span: Span, max_s: float, fps: float) -> list[Span]:
    start, end = span
    parts = max(1, math.ceil((end - start) / max_s - 1e-9))
    # Split points on frame times, so every clip starts on a real frame.
    points = [start] + [round((start + (end - start) * k / parts) * fps) / fps for k in range(1, parts)] + [end]
    return [(round(a, 6), round(b, 6)) for a, b in pairwise(points) if b > a]


class ClipPolicy:
    """Streaming clip policy: feed cut times in order; spans come out as soon as they can no longer change.

    A span closes at the first cut at least ``min_s`` after its start (shorter scenes merge into the next); it
    stays pending until the next span closes, because only the last span can still absorb a short tail.
    """

    def __init__(self, min_s: float, max_s: float, fps: float):
        if max_s < min_s:
            raise ValueError(f"max_clip_s ({max_s}) must be >= min_clip_s ({min_s})")
        self.min_s, self.max_s, self.fps = min_s, max_s, fps
        self.start = 0.0
        self.pending: Span | None = None

    def cut(self, t: float) -> list[Span]:
        if t - self.start < self.min_s:
            return []
        final = _split(self.pending, self.max_s, self.fps) if self.pending else []
        self.pending, self.start = (self.start, t), t
        return final

    def finish(self, duration_s: float) -> list[Span]:
        tail = duration_s - self.start
        if self.pending is None:
            spans = [(0.0, duration_s)]
        elif tail >= self.min_s:
            spans = [self.pending, (self.start, duration_s)]
        else:
            spans = [(self.pending[0], duration_s)]
        self.pending = None
        return [part for span in spans if span[1] > span[0] for part in _split(span, self.max_s, self.fps)]


def clip_spans(cuts_s: list[float], duration_s: float, min_clip_s: float, max_clip_s: float,
               fps: float) -> list[Span]:
    """The clip policy over a whole list of cuts (the same code the streaming pass runs)."""
    policy = ClipPolicy(min_clip_s, max_clip_s, fps)
    spans: list[Span] = []
    for t in sorted(cuts_s):
        if 0.0 < t < duration_s:
            spans += policy.cut(t)
    return spans + policy.finish(duration_s)


@contextlib.contextmanager
def opencv_threads(n: int) -> Iterator[None]:
    """OpenCV's own thread pool for the block. The per-frame kernels here take tens of microseconds on small
    frames: splitting them over threads costs more in hand-offs than it saves (twice the CPU for a YUV->BGR
    conversion at 320x180), and the cores are busy decoding in ffmpeg anyway."""
    before = cv2.getNumThreads()
    cv2.setNumThreads(n)
    try:
        yield
    finally:
        cv2.setNumThreads(before)


def decode_threads(cfg: Segment) -> int:
    """ffmpeg threads for the segmentation decode: the CPUs the stage's Ray task declares (at least one).

    Ray places tasks by the CPUs they declare, so a decoder that spreads over every core only competes with its
    neighbours and with its own frame scoring. Measured on 2 cores, best of 5 interleaved rounds, segmentation +
    keyframes / a decode at the same resolution: 1.07-1.32 with one thread against 1.43-1.80 with ffmpeg's default
    on the 640x360 H.264 samples; on the 720p VP9 excerpt, whose decode is heavier, 1.20 against 1.13."""
    return max(1, math.ceil(cfg.resources.num_cpus))


def segment_video(media_path: Path, probe: ProbeResult, video_id: str, dataset_dir: Path,
                  cfg: Segment) -> SegmentResult:
    """Cuts, clips and keyframes of one video from a single decode pass."""
    with opencv_threads(1):
        return _segment_video(media_path, probe, video_id, dataset_dir, cfg)


def _segment_video(media_path: Path, probe: ProbeResult, video_id: str, dataset_dir: Path,
                   cfg: Segment) -> SegmentResult:
    dataset_dir = Path(dataset_dir)
    kw, kh = scaled_size(probe.width, probe.height, max(cfg.keyframe_width, cfg.analysis_width))
    aw, ah = scaled_size(kw, kh, cfg.analysis_width)
    fps = float(Fraction(probe.fps_fraction))
    every = candidate_every(fps, cfg.keyframes_per_clip, cfg.min_clip_s)
    store = CandidateStore()
    reader = FrameReader(media_path, width=aw, height=ah, fps_fraction=probe.fps_fraction, source_id=video_id,
                         stream_index=probe.video_stream_index, side=SideOutput(kw, kh, every, store.add),
                         threads=decode_threads(cfg), scaler=cfg.analysis_scaler)
    rate = Fraction(probe.fps_fraction)
    detector = DETECTORS.get(cfg.detector)(cfg)
    policy = ClipPolicy(cfg.min_clip_s, cfg.max_clip_s, fps)
    reset_keyframe_dir(dataset_dir, video_id)
    clips: list[Clip] = []
    cuts: list[float] = []
    final: deque[Span] = deque()  # spans the policy has closed, waiting for their keyframe candidates

    def write_final() -> None:
        # The keyframe side of the decode runs on its own thread and may lag: a span is written once every
        # candidate before its end has arrived.
        while final and final[0][1] <= reader.side_progress_s:
            start, end = final.popleft()
            cid = clip_id(video_id, len(clips))
            times = write_clip_keyframes(store, dataset_dir, video_id, cid, start, end, cfg.keyframes_per_clip)
            clips.append(Clip(clip_id=cid, video_id=video_id, index=len(clips), start_s=start, end_s=end,
                              keyframe_times=times))
            store.drop_before(end)

    def on_cuts(found: list[FrameTimecode]) -> None:
        for tc in found:
            t = round(tc.frame_num / fps, 6)
            if t > 0 and (not cuts or t > cuts[-1]):
                cuts.append(t)
                final.extend(policy.cut(t))

    for _, frame in reader:
        on_cuts(detector.process_frame(FrameTimecode(reader.frames, rate), frame))
        if final:
            write_final()
    reader.check_complete(probe.video_duration_s or probe.duration_s)
    on_cuts(detector.post_process(FrameTimecode(max(reader.frames - 1, 0), rate)))
    duration = round(reader.frames / fps, 6)
    final.extend(policy.finish(duration))
    write_final()  # the side thread has ended: every candidate is in
    return SegmentResult(
        video_id=video_id, clips=clips, cuts_s=cuts, detector=cfg.detector, frames_decoded=reader.frames,
        decoded_duration_s=duration, analysis_size=(aw, ah), keyframe_size=(kw, kh),
        keyframe_dir=keyframe_dir(dataset_dir, video_id).relative_to(dataset_dir).as_posix(),
        candidates_kept=store.kept_total,
    )


@STAGES.register(StageName.segment)
class SegmentStage(Stage):
    """Scene cuts, clips and their keyframes from one decode pass."""

    name = StageName.segment
    title = "scene cuts"
    placement = "media"
    section = "segment"
    backends = DETECTORS
    backend_field = "detector"
    reads = ("acquired", "probe")
    writes = {"clips": Clip}
    hands_off = ("segment",)

    def setup(self) -> None:
        pass  # segment_video builds the detector per video: its state is the video's

    def process(self, item: VideoItem) -> StageResult:
        acquired = item.value("acquired")
        seg = segment_video(item.work_dir / acquired.media_path, item.value("probe"), acquired.video_id,
                            item.work_dir, self.cfg)
        return StageResult(tables={"clips": seg.clips}, handoff={"segment": seg},
                           counts={"frames_decoded": seg.frames_decoded, "decode_passes": seg.decode_passes,
                                   "cuts": len(seg.cuts_s)})
