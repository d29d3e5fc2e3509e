"""Scene segmentation and keyframes in ONE decode pass, and the clip policy.

One ffmpeg process decodes the video stream once and scales it twice in its filter graph: every frame to the
analysis size (pipe 1, as YUV 4:2:0 converted to BGR by OpenCV, fed to a PySceneDetect detector through its
``process_frame`` API: AdaptiveDetector by default, ContentDetector selectable, with the frame score computed by
OpenCV in ``tasks.scene_detectors``), and every K-th frame to keyframe size (a second pipe, read on a thread,
JPEG-encoded as keyframe candidates). Keyframes thus come at a higher resolution than the analysis, from the same
decode, with no per-frame resize in Python and no ffmpeg process per frame.

Clip policy (``clip_spans``), applied as cuts arrive so clips become final during the pass: scenes shorter than
``min_clip_s`` are merged into the scene that follows (a short tail into the one before), and spans longer than
``max_clip_s`` are split into equal parts, with split points on frame times.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import subprocess
import threading
from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from itertools import pairwise
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict
from scenedetect import FrameTimecode

from schemas.records import Clip, Stage, clip_id
from schemas.settings import Segment
from tasks.errors import PermanentError
from tasks.keyframes import CandidateStore, candidate_every, keyframe_dir, reset_keyframe_dir, write_clip_keyframes
from tasks.probe import ProbeResult
from tasks.scene_detectors import make_detector

Span = tuple[float, float]

# A decode that ends this much short of the probed duration is a truncated or damaged file, not rounding.
TRUNCATION_TOLERANCE_S = 1.0
TRUNCATION_TOLERANCE_FRAC = 0.05


class SegmentResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    video_id: str
    clips: list[Clip]
    cuts_s: list[float]  # raw detector cuts (first frame of each new scene), before the clip policy
    detector: str
    frames_decoded: int
    decoded_duration_s: float
    analysis_size: tuple[int, int]
    keyframe_size: tuple[int, int]
    keyframe_dir: str  # relative to the dataset folder
    candidates_kept: int
    decode_passes: int = 1


def scaled_size(width: int, height: int, target_width: int) -> tuple[int, int]:
    """``target_width`` (never upscaling) and the height that keeps the aspect ratio, both even for the scaler."""
    w = min(target_width, width)
    w -= w % 2
    h = max(2, int(round(height * w / width / 2)) * 2)
    return max(2, w), h


PIPE_BYTES = 1 << 20


def _widen_pipe(fd: int | None) -> None:
    """Let ffmpeg run several frames ahead of the reader (Linux pipes hold 64 KiB, under one frame, by default)."""
    if fd is None or not hasattr(fcntl, "F_SETPIPE_SZ"):
        return
    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    except OSError:  # above /proc/sys/fs/pipe-max-size for an unprivileged user: the default still works
        pass


@dataclass
class SideOutput:
    """A second output of the same decode: every ``every``-th frame at another size, handed to ``on_frame``."""

    width: int
    height: int
    every: int
    on_frame: Callable[[float, np.ndarray], None]  # (t_seconds, bgr view) on the reader's side thread


class FrameReader:
    """Iterate ``(t_seconds, bgr_frame)`` from one ffmpeg process decoding one video stream.

    ffmpeg's ``fps`` filter makes the rate constant, so frame ``n`` is at ``n / fps`` on the source timeline (VFR
    sources get frames repeated or dropped to keep that true). ffmpeg scales to ``width`` x ``height`` but stays
    in YUV 4:2:0; the BGR conversion happens here in OpenCV: swscale converting to packed BGR while scaling cost
    half again as much as scaling alone, and the pipe carries half the bytes. With a ``SideOutput`` the same
    decoded frames also go, scaled differently and also in YUV 4:2:0, to a second pipe that a thread reads while
    the caller iterates (ffmpeg blocks on a full pipe, so each pipe needs its own reader).

    ``threads``: ffmpeg's decoder and filter threads (None: ffmpeg's default, one per core). The stages pass the
    CPUs their Ray task declares: the Python side scoring frames is a second busy thread of its own, and on a
    machine where every core already runs a task, a decoder that spreads over all of them only adds hand-offs.

    Frames are views into buffers that the next step overwrites (no per-frame allocation): copy or encode what
    must outlive the step.
    """

    def __init__(self, media_path: Path, *, width: int, height: int, fps_fraction: str, source_id: str,
                 stream_index: int = 0, side: SideOutput | None = None, threads: int | None = None):
        if width % 2 or height % 2:
            raise ValueError(f"frame size must be even (YUV 4:2:0 halves it for the colour planes): {width}x{height}")
        self.path = Path(media_path).resolve()
        self.width, self.height = width, height
        self.rate = Fraction(fps_fraction)
        self.fps = float(self.rate)
        self.source_id = source_id
        if side is not None and (side.width % 2 or side.height % 2):
            raise ValueError(f"side frame size must be even: {side.width}x{side.height}")
        self.side = side
        self.threads = threads
        self.frames = 0
        self.side_frames = 0
        self.side_done = False
        self.returncode: int | None = None
        self._side_error: BaseException | None = None
        self._stderr: deque[str] = deque(maxlen=20)
        self._stream = f"[0:{int(stream_index)}]"

    def command(self, side_fd: int | None = None) -> list[str]:
        main = f"scale={self.width}:{self.height}:flags=bilinear,format=yuv420p"
        if self.side is None or side_fd is None:
            graph, outputs = f"{self._stream}fps={self.rate}[v];[v]{main}[main]", []
        else:
            side = self.side
            graph = (f"{self._stream}fps={self.rate},split=2[v][s];[v]{main}[main];"
                     f"[s]select='not(mod(n\\,{side.every}))',"
                     f"scale={side.width}:{side.height}:flags=bilinear,format=yuv420p[side]")
            outputs = ["-map", "[side]", "-fps_mode", "passthrough", "-f", "rawvideo", f"pipe:{side_fd}"]
        threads = [] if self.threads is None else ["-filter_complex_threads", str(self.threads),
                                                   "-threads", str(self.threads)]
        return ["ffmpeg", "-nostdin", "-hide_banner", "-v", "error", *threads, "-i", str(self.path),
                "-filter_complex", graph, "-map", "[main]", "-fps_mode", "passthrough", "-f", "rawvideo",
                "pipe:1", *outputs]

    @property
    def cmd(self) -> list[str]:
        """The command without the side output."""
        return self.command(None)

    def _drain(self, stream) -> None:
        for line in iter(stream.readline, b""):
            self._stderr.append(line.decode("utf-8", "replace").rstrip())

    @property
    def stderr_tail(self) -> str:
        return "\n".join(self._stderr)

    @property
    def side_progress_s(self) -> float:
        """Every side frame before this time has been handed over (infinite once the side output ended)."""
        if self.side_done:
            return float("inf")
        return self.side_frames * self.side.every / self.fps if self.side else float("inf")

    def _read_side(self, fd: int) -> None:
        side = self.side
        yuv = np.empty((side.height * 3 // 2, side.width), dtype=np.uint8)
        frame = np.empty((side.height, side.width, 3), dtype=np.uint8)
        view = memoryview(yuv).cast("B")
        try:
            with open(fd, "rb", buffering=0) as stream:
                while self._fill(stream, view):
                    if self._side_error is None:
                        try:
                            cv2.cvtColor(yuv, cv2.COLOR_YUV2BGR_I420, dst=frame)
                            side.on_frame(self.side_frames * side.every / self.fps, frame)
                        except BaseException as exc:  # noqa: BLE001 — re-raised on the caller's thread
                            # Keep reading regardless: ffmpeg blocked on this pipe would stall the main one too.
                            self._side_error = exc
                    self.side_frames += 1
        finally:
            self.side_done = True

    def __iter__(self) -> Iterator[tuple[float, np.ndarray]]:
        yuv = np.empty((self.height * 3 // 2, self.width), dtype=np.uint8)  # the I420 layout OpenCV reads
        frame = np.empty((self.height, self.width, 3), dtype=np.uint8)
        view = memoryview(yuv).cast("B")
        side_r = side_w = None
        if self.side is not None:
            side_r, side_w = os.pipe()
        try:
            proc = subprocess.Popen(self.command(side_w), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, bufsize=0,
                                    pass_fds=(side_w,) if side_w is not None else ())
        except BaseException:
            if side_r is not None:
                os.close(side_r)
            raise
        finally:
            if side_w is not None:
                os.close(side_w)  # ffmpeg holds the write end now; its exit is our EOF
        for fd in (proc.stdout.fileno(), side_r):
            _widen_pipe(fd)
        threads = [threading.Thread(target=self._drain, args=(proc.stderr,), daemon=True)]
        if side_r is not None:
            threads.append(threading.Thread(target=self._read_side, args=(side_r,), daemon=True))
        for thread in threads:
            thread.start()
        finished = False
        try:
            while self._fill(proc.stdout, view):
                cv2.cvtColor(yuv, cv2.COLOR_YUV2BGR_I420, dst=frame)
                yield self.frames / self.fps, frame
                self.frames += 1
            finished = True
        finally:
            if not finished and proc.poll() is None:
                proc.kill()  # the caller stopped early: ffmpeg would block on a pipe nobody reads
            proc.stdout.close()
            for thread in threads:
                thread.join(timeout=None if finished else 5)
            self.returncode = proc.wait()
        if self._side_error is not None:
            raise self._side_error

    @staticmethod
    def _fill(stream, view: memoryview) -> bool:
        """Read exactly one frame into ``view``; False at the end (a partial last frame is dropped)."""
        got = 0
        while got < len(view):
            n = stream.readinto(view[got:])
            if not n:
                return False
            got += n
        return True

    def check_complete(self, expected_duration_s: float | None, stage: Stage = Stage.segment) -> None:
        """Raise ``PermanentError`` when nothing decoded, or far less than the container promised."""
        if self.frames == 0:
            reason = self._stderr[-1] if self._stderr else f"ffmpeg exited with {self.returncode}"
            raise PermanentError(stage, self.source_id, f"no video frame could be decoded: {reason}",
                                 error_class="video_decode_failed")
        decoded = self.frames / self.fps
        if expected_duration_s:
            missing = expected_duration_s - decoded
            if missing > max(TRUNCATION_TOLERANCE_S, TRUNCATION_TOLERANCE_FRAC * expected_duration_s):
                reason = f"; ffmpeg: {self._stderr[-1]}" if self._stderr else ""
                raise PermanentError(stage, self.source_id, f"truncated or damaged: decoded {decoded:.2f} s of the "
                                     f"{expected_duration_s:.2f} s the container states{reason}",
                                     error_class="truncated")


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
                         threads=decode_threads(cfg))
    rate = Fraction(probe.fps_fraction)
    detector = make_detector(cfg)
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
