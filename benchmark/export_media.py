"""The media an exported AVBench task carries: each benchmark video as ``<video_id>.mp4`` (H.264/AAC, what every
lmms-eval video reader opens) and its sound track as ``<video_id>.wav`` (16 kHz mono PCM, what the audio-capable
chat classes and vLLM's ``audio_url`` take), named from the id, never from the source's name.

A video already in H.264/AAC MP4 is copied (or hard-linked) as is; anything else is re-encoded once. Files are
written under a temporary name and renamed, so an interrupted export leaves no half file that a rerun would keep.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import ffmpeg

AUDIO_RATE = 16_000
_MP4_FAMILY = {"mov", "mp4", "m4a", "3gp", "3g2", "mj2"}


class ExportMediaError(RuntimeError):
    """A video of the benchmark could not be made into the exported form (ffmpeg's reason included)."""


@dataclass(frozen=True)
class ExportedMedia:
    video: str          # relative to the task folder: "media/<video_id>.mp4"
    audio: str | None   # "media/<video_id>.wav", or None for a video without sound
    how: str            # "copied", "linked", "re-encoded" or "kept" (already exported)


def _streams(path: Path) -> tuple[str, str | None, str | None]:
    """(container names, video codec, audio codec) of the first video and audio streams."""
    info = ffmpeg.probe(str(path), v="error")
    codec = {kind: next((s.get("codec_name") for s in info.get("streams", []) if s.get("codec_type") == kind), None)
             for kind in ("video", "audio")}
    return info.get("format", {}).get("format_name", ""), codec["video"], codec["audio"]


def is_portable_mp4(path: Path) -> bool:
    """H.264 video, AAC audio (or none) in an MP4: copied as is."""
    container, video, audio = _streams(path)
    return bool(_MP4_FAMILY & set(container.split(","))) and video == "h264" and audio in (None, "aac")


def _ffmpeg(args: list[str], out: Path, what: str, source: Path) -> None:
    tmp = out.with_name(f".{out.name}.partial{out.suffix}")  # ffmpeg picks the muxer from the suffix
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-v", "error", "-y", "-i", str(source.resolve()), *args, str(tmp)]
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not tmp.is_file() or tmp.stat().st_size == 0:
        tmp.unlink(missing_ok=True)
        reason = (proc.stderr.strip().splitlines() or [f"ffmpeg exited with {proc.returncode}"])[-1]
        raise ExportMediaError(f"{what} of {source.name} failed: {reason}")
    os.replace(tmp, out)


def _place_copy(source: Path, out: Path, link: bool) -> str:
    tmp = out.with_name(f".{out.name}.partial")
    tmp.unlink(missing_ok=True)
    if link:
        try:
            os.link(source, tmp)
            os.replace(tmp, out)
            return "linked"
        except OSError:  # another file system: copy instead
            pass
    shutil.copyfile(source, tmp)
    os.replace(tmp, out)
    return "copied"


def export_video_media(source: Path, media_dir: Path, video_id: str, *, has_audio: bool,
                       link: bool = False) -> ExportedMedia:
    """``media_dir/<video_id>.mp4`` and, when the video has sound, ``media_dir/<video_id>.wav``; kept when present."""
    media_dir.mkdir(parents=True, exist_ok=True)
    video_out, audio_out = media_dir / f"{video_id}.mp4", media_dir / f"{video_id}.wav"
    how = "kept"
    if not video_out.is_file():
        if is_portable_mp4(source):
            how = _place_copy(source, video_out, link)
        else:
            _ffmpeg(["-map", "0:v:0", "-map", "0:a:0?", "-c:v", "libx264", "-preset", "veryfast", "-crf", "23",
                     "-pix_fmt", "yuv420p", "-vf", "scale=trunc(iw/2)*2:trunc(ih/2)*2", "-c:a", "aac", "-b:a", "128k",
                     "-movflags", "+faststart"], video_out, "re-encoding to H.264/AAC", source)
            how = "re-encoded"
    if has_audio and not audio_out.is_file():
        _ffmpeg(["-map", "0:a:0", "-vn", "-sn", "-dn", "-ac", "1", "-ar", str(AUDIO_RATE), "-c:a", "pcm_s16le"],
                audio_out, "extracting the sound track", source)
    rel = media_dir.name
    return ExportedMedia(video=f"{rel}/{video_out.name}", audio=f"{rel}/{audio_out.name}" if has_audio else None,
                         how=how)
