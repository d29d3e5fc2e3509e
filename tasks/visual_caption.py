"""Visual captions: one ``VisualCaption`` per keyframe, with the keyframe's time on the source timeline.

A captioner is anything with a ``name`` and ``describe(frames) -> [(text, tags)]`` over the BGR keyframes of ONE
clip, in time order. ``settings.visual_captioner.kind`` picks one:

- ``open-clip``: open_clip CoCa writes the caption, a CLIP model scores ``labels`` zero-shot for the tags (both
  loaded once; the label text embeddings are computed once at load). GPU profile: real pretrained names.
- ``opencv-describer``: ``tasks.opencv_describer`` (colours, brightness, motion, faces, OCR), the embedded profile,
  since no CLIP weights can be had offline.

CoCa captions are decoded greedily here rather than through ``CoCa.generate``: that method needs
``transformers.BeamSearchScorer``, which transformers 5 removed, and greedy decoding is deterministic.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from schemas.records import Clip, DeadLetter, Stage, Tag, VisualCaption
from schemas.settings import VisualCaptioner
from tasks.errors import PermanentError, dead_letter_from_exception
from tasks.keyframes import clip_keyframe_paths

log = logging.getLogger("saven.visual_caption")

TOP_K_TAGS = 5
MIN_TAG_SCORE = 0.05
CAPTION_MAX_TOKENS = 30
CAPTION_MIN_TOKENS = 5
PROMPT = "a photo of {}."
SOT_TOKEN, EOT_TOKEN = 49406, 49407  # open_clip's SimpleTokenizer
DEFAULT_LABELS = (
    "a person", "a group of people", "a face", "an animal", "a bird", "a dog", "a cat", "a car", "a street",
    "a building", "a room", "a kitchen", "an office", "a city", "a landscape", "a forest", "a mountain", "the sea",
    "a beach", "the sky", "a river", "food", "a screen", "text", "a diagram", "a cartoon", "an animation",
    "a video game", "a sports game", "a concert", "a musical instrument", "a vehicle", "night", "snow",
    "a colourful abstract pattern", "a black-and-white film",
)

_LOADS: dict[str, int] = {}


def load_count() -> int:
    return sum(_LOADS.values())


class Captioner(Protocol):
    name: str

    def describe(self, frames: list[np.ndarray]) -> list[tuple[str, list[Tag]]]: ...


def _open_clip_model(name: str, pretrained: str | None, device: str):
    import open_clip

    from tasks import model_cache

    model, _, preprocess = open_clip.create_model_and_transforms(
        name, pretrained=pretrained, device=device, cache_dir=str(model_cache.cache_dir() / "open_clip"))
    return model.eval(), preprocess


class OpenClipCaptioner:
    """CoCa captions plus CLIP zero-shot tags over a label vocabulary."""

    def __init__(self, cfg: VisualCaptioner):
        import open_clip
        import torch

        self.device = cfg.device
        self.coca, self.coca_preprocess = _open_clip_model(cfg.coca_model, cfg.coca_pretrained, cfg.device)
        if (cfg.clip_model, cfg.clip_pretrained) == (cfg.coca_model, cfg.coca_pretrained):
            self.clip, self.clip_preprocess = self.coca, self.coca_preprocess
        else:
            self.clip, self.clip_preprocess = _open_clip_model(cfg.clip_model, cfg.clip_pretrained, cfg.device)
        self.labels = list(cfg.labels or DEFAULT_LABELS)
        tokenizer = open_clip.get_tokenizer(cfg.clip_model)
        with torch.inference_mode():
            text = self.clip.encode_text(tokenizer([PROMPT.format(label) for label in self.labels]).to(self.device))
            self.label_features = text / text.norm(dim=-1, keepdim=True)
        self.name = f"coca:{cfg.coca_model}+clip:{cfg.clip_model}"
        _LOADS[self.name] = _LOADS.get(self.name, 0) + 1

    def _batch(self, preprocess, frames: list[np.ndarray]):
        import torch
        from PIL import Image

        images = [preprocess(Image.fromarray(cv2.cvtColor(f, cv2.COLOR_BGR2RGB))) for f in frames]
        return torch.stack(images).to(self.device)

    def captions(self, images) -> list[str]:
        import open_clip

        tokens = coca_greedy(self.coca, images, CAPTION_MAX_TOKENS, CAPTION_MIN_TOKENS)
        out = []
        for row in tokens:
            text = open_clip.decode(row).split("<end_of_text>")[0].replace("<start_of_text>", "").strip()
            out.append(text)
        return out

    def tags(self, images) -> list[list[Tag]]:
        import torch

        with torch.inference_mode():
            feats = self.clip.encode_image(images)
            feats = feats / feats.norm(dim=-1, keepdim=True)
            probs = torch.softmax(100.0 * feats @ self.label_features.T, dim=-1).float().cpu().numpy()
        out = []
        for row in probs:
            top = np.argsort(-row)[:TOP_K_TAGS]
            out.append([Tag(label=self.labels[j], score=float(row[j])) for j in top if row[j] >= MIN_TAG_SCORE])
        return out

    def describe(self, frames: list[np.ndarray]) -> list[tuple[str, list[Tag]]]:
        if not frames:
            return []
        coca_images = self._batch(self.coca_preprocess, frames)
        clip_images = coca_images if self.clip is self.coca else self._batch(self.clip_preprocess, frames)
        caps, tags = self.captions(coca_images), self.tags(clip_images)
        # A caption a model could not put into words still has its tags: say so instead of writing nothing.
        return [(cap or ("an image of " + tag_list[0].label if tag_list else "an image"), tag_list)
                for cap, tag_list in zip(caps, tags)]


def coca_greedy(model, images, max_tokens: int, min_tokens: int):
    """Greedy CoCa decoding: the image is encoded once; the text decoder extends every row by its best token."""
    import torch

    with torch.inference_mode():
        image_latent, image_embs = model._encode_image(images)
        batch = images.shape[0]
        tokens = torch.full((batch, 1), SOT_TOKEN, dtype=torch.long, device=images.device)
        done = torch.zeros(batch, dtype=torch.bool, device=images.device)
        for step in range(max_tokens):
            logits = model(images, tokens, image_latent=image_latent, image_embs=image_embs,
                           output_labels=False)["logits"][:, -1]
            if step < min_tokens:
                logits[:, EOT_TOKEN] = float("-inf")
            if step == max_tokens - 1:
                nxt = torch.full((batch,), EOT_TOKEN, dtype=torch.long, device=images.device)
            else:
                nxt = logits.argmax(dim=-1)
            nxt = torch.where(done, torch.full_like(nxt, EOT_TOKEN), nxt)
            tokens = torch.cat([tokens, nxt[:, None]], dim=1)
            done |= nxt == EOT_TOKEN
            if bool(done.all()):
                break
    return tokens


def load_captioner(cfg: VisualCaptioner) -> Captioner:
    if cfg.kind == "open-clip":
        return OpenClipCaptioner(cfg)
    from tasks.opencv_describer import OpenCVDescriber

    describer = OpenCVDescriber()
    _LOADS[describer.name] = _LOADS.get(describer.name, 0) + 1
    return describer


def read_keyframes(dataset_dir: Path, clip: Clip) -> list[np.ndarray]:
    frames = []
    for path in clip_keyframe_paths(dataset_dir, clip):
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            raise PermanentError(Stage.visual_caption, clip.video_id, f"keyframe {path.name} is missing or not an "
                                 "image", item_id=clip.clip_id, error_class="keyframe_unreadable")
        frames.append(img)
    return frames


def caption_clip(captioner: Captioner, dataset_dir: Path, clip: Clip) -> list[VisualCaption]:
    if not clip.keyframe_times:
        raise PermanentError(Stage.visual_caption, clip.video_id, "clip has no keyframes", item_id=clip.clip_id,
                             error_class="no_keyframes")
    described = captioner.describe(read_keyframes(dataset_dir, clip))
    return [VisualCaption(video_id=clip.video_id, clip_id=clip.clip_id, t=t, text=text, tags=tags,
                          captioner=captioner.name)
            for t, (text, tags) in zip(clip.keyframe_times, described)]


class VisualCaptionOutput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    video_id: str
    captions: list[VisualCaption] = Field(default_factory=list)
    keyframes: int = 0
    seconds: float = 0.0
    dead_letters: list[DeadLetter] = Field(default_factory=list)


def caption_video(captioner: Captioner, dataset_dir: Path, video_id: str, clips: list[Clip]) -> VisualCaptionOutput:
    """Captions of every clip's keyframes; a clip that fails is a dead letter, and the other clips go on."""
    t0 = time.perf_counter()
    out = VisualCaptionOutput(video_id=video_id)
    for clip in clips:
        try:
            caps = caption_clip(captioner, Path(dataset_dir), clip)
        except Exception as exc:  # noqa: BLE001 — one clip must not cost the video its other captions
            if not isinstance(exc, PermanentError):
                log.exception("captioning failed for %s", clip.clip_id)
            out.dead_letters.append(dead_letter_from_exception(exc, Stage.visual_caption, video_id,
                                                               item_id=clip.clip_id))
            continue
        out.captions.extend(caps)
        out.keyframes += len(caps)
    out.seconds = time.perf_counter() - t0
    return out


class VisualCaptionWorker:
    """Holds one captioner for its lifetime (a Ray actor through ``visual_caption_actor``)."""

    def __init__(self, cfg: VisualCaptioner):
        self.captioner = load_captioner(cfg)
        self.videos = 0
        self.clips = 0
        self.seconds = 0.0

    def process(self, dataset_dir: str, video_id: str, clips: list[Clip]) -> VisualCaptionOutput:
        out = caption_video(self.captioner, Path(dataset_dir), video_id, clips)
        self.videos += 1
        self.clips += len(clips)
        self.seconds += out.seconds
        return out

    def stats(self) -> dict:
        return {"stage": Stage.visual_caption.value, "model": self.captioner.name, "model_loads": load_count(),
                "pid": os.getpid(), "videos": self.videos, "clips": self.clips, "seconds": self.seconds}


def visual_caption_actor(cfg: VisualCaptioner):
    from tasks.ray_stage import as_ray_actor

    return as_ray_actor(VisualCaptionWorker, cfg.resources)
