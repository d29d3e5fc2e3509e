"""Container and stream facts of one media file (ffprobe through ffmpeg-python).

Some containers (WebM written by live muxers, for example) state no duration at all; then the duration comes from
the streams, and failing that from a scan of the video packets (last presentation time + its duration). The scan
reads packets without decoding them, so it costs a fraction of a decode.
"""

from __future__ import annotations

import re
from fractions import Fraction
from pathlib import Path

import ffmpeg

from infra.errors import PermanentError
from infra.pipeline import STAGES
from infra.stage import Stage
from schemas.handoff import ProbeResult, StageResult, VideoItem
from schemas.records import StageName, VideoRecord
from schemas.settings import Acquire
from tasks.acquire import Acquired


def _ffprobe(path: Path, **kwargs) -> dict:
    # ffmpeg.probe runs ffprobe with an argument list (no shell); the path is absolute, so it cannot be read as an
    # option or a protocol prefix.
    return ffmpeg.probe(str(path), v="error", **kwargs)


def _error_text(exc: ffmpeg.Error, path: Path) -> str:
    """ffprobe's own reason, without the file name it prefixes (e.g. "moov atom not found; Invalid data ...")."""
    lines = (exc.stderr or b"").decode("utf-8", "replace").replace(f"{path}: ", "").splitlines()
    reasons = [re.sub(r"^\[[^\]]*@ 0x[0-9a-f]+\]\s*", "", line).strip() for line in lines]
    reasons = list(dict.fromkeys(r for r in reasons if r))[-3:]
    return "; ".join(reasons) or "ffprobe failed"


def _float(value) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if f > 0 and f == f and f != float("inf") else None


def _rate(stream: dict) -> Fraction | None:
    # avg_frame_rate is what the frames actually average; r_frame_rate is the timebase guess and can be 1000/1
    # for WebM, so it is the fallback only.
    for key in ("avg_frame_rate", "r_frame_rate"):
        text = stream.get(key) or "0/0"
        try:
            rate = Fraction(text)
        except (ValueError, ZeroDivisionError):
            continue
        if 0 < rate <= 500:
            return rate
    return None


def _number(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):  # "N/A" or missing
        return None


def _packet_duration(path: Path) -> float | None:
    data = _ffprobe(path, select_streams="v:0", show_entries="packet=pts_time,duration_time")
    spans = [(pts, pts + (_number(p.get("duration_time")) or 0.0))
             for p in data.get("packets", []) if (pts := _number(p.get("pts_time"))) is not None]
    if not spans:
        return None
    return max(end for _, end in spans) - min(start for start, _ in spans)


def probe(path: Path, source_id: str) -> ProbeResult:
    """Facts about ``path``; a file that is not a playable video raises ``PermanentError`` with the reason."""
    path = Path(path).resolve()
    if not path.is_file():
        raise PermanentError(StageName.probe, source_id, f"media file not found: {path.name}",
                             error_class="missing_file")
    size = path.stat().st_size
    if size == 0:
        raise PermanentError(StageName.probe, source_id, "media file is empty (0 bytes)", error_class="empty_file")
    try:
        data = _ffprobe(path)
    except ffmpeg.Error as exc:
        raise PermanentError(StageName.probe, source_id, f"not a readable media file: {_error_text(exc, path)}",
                             error_class="not_media") from exc
    streams = data.get("streams", [])
    fmt = data.get("format", {})
    video = next((s for s in streams if s.get("codec_type") == "video"
                  and not (s.get("disposition") or {}).get("attached_pic")), None)
    if video is None:
        raise PermanentError(StageName.probe, source_id, "no video stream (audio-only or not a video)",
                             error_class="no_video_stream")
    width, height = int(video.get("width") or 0), int(video.get("height") or 0)
    rate = _rate(video)
    if width <= 0 or height <= 0 or rate is None:
        raise PermanentError(StageName.probe, source_id,
                             f"video stream has no usable size/frame rate ({width}x{height}, {rate})",
                             error_class="bad_video_stream")
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)

    duration, source = _float(fmt.get("duration")), "format"
    if duration is None:
        duration, source = _float(video.get("duration")), "stream"
    if duration is None:
        try:
            duration, source = _packet_duration(path), "packets"
        except ffmpeg.Error as exc:
            raise PermanentError(StageName.probe, source_id, f"cannot read packets: {_error_text(exc, path)}",
                                 error_class="not_media") from exc
    if not duration:
        raise PermanentError(StageName.probe, source_id, "cannot determine a duration (no packets with timestamps)",
                             error_class="no_duration")
    return ProbeResult(
        duration_s=duration, duration_from=source, video_duration_s=_float(video.get("duration")),
        fps=float(rate), fps_fraction=f"{rate.numerator}/{rate.denominator}",
        video_stream_index=int(video.get("index") or 0),
        width=width, height=height, video_codec=str(video.get("codec_name") or "unknown"),
        has_audio=audio is not None,
        audio_codec=audio.get("codec_name") if audio else None,
        audio_sample_rate=int(audio["sample_rate"]) if audio and audio.get("sample_rate") else None,
        audio_channels=int(audio["channels"]) if audio and audio.get("channels") else None,
        format_name=str(fmt.get("format_name") or "unknown"), size_bytes=size,
    )


def check_duration(facts: ProbeResult, cfg: Acquire, video_id: str) -> None:
    """Sources whose extractor stated no duration are checked once probed (the media chain removes the file)."""
    if facts.duration_s > cfg.max_duration_s:
        raise PermanentError(StageName.acquire, video_id, f"too long: {facts.duration_s:.0f} s > "
                             f"max_duration_s {cfg.max_duration_s:.0f} s", error_class="too_long")


def require_audio(facts: ProbeResult, video_id: str) -> None:
    if not facts.has_audio:
        raise PermanentError(StageName.audio, video_id, "the video has no audio stream; an audio-visual dataset needs "
                             "sound for ASR, audio captions and AV questions", error_class="no_audio_stream")


def video_record(acquired: Acquired, facts: ProbeResult) -> VideoRecord:
    """The ``videos`` row: what acquisition learned joined with what the probe measured."""
    return VideoRecord(
        video_id=acquired.video_id, source=acquired.source, extractor=acquired.extractor, title=acquired.title,
        uploader=acquired.uploader, upload_date=acquired.upload_date, license=acquired.license,
        webpage_url=acquired.webpage_url, media_path=acquired.media_path, duration_s=facts.duration_s,
        fps=facts.fps, width=facts.width, height=facts.height, has_audio=facts.has_audio,
        size_bytes=acquired.size_bytes, sha256=acquired.sha256, acquired_at=acquired.acquired_at,
    )


@STAGES.register(StageName.probe)
class ProbeStage(Stage):
    """ffprobe's facts about the acquired file; a file too long, or without sound, leaves the run here."""

    name = StageName.probe
    placement = "media"
    section = "acquire"  # the limits it checks (max_duration_s) are acquisition's
    reads = ("acquired",)
    writes = {"videos": VideoRecord}
    hands_off = ("probe",)

    def process(self, item: VideoItem) -> StageResult:
        acquired: Acquired = item.value("acquired")
        facts = probe(item.work_dir / acquired.media_path, acquired.video_id)
        check_duration(facts, self.cfg, acquired.video_id)
        require_audio(facts, acquired.video_id)
        return StageResult(tables={"videos": [video_record(acquired, facts)]}, handoff={"probe": facts},
                           counts={"video_s": facts.duration_s})
