"""A small hand-labelled dataset over real media, in the pipeline's on-disk layout, for tests and benchmarks.

Two real videos from ``shared/media`` (Big Buck Bunny's opening, 30 s, and the Chaplin clip, 9.64 s): their
records, clips and keyframes (bunny only: chaplin exercises the decode-from-media fallback), the decoded audio
(bunny only, likewise), hand-written fused clip descriptions and eight QA items. Written with the real shard
writer, so the model reads exactly what the pipeline writes.
"""

from __future__ import annotations

import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np

from schemas.records import Clip, ClipDescription, QAItem, QAType, VideoRecord, clip_id, hms
from schemas.store import sha256_file

MEDIA_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "media"
BUNNY, CHAPLIN = "local-bunny0030", "local-chaplin"

_BUNNY_CLIPS = [  # (start, end, visual, narration, environment, timbre, event, emotion)
    (0.0, 8.0, "a dark screen that fades into a sunlit green meadow with a large tree", "",
     "birds chirping in a quiet forest", "soft woodwind melody", "a bird call", "calm and peaceful"),
    (8.0, 16.0, "a close view of a small river and grass swaying in the wind", "",
     "flowing water and wind", "gentle strings", "a splash", "serene"),
    (16.0, 24.0, "a big grey rabbit stretching outside the burrow under the tree", "",
     "forest ambience", "light orchestral music", "a yawn", "cheerful"),
    (24.0, 30.0, "the rabbit stepping out into the meadow as a butterfly flies by", "",
     "birdsong", "bright flute", "footsteps on grass", "playful"),
]
_CHAPLIN_CLIPS = [
    (0.0, 4.8, "black-and-white footage of a man in a bowler hat walking down a street", "",
     "old film crackle", "piano", "footsteps", "comic"),
    (4.8, 9.64, "the man turning around and tipping his hat to the camera", "",
     "old film crackle", "piano", "a short drum hit", "lighthearted"),
]


def _video(dataset: Path, vid: str, media: Path, duration: float, w: int, h: int, fps: float) -> VideoRecord:
    dest = dataset / "media" / f"{vid}{media.suffix}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(media, dest)
    return VideoRecord(video_id=vid, source=str(media), extractor="local", title=media.stem,
                       media_path=f"media/{dest.name}", duration_s=duration, fps=fps, width=w, height=h,
                       has_audio=True, size_bytes=dest.stat().st_size, sha256=sha256_file(dest),
                       acquired_at=datetime(2025, 1, 1, tzinfo=timezone.utc))


def _keyframes(dataset: Path, media: Path, clips: list[Clip], width: int = 160) -> list[Clip]:
    """Two keyframes per clip, from one ffmpeg decode at 2 fps."""
    from schemas.paths import keyframe_path

    h = width * 9 // 16
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-i", str(media.resolve()), "-an", "-vf", f"fps=2,scale={width}:{h}",
           "-f", "rawvideo", "-pix_fmt", "bgr24", "pipe:1"]
    raw = subprocess.run(cmd, capture_output=True, check=True).stdout
    frames = np.frombuffer(raw, np.uint8).reshape(-1, h, width, 3)
    out = []
    for clip in clips:
        times = [clip.start_s + (clip.end_s - clip.start_s) * f for f in (0.25, 0.75)]
        for k, t in enumerate(times):
            path = keyframe_path(dataset, clip.video_id, clip.clip_id, k)
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), frames[min(int(t * 2), len(frames) - 1)])
        out.append(clip.model_copy(update={"keyframe_times": times}))
    return out


def _records(vid: str, rows: list[tuple]) -> tuple[list[Clip], list[ClipDescription]]:
    clips, descs = [], []
    for i, (s, e, visual, narration, env, timbre, event, emotion) in enumerate(rows):
        cid = clip_id(vid, i)
        clips.append(Clip(clip_id=cid, video_id=vid, index=i, start_s=s, end_s=e))
        fused = f"From {hms(s)} to {hms(e)}: {visual[0].upper() + visual[1:]}, with {env} and {timbre}."
        descs.append(ClipDescription(start_s=s, end_s=e, video_id=vid, clip_id=cid, visual=visual,
                                     narration=narration, environment=env, timbre=timbre, event=event,
                                     emotion=emotion, fused=fused, model="hand-written"))
    return clips, descs


def _qa(vid: str, n: int, question: str, options: list[str], answer: int, qtype: QAType, evidence: list[int],
        start: float | None = None, end: float | None = None) -> QAItem:
    from schemas.records import KIND_OF_TYPE

    return QAItem(qa_id=f"{vid}.q{n:012x}", video_id=vid, kind=KIND_OF_TYPE[qtype], type=qtype, question=question,
                  options=options, answer_index=answer, evidence_clip_ids=[clip_id(vid, i) for i in evidence],
                  start_s=start, end_s=end, generator_model="hand-written", checks_passed=["hand"])


def _qa_items() -> list[QAItem]:
    B, C, av = BUNNY, CHAPLIN, QAType.global_av_inference
    return [
        _qa(B, 1, "What animal is the main character of the video?",
            ["A big grey rabbit", "A brown dog", "A white horse", "A red fox"], 0, av, [2, 3]),
        _qa(B, 2, "What kind of sound accompanies the meadow scenes?",
            ["Heavy rock music", "Calm orchestral music with birdsong", "A news reporter", "Silence"], 1, av, [0]),
        _qa(B, 3, "From 00:00:08.000 to 00:00:16.000, what can be seen and heard?",
            ["A city street with traffic", "A crowd cheering", "A small river with flowing water",
             "A dark cave with echoes"], 2, QAType.time_range_anchored, [1], 8.0, 16.0),
        _qa(B, 4, "At 00:00:27.000, what combination of sounds and visuals is present?",
            ["A car horn and a highway", "Rain on a window", "Thunder over the sea",
             "The rabbit in the meadow with a bright flute"], 3, QAType.time_point_anchored, [3], 27.0),
        _qa(B, 5, "Which time range best captures the rabbit stretching outside the burrow?",
            ["From 00:00:16.000 to 00:00:24.000", "From 00:00:00.000 to 00:00:08.000",
             "From 00:00:08.000 to 00:00:16.000", "From 00:00:24.000 to 00:00:30.000"], 0,
            QAType.temporal_grounding, [2], 16.0, 24.0),
        _qa(C, 1, "What is the colour style of the footage?",
            ["Bright neon colours", "Black and white", "Sepia with red highlights", "Infrared"], 1, av, [0]),
        _qa(C, 2, "Which instrument is heard throughout the clip?",
            ["Electric guitar", "Bagpipes", "Piano", "Violin"], 2, av, [0, 1]),
        _qa(C, 3, "From 00:00:04.800 to 00:00:09.640, what does the man do?",
            ["He rides a bicycle", "He falls into water", "He eats a sandwich",
             "He turns around and tips his hat"], 3, QAType.time_range_anchored, [1], 4.8, 9.64),
    ]


def build_sample_dataset(dataset: Path, media_dir: Path = MEDIA_DIR, videos: tuple[str, ...] = (BUNNY, CHAPLIN)
                         ) -> Path:
    """Write the sample dataset (or only ``videos`` of it) into ``dataset``: shards, media, keyframes, audio."""
    from schemas.shards import write_shard
    from tasks.audio import decode_audio

    dataset = Path(dataset)
    records = []
    if BUNNY in videos:
        media = Path(media_dir) / "big_buck_bunny_0_30.webm"
        records.append(_video(dataset, BUNNY, media, 30.0, 1280, 720, 24.0))
        clips, descs = _records(BUNNY, _BUNNY_CLIPS)
        clips = _keyframes(dataset, media, clips)
        decode_audio(dataset / records[-1].media_path, dataset, BUNNY)
        write_shard(dataset, "clips", key=BUNNY, records=clips)
        write_shard(dataset, "descriptions", key=BUNNY, records=descs)
    if CHAPLIN in videos:  # no keyframes, no decoded audio: the feature step must fall back to the media
        records.append(_video(dataset, CHAPLIN, Path(media_dir) / "chaplin.mp4", 9.64, 640, 360, 25.0))
        clips, descs = _records(CHAPLIN, _CHAPLIN_CLIPS)
        write_shard(dataset, "clips", key=CHAPLIN, records=clips)
        write_shard(dataset, "descriptions", key=CHAPLIN, records=descs)
    write_shard(dataset, "videos", key="all", records=records)
    write_shard(dataset, "qa", key="all", records=[q for q in _qa_items() if q.video_id in videos])
    return dataset
