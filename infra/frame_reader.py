"""One ffmpeg process decoding one video stream into raw frames at fixed sizes, read from pipes.

The decode pipe that segmentation and keyframe extraction share (``tasks.segment``, ``tasks.keyframes``) and that
``model.features`` reuses: frames on the source timeline, YUV 4:2:0 over the pipe, BGR views out.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import threading
from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from infra.errors import PermanentError
from schemas.records import StageName

# A decode that ends this much short of the probed duration is a truncated or damaged file, not rounding.
TRUNCATION_TOLERANCE_S = 1.0
TRUNCATION_TOLERANCE_FRAC = 0.05


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

    ``scaler``: swscale's algorithm for the main output. ``bilinear`` widens its filter with the downscale factor
    (an average over the source pixels); ``fast_bilinear`` is a 2-tap sampler, a quarter of the cost at a tenth of
    the width and what PySceneDetect's own downscale does (``cv2.resize`` with ``INTER_LINEAR``).

    ``threads``: ffmpeg's decoder and filter threads (None: ffmpeg's default, one per core). The stages pass the
    CPUs their Ray task declares: the Python side scoring frames is a second busy thread of its own, and on a
    machine where every core already runs a task, a decoder that spreads over all of them only adds hand-offs.

    Frames are views into buffers that the next step overwrites (no per-frame allocation): copy or encode what
    must outlive the step.
    """

    def __init__(self, media_path: Path, *, width: int, height: int, fps_fraction: str, source_id: str,
                 stream_index: int = 0, side: SideOutput | None = None, threads: int | None = None,
                 scaler: str = "bilinear"):
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
        self.scaler = scaler  # swscale's algorithm for the main output (the side output keeps bilinear)
        self.frames = 0
        self.side_frames = 0
        self.side_done = False
        self.returncode: int | None = None
        self._side_error: BaseException | None = None
        self._stderr: deque[str] = deque(maxlen=20)
        self._stream = f"[0:{int(stream_index)}]"

    def command(self, side_fd: int | None = None) -> list[str]:
        main = f"scale={self.width}:{self.height}:flags={self.scaler},format=yuv420p"
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

    def check_complete(self, expected_duration_s: float | None, stage: StageName = StageName.segment) -> None:
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
