"""Where a video's working files live inside a dataset folder, by video id (never by title).

The media stage writes them, the perception stages and ``model.features`` read them; the names are part of the
dataset layout, so they are defined once, here.
"""

from __future__ import annotations

from pathlib import Path

from schemas.records import Clip

AUDIO_DIR = "audio"  # <dataset>/audio/<video_id>.npy: 16 kHz mono float32, decoded once
KEYFRAME_DIR = "keyframes"  # <dataset>/keyframes/<video_id>/<clip_id>_<k>.jpg
FEATURES_DIR = "features"  # <dataset>/features/<preset>/<video_id>.safetensors: frozen-encoder outputs


def audio_path(dataset_dir: Path, video_id: str) -> Path:
    return Path(dataset_dir) / AUDIO_DIR / f"{video_id}.npy"


def keyframe_dir(dataset_dir: Path, video_id: str) -> Path:
    return Path(dataset_dir) / KEYFRAME_DIR / video_id


def keyframe_path(dataset_dir: Path, video_id: str, clip_id: str, k: int) -> Path:
    return keyframe_dir(dataset_dir, video_id) / f"{clip_id}_{k}.jpg"


def clip_keyframe_paths(dataset_dir: Path, clip: Clip) -> list[Path]:
    """The JPEG files of ``clip``, in the order of ``clip.keyframe_times``."""
    return [keyframe_path(dataset_dir, clip.video_id, clip.clip_id, k) for k in range(len(clip.keyframe_times))]


def features_path(dataset_dir: Path, preset: str, video_id: str) -> Path:
    return Path(dataset_dir) / FEATURES_DIR / preset / f"{video_id}.safetensors"


# -- the same names relative to a dataset root, for a ``schemas.store.DatasetStore`` (local folder or object store)

MEDIA_DIR = "media"  # <dataset>/media/<video_id>.<ext>: the acquired file


def audio_name(video_id: str) -> str:
    return f"{AUDIO_DIR}/{video_id}.npy"


def keyframe_name(video_id: str, clip_id: str, k: int) -> str:
    return f"{KEYFRAME_DIR}/{video_id}/{clip_id}_{k}.jpg"


def video_files(store, video_id: str) -> list[str]:
    """The names of one video's files in ``store`` (media and audio; keyframes are a folder of their own)."""
    media = [f"{MEDIA_DIR}/{n}" for n in store.list_files(MEDIA_DIR, prefix=f"{video_id}.")]
    return media + [audio_name(video_id)]
