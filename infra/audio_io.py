"""Reading audio: one ffmpeg decode of a media file to 16 kHz mono float32, the saved waveform read back
memory-mapped, and the clip-bounded spans the audio stages read it in.

Sample ``k`` is at ``k / 16000`` seconds on the source timeline (ffmpeg starts the output at the first audio sample,
which for the containers we acquire is the start of the video as well).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

from infra.errors import PermanentError
from schemas.handoff import SAMPLE_RATE
from schemas.records import Clip, StageName

__all__ = ["SAMPLE_RATE", "clip_chunks", "decode_audio_array", "load_audio"]


def decode_audio_array(media_path: Path, source_id: str) -> np.ndarray:
    """The first audio stream of ``media_path`` as 16 kHz mono float32 in [-1, 1] (one ffmpeg process)."""
    media_path = Path(media_path).resolve()
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-v", "error", "-i", str(media_path),
           "-map", "0:a:0", "-vn", "-sn", "-dn", "-ac", "1", "-ar", str(SAMPLE_RATE),
           "-f", "f32le", "-acodec", "pcm_f32le", "pipe:1"]
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, check=False)
    stderr = proc.stderr.decode("utf-8", "replace").strip()
    if proc.returncode != 0 and "matches no streams" in stderr:
        raise PermanentError(StageName.audio, source_id, "the video has no audio stream", error_class="no_audio_stream")
    samples = np.frombuffer(proc.stdout[: len(proc.stdout) // 4 * 4], dtype="<f4")
    # Damaged frames make ffmpeg report errors but still yield the rest; only a decode with nothing to show fails.
    if samples.size == 0:
        reason = stderr.splitlines()[-1] if stderr else f"ffmpeg exited with {proc.returncode}"
        raise PermanentError(StageName.audio, source_id, f"audio decode produced no samples: {reason}",
                             error_class="audio_decode_failed")
    return samples.astype(np.float32, copy=False)


def load_audio(path: Path | np.ndarray, start_s: float | None = None, end_s: float | None = None) -> np.ndarray:
    """The saved waveform (memory-mapped, float32, 16 kHz mono), optionally the span ``[start_s, end_s)``; ``path``
    may be the waveform itself (an array handed over in memory), which is sliced without a copy."""
    samples = path if isinstance(path, np.ndarray) else np.load(Path(path), mmap_mode="r", allow_pickle=False)
    lo = 0 if start_s is None else max(0, int(round(start_s * SAMPLE_RATE)))
    hi = samples.shape[0] if end_s is None else min(samples.shape[0], int(round(end_s * SAMPLE_RATE)))
    return samples[lo:hi]


def clip_chunks(clips: list[Clip], max_chunk_s: float) -> list[tuple[float, float]]:
    """Consecutive clips grouped into spans ``(start_s, end_s)`` of at most ``max_chunk_s`` seconds each.

    A chunk ends on a scene cut, where a sentence or a sound is least likely to be split; a clip longer than
    ``max_chunk_s`` is a span of its own, and ``max_chunk_s <= 0`` gives one span over all clips.
    """
    spans: list[tuple[float, float]] = []
    for clip in sorted(clips, key=lambda c: c.start_s):
        if spans and (max_chunk_s <= 0 or clip.end_s - spans[-1][0] <= max_chunk_s):
            spans[-1] = (spans[-1][0], max(spans[-1][1], clip.end_s))
        else:
            spans.append((clip.start_s, clip.end_s))
    return spans
