"""The media stages of the pipeline for one source, as a run places them: one Ray task per source, in the node's
scratch folder (acquire -> probe -> audio -> segment -> fingerprint with the built-in profile).

The task never raises on bad input: a stage that fails the video ends the chain with its dead letter (``source_id``
the source as given, ``video_id`` once known), and the video's files are removed, so the dataset holds only videos
that have records. A video that gets through has its files put into the dataset (a local folder or an object store)
and its audio and keyframes handed to the perception actors through Ray's object store, never as a path on another
node's disk. The scratch folder of the video is gone when the task returns.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from infra.errors import TransientError
from infra.pipeline import STAGES
from infra.stage import StageContext, node_id
from schemas.commit import source_key
from schemas.handoff import AudioResult, ProbeResult, VideoItem, VideoMedia
from schemas.paths import audio_name, audio_path, keyframe_dir, keyframe_name
from schemas.records import Clip, DeadLetter, KeyframeHash, StageName, VideoRecord
from schemas.settings import DEFAULT_PIPELINE, Settings, settings as default_settings
from schemas.store import DatasetStore


def run_media_stages(item: VideoItem, settings: Settings, names: list[str], dataset: str = "") -> None:
    """The media stages over ``item`` (in ``item.work_dir``), in order, until one fails the video."""
    context = StageContext(settings, dataset=dataset)
    for name in names:
        stage = STAGES.get(name)(context)  # no model to load: a media stage is built per source
        result = stage.run(item)
        item.take(name, result)
        if result.failed:
            break


def remove_video_files(folder: Path, item: VideoItem) -> None:
    """A failed video's files in a local folder (its media file, audio, keyframes)."""
    if item.video_id is None:
        return
    acquired = item.handoff.get("acquired")
    if acquired is not None:
        (Path(folder) / acquired.media_path).unlink(missing_ok=True)
    audio_path(folder, item.video_id).unlink(missing_ok=True)
    shutil.rmtree(keyframe_dir(folder, item.video_id), ignore_errors=True)


def scratch_root(cfg: Settings, store: DatasetStore) -> Path:
    """This node's scratch folder. A local dataset without a configured scratch folder is its own scratch: the media
    chain writes into it directly, as it always did (one file system, no copy)."""
    if cfg.paths.scratch_dir is None and store.local:
        return store.local_path()
    base = Path(cfg.paths.scratch_dir) if cfg.paths.scratch_dir else Path(tempfile.gettempdir()) / "saven-scratch"
    return base / f"node-{node_id()}"


def publish_video_files(work: Path, store: DatasetStore, video: VideoRecord, clips: list[Clip]) -> None:
    """The video's files from the scratch folder into the dataset (moved locally; uploaded to an object store):
    the media file, its 16 kHz audio, its keyframes. Each is one atomic write; the commit marker comes later."""
    vid = video.video_id
    store.put_file(work / video.media_path, video.media_path, move=True)
    store.put_file(audio_path(work, vid), audio_name(vid), move=True)
    for clip in clips:
        for k in range(len(clip.keyframe_times)):
            local = work / keyframe_name(vid, clip.clip_id, k)
            if local.is_file():
                store.put_file(local, keyframe_name(vid, clip.clip_id, k), move=True)


def remove_published_files(store: DatasetStore, video: VideoRecord) -> None:
    """The video's files taken out of the dataset again (a duplicate found after download)."""
    store.delete(video.media_path)
    store.delete(audio_name(video.video_id))
    store.delete_dir(f"keyframes/{video.video_id}")


def media_task(source: str, dataset: str, cfg: Settings, names: list[str]) -> tuple[VideoItem, VideoMedia | None]:
    """The media stages ``names`` for one source on a node: work in this node's scratch folder, put the video's files
    into the dataset, and return the video's item (rows, hand-offs, each media stage's result or its dead letters;
    no path of this node, no media) and, apart, its audio and keyframes in memory (Ray keeps the second return value
    in its object store: a perception actor on another node reads it from there, never from this node's disk)."""
    store = DatasetStore.of(dataset)
    root = scratch_root(cfg, store)
    in_place = store.local and root == store.local_path()
    work = root if in_place else root / f"work-{source_key(source)}"
    item = VideoItem(source=source, work_dir=work)
    media = None
    try:
        run_media_stages(item, cfg, names, store.uri)
        if item.failed_stages:
            remove_video_files(work, item)
            return item, None
        media = item.load_media(in_memory=not in_place)
        if not in_place:
            try:
                publish_video_files(work, store, item.rows("videos")[0], item.clips)
            except Exception as exc:  # noqa: BLE001 — storage trouble: the next run retries the source
                error = TransientError(StageName.write, item.video_id, f"could not put the video's files into "
                                       f"{store.uri}: {type(exc).__name__}: {exc}", error_class=type(exc).__name__)
                item.dead_letters.append(error.to_dead_letter(source=source, video_id=item.video_id))
                item.failed_stages.add(StageName.write)
                media = None
        return item, media
    finally:
        # What goes back to the driver names no path of this node and holds no media: those travel apart.
        item.work_dir, item.media = None, None
        if not in_place:
            shutil.rmtree(work, ignore_errors=True)


# -- the media chain in this process (tests, benchmarks) --------------------------------------------------------


class MediaResult(BaseModel):
    """The media stages' view of one video, for in-process callers."""

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


def builtin_media_stages() -> list[str]:
    """The built-in pipeline's media stages, in order (acquire ... fingerprint)."""
    return [n for n in DEFAULT_PIPELINE if STAGES.get(n).placement == "media"]


def process_source(source: str, dataset_dir: Path, cfg: Settings | None = None, *,
                   backoff_s: float | None = None) -> MediaResult | DeadLetter:
    """The built-in media stages for one source into a local folder; bad input ends in a ``DeadLetter``."""
    cfg = cfg or default_settings()
    if backoff_s is not None:
        cfg = cfg.model_copy(update={"acquire": cfg.acquire.model_copy(update={"backoff_s": backoff_s})})
    item = VideoItem(source=source, work_dir=Path(dataset_dir))
    started = time.perf_counter()
    run_media_stages(item, cfg, builtin_media_stages())
    if item.failed_stages:
        remove_video_files(Path(dataset_dir), item)
        return item.dead_letters[0].filed_for(source)
    seg = item.value("segment")
    return MediaResult(video=item.rows("videos")[0], clips=item.clips, audio=item.value("audio"),
                       probe=item.value("probe"), cuts_s=seg.cuts_s, keyframe_dir=seg.keyframe_dir,
                       decode_passes={"video": seg.decode_passes, "audio": item.value("audio").decode_passes},
                       seconds={n: r.seconds for n, r, _ in item.results} | {"total": time.perf_counter() - started},
                       fingerprints=item.rows("fingerprints"))
