"""The media chain for one source: acquire -> probe -> audio -> segment + keyframes (wiring of ``tasks/`` stages).

``process_source`` never raises on bad input: it returns a ``MediaResult`` or a ``DeadLetter`` whose stage and
reason say what went wrong (``source_id`` the source as given, ``video_id`` once known). On a failure after acquisition the video's files (media, audio, keyframes) are removed,
so the dataset folder holds only videos that have records; the dead letter keeps the source to fetch again.

A video without an audio stream is a dead letter (stage ``audio``, ``no_audio_stream``): SAVEn-Vid is an
audio-visual dataset, and every later stage (ASR, audio captions, AV fusion, AV QA) needs the sound.

Decode passes per video are counted in ``MediaResult.decode_passes``: one for all frames (segmentation and
keyframes share it) and one for the audio.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from flows.sources import source_key
from infra.errors import StageError, TransientError, dead_letter_from_exception
from schemas.handoff import AudioResult, ProbeResult, SegmentResult, VideoMedia
from schemas.paths import audio_path, audio_name, keyframe_dir, keyframe_name
from schemas.store import DatasetStore
from schemas.records import Clip, DeadLetter, KeyframeHash, Stage, VideoRecord
from schemas.settings import Settings, settings as default_settings
from tasks.acquire import Acquired, acquire
from tasks.audio import decode_audio
from tasks.fingerprint import keyframe_hashes
from tasks.probe import check_duration, probe, require_audio
from tasks.segment import segment_video

log = logging.getLogger("saven.media")


class MediaResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    video: VideoRecord
    clips: list[Clip]
    audio: AudioResult
    probe: ProbeResult
    cuts_s: list[float]
    keyframe_dir: str  # relative to the dataset folder
    decode_passes: dict[str, int]  # {"video": 1, "audio": 1}
    seconds: dict[str, float]  # wall time per stage
    fingerprints: list[KeyframeHash] = []  # a dHash per keyframe (tasks.fingerprint), for deduplication


def video_record(acquired: Acquired, facts: ProbeResult) -> VideoRecord:
    return VideoRecord(
        video_id=acquired.video_id, source=acquired.source, extractor=acquired.extractor, title=acquired.title,
        uploader=acquired.uploader, upload_date=acquired.upload_date, license=acquired.license,
        webpage_url=acquired.webpage_url, media_path=acquired.media_path, duration_s=facts.duration_s,
        fps=facts.fps, width=facts.width, height=facts.height, has_audio=facts.has_audio,
        size_bytes=acquired.size_bytes, sha256=acquired.sha256, acquired_at=acquired.acquired_at,
    )


def remove_video_files(dataset_dir: Path, video_id: str, media_path: str | None) -> None:
    if media_path:
        (Path(dataset_dir) / media_path).unlink(missing_ok=True)
    audio_path(dataset_dir, video_id).unlink(missing_ok=True)
    shutil.rmtree(keyframe_dir(dataset_dir, video_id), ignore_errors=True)


def process_source(source: str, dataset_dir: Path, cfg: Settings | None = None, *,
                   backoff_s: float | None = None) -> MediaResult | DeadLetter:
    """Run the whole media chain for one source; bad input ends in a ``DeadLetter``, never an exception."""
    cfg = cfg or default_settings()
    dataset_dir = Path(dataset_dir)
    stage, source_id, acquired = Stage.acquire, source or "<empty>", None
    seconds: dict[str, float] = {}
    try:
        t = time.perf_counter()
        acquired = acquire(source, dataset_dir, cfg.acquire, backoff_s=backoff_s)
        source_id = acquired.video_id
        seconds["acquire"] = time.perf_counter() - t

        stage, t = Stage.probe, time.perf_counter()
        facts = probe(dataset_dir / acquired.media_path, acquired.video_id)
        check_duration(facts, cfg.acquire, acquired.video_id)
        require_audio(facts, acquired.video_id)
        record = video_record(acquired, facts)
        seconds["probe"] = time.perf_counter() - t

        stage, t = Stage.audio, time.perf_counter()
        audio = decode_audio(dataset_dir / acquired.media_path, dataset_dir, acquired.video_id)
        seconds["audio"] = time.perf_counter() - t

        stage, t = Stage.segment, time.perf_counter()
        seg: SegmentResult = segment_video(dataset_dir / acquired.media_path, facts, acquired.video_id,
                                           dataset_dir, cfg.segment)
        seconds["segment_keyframes"] = time.perf_counter() - t
    except Exception as exc:  # noqa: BLE001 — the contract is "a dead letter, never a crash"
        if acquired is not None:
            remove_video_files(dataset_dir, acquired.video_id, acquired.media_path)
        attempts = getattr(exc, "attempts", None) or (acquired.attempts if acquired else 1)
        if not isinstance(exc, StageError):
            log.exception("unexpected failure in %s for %s", stage.value, source_id)
        return dead_letter_from_exception(exc, stage, acquired.video_id if acquired else None, source=source or
                                          "<empty>", attempts=attempts)
    return MediaResult(video=record, clips=seg.clips, audio=audio, probe=facts, cuts_s=seg.cuts_s,
                       keyframe_dir=seg.keyframe_dir, seconds=seconds,
                       decode_passes={"video": seg.decode_passes, "audio": audio.decode_passes})


# -- on a node of a run: scratch in, dataset and object store out -----------------------------------------------


def node_id() -> str:
    """This process's Ray node (a short id), or "local" outside Ray."""
    try:
        import ray

        if ray.is_initialized():
            return ray.get_runtime_context().get_node_id()[:12]
    except Exception:  # noqa: BLE001 — no Ray, no node
        pass
    return "local"


def scratch_root(cfg: Settings, store: DatasetStore) -> Path:
    """This node's scratch folder. A local dataset without a configured scratch folder is its own scratch: the media
    chain writes into it directly, as it always did (one file system, no copy)."""
    if cfg.paths.scratch_dir is None and store.local:
        return store.local_path()
    base = Path(cfg.paths.scratch_dir) if cfg.paths.scratch_dir else Path(tempfile.gettempdir()) / "saven-scratch"
    return base / f"node-{node_id()}"


def publish_video_files(work: Path, store: DatasetStore, result: MediaResult) -> None:
    """The video's files from the scratch folder into the dataset (moved locally; uploaded to an object store):
    the media file, its 16 kHz audio, its keyframes. Each is one atomic write; the commit marker comes later."""
    vid = result.video.video_id
    store.put_file(work / result.video.media_path, result.video.media_path, move=True)
    store.put_file(audio_path(work, vid), audio_name(vid), move=True)
    for clip in result.clips:
        for k in range(len(clip.keyframe_times)):
            local = work / keyframe_name(vid, clip.clip_id, k)
            if local.is_file():
                store.put_file(local, keyframe_name(vid, clip.clip_id, k), move=True)


def media_task(source: str, dataset: str, cfg: Settings) -> tuple[MediaResult | DeadLetter, VideoMedia | None]:
    """The media chain of one source as a run places it on a node: work in this node's scratch folder, put the
    video's files into the dataset, and hand the perception stages its audio and keyframes in memory (Ray keeps
    the second return value in its object store: a perception actor on another node reads it from there, never
    from this node's disk). The scratch folder of the video is gone when this returns."""
    store = DatasetStore.of(dataset)
    root = scratch_root(cfg, store)
    in_place = store.local and root == store.local_path()
    work = root if in_place else root / f"work-{source_key(source)}"
    try:
        result = process_source(source, work, cfg)
        if isinstance(result, DeadLetter):
            return result, None
        vid = result.video.video_id
        media = VideoMedia.from_folder(work, vid, result.clips, in_memory=not in_place)
        result = result.model_copy(update={"fingerprints": keyframe_hashes(media, result.clips)})
        if not in_place:
            try:
                publish_video_files(work, store, result)
            except Exception as exc:  # noqa: BLE001 — storage trouble: the next run retries the source
                error = TransientError(Stage.write, vid, f"could not put the video's files into {store.uri}: "
                                                         f"{type(exc).__name__}: {exc}", error_class=type(exc).__name__)
                return dead_letter_from_exception(error, Stage.write, vid, source=source), None
        return result, media
    finally:
        if not in_place:
            shutil.rmtree(work, ignore_errors=True)


def remove_published_files(store: DatasetStore, result: MediaResult) -> None:
    """The video's files taken out of the dataset again (a duplicate found after download)."""
    vid = result.video.video_id
    store.delete(result.video.media_path)
    store.delete(audio_name(vid))
    store.delete_dir(f"keyframes/{vid}")
